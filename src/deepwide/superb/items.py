"""Per-utterance test results of one SUPERB head, from what its job left in ``predictions/``.

A task's test score is ``100 * sum_i value_i / sum_i weight_i`` over the test items ``i``:

- PR, ASR (token error rates): ``value`` = edit distance of the hypothesis to the reference,
  ``weight`` = reference tokens (s3prl's ``hyp`` / ``ref`` dumps);
- KS, SID, IC, ER (accuracies): ``value`` = 1 when the prediction equals the label, else 0,
  ``weight`` = 1 (``predictions.tsv``, written at test time by
  :mod:`deepwide.superb.problems`; IC counts an utterance right only when all three slots are).

The report uses these to put test-set sampling into every interval, paired across models
(every model is tested on the same items). Other tasks (QbE, ASV, SD, SF) have no such
per-item decomposition here and return None. Torch-free.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from deepwide.errors import DeepwideError
from deepwide.superb.tasks import TASKS

# score key -> how its per-item results are read (the task's ``items``: "errors" or "accuracy")
ITEMS_OF = {key: t.items for t in TASKS.values() if t.items for key in t.score_keys}
ITEM_COLUMNS = ["item", "value", "weight"]


def read_transcripts(path: Path) -> dict[str, list[str]]:
    """``uid tok tok ...`` lines (s3prl's ``hyp``/``ref`` dumps) -> uid -> tokens."""
    out = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        uid, _, text = line.partition(" ")
        if uid:
            out[uid] = text.split()
    return out


def _dumps(pred_dir: Path, name: str) -> list[tuple[str, Path]]:
    """``(id prefix, path)`` of every file ``name`` under ``pred_dir``; the prefix names its
    folder when there are several (e.g. ER's folds), else it is empty."""
    pred_dir = Path(pred_dir)
    files = sorted(pred_dir.rglob(name))
    return [("" if len(files) == 1 else f"{f.parent.relative_to(pred_dir)}/", f) for f in files]


def error_items(pred_dir: Path) -> tuple[list[str], np.ndarray, np.ndarray] | None:
    """(ids, edits, reference lengths) from every ``ref``/``hyp`` pair under ``pred_dir``
    (ids prefixed by their folder when there are several, e.g. ER's folds); None without dumps."""
    import editdistance

    dumps = _dumps(pred_dir, "ref")
    if not dumps:
        return None
    ids, edits, lengths = [], [], []
    for prefix, ref_file in dumps:
        hyp_file = ref_file.with_name("hyp")
        if not hyp_file.is_file():
            raise DeepwideError(f"{ref_file} has no hyp file beside it (s3prl's test dump is incomplete)")
        refs, hyps = read_transcripts(ref_file), read_transcripts(hyp_file)
        for uid, ref in refs.items():
            ids.append(prefix + uid)
            edits.append(editdistance.eval(hyps.get(uid, []), ref))
            lengths.append(len(ref))
    return ids, np.asarray(edits, float), np.asarray(lengths, float)


def accuracy_items(pred_dir: Path) -> tuple[list[str], np.ndarray, np.ndarray] | None:
    """(ids, correct 0/1, ones) from every ``predictions.tsv`` under ``pred_dir``; None without."""
    files = _dumps(pred_dir, "predictions.tsv")
    if not files:
        return None
    ids, correct = [], []
    for prefix, path in files:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        if not rows or rows[0][:3] != ["id", "prediction", "label"]:
            raise DeepwideError(f"{path}: expected the header id, prediction, label")
        for n, row in enumerate(rows[1:], start=2):
            if len(row) < 3:
                raise DeepwideError(f"{path}:{n}: expected 3 tab-separated fields, got {len(row)}")
            ids.append(prefix + row[0])
            correct.append(1.0 if row[1] == row[2] else 0.0)
    return ids, np.asarray(correct, float), np.ones(len(correct))


def test_items(task: str, pred_dir: str | Path) -> dict | None:
    """``{"item": [...], "value": array, "weight": array}`` of one head's test set, or None
    when the task has no per-item form or the job left no per-item dump."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        return None
    kind = ITEMS_OF.get(task)
    if kind is None:
        return None
    got = error_items(pred_dir) if kind == "errors" else accuracy_items(pred_dir)
    if got is None or not got[0]:
        return None
    ids, value, weight = got
    if len(set(ids)) != len(ids):
        raise DeepwideError(f"{pred_dir}: duplicate test item ids")
    return {"item": ids, "value": value, "weight": weight}


def score_of(items: dict) -> float:
    """The test score (percent) the items make: 100 * sum(value) / sum(weight)."""
    return float(100.0 * items["value"].sum() / items["weight"].sum())
