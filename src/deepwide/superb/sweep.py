"""Shared-pass SUPERB sweeps: K heads of one task trained on one upstream pass per batch.

SUPERB tunes only the learning rate (and repeats head seeds). s3prl runs every (lr, seed)
as its own job, so the frozen upstream computes the same hidden states K times. Here the
K heads (featurizer + downstream, each with its own optimizer, scheduler, RNG streams,
checkpoints and dev selection) are trained in one loop that moves each batch once and runs
the upstream once; every head then sees exactly the batch and the states its own s3prl
run would have seen.

How it plugs into s3prl. :class:`SweepTrainMixin` overrides ``Problem.train`` (stage 2 of
every s3prl problem's ``run``). :func:`sweep` (a context manager used by
:mod:`deepwide.superb.runner`) names the heads of one job; the first head's ``run`` then
trains every unfinished head, each into its own s3prl target directory with s3prl's own
layout (``train/step_N``, ``train/valid_best``: model and task saved by the problem's
``save_model``/``save_task``), and marks each finished head with ``train/deepwide_sweep.json``.
The other heads' ``run`` calls find that mark and go straight to s3prl's own test stage.
Everything else (data preparation, encoders, datasets, samplers, model, task, optimizer
and scheduler builders, validation and test reductions) is s3prl's code.

Equality with K separate runs (same seed): the data order and crops come from generators
of the samplers and ``LoadAudio`` that do not depend on the training seed, so they are the
same for every head. Each head builds its model after ``fix_random_seeds(seed)`` (as
s3prl's ``train`` does) and then keeps its own copy of the global RNG states (torch CPU and
CUDA, NumPy, ``random``), swapped in around everything it does; the one draw a
``DataLoader`` iterator takes from the global torch RNG is replayed in each head's stream.
Heads whose resume checkpoints sit at different steps train in separate groups.

Resume: each head resumes from its own latest ``step_N`` exactly as s3prl does (restart of
that epoch, optimizer and scheduler state restored).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from deepwide.errors import DeepwideError

log = logging.getLogger("s3prl.deepwide.sweep")

DONE = "deepwide_sweep.json"


@dataclass
class Head:
    """One (lr, seed) head of a sweep; ``train_dir`` is its s3prl ``target_dir/train``."""

    lr: float
    seed: int
    train_dir: Path


_HEADS: list[Head] | None = None
STATS: dict = {}  # what the last shared loop did (heads, steps, upstream passes), for the benchmark


@contextlib.contextmanager
def sweep(heads: list[Head]):
    """Within this block, the first s3prl ``train`` of a head trains all unfinished ``heads``."""
    global _HEADS
    old, _HEADS = _HEADS, [Head(float(h.lr), int(h.seed), Path(h.train_dir).resolve()) for h in heads]
    try:
        yield
    finally:
        _HEADS = old


def head_done(train_dir: Path) -> bool:
    return (Path(train_dir) / DONE).is_file()


class _RNG:
    """A private copy of the global RNG states, swapped in with ``with rng:``."""

    def __init__(self):
        self.state = self._get()

    @staticmethod
    def _get():
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        return torch.get_rng_state(), cuda, __import__("numpy").random.get_state(), random.getstate()

    @staticmethod
    def _set(state):
        cpu, cuda, np_state, py = state
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        __import__("numpy").random.set_state(np_state)
        random.setstate(py)

    def __enter__(self):
        self._outer = self._get()
        self._set(self.state)
        return self

    def __exit__(self, *exc):
        self.state = self._get()
        self._set(self._outer)
        del self._outer


def _loader_draw():
    """The draw a DataLoader iterator takes from the global torch RNG (its base seed)."""
    torch.empty((), dtype=torch.int64).random_()


def share_upstream_pass(upstream: torch.nn.Module) -> None:
    """Make ``upstream`` return its last result when called again on the same batch tensors
    (the K heads' models hold this one instance; the state dict keys do not change)."""
    if getattr(upstream, "_deepwide_shared", False):
        return
    inner = upstream.forward
    last: dict = {}
    upstream.shared_calls = 0
    upstream.shared_hits = 0

    def forward(wavs, wavs_len, *args, **kwargs):
        upstream.shared_calls += 1
        key = last.get("key")
        if key is not None and key[0] is wavs and key[1] is wavs_len and not args and not kwargs:
            upstream.shared_hits += 1
            return last["out"]
        out = inner(wavs, wavs_len, *args, **kwargs)
        last["key"], last["out"] = (wavs, wavs_len), out
        return out

    upstream.forward = forward
    upstream._deepwide_shared = True


@dataclass
class _TrainConf:
    """s3prl's ``train`` section (same keys and defaults as ``Problem.train``)."""

    total_steps: int
    log_step: int
    eval_step: int
    save_step: int
    gradient_clipping: float
    gradient_accumulate: int
    valid_metric: str
    valid_higher_better: bool
    auto_resume: bool = True
    resume_ckpt_dir: str = None
    seed: int = 0
    keep_num_ckpts: int = 2
    use_scheduler: bool = False


@dataclass
class _State:
    head: Head
    task: object
    optimizer: object
    scheduler: object
    rng: _RNG
    global_step: int
    epoch: int
    valid_best: dict
    results: list = field(default_factory=list)


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _cacheable(data: dict) -> dict:
    return {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in data.items()}


class SweepTrainMixin:
    """``train`` for a problem class: the shared-pass sweep when :func:`sweep` is active."""

    def train(self, train, train_dir, build_model_all_args, build_task_all_args_except_model, save_model, save_task,
              build_optimizer, build_scheduler, evaluate, train_dataset, train_batch_sampler, train_collate_fn,
              valid_dataset, valid_batch_sampler, valid_collate_fn, num_workers, world_size, rank, eval_batch, device,
              global_config=None):
        args = dict(train=train, train_dir=train_dir, build_model_all_args=build_model_all_args,
                    build_task_all_args_except_model=build_task_all_args_except_model, save_model=save_model,
                    save_task=save_task, build_optimizer=build_optimizer, build_scheduler=build_scheduler,
                    evaluate=evaluate, train_dataset=train_dataset, train_batch_sampler=train_batch_sampler,
                    train_collate_fn=train_collate_fn, valid_dataset=valid_dataset, valid_batch_sampler=valid_batch_sampler,
                    valid_collate_fn=valid_collate_fn, num_workers=num_workers, world_size=world_size, rank=rank,
                    eval_batch=eval_batch, device=device, global_config=global_config)
        me = Path(train_dir).resolve()
        heads = _HEADS
        if heads is None or world_size > 1 or me not in [h.train_dir for h in heads]:
            return super().train(**args)
        if head_done(me):
            log.info("sweep: %s was trained by this job's shared pass; testing only", me)
            return None
        todo = [h for h in heads if not head_done(h.train_dir)]
        _train_heads(self, todo, **args)
        return None


def _start(problem, head: Head, conf: _TrainConf, build_model_all_args, build_task_all_args_except_model,
           build_optimizer, build_scheduler, device, shared):
    """Build or resume one head as s3prl's ``train`` does, under the head's own seed."""
    from s3prl.util.seed import fix_random_seeds

    fix_random_seeds(head.seed)
    train_dir = head.train_dir
    if not conf.auto_resume and train_dir.is_dir():
        shutil.rmtree(train_dir)
    train_dir.mkdir(parents=True, exist_ok=True)
    ckpts = sorted((p for p in train_dir.iterdir() if p.name.startswith("step_")), key=lambda p: int(p.name.split("_")[-1]))
    resume_dir = None
    if conf.auto_resume:
        if conf.resume_ckpt_dir is not None and Path(conf.resume_ckpt_dir).is_dir():
            resume_dir = Path(conf.resume_ckpt_dir)
        elif ckpts:
            resume_dir = ckpts[-1]
    if resume_dir is not None:
        log.info("sweep: head lr %s seed %s resumes from %s", head.lr, head.seed, resume_dir)
        _, task = problem.load_model_and_task(resume_dir)
        opt_state = torch.load(resume_dir / "optimizer.pt", map_location="cpu")
        sched_state = torch.load(resume_dir / "scheduler.pt", map_location="cpu") if conf.use_scheduler else None
        stats = yaml.safe_load((resume_dir / "training_stats.yaml").read_text())
        step, epoch, best = int(stats["global_step"]), int(stats["epoch"]), dict(stats["valid_best_metrics"] or {})
    else:
        model = problem.build_model(**build_model_all_args)
        task = problem.build_task(model=model, **build_task_all_args_except_model)
        opt_state = sched_state = None
        step, epoch, best = 0, 0, {}
    if shared is None:
        shared = task.model.upstream
        share_upstream_pass(shared)
    else:  # the heads' upstreams are the same frozen weights: keep one instance
        task.model.upstream = shared
    task = task.to(torch.device(device))
    opt_conf = {**build_optimizer, "conf": {**dict(build_optimizer.get("conf") or {}), "lr": float(head.lr)}}
    optimizer = problem.build_optimizer(opt_conf, task.parameters())
    if opt_state:
        optimizer.load_state_dict(opt_state)
    scheduler = None
    if conf.use_scheduler:
        scheduler = problem.build_scheduler(build_scheduler, optimizer)
        if sched_state:
            scheduler.load_state_dict(sched_state)
    return _State(head, task, optimizer, scheduler, _RNG(), step, epoch, best), shared


def _train_heads(problem, heads: list[Head], *, train, train_dir, build_model_all_args, build_task_all_args_except_model,
                 save_model, save_task, build_optimizer, build_scheduler, evaluate, train_dataset, train_batch_sampler,
                 train_collate_fn, valid_dataset, valid_batch_sampler, valid_collate_fn, num_workers, world_size, rank,
                 eval_batch, device, global_config=None):
    base = _TrainConf(**train)
    outer = _RNG()  # the caller's RNG streams, untouched by the heads
    states, shared = [], None
    for h in heads:
        st, shared = _start(problem, h, _TrainConf(**{**train, "seed": h.seed}), build_model_all_args,
                            build_task_all_args_except_model, build_optimizer, build_scheduler, device, shared)
        states.append(st)
    outer._set(outer.state)
    groups: dict[tuple[int, int], list[_State]] = {}
    for st in states:
        groups.setdefault((st.global_step, st.epoch), []).append(st)
    STATS.clear()
    STATS.update(heads=len(states), groups=len(groups), steps=0, batches=0)
    ckpt = dict(save_model=save_model, save_task=save_task, build_model_all_args=build_model_all_args,
                build_task_all_args_except_model=build_task_all_args_except_model, global_config=global_config)
    valid = dict(evaluate=evaluate, dataset=valid_dataset, batch_sampler=valid_batch_sampler, collate_fn=valid_collate_fn,
                 eval_batch=eval_batch, device=device, num_workers=num_workers)
    from s3prl.dataio.sampler import DistributedBatchSamplerWrapper
    from torch.utils.data import DataLoader

    for (step, epoch), group in sorted(groups.items(), reverse=True):
        log.info("sweep: %d head(s) share one upstream pass from step %d (lr %s)", len(group), step,
                 ", ".join(f"{s.head.lr:g}/seed{s.head.seed}" for s in group))
        sampler = DistributedBatchSamplerWrapper(train_batch_sampler, num_replicas=1, rank=0)
        loader = DataLoader(train_dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=train_collate_fn)
        _loop(problem, group, base, loader, sampler, step, epoch, device, ckpt, valid)
    for st in states:
        (st.head.train_dir / DONE).write_text(json.dumps({"global_step": st.global_step, "lr": st.head.lr, "seed": st.head.seed}) + "\n")
    if shared is not None:
        STATS.update(upstream_calls=shared.shared_calls, upstream_passes=shared.shared_calls - shared.shared_hits)


def _loop(problem, group: list[_State], conf: _TrainConf, loader, sampler, step: int, epoch: int, device, ckpt: dict, valid: dict):
    """s3prl's training loop for several heads at once (same step accounting)."""
    backward_steps = 0
    while step < conf.total_steps:
        sampler.set_epoch(epoch)
        for st in group:
            with st.rng:
                _loader_draw()
        log.info("sweep: start epoch %d", epoch)
        for batch in loader:
            if step >= conf.total_steps:
                break
            global_step = step + 1
            batch = _to_device(batch, device)
            STATS["batches"] = STATS.get("batches", 0) + 1
            for st in group:
                with st.rng:
                    st.task.train()
                    loss, cacheable = st.task("train", **batch)
                    (loss / conf.gradient_accumulate).backward()
                st.results.append(_cacheable(cacheable))
            backward_steps += 1
            if backward_steps % conf.gradient_accumulate > 0:
                continue
            for st in group:
                with st.rng:
                    norm = torch.nn.utils.clip_grad_norm_(st.task.parameters(), conf.gradient_clipping)
                    if math.isnan(norm):
                        log.warning("sweep: lr %s seed %s: grad norm is NaN at step %d", st.head.lr, st.head.seed, global_step)
                    else:
                        st.optimizer.step()
                    st.optimizer.zero_grad()
                    if conf.use_scheduler:
                        st.scheduler.step()
            if global_step % conf.log_step == 0:
                for st in group:
                    with st.rng:
                        logs = st.task.reduction("train", st.results)
                    log.info("train at step %d, lr %s seed %s: %s", global_step, st.head.lr, st.head.seed,
                             {k: float(v) for k, v in logs.items()})
                    st.results = []
            names = {id(st): [] for st in group}
            if global_step % conf.eval_step == 0:
                for st, logs in zip(group, _validate(group, **valid)):
                    metrics = {k: float(v) for k, v in logs.items()}
                    log.info("valid at step %d, lr %s seed %s: %s", global_step, st.head.lr, st.head.seed, metrics)
                    new, best = metrics[conf.valid_metric], st.valid_best.get(conf.valid_metric)
                    if best is None or (new > best if conf.valid_higher_better else new < best):
                        st.valid_best = dict(metrics)
                        names[id(st)].append("valid_best")
            for st in group:
                st.global_step, st.epoch = global_step, epoch
                if global_step % conf.save_step == 0:
                    old = sorted((p for p in st.head.train_dir.iterdir() if p.name.startswith("step_")),
                                 key=lambda p: int(p.name.split("_")[-1]))
                    if conf.keep_num_ckpts is not None and len(old) >= conf.keep_num_ckpts:
                        for p in old[: len(old) - conf.keep_num_ckpts + 1]:
                            shutil.rmtree(p)
                    names[id(st)].append(f"step_{global_step}")
                for name in names[id(st)]:
                    _save(problem, st, st.head.train_dir / name, **ckpt)
            step = global_step
            STATS["steps"] = step
        epoch += 1


def _validate(group: list[_State], *, evaluate, dataset, batch_sampler, collate_fn, eval_batch, device, num_workers) -> list[dict]:
    """s3prl's ``evaluate(mode="valid")`` for every head of ``group`` over one pass of the data."""
    from torch.utils.data import DataLoader

    for st in group:
        with st.rng:
            _loader_draw()
    loader = DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, collate_fn=collate_fn)
    results = [[] for _ in group]
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i == eval_batch:
                break
            batch = _to_device(batch, device)
            for st, res in zip(group, results):
                with st.rng:
                    st.task.eval()
                    _, cacheable = st.task("valid", _dump_dir=str(st.head.train_dir), **batch)
                res.append(_cacheable(cacheable))
    out = []
    for st, res in zip(group, results):
        with st.rng:
            out.append(st.task.reduction("valid", res, _dump_dir=str(st.head.train_dir)))
    return out


def _save(problem, st: _State, ckpt_dir: Path, *, save_model, save_task, build_model_all_args,
          build_task_all_args_except_model, global_config):
    """One checkpoint in s3prl's layout (what its ``load_model_and_task`` and resume read)."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    problem.save_model(save_model, ckpt_dir / "model", build_model_all_args, st.task.model)
    problem.save_task(save_task, ckpt_dir / "task", build_task_all_args_except_model, st.task)
    torch.save(st.optimizer.state_dict(), ckpt_dir / "optimizer.pt")
    if st.scheduler is not None:
        torch.save(st.scheduler.state_dict(), ckpt_dir / "scheduler.pt")
    stats = {"global_step": st.global_step, "epoch": st.epoch, "valid_best_metrics": st.valid_best}
    (ckpt_dir / "training_stats.yaml").write_text(yaml.safe_dump(stats))
    (ckpt_dir / "config.yaml").write_text(yaml.safe_dump(global_config))


def check_heads(heads: list[tuple[float, int]]) -> None:
    if len(set(heads)) != len(heads):
        raise DeepwideError(f"superb sweep: repeated (lr, seed) heads {heads}")
    if not heads:
        raise DeepwideError("superb sweep: no heads")
