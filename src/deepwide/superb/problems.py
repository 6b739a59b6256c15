"""s3prl problem classes with a deepwide upstream plugged in.

For each SUPERB problem ``SuperbXX`` this module defines ``DeepwideXX(SuperbXX)`` whose
``build_upstream`` returns :func:`deepwide.superb.upstream.build_upstream` and whose test
evaluation also dumps per-utterance predictions. s3prl rebuilds a model for test and resume
by problem class name, so these classes must be defined (this module imported) in the
process that runs them.

``DeepwideSD`` also replaces s3prl's SD scoring stage, which clones dscore from GitHub
and runs it in a subprocess, with :mod:`deepwide.superb.der` (no network, no git).
"""

from __future__ import annotations

import csv
from pathlib import Path

from deepwide.audio import SAMPLE_RATE
from deepwide.errors import DeepwideError
from deepwide.superb import compat

compat.install()  # every s3prl patch (deepwide.superb.compat), before the first s3prl import

from deepwide.superb.sweep import SweepTrainMixin  # noqa: E402
from deepwide.superb.upstream import build_upstream as _build_upstream  # noqa: E402


# beside a checkpoint's state_dict.pt saved without its frozen upstream: the upstream's
# state digest (deepwide.utils.precision.state_sha256), checked when the model is rebuilt
FROZEN_UPSTREAM = "deepwide_frozen_upstream.json"
UPSTREAM_PREFIX = "upstream."


class _HeadOnly:
    """What s3prl's ``save_model`` reads of a model (its ``state_dict``), less the upstream."""

    def __init__(self, model):
        self.model = model

    def state_dict(self):
        return {k: v for k, v in self.model.state_dict().items() if not k.startswith(UPSTREAM_PREFIX)}


class DeepwideUpstreamMixin:
    """``build_upstream`` from ``{name, kind, path, ...}``; predictions dumped at test;
    checkpoints without the frozen upstream.

    s3prl saves the whole model at every checkpoint (``step_N``, ``valid_best``), the frozen
    upstream included: 361 MB of HuBERT Base weights per checkpoint for a PR head of 1 MB.
    The upstream is rebuilt from its own checkpoint whenever s3prl loads the model (test,
    resume), so ours saves the featurizer and head only, with the upstream's state digest
    beside them; loading rebuilds the model, checks the digest (a different upstream is an
    error naming the checkpoint) and loads the rest. A trainable upstream is saved whole."""

    def build_upstream(self, build_upstream: dict):
        spec = {k: v for k, v in dict(build_upstream).items() if k != "name"}
        return _build_upstream(**spec)

    def save_model(self, save_model, model_ckpt_dir, build_model_all_args, model):
        if getattr(model, "upstream_trainable", True) or not hasattr(model, "upstream"):
            return super().save_model(save_model, model_ckpt_dir, build_model_all_args, model)
        import json

        from deepwide.utils.precision import state_sha256

        digest = state_sha256(model.upstream.state_dict())
        super().save_model(save_model, model_ckpt_dir, build_model_all_args, _HeadOnly(model))
        (Path(model_ckpt_dir) / FROZEN_UPSTREAM).write_text(json.dumps({"upstream_state_sha256": digest}) + "\n")

    def load_model(self, model_ckpt_dir):
        ckpt = Path(model_ckpt_dir)
        if not (ckpt / FROZEN_UPSTREAM).is_file():  # a whole-model checkpoint (s3prl's own layout)
            return super().load_model(model_ckpt_dir)
        import json

        import torch
        import yaml

        from deepwide.utils.precision import state_sha256

        model = self.build_model(**yaml.safe_load((ckpt / "arguments.yaml").read_text()))
        want = json.loads((ckpt / FROZEN_UPSTREAM).read_text())["upstream_state_sha256"]
        if state_sha256(model.upstream.state_dict()) != want:
            raise DeepwideError(f"{ckpt}: the upstream rebuilt from its source differs from the one this checkpoint "
                                f"was trained on (state digest {want[:12]}...); its head cannot be used with it")
        missing, unexpected = model.load_state_dict(torch.load(ckpt / "state_dict.pt", map_location="cpu"), strict=False)
        wrong = [k for k in missing if not k.startswith(UPSTREAM_PREFIX)] + list(unexpected)
        if wrong:
            raise DeepwideError(f"{ckpt / 'state_dict.pt'}: does not fit the model rebuilt from arguments.yaml "
                                f"(missing or unexpected: {wrong[:5]})")
        return model

    def evaluate(self, evaluate, mode, task, dataset, batch_sampler, collate_fn, eval_batch, dump_dir, device, num_workers):
        if mode != "test":
            return super().evaluate(evaluate, mode, task, dataset, batch_sampler, collate_fn, eval_batch, dump_dir, device, num_workers)
        original = task.reduction

        def reduction(_mode, cached_results, _dump_dir=None):
            _dump_predictions(cached_results, _dump_dir)
            return original(_mode, cached_results, _dump_dir=_dump_dir)

        task.reduction = reduction
        try:
            return super().evaluate(evaluate, mode, task, dataset, batch_sampler, collate_fn, eval_batch, dump_dir, device, num_workers)
        finally:
            del task.reduction


def _dump_predictions(cached_results: list[dict], dump_dir) -> None:
    """``predictions.tsv`` (id, prediction, label) from the batches' cacheable dicts."""
    if not dump_dir or not cached_results or "prediction" not in cached_results[0]:
        return
    rows = []
    for batch in cached_results:
        preds = list(batch["prediction"])
        names = batch.get("unique_name")
        labels = batch.get("label")
        names = [""] * len(preds) if names is None else list(names)
        labels = [""] * len(preds) if labels is None else list(labels)
        for name, pred, label in zip(names, preds, labels):
            fmt = lambda v: " ; ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)  # noqa: E731
            rows.append((str(name), fmt(pred), fmt(label)))
    path = Path(dump_dir) / "predictions.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["id", "prediction", "label"])
        w.writerows(rows)


class OfflineSDScoringMixin:
    """SD stage 3 (score the test predictions) without dscore.

    As s3prl's ``Diarization.scoring``: for every (threshold, median filter) the
    per-recording speaker posteriors under ``<test dir>/prediction/`` become an RTTM
    (s3prl's own ``make_rttm``, so the system turns are the ones dscore would read), scored
    against the reference RTTM s3prl wrote from the test Kaldi dir; the lowest DER over
    the grid is reported (SUPERB practice). DER comes from :func:`deepwide.superb.der.der`
    with ``collar`` (seconds each side; SUPERB 0) and ``skip_overlap`` (SUPERB false).

    Writes ``score/rttm/threshold-{th}_median-{med}.rttm``, ``score/result/...json``
    (overall and per-recording components) and ``<test dir>/der.yaml`` (DER and its
    components in percent of reference speech, the chosen setting, the whole grid).
    """

    def scoring(self, scoring: dict, stage_id: int, test_dirs, test_rttms, frame_shift: int):
        import json
        import logging

        import yaml
        from s3prl.problem.diarization.util import make_rttm

        from deepwide.superb.der import SD_SCORING_DEFAULTS, der_from_rttm

        conf = dict(SD_SCORING_DEFAULTS, **dict(scoring or {}))
        unknown = sorted(set(conf) - set(SD_SCORING_DEFAULTS))
        if unknown:
            raise DeepwideError(f"superb.sd scoring: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(SD_SCORING_DEFAULTS)})")
        thresholds, medians = [float(t) for t in conf["thresholds"]], [int(m) for m in conf["median_filters"]]
        if not thresholds or not medians or any(m < 1 or m % 2 == 0 for m in medians):
            raise DeepwideError(f"superb.sd: thresholds {thresholds} and median_filters {medians} must be non-empty; median filters odd and >= 1")
        collar, skip_overlap = float(conf["collar"]), bool(conf["skip_overlap"])
        logger = logging.getLogger("s3prl")
        for test_dir, ref_rttm in zip(test_dirs, test_rttms):
            test_dir = Path(test_dir)
            pred = test_dir / "prediction"
            if not pred.is_dir() or not any(pred.glob("*.pt")):
                raise DeepwideError(f"superb.sd: no test predictions under {pred} (stage 2 dumped none)")
            grid = []
            for th in thresholds:
                for med in medians:
                    name = f"threshold-{th:g}_median-{med}"
                    hyp = test_dir / "score" / "rttm" / f"{name}.rttm"
                    make_rttm(pred, hyp, th, med, frame_shift, 1, SAMPLE_RATE)
                    total, per = der_from_rttm(ref_rttm, hyp, collar, skip_overlap)
                    res = test_dir / "score" / "result" / f"{name}.json"
                    res.parent.mkdir(parents=True, exist_ok=True)
                    res.write_text(json.dumps({"overall": total.as_dict(), "files": {f: c.as_dict() for f, c in per.items()}}, indent=1) + "\n")
                    pct = lambda x: 100.0 * x / total.total if total.total else 0.0  # noqa: E731
                    grid.append({"threshold": th, "median_filter": med, "der": 100.0 * total.der, "missed": pct(total.missed),
                                 "false_alarm": pct(total.false_alarm), "confusion": pct(total.confusion), "speech_s": total.total})
                    logger.info("SD scoring %s: DER %.2f %%", name, grid[-1]["der"])
            best = min(grid, key=lambda g: g["der"])  # first minimum in s3prl's order (threshold-major)
            out = {**best, "collar": collar, "skip_overlap": skip_overlap, "scorer": "deepwide.superb.der (offline; dscore/md-eval definition)",
                   "reference_rttm": str(ref_rttm), "grid": grid}
            (test_dir / "der.yaml").write_text(yaml.safe_dump(out, sort_keys=False))
            logger.info("Best DER (deepwide.superb.der): %.2f %% at threshold %s, median filter %s", best["der"], best["threshold"], best["median_filter"])


class ScaledXvectorMixin:
    """ASV's x-vector with its TDNN width as a setting.

    s3prl's ``XVectorBackbone`` fixes its five TDNN layers at 512 channels, whatever
    ``hidden_size`` says: on CPU that head alone costs about a second per step of eight
    3 s crops, far more than a tiny upstream. ``build_downstream.tdnn_size`` (ours; absent
    means s3prl's 512) rebuilds the same five layers (contexts 5, 3, 3, 1, 1; dilations 1,
    2, 3, 1, 1) from s3prl's own ``TDNN`` at that width.
    """

    def build_downstream(self, build_downstream: dict, downstream_input_size: int, downstream_output_size: int,
                         downstream_input_stride: int):
        conf = dict(build_downstream)
        width = conf.pop("tdnn_size", None)
        model = super().build_downstream(conf, downstream_input_size, downstream_output_size, downstream_input_stride)
        if width is None:
            return model
        import torch.nn as nn
        from s3prl.nn.speaker_model import TDNN

        width = int(width)
        if width < 1:
            raise DeepwideError(f"superb.asv.downstream.tdnn_size must be a positive integer, got {width}")
        backbone = model.tdnns
        dropout, bn = float(conf.get("dropout_p", 0.0)), bool(conf.get("batch_norm", False))
        sizes = [backbone.input_size, width, width, width, width, backbone.output_size]
        shapes = [(5, 1), (3, 2), (3, 3), (1, 1), (1, 1)]
        backbone.module = nn.Sequential(*[
            TDNN(input_size=sizes[i], output_size=sizes[i + 1], context_size=c, dilation=d, dropout_p=dropout, batch_norm=bn)
            for i, (c, d) in enumerate(shapes)])
        return model


def _mixins(task: str) -> tuple:
    """Our mixins for a task's problem class (SD: offline scoring; ASV: x-vector width)."""
    extra = {"sd": (OfflineSDScoringMixin,), "asv": (ScaledXvectorMixin,)}.get(task, ())
    # SweepTrainMixin: several (lr, seed) heads on one upstream pass (deepwide.superb.sweep)
    return (DeepwideUpstreamMixin, SweepTrainMixin, *extra)


def _define() -> dict:
    """``DeepwideXX(SuperbXX)`` for every trained task of the registry (s3prl finds them by name)."""
    import s3prl.problem as P

    from deepwide.superb.tasks import TASKS

    classes = {}
    for task in TASKS.values():
        if not task.trainable:
            continue
        base = getattr(P, task.problem)
        name = "Deepwide" + task.problem.removeprefix("Superb")
        if name in globals():  # two tasks on one s3prl problem share its class
            classes[task.name] = globals()[name]
            continue
        classes[task.name] = type(name, (*_mixins(task.name), base),
                                  {"__module__": __name__, "__doc__": f"s3prl {base.__name__} on a deepwide upstream."})
        globals()[name] = classes[task.name]
    return classes


PROBLEMS = _define()


def problem_class(task: str):
    return PROBLEMS[task]
