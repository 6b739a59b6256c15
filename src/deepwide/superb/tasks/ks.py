"""KS (keyword spotting) on Speech Commands v0.01 (accuracy)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deepwide.superb.tasks.base import Task, audio_view, register

TRAIN_DIR, TEST_DIR = "speech_commands_v0.01", "speech_commands_test_set_v0.01"


@dataclass(frozen=True, eq=False)
class KSTask(Task):
    def check_layout(self, root, tcfg, embedded):
        self.need(root, tcfg.get("train_dir", TRAIN_DIR), "Speech Commands v0.01 train folder")
        self.need(root, tcfg.get("test_dir", TEST_DIR), "Speech Commands v0.01 test folder")
        self.need(root, Path(tcfg.get("train_dir", TRAIN_DIR)) / "_background_noise_", "noise clips for _silence_")

    def prepare_args(self, root, tcfg):
        return {"gsc1": str(Path(root) / tcfg.get("train_dir", TRAIN_DIR)),
                "gsc1_test": str(Path(root) / tcfg.get("test_dir", TEST_DIR))}

    def view(self, root, tcfg, cache_root, text_policy, lexicon_dir):
        from deepwide.superb.offline import speech_commands_view

        folders = [tcfg.get("train_dir", TRAIN_DIR), tcfg.get("test_dir", TEST_DIR)]
        return audio_view(root, *speech_commands_view(root, folders, cache_root / "speech_commands"))


TASK = register(KSTask(
    name="ks", problem="SuperbKS", corpus="speech_commands", metric="accuracy", higher_is_better=True,
    family="content", label="KS", score_keys=("KS",), metric_labels=("Acc",), rank=2,
    utterance_seconds=1.0, cost_row="ks", items="accuracy",
))
