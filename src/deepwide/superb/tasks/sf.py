"""SF (slot filling) on Audio SNIPS: slot-type F1 (the dev metric) and slot-value CER, two
score terms."""

from __future__ import annotations

from dataclasses import dataclass

from deepwide.superb.tasks.base import Task, audio_view, register


@dataclass(frozen=True, eq=False)
class SFTask(Task):
    def check_layout(self, root, tcfg, embedded):
        self.need(root, "all.iob.snips.txt", "SNIPS slot file")
        for split in ("train", "valid", "test"):
            self.need(root, split, "Audio SNIPS wav folder")

    def view(self, root, tcfg, cache_root, text_policy, lexicon_dir):
        from deepwide.superb.offline import snips_view

        return audio_view(root, *snips_view(root, cache_root / "snips"))


TASK = register(SFTask(
    name="sf", problem="SuperbSF", corpus="snips", metric="slot_type_f1", higher_is_better=True,
    family="semantics", label="SF", score_keys=("SF_F1", "SF_CER"), metric_labels=("F1", "CER"), rank=8,
    utterance_seconds=3.1, cost_row="pr",
))
