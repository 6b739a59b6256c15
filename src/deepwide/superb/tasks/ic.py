"""IC (intent classification) on Fluent Speech Commands (accuracy: all three slots right)."""

from __future__ import annotations

from dataclasses import dataclass

from deepwide.superb.tasks.base import Task, audio_view, register


@dataclass(frozen=True, eq=False)
class ICTask(Task):
    def check_layout(self, root, tcfg, embedded):
        for split in ("train", "valid", "test"):
            self.need(root, f"data/{split}_data.csv", "Fluent Speech Commands split list")

    def view(self, root, tcfg, cache_root, text_policy, lexicon_dir):
        from deepwide.superb.offline import fsc_view

        return audio_view(root, *fsc_view(root, cache_root / "fluent_speech_commands"))


TASK = register(ICTask(
    name="ic", problem="SuperbIC", corpus="fluent_speech_commands", metric="accuracy", higher_is_better=True,
    family="semantics", label="IC", score_keys=("IC",), metric_labels=("Acc",), rank=7,
    utterance_seconds=2.3, cost_row="ks", items="accuracy", parse_jobs=True,
))
