"""Diarization error rate from RTTM files, offline (SUPERB SD's scoring without dscore).

s3prl 0.4.18 scores SD by cloning dscore from GitHub at test time and running its
``score.py`` (NIST md-eval underneath). This module computes the same number itself:

- DER = (missed speech + false alarm + speaker confusion) / total reference speech, all in
  speaker-seconds, summed over files (dscore's ``OVERALL`` line);
- each file gets its own optimal one-to-one speaker mapping, the one that maximises the
  time reference and system speakers are active together (Hungarian algorithm);
- overlapping speech is scored: where ``n_ref`` reference and ``n_sys`` system speakers
  are active and ``n_correct`` of the mapped pairs coincide, the error is
  ``max(n_ref, n_sys) - n_correct`` (missed ``max(0, n_ref - n_sys)``, false alarm
  ``max(0, n_sys - n_ref)``, confusion ``min(n_ref, n_sys) - n_correct``);
- ``collar`` seconds on *each side* of every reference speaker boundary are not scored
  (md-eval/dscore convention; pyannote.metrics' ``collar`` is the total width, twice
  this); SUPERB reports collar 0;
- ``skip_overlap`` leaves out regions with two or more reference speakers
  (dscore ``--ignore_overlaps``); SUPERB scores them;
- the scored region of a file is the extent of its reference and system turns (dscore's
  UEM when none is given), which counts every reference second.

Times are exact (no frame grid). A speaker's own overlapping turns are merged first.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from deepwide.errors import DeepwideError

# SUPERB SD's scoring settings (s3prl SuperbSD's grid; collar 0, overlap scored)
SD_SCORING_DEFAULTS = {"thresholds": [0.3, 0.4, 0.5, 0.6, 0.7], "median_filters": [1, 11], "collar": 0.0, "skip_overlap": False}


@dataclass(frozen=True)
class Turn:
    """One RTTM ``SPEAKER`` line: speech of ``speaker`` in ``file`` from onset to offset (s)."""

    file: str
    speaker: str
    onset: float
    offset: float


def read_rttm(path: str | Path) -> list[Turn]:
    """The ``SPEAKER`` turns of an RTTM file (other line types are skipped; zero-length
    turns dropped). A malformed line is a DeepwideError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise DeepwideError(f"RTTM file not found: {path}")
    turns = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith(";") or parts[0] != "SPEAKER":
            continue
        if len(parts) < 8:
            raise DeepwideError(f"{path}:{n}: expected 'SPEAKER file chnl onset dur <NA> <NA> speaker ...', got {line.strip()!r}")
        try:
            onset, dur = float(parts[3]), float(parts[4])
        except ValueError:
            raise DeepwideError(f"{path}:{n}: onset/duration {parts[3]!r} {parts[4]!r} are not numbers") from None
        if not (math.isfinite(onset) and math.isfinite(dur)) or dur < 0 or onset < 0:
            raise DeepwideError(f"{path}:{n}: onset {onset} and duration {dur} must be finite and >= 0")
        if dur > 0:
            turns.append(Turn(parts[1], parts[7], onset, onset + dur))
    return turns


def write_rttm(turns: Iterable[Turn], path: str | Path) -> None:
    lines = [f"SPEAKER {t.file} 1 {t.onset:.3f} {t.offset - t.onset:.3f} <NA> <NA> {t.speaker} <NA> <NA>" for t in turns]
    Path(path).write_text("".join(line + "\n" for line in lines))


@dataclass
class DerComponents:
    """Speaker-seconds of one file or a sum of files."""

    total: float = 0.0  # reference speech (scored region)
    missed: float = 0.0
    false_alarm: float = 0.0
    confusion: float = 0.0

    def __add__(self, other: "DerComponents") -> "DerComponents":
        return DerComponents(self.total + other.total, self.missed + other.missed,
                             self.false_alarm + other.false_alarm, self.confusion + other.confusion)

    @property
    def der(self) -> float:
        """Error / reference speech (a fraction); 0 when there is neither error nor speech,
        infinite when there is error but no reference speech."""
        err = self.missed + self.false_alarm + self.confusion
        if self.total > 0:
            return err / self.total
        return 0.0 if err == 0 else math.inf

    def as_dict(self) -> dict:
        return {"der": self.der, "total": self.total, "missed": self.missed,
                "false_alarm": self.false_alarm, "confusion": self.confusion}


def _merged(turns: Iterable[Turn]) -> dict[str, list[tuple[float, float]]]:
    """speaker -> sorted, non-overlapping (onset, offset) intervals."""
    per: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for t in turns:
        per[t.speaker].append((t.onset, t.offset))
    out = {}
    for spk, ivs in per.items():
        ivs.sort()
        merged = [list(ivs[0])]
        for s, e in ivs[1:]:
            if s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        out[spk] = [(s, e) for s, e in merged]
    return out


def _active(mids: np.ndarray, intervals: list[tuple[float, float]]) -> np.ndarray:
    """Which elementary-interval midpoints lie inside one speaker's merged intervals."""
    if not intervals:
        return np.zeros(len(mids), bool)
    starts = np.array([s for s, _ in intervals])
    ends = np.array([e for _, e in intervals])
    k = np.searchsorted(starts, mids, side="right") - 1
    return (k >= 0) & (mids < ends[np.clip(k, 0, None)])


def file_components(ref: Iterable[Turn], hyp: Iterable[Turn], collar: float = 0.0, skip_overlap: bool = False) -> DerComponents:
    """DER components of one file's reference and system turns (see the module doc)."""
    from scipy.optimize import linear_sum_assignment

    if collar < 0:
        raise DeepwideError(f"DER collar must be >= 0 seconds, got {collar}")
    ref_m, hyp_m = _merged(ref), _merged(hyp)
    all_ivs = [iv for m in (ref_m, hyp_m) for ivs in m.values() for iv in ivs]
    if not all_ivs:
        return DerComponents()
    lo, hi = min(s for s, _ in all_ivs), max(e for _, e in all_ivs)
    ref_bounds = [b for ivs in ref_m.values() for iv in ivs for b in iv]
    points = {lo, hi, *(b for iv in all_ivs for b in iv)}
    if collar > 0:
        points.update(x for b in ref_bounds for x in (b - collar, b + collar))
    edges = np.array(sorted(p for p in points if lo <= p <= hi))
    if len(edges) < 2:
        return DerComponents()
    dur = np.diff(edges)
    mids = (edges[:-1] + edges[1:]) / 2
    ref_spk, hyp_spk = sorted(ref_m), sorted(hyp_m)
    R = np.stack([_active(mids, ref_m[s]) for s in ref_spk], 1) if ref_spk else np.zeros((len(mids), 0), bool)
    H = np.stack([_active(mids, hyp_m[s]) for s in hyp_spk], 1) if hyp_spk else np.zeros((len(mids), 0), bool)
    scored = dur > 0
    if collar > 0 and ref_bounds:
        b = np.array(sorted(ref_bounds))
        k = np.searchsorted(b, mids)
        near = np.full(len(mids), np.inf)
        near = np.minimum(near, np.abs(mids - b[np.clip(k, 0, len(b) - 1)]))
        near = np.minimum(near, np.abs(mids - b[np.clip(k - 1, 0, len(b) - 1)]))
        scored &= near >= collar
    if skip_overlap:
        scored &= R.sum(1) < 2
    w = dur * scored
    n_ref, n_hyp = R.sum(1), H.sum(1)
    correct = np.zeros(len(mids))
    if ref_spk and hyp_spk:
        co = (R.astype(float) * w[:, None]).T @ H.astype(float)  # (n_ref_spk, n_hyp_spk) seconds together
        rows, cols = linear_sum_assignment(co, maximize=True)
        for i, j in zip(rows, cols):
            correct += R[:, i] & H[:, j]
    return DerComponents(
        total=float(np.sum(w * n_ref)),
        missed=float(np.sum(w * np.maximum(n_ref - n_hyp, 0))),
        false_alarm=float(np.sum(w * np.maximum(n_hyp - n_ref, 0))),
        confusion=float(np.sum(w * (np.minimum(n_ref, n_hyp) - correct))),
    )


def der(ref: Iterable[Turn], hyp: Iterable[Turn], collar: float = 0.0, skip_overlap: bool = False) -> tuple[DerComponents, dict[str, DerComponents]]:
    """(overall components, per-file components) over the union of files of both sides.

    A file with only system turns adds false alarm; one with only reference turns adds
    missed speech (its speakers are never mapped).
    """
    by_ref: dict[str, list[Turn]] = defaultdict(list)
    by_hyp: dict[str, list[Turn]] = defaultdict(list)
    for t in ref:
        by_ref[t.file].append(t)
    for t in hyp:
        by_hyp[t.file].append(t)
    per = {f: file_components(by_ref.get(f, []), by_hyp.get(f, []), collar, skip_overlap) for f in sorted(set(by_ref) | set(by_hyp))}
    total = DerComponents()
    for c in per.values():
        total = total + c
    return total, per


def der_from_rttm(ref_rttm: str | Path, hyp_rttm: str | Path, collar: float = 0.0, skip_overlap: bool = False) -> tuple[DerComponents, dict[str, DerComponents]]:
    """:func:`der` of two RTTM files; a reference without any speech is an error."""
    ref = read_rttm(ref_rttm)
    if not ref:
        raise DeepwideError(f"reference RTTM {ref_rttm} has no SPEAKER turns")
    return der(ref, read_rttm(hyp_rttm), collar, skip_overlap)
