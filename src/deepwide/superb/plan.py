"""What the superb rules run: tasks, dataset roots, learning rates, upstreams.

Pure functions over the validated config (no torch, no s3prl), used by
``workflow/rules/superb.smk`` at DAG-building time and by ``deepwide superb check``.
"""

from __future__ import annotations

from pathlib import Path

from deepwide.errors import DeepwideError
from deepwide.superb.tasks import TASKS, check_root, get_task


def task_root(config: dict, task: str) -> tuple[Path, bool]:
    """``(root, embedded)``: superb.<task>.root, else corpus.<corpus>.root, else the
    synthesized corpus under RESULTS/corpora/<corpus> (embedded)."""
    spec = get_task(task)
    tcfg = config["superb"].get(task, {})
    if tcfg.get("root"):
        return Path(tcfg["root"]), False
    corpus_cfg = (config.get("corpus") or {}).get(spec.corpus)
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
    return Path(config["results"]) / "corpora" / spec.corpus, True


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


def format_lr(lr: float) -> str:
    """The ``lr{lr}`` path component: ``1e-4`` -> ``0.0001``, ``1e-05`` stays."""
    return f"{float(lr):g}"


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


def check_config(config: dict) -> list[str]:
    """Raise DeepwideError (naming task and path) for an unusable real dataset root.

    Embedded roots are produced by the corpus stage later in the run, so only their
    presence in the plan is reported.
    """
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
                check_root(task, root, tcfg, embedded=False)
            continue
        if not embedded:
            check_root(task, root, tcfg, embedded=False)
        lines.append(f"{task}: {'embedded' if embedded else 'real'} root {root}, lr {lrs(config, task)}")
    return lines


def upstreams(config: dict, students: dict[str, str] | None = None) -> dict[str, str]:
    """Upstream name -> source (``fbank``, checkpoint file or HF dir)."""
    sup = config["superb"]
    results = Path(config["results"])
    out: dict[str, str] = {}
    if sup["teacher"]:
        out["teacher"] = str(results / "teacher" / "teacher.pt")
    if sup["fbank"]:
        out["fbank"] = "fbank"
    if sup["students"]:
        out.update(students or {})
    for name, src in (sup.get("extra_upstreams") or {}).items():
        if name in out:
            raise DeepwideError(f"superb.extra_upstreams.{name}: name already used by another upstream")
        out[name] = str(src)
    return out


def job_cfg(config: dict, task: str) -> dict:
    """Everything a (task) job depends on besides upstream and lr: the --cfg JSON."""
    sup = config["superb"]
    return {
        "task": task_config(config, task),
        "device": sup["device"],
        "num_workers": sup["num_workers"],
        "cache_mb": sup["cache_mb"],
        "seed": config.get("seed", 0),
    }


def selected_targets(config: dict, upstream_names) -> list[str]:
    results = Path(config["results"])
    return [
        str(results / "superb" / up / task / "selected.json")
        for up in upstream_names
        for task in enabled_tasks(config)
        if TASKS[task].trainable
    ]


# ------------------------------------------------------------------ QbE (DTW, no training)
def qbe_enabled(config: dict) -> bool:
    """QbE runs when superb.qbe.root is set or qbe is in superb.tasks (then the root must be)."""
    sup = config["superb"]
    return bool((sup.get("qbe") or {}).get("root")) or "qbe" in sup["tasks"]


def qbe_result(config: dict, upstream: str) -> str:
    lr = format_lr(config["superb"]["qbe"]["lr"])
    return str(Path(config["results"]) / "superb" / upstream / "qbe" / f"lr{lr}" / "result.json")


def qbe_targets(config: dict, upstream_names) -> list[str]:
    """One QbE result.json per upstream, or none when QbE is not enabled."""
    if not qbe_enabled(config):
        return []
    return [qbe_result(config, up) for up in upstream_names]


def qbe_args(config: dict) -> list[str]:
    """``deepwide superb qbe`` options from superb.qbe (and superb.device / threads)."""
    sup = config["superb"]
    q = sup["qbe"]
    root, _ = task_root(config, "qbe")
    args = ["--root", str(root)]
    args += ["--layer", str(int(q["layer"]))] if q.get("layer") is not None else ["--select-on-dev"]
    args += ["--languages", *q["languages"], "--normalize", q["normalize"], "--distance", q["distance"],
             "--beta", repr(float(q["beta"])), "--lr", format_lr(q["lr"]), "--device", sup["device"]]
    threads = int(sup.get("threads") or 0)
    if threads:
        args += ["--threads", str(threads), "--jobs", str(threads)]
    if q.get("feature_cache"):
        args.append("--feature-cache")
    return args
