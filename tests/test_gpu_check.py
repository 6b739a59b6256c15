"""benchmarks/gpu_check.py: the studies it builds switch on every accelerator path, both
plan through the real Snakefile, and a dry run writes the JSON naming the machine."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_study_configs_switch_on_every_path(tmp_path):
    gc = _module()
    base = yaml.safe_load(gc.SMOKE.read_text())
    a = gc.study_config(base, tmp_path / "r", "cuda", "cached", True)
    b = gc.study_config(base, tmp_path / "r", "cuda", "online", True)
    assert a["teacher"]["pretrain"]["train"]["precision"] == "bf16"
    assert a["distill"]["methods"] == ["pred", "l2l"] and a["distill"]["train"]["compile"] is True
    assert (a["distill"]["targets"]["mode"], b["distill"]["targets"]["mode"]) == ("cached", "online")
    assert set(a["superb"]["tasks"]) == {"pr", "ks", "sid", "qbe"} and a["superb"]["device"] == "cuda"
    assert a["superb"]["cache_mb"] > 0
    # only the targets mode differs: study B reruns the students, not the corpora or teacher
    a["distill"]["targets"].pop("mode"), b["distill"]["targets"].pop("mode")
    assert a == b
    cpu = gc.study_config(base, tmp_path / "r", "cpu", "cached", False)
    assert cpu["teacher"]["pretrain"]["train"]["precision"] == "fp32"
    assert base["superb"]["tasks"] == ["ks"]  # the smoke config itself is untouched


def test_dry_run_plans_both_studies_and_names_the_machine(tmp_path):
    gc = _module()
    out = tmp_path / "gpu_check.json"
    rc = gc.main(["--device", "cpu", "--dry-run", "--workdir", str(tmp_path / "w"), "--out", str(out),
                  "--budget-s", "300"])
    report = json.loads(out.read_text())
    assert rc == 0, report
    assert report["machine"]["device"] == "cpu" and report["machine"]["card"].startswith("cpu")
    assert [p["status"] for p in report["parts"]] == ["ok", "ok"]
    log = (tmp_path / "w" / "snakemake_A.log").read_text()
    for rule in ("teacher_pretrain", "targets", "distill", "superb_run", "superb_qbe"):
        assert rule in log, rule


def test_checks_fail_when_a_path_ran_on_the_wrong_device(tmp_path):
    gc = _module()
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "info.json").write_text(json.dumps({"numerics": {"precision": "fp32", "device": "cpu"}}))
    checks = {c["check"]: c for c in gc.check_results(tmp_path, "cuda")}
    assert not checks["teacher pretrain precision"]["ok"]
    assert "want bf16" in checks["teacher pretrain precision"]["detail"]
    assert not checks["superb qbe"]["ok"]
    student = tmp_path / "students" / "pred" / "1x32f64h2" / "seed0"
    student.mkdir(parents=True)
    record = {"mode": "online-shared-frontend", "device": "cuda", "compile": False, "autocast": "bfloat16"}
    (student / "info.json").write_text(json.dumps(record))
    students = {c["check"]: c for c in gc.check_students(tmp_path, "cuda", True, "online")}
    assert not students["distill pred online"]["ok"]  # compile was asked for, not recorded
    (student / "info.json").write_text(json.dumps({**record, "compile": True}))
    assert gc.check_students(tmp_path, "cuda", True, "online")[0]["ok"]
    assert not gc.check_students(tmp_path, "cuda", True, "cached")[0]["ok"]
