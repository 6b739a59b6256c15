"""Job requests from config (deepwide.resources) and the SLURM profile, without a cluster."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deepwide.config import load_config, validate_config
from deepwide.errors import DeepwideError
from deepwide.resources import job_resources


def test_gpu_and_cpu_jobs_from_smoke_config(repo_root):
    res = load_config(repo_root / "workflow" / "configs" / "smoke.yaml")["resources"]
    gpu = job_resources(res, "distill", gpu=True)
    assert gpu == {"gpu": 1, "cpus_per_gpu": 1, "mem_mb": 1000, "runtime": 10}
    cpu = job_resources(res, "corpus_synth", gpu=False)
    assert cpu == {"mem_mb": 500, "runtime": 10}
    assert "gpu" not in cpu and "cpus_per_gpu" not in cpu


def test_defaults_and_memory_per_gpu_scale_with_gpus():
    res = validate_config({"resources": {"gpu": {"gpu": 2, "mem_mb_per_gpu": 1500}}})["resources"]
    gpu = job_resources(res, "distill", gpu=True)
    assert gpu["gpu"] == 2 and gpu["mem_mb"] == 3000
    assert gpu["cpus_per_gpu"] == 8 and gpu["runtime"] == 240  # schema defaults


def test_rule_override_and_partition():
    res = validate_config({"resources": {
        "gpu": {"slurm_partition": "gpu"},
        "rules": {"distill": {"runtime": 720, "mem_mb_per_gpu": 64000}, "report": {"mem_mb": 123}},
    }})["resources"]
    d = job_resources(res, "distill", gpu=True)
    assert d["runtime"] == 720 and d["mem_mb"] == 64000 and d["slurm_partition"] == "gpu"
    other = job_resources(res, "targets", gpu=True)
    assert other["runtime"] == 240 and other["mem_mb"] == 32000
    r = job_resources(res, "report", gpu=False)
    assert r["mem_mb"] == 123 and "slurm_partition" not in r


def test_gpu_key_on_cpu_rule_is_named():
    res = validate_config({"resources": {"rules": {"report": {"cpus_per_gpu": 4}}}})["resources"]
    with pytest.raises(DeepwideError, match=r"resources\.rules\.report\.cpus_per_gpu: does not apply to a CPU rule"):
        job_resources(res, "report", gpu=False)


def test_schema_rejects_unknown_and_bad_values():
    with pytest.raises(DeepwideError, match=r"resources\.gpu\.gpus: unknown key"):
        validate_config({"resources": {"gpu": {"gpus": 2}}})
    with pytest.raises(DeepwideError, match=r"resources\.rules\.distill\.runtime"):
        validate_config({"resources": {"rules": {"distill": {"runtime": 0}}}})


def _parse_profile(repo_root, monkeypatch, **env):
    from snakemake.profiles import ProfileConfigFileParser

    for var in ("SBATCH_ACCOUNT", "SBATCH_PARTITION", "DEEPWIDE_SLURM_LOGDIR"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    with open(repo_root / "workflow" / "profiles" / "slurm" / "config.yaml") as f:
        return ProfileConfigFileParser().parse(f)


def test_profile_takes_account_and_partition_from_environment(repo_root, monkeypatch):
    prof = _parse_profile(repo_root, monkeypatch, SBATCH_ACCOUNT="proj42", SBATCH_PARTITION="a100",
                          DEEPWIDE_SLURM_LOGDIR="/scratch/logs")
    assert prof["executor"] == "slurm"
    assert sorted(prof["default-resources"]) == ["slurm_account=proj42", "slurm_partition=a100"]
    assert prof["slurm-logdir"] == "/scratch/logs"
    for key in ("jobs", "latency-wait", "retries", "rerun-incomplete", "slurm-requeue"):
        assert key in prof, key
    assert prof["slurm-requeue"] == "True" and prof["rerun-incomplete"] == "True"


def test_profile_without_environment_sets_no_account(repo_root, monkeypatch):
    prof = _parse_profile(repo_root, monkeypatch)
    assert prof["default-resources"] == []
    assert prof["slurm-logdir"] == ".snakemake/slurm_logs"


def test_snakefile_parses_with_resources_include(repo_root, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(repo_root / "src"))
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "-d", str(tmp_path),
                          "-s", str(repo_root / "Snakefile"), "--configfile", str(repo_root / "workflow/configs/smoke.yaml")],
                         cwd=repo_root, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_make_install_profile_links_profile(repo_root, tmp_path):
    env = dict(os.environ, HOME=str(tmp_path))
    env.pop("XDG_CONFIG_HOME", None)
    out = subprocess.run(["make", "-s", "install-profile"], cwd=repo_root, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    link = tmp_path / ".config" / "snakemake" / "slurm"
    assert link.is_symlink() and link.resolve() == (repo_root / "workflow" / "profiles" / "slurm").resolve()
    assert (link / "config.yaml").is_file()
    # a real folder of the user's is never replaced
    link.unlink()
    link.mkdir()
    out = subprocess.run(["make", "-s", "install-profile"], cwd=repo_root, env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "exists and is not a link" in out.stderr
    assert link.is_dir() and not link.is_symlink()
