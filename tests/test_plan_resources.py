"""Measured resources (deepwide.utils.usage in every info/result JSON) and `plan resources`:
requests of the config's `resources` against them, on the unedited paper.yaml without data."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd

from deepwide.cli import main
from deepwide.plan import Study
from deepwide.utils.io import write_parquet
from deepwide.utils.usage import PARQUET_INFO_KEY, usage

# the rules that run a model (teacher, student, upstream) and so may use a GPU; every other
# rule (corpora, teacher import, lexicon, select, report collect/tables/figures) must not ask
GPU_RULES = {"teacher_pretrain", "targets", "distill", "superb_run", "superb_qbe", "report_cost", "report_cka", "report_kdloss"}


def test_usage_records_own_and_children_peak_rss_and_wall():
    before = usage()
    assert before["peak_rss_mb"] > 10 and before["wall_s"] > 0
    subprocess.run([sys.executable, "-c", "x = bytearray(300 * 2**20); x[::4096] = b'1' * len(x[::4096])\n"
                    "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"], check=True)
    after = usage()
    assert after["peak_rss_children_mb"] >= 300
    assert after["cpu_s"] >= before["cpu_s"] + 0.3  # the child's CPU seconds count too
    assert after["wall_s"] >= before["wall_s"]
    assert "cuda_max_allocated_mb" in after  # null unless CUDA was used in this process
    json.dumps(after)


def test_only_model_rules_ask_for_a_gpu(repo_root):
    paper = Study.from_file(repo_root / "workflow" / "configs" / "paper.yaml", plan=True)
    smoke = Study.from_file(repo_root / "config.yaml", plan=True)
    classes = {**smoke.rule_classes(), **paper.rule_classes()}
    assert {r for r, gpu in classes.items() if gpu} <= GPU_RULES
    assert {"distill", "superb_run", "report_cost"} <= {r for r, gpu in classes.items() if gpu}
    assert not classes["teacher_import"] and not classes["report_tables"] and not classes["superb_select"]
    assert any(r.startswith("synth_") and not gpu for r, gpu in classes.items())


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_plan_resources_paper_against_a_measured_run(repo_root, tmp_path, capsys):
    paper = repo_root / "workflow" / "configs" / "paper.yaml"
    study = Study.from_file(paper, plan=True)
    shape = next(j.shape for j in study.student_jobs if j.shape.startswith("12x384"))
    run = tmp_path / "run"
    # a CUDA student of a study shape: 1000 audio-s trained in 100 s (+ 20 s set-up), 80 GB RSS
    _write(run / "students" / "pred" / shape / "seed0" / "info.json",
           {"device": "cuda:0", "audio_seconds": 1000.0, "train_seconds": 100.0,
            "usage": {"peak_rss_mb": 70000.0, "peak_rss_children_mb": 10000.0, "cuda_max_allocated_mb": 30000.0, "wall_s": 120.0}})
    # a CPU SUPERB job with a small RSS: memory >4x, wall not scaled
    _write(run / "superb" / "teacher" / "ks" / "heads.json",
           {"usage": {"peak_rss_mb": 2000.0, "peak_rss_children_mb": 0.0, "cuda_max_allocated_mb": None, "wall_s": 50.0}})
    _write(run / "superb" / "teacher" / "ks" / "unrelated.json", {"usage": {"wall_s": 1}})  # not a rule's file
    # CKA tables: the usage in the Parquet metadata; a table written before it was recorded has none
    (run / "report" / "cka").mkdir(parents=True)
    table = pd.DataFrame({"student_layer": [0], "teacher_layer": [0], "cka": [1.0]})
    cka = {"usage": {"peak_rss_mb": 3000.0, "peak_rss_children_mb": 0.0, "cuda_max_allocated_mb": 900.0, "wall_s": 30.0},
           "device": "cuda"}
    write_parquet(table, run / "report" / "cka" / "pred-2x768-seed0.parquet", metadata={PARQUET_INFO_KEY: json.dumps(cka)})
    write_parquet(table, run / "report" / "cka" / "l2l-2x768-seed0.parquet")
    _write(run / "report" / "kd_loss" / "pred-2x768-seed0.parquet", {"usage": {}})  # not Parquet: not measured
    out_json = tmp_path / "rows.json"
    assert main(["plan", "resources", "--config", str(paper), "--measured", str(run), "--json", str(out_json)]) == 0
    cap = capsys.readouterr()
    assert "warning: config key teacher.import.path" in cap.err  # no data here: warnings, not an error
    rows = {r["rule"]: r for r in json.loads(out_json.read_text())}
    d = rows["distill"]
    assert d["jobs_measured"] == 1 and d["peak_rss_mb"] == 80000.0 and d["cuda_max_allocated_mb"] == 30000.0
    tr = study.dcfg["train"]
    ratio = tr["steps"] * tr["batch_seconds"] / 1000.0
    assert d["wall_study_s"] == round(20 + 100 * ratio, 1) and "scaled x" in d["scaling"]
    assert any(f.startswith("mem LOW") for f in d["flags"])  # 64000 MB < 80000 x 1.5
    s = rows["superb_run"]
    assert s["wall_study_s"] is None and "not scaled (measured on an unknown device" in s["scaling"]
    assert any(f.startswith("mem >4x") for f in s["flags"]) and not any("runtime" in f for f in s["flags"])
    assert rows["report_tables"]["scaling"] == "no measurement" and rows["report_tables"]["request_gpu"] == 0
    c = rows["report_cka"]
    assert (c["jobs_measured"], c["peak_rss_mb"], c["cuda_max_allocated_mb"], c["wall_s"]) == (1, 3000.0, 900.0, 30.0)
    assert rows["report_kdloss"]["jobs_measured"] == 0
    assert "distill" in cap.out and "mem LOW" in cap.out
    # the same jobs measured in a rehearsal (cut sizes): memory is a floor, LOW only
    (run / "config.yaml").write_text("rehearsal: {of: paper}\n")
    assert main(["plan", "resources", "--config", str(paper), "--measured", str(run), "--json", str(out_json)]) == 0
    capsys.readouterr()
    floor = {r["rule"]: r for r in json.loads(out_json.read_text())}
    assert not any(f.startswith("mem >4x") for f in floor["superb_run"]["flags"])
    assert "memory at the rehearsal's sizes: a floor, LOW only" in floor["superb_run"]["scaling"]
    assert any(f.startswith("mem LOW") for f in floor["distill"]["flags"])
    # a larger safety factor or no measurement at all
    assert main(["plan", "resources", "--config", str(paper)]) == 0
    assert "nothing measured" in capsys.readouterr().out


def test_measurements_name_the_rule_that_wrote_each_record(repo_root, tmp_path, capsys):
    """teacher/info.json counts for the rule its ``source`` names; a rehearsal's random teacher
    stands in for a missing import; manifests/<corpus>/info.json measures prepare_<corpus>; an
    older heads.json without a device takes its first head's."""
    from deepwide.plan.resources import measurements

    run = tmp_path / "run"
    _write(run / "teacher" / "info.json", {"source": "random", "device": "cpu",
                                           "usage": {"peak_rss_mb": 1700.0, "peak_rss_children_mb": 0.0, "wall_s": 6.0}})
    _write(run / "manifests" / "librispeech" / "info.json", {"counts": {"dev-clean": 3},
                                                              "usage": {"peak_rss_mb": 2500.0, "wall_s": 2.0}})
    head = run / "superb" / "fbank" / "pr" / "lr0.01" / "seed0" / "result.json"
    _write(head, {"device": "cpu", "usage": {"peak_rss_mb": 1.0, "wall_s": 1.0}})
    _write(run / "superb" / "fbank" / "pr" / "heads.json", {"heads": [{"result": str(head)}],
                                                            "usage": {"peak_rss_mb": 1200.0, "wall_s": 5.0}})
    for sidecar in ("report/collect", "report/tables", "report/figures"):
        _write(run / sidecar / "usage.json", {"usage": {"peak_rss_mb": 500.0, "wall_s": 1.0}})
    meas = measurements(run)
    for rule in ("report_collect", "report_tables", "report_figures"):
        assert meas[rule][0]["usage"]["peak_rss_mb"] == 500.0, rule
    assert [m["path"].name for m in meas["teacher_random"]] == ["info.json"]
    assert "teacher_import" not in meas and "teacher_pretrain" not in meas
    assert meas["prepare_librispeech"][0]["usage"]["peak_rss_mb"] == 2500.0
    assert meas["superb_run"][0]["info"]["device"] == "cpu"

    out_json = tmp_path / "rows.json"
    paper = repo_root / "workflow" / "configs" / "paper.yaml"
    assert main(["plan", "resources", "--config", str(paper), "--measured", str(run), "--json", str(out_json)]) == 0
    capsys.readouterr()
    rows = {r["rule"]: r for r in json.loads(out_json.read_text())}
    imp = rows["teacher_import"]  # paper.yaml imports its teacher; the rehearsal drew a random one
    assert imp["jobs_measured"] == 1 and imp["peak_rss_mb"] == 1700.0
    assert imp["scaling"].startswith("measured as teacher_random (the rehearsal's stand-in)")
    assert rows["prepare_librispeech"]["peak_rss_mb"] == 2500.0 and rows["prepare_librispeech"]["flags"] == []
    assert "measured on cpu" in rows["superb_run"]["scaling"]


def test_prepare_records_its_usage(tmp_path):
    from deepwide.corpus.prepare import _write_info

    _write_info(tmp_path, {"counts": {"train": 1}})
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["counts"] == {"train": 1} and info["usage"]["peak_rss_mb"] > 0 and info["usage"]["wall_s"] > 0


def test_the_cost_model_sets_a_floor_under_gpu_runtimes(repo_root, tmp_path):
    """distill and superb_run carry the cost model's training seconds of their costliest job
    (plan cost's figures); a runtime request below it x safety is LOW, even with nothing measured."""
    from deepwide.plan.cost import DEFAULT_FIGURES, cost
    from deepwide.plan.resources import compare

    paper = repo_root / "workflow" / "configs" / "paper.yaml"
    study = Study.from_file(paper, plan=True)
    rows = {r["rule"]: r for r in compare(study, tmp_path / "nothing", 1.5)}
    stages = {s["stage"]: s for s in cost(study, DEFAULT_FIGURES)["stages"]}
    d = stages["distill"]
    assert rows["distill"]["model_s"] == round(d["ours"] * 3600 / d["jobs"], 1)
    worst = max((s for k, s in stages.items() if k.startswith("superb ")), key=lambda s: s["ours"] / s["jobs"])
    assert rows["superb_run"]["model_s"] == round(worst["ours"] * 3600 / worst["jobs"], 1)
    assert rows["superb_run"]["model_job"] == worst["stage"] and rows["superb_select"]["model_s"] is None
    assert not any("cost model" in f for r in rows.values() for f in r["flags"])  # paper.yaml's requests clear it
    short = Study.from_file(paper, overrides={"resources": {"rules": {"superb_run": {"runtime": 30}}}}, plan=True)
    flags = {r["rule"]: r["flags"] for r in compare(short, tmp_path / "nothing", 1.5)}
    assert [f for f in flags["superb_run"] if f.startswith("runtime LOW vs cost model (30 min")]
