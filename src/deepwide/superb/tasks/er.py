"""ER (emotion recognition) on IEMOCAP (accuracy), cross-validated over sessions (folds)."""

from __future__ import annotations

from dataclasses import dataclass

from deepwide.superb.tasks.base import Task, register


@dataclass(frozen=True, eq=False)
class ERTask(Task):
    def check_layout(self, root, tcfg, embedded):
        for s in range(1, 6):
            self.need(root, f"Session{s}/dialog/EmoEvaluation", "IEMOCAP labels")
            self.need(root, f"Session{s}/sentences/wav", "IEMOCAP sentences")

    def prepare_args(self, root, tcfg):
        return {"iemocap": root}

    def prepare_data(self, root, tcfg, num_workers, fold):
        return {**super().prepare_data(root, tcfg, num_workers, fold), "test_fold": int(fold)}

    def folds(self, tcfg):
        return list(tcfg.get("folds") or [None])

    def offline(self, root, tcfg, cache_root, embedded, fold, view, lexicon_dir, text_policy):
        from deepwide.superb import offline

        return {"audio_rejected": offline.write_er_metadata(root, cache_root / "data", fold, tcfg.get("metadata_dir"))}


TASK = register(ERTask(
    name="er", problem="SuperbER", corpus="iemocap", metric="accuracy", higher_is_better=True,
    family="paralinguistics", label="ER", score_keys=("ER",), metric_labels=("Acc",), rank=9,
    utterance_seconds=4.5, cost_row="sid", items="accuracy",
))
