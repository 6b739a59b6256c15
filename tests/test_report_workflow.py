"""The report rules in a real Snakemake run on a tiny study tree.

A throwaway workflow folder links this repo's ``src/`` and ``workflow/`` and defines
``SUPERB_RESULTS`` (as superb.smk does) over fixture result.json files; checkpoints,
info.json and the held-out manifest are real files from ``report_fixtures``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

import report_fixtures as fx

SNAKEFILE = """\
configfile: "config.yaml"
include: "workflow/rules/common.smk"
include: "workflow/rules/resources.smk"
SUPERB_RESULTS = {results!r}
include: "workflow/rules/report.smk"
rule all:
    input: ALL_TARGETS
    default_target: True
"""


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
    results = tmp_path / "results"
    results.mkdir()
    fx.write_manifest(results, n=2)
    fx.write_checkpoints(results)
    ups = {"fbank": (0, 0), "teacher": (4, 64), "l2l-4x32f64h2": (4, 32)}
    paths = fx.write_results(results, ups, lrs=(1e-4, 1e-3))
    cfg = {"results": str(results),
           "report": {"cost": {"utterances": 2, "repeats": 1}, "cka": {"utterances": 2, "max_frames": 200},
                      "figures": {"dpi": 60}}}
    (wf / "config.yaml").write_text(yaml.safe_dump(cfg))
    (wf / "Snakefile").write_text(SNAKEFILE.format(results=[str(p) for p in paths]))

    proc = _snakemake(wf)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = results / "report"
    for name in ("depth", "heatmap", "layer_weights", "cka", "pareto"):
        assert (report / "figures" / f"{name}.png").stat().st_size > 1000
        assert (report / "figures" / f"{name}.pdf").is_file()
    for name in ("results", "grid", "families", "score", "trend"):
        for ext in ("md", "csv", "tex"):
            assert (report / "tables" / f"{name}.{ext}").is_file()
    assert sorted(p.stem for p in (report / "cost").glob("*.json")) == ["l2l-4x32f64h2", "teacher"]
    assert sorted(p.stem for p in (report / "cka").glob("*.parquet")) == ["l2l-4x32f64h2"]
    for rule in ("report_cost", "report_cka", "report_collect", "report_tables", "report_figures"):
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
    for other in ("report_tables", "report_collect", "report_cost", "report_cka"):
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
