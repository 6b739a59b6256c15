"""Synthesize the embedded corpora in the real datasets' on-disk layouts.

Each ``plan_<corpus>(cfg, tts, seed)`` is pure: it returns the utterances to render and
the text files of the layout (transcripts, split lists, csvs, label files), all drawn
from ``random.Random`` seeded by (seed, corpus). ``synthesize`` renders the utterances
on a thread pool (each job runs espeak-ng/flite and sox as subprocesses, so N threads
keep N cores busy), writes the layout files, and moves the finished tree onto ``out``
atomically. The same seed and config give byte-identical files.

Layouts (what s3prl 0.4.18's corpus readers and the ``prepare_*`` functions expect):

- librispeech: ``{split}/{spk}/{chapter}/{spk}-{chapter}-{NNNN}.flac`` +
  ``{spk}-{chapter}.trans.txt`` (upper case), ``SPEAKERS.TXT``.
- voxceleb1: ``{dev,test}/wav/id1NNNN/{video}/{NNNNN}.wav``, ``iden_split.txt``
  (1 train, 2 valid, 3 test), ``voxceleb1_test_v2.txt`` (trials among the test-subset
  speakers id10270..id10309, as in the real list).
- speech_commands: ``speech_commands_v0.01/{word}/{spk}_nohash_{n}.wav``,
  ``_background_noise_/*.wav``, ``validation_list.txt``, ``testing_list.txt`` and
  ``speech_commands_test_set_v0.01/{command,_unknown_,_silence_}/*.wav``.
- fluent_speech_commands: ``wavs/speakers/{spk}/{uuid}.wav``,
  ``data/{train,valid,test}_data.csv``.
- iemocap: ``Session{1..5}/sentences/wav/{dialog}/{utt}.wav``,
  ``dialog/EmoEvaluation/{dialog}.txt``, ``dialog/transcriptions/{dialog}.txt``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from deepwide.audio import SAMPLE_RATE
from deepwide.corpus.sources import (
    KS_TEST_DIR,
    KS_TRAIN_DIR,
    LIBRISPEECH_EXTRA_TRAIN,
    require_programs,
)
from deepwide.corpus.text import make_vocab, sentence
from deepwide.corpus.tts import EMOTION_PROSODY, Utterance, render, sample_speaker
from deepwide.errors import DeepwideError
from deepwide.utils.io import atomic_path

log = logging.getLogger(__name__)

EMOTIONS = ("neu", "hap", "ang", "sad")
VOX_TEST_FIRST_ID = 10270  # the real VoxCeleb1 test subset is id10270..id10309

# Fluent Speech Commands: (transcription, action, object, location), the dataset's label set
FSC_COMMANDS = (
    ("Turn on the lights", "activate", "lights", "none"),
    ("Switch on the lights in the kitchen", "activate", "lights", "kitchen"),
    ("Turn on the bedroom lights", "activate", "lights", "bedroom"),
    ("Lights on in the washroom", "activate", "lights", "washroom"),
    ("Turn off the lights", "deactivate", "lights", "none"),
    ("Switch off the kitchen lights", "deactivate", "lights", "kitchen"),
    ("Turn the bedroom lights off", "deactivate", "lights", "bedroom"),
    ("Turn off the lights in the washroom", "deactivate", "lights", "washroom"),
    ("Turn on the lamp", "activate", "lamp", "none"),
    ("Switch the lamp off", "deactivate", "lamp", "none"),
    ("Play the music", "activate", "music", "none"),
    ("Stop the music", "deactivate", "music", "none"),
    ("Turn up the volume", "increase", "volume", "none"),
    ("Make it louder", "increase", "volume", "none"),
    ("Turn the volume down", "decrease", "volume", "none"),
    ("Make it quieter", "decrease", "volume", "none"),
    ("Turn up the heat", "increase", "heat", "none"),
    ("Increase the heating in the kitchen", "increase", "heat", "kitchen"),
    ("Make the bedroom warmer", "increase", "heat", "bedroom"),
    ("Turn the heat down", "decrease", "heat", "none"),
    ("Decrease the heating in the washroom", "decrease", "heat", "washroom"),
    ("Make the kitchen cooler", "decrease", "heat", "kitchen"),
    ("Bring me the newspaper", "bring", "newspaper", "none"),
    ("Get me some juice", "bring", "juice", "none"),
    ("Bring my socks", "bring", "socks", "none"),
    ("Fetch my shoes", "bring", "shoes", "none"),
    ("Change the language to German", "change language", "German", "none"),
    ("Switch the language to Korean", "change language", "Korean", "none"),
    ("Use Chinese", "change language", "Chinese", "none"),
    ("Set the language to English", "change language", "English", "none"),
    ("Change language", "change language", "none", "none"),
)


def _rng(seed: int, corpus: str, *parts) -> random.Random:
    return random.Random(":".join(str(p) for p in (seed, corpus, *parts)))


def _rng_and_vocab(seed: int, corpus: str, tts: dict) -> tuple[random.Random, list[str]]:
    """The corpus's random stream and its word list (the stream's first draws)."""
    rng = _rng(seed, corpus)
    return rng, make_vocab(rng, tts["vocab_size"])


def _speakers(rng: random.Random, n: int, tts: dict, genders=None) -> list[dict]:
    return [
        sample_speaker(rng, tts["flite_share"], genders[i] if genders else None) for i in range(n)
    ]


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def _alnum(rng: random.Random, n: int, extra: str = "") -> str:
    chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789" + extra
    return "".join(rng.choice(chars) for _ in range(n))


# ------------------------------------------------------------------ LibriSpeech
def plan_librispeech(cfg: dict, tts: dict, seed: int):
    """train-clean-100, dev-clean and test-clean from the corpus's stream; the optional
    train-clean-360 (synth.train_360_speakers) from a stream of its own, so the other three
    are the same bytes with or without it. One vocabulary, speaker ids unique across splits."""
    s = cfg["synth"]
    rng, vocab = _rng_and_vocab(seed, "librispeech", tts)
    splits = (("train-clean-100", s["train_speakers"]), ("dev-clean", s["dev_speakers"]), ("test-clean", s["test_speakers"]))
    n_total = sum(n for _, n in splits)
    spk_ids = sorted(rng.sample(range(19, 9999), n_total))
    rng.shuffle(spk_ids)
    utts, files, speakers_txt = [], {}, []
    k = 0
    for split, n_spk in splits:
        for _ in range(n_spk):
            speakers_txt.append(_librispeech_speaker(rng, vocab, s, tts, split, spk_ids[k], utts, files))
            k += 1
    n_360 = s.get("train_360_speakers", 0)
    if n_360:
        rng_360 = _rng(seed, "librispeech", LIBRISPEECH_EXTRA_TRAIN)
        free = sorted(set(range(19, 9999)) - set(spk_ids))
        if n_360 > len(free):
            raise DeepwideError(f"corpus.librispeech.synth: {n_total} + {n_360} speakers exceed the {n_total + len(free)} "
                                "speaker ids of the synthesized LibriSpeech")
        for spk_id in rng_360.sample(free, n_360):
            speakers_txt.append(_librispeech_speaker(rng_360, vocab, s, tts, LIBRISPEECH_EXTRA_TRAIN, spk_id, utts, files))
    header = (
        "; Synthetic speakers in the LibriSpeech layout (deepwide embedded corpus)\n"
        ";ID  |SEX| SUBSET           |MINUTES| NAME\n"
    )
    body = "".join(
        f"{i:<5}| {g} | {sub:<16} | {m:5.2f} | synthetic speaker {i}\n"
        for i, g, sub, m in sorted(speakers_txt)
    )
    files["SPEAKERS.TXT"] = header + body
    return utts, files


def _librispeech_speaker(rng: random.Random, vocab: list[str], s: dict, tts: dict, split: str, spk_id: int,
                         utts: list, files: dict) -> tuple:
    """Plan one speaker's chapters into ``utts`` and ``files``; its SPEAKERS.TXT row."""
    spk = sample_speaker(rng, tts["flite_share"])
    minutes = 0.0
    chapters = sorted(rng.sample(range(1000, 99999), s["chapters_per_speaker"]))
    for chapter in chapters:
        lines = []
        for i in range(s["utts_per_chapter"]):
            uid = f"{spk_id}-{chapter}-{i:04d}"
            text = sentence(rng, vocab, s["min_words"], s["max_words"]).upper()
            lines.append(f"{uid} {text}")
            utts.append(Utterance(f"{split}/{spk_id}/{chapter}/{uid}.flac", text.lower(), spk))
            minutes += len(text.split()) / 160
        files[f"{split}/{spk_id}/{chapter}/{spk_id}-{chapter}.trans.txt"] = "\n".join(lines) + "\n"
    return spk_id, spk["gender"], split, minutes


# ------------------------------------------------------------------ VoxCeleb1
def plan_voxceleb1(cfg: dict, tts: dict, seed: int):
    s = cfg["synth"]
    rng, vocab = _rng_and_vocab(seed, "voxceleb1", tts)
    ids = [("dev", f"id{10001 + i}") for i in range(s["dev_speakers"])]
    ids += [("test", f"id{VOX_TEST_FIRST_ID + i}") for i in range(s["test_speakers"])]
    utts, iden, by_spk = [], [], {}
    for subset, spk_id in ids:
        spk = sample_speaker(rng, tts["flite_share"])
        videos = [_alnum(rng, 11, "-_") for _ in range(s["videos_per_speaker"])]
        n = 0
        for v, video in enumerate(videos):
            for _ in range(s["utts_per_video"]):
                n += 1
                uid = f"{spk_id}/{video}/{n:05d}.wav"
                # iden_split: the last video is test (3), the first utterance of the
                # second-to-last video is valid (2), the rest train (1)
                code = 3 if v == len(videos) - 1 else (2 if v == len(videos) - 2 and n == s["utts_per_video"] * v + 1 else 1)
                iden.append(f"{code} {uid}")
                if subset == "test":
                    by_spk.setdefault(spk_id, []).append(uid)
                text = sentence(rng, vocab, s["min_words"], s["max_words"])
                utts.append(Utterance(f"{subset}/wav/{uid}", text, spk))
    trials = []
    test_spks = sorted(by_spk)
    if len(test_spks) >= 2:
        for _ in range(s["trials"]):
            a = rng.choice(test_spks)
            if rng.random() < 0.5:
                u1, u2 = rng.sample(by_spk[a], 2)
                trials.append(f"1 {u1} {u2}")
            else:
                b = rng.choice([x for x in test_spks if x != a])
                trials.append(f"0 {rng.choice(by_spk[a])} {rng.choice(by_spk[b])}")
    files = {"iden_split.txt": "\n".join(iden) + "\n", "voxceleb1_test_v2.txt": "\n".join(trials) + ("\n" if trials else "")}
    return utts, files


# ------------------------------------------------------------------ Speech Commands
def ks_hash_percentage(speaker: str) -> float:
    """s3prl's (and TensorFlow's) split rule: the sha1 of the speaker id as a percentage."""
    max_per_class = 2**27 - 1
    h = int(hashlib.sha1(speaker.encode("utf-8")).hexdigest(), 16)
    return (h % (max_per_class + 1)) * (100.0 / max_per_class)


def ks_bucket(speaker: str) -> str:
    p = ks_hash_percentage(speaker)
    return "valid" if p < 10 else ("test" if p < 20 else "train")


def _ks_speaker_ids(rng: random.Random, wanted: dict) -> dict:
    """Draw 8-hex-digit speaker ids until each hash bucket has its wanted count."""
    got = {b: [] for b in wanted}
    while any(len(got[b]) < n for b, n in wanted.items()):
        sid = _hex(rng, 8)
        b = ks_bucket(sid)
        if len(got[b]) < wanted[b]:
            got[b].append(sid)
    return got


def _noise(rng: np.random.Generator, kind: str, seconds: float) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    white = rng.standard_normal(n)
    if kind == "white_noise":
        x = white
    elif kind == "pink_noise":
        f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        spec = np.fft.rfft(white) / np.sqrt(np.maximum(f, 20.0))
        x = np.fft.irfft(spec, n)
    elif kind == "brown_noise":
        x = np.cumsum(white)
        x -= np.convolve(x, np.ones(801) / 801, mode="same")
    elif kind == "running_tap":
        f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        spec = np.fft.rfft(white) * np.exp(-((f - 2500.0) ** 2) / (2 * 900.0**2))
        x = np.fft.irfft(spec, n) * (1 + 0.3 * np.sin(2 * np.pi * 3.1 * np.arange(n) / SAMPLE_RATE))
    else:  # hum: mains hum with harmonics plus a little hiss
        t = np.arange(n) / SAMPLE_RATE
        x = sum(np.sin(2 * np.pi * 50 * k * t) / k for k in (1, 2, 3, 5)) + 0.1 * white
    return (0.3 * x / (np.abs(x).max() + 1e-9)).astype(np.float32)


NOISE_KINDS = ("white_noise", "pink_noise", "brown_noise", "running_tap", "hum")


def plan_speech_commands(cfg: dict, tts: dict, seed: int):
    s = cfg["synth"]
    rng = _rng(seed, "speech_commands")
    words = list(cfg["commands"]) + list(s["unknown_words"])
    ids = _ks_speaker_ids(rng, {"train": s["train_speakers"], "valid": s["valid_speakers"], "test": s["test_speakers"]})
    utts, files, links = [], {}, []
    valid_list, test_list = [], []
    n_unknown = 0
    for bucket in ("train", "valid", "test"):
        for sid in ids[bucket]:
            spk = sample_speaker(rng, tts["flite_share"])
            for word in words:
                for r in range(s["repeats"]):
                    rel = f"{word}/{sid}_nohash_{r}.wav"
                    utts.append(Utterance(f"{KS_TRAIN_DIR}/{rel}", word, spk, pad_to_s=1.0))
                    if bucket == "valid":
                        valid_list.append(rel)
                    elif bucket == "test":
                        test_list.append(rel)
                        if word in cfg["commands"]:
                            links.append((f"{KS_TRAIN_DIR}/{rel}", f"{KS_TEST_DIR}/{rel}"))
                        else:
                            links.append((f"{KS_TRAIN_DIR}/{rel}", f"{KS_TEST_DIR}/_unknown_/{sid}_nohash_{n_unknown}.wav"))
                            n_unknown += 1
    files[f"{KS_TRAIN_DIR}/validation_list.txt"] = "".join(f"{p}\n" for p in sorted(valid_list))
    files[f"{KS_TRAIN_DIR}/testing_list.txt"] = "".join(f"{p}\n" for p in sorted(test_list))
    nrng = np.random.default_rng([seed, 7])
    arrays = {}
    for kind in NOISE_KINDS:
        arrays[f"{KS_TRAIN_DIR}/_background_noise_/{kind}.wav"] = _noise(nrng, kind, s["noise_seconds"])
    for i in range(s["test_silence"]):
        x = _noise(nrng, NOISE_KINDS[i % len(NOISE_KINDS)], 1.0) * float(nrng.uniform(0.05, 1.0))
        arrays[f"{KS_TEST_DIR}/_silence_/{_hex(rng, 8)}_nohash_{i}.wav"] = x
    return utts, files, links, arrays


# ------------------------------------------------------------------ Fluent Speech Commands
def plan_fluent_speech_commands(cfg: dict, tts: dict, seed: int):
    s = cfg["synth"]
    rng = _rng(seed, "fluent_speech_commands")
    utts, rows = [], {"train": [], "valid": [], "test": []}
    k = 0
    for split in ("train", "valid", "test"):
        for _ in range(s[f"{split}_speakers"]):
            sid = _alnum(rng, 16)
            spk = sample_speaker(rng, tts["flite_share"])
            for j in range(s["utts_per_speaker"]):
                text, action, obj, loc = FSC_COMMANDS[(k + j) % len(FSC_COMMANDS)]
                u = _hex(rng, 32)
                name = f"{u[:8]}-{u[8:12]}-{u[12:16]}-{u[16:20]}-{u[20:]}.wav"
                path = f"wavs/speakers/{sid}/{name}"
                utts.append(Utterance(path, text, spk))
                rows[split].append((path, sid, text, action, obj, loc))
            k += s["utts_per_speaker"]
    files = {}
    for split, rs in rows.items():
        lines = [",path,speakerId,transcription,action,object,location"]
        for i, r in enumerate(rs):
            lines.append(f"{i}," + ",".join(_csv_field(x) for x in r))
        files[f"data/{split}_data.csv"] = "\n".join(lines) + "\n"
    return utts, files


def _csv_field(x: str) -> str:
    return f'"{x}"' if ("," in x or '"' in x) else x


# ------------------------------------------------------------------ IEMOCAP
def plan_iemocap(cfg: dict, tts: dict, seed: int):
    s = cfg["synth"]
    rng, vocab = _rng_and_vocab(seed, "iemocap", tts)
    utts, files = [], {}
    for session in range(1, 6):
        spks = {"F": sample_speaker(rng, tts["flite_share"], "F"), "M": sample_speaker(rng, tts["flite_share"], "M")}
        dialogs = []
        for d in range(s["dialogs_per_session"]):
            lead = "FM"[d % 2]
            kind = f"impro{d // 2 + 1:02d}" if d % 2 == 0 else f"script{d // 2 + 1:02d}_1"
            dialogs.append(f"Ses{session:02d}{lead}_{kind}")
        for dialog in dialogs:
            n = s["utts_per_dialog"]
            emotions = [EMOTIONS[i % 4] for i in range(n)]
            rng.shuffle(emotions)
            t = round(rng.uniform(1.0, 5.0), 4)
            evals = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            trans = []
            counters = {"F": 0, "M": 0}
            for i in range(n):
                g = "FM"[(i + (dialog[5] == "M")) % 2]
                uid = f"{dialog}_{g}{counters[g]:03d}"
                counters[g] += 1
                emo = emotions[i]
                text = sentence(rng, vocab, s["min_words"], s["max_words"])
                utts.append(Utterance(
                    f"Session{session}/sentences/wav/{dialog}/{uid}.wav", text, spks[g], dict(EMOTION_PROSODY[emo])
                ))
                dur = round(len(text.split()) * 0.38 + 0.4, 4)
                vad = {"neu": (2.5, 2.5, 2.5), "hap": (4.0, 3.5, 3.0), "ang": (1.5, 4.0, 4.0), "sad": (1.5, 1.5, 2.0)}[emo]
                word = {"neu": "Neutral", "hap": "Happiness", "ang": "Anger", "sad": "Sadness"}[emo]
                evals += [
                    f"[{t:.4f} - {t + dur:.4f}]\t{uid}\t{emo}\t[{vad[0]:.4f}, {vad[1]:.4f}, {vad[2]:.4f}]",
                    f"C-E1:\t{word};\t()",
                    f"C-E2:\t{word};\t()",
                    f"A-E1:\tval {int(vad[0])}; act {int(vad[1])}; dom  {int(vad[2])};\t()",
                    "",
                ]
                trans.append(f"{uid} [{t:08.4f}-{t + dur:08.4f}]: {text.capitalize()}.")
                t = round(t + dur + rng.uniform(0.2, 1.5), 4)
            files[f"Session{session}/dialog/EmoEvaluation/{dialog}.txt"] = "\n".join(evals) + "\n"
            files[f"Session{session}/dialog/transcriptions/{dialog}.txt"] = "\n".join(trans) + "\n"
    return utts, files


PLANS = {
    "librispeech": plan_librispeech,
    "voxceleb1": plan_voxceleb1,
    "speech_commands": plan_speech_commands,
    "fluent_speech_commands": plan_fluent_speech_commands,
    "iemocap": plan_iemocap,
}


def plan(corpus: str, cfg: dict, tts: dict, seed: int):
    """(utterances, text files, hard links, numpy arrays, finish) of one corpus; paths
    relative. ``finish(root, durations)``, when not None, returns more text files once the
    audio is rendered (``durations``: seconds per utterance path, e.g. for time stamps)."""
    from deepwide.corpus.synth_extra import EXTRA_PLANS

    plans = {**PLANS, **EXTRA_PLANS}
    if corpus not in plans:
        raise DeepwideError(f"unknown corpus {corpus!r} (known: {', '.join(plans)})")
    out = plans[corpus](cfg, tts, seed)
    utts, files = out[0], out[1]
    links = out[2] if len(out) > 2 else []
    arrays = out[3] if len(out) > 3 else {}
    finish = out[4] if len(out) > 4 else None
    return utts, files, links, arrays, finish


def synthesize(corpus: str, cfg: dict, tts: dict, seed: int, out: str | Path, jobs: int = 1, progress: bool = True) -> dict:
    """Render one corpus into ``out`` (atomically) and return a summary dict."""
    import soundfile as sf
    from tqdm import tqdm

    require_programs()
    utts, files, links, arrays, finish = plan(corpus, cfg, tts, seed)
    rel_paths = [u.path for u in utts]
    out = Path(out)
    jobs = max(1, int(jobs or os.cpu_count() or 1))
    t0 = time.time()
    with atomic_path(out, is_dir=True) as tmp:
        for u in utts:
            u.path = str(tmp / u.path)
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            try:
                for _ in tqdm(pool.map(render, utts), total=len(utts), desc=f"synth {corpus}", disable=not progress, mininterval=2):
                    pass
            except RuntimeError as err:  # a TTS or sox call failed: name the program and file
                raise DeepwideError(f"synthesizing {corpus} failed: {err}") from None
        durations = {rel: sf.info(u.path).duration for rel, u in zip(rel_paths, utts)}
        if finish is not None:
            files = {**files, **finish(tmp, durations)}
        for rel, text in files.items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        for rel, x in arrays.items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            sf.write(p, x, SAMPLE_RATE, subtype="PCM_16")
        for src, dst in links:
            d = tmp / dst
            d.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(tmp / src, d)
            except OSError:
                shutil.copyfile(tmp / src, d)
        wall = time.time() - t0
        seconds = sum(durations.values())
        summary = dict(
            corpus=corpus, seed=seed, utterances=len(utts), audio_hours=round(seconds / 3600, 4),
            wall_s=round(wall, 2), utterances_per_s=round(len(utts) / max(wall, 1e-9), 2), jobs=jobs,
        )
        # deterministic provenance only (no timings): the tree is byte-identical per seed
        info = dict(corpus=corpus, seed=seed, utterances=len(utts), audio_seconds=round(seconds, 3), config=cfg, tts=tts)
        (tmp / "deepwide_synth.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    log.info("synthesized %s: %s", corpus, summary)
    return summary
