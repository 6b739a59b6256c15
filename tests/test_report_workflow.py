"""The report rules in a real Snakemake run on a tiny study tree.

A throwaway workflow folder links this repo's ``src/`` and ``workflow/`` and includes only
the report rules; the Study of its config names every input, and the test writes them at
those paths: fixture result.json files, real checkpoints, info.json and the held-out
manifest from ``report_fixtures``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import report_fixtures as fx

SNAKEFILE = """\
configfile: "config.yaml"
include: "workflow/rules/common.smk"
include: "workflow/rules/report.smk"
rule all:
    input: STUDY.report_outputs
    default_target: True
"""


def write_study_inputs(cfg: dict) -> None:
    """What the report reads, at the paths the Study names: checkpoints, info.json, results."""
    import copy
    import json

    import numpy as np

    from deepwide.models.arch import build_model
    from deepwide.models.checkpoint import save_checkpoint
    from deepwide.plan import Study

    study = Study.from_config(copy.deepcopy(cfg))
    save_checkpoint(study.teacher_ckpt, build_model(fx.TEACHER), fx.TEACHER, {"kind": "test"})
    # the pretrained teacher's info.json: its first-vs-last-layer CKA feeds the report's warning
    (Path(study.teacher_dir) / "info.json").write_text(json.dumps({"cka_first_last": 0.95}))
    dims = {"fbank": (0, 0), "teacher": (fx.TEACHER.depth, fx.TEACHER.width)}
    for j in study.student_jobs:
        arch = study.students[j.shape]
        model = build_model(arch)
        save_checkpoint(study.student_ckpt(j), model, arch, {"method": j.method})
        fx.write_kd_heads(study.student_ckpt(j), j.method, [(k, t) for k, t in zip(range(1, arch.depth + 1), j.layers)],
                          arch.width, fx.TEACHER.width)
        Path(study.student_info(j.upstream)).write_text(json.dumps({
            "params": sum(p.numel() for p in model.parameters()), "arch": arch.to_dict(), "wall_time_s": 1.0}))
        dims[j.upstream] = (arch.depth, arch.width)
    for job in study.superb_jobs:
        metric, higher = fx.TASKS[job.task.upper()]
        depth, width = dims[job.upstream]
        q = fx.metric_value(job.task.upper(), job.upstream, depth, width, job.seed, float(job.lr))
        score = q if higher else 1 - q
        w = np.ones(depth + 1) / (depth + 1)
        path = Path(study.superb_result(job.upstream, job.task, job.lr, job.seed))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "upstream": job.upstream, "task": job.task, "lr": float(job.lr), "seed": job.seed, "metric": metric,
            "unit": "%", "higher_is_better": higher, "dev_score": 100 * score, "best_step": 100,
            "test_score": 100 * score, "layer_weights": w.tolist(), "runtime_s": 1.0, "device": "cpu"}))
    for up, task in study.superb_sweeps:  # each SUPERB job's declared output, beside its heads' results
        Path(study.superb_heads_file(up, task)).write_text(json.dumps({"upstream": up, "task": task, "heads": [
            {"lr": lr, "seed": s, "result": study.superb_result(up, task, lr, s)} for lr, s in study.superb_heads(task)]}))


def _snakemake(wf, *args, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(wf / "src"), MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--directory", str(wf), "-s", str(wf / "Snakefile"), *args]
    proc = subprocess.run(cmd, cwd=wf, env=env, capture_output=True, text=True, timeout=timeout)
    return proc


@pytest.mark.slow
def test_report_rules_run_rerun_and_html(tmp_path, repo_root):
    wf = tmp_path / "wf"
    wf.mkdir()
    (wf / "src").symlink_to(repo_root / "src")
    (wf / "workflow").symlink_to(repo_root / "workflow")
    (wf / "envs").symlink_to(repo_root / "envs")  # the rules' conda: env, recorded in metadata
    results = tmp_path / "results"
    results.mkdir()
    fx.write_manifest(results, n=2)
    t = fx.TEACHER
    cfg = {"results": str(results),
           "teacher": {"pretrain": {"arch": {"depth": t.depth, "width": t.width, "ffn": t.ffn, "heads": t.heads,
                                             "conv_channels": 16, "pos_conv_kernel": 8, "pos_conv_groups": 4}}},
           "distill": {"methods": ["l2l"], "students": {"conv_channels": 16, "pos_conv_kernel": 8, "pos_conv_groups": 4,
                                                         "shapes": [{"depth": 4, "width": 32, "ffn": 64, "heads": 2}]}},
           "superb": {"tasks": ["pr", "ks", "sid"], "pr": {"lr": [1e-4, 1e-3]}, "ks": {"lr": [1e-4, 1e-3]},
                      "sid": {"lr": [1e-4, 1e-3]}},
           "report": {"cost": {"utterances": 2, "repeats": 1}, "cka": {"utterances": 2, "max_frames": 200},
                      "figures": {"dpi": 60}}}
    write_study_inputs(cfg)
    (wf / "config.yaml").write_text(yaml.safe_dump(cfg))
    (wf / "Snakefile").write_text(SNAKEFILE)

    proc = _snakemake(wf)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = results / "report"
    for name in ("depth", "heatmap", "layer_weights", "cka", "pareto", "kd_loss"):
        assert (report / "figures" / f"{name}.png").stat().st_size > 1000
        assert (report / "figures" / f"{name}.pdf").is_file()
    for name in ("results", "grid", "families", "score", "trend", "guard", "verdict", "kd_loss"):
        for ext in ("md", "csv", "tex"):
            assert (report / "tables" / f"{name}.{ext}").is_file()
    assert sorted(p.stem for p in (report / "cost").glob("*.json")) == ["l2l-4x32f64h2-seed0", "teacher"]
    assert sorted(p.stem for p in (report / "cka").glob("*.parquet")) == ["l2l-4x32f64h2-seed0"]
    for rule in ("report_cost", "report_cka", "report_kdloss", "report_collect", "report_tables", "report_figures"):
        assert (results / "logs" / rule).is_dir(), rule

    # nothing left to do; a figure option changes only the figure rule
    proc = _snakemake(wf, "-n")
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr
    cfg["report"]["figures"]["dpi"] = 72
    (wf / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = _snakemake(wf, "-n")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "report_figures" in out
    for other in ("report_tables", "report_collect", "report_cost", "report_cka", "report_kdloss"):
        assert other not in out, out[-3000:]
    # a table option reruns only the table rule
    cfg["report"]["figures"]["dpi"] = 60
    cfg["report"]["tables"] = {"include_published": False}
    (wf / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = (p := _snakemake(wf, "-n")).stdout + p.stderr
    assert "report_tables" in out and "report_figures" not in out and "report_collect" not in out

    # the HTML report with every figure and table, captioned
    html = tmp_path / "report.html"
    cfg["report"]["tables"] = {"include_published": True}
    (wf / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = _snakemake(wf, "--report", str(html))
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = html.read_text(errors="replace")
    assert len(text) > 10_000
    for needle in ("layer_weights.png", "pareto.png", "score.csv", "Linear CKA", "Pareto front"):
        assert needle in text, needle
