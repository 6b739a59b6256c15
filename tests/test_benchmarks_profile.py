"""benchmarks/pipeline_profile.py on a small generated Snakemake log."""

import json
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import pipeline_profile as pp

from deepwide.utils.io import write_parquet
from deepwide.utils.usage import PARQUET_INFO_KEY

T0 = datetime(2026, 12, 7, 0, 31, 5)


def _stamp(s: float) -> str:
    return (T0 + timedelta(seconds=s)).strftime("[%a %b %e %H:%M:%S %Y]")


def _start(s, rule, jobid, inputs=(), outputs=(), threads=1, local=True):
    lines = [_stamp(s), f"{'local' if local else ''}rule {rule}:"]
    if inputs:
        lines.append("    input: " + ", ".join(inputs))
    if outputs:
        lines.append("    output: " + ", ".join(outputs))
    lines.append(f"    jobid: {jobid}")
    lines.append("    reason: Missing output files: x")
    if threads != 1:
        lines.append(f"    threads: {threads}")
    lines.append("    resources: tmpdir=/tmp")
    return lines


def _end(s, jobid, rule):
    return [_stamp(s), f"Finished jobid: {jobid} (Rule: {rule})", "1 of 6 steps (17%) done"]


def make_log(complete=True) -> str:
    """synth (0-10 s) -> prepare (10-15) -> train (15-75, 2 threads) -> all; side (10-30) -> all;
    broken fails at 40 s."""
    lines = ["Building DAG of jobs...", "Provided cores: 2", "Select jobs to execute...", "Execute 1 jobs..."]
    lines += _start(0, "synth", 1, outputs=["results/corpora/ls"])
    lines += _end(10, 1, "synth")
    lines += _start(10, "prepare", 2, inputs=["results/corpora/ls/train"], outputs=["results/man/train.parquet"])
    lines += _start(10, "side", 3, inputs=["results/corpora/ls"], outputs=["results/side.json"], local=False)
    lines += _end(15, 2, "prepare")
    lines += _start(15, "train", 4, inputs=["results/man/train.parquet"], outputs=["results/model/info.json"], threads=2)
    lines += _end(30, 3, "side")
    lines += _start(30, "broken", 5, inputs=["results/side.json"], outputs=["results/broken.json"])
    lines += [_stamp(40), "Error in rule broken:", "    message: None", "    jobid: 5",
              "    input: results/side.json", "    output: results/broken.json"]
    lines += _end(75, 4, "train")
    if complete:
        lines += _start(75, "all", 0, inputs=["results/model/info.json", "results/side.json"])
        lines += _end(75, 0, "all")
        lines += ["6 of 6 steps (100%) done", "Complete log(s): x"]
    return "\n".join(lines) + "\n"


def test_parse_log_reads_jobs_times_threads_and_files():
    p = pp.parse_log(make_log())
    assert p["cores"] == 2 and p["complete"]
    jobs = p["jobs"]
    assert sorted(jobs) == [0, 1, 2, 3, 4, 5]
    assert (jobs[1]["rule"], jobs[1]["start"], jobs[1]["end"]) == ("synth", 0, 10)
    assert (jobs[4]["start"], jobs[4]["end"], jobs[4]["threads"]) == (15, 75, 2)
    assert jobs[3]["rule"] == "side"  # a non-local rule
    assert jobs[2]["inputs"] == ["results/corpora/ls/train"]
    assert jobs[0]["inputs"] == ["results/model/info.json", "results/side.json"]
    assert jobs[5]["failed"] and jobs[5]["end"] == 40
    assert not jobs[4]["failed"]


def test_parse_log_without_jobs_is_an_error():
    with pytest.raises(pp.ProfileError, match="no job starts"):
        pp.parse_log("Building DAG of jobs...\nNothing to be done.\n")


def test_critical_path_follows_inputs_inside_output_folders():
    jobs = pp.parse_log(make_log())["jobs"]
    # synth 10 + prepare 5 + train 60 + all 0 beats synth + side 20 + broken 10
    assert pp.critical_path(jobs) == [1, 2, 4, 0]


def test_profile_per_rule(tmp_path):
    run = tmp_path / "run"
    (run / "results/model").mkdir(parents=True)
    (run / "results/model/info.json").write_text(json.dumps(
        {"usage": {"peak_rss_mb": 100.0, "peak_rss_children_mb": 20.0, "wall_s": 59.0, "cpu_s": 90.0}}))
    (run / "results/side.json").write_text(json.dumps({"usage": {"peak_rss_mb": 50.0, "wall_s": 20.0}}))
    # a Parquet output: the usage in its metadata
    write_parquet(pd.DataFrame({"x": [1]}), run / "results/t.parquet",
                  metadata={PARQUET_INFO_KEY: json.dumps({"usage": {"peak_rss_mb": 7.0, "wall_s": 2.0}})})
    assert pp.job_usage(run, {"outputs": ["results/t.parquet"]}) == {"peak_rss_mb": 7.0, "wall_s": 2.0}
    log = tmp_path / "x.snakemake.log"
    log.write_text(make_log())
    p = pp.profile(run, log)
    rules = {r["rule"]: r for r in p["rules"]}
    assert p["elapsed_s"] == 75 and p["critical_path_s"] == 75
    assert [c["rule"] for c in p["critical_path"]] == ["synth", "prepare", "train", "all"]
    t = rules["train"]
    assert (t["jobs"], t["wall_s"], t["core_s"], t["cpu_s"], t["measured"]) == (1, 60, 120, 90.0, 1)
    assert t["cpu_share"] == 0.75 and t["peak_rss_mb"] == 120.0
    assert (t["path_jobs"], t["path_s"], t["path_share"]) == (1, 60, 0.8)
    s = rules["side"]
    assert s["cpu_s"] is None and s["cpu_share"] is None and s["peak_rss_mb"] == 50.0 and s["path_jobs"] == 0
    assert rules["broken"]["failed"] == 1 and rules["broken"]["wall_s"] == 10
    # wall x threads over elapsed x cores: (10 + 5 + 20 + 120 + 10) / (75 x 2)
    assert p["scheduler_busy"] == round(165 / 150, 3)
    assert p["rules"][0]["rule"] == "train"  # largest wall first


def test_pick_log_prefers_the_newest_complete_log(tmp_path):
    d = tmp_path / ".snakemake/log"
    d.mkdir(parents=True)
    (d / "2026-12-06T100000.000000.snakemake.log").write_text(make_log())
    (d / "2026-12-07T100000.000000.snakemake.log").write_text(make_log(complete=False))
    assert pp.pick_log(tmp_path).name.startswith("2026-12-06")
    with pytest.raises(pp.ProfileError, match="has no"):
        pp.pick_log(tmp_path / "nowhere")


def test_main_prints_table_and_writes_json(tmp_path, capsys):
    run = tmp_path / "run"
    (run / ".snakemake/log").mkdir(parents=True)
    (run / ".snakemake/log/2026-12-07T003102.252670.snakemake.log").write_text(make_log())
    out = tmp_path / "p.json"
    assert pp.main([str(run), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| train | 1 | 60 |" in text and "critical path: synth(10 s) -> prepare(5 s) -> train(60 s)" in text
    assert json.loads(out.read_text())["jobs"] == 6
    assert pp.main([str(tmp_path / "empty")]) == 2


def _job(rule, start, end, inputs=(), outputs=(), threads=1):
    return {"rule": rule, "start": start, "end": end, "threads": threads, "inputs": list(inputs),
            "outputs": list(outputs), "failed": False}


def test_replay_reproduces_the_run_and_answers_what_if():
    """synth -> teacher -> student, and two FBANK jobs that need only the corpus, run on one
    core in the order synth, fbank, fbank, teacher, student (130 s)."""
    jobs = {1: _job("synth", 0, 10, outputs=["c"]), 2: _job("fbank", 10, 30, ["c/x"], ["f2"]),
            3: _job("fbank", 30, 50, ["c"], ["f3"]), 4: _job("teacher", 50, 110, ["c"], ["t.pt"]),
            5: _job("student", 110, 130, ["t.pt"], ["s"])}
    assert pp.replay(jobs, cores=1) == 130
    # two cores, the run's order: both FBANK jobs first, the teacher waits for a core
    assert pp.replay(jobs, cores=2) == 110
    # two cores, the teacher's chain first: FBANK fills the other core beside it
    assert pp.replay(jobs, cores=2, first={"teacher", "student"}) == 90
    assert pp.replay(jobs, cores=2, scale={"teacher": 0.5}, first={"teacher"}) == 60
    assert pp.replay(jobs, cores=2, scale={"*": 0.5, "teacher": 1.0}, first={"teacher"}) == 75
    # a job claiming both cores runs alone
    assert pp.replay(jobs, cores=2, threads={"teacher": 2}, first={"teacher"}) == 110


def test_main_what_if_and_its_bad_input(tmp_path, capsys):
    run = tmp_path / "run"
    (run / ".snakemake/log").mkdir(parents=True)
    (run / ".snakemake/log/2026-12-07T003102.252670.snakemake.log").write_text(make_log())
    out = tmp_path / "p.json"
    assert pp.main([str(run), "--out", str(out), "--scale", "*=0.5", "--first", "train"]) == 0
    w = json.loads(out.read_text())["what_if"]
    assert w["scale"] == {"*": 0.5} and w["first"] == ["train"] and w["cores"] == 2
    assert w["elapsed_s"] < w["same_run_replayed_s"]
    assert "what-if replay on 2 cores" in capsys.readouterr().out
    assert pp.main([str(run), "--out", str(out), "--scale", "train"]) == 2
    assert "--scale 'train': expected RULE=VALUE" in capsys.readouterr().err


def test_a_select_job_is_not_credited_with_the_usage_its_json_copies(tmp_path):
    out = tmp_path / "results/superb/t/pr/selected.json"
    out.parent.mkdir(parents=True)
    out.write_text(json.dumps({"usage": {"cpu_s": 99.0, "wall_s": 100.0}}))
    job = _job("superb_select", 0, 1, outputs=["results/superb/t/pr/selected.json"])
    assert pp.job_usage(tmp_path, job) is None
    assert pp.job_usage(tmp_path, {**job, "rule": "superb_run"}) == {"cpu_s": 99.0, "wall_s": 100.0}


def test_a_prepare_job_is_measured_by_the_info_json_beside_its_manifests(tmp_path):
    man = tmp_path / "results/manifests/librispeech"
    man.mkdir(parents=True)
    (man / "dev-clean.parquet").write_bytes(b"")
    (man / "info.json").write_text(json.dumps({"counts": {}, "usage": {"cpu_s": 3.0, "wall_s": 4.0}}))
    job = _job("prepare_librispeech", 0, 1, outputs=["results/manifests/librispeech/dev-clean.parquet"])
    assert pp.job_usage(tmp_path, job) == {"cpu_s": 3.0, "wall_s": 4.0}
    assert pp.job_usage(tmp_path, {**job, "rule": "report_collect"}) is None  # only prepare rules read it
    tables = tmp_path / "results/report/tables"
    tables.mkdir(parents=True)
    (tables / "usage.json").write_text(json.dumps({"usage": {"cpu_s": 1.0, "wall_s": 2.0}}))
    collect = tmp_path / "results/report/collect"
    collect.mkdir(parents=True)
    (collect / "usage.json").write_text(json.dumps({"usage": {"cpu_s": 5.0, "wall_s": 6.0}}))
    assert pp.job_usage(tmp_path, _job("report_tables", 0, 1, outputs=["results/report/tables/grid.md"]))["wall_s"] == 2.0
    assert pp.job_usage(tmp_path, _job("report_collect", 0, 1, outputs=["results/report/results.parquet"]))["wall_s"] == 6.0
