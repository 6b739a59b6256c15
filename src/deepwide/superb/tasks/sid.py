"""SID (speaker identification) on VoxCeleb1 (accuracy); :class:`VoxCelebTask` also serves ASV."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deepwide.errors import DeepwideError
from deepwide.superb.tasks.base import Task, register


@dataclass(frozen=True, eq=False)
class VoxCelebTask(Task):
    def check_layout(self, root, tcfg, embedded):
        if not any(root.glob("*/wav")):
            raise DeepwideError(f"superb.{self.name}: dataset root {root} is malformed: no {root}/*/wav folder (VoxCeleb1 layout)")

    def split_lists(self, root, tcfg, cache_root, embedded) -> list[Path]:
        from deepwide.superb import offline

        return [offline.write_iden_split(root, cache_root, tcfg.get("split_file"), embedded=embedded)]

    def offline(self, root, tcfg, cache_root, embedded, fold, view, lexicon_dir, text_policy):
        from deepwide.superb import offline

        lists = self.split_lists(root, tcfg, cache_root, embedded)
        # audio the corpus stage rejects never reaches s3prl's reader
        return {"audio_rejected": offline.leave_out_bad_voxceleb_audio(root, lists)}


@dataclass(frozen=True, eq=False)
class SIDTask(VoxCelebTask):
    def check_layout(self, root, tcfg, embedded):
        super().check_layout(root, tcfg, embedded)
        if not embedded:
            split = tcfg.get("split_file") or root / "iden_split.txt"
            if not Path(split).is_file():
                raise DeepwideError(
                    f"superb.sid.split_file: VoxCeleb1 root {root} needs the official iden_split.txt "
                    f"(not found at {split}); nothing is downloaded"
                )


TASK = register(SIDTask(
    name="sid", problem="SuperbSID", corpus="voxceleb1", metric="accuracy", higher_is_better=True,
    family="speaker", label="SID", score_keys=("SID",), metric_labels=("Acc",), rank=4,
    utterance_seconds=8.0, cost_row="sid", items="accuracy", parse_jobs=True, random_crop_secs=8.0,
))
