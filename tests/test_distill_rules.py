"""The targets and distill rules through real Snakemake runs: SIGKILL mid-training and a
rerun give the uninterrupted run's weights; only a job's own config slice reruns it; the
paper config lists every job on a tree of empty placeholder files."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from _distill_data import STUDENT_DEFAULTS, make_corpus, make_teacher
from repo_paths import REPO, SMOKE, SNAKEMAKE

SHAPE = "2x32f64h2"


def snakemake(workdir: Path, configfile: Path, *args, targets=(), wait=True, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    cmd = [SNAKEMAKE, *targets, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile",
           str(configfile), "--config", f"results={workdir / 'results'}", *args]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


STEPS = 40  # ten checkpoints (every 4 steps): room to be killed mid-run, little CPU


def study_config(tmp: Path, steps=STEPS) -> Path:
    cfg = yaml.safe_load(SMOKE.read_text())
    # the test teacher's shape (the Study plans its target layers from the teacher's depth)
    cfg["teacher"]["pretrain"]["arch"] = {"depth": 3, "width": 64, "ffn": 128, "heads": 2, "conv_channels": 32,
                                          "pos_conv_kernel": 16, "pos_conv_groups": 4}
    cfg["distill"] = {
        "methods": ["pred", "l2l"],
        "students": {**STUDENT_DEFAULTS, "shapes": [{"depth": 2, "width": 32, "ffn": 64, "heads": 2}]},
        "init": "teacher_frontend", "frontend": "frozen",
        "targets": {"mode": "cached", "shard_seconds": 20},
        "train": {"steps": steps, "lr": 0.002, "batch_seconds": 8, "max_seconds": 2, "min_seconds": 0.5,
                  "checkpoint_every": 4, "log_every": 20, "num_workers": 0, "cpu_threads": 1},
    }
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Manifest + audio and a teacher, made once and copied into each working directory."""
    root = tmp_path_factory.mktemp("shared")
    manifest = make_corpus(root, n=12)
    teacher = make_teacher(root / "teacher.pt")
    return manifest, teacher


def workdir(tmp: Path, inputs) -> Path:
    manifest, teacher = inputs
    res = tmp / "results"
    (res / "manifests" / "librispeech").mkdir(parents=True)
    (res / "teacher").mkdir(parents=True)
    shutil.copy(manifest, res / "manifests" / "librispeech" / "train-clean-100.parquet")
    shutil.copy(teacher, res / "teacher" / "teacher.pt")
    return tmp


def student_targets(wd, method):
    return [str(wd / "results" / "students" / method / SHAPE / "seed0" / "info.json")]


ONLY_OURS = ["--allowed-rules", "targets", "distill"]  # manifests and teacher are given


def _pid_of(pattern: str, timeout=120) -> int:
    t0 = time.time()
    while time.time() - t0 < timeout:
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                # the python trainer itself, not the shell Snakemake wraps it in
                if pattern in cmd and " -m deepwide distill train" in cmd and "python" in cmd.split(" ")[0]:
                    return int(p.name)
        time.sleep(0.1)
    raise AssertionError(f"no trainer process for {pattern}")


@pytest.mark.slow
def test_sigkill_then_rerun_gives_identical_weights_and_reruns_follow_config(tmp_path, inputs):
    a = workdir(tmp_path / "a", inputs)
    b = workdir(tmp_path / "b", inputs)
    cfg = study_config(tmp_path)

    # uninterrupted
    r = snakemake(a, cfg, "--cores", "1", *ONLY_OURS, targets=student_targets(a, "l2l") + student_targets(a, "pred"))
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads((a / f"results/students/l2l/{SHAPE}/seed0/info.json").read_text())
    assert info["mode"] == "cached-targets+cached-frontend" and info["steps"] == STEPS
    assert (a / f"results/students/l2l/{SHAPE}/seed0/hf/config.json").is_file()
    assert (a / f"results/logs/distill/l2l/{SHAPE}/seed0.log").read_text().count(f"step {STEPS}/{STEPS}") == 1

    # killed with SIGKILL after a checkpoint, then the same command again
    resume = b / f"results/resume/distill/l2l/{SHAPE}/seed0/state.pt"
    p = snakemake(b, cfg, "--cores", "1", *ONLY_OURS, targets=student_targets(b, "l2l"), wait=False)
    pid = _pid_of(str(b / "results" / "resume"))
    t0 = time.time()
    while not resume.exists():
        assert time.time() - t0 < 300 and p.poll() is None, p.communicate()
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    out, err = p.communicate(timeout=120)
    assert p.returncode != 0
    killed_at = torch.load(resume, weights_only=False)["step"]
    assert 4 <= killed_at < STEPS
    assert not (b / f"results/students/l2l/{SHAPE}/seed0/student.pt").exists()
    r = snakemake(b, cfg, "--cores", "1", *ONLY_OURS, targets=student_targets(b, "l2l"))
    assert r.returncode == 0, r.stderr[-3000:]
    log = (b / f"results/logs/distill/l2l/{SHAPE}/seed0.log").read_text()
    assert f"resumed from {resume} at step {killed_at} " in log  # not a restart from step 0

    wa = torch.load(a / f"results/students/l2l/{SHAPE}/seed0/student.pt", weights_only=False)["state_dict"]
    wb = torch.load(b / f"results/students/l2l/{SHAPE}/seed0/student.pt", weights_only=False)["state_dict"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k

    # nothing to do; then a change of l2l's settings reruns l2l only, of the trainer both
    targets_all = [*student_targets(a, "l2l"), *student_targets(a, "pred")]
    r = snakemake(a, cfg, "-n", "--cores", "1", *ONLY_OURS, targets=targets_all)
    assert "Nothing to be done" in r.stdout + r.stderr, r.stdout
    c = yaml.safe_load(cfg.read_text())
    c["distill"]["l2l"] = {"student_layers": [2]}
    changed = tmp_path / "l2l.yaml"
    changed.write_text(yaml.safe_dump(c))
    r = snakemake(a, changed, "-n", "--cores", "1", *ONLY_OURS, targets=targets_all)
    assert r.returncode == 0, r.stderr
    assert "method=l2l" in r.stdout and "method=pred" not in r.stdout
    # the student now regresses teacher layer 3 from its layer 2 alone: a layer already cached
    assert "rule targets" not in r.stdout
    c["distill"]["train"]["lr"] = 0.001
    changed.write_text(yaml.safe_dump(c))
    r = snakemake(a, changed, "-n", "--cores", "1", *ONLY_OURS, targets=targets_all)
    assert "method=l2l" in r.stdout and "method=pred" in r.stdout
    assert "rule targets" not in r.stdout  # the trainer's settings change no target
    # the loader's workers, threads and log/checkpoint cadence change nothing
    c = yaml.safe_load(cfg.read_text())
    c["distill"]["train"].update(num_workers=1, cpu_threads=2, log_every=7, checkpoint_every=9)
    changed.write_text(yaml.safe_dump(c))
    r = snakemake(a, changed, "-n", "--cores", "1", *ONLY_OURS, targets=targets_all)
    assert "Nothing to be done" in r.stdout + r.stderr, r.stdout


@pytest.mark.slow
def test_paper_config_dry_run_lists_every_job(tmp_path):
    from paper_placeholders import paper_config

    from deepwide.plan import Study

    path = paper_config(tmp_path)
    study = Study.from_file(path)
    depths = sorted(a.depth for a in study.students.values())
    assert depths == [2, 2, 3, 3, 4, 6, 8, 12, 16, 24]  # grid (12x384 is also 12-L Half) + 2x768, 3x768
    for name in ("2x768f3072h12", "3x768f3072h12", "12x384f1536h6"):
        assert name in study.students
    from deepwide.models.solver import count_params

    assert count_params(study.students["12x384f1536h6"]) == 26_872_960
    for a in study.students.values():
        assert abs(count_params(a) - 26.87e6) / 26.87e6 < 0.25 or a.width == 768

    r = snakemake(tmp_path, path, "-n", "--cores", "1", "--quiet", "rules")
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    r = snakemake(tmp_path, path, "-n", "--cores", "1")
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    out = r.stdout
    jobs = study.student_jobs
    for j in jobs:
        assert f"results/students/{j.method}/{j.shape}/seed{j.seed}/info.json" in out, j
    assert out.count("rule distill:") == len(jobs) == 20
    # both methods in the same target mode: online (dense l2l's 12 layers would not fit a cache)
    assert not any(j.cached for j in jobs)
    assert study.targets_parts == []
    assert out.count("rule targets:") == 0
    # DistilHuBERT's init for the 768-wide reproductions (the trainer copies only where widths match)
    assert study.dcfg["init"] == "distilhubert"
    # the stages before and after are in the same DAG: real-root manifests, the imported
    # teacher, and every student's SUPERB jobs
    for rule in ("prepare_librispeech", "teacher_import"):
        assert f"rule {rule}:" in out, rule
    for j in jobs:
        assert f"results/superb/{j.upstream}/" in out, j
        assert f"results/superb/{j.upstream}/qbe/lr1/result.json" in out, j
    # QbE by DTW: one job per upstream (students, teacher, FBANK), on the QUESST14 root
    assert out.count("rule superb_qbe:") == len(jobs) + 2
