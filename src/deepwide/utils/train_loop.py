"""The pieces every deepwide training loop shares: the teacher's (deepwide.teacher.pretrain)
and the students' (deepwide.distill.trainer).

- :func:`lr_lambda`: linear warm-up over ``round(warmup * steps)`` steps, then linear decay
  to zero at ``steps`` (a warm-up that rounds to 0 steps: none, full lr from the first step);
- :func:`adamw` and :func:`linear_schedule`: the optimizer and its schedule;
- :func:`optimizer_step`: backward, gradient clipping, optimizer and scheduler step;
- :func:`save_state` / :func:`load_state`: the resume state, written atomically;
- :func:`due`: the logging, evaluation and checkpoint cadence;
- :func:`pack`: length-bucketed batches.

Both trainers are bit-reproducible (same config, same machine: same weights), so these
keep the op order of the loops they came from: change them and the weights change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from deepwide.utils.io import atomic_path


def lr_lambda(steps: int, warmup: float):
    """lr multiplier of optimizer step ``step`` (0-based) for ``torch``'s ``LambdaLR``."""
    warm = int(round(warmup * steps))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (steps - step) / max(1, steps - warm))

    return f


def adamw(params: Iterable[torch.nn.Parameter], lr: float, betas, eps: float, weight_decay: float,
          fused: bool = False) -> torch.optim.AdamW:
    """AdamW; ``fused``: the fused CUDA kernel (the students' choice on CUDA; the teacher keeps
    torch's default, whose results its recorded runs have)."""
    kw = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
    if fused:
        kw["fused"] = True
    return torch.optim.AdamW(params, **kw)


def linear_schedule(optimizer: torch.optim.Optimizer, steps: int, warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(steps, warmup))


def optimizer_step(loss: torch.Tensor, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
                   scheduler, clip: float) -> float:
    """One update from ``loss``; returns the gradient norm before clipping."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = float(torch.nn.utils.clip_grad_norm_(params, clip))
    optimizer.step()
    scheduler.step()
    return gnorm


def save_state(path: str | Path, state: dict) -> None:
    """``torch.save`` atomically: a crash mid-write leaves the previous state."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: str | Path, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=False)


def due(step: int, every: int, last: int) -> bool:
    """Whether step ``step`` logs (evaluates, saves) with cadence ``every``: every
    ``every`` steps and at the last step ``last``."""
    return step % every == 0 or step == last


def pack(order, size, budget: int) -> list[list[int]]:
    """Consecutive runs of ``order`` as batches: a batch is closed before the utterance whose
    ``size`` (its padded or cropped length), times the batch's count with it, would exceed
    ``budget``. ``order`` is sorted so that this size is the batch's: ascending for padding
    to the longest member, descending for cropping to the shortest."""
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur and (len(cur) + 1) * size[i] > budget:
            batches.append(cur)
            cur = []
        cur.append(int(i))
    if cur:
        batches.append(cur)
    return batches
