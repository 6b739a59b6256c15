"""Timing that holds still on a shared machine: reference and ours interleaved, repeated.

Each repeat runs the reference, then ours (ABAB...), so a change in the machine's load
falls on both sides of the same ratio. A ratio is taken per repeat, and the summary is the
median with its min and max. On CPU the ratio uses this process's CPU time (all its
threads: ``time.process_time``), which other users' load changes far less than wall time;
wall time is reported beside it. On CUDA wall time is the clock.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass


@dataclass
class Clock:
    """CPU and wall seconds of one timed stretch."""

    cpu: float = 0.0
    wall: float = 0.0

    def __add__(self, other: Clock) -> Clock:
        return Clock(self.cpu + other.cpu, self.wall + other.wall)

    def seconds(self, gpu: bool) -> float:
        """The clock a ratio uses: wall on CUDA, CPU time on CPU."""
        return self.wall if gpu else self.cpu


def now() -> Clock:
    return Clock(time.process_time(), time.perf_counter())


def since(start: Clock) -> Clock:
    end = now()
    return Clock(end.cpu - start.cpu, end.wall - start.wall)


def interleave(reference, ours, repeats: int) -> list[tuple]:
    """[(reference(), ours()) for each repeat], run in the order A B A B ..."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    return [(reference(), ours()) for _ in range(repeats)]


def spread(values: list[float], digits: int = 2) -> dict:
    """Median, min and max of ``values``, rounded."""
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def summarize(pairs: list[tuple[float, float, float, float]], gpu: bool) -> dict:
    """One row's figures from per-repeat (work_ref, clock_ref, work_ours, clock_ours) tuples
    where ``clock_*`` are :class:`Clock` and ``work_*`` the amount processed (audio seconds).

    ``reference``/``ours``: median throughput (work per second of the ratio's clock);
    ``ratio``: median of the per-repeat ratios ours / reference, with ``ratio_min``/``ratio_max``;
    ``wall_ratio``: the same from wall time (on CUDA equal to ``ratio``)."""
    ref = [w / c.seconds(gpu) for w, c, _, _ in pairs]
    our = [w / c.seconds(gpu) for _, _, w, c in pairs]
    ratios = [o / r for o, r in zip(our, ref)]
    wall = [(wo / co.wall) / (wr / cr.wall) for wr, cr, wo, co in pairs]
    rs = spread(ratios)
    return {"reference": round(statistics.median(ref), 2), "ours": round(statistics.median(our), 2),
            "ratio": rs["median"], "ratio_min": rs["min"], "ratio_max": rs["max"],
            "wall_ratio": round(statistics.median(wall), 2), "repeats": len(pairs),
            "ratios": [round(x, 3) for x in ratios]}
