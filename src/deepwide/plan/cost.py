"""``python -m deepwide plan cost``: GPU-hours per stage from measured throughputs.

Figures (``--figures``, JSON): ``targets`` and ``distill`` (audio seconds per second of the
teacher forward and of a KD step) and ``rows`` as ``benchmarks/superb_throughput.py``
writes them (per (task, upstream): ``reference`` = s3prl's one-lr-per-job loop, ``ours`` =
the shared-pass sweep, both in training audio seconds per second per lr). Each figure
file names the machine it was measured on. The default figures
(:data:`DEFAULT_FIGURES`) say where every number comes from.

SUPERB per (upstream, task): ``steps x batch x accumulation x mean utterance seconds``
of training audio per head; one-job-per-lr costs that over the ``reference`` rate for every
(lr, seed) head; ours over the ``ours`` rate. Tasks without a benchmark row use the row of
the same head family (frame level: PR; utterance level: SID or KS).
"""

from __future__ import annotations

import json
from pathlib import Path

from deepwide.errors import DeepwideError
from deepwide.superb.tasks import get_task

LIBRISPEECH_HOURS = {"train-clean-100": 100.6, "train-clean-360": 363.6, "train-other-500": 496.7}

DEFAULT_FIGURES = {
    "machine": "NVIDIA H100 (the project's KD and teacher-forward measurements, batch 24 x 12 s)",
    "targets": 7200.0,  # teacher forward alone, audio-s/s (H100, measured by the project)
    "distill": {"cached": 3900.0, "online": 2600.0},  # reference KD step 2,600; cached targets 1.5x
    "rows_source": (
        "SUPERB rows: reference = the teacher-forward rate above (s3prl's head loop on a frozen upstream is bound by "
        "the upstream forward; HuBERT Base sized upstream, H100); ours = reference x the ratio measured by "
        "benchmarks/superb_throughput.py --quick on this repository's 2-core CPU machine (26.87 M 12x384 rows). "
        "Replace with a --device cuda run of the benchmark: --figures superb_throughput.json"
    ),
    "rows": [
        {"task": "pr", "upstream": "12x384", "reference": 7200.0, "ours": 7200.0 * 2.87},
        {"task": "sid", "upstream": "12x384", "reference": 7200.0, "ours": 7200.0 * 3.67},
        {"task": "ks", "upstream": "12x384", "reference": 7200.0, "ours": 7200.0 * 2.5},
    ],
}


def load_figures(path: str | Path | None) -> dict:
    if path is None:
        return DEFAULT_FIGURES
    p = Path(path)
    if not p.is_file():
        raise DeepwideError(f"plan cost --figures: {p} not found")
    fig = json.loads(p.read_text())
    if "rows" not in fig or "machine" not in fig:
        raise DeepwideError(f"plan cost --figures: {p} needs 'rows' and 'machine' (benchmarks/superb_throughput.py's JSON)")
    return {**{k: v for k, v in DEFAULT_FIGURES.items() if k not in ("rows", "machine", "rows_source")}, **fig}


def _row(fig: dict, task: str) -> dict:
    row_for = get_task(task).cost_row
    rows = [r for r in fig["rows"] if r["task"] == row_for]
    if not rows:
        raise DeepwideError(f"plan cost: figures have no {row_for!r} row (for task {task})")
    big = [r for r in rows if r["upstream"] != "small"]  # the study's students/teacher are 26.87 M class or larger
    return (big or rows)[0]


def cost(study, fig: dict) -> dict:
    """GPU-hours per stage for ``study`` (a :class:`deepwide.plan.Study`)."""
    out: dict = {"machine": fig["machine"], "stages": []}
    d = study.dcfg
    hours = sum(LIBRISPEECH_HOURS.get(s, 0.0) for s in d.get("splits", []))
    cached = [m for m in study.methods if study.method_cached(m)]
    t_targets = len(cached) * hours * 3600 / float(fig["targets"]) / 3600
    out["stages"].append({"stage": "targets", "jobs": len(cached), "ours": t_targets, "per_lr": t_targets})
    tr = d["train"]
    audio = float(tr["steps"]) * float(tr["batch_seconds"])
    t_distill = sum(audio / float(fig["distill"]["cached" if j.cached else "online"]) for j in study.student_jobs) / 3600
    out["stages"].append({"stage": "distill", "jobs": len(study.student_jobs), "ours": t_distill, "per_lr": t_distill})
    for task in study.superb_tasks:
        n_up = sum(1 for u in study.upstreams if study.evaluates(u, task))
        t = study.scfg[task]
        heads = len(study.superb_heads(task))
        folds = len(get_task(task).folds(t))
        head_audio = float(t["total_steps"]) * float(t["batch_size"]) * float(t.get("gradient_accumulate") or 1) * get_task(task).utterance_seconds * folds
        row = _row(fig, task)
        ref = n_up * heads * head_audio / float(row["reference"]) / 3600
        ours_rate = float(row["ours"]) if heads > 1 else float(row["reference"])
        ours = n_up * heads * head_audio / ours_rate / 3600
        out["stages"].append({"stage": f"superb {task}", "jobs": n_up, "jobs_per_lr": n_up * heads, "ours": ours, "per_lr": ref})
    out["total_ours"] = sum(s["ours"] for s in out["stages"])
    out["total_per_lr"] = sum(s["per_lr"] for s in out["stages"])
    return out


def format_cost(c: dict) -> str:
    lines = [f"GPU-hours per stage (figures: {c['machine']})",
             f"{'stage':14s} {'jobs':>6s} {'ours':>10s} {'one-job-per-lr':>15s}"]
    for s in c["stages"]:
        jobs = f"{s['jobs']}" + (f"/{s['jobs_per_lr']}" if "jobs_per_lr" in s else "")
        lines.append(f"{s['stage']:14s} {jobs:>6s} {s['ours']:10.1f} {s['per_lr']:15.1f}")
    lines.append(f"{'total':14s} {'':>6s} {c['total_ours']:10.1f} {c['total_per_lr']:15.1f}")
    return "\n".join(lines)
