"""`snakemake --profile workflow/profiles/slurm` against a real local SLURM cluster.

One module-scoped run: a one-node cluster (tests/slurm_cluster.py) runs the test workflow
(tests/slurm_workflow: CPU rule -> resumable GPU training rule -> CPU rule) through our
profile, with the account and partition given in the environment as users do. While the
training job runs, `scontrol requeue` kills and requeues it. The tests then read SLURM's
accounting (sacct: SubmitLine, ReqTRES, requeue records) and compare the outputs with a
local run of the same workflow.

Needs root (slurmd) and Debian's slurm/munge/mariadb packages, which the harness installs
with apt-get when missing. Elsewhere the tests skip and say why; with CI=true they fail.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from slurm_cluster import ACCOUNT, PARTITIONS, LocalSlurm, SlurmUnavailable

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "tests" / "slurm_workflow" / "Snakefile"
PROFILE = REPO / "workflow" / "profiles" / "slurm"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
STEPS, EVERY = 40, 5
GPU_RULES, CPU_RULES = {"train"}, {"wavs", "summary"}

pytestmark = pytest.mark.slow


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _env(base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm") / "cluster"
    try:
        c = LocalSlurm(root).start()
    except SlurmUnavailable as err:
        if in_ci():
            pytest.fail(f"CI must run the SLURM test, but the local cluster did not start: {err}")
        pytest.skip(f"no local SLURM cluster: {err}")
    try:
        yield c
    finally:
        c.stop()


class Requeuer(threading.Thread):
    """Requeue the training job once, after it wrote its first checkpoint."""

    def __init__(self, cluster: LocalSlurm, train_log: Path, timeout: float = 150):
        super().__init__(daemon=True)
        self.cluster, self.train_log, self.timeout = cluster, train_log, timeout
        self.jobid: str | None = None
        self.error: str | None = None
        self.stop_event = threading.Event()

    def _train_job(self) -> tuple[str, str] | None:
        out = self.cluster.run("squeue", "-h", "-o", "%i|%T|%k", check=False).stdout
        for line in out.splitlines():
            jobid, state, comment = line.split("|", 2)
            if comment.startswith("rule_train"):
                return jobid, state
        return None

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        try:
            while not self.stop_event.is_set() and time.monotonic() < deadline:
                job = self._train_job()
                saved = self.train_log.exists() and "checkpoint saved at step" in self.train_log.read_text()
                if job and job[1] == "RUNNING" and saved:
                    self.jobid = job[0]
                    self.cluster.run("scontrol", "requeue", self.jobid)
                    break
                time.sleep(0.2)
            else:
                self.error = "the training job never ran long enough to be requeued"
                return
            # SLURM holds a requeued job back (BeginTime, ~2 min); let it start again now
            while time.monotonic() < deadline:
                state = self.cluster.run("squeue", "-h", "-j", self.jobid, "-o", "%T", check=False).stdout.strip()
                if state == "PENDING":
                    self.cluster.run("scontrol", "update", f"jobid={self.jobid}", "StartTime=now")
                    return
                time.sleep(0.2)
            self.error = f"requeued job {self.jobid} never went back to PENDING"
        except Exception as err:  # reported by the test, not lost in the thread
            self.error = repr(err)


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """The workflow run locally (reference) and through the SLURM profile (with a requeue)."""
    base = tmp_path_factory.mktemp("runs")
    local, remote = base / "local", base / "slurm"
    cfg = ["--config", f"steps={STEPS}", f"every={EVERY}"]
    # the reference run goes alongside the SLURM run, which mostly waits on status polls
    local_proc = subprocess.Popen([*SNAKEMAKE, "-s", str(WORKFLOW), "-d", str(local), "--cores", "1", "-q", *cfg],
                                  env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    env = _env(cluster.env())
    env.update(SBATCH_ACCOUNT=ACCOUNT, SBATCH_PARTITION=PARTITIONS[1])
    requeuer = Requeuer(cluster, remote / "logs" / "train.log")
    requeuer.start()
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [*SNAKEMAKE, "--profile", str(PROFILE), "-s", str(WORKFLOW), "-d", str(remote), *cfg, "step_sleep=0.25",
             # poll SLURM every few seconds instead of the plugin's 40 s, wait less for files
             "--slurm-init-seconds-before-status-checks", "1", "--latency-wait", "5"],
            env=env, capture_output=True, text=True, timeout=300)
    finally:
        requeuer.stop_event.set()
        requeuer.join(timeout=10)
        local_out, _ = local_proc.communicate(timeout=180)
    wall = time.monotonic() - t0
    assert local_proc.returncode == 0, f"local reference run failed:\n{local_out[-4000:]}"
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"snakemake --profile slurm failed:\n{log[-6000:]}"
    rows = cluster.sacct("-X")
    dup_rows = cluster.sacct("-X", "--duplicates")
    by_rule = {r["Comment"].removeprefix("rule_").split("_wildcards")[0]: r for r in rows}
    record = {"wall_s": round(wall, 1), "requeued_job": requeuer.jobid, "requeue_error": requeuer.error,
              "sbatch": {rule: r["SubmitLine"] for rule, r in by_rule.items()},
              "ReqTRES": {rule: r["ReqTRES"] for rule, r in by_rule.items()}}
    print("\nSLURM run:", json.dumps(record, indent=1))
    return {"local": local, "remote": remote, "log": log, "rows": rows, "dup_rows": dup_rows, "by_rule": by_rule,
            "requeuer": requeuer}


def test_every_job_submitted_with_sbatch(runs):
    rows, by_rule = runs["rows"], runs["by_rule"]
    assert set(by_rule) == GPU_RULES | CPU_RULES, rows
    assert len(rows) == len(by_rule), "one SLURM job per workflow job"
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", runs["log"])
    assert sorted(submitted) == sorted(r["JobIDRaw"] for r in rows)
    for rule, r in by_rule.items():
        line = r["SubmitLine"]
        assert line.startswith("sbatch "), (rule, line)
        assert r["State"] == "COMPLETED", (rule, r)
        # account and partition from SBATCH_ACCOUNT / SBATCH_PARTITION through the profile
        assert f"-A {ACCOUNT}" in line and r["Account"] == ACCOUNT, (rule, r)
        assert f"-p {PARTITIONS[1]}" in line and r["Partition"] == PARTITIONS[1], (rule, r)
        assert "--requeue" in line, (rule, line)
        assert f"--target-jobs '{rule}:'" in line or f"--target-jobs {rule}:" in line, (rule, line)


def test_gpu_request_only_on_gpu_rules(runs, repo_root):
    from deepwide.config import load_config

    res = load_config(repo_root / "workflow" / "configs" / "smoke.yaml")["resources"]
    for rule, r in runs["by_rule"].items():
        line, tres = r["SubmitLine"], r["ReqTRES"]
        if rule in GPU_RULES:
            gpu = res["gpu"]
            assert f"gres/gpu={gpu['gpu']}" in tres, (rule, tres)
            assert f"--gpus={gpu['gpu']}" in line and f"--cpus-per-gpu={gpu['cpus_per_gpu']}" in line, line
            assert f"--mem {gpu['mem_mb_per_gpu'] * gpu['gpu']}" in line and f"-t {gpu['runtime']}" in line, line
        else:
            cpu = res["cpu"]
            assert "gres/gpu" not in tres and "--gpus" not in line and "gres" not in line, (rule, tres, line)
            assert "--cpus-per-task=1" in line, line
            assert f"--mem {cpu['mem_mb']}" in line and f"-t {cpu['runtime']}" in line, line


def test_outputs_equal_local_run(runs):
    local, remote = runs["local"], runs["remote"]
    assert (remote / "data" / "wavs.npy").read_bytes() == (local / "data" / "wavs.npy").read_bytes()
    assert json.loads((remote / "summary.json").read_text()) == json.loads((local / "summary.json").read_text())
    a = torch.load(local / "model" / "student.pt", weights_only=False)
    b = torch.load(remote / "model" / "student.pt", weights_only=False)
    assert a["arch"] == b["arch"] and a["meta"] == b["meta"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), f"weight {key} differs after the requeued run"
    # resume state is cleaned up once the declared output exists
    assert not (remote / "state" / "train" / "resume.pt").exists()
    assert np.load(remote / "data" / "wavs.npy").shape == (8, 8000)


def test_requeued_training_resumes_from_checkpoint(runs):
    rq = runs["requeuer"]
    assert rq.error is None, rq.error
    assert rq.jobid is not None
    records = [r for r in runs["dup_rows"] if r["JobIDRaw"] == rq.jobid]
    assert [r["State"] for r in records] == ["REQUEUED", "COMPLETED"], records
    assert runs["by_rule"]["train"]["JobIDRaw"] == rq.jobid

    text = (runs["remote"] / "logs" / "train.log").read_text()
    print("\ntraining log of the requeued job:\n" + text)
    resumed = re.findall(r"resumed from checkpoint \S+ at step (\d+) \(SLURM job (\d+)\)", text)
    assert len(resumed) == 1, text
    step, jobid = int(resumed[0][0]), resumed[0][1]
    assert step >= EVERY and step % EVERY == 0 and jobid == rq.jobid, text
    after = text[text.index("resumed from checkpoint"):]
    assert "starting at step 0" not in after, "the requeued job restarted from scratch"
    assert f"step {step + 1}/{STEPS} " in after and f"step {step}/{STEPS} " not in after, after
    assert f"finished {STEPS} steps" in after
