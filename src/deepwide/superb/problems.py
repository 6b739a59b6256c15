"""s3prl problem classes with a deepwide upstream plugged in.

For each SUPERB problem ``SuperbXX`` this module defines ``DeepwideXX(SuperbXX)`` whose
``build_upstream`` returns :func:`deepwide.superb.upstream.build_upstream` and whose test
evaluation also dumps per-utterance predictions. s3prl rebuilds a model for test and resume
by problem class name, so these classes must be defined (this module imported) in the
process that runs them.
"""

from __future__ import annotations

import csv
import importlib
import sys
import types
from pathlib import Path

from deepwide.superb import compat

compat.install()  # torchaudio/pandas shims before the first s3prl import

from deepwide.superb.upstream import build_upstream as _build_upstream  # noqa: E402


class DeepwideUpstreamMixin:
    """``build_upstream`` from ``{name, kind, path, ...}``; predictions dumped at test."""

    def build_upstream(self, build_upstream: dict):
        spec = {k: v for k, v in dict(build_upstream).items() if k != "name"}
        return _build_upstream(**spec)

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


class _LazyHub(types.ModuleType):
    """``s3prl.hub`` that imports the real one only when something is looked up in it.

    ``s3prl.problem`` imports ``s3prl.nn.upstream``, which imports ``s3prl.hub``, which
    imports every upstream s3prl knows (transformers models, fairseq shims...): 60 % of a
    SUPERB job's start-up. Our problems build their own upstream and never touch the hub;
    anything that does gets the real module transparently.
    """

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        sys.modules.pop("s3prl.hub", None)
        real = importlib.import_module("s3prl.hub")
        import s3prl

        s3prl.hub = real
        return getattr(real, name)


def _install_lazy_hub() -> None:
    import s3prl

    if "s3prl.hub" not in sys.modules:
        proxy = _LazyHub("s3prl.hub", _LazyHub.__doc__)
        sys.modules["s3prl.hub"] = proxy
        s3prl.hub = proxy


def _define():
    _install_lazy_hub()
    import s3prl.dataio.dataset.load_audio as load_audio
    import s3prl.problem as P

    # s3prl reads utterances with librosa.load, whose numba JIT costs seconds to a minute
    # per process; the soundfile version returns the same samples (compat.librosa_load)
    load_audio.librosa = compat.LibrosaShim

    classes = {}
    for short in ("ASR", "PR", "SID", "KS", "IC", "ER", "ASV", "SD", "SF"):
        base = getattr(P, f"Superb{short}")
        name = f"Deepwide{short}"
        classes[short.lower()] = type(name, (DeepwideUpstreamMixin, base), {"__module__": __name__, "__doc__": f"s3prl {base.__name__} on a deepwide upstream."})
        globals()[name] = classes[short.lower()]
    return classes


PROBLEMS = _define()


def problem_class(task: str):
    return PROBLEMS[task]
