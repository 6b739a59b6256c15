"""envs/ for `snakemake --sdm conda`: the conda env holds requirements.txt's pins, every rule
names it, and plain snakemake keeps the interpreter that runs it (the .venv)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys

import yaml


def _requirements(repo_root) -> list[str]:
    lines = (repo_root / "requirements.txt").read_text().splitlines()
    return [s for s in (line.split("#", 1)[0].strip() for line in lines) if s]


def _env_pip(env: dict) -> list[str]:
    pips = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pips) == 1, "one pip section"
    return pips[0]


def test_env_file_has_exactly_the_requirements_pins(repo_root):
    env = yaml.safe_load((repo_root / "envs" / "deepwide.yaml").read_text())
    pins = _env_pip(env)
    req = _requirements(repo_root)
    assert all("==" in p for p in req), "requirements.txt is a freeze: every line pinned"
    missing = sorted(set(req) - set(pins))
    extra = sorted(set(pins) - set(req))
    assert not missing and not extra, f"envs/deepwide.yaml and requirements.txt differ: missing {missing}, extra {extra} (run `make envs`)"
    # the conda side adds only the interpreter and pip; its minor version is the .venv's
    conda_deps = [d for d in env["dependencies"] if isinstance(d, str)]
    assert sorted(d.split("=")[0] for d in conda_deps) == ["pip", "python"]
    assert f"python={sys.version_info.major}.{sys.version_info.minor}" in conda_deps


def test_generator_reproduces_the_committed_file(repo_root):
    sys.path.insert(0, str(repo_root / "envs"))
    try:
        import generate
    finally:
        sys.path.pop(0)
    assert generate.render(repo_root / "requirements.txt") == (repo_root / "envs" / "deepwide.yaml").read_text()


def test_every_rule_names_the_conda_env(repo_root):
    for smk in sorted((repo_root / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        rules = len(re.findall(r"^\s*rule\b", text, flags=re.M))
        condas = len(re.findall(r"^\s*conda:\n\s*CONDA_ENV\n", text, flags=re.M))
        assert rules == condas, f"{smk.name}: {rules} rules, {condas} with `conda: CONDA_ENV`"


def _fake_conda(tmp_path):
    """`conda` that answers only what snakemake asks before building the DAG (no channel is
    reachable here, so no environment can be created): enough for dry runs and listings."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    conda = bin_dir / "conda"
    conda.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        '  "--version") echo "conda 24.7.1";;\n'
        '  "info --json") printf \'{"conda_prefix": "/nonexistent", "platform": "linux-64"}\\n\';;\n'
        '  "config --get channel_priority --json") echo \'{"get": {"channel_priority": "strict"}}\';;\n'
        '  *) echo "fake conda: refusing $*" >&2; exit 1;;\n'
        "esac\n"
    )
    conda.chmod(conda.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def _snakemake(repo_root, tmp_path, *args, path=None):
    env = dict(os.environ)
    if path:
        env["PATH"] = f"{path}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "-s", str(repo_root / "Snakefile"),
         "--configfile", str(repo_root / "config.yaml"), "--directory", str(tmp_path), *args],
        capture_output=True, text=True, env=env, timeout=300,
    )


def test_sdm_conda_lists_the_env_and_dry_runs(repo_root, tmp_path):
    fake = _fake_conda(tmp_path)
    listed = _snakemake(repo_root, tmp_path, "--sdm", "conda", "--list-conda-envs", path=fake)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert re.search(r"envs/deepwide\.yaml\s+\S*\.snakemake/conda/[0-9a-f]+", listed.stdout + listed.stderr)
    dry = _snakemake(repo_root, tmp_path, "-n", "--sdm", "conda", path=fake)
    assert dry.returncode == 0, dry.stderr[-3000:]


def test_plain_snakemake_needs_no_conda(repo_root, tmp_path):
    # no conda on PATH at all: without --sdm conda the conda: directives are ignored
    env_path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                               if not (os.path.exists(os.path.join(p, "conda"))))
    env = dict(os.environ, PATH=env_path)
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "-s", str(repo_root / "Snakefile"),
         "--configfile", str(repo_root / "config.yaml"), "--directory", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]


def test_snakemake_parses_the_env_of_every_rule(repo_root, tmp_path):
    """rule -> conda env as Snakemake itself parses the workflow under --sdm conda (no conda
    command is needed to parse; `snakemake -n` does not print the env per job)."""
    from pathlib import Path

    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, DeploymentMethod, DeploymentSettings, OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings(quiet=set())) as api:
        wf = api.workflow(
            snakefile=repo_root / "Snakefile", workdir=tmp_path,
            config_settings=ConfigSettings(configfiles=[repo_root / "config.yaml"]),
            resource_settings=ResourceSettings(cores=1),
            deployment_settings=DeploymentSettings(deployment_method={DeploymentMethod.CONDA}),
        )
        envs = {r.name: r.conda_env for r in wf._workflow.rules if r.name != "all"}
    assert len(envs) > 20
    assert {str(Path(e)) for e in envs.values()} == {str(repo_root / "envs" / "deepwide.yaml")}
