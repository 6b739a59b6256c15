"""SUPERB tasks, their metrics and units, published numbers, and the SUPERB score.

The leaderboard score is ``1000/10 * sum_t (s_t - s_FBANK,t) / (s_SOTA,t -
s_FBANK,t)`` over the ten tasks, with SF counted as the mean of its F1 and CER terms. The
sign of each term comes out right by itself for lower-is-better metrics (PER, WER, EER,
DER, CER): there SOTA < FBANK, so a lower error gives a larger term.

Published numbers and anchors come from ``src/deepwide/data/published.yaml``, which names
the source of each. All metrics are in SUPERB's units: PER, WER, EER, DER, CER, accuracies and F1 in
percent; QbE as MTWV (0-1).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

from deepwide.errors import DeepwideError
from deepwide.superb.tasks import TASKS as _registry
from deepwide.superb.tasks.base import FAMILIES as _FAMILY_NAMES
from deepwide.utils.io import read_json_object

# every table below is made from the task registry (deepwide.superb.tasks), in SUPERB's order;
# a task without score keys (a plug-in outside SUPERB) stays out of them
_SCORED = sorted((t for t in _registry.values() if t.score_keys), key=lambda t: t.rank)
SCORE_KEYS = [k for t in _SCORED for k in t.score_keys]  # SF has two
TASKS = [t.label for t in _SCORED]
# SUPERB's task families (as SUPERB groups them)
FAMILIES = {f: [t.label for t in _SCORED if t.family == f] for f in _FAMILY_NAMES}
CONTENT, SPEAKER, SEMANTICS, PARALINGUISTICS = (FAMILIES[f] for f in _FAMILY_NAMES)
FAMILY_OF = {t: f for f, members in FAMILIES.items() for t in members}
# the score keys of a task (SF has two: its F1 and CER terms)
TASK_KEYS = {t.label: list(t.score_keys) for t in _SCORED}

# metric shown for each score key
METRIC = {k: m for t in _SCORED for k, m in zip(t.score_keys, t.metric_labels)}
HIGHER_IS_BETTER = {k: METRIC[k] in ("Acc", "MTWV", "F1") for k in SCORE_KEYS}


def _load_published() -> dict:
    """src/deepwide/data/published.yaml: the anchors and reference rows, each with its source."""
    import yaml

    path = Path(__file__).resolve().parents[1] / "data" / "published.yaml"
    data = yaml.safe_load(path.read_text())
    if data.get("keys") != SCORE_KEYS:
        raise DeepwideError(f"{path}: keys must be {SCORE_KEYS}, got {data.get('keys')}")
    for name, values in [("anchors.FBANK", data["anchors"]["FBANK"]), ("anchors.SOTA", data["anchors"]["SOTA"])] + [
        (f"models.{m}.metrics", e["metrics"]) for m, e in data["models"].items()
    ]:
        if len(values) != len(SCORE_KEYS):
            raise DeepwideError(f"{path}: {name} has {len(values)} values, expected {len(SCORE_KEYS)}")
    return data


_DATA = _load_published()
FBANK = dict(zip(SCORE_KEYS, _DATA["anchors"]["FBANK"]))
SOTA = dict(zip(SCORE_KEYS, _DATA["anchors"]["SOTA"]))
ANCHOR_SOURCE = " ".join(_DATA["anchors"]["source"].split())
# Published SUPERB test results: name -> {"metrics", "source", method, depth, width, ...}
PUBLISHED = {
    name: {"metrics": dict(zip(SCORE_KEYS, e["metrics"])), "source": " ".join(e["source"].split()), **e["shape"]}
    for name, e in _DATA["models"].items()
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
        keys = TASK_KEYS[task]
        if len(keys) > 1:  # SF: the mean of the terms present
            parts = [k for k in keys if _present(metrics, k)]
            if not parts:
                continue
            if len(parts) == 1 and not (_present(low, parts[0]) and _present(high, parts[0])):
                continue
            out[task] = 100.0 * sum(term(k, metrics[k], low, high) for k in parts) / len(parts)
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
