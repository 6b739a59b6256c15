"""One SUPERB job: (upstream, task, learning rate) through s3prl's own recipe.

:func:`run_job` writes the files s3prl would download (offline), builds s3prl's config for
the task (its defaults + our overrides), runs ``DeepwideXX().main(["--config", yaml])``
in this process, and collects what s3prl left in its target directory into
``out_dir/result.json`` (written last, atomically), ``out_dir/predictions/`` and
``out_dir/s3prl.log``.

ASR and PR: s3prl reads the LibriSpeech root's ``*.trans.txt`` itself; when a line there
is unusable or its text is outside LibriSpeech's character set, s3prl reads a cleaned view
instead (:func:`deepwide.corpus.librispeech.write_s3prl_view`, under the cache, same text
policy as the corpus stage). PR's lexicon comes from ``lexicon_dir`` (written by
``deepwide superb lexicon``) when given, else from superb.pr.lexicon or espeak-ng;
result.json names its phone set and source.

s3prl's target directory is the resume state: ``out_dir/work-<hash>/`` where the hash
covers the effective s3prl config and the upstream's identity, so a requeued job resumes
and a changed config or retrained upstream starts fresh. It is not a declared output, so
Snakemake leaves it in place when a job fails. Its checkpoints hold the featurizer and head,
not the frozen upstream (:class:`deepwide.superb.problems.DeepwideUpstreamMixin`), and once
a head is tested its resume state (``step_N``, the optimizer state in ``valid_best``) is removed.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from deepwide.config import deep_merge
from deepwide.errors import DeepwideError
from deepwide.identity import format_lr, split_execution
from deepwide.superb.tasks import Task, check_root, get_task
from deepwide.superb.tasks.asr import error_rate_se  # noqa: F401  (PR/ASR's sampling error, read by the report's tests)
from deepwide.superb.tasks.base import View
from deepwide.utils.io import atomic_write_text, canonical_json

log = logging.getLogger(__name__)

TESTED = "deepwide_tested.json"


def s3prl_overrides(spec: Task, tcfg: dict, lr: float, seed: int) -> dict:
    """Our config for one task, in s3prl's config structure (merged over its defaults)."""
    steps = int(tcfg["total_steps"])
    eval_step = int(tcfg["eval_step"])
    if eval_step > steps:
        raise DeepwideError(f"superb.{spec.name}.eval_step ({eval_step}) must be <= total_steps ({steps}): s3prl tests the best dev checkpoint")
    train = {
        "total_steps": steps,
        "eval_step": eval_step,
        "log_step": int(tcfg.get("log_step") or max(1, eval_step)),
        "save_step": int(tcfg.get("save_step") or eval_step),
        "gradient_accumulate": int(tcfg["gradient_accumulate"]),
        "seed": int(seed),
        "keep_num_ckpts": 1,
    }
    over = {
        "build_optimizer": {"conf": {"lr": float(lr)}},
        "train": train,
        "build_batch_sampler": {"train": {"batch_size": int(tcfg["batch_size"])}},
    }
    if tcfg.get("downstream"):
        over["build_downstream"] = copy.deepcopy(tcfg["downstream"])
    spec.adjust_overrides(over, tcfg)
    return deep_merge(over, tcfg.get("s3prl") or {})


def _upstream_identity(spec: dict) -> str:
    from deepwide.superb.upstream import CACHE_KEYS, uses_cache

    # a cache's size, folder and skip rule change no result; whether states are computed
    # per utterance (any cache) or in padded batches (none) does, for front ends that
    # normalise over time (group norm)
    spec = {**{k: v for k, v in spec.items() if k not in CACHE_KEYS}, **({"per_utterance": True} if uses_cache(spec) else {})}
    path = spec.get("path")
    if not path:
        return canonical_json(spec)
    p = Path(path)
    files = sorted(p.rglob("*")) if p.is_dir() else [p]
    h = hashlib.sha256(canonical_json(spec).encode())
    for f in files:
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def test_units(work: Path) -> int | None:
    """Scored test units, for the report's sampling error: the rows of the test lists s3prl
    wrote into its target dir (utterances; trials for ASV; recordings for SD)."""
    import csv

    lists = sorted(work.glob("test*.csv"))
    if not lists:
        return None
    n = 0
    for path in lists:
        with open(path, newline="") as f:
            n += max(0, sum(1 for _ in csv.reader(f)) - 1)
    return n


def collect(spec: Task, work: Path) -> dict:
    """Dev score, best step, test score, layer weights, test units from an s3prl target dir."""
    res = spec.collect(work)
    res["n_test"] = test_units(work)
    return res


def run_s3prl(task: str, config: dict, work: Path, cache_root: Path) -> None:
    """Run the task's Deepwide problem class on ``config`` (s3prl's structure)."""
    import yaml

    from deepwide.superb.compat import run_settings
    from deepwide.superb.problems import problem_class

    work.mkdir(parents=True, exist_ok=True)
    cfg_path = work / "deepwide_s3prl_config.yaml"
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=True))
    with run_settings(cache_root, max(1, int(config.get("num_workers", 0)))):
        problem_class(task)().main(["--config", str(cfg_path)])


def run_job(*, lr: float, out_dir: str | Path, seed: int = 0, **common) -> dict:
    """Train + validate + test one (upstream, task, lr) and write ``out_dir/result.json``;
    ``common`` as :func:`run_sweep`'s keywords."""
    return run_sweep(heads=[(lr, seed, out_dir)], **common)[0]


@dataclass
class _Head:
    """One (lr, seed) head of a job: its s3prl config and what each fold left."""

    lr: float
    seed: int
    out_dir: Path
    over: dict
    work_root: Path
    work: Path = None
    config: dict = None
    per_fold: list = field(default_factory=list)


@dataclass
class _Run:
    """The settings one job's heads share."""

    spec: Task
    upstream_name: str
    upstream: dict
    root: Path
    tcfg: dict
    cache_root: Path
    device: str
    num_workers: int
    embedded: bool
    lexicon_dir: str | Path | None
    text_policy: str


def run_sweep(*, task: str, upstream_name: str, upstream: dict, heads: list[tuple[float, int, str | Path]],
              root: str | Path, tcfg: dict, cache_root: str | Path, device: str = "auto", num_workers: int = 0,
              embedded: bool = False, lexicon_dir: str | Path | None = None, text_policy: str = "normalise",
              shared: bool = True) -> list[dict]:
    """Several (lr, head seed) runs of one (upstream, task): ``heads`` is a list of
    ``(lr, seed, out_dir)``; each head writes ``out_dir/result.json``.

    With ``shared`` (default) the heads that still need training train together on one
    upstream pass per batch (:mod:`deepwide.superb.sweep`); each keeps its own s3prl target
    directory ``out_dir/work-<hash>/`` (the same one a one-head job uses), so a head whose
    training and test already finished there is restored (collected), not retrained, and a
    requeued job resumes every head from its own checkpoint. ``shared=False`` runs the
    heads one after another through s3prl's own loop (the reference).

    ``lexicon_dir`` (PR): a ``deepwide superb lexicon`` output folder whose two files are
    used; absent: superb.pr.lexicon or a lexicon generated from the transcripts.
    ``text_policy`` (ASR, PR): how transcript text outside LibriSpeech's character set is
    read (corpus.librispeech.text_policy).
    """
    from deepwide.audio import SAMPLE_RATE
    from deepwide.superb import sweep as sw
    from deepwide.utils.device import resolve_device

    spec = get_task(task)
    if not spec.trainable:
        raise DeepwideError(f"superb task {task} is not run through s3prl's trainer")
    if lexicon_dir and task != "pr":
        raise DeepwideError(f"superb run --lexicon-dir is for task pr only (task {task})")
    sw.check_heads([(float(lr), int(seed)) for lr, seed, _ in heads])
    sw.STATS.clear()
    run = _Run(spec, upstream_name, dict(upstream), Path(root).resolve(), tcfg, Path(cache_root).resolve(),
               resolve_device(device, "superb.device"), int(num_workers), embedded, lexicon_dir, text_policy)
    check_root(task, run.root, tcfg, embedded=embedded)
    (run.cache_root / "data").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(run.cache_root / "numba"))
    t0 = time.time()
    if spec.random_crop_secs:
        # train utterances longer than max_secs are cut at a random offset every epoch:
        # those crops are computed but not stored (they will not come back)
        ds = (tcfg.get("s3prl") or {}).get("build_dataset", {}).get("train", {})
        run.upstream.setdefault("cache_skip_samples", round(float(ds.get("max_secs", spec.random_crop_secs)) * SAMPLE_RATE))
    folds = spec.folds(tcfg)
    view = spec.view(run.root, tcfg, run.cache_root, text_policy, lexicon_dir)
    jobs = _heads(run, heads, folds, view)
    restored, info = [], {}
    with _s3prl_logs(jobs):
        for fold in folds:
            info = spec.offline(run.root, tcfg, run.cache_root, embedded, 0 if fold is None else int(fold), view,
                                lexicon_dir, text_policy)
            restored += _run_fold(run, jobs, fold, view, shared)
    if restored:
        log.info("superb %s / %s: restored finished head(s) %s from their target dirs (not retrained)", upstream_name, task, restored)
    runtime = round(time.time() - t0, 3)
    results = [_result(run, job, jobs, {**info, **view.info}, runtime, shared, restored) for job in jobs]
    from deepwide.utils.usage import usage

    used = usage()  # the job's peak memory and wall time, shared by all its heads (plan resources)
    for job, result in zip(jobs, results):  # declared outputs last, once every head is done
        result["usage"] = used
        atomic_write_text(job.out_dir / "result.json", json.dumps(result, indent=1) + "\n")
    return results


def _heads(run: _Run, heads: list, folds: list, view: View) -> list[_Head]:
    """Each head's s3prl overrides and target dir, named by its resume identity: the result
    settings only (log and save cadence may change on a requeue)."""
    tcfg_id = split_execution(run.tcfg, f"superb.{run.spec.name}")[0]
    jobs = []
    for lr, seed, out_dir in heads:
        over = s3prl_overrides(run.spec, run.tcfg, lr, seed)
        over_id = {**over, "train": {k: v for k, v in over["train"].items() if k not in ("log_step", "save_step")}}
        ident = hashlib.sha256(
            canonical_json({"over": over_id, "task": tcfg_id, "upstream": _upstream_identity(run.upstream),
                            "root": str(run.root), "folds": folds, **view.ident}).encode()
        ).hexdigest()[:12]
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        jobs.append(_Head(float(lr), int(seed), out_dir, over, out_dir / f"work-{ident}"))
    return jobs


@contextlib.contextmanager
def _s3prl_logs(jobs: list[_Head]):
    """s3prl's log lines into each head's ``s3prl.log`` while the heads run."""
    s3prl_log = logging.getLogger("s3prl")
    handlers = []
    for job in jobs:
        handler = logging.FileHandler(job.out_dir / "s3prl.log", mode="a")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        s3prl_log.addHandler(handler)
        handlers.append(handler)
    s3prl_log.setLevel(logging.INFO)
    try:
        yield
    finally:
        for handler in handlers:
            s3prl_log.removeHandler(handler)
            handler.close()


def prune_resume_checkpoints(train_dir: Path, keep: Path) -> None:
    """Remove what only a resume of a head's training reads, once the head is tested (a
    tested head is never resumed): every checkpoint but ``keep`` (the one its result comes
    from: ``valid_best``, or ASV's best-EER ``step_N``), and the optimizer state in ``keep``
    and ``valid_best``. ``keep``'s model and task stay (the result's layer weights, s3prl's
    ``load_model_and_task``). The optimizer state is twice the head: 320 MB per ASR head,
    per checkpoint; s3prl keeps ``keep_num_ckpts`` step checkpoints (ASV: all)."""
    train_dir, keep = Path(train_dir), Path(keep)
    if not (keep / "model" / "state_dict.pt").is_file():
        raise DeepwideError(f"superb: the result's checkpoint {keep} has no model: not removing the others")
    doomed = [p for p in train_dir.glob("step_*") if p.is_dir() and p != keep]
    doomed += [p for p in {keep / "optimizer.pt", train_dir / "valid_best" / "optimizer.pt"} if p.is_file()]
    freed = 0
    for path in sorted(doomed):
        freed += path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    if freed:
        log.info("superb: removed the resume checkpoints of a tested head in %s (%.1f MB)", train_dir, freed / 2**20)


def _run_fold(run: _Run, jobs: list[_Head], fold: int | None, view: View, shared: bool) -> list[tuple]:
    """Train and test (or restore) every head on one fold, collect each into ``per_fold``
    and its test predictions into ``out_dir/predictions/``; returns the restored heads."""
    from deepwide.superb import sweep as sw

    prep = run.spec.prepare_data(view.root, run.tcfg, run.num_workers, fold)
    for job in jobs:
        job.work = job.work_root if fold is None else job.work_root / f"fold{fold}"
        job.config = deep_merge(
            {
                "target_dir": str(job.work.resolve()),
                "cache_dir": str(run.cache_root / "data"),
                "device": run.device,
                "num_workers": run.num_workers,
                "prepare_data": prep,
                "build_upstream": {"name": run.upstream_name, **run.upstream},
            },
            job.over,
        )
    pending = [j for j in jobs if not (j.work / TESTED).is_file()]
    restored = [(j.lr, j.seed, fold) for j in jobs if j not in pending]
    heads_ctx = [sw.Head(j.lr, j.seed, j.work / "train") for j in pending]
    with sw.sweep(heads_ctx) if shared and len(pending) > 1 else contextlib.nullcontext():
        for job in pending:
            log.info("superb %s / %s / lr %s seed %s%s: s3prl target dir %s", run.upstream_name, run.spec.name, job.lr,
                     job.seed, "" if fold is None else f" / fold {fold}", job.work)
            run_s3prl(run.spec.name, job.config, job.work, run.cache_root)
            (job.work / TESTED).write_text(json.dumps({"lr": job.lr, "seed": job.seed}) + "\n")
    for job in jobs:
        res = collect(run.spec, job.work)
        prune_resume_checkpoints(job.work / "train", keep=run.spec.result_checkpoint(job.work, res))
        res["fold"] = fold
        job.per_fold.append(res)
        pred_dir = job.out_dir / "predictions" / ("" if fold is None else f"fold{fold}")
        if pred_dir.exists():
            shutil.rmtree(pred_dir)
        shutil.copytree(run.spec.predictions_dir(job.work, res["test_set"]), pred_dir)
    return restored


def _result(run: _Run, job: _Head, jobs: list[_Head], info: dict, runtime: float, shared: bool,
            restored: list[tuple]) -> dict:
    """One head's result.json: scores averaged over folds, the job's facts, the task's ``info``."""
    import s3prl

    from deepwide.utils.device import device_name

    per_fold, spec = job.per_fold, run.spec

    def mean(key):
        return float(sum(r[key] for r in per_fold) / len(per_fold))

    result = {
        "upstream": run.upstream_name,
        "task": spec.name,
        "lr": job.lr,
        "seed": job.seed,
        "metric": spec.metric,
        "unit": spec.unit,
        "higher_is_better": spec.higher_is_better,
        "dev_score": mean("dev_score"),
        "best_step": per_fold[0]["best_step"],
        "test_score": mean("test_score"),
        "layer_weights": [float(sum(ws) / len(per_fold)) for ws in zip(*(r["layer_weights"] for r in per_fold))],
        "n_test": (sum(r["n_test"] for r in per_fold) if all(r.get("n_test") for r in per_fold) else None),
        # PR/ASR: the error rate's test-set standard error over utterances (one run only)
        "test_se": per_fold[0].get("test_se") if len(per_fold) == 1 else None,
        "runtime_s": runtime,
        "sweep": {"heads": [[j.lr, j.seed] for j in jobs], "shared_pass": bool(shared and len(jobs) > 1),
                  "restored_folds": [f for lr, sd, f in restored if (lr, sd) == (job.lr, job.seed)]},
        "device": run.device,
        "device_name": device_name(run.device),
        "s3prl_version": getattr(s3prl, "__version__", "0.4.18"),
        "total_steps": int(run.tcfg["total_steps"]),
        "work_dir": str(job.work_root),
        "folds": [
            {k: r.get(k) for k in ("fold", "dev_score", "best_step", "test_score", "n_test", "test_metrics", "dev_metrics", "layer_weights")}
            for r in per_fold
        ],
    }
    if len(per_fold) == 1:
        # one run: its metrics at top level too, s3prl's raw logs (fractions; SD: its scorer's
        # percent), which the report reads for SF's second term (slot_value_cer beside slot_type_f1)
        result["dev_metrics"] = per_fold[0]["dev_metrics"]
        result["test_metrics"] = per_fold[0]["test_metrics"]
    result.update(info)  # the task's facts: PR's lexicon, audio left out, transcripts, s3prl_root
    if not all(math.isfinite(result[k]) for k in ("dev_score", "test_score")):
        raise DeepwideError(f"superb {run.upstream_name}/{spec.name}/lr{format_lr(job.lr)}: non-finite score "
                            f"{result['dev_score']}, {result['test_score']}")
    return result


def select(results: list[dict]) -> dict:
    """The lr with the best mean dev score over head seeds (SUPERB practice: tune only the
    lr on dev). Returns that lr's first-seed result with ``selected_lr``, the mean test
    score over its seeds (``test_score_mean``), each seed's scores (``seeds``) and every
    candidate (lr, seed)."""
    if not results:
        raise DeepwideError("superb select: no results to choose from")
    hib = results[0]["higher_is_better"]
    by_lr: dict[float, list[dict]] = {}
    for r in results:
        by_lr.setdefault(float(r["lr"]), []).append(r)

    def mean(rs, key):
        return sum(float(r[key]) for r in rs) / len(rs)

    best_lr = max(by_lr, key=lambda lr: (mean(by_lr[lr], "dev_score") if hib else -mean(by_lr[lr], "dev_score"), -lr))
    chosen = sorted(by_lr[best_lr], key=lambda r: int(r.get("seed", 0)))
    out = dict(chosen[0])
    out["selected_lr"] = best_lr
    out["dev_score_mean"] = mean(chosen, "dev_score")
    out["test_score_mean"] = mean(chosen, "test_score")
    out["seeds"] = [{"seed": int(r.get("seed", 0)), "dev_score": r["dev_score"], "test_score": r["test_score"],
                     "best_step": r["best_step"]} for r in chosen]
    out["candidates"] = [{"lr": r["lr"], "seed": int(r.get("seed", 0)), "dev_score": r["dev_score"],
                          "test_score": r["test_score"], "best_step": r["best_step"]} for r in results]
    return out
