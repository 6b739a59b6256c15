"""What one SUPERB task is: :class:`Task` (its facts and its hooks) and the registry.

A task is one module of :mod:`deepwide.superb.tasks` that builds a :class:`Task` (or a
subclass overriding the hooks it needs) and passes it to :func:`register`. The planner,
the report's tables, the rule's wildcard and the s3prl problem classes are all made from
the registry. Importing a task module is cheap: no torch, numpy, pandas or s3prl at import
(hooks import what they need when they run).

Hooks a task may override (defaults in :class:`Task`): ``check_layout`` (a dataset root
fit for the task), ``prepare_args`` (s3prl's ``prepare_data`` section), ``adjust_overrides``
(s3prl config quirks), ``view`` (the root s3prl reads, e.g. without rejected audio),
``offline`` (files s3prl would download), ``folds``, ``collect`` (result of one target dir)
and ``predictions_dir``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from deepwide.errors import DeepwideError

FAMILIES = ("content", "speaker", "semantics", "paralinguistics")  # as SUPERB groups its tasks


@dataclass
class View:
    """The dataset root s3prl reads for a run and what it adds to the job's identity and result."""

    root: Path
    ident: dict = field(default_factory=dict)  # joins the resume identity of every head
    info: dict = field(default_factory=dict)  # joins every head's result.json
    state: object = None  # what the task's offline step needs from the view (PR: transcripts)


@dataclass(frozen=True, eq=False)
class Task:
    name: str  # superb.<name> in the config, {task} in paths
    problem: str  # s3prl.problem class name (``DTW`` for QbE: no s3prl problem)
    corpus: str  # corpus name under RESULTS/corpora (and in config corpus.*)
    metric: str  # key of s3prl's valid/test logs
    higher_is_better: bool
    family: str  # one of FAMILIES
    label: str  # the report's name (PR, SF, QbE...)
    score_keys: tuple[str, ...]  # its SUPERB score keys (SF: F1 and CER); () keeps it out of the score
    metric_labels: tuple[str, ...]  # the metric shown for each score key (PER, Acc...)
    rank: int  # position in SUPERB's tables (PR first)
    utterance_seconds: float | None  # mean utterance length of its corpus, for the cost estimate
    cost_row: str | None  # the measured task whose cost row stands in for it (planner)
    scale: float = 100.0  # s3prl reports fractions; results are in percent
    trainable: bool = True  # trained through s3prl's problem (QbE: DTW only)
    embedded: bool = True  # the corpus stage can synthesize its corpus
    items: str | None = None  # per-item test results: "errors" (hyp/ref dumps), "accuracy" or None
    parse_jobs: bool = False  # s3prl's prepare_data takes n_jobs (corpus parsing workers)
    random_crop_secs: float | None = None  # s3prl crops train utterances longer than this at random

    # ---------------------------------------------------------------- facts
    @cached_property
    def fbank(self) -> dict[str, float]:
        """Published FBANK anchors of its score keys (src/deepwide/data/published.yaml)."""
        return {k: _published()["FBANK"][k] for k in self.score_keys}

    @cached_property
    def sota(self) -> dict[str, float]:
        return {k: _published()["SOTA"][k] for k in self.score_keys}

    @property
    def unit(self) -> str:
        return "%" if self.scale == 100.0 else ""

    # ---------------------------------------------------------------- hooks
    def check_layout(self, root: Path, tcfg: dict, embedded: bool) -> None:
        """Raise DeepwideError naming the missing file when ``root`` (an existing folder) lacks it."""

    def prepare_args(self, root: str, tcfg: dict) -> dict:
        """The ``prepare_data`` section of s3prl's config for ``root`` (resolved)."""
        return {"dataset_root": root}

    def prepare_data(self, root: Path, tcfg: dict, num_workers: int, fold: int | None) -> dict:
        prep = self.prepare_args(str(Path(root).resolve()), tcfg)
        if self.parse_jobs:
            prep["n_jobs"] = max(1, int(num_workers))  # corpus parsing workers (s3prl: 6)
        return prep

    def adjust_overrides(self, over: dict, tcfg: dict) -> None:
        """Change our s3prl config (``over``, s3prl's structure) for the task's quirks."""

    def view(self, root: Path, tcfg: dict, cache_root: Path, text_policy: str, lexicon_dir) -> View:
        return View(root)

    def offline(self, root: Path, tcfg: dict, cache_root: Path, embedded: bool, fold: int, view: View,
                lexicon_dir, text_policy: str) -> dict:
        """Write what s3prl would download; returns facts for result.json."""
        return {}

    def folds(self, tcfg: dict) -> list[int | None]:
        return [None]

    def collect(self, work: Path) -> dict:
        """Dev score, best step, test score, metrics and layer weights from a target dir."""
        return collect_valid_best(self, work)

    def predictions_dir(self, work: Path, test_set: str) -> Path:
        return work / "evaluate" / "valid_best" / test_set

    def result_checkpoint(self, work: Path, result: dict) -> Path:
        """The checkpoint ``collect`` reads the result's layer weights from (kept when a
        tested head's resume state is removed)."""
        return work / "train" / "valid_best"

    def need(self, root: Path, rel: str | Path, what: str) -> None:
        if not (root / rel).exists():
            raise DeepwideError(f"superb.{self.name}: dataset root {root} is malformed: missing {root / rel} ({what})")


# ------------------------------------------------------------------ registry
TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add ``task`` to the registry (a plug-in task module calls this once)."""
    if task.family not in FAMILIES:
        raise DeepwideError(f"SUPERB task {task.name}: family {task.family!r} is not one of {', '.join(FAMILIES)}")
    if len(task.metric_labels) != len(task.score_keys):
        raise DeepwideError(f"SUPERB task {task.name}: one metric label per score key")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise DeepwideError(f"unknown SUPERB task {name!r} (known: {', '.join(TASKS)})")
    return TASKS[name]


_PUBLISHED: dict = {}


def _published() -> dict:
    """FBANK and SOTA anchors by score key, from src/deepwide/data/published.yaml."""
    if not _PUBLISHED:
        import yaml

        path = Path(__file__).resolve().parents[2] / "data" / "published.yaml"
        data = yaml.safe_load(path.read_text())
        keys = data["keys"]
        for name in ("FBANK", "SOTA"):
            if len(data["anchors"][name]) != len(keys):
                raise DeepwideError(f"{path}: anchors.{name} has {len(data['anchors'][name])} values, expected {len(keys)}")
            _PUBLISHED[name] = dict(zip(keys, data["anchors"][name]))
        _PUBLISHED["data"], _PUBLISHED["path"] = data, path
    return _PUBLISHED


# ------------------------------------------------------------------ collecting a target dir
def read_yaml(path: Path, missing: str | None = None) -> dict:
    """A YAML file s3prl wrote (empty: {}); ``missing`` is the DeepwideError's message when
    there is no such file (without it, FileNotFoundError)."""
    import yaml

    if missing is not None and not path.is_file():
        raise DeepwideError(missing)
    with open(path) as f:
        return yaml.safe_load(f) or {}


def layer_weights(ckpt_dir: Path) -> list[float]:
    """The featurizer's softmaxed layer weights of an s3prl checkpoint."""
    import torch

    state = torch.load(ckpt_dir / "model" / "state_dict.pt", map_location="cpu", weights_only=True)
    w = state.get("featurizer.weights")
    if w is None:  # a one-layer upstream (FBANK) has nothing to weigh
        return [1.0]
    return [float(x) for x in torch.softmax(w.float(), dim=-1)]


def collect_valid_best(task: Task, work: Path) -> dict:
    """The best-dev checkpoint's scores and its test result (s3prl's valid_best)."""
    valid_best = work / "train" / "valid_best"
    stats = read_yaml(valid_best / "training_stats.yaml",
                      f"s3prl left no best-dev checkpoint in {valid_best} (did validation run?)")
    dev = stats["valid_best_metrics"]
    tests = sorted((work / "evaluate" / "valid_best").glob("*/result.yaml"))
    if not tests:
        raise DeepwideError(f"s3prl left no test result under {work / 'evaluate' / 'valid_best'}")
    test = read_yaml(tests[0])
    return {
        "dev_score": float(dev[task.metric]) * task.scale,
        "best_step": int(stats["global_step"]),
        "test_score": float(test[task.metric]) * task.scale,
        "test_metrics": {k: float(v) for k, v in test.items()},
        "dev_metrics": {k: float(v) for k, v in dev.items()},
        "layer_weights": layer_weights(valid_best),
        "test_set": tests[0].parent.name,
    }


def audio_view(root: Path, s3prl_root: Path, rejected) -> View:
    """A view of ``root`` without the audio the corpus stage rejects (``rejected`` files)."""
    view = View(s3prl_root, info={"audio_rejected": rejected, "s3prl_root": str(s3prl_root)})
    if s3prl_root != root:
        view.ident["view"] = s3prl_root.name
    return view
