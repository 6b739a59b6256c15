"""Read a corpus root in its real on-disk layout and write Parquet manifests.

One pure ``prepare_<corpus>(root, ...) -> Prepared`` function per corpus (lhotse style)
reads the dataset's own metadata files (LibriSpeech trans.txt, VoxCeleb1 iden_split.txt,
Speech Commands lists, FSC csvs, IEMOCAP EmoEvaluation) and checks every audio file.
The same functions read the synthesized embedded corpora and real datasets.

Every manifest row has: id, path (absolute), num_samples, sample_rate, split, speaker,
text, phones (phone set ``espeak-ng-ipa``, space separated; see
:mod:`deepwide.corpus.text`), plus the corpus's label columns. Audio that is missing,
unreadable, empty, not 16 kHz or not mono is not in any manifest: it goes to
``rejects.tsv`` beside the manifests with its reason, and ``write_manifests`` fails when
more than ``max_reject_share`` of a corpus is rejected. LibriSpeech transcript lines that
cannot be used (malformed, duplicate, text outside the character set under
``text_policy``) are rejects too, their reason naming ``file:line``
(:mod:`deepwide.corpus.librispeech`). ``info.json`` beside the manifests (not a declared
output, like ``rejects.tsv``) holds the counts, the phone set and, for LibriSpeech, the
text policy and the speakers found in more than one split, and the job's ``usage`` (peak
memory, wall time: ``plan resources``).
"""

from __future__ import annotations

import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from deepwide.corpus.audiofiles import check_audio
from deepwide.corpus.librispeech import log_counts, read_transcripts
from deepwide.corpus.sources import IEMOCAP_SESSIONS, KS_COMMANDS, LIBRISPEECH_SPLITS
from deepwide.corpus.text import CHARSET_NAME, PHONE_SET, phonemize_words, phones_for, words_of
from deepwide.errors import DeepwideError
from deepwide.utils.io import atomic_path, atomic_write_text, existing, write_parquet

log = logging.getLogger(__name__)

BASE_COLUMNS = ["id", "path", "num_samples", "sample_rate", "split", "speaker", "text", "phones"]
ER_LABELS = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}


@dataclass
class Prepared:
    """What a ``prepare_*`` function found: manifest rows, rejected files, extra tables."""

    records: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # e.g. voxceleb1 trials
    info: dict = field(default_factory=dict)  # extra facts for info.json (text policy counts ...)


def _check_all(candidates: list[dict], jobs: int = 1, desc: str = "check audio", check=check_audio) -> Prepared:
    """Every candidate's audio checked (``check(path) -> (info, reason)``): records and rejects."""
    from tqdm import tqdm

    out = Prepared()
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(
            tqdm(pool.map(lambda c: check(c["path"]), candidates), total=len(candidates),
                 desc=desc, mininterval=5, disable=len(candidates) < 2000)
        )
    for cand, (info, reason) in zip(candidates, results):
        if info is None:
            out.rejects.append(dict(id=cand["id"], path=str(cand["path"]), split=cand.get("split", ""), reason=reason))
        else:
            out.records.append({**cand, "path": str(Path(cand["path"]).resolve()), **info})
    return out


def _read_csv(path: Path, need: set[str]) -> pd.DataFrame:
    """A CSV file's table, every cell a string; a DeepwideError names the ``need`` columns it lacks."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = need - set(df.columns)
    if missing:
        raise DeepwideError(f"{path}: missing columns {', '.join(sorted(missing))}")
    return df


# ------------------------------------------------------------------ LibriSpeech
def _librispeech_genders(root: Path) -> dict[str, str]:
    f = root / "SPEAKERS.TXT"
    genders = {}
    if f.is_file():
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith(";") or "|" not in line:
                continue
            parts = [p.strip() for p in line.split("|")]
            if parts[0].isdigit():
                genders[parts[0]] = parts[1]
    return genders


def prepare_librispeech(root: str | Path, splits: list[str] = LIBRISPEECH_SPLITS, jobs: int = 1,
                        text_policy: str = "normalise") -> Prepared:
    """LibriSpeech: ``{split}/{spk}/{chapter}/{spk}-{chapter}-{n}.flac`` + ``*.trans.txt``.

    Transcript lines are read by :func:`deepwide.corpus.librispeech.read_transcripts`:
    unusable lines are rejects naming ``file:line``; ``text_policy`` (normalise | reject)
    decides text outside upper-case A-Z, apostrophe and space. A speaker found in more
    than one split draws a WARNING (LibriSpeech's splits are speaker-disjoint).
    """
    root = existing(root, "LibriSpeech root", folder=True)
    genders = _librispeech_genders(root)
    tr = read_transcripts(root, list(splits), text_policy)
    log_counts("LibriSpeech", tr, text_policy)
    cands = [dict(id=x.id, path=x.audio, split=x.split, speaker=x.speaker, text=x.text, chapter=x.chapter,
                  gender=genders.get(x.speaker, "")) for x in tr.lines]
    out = _check_all(cands, jobs, "LibriSpeech")
    out.rejects += tr.rejects + tr.untranscribed
    shared = shared_speakers(out.records, list(splits))
    for spk, where in list(shared.items())[:20]:
        log.warning("LibriSpeech: speaker %s is in splits %s (LibriSpeech's splits share no speaker: "
                    "speaker identity leaks from training into evaluation)", spk, ", ".join(where))
    if len(shared) > 20:
        log.warning("LibriSpeech: %d speakers in more than one split in all", len(shared))
    out.info = {"text_policy": text_policy, "charset": CHARSET_NAME, "transcripts": tr.counts(),
                "shared_speakers": shared}
    return out


def shared_speakers(records: list[dict], splits: list[str]) -> dict[str, list[str]]:
    """Speaker -> the splits (in ``splits`` order) it appears in, for speakers in two or more."""
    where: dict[str, set[str]] = {}
    for r in records:
        where.setdefault(str(r["speaker"]), set()).add(r["split"])
    return {spk: [s for s in splits if s in got] for spk, got in sorted(where.items()) if len(got) > 1}


# ------------------------------------------------------------------ VoxCeleb1
VOX_TRIAL_FILES = ("voxceleb1_test_v2.txt", "veri_test2.txt", "veri_test.txt")


def _vox_id(uid: str) -> str:
    return uid.replace("/", "-").rsplit(".", 1)[0]


def prepare_voxceleb1(root: str | Path, jobs: int = 1) -> Prepared:
    """VoxCeleb1: ``{dev,test}/wav/{spk}/{video}/{n}.wav`` + ``iden_split.txt`` (+ trials)."""
    root = existing(root, "VoxCeleb1 root", folder=True)
    iden = existing(root / "iden_split.txt", "VoxCeleb1 iden_split.txt (place the file from the VoxCeleb site in the root)")
    code2split = {"1": "train", "2": "valid", "3": "test"}
    cands = []
    for n, line in enumerate(iden.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in code2split:
            raise DeepwideError(f"{iden}:{n}: expected '<1|2|3> idNNNNN/VIDEO/NNNNN.wav', got {line!r}")
        code, uid = parts
        subset = next((s for s in ("dev", "test") if (root / s / "wav" / uid).exists()), "dev")
        spk, video = uid.split("/")[:2]
        cands.append(dict(id=_vox_id(uid), path=root / subset / "wav" / uid, split=code2split[code],
                          speaker=spk, text="", video=video, subset=subset))
    out = _check_all(cands, jobs, "VoxCeleb1")
    trial_file = next((root / f for f in VOX_TRIAL_FILES if (root / f).is_file()), None)
    rows = []
    if trial_file is not None:
        paths = {r["id"]: r["path"] for r in out.records}
        dropped = 0
        for line in trial_file.read_text().splitlines():
            parts = line.split()
            if len(parts) != 3:
                continue
            i1, i2 = _vox_id(parts[1]), _vox_id(parts[2])
            p1 = paths.get(i1) or _trial_path(root, parts[1])
            p2 = paths.get(i2) or _trial_path(root, parts[2])
            if p1 is None or p2 is None:
                dropped += 1
                continue
            rows.append(dict(label=int(parts[0]), id1=i1, id2=i2, path1=p1, path2=p2))
        if dropped:
            log.warning("VoxCeleb1: %d trials of %s name unusable files; dropped", dropped, trial_file.name)
    else:
        log.warning("VoxCeleb1: no trial list (%s) in %s: trials manifest is empty", "/".join(VOX_TRIAL_FILES), root)
    out.tables["trials"] = pd.DataFrame(rows, columns=["label", "id1", "id2", "path1", "path2"])
    return out


def _trial_path(root: Path, uid: str) -> str | None:
    # a test-subset file that is not in iden_split: accept it only if it is usable
    p = root / "test" / "wav" / uid
    info, _ = check_audio(p)
    return str(p.resolve()) if info else None


# ------------------------------------------------------------------ Speech Commands v0.01
def _ks_speaker(name: str) -> str:
    return re.sub(r"_nohash_.*$", "", name)


def prepare_speech_commands(root: str | Path, test_root: str | Path, commands=KS_COMMANDS, jobs: int = 1) -> Prepared:
    """Speech Commands v0.01 train folder (+ lists) and the separate test-set folder.

    train/valid follow validation_list.txt / testing_list.txt (files on the testing list
    are left out, as SUPERB does: its test set is the separate folder). Labels: the ten
    commands, ``_unknown_`` for other words, ``_silence_`` for ``_background_noise_``.
    """
    root = existing(root, "Speech Commands root", folder=True)
    test_root = existing(test_root, "Speech Commands test-set root", folder=True)
    commands = set(commands)
    valid = set(existing(root / "validation_list.txt", "Speech Commands validation_list.txt").read_text().split())
    testing = set(existing(root / "testing_list.txt", "Speech Commands testing_list.txt").read_text().split())
    cands = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if d.name == "_background_noise_":
            for wav in sorted(d.glob("*.wav")):
                cands.append(dict(id=f"_background_noise_/{wav.stem}", path=wav, split="train", speaker="",
                                  text="", label="_silence_", word="_background_noise_"))
            continue
        for wav in sorted(d.glob("*.wav")):
            rel = f"{d.name}/{wav.name}"
            if rel in testing:
                continue
            label = d.name if d.name in commands else "_unknown_"
            cands.append(dict(id=rel[:-4], path=wav, split="valid" if rel in valid else "train",
                              speaker=_ks_speaker(wav.name), text=d.name, label=label, word=d.name))
    for d in sorted(p for p in test_root.iterdir() if p.is_dir()):
        label = d.name if d.name in commands or d.name in ("_unknown_", "_silence_") else "_unknown_"
        for wav in sorted(d.glob("*.wav")):
            text = d.name if d.name in commands else ""
            cands.append(dict(id=f"test/{d.name}/{wav.stem}", path=wav, split="test", speaker=_ks_speaker(wav.name),
                              text=text, label=label, word=d.name))
    return _check_all(cands, jobs, "Speech Commands")


# ------------------------------------------------------------------ Fluent Speech Commands
def prepare_fluent_speech_commands(root: str | Path, jobs: int = 1) -> Prepared:
    """Fluent Speech Commands: ``data/{train,valid,test}_data.csv`` + ``wavs/speakers/...``."""
    root = existing(root, "Fluent Speech Commands root", folder=True)
    cands = []
    need = {"path", "speakerId", "transcription", "action", "object", "location"}
    for split in ("train", "valid", "test"):
        csv = existing(root / "data" / f"{split}_data.csv", f"Fluent Speech Commands {split}_data.csv")
        for r in _read_csv(csv, need).itertuples(index=False):
            cands.append(dict(
                id=Path(r.path).stem, path=root / r.path, split=split, speaker=r.speakerId, text=r.transcription,
                action=r.action, object=r.object, location=r.location,
                intent=f"{r.action} ; {r.object} ; {r.location}",
            ))
    return _check_all(cands, jobs, "Fluent Speech Commands")


# ------------------------------------------------------------------ IEMOCAP
_EMO_LINE = re.compile(r"^\[(\d+(?:\.\d+)?) - (\d+(?:\.\d+)?)\]\t(\S+)\t(\S+)\t\[")
_TRANS_LINE = re.compile(r"^(\S+) \[[^\]]*\]: ?(.*)$")


def prepare_iemocap(root: str | Path, jobs: int = 1) -> Prepared:
    """IEMOCAP: ``Session{1..5}/sentences/wav/{dialog}/{utt}.wav`` labelled by
    ``dialog/EmoEvaluation/{dialog}.txt``; text from ``dialog/transcriptions`` if present.

    ``emotion`` is the annotators' majority label as written; ``label`` is the SUPERB
    four-class label (exc merged into hap), empty for the other emotions.
    """
    root = existing(root, "IEMOCAP root", folder=True)
    cands, rejects = [], []
    for session in IEMOCAP_SESSIONS:
        sdir = existing(root / session, f"IEMOCAP {session} folder", folder=True)
        wav_dir = existing(sdir / "sentences" / "wav", f"IEMOCAP {session}/sentences/wav folder", folder=True)
        emo, text = {}, {}
        for f in sorted((sdir / "dialog" / "EmoEvaluation").glob("*.txt")):
            for line in f.read_text(errors="replace").splitlines():
                m = _EMO_LINE.match(line)
                if m:
                    emo[m.group(3)] = m.group(4)
        for f in sorted((sdir / "dialog" / "transcriptions").glob("*.txt")):
            for line in f.read_text(errors="replace").splitlines():
                m = _TRANS_LINE.match(line.strip())
                if m:
                    text[m.group(1)] = m.group(2).strip()
        for wav in sorted(wav_dir.glob("*/*.wav")):
            if wav.name.startswith("."):
                continue
            uid, dialog = wav.stem, wav.parent.name
            if uid not in emo:
                rejects.append(dict(id=uid, path=str(wav), split=session, reason="no label in dialog/EmoEvaluation"))
                continue
            gender = uid.rsplit("_", 1)[-1][:1]
            cands.append(dict(
                id=uid, path=wav, split=session, speaker=f"{uid[:5]}{gender}", text=text.get(uid, ""),
                emotion=emo[uid], label=ER_LABELS.get(emo[uid], ""), session=int(session[-1]), dialog=dialog,
                act="improvised" if "impro" in dialog else "scripted", gender=gender,
            ))
    out = _check_all(cands, jobs, "IEMOCAP")
    out.rejects += rejects
    return out


# ------------------------------------------------------------------ manifests
def lexicon_lines(texts, lexicon: dict[str, str]) -> list[str]:
    """``WORD ph ph ...`` lines (s3prl's G2P lexicon format) for every transcript token.

    s3prl's phoneme recognition maps ``text.upper().split(" ")`` through such a lexicon
    and needs every token covered; the pipeline writes it from espeak-ng (phone set
    ``espeak-ng-ipa``, named in ``info.json``) instead of downloading LibriSpeech's g2p
    lexicon.
    """
    out = {}
    for text in texts:
        for token in text.strip().upper().split(" "):
            if token and token not in out:
                phones = phones_for(token, lexicon)
                if phones:
                    out[token] = phones
    return [f"{w} {p}" for w, p in sorted(out.items())]


def prepare(corpus: str, root: str | Path, cfg: dict, test_root: str | Path | None = None, jobs: int = 1) -> Prepared:
    """Dispatch to ``prepare_<corpus>`` with the options from its config section."""
    if corpus == "librispeech":
        return prepare_librispeech(root, cfg.get("splits", LIBRISPEECH_SPLITS), jobs, cfg.get("text_policy", "normalise"))
    if corpus == "voxceleb1":
        return prepare_voxceleb1(root, jobs)
    if corpus == "speech_commands":
        if test_root is None:
            raise DeepwideError("Speech Commands needs the test-set root (corpus.speech_commands.test_root)")
        return prepare_speech_commands(root, test_root, cfg.get("commands", KS_COMMANDS), jobs)
    if corpus == "fluent_speech_commands":
        return prepare_fluent_speech_commands(root, jobs)
    if corpus == "iemocap":
        return prepare_iemocap(root, jobs)
    raise DeepwideError(f"unknown corpus {corpus!r}")


def write_manifests(corpus: str, prepared: Prepared, out_dir: str | Path, splits: list[str], max_reject_share: float) -> dict:
    """Write ``{split}.parquet`` for every split (and extra table) plus ``rejects.tsv``.

    ``rejects.tsv`` is written first, so it survives when the reject share is too high
    and this raises DeepwideError (no manifest is written then).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rejects = pd.DataFrame(prepared.rejects, columns=["id", "path", "split", "reason"])
    with atomic_path(out_dir / "rejects.tsv") as tmp:
        rejects.to_csv(tmp, sep="\t", index=False)
    n_rej, n_ok = len(rejects), len(prepared.records)
    share = n_rej / max(1, n_rej + n_ok)
    info = {"corpus": corpus, "phone_set": PHONE_SET, "rejected": n_rej,
            "reject_reasons": {str(k): int(v) for k, v in rejects["reason"].astype(str).str.split(":").str[0].value_counts().sort_index().items()},
            **prepared.info}
    if n_rej:
        log.warning("%s: %d of %d files rejected (%.1f%%), see %s", corpus, n_rej, n_rej + n_ok, 100 * share, out_dir / "rejects.tsv")
        for r in prepared.rejects[:20]:
            log.warning("  rejected %s: %s", r["path"], r["reason"])
    if share > max_reject_share:
        reasons = info["reject_reasons"]
        _write_info(out_dir, {**info, "failed": f"reject share {share:.4f} > max_reject_share {max_reject_share}"})
        raise DeepwideError(
            f"corpus {corpus}: {n_rej} of {n_rej + n_ok} audio files rejected ({100 * share:.1f}% > "
            f"max_reject_share {100 * max_reject_share:.1f}%); reasons {reasons}; list in {out_dir / 'rejects.tsv'}"
        )
    if n_ok == 0:
        raise DeepwideError(f"corpus {corpus}: no usable audio found")
    df = pd.DataFrame(prepared.records)
    dup = df["id"][df["id"].duplicated()]
    if len(dup):
        raise DeepwideError(f"corpus {corpus}: duplicate utterance ids, e.g. {dup.iloc[0]!r}")
    lexicon = phonemize_words(w for t in df["text"].unique() for w in words_of(t))
    df["phones"] = [phones_for(t, lexicon) for t in df["text"]]
    df["speaker"] = df["speaker"].astype(str)
    label_cols = [c for c in df.columns if c not in BASE_COLUMNS]
    df = df[BASE_COLUMNS + label_cols].sort_values(["split", "id"], kind="stable").reset_index(drop=True)
    counts = {}
    unknown = set(df["split"]) - set(splits)
    if unknown:
        raise DeepwideError(f"corpus {corpus}: records in splits {sorted(unknown)} that no manifest takes")
    for split in splits:
        if split in prepared.tables:
            part = prepared.tables[split]
        else:
            part = df[df["split"] == split].reset_index(drop=True)
        write_parquet(part, out_dir / f"{split}.parquet")
        counts[split] = len(part)
    if corpus == "librispeech":
        with atomic_path(out_dir / "lexicon.txt") as tmp:
            tmp.write_text("".join(f"{line}\n" for line in lexicon_lines(df["text"].unique(), lexicon)))
    _write_info(out_dir, {**info, "counts": counts, **({"lexicon": "lexicon.txt"} if corpus == "librispeech" else {})})
    log.info("%s manifests in %s: %s", corpus, out_dir, counts)
    return counts


def _write_info(out_dir: Path, info: dict) -> None:
    from deepwide.utils.usage import usage

    # the job's peak memory and wall time so far: the manifests are written (plan resources)
    atomic_write_text(out_dir / "info.json", json.dumps({**info, "usage": usage()}, indent=1, sort_keys=True) + "\n")
