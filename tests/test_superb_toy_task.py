"""A SUPERB task added through the registry alone: one new module (a toy keyword task on
the KS corpus and s3prl problem, under its own name) named in $DEEPWIDE_SUPERB_TASKS, plus
its section in a temp copy of the workflow's superb schema. Snakemake plans its jobs and
runs it at smoke size with FBANK as the upstream."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

TOY_MODULE = '''
from deepwide.superb.tasks.base import register
from deepwide.superb.tasks.ks import KSTask

TASK = register(KSTask(
    name="toy", problem="SuperbKS", corpus="speech_commands", metric="accuracy", higher_is_better=True,
    family="content", label="TOY", score_keys=(), metric_labels=(), rank=99,
    utterance_seconds=1.0, cost_row="ks",
))
'''


def _toy_repo(tmp_path: Path) -> Path:
    """Snakefile, workflow/, envs/ and src/ copied; the schema gets the toy task's section."""
    repo = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "src", repo / "src", ignore=ignore)
    shutil.copytree(REPO / "workflow", repo / "workflow", ignore=ignore)
    shutil.copytree(REPO / "envs", repo / "envs")
    shutil.copy(REPO / "Snakefile", repo / "Snakefile")
    path = repo / "workflow" / "schemas" / "superb.schema.yaml"
    schema = yaml.safe_load(path.read_text())
    props = schema["properties"]
    for key in ("tasks", "replicate_tasks"):
        props[key]["items"]["enum"].append("toy")
    props["toy"] = dict(props["ks"], description="toy: KS under another name")
    path.write_text(yaml.safe_dump(schema, sort_keys=False))
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "toy_task.py").write_text(TOY_MODULE)
    return repo


@pytest.mark.slow
def test_a_toy_task_plans_and_runs_through_the_registry(tmp_path):
    repo = _toy_repo(tmp_path)
    cfg = yaml.safe_load((REPO / "workflow" / "configs" / "smoke.yaml").read_text())
    results = tmp_path / "results"
    cfg["results"] = str(results)
    cfg["superb"].update(teacher=False, students=False, fbank=True, tasks=["toy"])
    cfg["superb"]["toy"] = dict(cfg["superb"]["ks"], total_steps=4, eval_step=2)
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, DEEPWIDE_SUPERB_TASKS="toy_task", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(repo / "src"), str(tmp_path / "plugins")]),
               NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    target = str(results / "superb" / "fbank" / "toy" / "selected.json")
    cmd = [SNAKEMAKE, target, "--cores", "2", "--snakefile", str(repo / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(cfg_file)]

    plan = subprocess.run([*cmd, "-n"], capture_output=True, text=True, timeout=300, env=env, check=False)
    assert plan.returncode == 0, plan.stderr[-3000:] + plan.stdout[-3000:]
    assert plan.stdout.count("rule superb_run:") == 1 and plan.stdout.count("rule superb_select:") == 1
    assert "superb/fbank/toy/heads.json" in plan.stdout

    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)
    logs = "\n".join(p.read_text() for p in (results / "logs").rglob("*.log")) if (results / "logs").is_dir() else ""
    assert run.returncode == 0, run.stderr[-3000:] + logs[-3000:]
    res = json.loads((results / "superb" / "fbank" / "toy" / "lr0.001" / "seed0" / "result.json").read_text())
    assert res["task"] == "toy" and res["metric"] == "accuracy" and res["best_step"] in (2, 4)
    assert 0.0 <= res["test_score"] <= 100.0 and res["layer_weights"] == [1.0]
    assert json.loads(Path(target).read_text())["selected_lr"] == 0.001
