"""Growing a finished study plans only what is new (real Snakemake runs on the smoke study).

One smoke study runs to the end once; each test then edits a copy of its config and asks
``snakemake -n`` which jobs it would run: exactly the new jobs and the aggregations that
read them (superb_select, report), nothing already finished. Execution settings (workers,
threads, log and checkpoint cadence, cache sizes) plan nothing at all.
"""

import copy
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SMOKE = REPO / "workflow" / "configs" / "smoke.yaml"
REPORT = ["report_collect", "report_tables", "report_figures", "all"]

pytestmark = pytest.mark.slow


def snakemake(workdir: Path, cfg: dict, *args, timeout=1500):
    path = workdir / f"study-{abs(hash(yaml.safe_dump(cfg))) % 10**8}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(path),
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def planned(workdir: Path, cfg: dict) -> list[tuple[str, list[str]]]:
    """(rule, outputs) of every job ``snakemake -n`` would run."""
    r = snakemake(workdir, cfg, "-n", "--cores", "1")
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    jobs, rule = [], None
    for line in r.stdout.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if m:
            rule = m.group(1)
            jobs.append((rule, []))
        elif rule and line.strip().startswith("output:"):
            jobs[-1][1].extend(s.strip() for s in line.split(":", 1)[1].split(","))
    return jobs


def counts(jobs) -> Counter:
    return Counter(rule for rule, _ in jobs)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    wd = tmp_path_factory.mktemp("study")
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["results"] = str(wd / "results")
    r = snakemake(wd, cfg, "--cores", "2")
    assert r.returncode == 0, r.stderr[-5000:]
    assert planned(wd, cfg) == [], "a finished study plans nothing"
    return wd, cfg


def grown(cfg, edit):
    new = copy.deepcopy(cfg)
    edit(new)
    return new


def test_execution_settings_plan_nothing(finished):
    wd, cfg = finished

    def edit(c):
        c["corpus"]["threads"] = 1
        c["teacher"]["pretrain"]["threads"] = 1
        c["teacher"]["pretrain"]["train"].update(log_every=1, eval_every=2, checkpoint_every=3)
        c["distill"]["targets"]["shard_seconds"] = 7
        c["distill"]["train"].update(num_workers=2, cpu_threads=2, log_every=1, checkpoint_every=5, compile=False)
        c["superb"].update(num_workers=1, threads=2, cache_mb=17, device="cpu")
        c["superb"]["ks"].update(log_step=1, save_step=2)

    assert planned(wd, grown(cfg, edit)) == []


def test_adding_an_lr_plans_only_its_jobs(finished):
    wd, cfg = finished
    jobs = planned(wd, grown(cfg, lambda c: c["superb"]["ks"].update(lr=[0.001, 0.01])))
    n_up = 2 + 4  # teacher, fbank, 4 students
    # one SUPERB job per (upstream, task) holds all its heads: each reruns, to train the new lr
    assert counts(jobs) == Counter({"superb_run": n_up, "superb_select": n_up, **{r: 1 for r in REPORT}})
    for rule, outs in jobs:
        if rule == "superb_run":
            assert all(o.endswith("/ks/heads.json") for o in outs), outs


def test_adding_a_depth_plans_only_its_students(finished):
    from deepwide.plan import Study

    wd, cfg = finished
    new = grown(cfg, lambda c: c["distill"]["students"]["shapes"].append({"depth": 3, "width": 32, "ffn": 64, "heads": 2}))
    jobs = planned(wd, new)
    old_parts = set(Study.from_config(copy.deepcopy(cfg)).targets_parts)
    new_parts = set(Study.from_config(copy.deepcopy(new)).targets_parts) - old_parts
    expected = {"distill": 2, "superb_run": 2, "superb_select": 2, "report_cost": 2, "report_cka": 2, "report_kdloss": 2,
                **{r: 1 for r in REPORT}}
    if new_parts:
        expected["targets"] = len(new_parts)
    assert counts(jobs) == Counter(expected)
    for rule, outs in jobs:
        if rule in ("distill", "superb_run", "report_cost", "report_cka", "report_kdloss"):
            assert all("3x32f64h2" in o for o in outs), (rule, outs)


def test_adding_a_distill_seed_plans_only_its_students(finished):
    wd, cfg = finished
    jobs = planned(wd, grown(cfg, lambda c: c["distill"].update(seeds=[0, 1])))
    assert counts(jobs) == Counter({"distill": 4, "superb_run": 4, "superb_select": 4, "report_cost": 4,
                                    "report_cka": 4, "report_kdloss": 4, **{r: 1 for r in REPORT}})
    for rule, outs in jobs:
        if rule in ("distill", "superb_run", "superb_select", "report_cost", "report_cka", "report_kdloss"):
            assert all("seed1" in o for o in outs), (rule, outs)


def test_replicate_tasks_run_later_distill_seeds_on_those_tasks_only(finished):
    """superb.replicate_tasks [sid] with a second distillation seed and SID added: SID for all
    ten upstreams, KS not for the new seed's students."""
    wd, cfg = finished

    def edit(c):
        c["distill"].update(seeds=[0, 1])
        c["superb"].update(tasks=["ks", "sid"], replicate_tasks=["sid"],
                           sid={"lr": 0.001, "total_steps": 4, "eval_step": 2, "batch_size": 4})

    jobs = planned(wd, grown(cfg, edit))
    assert counts(jobs) == Counter({"distill": 4, "superb_run": 10, "superb_select": 10, "report_cost": 4,
                                    "report_cka": 4, "report_kdloss": 4, **{r: 1 for r in REPORT}})
    runs = [o for rule, outs in jobs if rule == "superb_run" for o in outs]
    assert sum("/sid/" in o for o in runs) == 10 and not any("seed1" in o and "/ks/" in o for o in runs)


def test_adding_a_head_seed_plans_only_its_jobs(finished):
    wd, cfg = finished
    jobs = planned(wd, grown(cfg, lambda c: c["superb"].update(seeds=[0, 1])))
    assert counts(jobs) == Counter({"superb_run": 6, "superb_select": 6, **{r: 1 for r in REPORT}})
    assert all(o.endswith("/ks/heads.json") for rule, outs in jobs if rule == "superb_run" for o in outs)


def test_adding_a_task_plans_only_its_jobs(finished):
    wd, cfg = finished
    new = grown(cfg, lambda c: c["superb"].update(tasks=["ks", "sid"], sid={"lr": 0.001, "total_steps": 4,
                                                                             "eval_step": 2, "batch_size": 4}))
    jobs = planned(wd, new)
    assert counts(jobs) == Counter({"superb_run": 6, "superb_select": 6, **{r: 1 for r in REPORT}})
    assert all("/sid/" in o for rule, outs in jobs if rule.startswith("superb") for o in outs)


def test_changing_the_distillation_lr_plans_the_students_and_what_reads_them(finished):
    wd, cfg = finished
    jobs = planned(wd, grown(cfg, lambda c: c["distill"]["train"].update(lr=0.002)))
    # every student and its SUPERB jobs; not the corpora, the teacher or the targets cache
    assert counts(jobs) == Counter({"distill": 4, "superb_run": 4, "superb_select": 4, "report_cost": 4,
                                    "report_cka": 4, "report_kdloss": 4, **{r: 1 for r in REPORT}})


def test_changing_one_tasks_head_plans_only_that_task(finished):
    wd, cfg = finished
    jobs = planned(wd, grown(cfg, lambda c: c["superb"]["ks"].update(total_steps=10)))
    assert counts(jobs) == Counter({"superb_run": 6, "superb_select": 6, **{r: 1 for r in REPORT}})


def test_adding_sd_plans_librimix_from_the_finished_librispeech(finished):
    """SD added to a finished study: LibriMix is mixed from the LibriSpeech already there
    (no corpus resynthesized) and prepared once, then SD's jobs; nothing else."""
    wd, cfg = finished
    jobs = planned(wd, grown(cfg, lambda c: c["superb"].update(tasks=["ks", "sd"])))
    assert counts(jobs) == Counter({"synth_librimix": 1, "prepare_librimix": 1, "superb_run": 6, "superb_select": 6,
                                    **{r: 1 for r in REPORT}})
    assert all("/sd/" in o for rule, outs in jobs if rule.startswith("superb") for o in outs)


def test_an_added_lr_trains_only_the_new_head(finished):
    """The rerun a new lr plans restores the finished head from its s3prl target dir and
    trains only the new one (one upstream pass per batch). It runs FBANK's job in the
    finished study itself, so it is the module's last test."""
    import json

    from deepwide.plan import Study

    wd, cfg = finished
    work = wd
    new = grown(cfg, lambda c: c["superb"]["ks"].update(lr=[0.001, 0.01]))
    study = Study.from_config(copy.deepcopy(new))
    old = json.loads(Path(study.superb_result("fbank", "ks", "0.001", 0)).read_text())
    r = snakemake(work, new, "--cores", "1", study.superb_selected("fbank", "ks"))
    assert r.returncode == 0, r.stderr[-3000:]
    heads_json = json.loads(Path(study.superb_heads_file("fbank", "ks")).read_text())
    assert heads_json["device"] == "cpu" and heads_json["usage"]["wall_s"] > 0  # plan resources reads both
    heads = heads_json["heads"]
    assert [(h["lr"], h["seed"], h["restored"]) for h in heads] == [("0.001", 0, True), ("0.01", 0, False)]
    again = json.loads(Path(study.superb_result("fbank", "ks", "0.001", 0)).read_text())
    assert {k: again[k] for k in ("dev_score", "test_score", "best_step", "layer_weights")} == \
        {k: old[k] for k in ("dev_score", "test_score", "best_step", "layer_weights")}
    log = (work / "results" / "logs" / "superb_run" / "fbank" / "ks.log").read_text()
    assert "restored finished head(s) [(0.001, 0, None)]" in log
