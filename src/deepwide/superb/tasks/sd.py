"""SD (speaker diarization) on LibriMix in s3prl's Kaldi data-dir layout (DER).

The test DER is our offline scorer's (:mod:`deepwide.superb.der`, best threshold and median
filter, as SUPERB reports); the dev score stays s3prl's frame-level PIT DER at threshold 0.5
(what it picks the best checkpoint by)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from deepwide.errors import DeepwideError
from deepwide.superb.tasks.base import (
    Task,
    audio_view,
    collect_valid_best,
    read_yaml,
    register,
)

SPLITS = ["train", "dev", "test"]


@dataclass(frozen=True, eq=False)
class SDTask(Task):
    def check_layout(self, root, tcfg, embedded):
        for split in SPLITS:
            self.need(root, f"{split}/wav.scp", "Kaldi-style LibriMix data dir (s3prl's SD recipe: train/dev/test with wav.scp, reco2dur, segments, utt2spk)")

    def prepare_args(self, root, tcfg):
        return {"data_dir": root}

    def adjust_overrides(self, over, tcfg):
        # our offline scorer's settings (problems.OfflineSDScoringMixin); s3prl's defaults otherwise
        from deepwide.superb.der import SD_SCORING_DEFAULTS

        over["scoring"] = {k: copy.deepcopy(tcfg.get(k, v)) for k, v in SD_SCORING_DEFAULTS.items()}
        even = [m for m in over["scoring"]["median_filters"] if int(m) < 1 or int(m) % 2 == 0]
        if even:
            raise DeepwideError(f"superb.sd.median_filters: widths must be odd and >= 1 (scipy's median filter), got {even}")

    def view(self, root, tcfg, cache_root, text_policy, lexicon_dir):
        from deepwide.superb.offline import kaldi_view

        return audio_view(root, *kaldi_view(root, SPLITS, cache_root / "sd"))

    def collect(self, work):
        res = collect_valid_best(self, work)
        der_file = work / "evaluate" / "valid_best" / res["test_set"] / "der.yaml"
        scored = read_yaml(der_file, f"s3prl's SD scoring left no {der_file} (stage 3 did not run?)")
        frame = res["test_metrics"]
        res["test_score"] = float(scored["der"])
        res["test_metrics"] = {
            **{k: float(scored[k]) for k in ("der", "missed", "false_alarm", "confusion", "speech_s", "threshold")},
            "median_filter": int(scored["median_filter"]),
            "collar": float(scored["collar"]),
            "skip_overlap": bool(scored["skip_overlap"]),
            "frame_der": 100.0 * frame["der"],
            "frame_accuracy": 100.0 * frame.get("accuracy", float("nan")),
        }
        res["dev_metrics"] = {"frame_der": 100.0 * res["dev_metrics"]["der"], **{k: v for k, v in res["dev_metrics"].items() if k != "der"}}
        return res


TASK = register(SDTask(
    name="sd", problem="SuperbSD", corpus="librimix", metric="der", higher_is_better=False,
    family="speaker", label="SD", score_keys=("SD",), metric_labels=("DER",), rank=6,
    utterance_seconds=8.0, cost_row="pr",
))
