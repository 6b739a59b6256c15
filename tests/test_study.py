"""The Study: one config semantics for Snakemake and the CLI, job identity apart from
execution, targets keyed by what they hold, published numbers with their sources."""

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deepwide.identity import STAGE_VERSIONS, split_execution
from deepwide.plan import Study

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SMOKE = REPO / "workflow" / "configs" / "smoke.yaml"


def smoke(**over) -> dict:
    cfg = yaml.safe_load(SMOKE.read_text())
    for k, v in over.items():
        cfg[k] = v
    return cfg


def test_execution_keys_are_not_identity():
    study = Study.from_config(smoke())
    job = study.student_jobs[0]
    ident = study.student_identity(job)
    for key in ("num_workers", "cpu_threads", "log_every", "checkpoint_every", "compile"):
        assert key not in ident["train"], key
    assert ident["train"]["seed"] == job.seed and ident["train"]["lr"] == 0.001
    assert set(study.execution_of("distill")["train"]) == {"num_workers", "cpu_threads", "log_every",
                                                             "checkpoint_every", "compile"}
    sup = study.superb_identity("teacher", "ks", "0.001", 0)
    assert "log_step" not in sup["task"] and "save_step" not in sup["task"]
    assert sup["lr"] == "0.001" and sup["seed"] == 0
    exe = study.execution_of("superb")
    assert {"device", "num_workers", "threads", "cache_mb"} <= set(exe) and "log_step" in exe["tasks"]["ks"]
    # nested keys move out of the identity wherever they sit
    ident, exe = split_execution({"pretrain": {"threads": 3, "train": {"log_every": 5, "lr": 1.0}}}, "teacher")
    assert ident == {"pretrain": {"train": {"lr": 1.0}}}
    assert exe == {"pretrain": {"threads": 3, "train": {"log_every": 5}}}


def test_replicate_tasks_limit_later_distill_seeds():
    from deepwide.errors import DeepwideError

    cfg = smoke()
    cfg["distill"]["seeds"] = [0, 1, 2]
    cfg["superb"].update(tasks=["ks", "sid"], replicate_tasks=["sid"])
    study = Study.from_config(copy.deepcopy(cfg))
    students = {j.upstream: j.seed for j in study.student_jobs}
    sweeps = set(study.superb_sweeps)
    assert len(students) == 12 and len(sweeps) == 14 + 6  # SID: all 14 upstreams; KS: 4 seed-0 students + 2 references
    for up, seed in students.items():
        assert ((up, "ks") in sweeps) is (seed == 0) and (up, "sid") in sweeps
    assert ("teacher", "ks") in sweeps and ("fbank", "ks") in sweeps
    assert set(study.all_targets()) >= {study.superb_selected(u, t) for u, t in sweeps}
    assert not any(study.superb_selected(u, "ks") in study.all_targets() for u, s in students.items() if s)
    # null (the schema default): every task for every seed
    cfg["superb"]["replicate_tasks"] = None
    assert len(Study.from_config(copy.deepcopy(cfg)).superb_sweeps) == 2 * 14
    cfg["superb"]["replicate_tasks"] = ["asr"]
    with pytest.raises(DeepwideError, match=r"superb.replicate_tasks: asr not in superb.tasks \(ks, sid\)"):
        Study.from_config(cfg).superb_sweeps


def test_superb_students_a_list_of_methods_evaluates_those_students_only():
    """superb.students: true (every student), false (none) or a list of KD methods; the
    report then expects readouts of the evaluated students only."""
    from deepwide.errors import DeepwideError

    cfg = smoke()
    cfg["superb"]["tasks"] = ["ks"]
    every = Study.from_config(copy.deepcopy(cfg))
    cfg["superb"]["students"] = ["l2l"]
    study = Study.from_config(copy.deepcopy(cfg))
    l2l = [j.upstream for j in every.student_jobs if j.method == "l2l"]
    assert len(study.student_jobs) == len(every.student_jobs) == 2 * len(l2l)  # both methods distilled
    assert study.student_upstreams == l2l
    assert set(study.superb_sweeps) == {(u, "ks") for u in ["teacher", "fbank", *l2l]}
    assert study.report_ckas == [study.report_cka(u) for u in l2l] and len(study.report_infos) == len(l2l)
    assert set(study.report_result_files()) < set(every.report_result_files())
    # identity: a job of an evaluated student is the same job
    assert study.superb_sweep_identity(l2l[0], "ks") == every.superb_sweep_identity(l2l[0], "ks")
    cfg["superb"]["students"] = False
    assert Study.from_config(copy.deepcopy(cfg)).student_upstreams == []
    cfg["superb"]["students"] = ["pred", "l2l"]
    assert Study.from_config(copy.deepcopy(cfg)).student_upstreams == every.student_upstreams
    cfg["superb"]["students"] = ["l2l", "mse"]
    with pytest.raises(DeepwideError, match=r"superb.students: \['l2l', 'mse'\] names mse, not in distill.methods"):
        assert Study.from_config(cfg).superb_sweeps


def test_task_head_seeds_replace_superb_seeds_for_that_task_only():
    """superb.<task>.seeds: more heads for one task (one upstream pass); the other tasks keep
    superb.seeds, and the key never enters a job's task settings (only its heads list)."""
    cfg = smoke()
    cfg["superb"].update(tasks=["ks", "sid"])
    before = Study.from_config(copy.deepcopy(cfg))
    cfg["superb"]["sid"]["seeds"] = [0, 1, 2]
    study = Study.from_config(copy.deepcopy(cfg))
    assert study.superb_task_seeds("sid") == [0, 1, 2] and study.superb_task_seeds("ks") == study.superb_seeds
    assert [s for _, s in study.superb_heads("sid")] == [0, 1, 2]
    ident = study.superb_sweep_identity("fbank", "sid")
    assert "seeds" not in ident["task"] and [h[1] for h in ident["heads"]] == [0, 1, 2]
    # KS's jobs are the same jobs as without the key; SID's differ only by their heads
    assert study.superb_sweep_identity("fbank", "ks") == before.superb_sweep_identity("fbank", "ks")
    old = before.superb_sweep_identity("fbank", "sid")
    assert {k: v for k, v in ident.items() if k != "heads"} == {k: v for k, v in old.items() if k != "heads"}
    assert len([j for j in study.superb_jobs if j.task == "sid"]) == 3 * len(
        [j for j in before.superb_jobs if j.task == "sid"])


def test_identity_holds_the_jobs_own_lr_and_seed_and_a_stage_version():
    cfg = smoke()
    cfg["superb"]["ks"]["lr"] = [0.001, 0.01]
    study = Study.from_config(copy.deepcopy(cfg))
    a = json.loads(study.params("superb", **study.superb_identity("fbank", "ks", "0.001", 0)))
    cfg["superb"]["ks"]["lr"] = [0.001, 0.01, 0.1]
    more = Study.from_config(cfg)
    b = json.loads(more.params("superb", **more.superb_identity("fbank", "ks", "0.001", 0)))
    assert a == b and a["version"] == STAGE_VERSIONS["superb"]
    assert [j.lr for j in study.superb_jobs if j.upstream == "fbank"] == ["0.001", "0.01"]


def test_targets_are_keyed_by_what_they_hold():
    base = smoke()
    s1 = Study.from_config(base)
    grown = smoke()
    grown["distill"]["students"]["shapes"].append({"depth": 8, "width": 32, "ffn": 64, "heads": 2})
    grown["distill"]["methods"] = ["l2l", "pred"]
    s2 = Study.from_config(grown)
    # the key names the corpus, splits, dtype and crop policy; not the students or methods
    assert s1.targets_key == s2.targets_key
    # the smoke teacher has 2 layers: every student needs layers 1-2, one job per layer
    assert s1.targets_parts == ["layer1", "layer2", "frontend"]
    j = s1.student_job("pred", "1x32f64h2", 0)
    assert s1.student_targets(j) == [s1.targets_part_dir(p) for p in (*[f"layer{k}" for k in j.layers], "frontend")]
    other = smoke()
    other["distill"]["targets"]["dtype"] = "fp16"
    assert Study.from_config(other).targets_key != s1.targets_key
    online = smoke()
    online["distill"]["targets"]["online_methods"] = ["l2l"]
    so = Study.from_config(online)
    assert so.student_targets(so.student_job("l2l", "2x32f64h2", 0)) == []


def test_a_user_file_takes_schema_defaults_not_config_yaml(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"results": "results/mine", "superb": {"tasks": ["ks"]}}))
    study = Study.from_file(path)
    embedded = Study.from_file(REPO / "config.yaml")
    # config.yaml's solver grid (930k) is not inherited: the schema's default grid is off
    assert embedded.dcfg["students"]["grid"]["budget"] == "930k"
    assert study.dcfg["students"]["grid"] == Study.from_config({}).dcfg["students"]["grid"]
    assert study.superb_tasks == ["ks"]


def _snakemake_students(configfile: Path, workdir: Path) -> list[tuple[str, str, int]]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([SNAKEMAKE, "-n", "--cores", "1", "--snakefile", str(REPO / "Snakefile"), "--directory",
                        str(workdir), "--configfile", str(configfile)], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    found = re.findall(r"students/(\w+)/(\d+x\d+f\d+h\d+)/seed(\d+)/info\.json", r.stdout)
    return sorted({(m, s, int(n)) for m, s, n in found})


def _cli_students(configfile: Path, workdir: Path) -> list[tuple[str, str, int]]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "deepwide", "plan", "students", "--config", str(configfile), "--json"],
                       capture_output=True, text=True, env=env, cwd=workdir, timeout=300)
    assert r.returncode == 0, r.stderr
    return sorted((j["method"], j["shape"], j["seed"]) for j in json.loads(r.stdout)["jobs"])


@pytest.mark.slow
@pytest.mark.parametrize("which", ["config.yaml", "smoke.yaml", "paper.yaml", "user"])
def test_cli_and_snakemake_list_the_same_students(which, tmp_path):
    if which == "config.yaml":
        path = REPO / "config.yaml"
    elif which == "smoke.yaml":
        path = SMOKE
    elif which == "paper.yaml":
        from paper_placeholders import paper_config

        path = paper_config(tmp_path)
    else:  # a user's study setting two keys: the rest are schema defaults, not config.yaml's
        path = tmp_path / "mine.yaml"
        path.write_text(yaml.safe_dump({"distill": {"students": {"shapes": [{"depth": 2, "width": 64, "ffn": 256,
                                                                              "heads": 2}]}},
                                        "superb": {"tasks": ["ks"]}}))
    cli = _cli_students(path, tmp_path)
    assert cli, "the study has students"
    assert _snakemake_students(path, tmp_path) == cli
    if which == "user":
        assert cli == [("l2l", "2x64f256h2", 0), ("pred", "2x64f256h2", 0)]


def test_published_numbers_come_from_the_data_file_with_sources():
    from deepwide.report.score import ANCHOR_SOURCE, FBANK, PUBLISHED, SOTA, superb_score

    data = yaml.safe_load((REPO / "src" / "deepwide" / "data" / "published.yaml").read_text())
    assert FBANK["PR"] == data["anchors"]["FBANK"][0] and SOTA["ER"] == data["anchors"]["SOTA"][-1]
    assert "leaderboard" in ANCHOR_SOURCE.lower()
    for name, pub in PUBLISHED.items():
        assert "arXiv" in pub["source"], name
    assert round(superb_score(PUBLISHED["HuBERT Base"]["metrics"], FBANK, SOTA)) == 941


def test_envs_folder_and_the_project_cites_no_file_outside_it():
    # envs/ holds the conda env of `snakemake --sdm conda` (issue 22; tests/test_envs.py)
    assert (REPO / "envs" / "deepwide.yaml").is_file()
    for path in [*(REPO / "src").rglob("*.py"), *(REPO / "workflow").rglob("*.smk"), REPO / "README.md"]:
        assert "DESIGN.md" not in path.read_text(), path


def test_teacher_depth_of_an_import_comes_from_its_config(tmp_path):
    import argparse

    import torch

    from deepwide.errors import DeepwideError
    from deepwide.models.convert import checkpoint_depth

    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "hubert", "num_hidden_layers": 6}))
    assert checkpoint_depth("hf", hf) == 6
    torch.save({"cfg": {"model": {"encoder_layers": 9}}, "model": {}}, tmp_path / "fs.pt")
    assert checkpoint_depth("fairseq", tmp_path / "fs.pt") == 9
    torch.save({"args": argparse.Namespace(encoder_layers=3), "model": {}}, tmp_path / "old.pt")
    assert checkpoint_depth("fairseq", tmp_path / "old.pt") == 3
    torch.save({"task_cfg": {}, "model_cfg": {"encoder_layers": 24}, "model_weight": {}}, tmp_path / "s3.pt")
    assert checkpoint_depth("s3prl-hubert", tmp_path / "s3.pt") == 24
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{}")
    with pytest.raises(DeepwideError, match="num_hidden_layers"):
        checkpoint_depth("hf", tmp_path / "bad")
    cfg = smoke(teacher={"source": "import", "import": {"format": "fairseq", "path": str(tmp_path / "fs.pt")}})
    assert Study.from_config(cfg).teacher_depth == 9


def test_the_chain_to_the_students_goes_first(tmp_path):
    """Jobs on the way to the students carry a Snakemake priority (the scheduler starts the
    teacher before FBANK's SUPERB jobs); every other job keeps the default."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([SNAKEMAKE, "-n", "--cores", "2", "--snakefile", str(REPO / "Snakefile"), "--directory",
                        str(tmp_path), "--configfile", str(REPO / "config.yaml")], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    priorities: dict[str, set[int]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", r.stdout):
        if m := re.match(r"(?:local)?rule (\w+):", block):
            p = re.search(r"^\s+priority: (\d+)$", block, re.M)
            priorities.setdefault(m.group(1), set()).add(int(p.group(1)) if p else 0)
    chain = {"synth_librispeech", "prepare_librispeech", "teacher_pretrain", "targets", "distill"}
    assert chain <= set(priorities)
    for rule, seen in priorities.items():
        assert seen == ({10} if rule in chain else {0}), (rule, seen)
    study = Study.from_config(smoke())
    assert study.priority("superb_run") == 0 and study.priority("synth_voxceleb1") == 0


def test_teacher_pretrain_on_a_list_of_splits_gets_one_manifest_input_each():
    from deepwide.errors import DeepwideError

    study = Study.from_config(smoke())
    def man(split: str) -> str:
        return str(study.results / "manifests" / "librispeech" / f"{split}.parquet")

    assert study.teacher_pretrain_manifests() == {"train": man("train-clean-100"), "valid": man("dev-clean")}
    cfg = smoke()
    cfg["corpus"]["librispeech"]["synth"]["train_360_speakers"] = 2
    cfg["corpus"]["librispeech"]["splits"] = ["train-clean-100", "train-clean-360", "dev-clean", "test-clean"]
    cfg.setdefault("teacher", {}).setdefault("pretrain", {})["train_split"] = ["train-clean-100", "train-clean-360"]
    study = Study.from_config(cfg)
    assert study.teacher_pretrain_manifests() == {"train": [man("train-clean-100"), man("train-clean-360")],
                                                  "valid": man("dev-clean")}
    study.check_corpora()
    study.check_teacher()
    assert man("train-clean-360") in study.manifests("librispeech")
    # a split no prepare job writes: a config error before any job, naming the keys
    cfg["corpus"]["librispeech"]["splits"] = ["train-clean-100", "dev-clean", "test-clean"]
    with pytest.raises(DeepwideError, match=r"teacher\.pretrain\.train_split: train-clean-360 .*corpus\.librispeech\.splits"):
        Study.from_config(cfg).check_teacher()
