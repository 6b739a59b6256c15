"""SUPERB tasks, their metrics and units, published numbers, and the SUPERB score.

The leaderboard score (DESIGN.md) is ``1000/10 * sum_t (s_t - s_FBANK,t) / (s_SOTA,t -
s_FBANK,t)`` over the ten tasks, with SF counted as the mean of its F1 and CER terms. The
sign of each term comes out right by itself for lower-is-better metrics (PER, WER, EER,
DER, CER): there SOTA < FBANK, so a lower error gives a larger term.

All metrics are in DESIGN.md's units: PER, WER, EER, DER, CER, accuracies and F1 in
percent; QbE as MTWV (0-1).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

from deepwide.errors import DeepwideError
from deepwide.utils.io import read_json_object

# score keys, in SUPERB's order; SF has two
SCORE_KEYS = ["PR", "ASR", "KS", "QbE", "SID", "ASV", "SD", "IC", "SF_F1", "SF_CER", "ER"]
TASKS = ["PR", "ASR", "KS", "QbE", "SID", "ASV", "SD", "IC", "SF", "ER"]
# task families of the study (KS is in neither: the paper reports it apart)
CONTENT = ["PR", "ASR", "QbE", "IC", "SF"]
SPEAKER = ["SID", "ASV", "SD", "ER"]
FAMILIES = {"content": CONTENT, "speaker": SPEAKER}

# metric shown for each score key (DESIGN.md units)
METRIC = {
    "PR": "PER", "ASR": "WER", "KS": "Acc", "QbE": "MTWV", "SID": "Acc", "ASV": "EER",
    "SD": "DER", "IC": "Acc", "SF_F1": "F1", "SF_CER": "CER", "ER": "Acc",
}
HIGHER_IS_BETTER = {k: METRIC[k] in ("Acc", "MTWV", "F1") for k in SCORE_KEYS}

FBANK = {
    "PR": 82.01, "ASR": 23.18, "KS": 41.38, "QbE": 0.0058, "SID": 20.06, "ASV": 9.56,
    "SD": 10.05, "IC": 9.65, "SF_F1": 69.64, "SF_CER": 52.94, "ER": 48.24,
}
SOTA = {
    "PR": 3.53, "ASR": 3.62, "KS": 96.66, "QbE": 0.0736, "SID": 90.33, "ASV": 5.11,
    "SD": 5.62, "IC": 98.76, "SF_F1": 89.81, "SF_CER": 21.76, "ER": 67.62,
}


def _published(values, **shape):
    return {"metrics": dict(zip(SCORE_KEYS, values)), **shape}


# Published SUPERB test results (DESIGN.md); shapes and parameter counts as published.
# heads of 12-L Half are not given there, so left unknown.
PUBLISHED = {
    "DistilHuBERT": _published(
        [16.27, 13.37, 95.98, 0.0511, 73.54, 8.55, 6.19, 94.99, 82.57, 35.59, 63.02],
        method="pred", depth=2, width=768, ffn=3072, heads=12, params=23.49e6),
    "3-L One": _published(
        [13.34, 12.23, 96.69, 0.0489, 75.71, 6.48, 6.56, 94.15, 82.89, 34.65, 63.95],
        method="pred", depth=3, width=768, ffn=3072, heads=12, params=30.58e6),
    "12-L Half": _published(
        [10.67, 10.96, 97.24, 0.0604, 69.52, 6.13, 6.81, 96.97, 86.11, 30.93, 63.24],
        method="l2l", depth=12, width=384, ffn=1536, heads=None, params=26.87e6),
    "HuBERT Base": _published(
        [5.41, 6.42, 96.30, 0.0736, 81.42, 5.11, 5.88, 98.34, 88.53, 25.20, 64.92],
        method="teacher", depth=12, width=768, ffn=3072, heads=12, params=94.68e6),
}

_TASK_ALIASES = {k.lower(): k for k in TASKS + SCORE_KEYS}


def canonical_task(name: str) -> str:
    """``asr`` -> ``ASR``, ``qbe`` -> ``QbE``; unknown names raise DeepwideError."""
    key = _TASK_ALIASES.get(str(name).lower())
    if key is None:
        raise DeepwideError(f"unknown SUPERB task {name!r} (known: {', '.join(TASKS)})")
    return key


def term(key: str, value: float, low: Mapping[str, float], high: Mapping[str, float]) -> float:
    """One task's normalised term: 0 at ``low`` (FBANK), 1 at ``high`` (SOTA or teacher)."""
    lo, hi = float(low[key]), float(high[key])
    if hi == lo:
        raise DeepwideError(f"SUPERB score: task {key} has equal anchors ({lo}); cannot normalise")
    return (float(value) - lo) / (hi - lo)


def task_terms(metrics: Mapping[str, float], low=FBANK, high=SOTA) -> dict[str, float]:
    """Per-task terms (SF merged as the mean of SF_F1 and SF_CER) for the keys present.

    Each term is scaled to 100 (= 1000/10): the full score is their sum.
    """
    out = {}
    for task in TASKS:
        if task == "SF":
            parts = [k for k in ("SF_F1", "SF_CER") if _present(metrics, k)]
            if not parts:
                continue
            if len(parts) == 1 and not (_present(low, parts[0]) and _present(high, parts[0])):
                continue
            out["SF"] = 100.0 * sum(term(k, metrics[k], low, high) for k in parts) / len(parts)
        elif _present(metrics, task) and _present(low, task) and _present(high, task):
            out[task] = 100.0 * term(task, metrics[task], low, high)
    return out


def _present(d: Mapping[str, float], key: str) -> bool:
    v = d.get(key)
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def superb_score(metrics: Mapping[str, float], low=FBANK, high=SOTA, require_all: bool = True) -> float:
    """SUPERB score of per-task metrics (keys of ``SCORE_KEYS``).

    ``require_all``: every one of the 11 keys must be present (the leaderboard score);
    otherwise the sum runs over the tasks present (each still worth 100 at ``high``).
    """
    if require_all:
        for key in SCORE_KEYS:
            if not _present(metrics, key):
                raise DeepwideError(f"SUPERB score: missing task metric {key!r} (need {', '.join(SCORE_KEYS)})")
    return sum(task_terms(metrics, low, high).values())


def load_metrics_json(path: str | Path) -> dict[str, float]:
    """Read a JSON object of per-task metrics for ``score superb``; errors name the key."""
    obj = read_json_object(path, "metrics file")
    out = {}
    for key in SCORE_KEYS:
        if key not in obj:
            raise DeepwideError(f"{path}: missing key {key!r} (need {', '.join(SCORE_KEYS)})")
        value = obj[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise DeepwideError(f"{path}: key {key!r} must be a finite number, got {value!r}")
        out[key] = float(value)
    unknown = sorted(set(obj) - set(SCORE_KEYS))
    if unknown:
        raise DeepwideError(f"{path}: unknown key(s) {', '.join(map(repr, unknown))} (allowed: {', '.join(SCORE_KEYS)})")
    return out
