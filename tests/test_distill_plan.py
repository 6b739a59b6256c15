"""The students a config describes: shapes + solver grid, per-job settings (through the Study)."""

import copy
import json
import subprocess
import sys

import pytest

from deepwide.config import load_config, validate_config
from deepwide.distill.spec import layers_for
from deepwide.errors import DeepwideError
from deepwide.models.arch import build_model
from deepwide.models.solver import count_params, parse_budget
from deepwide.plan import Study


def study_plan(cfg):
    return Study(cfg)


def test_embedded_default_students_match_the_solver(repo_root):
    cfg = load_config(repo_root / "config.yaml")
    plan = study_plan(cfg)
    grid = cfg["distill"]["students"]["grid"]
    assert sorted(a.depth for a in plan.students.values()) == grid["depths"] == [1, 2, 4]
    # six distillation seeds of each: the verdict's replicates
    assert plan.methods == ["pred"] and len(plan.student_jobs) == 18 and plan.distill_seeds == [0, 1, 2, 3, 4, 5]
    budget = parse_budget(grid["budget"])
    for name, a in plan.students.items():
        n = count_params(a)
        assert n == sum(p.numel() for p in build_model(a).parameters()), name
        assert abs(n - budget) / budget < 0.05, (name, n)
        assert a.conv[0][0] == 128  # the embedded teacher's front end, so init teacher_frontend works


def test_cli_lists_students_with_solver_counts(repo_root):
    r = subprocess.run([sys.executable, "-m", "deepwide", "plan", "students", "--config", str(repo_root / "config.yaml"),
                        "--json"], capture_output=True, text=True, cwd=repo_root)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    plan = study_plan(load_config(repo_root / "config.yaml"))
    assert {s["shape"]: s["params"] for s in out["students"]} == {n: count_params(a) for n, a in plan.students.items()}


def _cfg(**distill):
    return validate_config({"distill": distill})


def _ident(study, method, shape, seed=0):
    return study.params("distill", **study.student_identity(study.student_job(method, shape, seed)))


def test_job_settings_are_per_method_and_shape():
    base = {"students": {"shapes": [{"depth": 2, "width": 64, "ffn": 256, "heads": 2},
                                    {"depth": 4, "width": 64, "ffn": 256, "heads": 2}]}}
    a = study_plan(_cfg(**base))
    changed = copy.deepcopy(base)
    changed["l2l"] = {"student_layers": [2]}
    b = study_plan(_cfg(**changed))
    for shape in a.students:
        assert _ident(a, "pred", shape) == _ident(b, "pred", shape)
        assert _ident(a, "l2l", shape) != _ident(b, "l2l", shape)
    # adding a student or a seed changes no existing job
    more = copy.deepcopy(base)
    more["students"]["shapes"].append({"depth": 8, "width": 64, "ffn": 256, "heads": 2})
    more["seeds"] = [0, 3]
    c = study_plan(_cfg(**more))
    for j in a.student_jobs:
        assert _ident(a, j.method, j.shape) == _ident(c, j.method, j.shape)
    assert len(c.student_jobs) == 2 * 3 * 2
    assert a.targets_key == c.targets_key
    assert c.student_identity(c.student_job("pred", "2x64f256h2", 3))["train"]["seed"] == 3


def test_online_methods_have_no_cache():
    p = study_plan(_cfg(students={"shapes": [{"depth": 2, "width": 64, "ffn": 256, "heads": 2}]},
                        targets={"online_methods": ["l2l"]}))
    assert p.student_targets(p.student_job("l2l", "2x64f256h2", 0)) == []
    assert p.student_targets(p.student_job("pred", "2x64f256h2", 0))
    assert p.student_identity(p.student_job("l2l", "2x64f256h2", 0))["targets"]["mode"] == "online"


def test_layers_for_methods():
    assert layers_for("pred", {"layers": None, "num_targets": 3}, [], 12) == [4, 8, 12]
    assert layers_for("l2l", {"student_layers": None, "pairs": None}, [2, 3], 12) == [4, 6, 8, 12]


def test_bad_study_configs():
    with pytest.raises(DeepwideError, match="frozen.*needs distill.init"):
        study_plan(_cfg(init="random", frontend="frozen")).students
    with pytest.raises(DeepwideError, match=r"distill.students.shapes\[0\].*heads"):
        study_plan(_cfg(students={"shapes": [{"depth": 2, "width": 64, "ffn": 256, "heads": 3}]})).students
    with pytest.raises(DeepwideError, match="already used"):
        study_plan(_cfg(students={"shapes": [{"depth": 2, "width": 64, "ffn": 256, "heads": 2},
                                             {"depth": 2, "width": 64, "ffn": 256, "heads": 2, "conv_channels": 64}]})).students
    with pytest.raises(DeepwideError, match="distill.students.grid"):
        study_plan(_cfg(students={"grid": {"budget": "1k", "depths": [2]}})).students
    with pytest.raises(DeepwideError, match="config key distill.methods"):
        validate_config({"distill": {"methods": ["fitnets"]}})


@pytest.mark.slow
def test_every_embedded_student_trains_from_the_embedded_teacher_shape(repo_root, tmp_path):
    """Each grid student of config.yaml (its first seed), a few steps with the default job
    settings, from a random teacher of the shape the teacher stage pretrains by default."""
    import torch

    from _distill_data import make_corpus, make_teacher
    from deepwide.distill import targets
    from deepwide.distill.trainer import train
    from deepwide.models.arch import conv_layers

    torch.set_num_threads(1)
    cfg = load_config(repo_root / "config.yaml")
    t = cfg.get("teacher", {}).get("pretrain", {}).get("arch") or {
        "depth": 4, "width": 256, "ffn": 1024, "heads": 4, "conv_channels": 128, "pos_conv_kernel": 64,
        "pos_conv_groups": 16}
    teacher = make_teacher(tmp_path / "teacher.pt", depth=t["depth"], width=t["width"], ffn=t["ffn"], heads=t["heads"],
                           conv=conv_layers(t["conv_channels"]), pos_conv_kernel=t["pos_conv_kernel"],
                           pos_conv_groups=t["pos_conv_groups"])
    manifest = make_corpus(tmp_path / "corpus", n=6)
    plan = study_plan(cfg)
    assert plan.teacher_depth == t["depth"]
    caches = {}
    for part in plan.targets_parts:
        layers = [] if part == "frontend" else [int(part[5:])]
        # the study's crop policy (fixed windows by default), as its targets rule extracts them
        targets.extract(teacher, [manifest], layers, tmp_path / part, frontend=part == "frontend", crop=plan.targets_crop)
        caches[part] = tmp_path / part
    for j in [j for j in plan.student_jobs if j.seed == plan.distill_seeds[0]]:
        job = plan.student_identity(j)
        job["train"].update(steps=2, log_every=1, checkpoint_every=1, num_workers=0, cpu_threads=1, compile=False)
        dirs = [caches[p.rsplit("/", 1)[-1]] for p in plan.student_targets(j)]
        info = train(job, teacher, [manifest], tmp_path / "s" / j.method / j.shape, tmp_path / "r" / j.method / j.shape,
                     targets_dirs=dirs)
        assert info["mode"] == "cached-targets+cached-frontend"
        assert info["params"] == count_params(plan.students[j.shape])
