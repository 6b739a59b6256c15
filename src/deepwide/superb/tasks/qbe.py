"""QbE (query by example) on QUESST14 by DTW over one hidden layer (MTWV, 0-1): no s3prl
problem and no training; run by ``deepwide superb qbe`` (:mod:`deepwide.superb.qbe`)."""

from __future__ import annotations

from dataclasses import dataclass

from deepwide.superb.tasks.base import Task, register


@dataclass(frozen=True, eq=False)
class QbETask(Task):
    def check_layout(self, root, tcfg, embedded):
        from deepwide.corpus.real_extra import QUESST_LISTS, _quesst_root

        root = _quesst_root(root)  # quesst14Database itself, or the folder holding it
        self.need(root, "scoring", "QUESST14 scoring folder")
        for name in QUESST_LISTS.values():
            self.need(root, f"scoring/{name}", "QUESST14 language key")
        for split in ("dev", "eval"):
            self.need(root, f"scoring/groundtruth_quesst14_{split}", f"QUESST14 {split} ground truth folder")


TASK = register(QbETask(
    name="qbe", problem="DTW", corpus="quesst14", metric="mtwv", higher_is_better=True,
    family="content", label="QbE", score_keys=("QbE",), metric_labels=("MTWV",), rank=3,
    utterance_seconds=None, cost_row=None, scale=1.0, trainable=False,
))
