"""Where a KD step's CPU time goes: the pipeline loop (``deepwide.distill.trainer.train``)
and the s3prl-style reference loop of ``kd_throughput.py``, part by part.

    python benchmarks/kd_step_profile.py [--shapes 3x128f512h4,8x64f256h2] [--steps 24] [--out kd_step_profile.json]

Timers wrap, for the duration of this process, what each loop calls: the DataLoader's batch
fetch (the loader: audio reads, or the targets cache's memory-mapped reads and copies), the
front ends, the encoder forward (``hidden_states``), the KD heads, the loss, ``backward``,
gradient clipping, ``AdamW.step``, ``zero_grad`` and the lr scheduler. "rest" is the step's
CPU time outside them (the loop's own Python: loss values to the host, finiteness and jump
checks, the progress bar, moving tensors). Steps after ``--warmup`` are counted; figures are
CPU milliseconds per step (one torch thread unless ``--threads``). Nothing in ``src`` changes:
the wrappers are installed and removed around each call.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from functools import partial
from pathlib import Path

import kd_throughput
import torch
from kd_throughput import (
    CPU_STUDENTS,
    CPU_TEACHER,
    parse_shape,
    pipeline_loop,
    reference_loop,
    setup,
)

import deepwide.distill.trainer as trainer_module
from deepwide.distill.methods import KDHeads
from deepwide.models.arch import ArchConfig

PARTS = ["loader", "teacher front end", "teacher encoder", "student front end", "student encoder", "KD heads", "loss",
         "backward", "grad clip", "optimizer step", "zero_grad", "lr scheduler", "rest"]
_INHERITED = object()  # an attribute a class inherits (nothing of its own to put back)


class Timers:
    """CPU seconds per part over the steps after ``warmup`` (a step starts with its fetch)."""

    def __init__(self, warmup: int, teacher):
        self.warmup, self.teacher, self.fetches, self.depth = warmup, teacher, 0, 0
        self.cpu: dict[str, float] = defaultdict(float)

    def wrap(self, name, fn, count_fetch=False):
        def timed(*args, **kwargs):
            if count_fetch:
                self.fetches += 1
            part = name(args) if callable(name) else name
            if self.fetches <= self.warmup or self.depth:  # untimed step, or inside a timed part
                return fn(*args, **kwargs)
            self.depth += 1
            t = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu[part] += time.process_time() - t
                self.depth -= 1
        return timed


def _patches(timers: Timers) -> list[tuple[object, str, object]]:
    """(owner, attribute, wrapped) for everything a KD step calls."""
    from torch.utils.data import dataloader

    fe_cls = type(timers.teacher.feature_extractor)

    def who(args, what):
        return f"{'teacher' if args[0] is timers.teacher or args[0] is timers.teacher.feature_extractor else 'student'} {what}"

    spec = [
        (dataloader._SingleProcessDataLoaderIter, "_next_data", "loader"),
        (fe_cls, "forward", lambda a: who(a, "front end")),
        (trainer_module, "hidden_states", lambda a: who(a, "encoder")),
        (kd_throughput, "hidden_states", lambda a: who(a, "encoder")),
        (KDHeads, "forward", "KD heads"),
        (trainer_module, "kd_loss", "loss"), (trainer_module, "kd_total", "loss"), (kd_throughput, "kd_loss", "loss"),
        (torch.Tensor, "backward", "backward"),
        (torch.nn.utils, "clip_grad_norm_", "grad clip"),
        (torch.optim.AdamW, "step", "optimizer step"),
        (torch.optim.Optimizer, "zero_grad", "zero_grad"),
        (torch.optim.lr_scheduler.LambdaLR, "step", "lr scheduler"),
    ]
    return [(o, a, timers.wrap(n, getattr(o, a), count_fetch=n == "loader")) for o, a, n in spec]


def profiled(fn, timers: Timers):
    """Run ``fn()`` with the timers installed; returns its result."""
    patches = _patches(timers)
    saved = [(o, a, o.__dict__.get(a, _INHERITED)) for o, a, _ in patches]  # as they were
    for o, a, w in patches:
        setattr(o, a, w)
    try:
        return fn()
    finally:
        for o, a, v in saved:
            if v is _INHERITED:
                delattr(o, a)
            else:
                setattr(o, a, v)


def per_step(timers: Timers, total_cpu: float, steps: int) -> dict:
    ms = {p: 1e3 * timers.cpu.get(p, 0.0) / steps for p in PARTS if p != "rest"}
    ms["rest"] = 1e3 * total_cpu / steps - sum(ms.values())
    ms["total"] = 1e3 * total_cpu / steps
    return {k: round(v, 2) for k, v in ms.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=",".join(CPU_STUDENTS))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="kd_step_profile.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = torch.device("cpu")
    tarch = ArchConfig(**CPU_TEACHER)
    timed = args.steps - args.warmup
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        manifest, teacher, ckpt, _ = setup(work, tarch, args.batch, args.seconds, dev)
        size = (args.batch, args.seconds, args.steps, args.warmup)
        for name in args.shapes.split(","):
            arch = parse_shape(name, tarch)
            t_ref = Timers(args.warmup, teacher)
            _, ref = profiled(partial(reference_loop, teacher, tarch, arch, manifest, *size, dev, 0), t_ref)
            t_pipe = Timers(args.warmup, teacher)
            _, pipe, _ = profiled(partial(pipeline_loop, ckpt, arch, manifest, work / "targets", *size, dev, 0, False), t_pipe)
            rows.append({"student": name, "reference_ms": per_step(t_ref, ref.cpu, timed),
                         "pipeline_ms": per_step(t_pipe, pipe.cpu, timed)})
            print(json.dumps(rows[-1]), file=sys.stderr)
    Path(args.out).write_text(json.dumps({"steps": args.steps, "warmup": args.warmup, "batch": args.batch,
                                          "seconds": args.seconds, "threads": args.threads, "unit": "CPU ms per step",
                                          "rows": rows}, indent=1) + "\n")
    names = [r["student"] for r in rows]
    print(f"CPU ms per KD step (batch {args.batch} x {args.seconds:g} s, {args.threads} thread(s), "
          f"{timed} steps): reference | pipeline")
    print("| part | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for p in PARTS + ["total"]:
        print(f"| {p} | " + " | ".join(f"{r['reference_ms'][p]:.1f} / {r['pipeline_ms'][p]:.1f}" for r in rows) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
