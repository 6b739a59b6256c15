"""SUPERB settings of a config: tasks, dataset roots, learning rates, QbE options.

Pure functions over the validated config (no torch, no s3prl), used by
:class:`deepwide.study.Study` (the jobs and their paths) and by ``deepwide superb check``.
"""

from __future__ import annotations

from pathlib import Path

from deepwide.errors import DeepwideError
from deepwide.identity import format_lr  # noqa: F401  (re-exported)
from deepwide.superb.tasks import TASKS, check_root, get_task

# tasks whose corpus ``corpus prepare-extra`` reads (and, without a root, the pipeline synthesizes)
EXTRA_TASK_CORPUS = {"sd": "librimix", "sf": "snips", "qbe": "quesst14"}


def task_root(config: dict, task: str) -> tuple[Path, bool]:
    """``(root, embedded)``: superb.<task>.root, else corpus.<corpus>.root, else the
    synthesized corpus under RESULTS/corpora/<corpus> (embedded)."""
    spec = get_task(task)
    tcfg = config["superb"].get(task, {})
    if tcfg.get("root"):
        return Path(tcfg["root"]), False
    corpus_cfg = (config.get("corpus") or {}).get(spec.corpus)
    if task == "sd":
        # s3prl's SD reads the Kaldi data dir that prepare-extra writes from LibriMix (a
        # real corpus.librimix.root or the embedded mixtures): always a pipeline output
        if isinstance(corpus_cfg, dict) and corpus_cfg.get("enabled") is False:
            raise DeepwideError("superb.sd: corpus.librimix is disabled and superb.sd.root (a Kaldi data dir) is not set: "
                                "enable the corpus, set a root, or drop sd from superb.tasks")
        from deepwide.corpus.sources import sd_data_dir

        return sd_data_dir(config["results"]), True
    if isinstance(corpus_cfg, dict) and corpus_cfg.get("root"):
        return Path(corpus_cfg["root"]), False
    if not spec.embedded:
        raise DeepwideError(
            f"superb.{task}: no dataset root (set superb.{task}.root to a real {spec.corpus} root; "
            "there is no embedded corpus for this task)"
        )
    if isinstance(corpus_cfg, dict) and corpus_cfg.get("enabled") is False:
        raise DeepwideError(
            f"superb.{task}: corpus.{spec.corpus} is disabled and superb.{task}.root is not set: "
            f"enable the corpus, set a root, or drop {task} from superb.tasks"
        )
    from deepwide.corpus.sources import corpus_dir

    return corpus_dir(config["results"], spec.corpus), True


def task_config(config: dict, task: str) -> dict:
    """superb.<task> with the corpus stage's real roots folded in where superb needs them
    (Speech Commands: the train and test folders are separate roots there)."""
    tcfg = dict(config["superb"][task])
    corpus_cfg = (config.get("corpus") or {}).get(get_task(task).corpus)
    if task == "ks" and not tcfg.get("root") and isinstance(corpus_cfg, dict) and corpus_cfg.get("root"):
        tcfg["train_dir"] = str(Path(corpus_cfg["root"]).resolve())
        if corpus_cfg.get("test_root"):
            tcfg["test_dir"] = str(Path(corpus_cfg["test_root"]).resolve())
    return tcfg


def lrs(config: dict, task: str) -> list[float]:
    value = config["superb"][task]["lr"]
    values = value if isinstance(value, list) else [value]
    if not values:
        raise DeepwideError(f"superb.{task}.lr: empty list")
    return [float(v) for v in values]


def enabled_tasks(config: dict) -> list[str]:
    tasks = list(config["superb"]["tasks"])
    for t in tasks:
        get_task(t)
    return tasks


def check_config(config: dict, errors: list[str] | None = None) -> list[str]:
    """Raise DeepwideError (naming task and path) for an unusable real dataset root; with
    ``errors`` (a plan made before the data exists), append every such message there instead.

    Embedded roots are produced by the corpus stage later in the run, so only their
    presence in the plan is reported.
    """

    def check(*args, **kwargs):
        try:
            check_root(*args, **kwargs)
        except DeepwideError as err:
            if errors is None:
                raise
            errors.append(str(err))

    lines = []
    tasks = enabled_tasks(config)
    if qbe_enabled(config) and "qbe" not in tasks:
        tasks.append("qbe")
    for task in tasks:
        root, embedded = task_root(config, task)
        tcfg = task_config(config, task)
        if not TASKS[task].trainable:
            lines.append(f"{task}: {root} (no training; wired for real roots)")
            if not embedded:
                check(task, root, tcfg, embedded=False)
            continue
        if not embedded:
            check(task, root, tcfg, embedded=False)
        lines.append(f"{task}: {'embedded' if embedded else 'real'} root {root}, lr {lrs(config, task)}")
    return lines


# ------------------------------------------------------------------ QbE (DTW, no training)
def qbe_enabled(config: dict) -> bool:
    """QbE runs when superb.qbe.root is set or qbe is in superb.tasks (then the root must be)."""
    sup = config["superb"]
    return bool((sup.get("qbe") or {}).get("root")) or "qbe" in sup["tasks"]


def qbe_args(config: dict) -> list[str]:
    """``deepwide superb qbe`` options that set its result (superb.qbe)."""
    q = config["superb"]["qbe"]
    root, _ = task_root(config, "qbe")
    args = ["--root", str(root)]
    args += ["--layer", str(int(q["layer"]))] if q.get("layer") is not None else ["--select-on-dev"]
    args += ["--languages", *q["languages"], "--normalize", q["normalize"], "--distance", q["distance"],
             "--beta", repr(float(q["beta"])), "--lr", format_lr(q["lr"])]
    return args


def qbe_exec_args(config: dict) -> list[str]:
    """``deepwide superb qbe`` options that change no result: device, threads, feature cache."""
    sup = config["superb"]
    args = ["--device", sup["device"]]
    threads = int(sup.get("threads") or 0)
    if threads:
        args += ["--threads", str(threads), "--jobs", str(threads)]
    if sup["qbe"].get("feature_cache"):
        args.append("--feature-cache")
    return args
