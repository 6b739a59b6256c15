"""LibriSpeech ``*.trans.txt`` files as users have them: one reader for every stage.

``{split}/{spk}/{chapter}/{spk}-{chapter}.trans.txt`` holds one line per utterance,
``{spk}-{chapter}-{n} TEXT``: the id, one space, the text. :func:`read_transcripts`
checks every line and applies the text policy (:func:`deepwide.corpus.text.apply_text_policy`).
A line that cannot be used becomes a reject whose reason names ``file:line``:

- ``malformed transcript line: FILE:N: ...``: a tab in the line, an id with no text, an id
  that is not ``SPEAKER-CHAPTER-N``, or one that does not match the folder
  (``19/198/19-198.trans.txt`` holds only ``19-198-*``);
- ``duplicate utterance id: FILE:N: ...``: an id already given on an earlier line;
- ``text outside the LibriSpeech character set: FILE:N: ...``: the text policy's verdict.

The corpus stage (manifests) and the SUPERB stage (s3prl's ASR/PR read the root
themselves; :func:`write_s3prl_view` gives them a copy of the root holding only the
accepted lines) read transcripts through this module, so both see the same utterances.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from deepwide.corpus.text import apply_text_policy
from deepwide.errors import DeepwideError
from deepwide.utils.io import publish_dir

log = logging.getLogger(__name__)

_ID = re.compile(r"^([^-\s]+)-([^-\s]+)-([^-\s]+)$")
MALFORMED = "malformed transcript line"
DUPLICATE = "duplicate utterance id"
OUTSIDE = "text outside the LibriSpeech character set"


@dataclass
class Line:
    """One accepted transcript line: ``text`` is the policy's result, ``raw`` as written."""

    split: str
    file: Path
    line: int
    id: str
    speaker: str
    chapter: str
    text: str
    raw: str
    normalised: bool

    @property
    def audio(self) -> Path:
        return self.file.parent / f"{self.id}.flac"


@dataclass
class Transcripts:
    """Everything :func:`read_transcripts` found in a root's splits."""

    lines: list[Line] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)  # id, path, split, reason (names file:line)
    untranscribed: list[dict] = field(default_factory=list)  # .flac files no line claims
    canonical: bool = True  # every file is exactly "ID TEXT\n" lines s3prl reads unchanged
    # accepted lines whose audio the corpus stage rejects (deepwide.corpus.prepare.check_audio:
    # unreadable, empty, not 16 kHz mono): filled by write_s3prl_view, which leaves them out
    audio_rejects: list[dict] | None = None

    def counts(self) -> dict:
        kinds = [r["reason"].split(":", 1)[0] for r in self.rejects]
        return {
            "lines_accepted": len(self.lines),
            "lines_normalised": sum(1 for x in self.lines if x.normalised),
            "lines_malformed": kinds.count(MALFORMED),
            "lines_duplicate": kinds.count(DUPLICATE),
            "lines_rejected_by_text_policy": kinds.count(OUTSIDE),
            "audio_without_line": len(self.untranscribed),
            # only where audio was checked (write_s3prl_view); the corpus stage lists its own in rejects.tsv
            **({} if self.audio_rejects is None else {"audio_rejected": len(self.audio_rejects)}),
        }


def _reject(rejects: list, split: str, trans: Path, n: int, kind: str, detail: str, uid: str = "") -> None:
    rejects.append(dict(id=uid, path=str(trans), split=split, reason=f"{kind}: {trans}:{n}: {detail}"))


def read_transcripts(root: str | Path, splits: list[str], policy: str = "normalise") -> Transcripts:
    """Check and read every ``*.trans.txt`` of ``splits`` under ``root`` (see module doc)."""
    root = Path(root)
    out = Transcripts()
    for split in splits:
        d = root / split
        if not d.is_dir():
            raise DeepwideError(f"LibriSpeech split folder {split!r} not found: {d}")
        claimed: set[Path] = set()
        for trans in sorted(d.glob("*/*/*.trans.txt")):
            spk_dir, chapter_dir = trans.parent.parent.name, trans.parent.name
            try:
                raw_file = trans.read_bytes().decode("utf-8")
            except UnicodeDecodeError as err:
                raise DeepwideError(f"{trans}: not UTF-8 text ({err})") from None
            canonical = []
            first_at: dict[str, int] = {}
            for n, line in enumerate(raw_file.splitlines(), 1):
                line = line.lstrip("\ufeff") if n == 1 else line
                if not line.strip():
                    continue
                head = line.split(None, 1)[0]
                m = _ID.match(head)
                owned = m is not None and (m.group(1), m.group(2)) == (spk_dir, chapter_dir)
                if owned:
                    claimed.add(trans.parent / f"{head}.flac")
                if "\t" in line:
                    _reject(out.rejects, split, trans, n, MALFORMED,
                            "tab separator (LibriSpeech separates the id from the text with one space)", head)
                    continue
                uid, _, text = line.strip().partition(" ")
                if m is None:
                    _reject(out.rejects, split, trans, n, MALFORMED, f"utterance id {uid!r} is not SPEAKER-CHAPTER-N")
                    continue
                if not owned:
                    _reject(out.rejects, split, trans, n, MALFORMED,
                            f"utterance id {uid!r} does not match its folder {spk_dir}/{chapter_dir} "
                            f"(expected {spk_dir}-{chapter_dir}-N)", uid)
                    continue
                if not text.strip():
                    _reject(out.rejects, split, trans, n, MALFORMED, f"no text after the utterance id {uid!r}", uid)
                    continue
                if uid in first_at:
                    _reject(out.rejects, split, trans, n, DUPLICATE, f"{uid!r} already on line {first_at[uid]}", uid)
                    continue
                first_at[uid] = n
                new, reason, normalised = apply_text_policy(text.strip(), policy)
                if new is None:
                    _reject(out.rejects, split, trans, n, OUTSIDE, f"{reason}: {text.strip()[:80]!r}", uid)
                    continue
                out.lines.append(Line(split, trans, n, uid, spk_dir, chapter_dir, new, text.strip(), normalised))
                canonical.append(f"{uid} {new}\n")
            if "".join(canonical) != raw_file or trans.name != f"{spk_dir}-{chapter_dir}.trans.txt":
                out.canonical = False  # s3prl finds a flac's line in {spk}-{chapter}.trans.txt only
        for flac in sorted(d.glob("*/*/*.flac")):
            if flac not in claimed:
                out.untranscribed.append(dict(id=flac.stem, path=str(flac), split=split,
                                              reason="no line in the chapter's trans.txt"))
                out.canonical = False
    return out


def log_counts(what: str, tr: Transcripts, policy: str) -> None:
    """WARNING lines for every line the reader changed or left out (none: nothing logged)."""
    c = tr.counts()
    if c["lines_normalised"]:
        log.warning("%s: %d transcript line(s) normalised to %s (text_policy %s), e.g. %s: %r -> %r", what,
                    c["lines_normalised"], "upper-case A-Z, apostrophe, space", policy,
                    *next((f"{x.file}:{x.line}", x.raw, x.text) for x in tr.lines if x.normalised))
    left = c["lines_malformed"] + c["lines_duplicate"] + c["lines_rejected_by_text_policy"]
    if left:
        log.warning("%s: %d transcript line(s) left out (malformed %d, duplicate %d, text_policy %s rejected %d)",
                    what, left, c["lines_malformed"], c["lines_duplicate"], policy, c["lines_rejected_by_text_policy"])
        for r in tr.rejects[:20]:
            log.warning("  %s", r["reason"])


# ------------------------------------------------------------------ s3prl's view of a root
_SPEAKERS_HEADER = ";ID  |SEX| SUBSET           |MINUTES| NAME"


def s3prl_speakers(root: Path) -> dict[int, str] | None:
    """SPEAKERS.TXT read as s3prl reads it (its header line, then ``ID|SEX|SUBSET|MINUTES|NAME``
    lines with integer ids): ``{id: line}``, or None where s3prl's reader would fail."""
    f = root / "SPEAKERS.TXT"
    if not f.is_file():
        return None
    lines = [line.strip() for line in f.read_text(errors="replace").splitlines()]
    start = next((i + 1 for i, x in enumerate(lines) if all(k in x for k in ("SEX", "SUBSET", "MINUTES", "NAME"))), None)
    if start is None:
        return None
    out = {}
    for line in lines[start:]:
        parts = re.sub(" +", " ", re.sub("\t+", " ", line)).split("|", 4)
        if len(parts) != 5 or not parts[0].strip().isdigit():
            return None
        out[int(parts[0])] = line
    return out


def _check_s3prl_readable(tr: Transcripts, splits: list[str], root: Path) -> None:
    """What no view can fix: s3prl parses speaker ids as integers and fails on an empty split."""
    for x in tr.lines:
        if not x.speaker.isdigit():
            raise DeepwideError(
                f"{x.file}:{x.line}: speaker id {x.speaker!r} of {x.id!r} is not a number; s3prl's LibriSpeech "
                "reader (ASR, PR) needs numeric speaker ids"
            )
    bad = {r["id"] for r in tr.audio_rejects or []}
    have = {x.split for x in tr.lines if x.audio.is_file() and x.id not in bad}
    for split in splits:
        if split not in have:
            raise DeepwideError(f"LibriSpeech split {root / split}: no utterance with audio and a usable transcript line")


def view_key(root: Path, splits: list[str], policy: str, tr: Transcripts) -> str:
    h = hashlib.sha256(f"{root.resolve()}\n{','.join(splits)}\n{policy}\n".encode())
    for x in tr.lines:
        h.update(f"{x.split}/{x.id} {x.text}\n".encode())
    for r in tr.audio_rejects or []:  # (none: the key views written before had)
        h.update(f"audio rejected {r['id']}\n".encode())
    return h.hexdigest()[:16]


def check_line_audio(tr: Transcripts, jobs: int = 8) -> None:
    """Fill ``tr.audio_rejects``: accepted lines whose audio file exists but that the corpus
    stage's own check (:func:`deepwide.corpus.audiofiles.check_audio`, the one that writes
    rejects.tsv) rejects. A listed file that does not exist is left to s3prl, which reads
    only lines of existing files."""
    from concurrent.futures import ThreadPoolExecutor

    from deepwide.corpus.audiofiles import check_audio

    present = [x for x in tr.lines if x.audio.is_file()]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        reasons = list(pool.map(lambda x: check_audio(x.audio)[1], present))
    tr.audio_rejects = [dict(id=x.id, path=str(x.audio), split=x.split, reason=why)
                        for x, why in zip(present, reasons) if why is not None]
    for r in tr.audio_rejects[:20]:
        log.warning("LibriSpeech: %s left out of what s3prl reads: %s", r["path"], r["reason"])


def write_s3prl_view(root: str | Path, splits: list[str], dest_parent: str | Path, policy: str = "normalise") -> tuple[Path, Transcripts]:
    """The root s3prl's LibriSpeech reader should see, and the transcripts in it.

    s3prl reads ``*.trans.txt`` itself and fails on a line it cannot split (an audio file
    with no line, a tab, an id with no text, a missing final newline). When every
    transcript file is already what s3prl needs (real LibriSpeech, the embedded corpus)
    the root itself is returned. Otherwise a view is written once under
    ``dest_parent/view-<key>/``: SPEAKERS.TXT and accepted audio as symlinks, one
    ``ID TEXT`` line per accepted utterance (text after the policy); audio the corpus stage
    rejects (rejects.tsv: unreadable, empty, not 16 kHz mono) is left out, counted in
    ``Transcripts.counts()["audio_rejected"]``. The key covers the
    root, splits, policy and accepted lines, so the view is deterministic and reused.
    """
    root = Path(root).resolve()
    tr = read_transcripts(root, splits, policy)
    check_line_audio(tr)
    _check_s3prl_readable(tr, splits, root)
    speakers = s3prl_speakers(root)
    needed = sorted({int(x.speaker) for x in tr.lines})
    if tr.canonical and not tr.audio_rejects and speakers is not None and all(k in speakers for k in needed):
        return root, tr
    dest = Path(dest_parent) / f"view-{view_key(root, splits, policy, tr)}"
    log_counts(f"LibriSpeech {root}", tr, policy)
    if dest.is_dir():
        return dest, tr
    tmp = Path(dest_parent) / f".{dest.name}.{os.getpid()}.partial"  # jobs sharing a cache build it at once
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # every speaker listed, as s3prl needs (the root's line where it has a readable one)
    ours = speakers or {}
    known = {}
    if speakers is None and (root / "SPEAKERS.TXT").is_file():  # read leniently, line by line
        for line in (root / "SPEAKERS.TXT").read_text(errors="replace").splitlines():
            parts = line.split("|", 4)
            if len(parts) == 5 and parts[0].strip().isdigit():
                known[int(parts[0])] = line.strip()
    first_split = {}
    for x in tr.lines:
        first_split.setdefault(int(x.speaker), x.split)
    rows = [ours.get(k) or known.get(k) or f"{k} | ? | {first_split[k]} | 0 | (not in the root's SPEAKERS.TXT)" for k in needed]
    (tmp / "SPEAKERS.TXT").write_text("\n".join([_SPEAKERS_HEADER, *rows]) + "\n")
    files: dict[Path, list[str]] = {}
    rejected = {r["id"] for r in tr.audio_rejects or []}
    for x in tr.lines:
        if not x.audio.is_file() or x.id in rejected:
            continue  # listed, no audio: s3prl only reads lines of existing files; rejected audio: left out
        rel = x.audio.relative_to(root)
        (tmp / rel.parent).mkdir(parents=True, exist_ok=True)
        os.symlink(x.audio, tmp / rel)
        files.setdefault(tmp / rel.parent / f"{x.speaker}-{x.chapter}.trans.txt", []).append(f"{x.id} {x.text}\n")
    for path, lines in files.items():
        path.write_text("".join(lines))
    for split in splits:
        (tmp / split).mkdir(exist_ok=True)
    publish_dir(tmp, dest)
    log.warning("LibriSpeech %s: s3prl reads a cleaned view of it, %s", root, dest)
    return dest, tr
