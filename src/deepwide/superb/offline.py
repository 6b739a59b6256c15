"""Files s3prl would download, written offline from the corpus (or from user-supplied files).

- SID/ASV: ``iden_split.txt`` (VoxCeleb1 identification split: ``<1|2|3> idXXXXX/video/NNNNN.wav``);
  ASV also ``voxceleb1_test_v2.txt`` (trials).
- ER: ``test_session{k}_{train,test}_metadata.json`` per fold, in s3prl's ``cache_dir``.
- PR: the two lexicon files s3prl's G2P fetches, named ``{sha256(url)}.{basename}`` in
  s3prl's download dir; the lexicon must cover every transcript word.

On the embedded corpora these are derived from the corpus itself (split by video per
speaker, sessions as folds, espeak-ng pronunciations); for real corpora they are copied
from files the user names in the config. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

from deepwide.errors import DeepwideError
from deepwide.utils.io import atomic_write_text

# the URLs s3prl 0.4.18 fetches; the cached file names derive from them
LEXICON_URLS = [
    "https://huggingface.co/datasets/s3prl/g2p/raw/main/lexicon/librispeech-lexicon-200k-g2p.txt",
    "https://huggingface.co/datasets/s3prl/g2p/raw/main/lexicon/librispeech-lexicon-allothers-g2p.txt",
]
ER_EMOTIONS = ("neu", "hap", "ang", "sad", "exc")


def lexicon_cache_name(url: str) -> str:
    """File name s3prl's ``urls_to_filepaths`` gives ``url`` in its download dir."""
    return f"{hashlib.sha256(url.encode()).hexdigest()}.{Path(url).name}"


# ----------------------------------------------------------------------------- VoxCeleb1


def derive_iden_split(root: str | Path) -> str:
    """An ``iden_split.txt`` for a VoxCeleb1-layout root, following the official protocol.

    The official list splits each speaker's utterances by video: per speaker, the last
    video (sorted) is test (3), the one before it validation (2), the rest train (1).
    A speaker with one video contributes its utterances to train only, with two videos to
    train and test.
    """
    root = Path(root)
    per_spk: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for wav in sorted(root.glob("*/wav/*/*/*.wav")):
        spk, video, name = wav.parts[-3:]
        per_spk[spk][video].append(f"{spk}/{video}/{name}")
    if not per_spk:
        raise DeepwideError(f"superb.sid: no wav files under {root}/*/wav/<speaker>/<video>/ (VoxCeleb1 layout)")
    lines = []
    for spk in sorted(per_spk):
        videos = sorted(per_spk[spk])
        codes = {v: 1 for v in videos}
        if len(videos) >= 2:
            codes[videos[-1]] = 3
        if len(videos) >= 3:
            codes[videos[-2]] = 2
        for v in videos:
            lines += [f"{codes[v]} {uid}" for uid in per_spk[spk][v]]
    return "\n".join(lines) + "\n"


def write_iden_split(root: str | Path, dest_dir: str | Path, split_file: str | None = None, embedded: bool = False) -> Path:
    """Put ``iden_split.txt`` into ``dest_dir`` (user file, root's copy, or derived if embedded)."""
    dest = Path(dest_dir) / "iden_split.txt"
    src = Path(split_file) if split_file else Path(root) / "iden_split.txt"
    if src.is_file():
        text = src.read_text()
    elif embedded:
        text = derive_iden_split(root)
    else:
        raise DeepwideError(f"superb.sid.split_file: iden_split.txt not found at {src}; nothing is downloaded")
    if not text.strip():
        raise DeepwideError(f"superb.sid: split list {src} is empty")
    if not dest.is_file() or dest.read_text() != text:
        atomic_write_text(dest, text)
    return dest


# ----------------------------------------------------------------------------- IEMOCAP


def iemocap_utterances(root: str | Path) -> list[dict]:
    """Every labelled sentence of an IEMOCAP-layout root: path (relative), label, speaker, session."""
    root = Path(root)
    out = []
    for session in range(1, 6):
        sdir = root / f"Session{session}"
        for wav in sorted((sdir / "sentences" / "wav").glob("*/*.wav")):
            label_file = sdir / "dialog" / "EmoEvaluation" / f"{wav.parent.name}.txt"
            if not label_file.is_file():
                raise DeepwideError(f"superb.er: label file {label_file} missing for {wav}")
            m = re.search(rf"{re.escape(wav.stem)}\t(.+?)\t", label_file.read_text())
            if not m:
                raise DeepwideError(f"superb.er: {label_file} has no label line for {wav.stem}")
            out.append(
                {
                    "path": wav.relative_to(root).as_posix(),
                    "label": m.group(1),
                    "speaker": wav.parent.name.split("_")[0],
                    "session": session,
                }
            )
    return out


def write_er_metadata(root: str | Path, cache_dir: str | Path, fold: int, metadata_dir: str | None = None) -> None:
    """The two per-fold JSON files s3prl's ER recipe reads from ``cache_dir``.

    SUPERB's split (the files s3prl would fetch): session ``fold+1`` is the test set, the
    other four sessions train+dev; only neutral, happy (+excited), angry and sad count.
    ``metadata_dir`` (holding ``Session{k}/{train,test}_meta_data.json``) overrides this.
    """
    cache_dir = Path(cache_dir)
    session = fold + 1
    targets = {
        "train": cache_dir / f"test_session{session}_train_metadata.json",
        "test": cache_dir / f"test_session{session}_test_metadata.json",
    }
    if metadata_dir:
        for part, dest in targets.items():
            src = Path(metadata_dir) / f"Session{session}" / f"{part}_meta_data.json"
            if not src.is_file():
                raise DeepwideError(f"superb.er.metadata_dir: {src} not found")
            shutil.copyfile(src, dest)
        return
    utts = [u for u in iemocap_utterances(root) if u["label"] in ER_EMOTIONS]
    for part, dest in targets.items():
        rows = [
            {"path": u["path"], "label": "hap" if u["label"] == "exc" else u["label"], "speaker": u["speaker"]}
            for u in utts
            if (u["session"] == session) == (part == "test")
        ]
        if not rows:
            raise DeepwideError(f"superb.er: fold {fold} has no {part} utterances with labels {ER_EMOTIONS} under {root}")
        text = json.dumps({"labels": {"neu": 0, "hap": 1, "ang": 2, "sad": 3}, "meta_data": rows}, indent=1)
        if not dest.is_file() or dest.read_text() != text:
            atomic_write_text(dest, text)


# ----------------------------------------------------------------------------- LibriSpeech lexicon


def transcript_words(root: str | Path, splits: list[str]) -> list[str]:
    """Sorted distinct upper-case words of every ``*.trans.txt`` in ``splits``."""
    words = set()
    for split in splits:
        for trans in Path(root, split).rglob("*.trans.txt"):
            for line in trans.read_text().splitlines():
                parts = line.strip().split(" ")
                words.update(w.upper() for w in parts[1:] if w)
    return sorted(words)


def _strip_ipa(text: str) -> list[str]:
    phones = [p.replace("ˈ", "").replace("ˌ", "").strip() for p in text.split()]
    return [p for p in phones if p and p not in ("_", "|")]


def espeak_lexicon(words: list[str], voice: str = "en-us", chunk: int = 500) -> dict[str, list[str]]:
    """Pronunciations (IPA phones, stress marks dropped) of ``words`` from espeak-ng."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DeepwideError("superb.pr: the embedded lexicon needs espeak-ng (Debian package espeak-ng)")

    def run(batch: list[str]) -> list[str]:
        text = "\n".join(w.lower() for w in batch) + "\n"
        proc = subprocess.run([exe, "-q", "--ipa", "--sep= ", "-v", voice], input=text, capture_output=True, text=True, check=True)
        return [line for line in proc.stdout.splitlines() if line.strip()]

    lex: dict[str, list[str]] = {}
    for i in range(0, len(words), chunk):
        batch = words[i : i + chunk]
        lines = run(batch)
        if len(lines) != len(batch):  # a word espeak split or swallowed: one call each
            lines = [" ".join(run([w])) for w in batch]
        for word, line in zip(batch, lines):
            phones = _strip_ipa(line)
            if not phones:
                raise DeepwideError(f"superb.pr: espeak-ng gave no phones for the word {word!r}")
            lex[word] = phones
    return lex


def write_lexicon(download_dir: str | Path, root: str | Path, splits: list[str], files: list[str] | None = None) -> list[Path]:
    """Put s3prl's two lexicon files into ``download_dir``; check they cover every word.

    ``files``: the user's copies of s3prl's lexicons (real LibriSpeech). Without them the
    lexicon comes from espeak-ng over the transcripts (embedded corpus): all words go into
    the first file, the second is empty.
    """
    download_dir = Path(download_dir)
    download_dir.mkdir(parents=True, exist_ok=True)
    dests = [download_dir / lexicon_cache_name(u) for u in LEXICON_URLS]
    words = transcript_words(root, splits)
    if files:
        texts = [Path(f).read_text() for f in files]
    else:
        cached = {}
        if dests[0].is_file():
            for line in dests[0].read_text().splitlines():
                w, *ph = line.split()
                cached[w] = ph
        missing = [w for w in words if w not in cached]
        if missing:
            cached.update(espeak_lexicon(missing))
        texts = ["".join(f"{w} {' '.join(cached[w])}\n" for w in sorted(cached)), ""]
    known = set()
    for text in texts:
        known.update(line.split()[0] for line in text.splitlines() if line.strip())
    uncovered = [w for w in words if w not in known]
    if uncovered:
        raise DeepwideError(
            f"superb.pr: the lexicon does not cover {len(uncovered)} transcript word(s) of {root}, e.g. {uncovered[:5]}"
        )
    for dest, text in zip(dests, texts):
        if not dest.is_file() or dest.read_text() != text:
            atomic_write_text(dest, text)
    return dests
