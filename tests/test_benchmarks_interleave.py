"""benchmarks/interleave.py: A B A B order, per-repeat ratios, median with min-max."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from interleave import Clock, interleave, since, spread, summarize


def test_interleave_runs_reference_then_ours_each_repeat():
    order = []
    out = interleave(lambda: order.append("A") or "a", lambda: order.append("B") or "b", 3)
    assert order == ["A", "B", "A", "B", "A", "B"]
    assert out == [("a", "b")] * 3
    with pytest.raises(ValueError):
        interleave(lambda: 0, lambda: 0, 0)


def test_summarize_uses_cpu_time_on_cpu_and_wall_on_cuda():
    # 10 s of audio each side; ours twice, four times, three times as fast by CPU time
    pairs = [(10.0, Clock(cpu=2.0, wall=4.0), 10.0, Clock(cpu=1.0, wall=1.0)),
             (10.0, Clock(cpu=2.0, wall=2.0), 10.0, Clock(cpu=0.5, wall=2.0)),
             (10.0, Clock(cpu=3.0, wall=3.0), 10.0, Clock(cpu=1.0, wall=1.0))]
    s = summarize(pairs, gpu=False)
    assert (s["ratio"], s["ratio_min"], s["ratio_max"], s["repeats"]) == (3.0, 2.0, 4.0, 3)
    assert s["ratios"] == [2.0, 4.0, 3.0]
    assert s["reference"] == 5.0 and s["ours"] == 10.0  # median throughputs (audio s per s)
    assert s["wall_ratio"] == 3.0  # walls: 4, 1, 3
    g = summarize(pairs, gpu=True)
    assert g["ratio"] == g["wall_ratio"] == 3.0 and (g["ratio_min"], g["ratio_max"]) == (1.0, 4.0)


def test_clock_adds_and_measures():
    c = Clock(1.0, 2.0) + Clock(0.5, 0.25)
    assert (c.cpu, c.wall) == (1.5, 2.25)
    assert c.seconds(gpu=False) == 1.5 and c.seconds(gpu=True) == 2.25
    d = since(Clock(0.0, 0.0))
    assert d.cpu >= 0 and d.wall >= 0
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}
