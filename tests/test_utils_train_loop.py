"""The training-loop pieces the teacher and the students share (deepwide.utils.train_loop)."""

from __future__ import annotations

import pytest
import torch

from deepwide.utils import train_loop


def lrs(steps: int, warmup: float) -> list[float]:
    """The lr multiplier each of ``steps`` optimizer steps trains with, through LambdaLR."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = train_loop.linear_schedule(opt, steps, warmup)
    out = []
    for _ in range(steps):
        out.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return out


def test_warmup_then_linear_decay_to_zero():
    assert lrs(10, 0.2) == pytest.approx([0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])
    f = train_loop.lr_lambda(10, 0.2)
    assert f(10) == 0.0 and f(11) == 0.0  # past the end: zero, never negative


@pytest.mark.parametrize("steps,warmup", [(10, 0.0), (4, 0.1), (6, 0.07)])
def test_warmup_of_zero_steps_is_none(steps, warmup):
    """A warm-up that rounds to 0 steps (4 x 0.1, 6 x 0.07) is no warm-up: the full lr at the
    first step, then a linear decay that reaches 1/steps at the last step (the teacher once
    forced one warm-up step here, the students did not; one behaviour for both now)."""
    got = lrs(steps, warmup)
    assert got == pytest.approx([(steps - s) / steps for s in range(steps)])
    assert got[0] == 1.0


def test_whole_run_of_warmup():
    assert lrs(4, 1.0) == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_optimizer_step_clips_and_steps_the_schedule():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = train_loop.linear_schedule(opt, 4, 0.0)
    gnorm = train_loop.optimizer_step((p * torch.tensor([3.0, 4.0, 0.0])).sum(), [p], opt, sched, clip=1.0)
    assert gnorm == pytest.approx(5.0)  # the norm before clipping
    assert p.detach().tolist() == pytest.approx([-0.6, -0.8, 0.0])  # clipped to norm 1, lr 1
    assert sched.get_last_lr()[0] == pytest.approx(0.75)
    # the next step starts from fresh gradients (zeroed before backward)
    train_loop.optimizer_step(p.sum() * 0.0, [p], opt, sched, clip=1.0)
    assert p.detach().tolist() == pytest.approx([-0.6, -0.8, 0.0])


def test_due_every_and_at_the_end():
    assert [s for s in range(1, 12) if train_loop.due(s, 5, 11)] == [5, 10, 11]


def test_save_state_is_atomic_and_loads(tmp_path):
    path = tmp_path / "state.pt"
    train_loop.save_state(path, {"step": 3, "x": torch.arange(4)})
    st = train_loop.load_state(path)
    assert st["step"] == 3 and torch.equal(st["x"], torch.arange(4))
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temporary left behind
