"""Files s3prl would download, written offline from the corpus (or from user-supplied files).

- SID/ASV: ``iden_split.txt`` (VoxCeleb1 identification split: ``<1|2|3> idXXXXX/video/NNNNN.wav``);
  ASV also ``voxceleb1_test_v2.txt`` (trials).
- ER: ``test_session{k}_{train,test}_metadata.json`` per fold, in s3prl's ``cache_dir``.
- PR: the two lexicon files s3prl's G2P fetches, named ``{sha256(url)}.{basename}`` in
  s3prl's download dir; the lexicon must cover every transcript word. Either the user's
  copies of s3prl's files (phone set ``s3prl-g2p``, used unchanged) or, for any root
  without them, generated from the root's transcripts by the project's G2P (espeak-ng IPA,
  phone set ``espeak-ng-ipa``, the same as the corpus manifests'); ``deepwide superb
  lexicon`` writes either into a folder with ``lexicon.json`` naming the phone set.

On the embedded corpora the split lists and folds are derived from the corpus itself
(split by video per speaker, sessions as folds); for real corpora they are copied from
files the user names in the config. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections import defaultdict
from pathlib import Path

from deepwide.errors import DeepwideError
from deepwide.utils.io import atomic_write_text, publish_dir, read_json_object

log = logging.getLogger(__name__)

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


# ----------------------------------------------------------------------------- rejected audio kept from s3prl
#
# s3prl's readers load every file their lists name (or their folders hold); one file the
# corpus stage rejects (deepwide.corpus.prepare.check_audio: unreadable, empty, not 16 kHz
# mono; listed in rejects.tsv) crashed the job in s3prl's loader. Each task's reader gets
# lists without such files, or a view of the root: a folder of links to everything else
# plus the lists rewritten, built once per set of rejected files (the key), then reused.


def rejected_audio(items: list, path_of, what: str, jobs: int = 8) -> dict:
    """``{item: reason}`` for the items whose file (``path_of(item)``; None: not checked)
    check_audio rejects; the first 20 are logged at WARNING naming ``what``."""
    from concurrent.futures import ThreadPoolExecutor

    from deepwide.corpus.prepare import check_audio

    def reason(item):
        path = path_of(item)
        return None if path is None else check_audio(path)[1]

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        bad = {item: why for item, why in zip(items, pool.map(reason, items)) if why is not None}
    for item, why in list(bad.items())[:20]:
        log.warning("%s: %s left out of what s3prl reads: %s", what, item, why)
    return bad


def _view(root: Path, bad, dest_parent: str | Path, build) -> tuple[Path, int]:
    """The root s3prl should read and how many items were left out of it: ``root`` itself
    when none is ``bad``; else ``dest_parent/view-<key>/`` (key: root and the rejected
    items), written by ``build(tmp)`` into a pid-named sibling and renamed into place
    once; reused after."""
    if not bad:
        return root, 0
    key = hashlib.sha256("\n".join([str(root), *sorted(map(str, bad))]).encode()).hexdigest()[:16]
    dest = Path(dest_parent) / f"view-{key}"
    if dest.is_dir():
        return dest, len(bad)
    tmp = Path(dest_parent) / f".{dest.name}.{os.getpid()}.partial"
    shutil.rmtree(tmp, ignore_errors=True)  # our own leftover (pid-named)
    tmp.mkdir(parents=True)
    build(tmp)
    publish_dir(tmp, dest)
    return dest, len(bad)


def _link_all_but(src: Path, dest: Path, skip) -> None:
    """Links in ``dest`` to every entry of ``src`` whose name is not in ``skip``."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        if entry.name not in skip:
            os.symlink(entry, dest / entry.name)


def leave_out_bad_voxceleb_audio(root: str | Path, lists: list[Path], jobs: int = 8) -> int:
    """Rewrite VoxCeleb1 lists s3prl reads (``iden_split.txt``: ``<1|2|3> UID``; the trial
    list: ``<0|1> UID UID``) without the lines naming audio the corpus stage rejects
    (:func:`deepwide.corpus.prepare.check_audio`: unreadable, empty, not 16 kHz mono), which
    s3prl's loader would crash on. A UID is looked up as s3prl does (``ROOT/*/wav/UID``); one
    found nowhere is left to s3prl. Returns how many distinct files were left out."""
    root = Path(root)
    texts = {p: p.read_text() for p in lists if p.is_file()}
    uids = sorted({w for t in texts.values() for line in t.splitlines() for w in line.split()[1:]})
    dirs = sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []

    def path_of(uid):
        return next((d / "wav" / uid for d in dirs if (d / "wav" / uid).exists()), None)

    bad = rejected_audio(uids, path_of, f"VoxCeleb1 {root}", jobs)
    if not bad:
        return 0
    for path, text in texts.items():
        kept = [line for line in text.splitlines(keepends=True) if not any(w in bad for w in line.split()[1:])]
        atomic_write_text(path, "".join(kept))
    return len(bad)


def fsc_view(root: str | Path, dest_parent: str | Path, jobs: int = 8) -> tuple[Path, int]:
    """The Fluent Speech Commands root s3prl's IC reader should see, and how many files
    were left out of it. s3prl reads ``data/{train,valid,test}_data.csv`` and every file
    they name. When the corpus stage's check_audio rejects none, the root itself; otherwise
    a view holds the three lists without the rejected files' rows (as written) and links
    to everything else in the root (the audio is not copied)."""
    import csv

    root = Path(root).resolve()
    names = [f"{s}_data.csv" for s in ("train", "valid", "test")]
    tables = {}  # name -> [(line as written, its path)], header first (path None)
    for n in names:
        lines = (root / "data" / n).read_text().splitlines(keepends=True)
        col = next(csv.reader(lines[:1])).index("path")
        tables[n] = [(lines[0], None)] + [(line, row[col]) for line, row in zip(lines[1:], csv.reader(lines[1:]))]
    paths = sorted({p for t in tables.values() for _, p in t if p})
    bad = rejected_audio(paths, lambda p: root / p, f"Fluent Speech Commands {root}", jobs)

    def build(tmp):
        _link_all_but(root, tmp, {"data"})
        _link_all_but(root / "data", tmp / "data", set(names))
        for n, t in tables.items():  # the rows as written, less the rejected ones
            (tmp / "data" / n).write_text("".join(line for line, p in t if p not in bad))

    return _view(root, bad, dest_parent, build)


def speech_commands_view(root: str | Path, folders: list[str], dest_parent: str | Path, jobs: int = 8) -> tuple[Path, int]:
    """The root s3prl's KS reader should see (``ROOT/<folder>/<word>/*.wav`` for the train
    and test folders), and how many files were left out of it. When the corpus stage's
    check_audio rejects none, the root itself; otherwise a view holds the same folders
    with links to every other file (the audio is not copied)."""
    root = Path(root).resolve()
    wavs = sorted(w for f in folders for w in (root / f).glob("*/*.wav"))
    bad = rejected_audio(wavs, lambda w: w, f"Speech Commands {root}", jobs)

    def build(tmp):
        for f in folders:
            _link_all_but(root / f, tmp / f, {d.name for d in (root / f).iterdir() if d.is_dir()})
            for d in (root / f).iterdir():
                if d.is_dir():
                    _link_all_but(d, tmp / f / d.name, {w.name for w in bad if w.parent == d})

    return _view(root, bad, dest_parent, build)


def kaldi_view(root: str | Path, splits: list[str], dest_parent: str | Path, jobs: int = 8) -> tuple[Path, int]:
    """The Kaldi-style data dir (``ROOT/<split>/wav.scp``, segments, utt2spk, spk2utt,
    reco2dur, rttm) s3prl's SD reader should see, and how many recordings were left out.
    A recording whose wav.scp file the corpus stage's check_audio rejects is dropped from
    every list of its split in a view; none rejected: the root itself."""
    root = Path(root).resolve()
    recs = {}  # (split, reco) -> path
    for split in splits:
        for line in (root / split / "wav.scp").read_text().splitlines():
            parts = line.split(None, 1)
            if len(parts) == 2 and not parts[1].rstrip().endswith("|"):  # a command: not a file to check
                recs[(split, parts[0])] = parts[1].strip()
    bad = rejected_audio(sorted(recs), recs.get, f"SD data dir {root}", jobs)
    reco_field = {"wav.scp": 0, "reco2dur": 0, "segments": 1, "rttm": 1}

    def build(tmp):
        _link_all_but(root, tmp, set(splits))
        for split in splits:
            gone = {r for s, r in bad if s == split}
            src, out = root / split, tmp / split
            _link_all_but(src, out, {*reco_field, "utt2spk", "spk2utt"})
            seg = src / "segments"
            utts = {ln.split()[0] for ln in seg.read_text().splitlines() if ln.split() and ln.split()[1] in gone} \
                if seg.is_file() else set()
            for f in src.iterdir():
                if f.name in reco_field:
                    i = reco_field[f.name]
                    keep = [ln for ln in f.read_text().splitlines(keepends=True) if len(ln.split()) <= i or ln.split()[i] not in gone]
                elif f.name == "utt2spk":
                    keep = [ln for ln in f.read_text().splitlines(keepends=True) if not ln.split() or ln.split()[0] not in utts]
                elif f.name == "spk2utt":
                    keep = []
                    for ln in f.read_text().splitlines():
                        words = ln.split()
                        left = [u for u in words[1:] if u not in utts]
                        if words and left:
                            keep.append(" ".join([words[0], *left]) + "\n")
                else:
                    continue
                (out / f.name).write_text("".join(keep))

    return _view(root, [f"{s}/{r}" for s, r in bad], dest_parent, build)


def snips_view(root: str | Path, dest_parent: str | Path, jobs: int = 8) -> tuple[Path, int]:
    """The Audio SNIPS root s3prl's SF reader should see, and how many files were left out.
    s3prl reads every ``{train,valid,test}/**/*.wav`` whose stem has a line in
    ``all.iob.snips.txt``; when the corpus stage's check_audio rejects some, a view holds
    that file without their lines and links to the rest of the root; none: the root itself."""
    root = Path(root).resolve()
    wavs = sorted(w for split in ("train", "valid", "test") for w in (root / split).rglob("*.wav"))
    bad = {w.stem for w in rejected_audio(wavs, lambda w: w, f"SNIPS {root}", jobs)}

    def build(tmp):
        _link_all_but(root, tmp, {"all.iob.snips.txt"})
        lines = (root / "all.iob.snips.txt").read_text().splitlines(keepends=True)
        (tmp / "all.iob.snips.txt").write_text("".join(ln for ln in lines if ln.split(" ", 1)[0].strip() not in bad))

    return _view(root, bad, dest_parent, build)


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


def write_er_metadata(root: str | Path, cache_dir: str | Path, fold: int, metadata_dir: str | None = None) -> int:
    """The two per-fold JSON files s3prl's ER recipe reads from ``cache_dir``.

    SUPERB's split (the files s3prl would fetch): session ``fold+1`` is the test set, the
    other four sessions train+dev; only neutral, happy (+excited), angry and sad count.
    ``metadata_dir`` (holding ``Session{k}/{train,test}_meta_data.json``) overrides this.
    Rows naming audio the corpus stage rejects are left out (s3prl's loader would crash on
    them); returns how many distinct files were.
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
        return _leave_out_bad_er_audio(root, list(targets.values()))
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
    return _leave_out_bad_er_audio(root, list(targets.values()))


def _leave_out_bad_er_audio(root: str | Path, files: list[Path], jobs: int = 8) -> int:
    """Rewrite s3prl's ER metadata files without rows whose ``ROOT/path`` the corpus stage
    rejects (:func:`deepwide.corpus.prepare.check_audio`); the number of such files."""
    root = Path(root)
    metas = {f: json.loads(f.read_text()) for f in files}
    paths = sorted({r["path"] for m in metas.values() for r in m.get("meta_data", [])})
    bad = rejected_audio(paths, lambda p: root / p, f"IEMOCAP {root}", jobs)
    if not bad:
        return 0
    for f, meta in metas.items():
        meta["meta_data"] = [r for r in meta["meta_data"] if r["path"] not in bad]
        if not meta["meta_data"]:
            raise DeepwideError(f"superb.er: {f} has no utterance left once rejected audio is left out")
        atomic_write_text(f, json.dumps(meta, indent=1))
    return len(bad)


# ----------------------------------------------------------------------------- LibriSpeech lexicon
LEXICON_NAMES = [Path(u).name for u in LEXICON_URLS]  # librispeech-lexicon-{200k,allothers}-g2p.txt
LEXICON_INFO = "lexicon.json"


def words_of_transcripts(tr) -> list[str]:
    """Sorted distinct tokens of accepted transcript lines, as s3prl's G2P splits them."""
    return sorted({w for x in tr.lines for w in x.text.upper().split(" ") if w})


def transcript_words(root: str | Path, splits: list[str], policy: str = "normalise") -> list[str]:
    """Sorted distinct upper-case words of the transcripts s3prl will read for ``splits``:
    the accepted lines of :func:`deepwide.corpus.librispeech.read_transcripts`."""
    from deepwide.corpus.librispeech import read_transcripts

    return words_of_transcripts(read_transcripts(root, splits, policy))


def espeak_lexicon(words: list[str], voice: str = "en-us", chunk: int = 500) -> dict[str, list[str]]:
    """Pronunciations of ``words`` in the project's phone set (``espeak-ng-ipa``: IPA
    phones, stress marks dropped), from :func:`deepwide.corpus.text.espeak_phones`."""
    from deepwide.corpus.text import espeak_phones

    if shutil.which("espeak-ng") is None:
        raise DeepwideError("superb.pr: the generated lexicon needs espeak-ng (Debian package espeak-ng)")
    lex = espeak_phones(words, voice, chunk)
    for word in words:
        if not lex.get(word):
            raise DeepwideError(f"superb.pr: espeak-ng gave no phones for the word {word!r}")
    return {w: lex[w] for w in words}


def _entries(text: str) -> set[str]:
    return {line.split()[0] for line in text.splitlines() if line.strip()}


def _check_covers(texts: list[str], words: list[str], root, where: str) -> int:
    known = set().union(*(_entries(t) for t in texts))
    uncovered = [w for w in words if w not in known]
    if uncovered:
        raise DeepwideError(
            f"superb.pr: the lexicon ({where}) does not cover {len(uncovered)} transcript word(s) of {root}, e.g. {uncovered[:5]}"
        )
    return len(known)


def _generated_texts(words: list[str], cached: dict[str, list[str]] | None = None) -> list[str]:
    lex = {w: cached[w] for w in words if cached and cached.get(w)}
    missing = [w for w in words if w not in lex]
    if missing:
        lex.update(espeak_lexicon(missing))
    return ["".join(f"{w} {' '.join(lex[w])}\n" for w in sorted(lex)), ""]


def _read_lexicon(path: Path) -> dict[str, list[str]]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            w, *ph = line.split()
            out[w] = ph
    return out


def write_lexicon(download_dir: str | Path, root: str | Path, splits: list[str], files: list[str] | None = None,
                  policy: str = "normalise") -> list[Path]:
    """Put s3prl's two lexicon files into ``download_dir``; check they cover every word.

    ``files``: the user's copies of s3prl's lexicons, copied unchanged (phone set
    ``s3prl-g2p``). Without them the lexicon comes from espeak-ng over the transcripts
    (phone set ``espeak-ng-ipa``): all words go into the first file, the second is empty.
    """
    download_dir = Path(download_dir)
    download_dir.mkdir(parents=True, exist_ok=True)
    dests = [download_dir / lexicon_cache_name(u) for u in LEXICON_URLS]
    words = transcript_words(root, splits, policy)
    if files:
        texts = [Path(f).read_text() for f in files]
        _check_covers(texts, words, root, "superb.pr.lexicon")
    else:
        texts = _generated_texts(words, _read_lexicon(dests[0]) if dests[0].is_file() else None)
    for dest, text in zip(dests, texts):
        if not dest.is_file() or dest.read_text() != text:
            atomic_write_text(dest, text)
    return dests


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_lexicon_dir(out_dir: str | Path, root: str | Path, splits: list[str], files: list[str] | None = None,
                      policy: str = "normalise") -> dict:
    """``deepwide superb lexicon``: s3prl's two lexicon files for ``root`` in ``out_dir``.

    Writes ``librispeech-lexicon-200k-g2p.txt`` and ``librispeech-lexicon-allothers-g2p.txt``
    (s3prl's names) and, last, ``lexicon.json``: phone set (``espeak-ng-ipa`` generated by
    the project's G2P, ``s3prl-g2p`` when the user's files are given and copied unchanged),
    word count, source, root, splits, text policy and the files' sha256. Deterministic and
    idempotent: the same transcripts, policy, files and espeak-ng version give the same
    bytes, and a rerun on unchanged inputs writes nothing.
    """
    from deepwide.corpus.text import (
        PHONE_SET,
        PHONEME_VOICE,
        USER_PHONE_SET,
        espeak_version,
    )

    out_dir = Path(out_dir)
    root = Path(root).resolve()
    words = transcript_words(root, splits, policy)
    if files:
        if len(files) != 2:
            raise DeepwideError(f"superb lexicon --lexicon: give s3prl's two files ({', '.join(LEXICON_NAMES)}), got {len(files)}")
        srcs = [Path(f).resolve() for f in files]
        for f in srcs:
            if not f.is_file():
                raise DeepwideError(f"superb.pr.lexicon: file {f} does not exist")
        source = {"phone_set": USER_PHONE_SET, "source": "user files", "user_files": [str(f) for f in srcs],
                  "user_sha256": [_sha256(f) for f in srcs]}
    else:
        source = {"phone_set": PHONE_SET, "source": "generated",
                  "g2p": f"{espeak_version()} -v {PHONEME_VOICE} --ipa, stress marks removed"}
    key = {"root": str(root), "splits": list(splits), "text_policy": policy, **source,
           "words_sha256": hashlib.sha256("\n".join(words).encode()).hexdigest()}
    info_path = out_dir / LEXICON_INFO
    if info_path.is_file():
        try:
            old = json.loads(info_path.read_text())
        except json.JSONDecodeError:
            old = {}
        if {k: old.get(k) for k in key} == key and all(
            (out_dir / n).is_file() and _sha256(out_dir / n) == old.get("files", {}).get(n, {}).get("sha256") for n in LEXICON_NAMES
        ):
            return old
    texts = [f.read_text() for f in srcs] if files else _generated_texts(words)
    n_entries = _check_covers(texts, words, root, "superb lexicon --lexicon" if files else "generated")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text, i in zip(LEXICON_NAMES, texts, range(2)):
        dest = out_dir / name
        if files:
            if not dest.is_file() or _sha256(dest) != source["user_sha256"][i]:
                tmp = dest.with_name(f".{name}.tmp")
                shutil.copyfile(srcs[i], tmp)  # unchanged bytes
                tmp.replace(dest)
        elif not dest.is_file() or dest.read_text() != text:
            atomic_write_text(dest, text)
    info = {**key, "words": n_entries, "transcript_words": len(words),
            "files": {n: {"sha256": _sha256(out_dir / n), "entries": len(_entries(t))} for n, t in zip(LEXICON_NAMES, texts)}}
    atomic_write_text(info_path, json.dumps(info, indent=1, sort_keys=True) + "\n")
    return info


def install_lexicon_dir(lexicon_dir: str | Path, download_dir: str | Path, words: list[str], root) -> dict:
    """Copy a ``superb lexicon`` output dir's two files, unchanged, to the names s3prl's
    G2P looks for in ``download_dir``; check they cover ``words``. Returns ``lexicon.json``."""
    lexicon_dir = Path(lexicon_dir)
    info_path = lexicon_dir / LEXICON_INFO
    info = read_json_object(info_path, "superb run --lexicon-dir: the info file of `deepwide superb lexicon`")
    srcs = [lexicon_dir / n for n in LEXICON_NAMES]
    for src in srcs:
        if not src.is_file():
            raise DeepwideError(f"superb run --lexicon-dir: {src} not found")
        want = info.get("files", {}).get(src.name, {}).get("sha256")
        if want and _sha256(src) != want:
            raise DeepwideError(f"superb run --lexicon-dir: {src} changed since {info_path} was written; rerun `deepwide superb lexicon`")
    texts = [src.read_text() for src in srcs]
    _check_covers(texts, words, root, str(lexicon_dir))
    download_dir = Path(download_dir)
    download_dir.mkdir(parents=True, exist_ok=True)
    for src, url in zip(srcs, LEXICON_URLS):
        dest = download_dir / lexicon_cache_name(url)
        if not dest.is_file() or _sha256(dest) != _sha256(src):
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
            shutil.copyfile(src, tmp)
            tmp.replace(dest)
    return info
