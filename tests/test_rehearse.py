"""``plan rehearse``: the rehearsal config of a study, its dry run, and a small real run."""

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from repo_paths import PAPER, REPO, SMOKE, SNAKEMAKE

from deepwide.errors import DeepwideError
from deepwide.plan import Study
from deepwide.plan.rehearse import REHEARSAL_RESULTS, rehearse, write_rehearsal
from deepwide.plan.teacher import PLAN_TEACHER_DEPTH, random_arch


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
                OMP_NUM_THREADS="1")


def test_paper_rehearsal_replaces_what_is_missing_and_keeps_what_exists():
    paper, smoke = _yaml(PAPER), _yaml(SMOKE)
    before = copy.deepcopy(paper)
    # VoxCeleb1 "exists here": its root is kept; every other root of paper.yaml is missing
    r = rehearse(paper, "paper", smoke, exists=lambda p: p == "/data/VoxCeleb1")
    assert paper == before  # pure
    assert r["results"] == f"{REHEARSAL_RESULTS}/paper" and r["rehearsal"]["results"] == "results/paper"
    c = r["corpus"]
    assert c["voxceleb1"]["root"] == "/data/VoxCeleb1" and "synth" not in c["voxceleb1"]
    for name in ("librispeech", "speech_commands", "fluent_speech_commands", "iemocap"):
        assert c[name]["root"] is None and c[name]["synth"] == smoke["corpus"][name]["synth"]
    assert "test_root" not in c["speech_commands"]
    assert c["librispeech"]["splits"] == ["train-clean-100", "dev-clean", "test-clean"]
    assert r["distill"]["splits"] == ["train-clean-100"]
    sup = r["superb"]
    assert "root" not in sup["sd"] and "root" not in sup["sf"] and "root" not in sup["qbe"]
    assert "lexicon" not in sup["pr"] and "qbe" in sup["tasks"]  # QbE was enabled by its root
    assert r["teacher"]["source"] == "random" and r["teacher"].get("random", {}).get("arch", {}) == {}
    # steps cut to the smoke sizes, real shapes and official heads kept
    assert r["distill"]["train"]["steps"] == smoke["distill"]["train"]["steps"]
    assert r["rehearsal"]["cut"]["distill.train.steps"] == [200000, smoke["distill"]["train"]["steps"]]
    for task in paper["superb"]["tasks"]:
        assert sup[task]["total_steps"] == sup[task]["eval_step"] == smoke["superb"][task]["eval_step"]
        assert sup[task].get("downstream", {}) == paper["superb"][task].get("downstream", {})
    assert sup["num_workers"] == 0 and r["distill"]["train"]["num_workers"] == 0
    assert r["report"]["cost"] == smoke["report"]["cost"]
    assert r["distill"]["students"]["conv_channels"] == 512
    # thinning: one shape per init kind, no grid (same code as the shapes), one lr, one fold
    assert [s["width"] for s in r["distill"]["students"]["shapes"]] == [768, 384]
    assert r["distill"]["students"]["grid"]["depths"] == []
    assert sup["sid"]["lr"] == [1.0e-4] and sup["er"]["folds"] == [0]
    assert r["distill"]["methods"] == ["pred", "l2l"]
    # both methods are distilled (different code), only pred's students run SUPERB (the same code)
    assert sup["students"] == ["pred"]
    assert "superb.students: 2 -> 1 (the pred students only: pred and l2l students of one shape run the same " \
           "SUPERB code path)" in r["rehearsal"]["thinned"]
    assert len(r["rehearsal"]["thinned"]) == 5

    study = Study.from_config(r)
    assert study.teacher_depth == PLAN_TEACHER_DEPTH
    assert {"teacher_random", "distill", "superb_run", "superb_qbe", "synth_librimix"} <= set(study.rule_classes())
    assert "teacher_import" not in study.rule_classes()
    assert {j.method for j in study.student_jobs} == {"pred", "l2l"}
    assert {u.split("-")[0] for u in study.student_upstreams} == {"pred"}
    assert {u for u, _ in study.superb_sweeps} == {"teacher", "fbank", *study.student_upstreams}


def test_students_of_one_method_or_an_explicit_list_are_not_thinned():
    smoke = _yaml(SMOKE)
    one = copy.deepcopy(smoke)
    one["distill"]["methods"] = ["l2l"]
    listed = copy.deepcopy(smoke)
    listed["superb"]["students"] = ["l2l"]
    for cfg in (one, listed):
        r = rehearse(cfg, "s", smoke, exists=lambda p: False)
        assert r["superb"].get("students") == cfg["superb"].get("students")
        assert not any(line.startswith("superb.students") for line in r["rehearsal"]["thinned"])


def test_embedded_train_clean_360_is_kept_at_smoke_size_and_a_teachers_list_follows_the_splits():
    smoke = _yaml(SMOKE)
    study = _yaml(REPO / "config.yaml")
    study["corpus"]["librispeech"]["synth"]["train_360_speakers"] = 40
    study["corpus"]["librispeech"]["splits"] = ["train-clean-100", "train-clean-360", "dev-clean", "test-clean"]
    study["teacher"]["pretrain"]["train_split"] = ["train-clean-100", "train-clean-360"]
    r = rehearse(study, "config", smoke, exists=lambda p: False)
    libri = r["corpus"]["librispeech"]
    assert libri["synth"]["train_360_speakers"] == smoke["corpus"]["librispeech"]["synth"]["train_speakers"]
    assert "train-clean-360" in libri["splits"]
    assert r["teacher"]["pretrain"]["train_split"] == ["train-clean-100", "train-clean-360"]
    # a real LibriSpeech missing here: the embedded one has no train-clean-360 (nor train-other-500)
    paper = _yaml(PAPER)
    paper["teacher"].setdefault("pretrain", {})["train_split"] = ["train-clean-100", "train-clean-360", "train-other-500"]
    r = rehearse(paper, "paper", smoke, exists=lambda p: False)
    assert r["teacher"]["pretrain"]["train_split"] == ["train-clean-100"]
    Study.from_config(r).check_teacher()


def test_a_grid_only_study_keeps_its_shallowest_grid_depth():
    paper = _yaml(PAPER)
    paper["distill"]["students"]["shapes"] = []
    r = rehearse(paper, "grid", _yaml(SMOKE), exists=lambda p: False)
    assert r["distill"]["students"]["grid"]["depths"] == [2]


def test_random_teacher_arch_defaults_to_hubert_base_and_names_the_key():
    cfg = Study.from_file(SMOKE, {"teacher": {"source": "random"}}).config
    assert random_arch(cfg).depth == PLAN_TEACHER_DEPTH and random_arch(cfg).width == 768
    small = Study.from_file(SMOKE, {"teacher": {"source": "random", "random": {"arch": {"depth": 3, "width": 32, "heads": 2, "conv_channels": 16}}}})
    assert small.teacher_depth == 3 and random_arch(small.config).conv[0][0] == 16
    with pytest.raises(DeepwideError, match="teacher.random.arch"):
        Study.from_file(SMOKE, {"teacher": {"source": "random", "random": {"arch": {"width": 30, "heads": 4}}}}).check_teacher()


@pytest.mark.slow
def test_paper_rehearsal_dry_run_runs_every_rule(tmp_path):
    out = tmp_path / "rehearsal.yaml"
    cli = subprocess.run([sys.executable, "-m", "deepwide", "plan", "rehearse", "--config", str(PAPER), "--out", str(out)],
                         check=False, capture_output=True, text=True, env=_env(), timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert "teacher: import of /data/models/hubert_base_ls960.pt" in cli.stdout and out.read_text().startswith("# Rehearsal of")
    dry = subprocess.run([SNAKEMAKE, "-n", "--cores", "2", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                          "--configfile", str(out)], check=False, capture_output=True, text=True, env=_env(), timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:] + dry.stdout[-3000:]
    ran = set(re.findall(r"^(\w+)\s+\d+$", dry.stdout.split("Job stats:")[1], re.MULTILINE)) - {"total"}
    expected = set(Study.from_config(_yaml(out)).rule_classes()) | {"all"}
    assert ran == expected and "teacher_random" in ran


@pytest.mark.slow
def test_rehearsal_of_a_study_without_its_teacher_runs(tmp_path):
    """The smoke study importing a checkpoint that is not here: its rehearsal draws a random
    teacher of the configured shape, distils both methods and evaluates KS end to end."""
    smoke = _yaml(SMOKE)
    arch = smoke["teacher"]["pretrain"]["arch"]
    smoke["teacher"] = {"source": "import", "import": {"format": "fairseq", "path": str(tmp_path / "missing.pt")},
                        "random": {"arch": arch}}
    for name in ("voxceleb1", "fluent_speech_commands", "iemocap"):  # KS needs none of them
        smoke["corpus"][name]["enabled"] = False
    study_cfg = tmp_path / "study.yaml"
    study_cfg.write_text(yaml.safe_dump(smoke))
    out, derived = write_rehearsal(study_cfg, tmp_path / "rehearsal.yaml")
    assert derived["teacher"]["source"] == "random"
    run = subprocess.run([SNAKEMAKE, "--cores", "2", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                          "--configfile", str(out)], check=False, capture_output=True, text=True, env=_env(), timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    results = tmp_path / derived["results"]
    info = json.loads((results / "teacher" / "info.json").read_text())
    assert info["source"] == "random" and info["arch"]["depth"] == arch["depth"] and "usage" in info
    assert len(list(results.glob("students/*/*/seed*/info.json"))) == 2  # pred and l2l, one shape
    assert (results / "report" / "tables" / "results.md").is_file()
