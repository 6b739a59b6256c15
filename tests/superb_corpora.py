"""Tiny corpora in the real datasets' layouts, spoken by espeak-ng, for the superb tests.

Only what s3prl's own ``prepare_data`` reads is written. Speakers are espeak-ng voice
variants with different pitch and rate; audio is 16 kHz mono 16-bit.
"""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

VARIANTS = ["m1", "f1", "m3", "f2", "m5", "f3", "m7", "f4"]
KS_WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


def say(text: str, speaker: int, path: Path) -> int:
    """Synthesize ``text`` with speaker ``speaker`` into ``path`` (16 kHz); returns samples."""
    voice = f"en-us+{VARIANTS[speaker % len(VARIANTS)]}"
    pitch = 30 + 7 * (speaker % 6)
    rate = 150 + 12 * (speaker % 5)
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(rate), "--stdout", text],
        capture_output=True,
        check=True,
    ).stdout
    data, sr = sf.read(io.BytesIO(wav), dtype="float32")
    y = AF.resample(torch.from_numpy(data), sr, 16000).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, y, 16000, subtype="PCM_16", format=path.suffix[1:].upper())
    return len(y)


def ks_bucket(speaker_hash: str) -> str:
    """Where s3prl's SpeechCommandsV1 puts a speaker: valid (<10 %), dropped, train."""
    h = int(hashlib.sha1(speaker_hash.encode()).hexdigest(), 16)
    pct = (h % (2**27)) * (100.0 / (2**27 - 1))
    return "valid" if pct < 10 else ("drop" if pct < 20 else "train")


def ks_speakers(n_train: int, n_valid: int) -> tuple[list[str], list[str]]:
    train, valid = [], []
    i = 0
    while len(train) < n_train or len(valid) < n_valid:
        name = f"{i:08x}"
        b = ks_bucket(name)
        if b == "train" and len(train) < n_train:
            train.append(name)
        elif b == "valid" and len(valid) < n_valid:
            valid.append(name)
        i += 1
    return train, valid


def make_speech_commands(root: Path, n_train: int = 2, n_valid: int = 1, words: list[str] | None = None) -> Path:
    """Speech Commands v0.01: train folder (+ _background_noise_) and test folder."""
    words = words or KS_WORDS
    train_dir = root / "speech_commands_v0.01"
    test_dir = root / "speech_commands_test_set_v0.01"
    train_spk, valid_spk = ks_speakers(n_train, n_valid)
    for s, spk in enumerate(train_spk + valid_spk):
        for w in words + ["bed"]:
            say(w, s, train_dir / w / f"{spk}_nohash_0.wav")
    rng = np.random.default_rng(0)
    noise = (0.05 * rng.standard_normal(16000 * 3)).astype("float32")
    (train_dir / "_background_noise_").mkdir(parents=True, exist_ok=True)
    sf.write(train_dir / "_background_noise_" / "white_noise.wav", noise, 16000, subtype="PCM_16")
    for w in words:
        say(w, 7, test_dir / w / "f00dbabe_nohash_0.wav")
    say("cat", 7, test_dir / "_unknown_" / "f00dbabe_nohash_0.wav")
    (test_dir / "_silence_").mkdir(parents=True, exist_ok=True)
    sf.write(test_dir / "_silence_" / "silence_0.wav", noise[:16000], 16000, subtype="PCM_16")
    return root


def make_fluent_speech_commands(root: Path, speakers: int = 3) -> Path:
    """Fluent Speech Commands: data/{train,valid,test}_data.csv + wavs/speakers/<spk>/<id>.wav."""
    intents = [
        ("Turn on the lights", "activate", "lights", "none"),
        ("Turn off the lights", "deactivate", "lights", "none"),
        ("Play the music", "activate", "music", "none"),
        ("Heat up the kitchen", "increase", "heat", "kitchen"),
    ]
    rows = {"train": [], "valid": [], "test": []}
    for s in range(speakers):
        split = "train" if s < speakers - 2 else ("valid" if s == speakers - 2 else "test")
        spk = f"spk{s:02d}"
        for i, (text, act, obj, loc) in enumerate(intents):
            rel = f"wavs/speakers/{spk}/{spk}-{i:03d}.wav"
            say(text, s, root / rel)
            rows[split].append((len(rows[split]), rel, spk, text, act, obj, loc))
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split, rs in rows.items():
        lines = [",path,speakerId,transcription,action,object,location"]
        lines += [",".join(map(str, r)) for r in rs]
        (root / "data" / f"{split}_data.csv").write_text("\n".join(lines) + "\n")
    return root


def make_voxceleb1(root: Path, speakers: int = 3, videos: int = 3, utts: int = 2) -> Path:
    """VoxCeleb1: {dev,test}/wav/id1xxxx/<video>/0000N.wav (all speakers under dev)."""
    sentences = ["the quick brown fox", "jumps over the lazy dog", "a speaker says hello", "numbers one two three"]
    for s in range(speakers):
        for v in range(videos):
            for u in range(utts):
                say(sentences[(v + u) % len(sentences)], s, root / "dev" / "wav" / f"id{10001 + s}" / f"vid{v:08d}" / f"{u + 1:05d}.wav")
    return root


def make_iemocap(root: Path, per_session: int = 4) -> Path:
    """IEMOCAP: Session{1..5}/sentences/wav/<dialog>/<utt>.wav + dialog/EmoEvaluation/<dialog>.txt."""
    emotions = ["neu", "hap", "ang", "sad", "exc", "fru"]
    text = {"neu": "it is a table", "hap": "this is wonderful", "ang": "stop doing that now", "sad": "i miss them so much", "exc": "we won the game", "fru": "why does this never work"}
    for session in range(1, 6):
        dialog = f"Ses0{session}F_impro01"
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        for i in range(per_session + 1):
            emo = emotions[(i + session) % len(emotions)] if i < per_session else "fru"
            utt = f"{dialog}_F{i:03d}"
            say(text[emo], session + i, root / f"Session{session}" / "sentences" / "wav" / dialog / f"{utt}.wav")
            lines.append(f"[{i:.4f} - {i + 1:.4f}]\t{utt}\t{emo}\t[2.5000, 2.5000, 2.5000]")
        label = root / f"Session{session}" / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("\n".join(lines) + "\n")
    return root


def make_librispeech(root: Path, utts: int = 3) -> Path:
    """LibriSpeech: SPEAKERS.TXT + <split>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac + .trans.txt."""
    sentences = [
        "HE SAID THAT THE HOUSE WAS OLD",
        "SHE WALKED TO THE RIVER",
        "THE CHILDREN'S GAME WAS OVER",
        "WE READ A BOOK TONIGHT",
        "THE OLD MAN SAT DOWN",
    ]
    speakers = {"train-clean-100": [19, 26], "dev-clean": [84], "test-clean": [121]}
    spk_lines = [";ID  |SEX| SUBSET           |MINUTES| NAME"]
    k = 0
    for split, spks in speakers.items():
        for spk in spks:
            spk_lines.append(f"{spk:<5}| {'F' if spk % 2 else 'M'} | {split:<17}| 25.00| Reader {spk}")
            chapter = 100 + spk
            d = root / split / str(spk) / str(chapter)
            trans = []
            for u in range(utts):
                uid = f"{spk}-{chapter}-{u:04d}"
                text = sentences[(k + u) % len(sentences)]
                say(text.lower(), spk, d / f"{uid}.flac")
                trans.append(f"{uid} {text}")
            k += 1
            (d / f"{spk}-{chapter}.trans.txt").write_text("\n".join(trans) + "\n")
    (root / "SPEAKERS.TXT").write_text("\n".join(spk_lines) + "\n")
    return root


def words_of(root: Path) -> set[str]:
    out = set()
    for t in root.rglob("*.trans.txt"):
        for line in t.read_text().splitlines():
            out.update(re.split(r"\s+", line.strip())[1:])
    return out
