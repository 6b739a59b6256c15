"""ASV (speaker verification) on VoxCeleb1's trial list (EER); the embedded voxceleb1 ships
the trial list. There is no dev set: every saved checkpoint is tested, the best EER counts."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from deepwide.errors import DeepwideError
from deepwide.superb.tasks.base import layer_weights, read_yaml, register
from deepwide.superb.tasks.sid import VoxCelebTask


@dataclass(frozen=True, eq=False)
class ASVTask(VoxCelebTask):
    def check_layout(self, root, tcfg, embedded):
        super().check_layout(root, tcfg, embedded)
        for key, name in (("split_file", "iden_split.txt"), ("trial_file", "voxceleb1_test_v2.txt")):
            path = Path(tcfg.get(key) or root / name)
            if not path.is_file():
                raise DeepwideError(f"superb.asv.{key}: VoxCeleb1 root {root} needs {name} (not found at {path}); nothing is downloaded")

    def split_lists(self, root, tcfg, cache_root, embedded):
        from deepwide.superb import offline

        lists = super().split_lists(root, tcfg, cache_root, embedded)
        # s3prl's VoxCeleb1SV reads both files from its cache_dir
        lists.append(offline.write_iden_split(root, cache_root / "data", tcfg.get("split_file"), embedded=embedded))
        trial = Path(tcfg.get("trial_file") or root / "voxceleb1_test_v2.txt")
        shutil.copyfile(trial, cache_root / "data" / "voxceleb1_test_v2.txt")
        lists.append(cache_root / "data" / "voxceleb1_test_v2.txt")
        return lists

    def adjust_overrides(self, over, tcfg):
        # s3prl never validates (eval_step "infinite"), keeps every checkpoint saved each
        # `eval_step` steps and tests them all; the best EER counts
        over["train"].update(eval_step=10**20, save_step=over["train"]["eval_step"], keep_num_ckpts=None)

    def collect(self, work):
        """Every saved checkpoint tested on the trials; the lowest EER is reported (s3prl's
        own choice; there is no dev set, so dev_score repeats it)."""
        results = []
        for res in (work / "evaluate").glob("*/step_*/result.yaml"):
            results.append((float(read_yaml(res)["EER"]), int(res.parent.name.split("_")[-1]), res))
        if not results:
            raise DeepwideError(f"s3prl left no ASV test result under {work / 'evaluate'}")
        eer, step, res = min(results)
        return {
            "dev_score": eer * self.scale,
            "best_step": step,
            "test_score": eer * self.scale,
            "test_metrics": {k: float(v) for k, v in read_yaml(res).items()},
            "dev_metrics": {"note": "ASV has no dev set; the best-EER checkpoint is reported"},
            "layer_weights": layer_weights(work / "train" / f"step_{step}"),
            "test_set": f"{res.parent.parent.name}/{res.parent.name}",
        }

    def predictions_dir(self, work, test_set):
        return work / "evaluate" / test_set

    def result_checkpoint(self, work, result):
        return work / "train" / f"step_{result['best_step']}"  # the best-EER one


TASK = register(ASVTask(
    name="asv", problem="SuperbASV", corpus="voxceleb1", metric="EER", higher_is_better=False,
    family="speaker", label="ASV", score_keys=("ASV",), metric_labels=("EER",), rank=5,
    utterance_seconds=8.0, cost_row="sid", random_crop_secs=8.0,
))
