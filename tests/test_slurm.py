"""`snakemake --profile workflow/profiles/slurm` against a real local SLURM cluster.

One module-scoped session on a one-node cluster (tests/slurm_cluster.py), with the account
and partition given in the environment as users do, runs two workflows through our profile
side by side (both mostly wait on SLURM status polls):

- the pipeline itself on workflow/configs/smoke.yaml (every rule main has), compared with a
  local run of the same config;
- tests/slurm_workflow (CPU rule -> resumable GPU training rule -> CPU rule, its requests
  from the config's `resources` section): while its training job runs, `scontrol requeue`
  kills and requeues it; it must resume from its checkpoint and end with the weights of an
  uninterrupted local run.
- once workflow/rules/distill.smk exists (distill stage merged), the pipeline run is kept
  to one corpus and one 400-step student, and that real distillation job is requeued too.

The checks read SLURM's own accounting (sacct: SubmitLine, ReqTRES, requeue records).
Needs root (slurmd) and Debian's slurm/munge/mariadb packages, which the harness installs
with apt-get when missing. Elsewhere the tests skip and say why; with CI=true they fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from slurm_cluster import ACCOUNT, PARTITIONS, LocalSlurm, SlurmUnavailable

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "tests" / "slurm_workflow" / "Snakefile"
SMOKE = REPO / "workflow" / "configs" / "smoke.yaml"
PROFILE = REPO / "workflow" / "profiles" / "slurm"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
STEPS, EVERY = 40, 5
TOY_GPU_RULES, TOY_CPU_RULES = {"train"}, {"wavs", "summary"}
# test-only flags: poll SLURM from 1 s on instead of the plugin's 40 s and every 3 s instead of
# snakemake's 10 s (each of the pipeline's 6 dependent steps waited for a round), wait less for files
FAST_POLL = ["--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "3",
             "--latency-wait", "5"]
# corpus.smk sizes `threads` from workflow.cores, which snakemake leaves undefined on a
# cluster unless --cores is given; one thread per job also fits the 4-CPU test node
PIPELINE_CORES = ["--cores", "4", "--max-threads", "1"]

# Once the distill stage is in the pipeline, its real trainer is requeued too. The overlay
# keeps that run small (one corpus, one student) and the student's job long enough to be
# caught mid-run; the same overlay goes to the local reference run.
HAS_DISTILL = (REPO / "workflow" / "rules" / "distill.smk").is_file()
DISTILL_OVERLAY = {
    "corpus": {name: {"enabled": False} for name in ("voxceleb1", "speech_commands", "fluent_speech_commands", "iemocap")},
    "distill": {"methods": ["pred"], "students": {"shapes": [{"depth": 1, "width": 32, "ffn": 64, "heads": 2}]},
                "train": {"steps": 400, "checkpoint_every": 50, "log_every": 10}},
    # SUPERB's embedded tasks need the corpora switched off above (its own tests cover it)
    "superb": {"tasks": []},
}
DISTILL_LOG = Path("results/smoke/logs/distill/pred/1x32f64h2/seed0.log")

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
    short = None
    if len(str(root)) > 70:  # unix socket paths are short; a long TMPDIR gets a /tmp folder
        short = Path(tempfile.mkdtemp(prefix="dwslurm-", dir="/tmp"))
        root = short / "cluster"
    try:
        # 4 CPUs on a 2-core box: the jobs mostly start Python and wait
        c = LocalSlurm(root, cpus=4).start()
    except SlurmUnavailable as err:
        if in_ci():
            pytest.fail(f"CI must run the SLURM test, but the local cluster did not start: {err}")
        pytest.skip(f"no local SLURM cluster: {err}")
    try:
        yield c
    finally:
        c.stop()
        if short is not None:
            shutil.rmtree(short, ignore_errors=True)


class Requeuer(threading.Thread):
    """Requeue the job of ``rule`` once, after its log shows ``marker`` (a checkpoint).

    Waits as long as the runs do (no deadline of its own: a loaded machine only makes it wait
    longer); the runs' progress watchdog (``_wait_while_progressing``) ends a stuck session."""

    def __init__(self, cluster: LocalSlurm, rule: str, log: Path, marker: str):
        super().__init__(daemon=True)
        self.cluster, self.rule, self.log, self.marker = cluster, rule, log, marker
        self.jobid: str | None = None
        self.log_before: str = ""  # the job's log as it was when the requeue was sent
        self.error: str | None = None
        self.stop_event = threading.Event()

    def _job(self) -> tuple[str, str] | None:
        out = self.cluster.run("squeue", "-h", "-o", "%i|%T|%k", check=False).stdout
        for line in out.splitlines():
            jobid, state, comment = line.split("|", 2)
            if comment == f"rule_{self.rule}" or comment.startswith(f"rule_{self.rule}_wildcards"):
                return jobid, state
        return None

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                job = self._job()
                text = self.log.read_text() if self.log.exists() else ""
                if job and job[1] == "RUNNING" and self.marker in text:
                    self.jobid, self.log_before = job[0], text
                    self.cluster.run("scontrol", "requeue", self.jobid)
                    break
                time.sleep(0.2)
            else:
                self.error = f"the {self.rule} job never ran long enough to be requeued"
                return
            # SLURM holds a requeued job back (BeginTime, ~2 min); let it start again now
            while not self.stop_event.is_set():
                state = self.cluster.run("squeue", "-h", "-j", self.jobid, "-o", "%T", check=False).stdout.strip()
                if state == "PENDING":
                    self.cluster.run("scontrol", "update", f"jobid={self.jobid}", "StartTime=now")
                    return
                time.sleep(0.2)
            self.error = f"requeued job {self.jobid} never went back to PENDING"
        except Exception as err:  # reported by the test, not lost in the thread
            self.error = repr(err)


# The runs are killed only when stuck, not after a fixed time (a loaded machine is slow, not
# stuck): when no file under their folders (job logs, outputs, snakemake's own records) has
# changed for STALL_S seconds. MAX_S bounds a run that keeps writing but never ends.
STALL_S, MAX_S = 300, 3600


def _files_state(base: Path) -> tuple[int, int, float]:
    """Number, total size and newest mtime of the files under ``base``."""
    n, size, newest = 0, 0, 0.0
    for root, _, files in os.walk(base):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name))
            except OSError:  # removed meanwhile (temp files)
                continue
            n, size, newest = n + 1, size + st.st_size, max(newest, st.st_mtime)
    return n, size, newest


def _wait_while_progressing(procs: dict[str, subprocess.Popen], base: Path, stall: float = STALL_S,
                            limit: float = MAX_S) -> tuple[dict[str, float], str | None]:
    """Wait for every process; kill those left once nothing under ``base`` changed for ``stall``
    seconds (or after ``limit``). Returns each one's wall seconds and why they were killed (None)."""
    t0 = last_change = time.monotonic()
    walls: dict[str, float] = {}
    seen, stuck = None, None
    while len(walls) < len(procs):
        now = time.monotonic()
        for name, proc in procs.items():
            if name not in walls and proc.poll() is not None:
                walls[name] = round(now - t0, 1)
        state = _files_state(base)
        if state != seen:
            seen, last_change = state, now
        if now - last_change > stall or now - t0 > limit:
            stuck = (f"killed after {now - t0:.0f} s: no file under {base} changed for {now - last_change:.0f} s"
                     if now - last_change > stall else f"killed after the {limit:.0f} s limit")
            for name, proc in procs.items():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                    walls[name] = round(now - t0, 1)
            break
        time.sleep(1.0)
    return walls, stuck


def _start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        return subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, text=True)


def _jobs_from_log(text: str) -> tuple[dict[str, dict], dict[str, dict]]:
    """(SLURM job id -> {rule, resources}, snakemake job id -> {rule, resources, local}) from
    the log of a cluster run."""
    blocks = {}
    for m in re.finditer(r"^(local)?rule (\S+):\n((?:    .*\n)+)", text, re.M):
        fields = dict(re.findall(r"^    (\w+): (.*)$", m.group(3), re.M))
        if "jobid" in fields:
            res = dict(kv.split("=", 1) for kv in fields.get("resources", "").split(", ") if "=" in kv)
            blocks[fields["jobid"]] = {"rule": m.group(2), "resources": res, "local": bool(m.group(1))}
    submitted = {}
    for jobid, slurm_id in re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", text):
        submitted[slurm_id] = blocks[jobid]
    return submitted, blocks


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    env_local = _env()
    env_slurm = _env(cluster.env())
    env_slurm.update(SBATCH_ACCOUNT=ACCOUNT, SBATCH_PARTITION=PARTITIONS[1])
    toy_cfg = ["--config", f"steps={STEPS}", f"every={EVERY}"]
    smoke_cfg = ["--configfile", str(SMOKE)]
    if HAS_DISTILL:
        overlay = base / "distill_overlay.yaml"
        overlay.write_text(json.dumps(DISTILL_OVERLAY))  # JSON is YAML
        smoke_cfg.append(str(overlay))
    procs = {
        "toy_local": _start([*SNAKEMAKE, "-s", str(TOY), "-d", str(base / "toy_local"), "--cores", "1", *toy_cfg],
                            env_local, base / "toy_local.out"),
        # same threads per job as on SLURM: trainers are bit-reproducible only at equal thread counts
        "smoke_local": _start([*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(base / "smoke_local"),
                               *PIPELINE_CORES, *smoke_cfg], env_local, base / "smoke_local.out"),
        "toy_slurm": _start([*SNAKEMAKE, "--profile", str(PROFILE), "-s", str(TOY), "-d", str(base / "toy_slurm"),
                             *toy_cfg, "step_sleep=0.25", *FAST_POLL], env_slurm, base / "toy_slurm.out"),
        "smoke_slurm": _start([*SNAKEMAKE, "--profile", str(PROFILE), "-s", str(REPO / "Snakefile"),
                               "-d", str(base / "smoke_slurm"), *smoke_cfg, *PIPELINE_CORES, *FAST_POLL],
                              env_slurm, base / "smoke_slurm.out"),
    }
    requeuer = Requeuer(cluster, "train", base / "toy_slurm" / "logs" / "train.log", "checkpoint saved at step")
    requeuer.start()
    distill_requeuer = None
    if HAS_DISTILL:
        distill_requeuer = Requeuer(cluster, "distill", base / "smoke_slurm" / DISTILL_LOG, "step 50/400 ")
        distill_requeuer.start()
    stuck = None
    try:
        walls, stuck = _wait_while_progressing(procs, base)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for rq in (requeuer, distill_requeuer):
            if rq is not None:
                rq.stop_event.set()
                rq.join(timeout=10)
    logs = {name: (base / f"{name}.out").read_text() for name in procs}
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name} failed (rc {proc.returncode}; {stuck or 'not killed'}):\n{logs[name][-6000:]}"

    rows = cluster.sacct("-X")
    dup_rows = cluster.sacct("-X", "--duplicates")
    out = {"base": base, "logs": logs, "requeuer": requeuer, "distill_requeuer": distill_requeuer,
           "dup_rows": dup_rows, "walls": walls}
    for name in ("toy_slurm", "smoke_slurm"):
        uuid = re.search(r"SLURM run ID: (\S+)", logs[name]).group(1)
        jobs, blocks = _jobs_from_log(logs[name])
        out[name] = {"rows": [r for r in rows if r["JobName"] == uuid], "jobs": jobs, "blocks": blocks}
    by_rule = {out["toy_slurm"]["jobs"][r["JobIDRaw"]]["rule"]: r for r in out["toy_slurm"]["rows"]}
    out["toy_slurm"]["by_rule"] = by_rule
    print("\nwall seconds (all started together):", walls)
    print("sbatch lines and requested TRES of the test workflow's jobs:")
    for rule, r in by_rule.items():
        print(f"  {rule}: ReqTRES={r['ReqTRES']}\n    {r['SubmitLine'][:r['SubmitLine'].find(' --wrap')]}")
    return out


def _check_submitted(run: dict, log: str):
    rows, jobs = run["rows"], run["jobs"]
    assert rows and len(rows) == len(jobs), (rows, jobs)
    assert sorted(r["JobIDRaw"] for r in rows) == sorted(jobs), "every submitted job is in SLURM's accounting"
    for r in rows:
        rule, line = jobs[r["JobIDRaw"]]["rule"], r["SubmitLine"]
        assert line.startswith("sbatch "), (rule, line)
        assert r["State"] == "COMPLETED", (rule, r)
        assert r["Comment"] == f"rule_{rule}" or r["Comment"].startswith(f"rule_{rule}_wildcards"), (rule, r)
        # account and partition from SBATCH_ACCOUNT / SBATCH_PARTITION through the profile
        assert f"-A {ACCOUNT}" in line and r["Account"] == ACCOUNT, (rule, r)
        assert f"-p {PARTITIONS[1]}" in line and r["Partition"] == PARTITIONS[1], (rule, r)
        assert "--requeue" in line, (rule, line)
    # every job of the DAG went to SLURM, except the rules the workflow marks local (`all`)
    remote = [b for b in run["blocks"].values() if not b["local"]]
    assert len(remote) == len(jobs), (remote, jobs)
    total = int(re.search(r"^total\s+(\d+)$", log, re.M).group(1))
    assert total == len(run["blocks"]), (total, run["blocks"])


def _check_gpu_requests(run: dict):
    for r in run["rows"]:
        job = run["jobs"][r["JobIDRaw"]]
        gpus = int(job["resources"].get("gpu", 0))
        line, tres = r["SubmitLine"], r["ReqTRES"]
        if gpus:
            assert f"gres/gpu={gpus}" in tres and f"--gpus={gpus}" in line, (job, tres, line)
        else:
            assert "gres/gpu" not in tres and "--gpus" not in line and "--gres" not in line, (job, tres, line)
            assert "--cpus-per-task=" in line, line


def test_pipeline_jobs_all_submitted_with_sbatch(runs):
    _check_submitted(runs["smoke_slurm"], runs["logs"]["smoke_slurm"])


def test_pipeline_gpu_request_only_on_gpu_rules(runs):
    _check_gpu_requests(runs["smoke_slurm"])


def _normalized(path: Path, root: Path):
    """What must match between a local and a SLURM run, or None when the file is not compared.

    Corpora and manifests: their content, with this run's absolute path replaced (manifests
    hold absolute paths) and the manifests' info.json without the job's ``usage``. Model
    checkpoints (teacher, students): their weights. The rest (training curves, info.json,
    work files) holds wall times and is only checked to exist.
    """
    parts = path.relative_to(root).parts
    if path.suffix == ".pt":
        blob = torch.load(path, map_location="cpu", weights_only=False)
        if isinstance(blob, dict) and str(blob.get("format", "")).startswith("deepwide-encoder"):
            return {"arch": blob["arch"], "state_dict": blob["state_dict"]}
        return None
    if "corpora" not in parts and "manifests" not in parts and "data" not in parts:
        return None
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
        for col in df.columns:
            if df[col].dtype == object or pd.api.types.is_string_dtype(df[col]):
                df[col] = df[col].map(lambda v: v.replace(str(root), "<RUN>") if isinstance(v, str) else v)
        return df
    data = path.read_bytes()
    if path.suffix == ".json" and "manifests" in parts:  # the prepare job's usage (its wall time, memory) is not compared
        data = json.dumps({k: v for k, v in json.loads(data).items() if k != "usage"}, sort_keys=True).encode()
    return hashlib.sha256(data.replace(str(root).encode(), b"<RUN>")).hexdigest()


def _assert_same_outputs(local: Path, remote: Path) -> int:
    def outputs(d):
        return {p.relative_to(d) for p in d.rglob("*") if p.is_file() and ".snakemake" not in p.parts
                and "logs" not in p.parts and "resume" not in p.parts}

    files = outputs(remote)
    assert files and files == outputs(local), sorted(files ^ outputs(local))
    compared = 0
    for rel in sorted(files):
        a, b = _normalized(local / rel, local.resolve()), _normalized(remote / rel, remote.resolve())
        if a is None:
            continue
        compared += 1
        if isinstance(a, pd.DataFrame):
            pd.testing.assert_frame_equal(a, b, obj=str(rel))
        elif isinstance(a, dict):
            assert a["arch"] == b["arch"] and a["state_dict"].keys() == b["state_dict"].keys(), rel
            for key, value in a["state_dict"].items():
                assert torch.equal(value, b["state_dict"][key]), f"{rel}: weight {key} differs"
        else:
            assert a == b, f"{rel} differs between the local and the SLURM run"
    return compared


def test_pipeline_outputs_equal_local_run(runs):
    compared = _assert_same_outputs(runs["base"] / "smoke_local", runs["base"] / "smoke_slurm")
    assert compared > 0


def test_toy_jobs_all_submitted_with_sbatch(runs):
    assert set(runs["toy_slurm"]["by_rule"]) == TOY_GPU_RULES | TOY_CPU_RULES
    _check_submitted(runs["toy_slurm"], runs["logs"]["toy_slurm"])


def test_toy_gpu_request_only_on_gpu_rules(runs, repo_root):
    from deepwide.config import load_config

    _check_gpu_requests(runs["toy_slurm"])
    res = load_config(SMOKE)["resources"]
    for rule, r in runs["toy_slurm"]["by_rule"].items():
        line = r["SubmitLine"]
        if rule in TOY_GPU_RULES:  # the config's GPU job class, all of it on the sbatch line
            gpu = res["gpu"]
            assert f"--gpus={gpu['gpu']}" in line and f"--cpus-per-gpu={gpu['cpus_per_gpu']}" in line, line
            assert f"--mem {gpu['mem_mb_per_gpu'] * gpu['gpu']}" in line and f"-t {gpu['runtime']}" in line, line
        else:
            cpu = res["cpu"]
            assert "--cpus-per-task=1" in line and "--cpus-per-gpu" not in line, line
            assert f"--mem {cpu['mem_mb']}" in line and f"-t {cpu['runtime']}" in line, line


def test_toy_outputs_equal_local_run(runs):
    local, remote = runs["base"] / "toy_local", runs["base"] / "toy_slurm"
    assert _assert_same_outputs(local, remote) == 2  # data/wavs.npy, model/student.pt
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


def test_requeued_training_resumes_from_checkpoint(runs):
    rq = runs["requeuer"]
    assert rq.error is None, rq.error
    assert rq.jobid is not None and runs["toy_slurm"]["by_rule"]["train"]["JobIDRaw"] == rq.jobid
    records = [r for r in runs["dup_rows"] if r["JobIDRaw"] == rq.jobid]
    assert [r["State"] for r in records] == ["REQUEUED", "COMPLETED"], records

    before = rq.log_before
    text = (runs["base"] / "toy_slurm" / "logs" / "train.log").read_text()
    print("\ntraining log when `scontrol requeue` was sent:\n" + before)
    print("training log after the run (snakemake starts the log afresh when the job reruns):\n" + text)
    assert "starting at step 0" in before
    saved = [int(s) for s in re.findall(r"checkpoint saved at step (\d+)", before)]
    resumed = re.findall(r"resumed from checkpoint \S+ at step (\d+) \(SLURM job (\d+)\)", text)
    assert len(resumed) == 1, text
    step, jobid = int(resumed[0][0]), resumed[0][1]
    # the last checkpoint seen before the requeue, or one written while SLURM stopped the job
    assert saved and step >= saved[-1] > 0 and step % EVERY == 0 and jobid == rq.jobid, (before, text)
    after = text[text.index("resumed from checkpoint"):]
    assert "starting at step 0" not in after, "the requeued job restarted from scratch"
    assert f"step {step + 1}/{STEPS} " in after and f"step {step}/{STEPS} " not in after, after
    assert f"finished {STEPS} steps" in after


@pytest.mark.skipif(not HAS_DISTILL, reason="the pipeline has no distill stage yet (workflow/rules/distill.smk)")
def test_requeued_distill_resumes_from_checkpoint(runs):
    """The real trainer: SIGTERM from the requeue saves its state, the rerun resumes there,
    and the student's weights equal the uninterrupted local run's (test_pipeline_outputs...)."""
    rq = runs["distill_requeuer"]
    assert rq.error is None, rq.error
    records = [r for r in runs["dup_rows"] if r["JobIDRaw"] == rq.jobid]
    assert [r["State"] for r in records] == ["REQUEUED", "COMPLETED"], records
    text = (runs["base"] / "smoke_slurm" / DISTILL_LOG).read_text()
    steps = lambda t: [l for l in t.splitlines() if re.search(r"step \d+/\d+ |resumed from|signal|done:", l)]
    print("\ndistill log when `scontrol requeue` was sent:\n" + "\n".join(steps(rq.log_before)))
    print("distill log after the run:\n" + "\n".join(steps(text)))
    assert "step 50/400 " in rq.log_before
    resumed = [int(s) for s in re.findall(r"resumed from \S+ at step (\d+)", text)]
    assert len(resumed) == 1 and resumed[0] >= 50, text
    assert "done:" in text and "starting from step 0" not in text
