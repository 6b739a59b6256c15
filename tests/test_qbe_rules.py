"""QbE wired into the pipeline: ``deepwide superb qbe`` and ``corpus prepare-extra`` on the
main CLI, superb.qbe checked at config time (missing or malformed QUESST14 root named),
the ``superb_qbe`` rule in a dry run for every upstream and the report's inputs, and one
real ``superb_qbe`` job through Snakemake on a QUESST14-layout tree."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deepwide.config import load_config
from deepwide.errors import DeepwideError
from deepwide.plan import superb as plan
from real_extra_trees import quesst14_tree

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SMOKE = REPO / "workflow" / "configs" / "smoke.yaml"


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
                OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def quesst_root(tmp_path_factory):
    return quesst14_tree(tmp_path_factory.mktemp("quesst"))


def _config(tmp: Path, qbe: dict, **superb) -> Path:
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["superb"].update(superb)
    cfg["superb"]["qbe"] = qbe
    path = tmp / "qbe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _snakemake(workdir: Path, configfile: Path, *args, targets=()):
    cmd = [SNAKEMAKE, *targets, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(configfile), "--config", f"results={workdir / 'results'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)


@pytest.mark.parametrize("argv, option", [
    (["superb", "qbe", "--help"], "--select-on-dev"),
    (["corpus", "prepare-extra", "--help"], "--sd-data-dir"),
])
def test_main_cli_reaches_qbe_and_prepare_extra(argv, option):
    res = subprocess.run([sys.executable, "-m", "deepwide", *argv], capture_output=True, text=True, env=_env(), cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    assert option in res.stdout


def test_config_time_root_check(quesst_root, tmp_path):
    cfg = load_config(_config(tmp_path, {"root": str(quesst_root)}))
    assert plan.qbe_enabled(cfg)
    assert any(line.startswith("qbe:") for line in plan.check_config(cfg))
    from deepwide.plan import Study

    assert [Study(cfg).qbe_result(u) for u in ("teacher", "fbank")] == [
        str(Path(cfg["results"]) / "superb" / u / "qbe" / "lr1" / "result.json") for u in ("teacher", "fbank")]
    args = plan.qbe_args(cfg)
    assert "--select-on-dev" in args and "--layer" not in args and args[args.index("--beta") + 1] == "999.9"
    # the folder holding quesst14Database is accepted as well (as the QbE loader does)
    plan.check_config(load_config(_config(tmp_path, {"root": str(quesst_root.parent), "layer": 2})))
    assert plan.qbe_args(load_config(_config(tmp_path, {"root": str(quesst_root), "layer": 2})))[2:4] == ["--layer", "2"]

    # off by default; qbe in tasks without a root reads the synthesized QUESST14 (or
    # corpus.quesst14.root); a disabled corpus or a missing/malformed root: named errors
    assert not plan.qbe_enabled(load_config(_config(tmp_path, {})))
    embedded = load_config(_config(tmp_path, {}, tasks=["ks", "qbe"]))
    assert plan.task_root(embedded, "qbe") == (Path(embedded["results"]) / "corpora" / "quesst14", True)
    assert Study(embedded).extra_corpora == ["quesst14"] and "qbe: " in "".join(plan.check_config(embedded))
    off = yaml.safe_load(_config(tmp_path, {}, tasks=["ks", "qbe"]).read_text())
    off["corpus"]["quesst14"] = {"enabled": False}
    (tmp_path / "off.yaml").write_text(yaml.safe_dump(off))
    with pytest.raises(DeepwideError, match=r"superb\.qbe: corpus\.quesst14 is disabled and superb\.qbe\.root is not set"):
        plan.check_config(load_config(tmp_path / "off.yaml"))
    with pytest.raises(DeepwideError, match=r"superb\.qbe: dataset root .*nope does not exist"):
        plan.check_config(load_config(_config(tmp_path, {"root": str(tmp_path / "nope")})))
    broken = tmp_path / "broken" / "quesst14Database"
    shutil.copytree(quesst_root / "scoring", broken / "scoring")
    (broken / "scoring" / "language_key_eval.lst").unlink()
    with pytest.raises(DeepwideError, match=r"superb\.qbe: dataset root .* is malformed: missing .*language_key_eval\.lst"):
        plan.check_config(load_config(_config(tmp_path, {"root": str(broken)})))


def test_dry_run_lists_qbe_for_every_upstream_and_the_report(quesst_root, tmp_path):
    path = _config(tmp_path, {"root": str(quesst_root)})
    r = _snakemake(tmp_path, path, "-n", "--cores", "1")
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    from deepwide.plan import Study

    ups = Study(load_config(path)).upstreams  # teacher, fbank and the smoke students
    assert r.stdout.count("rule superb_qbe:") >= len(ups) >= 2
    for up in ups:
        assert f"superb/{up}/qbe/lr1/result.json" in r.stdout, up
    assert "rule report_collect:" in r.stdout
    # without a root the rule does not exist; a malformed root stops the dry run, named
    r = _snakemake(tmp_path, _config(tmp_path, {}), "-n", "--cores", "1")
    assert r.returncode == 0 and "superb_qbe" not in r.stdout
    r = _snakemake(tmp_path, _config(tmp_path, {"root": str(tmp_path / "nope")}), "-n", "--cores", "1")
    assert r.returncode != 0 and "superb.qbe" in r.stderr + r.stdout


@pytest.mark.slow
def test_superb_qbe_rule_runs_a_checkpoint(quesst_root, tmp_path):
    from test_qbe import _tiny_checkpoint

    ckpt = _tiny_checkpoint(tmp_path / "tiny.pt")
    path = _config(tmp_path, {"root": str(quesst_root), "layer": 1}, teacher=False, fbank=False, students=False,
                   extra_upstreams={"tiny": str(ckpt)})
    target = tmp_path / "results" / "superb" / "tiny" / "qbe" / "lr1" / "result.json"
    r = _snakemake(tmp_path, path, "--cores", "1", targets=[str(target)])
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    rec = json.loads(target.read_text())
    assert rec["upstream"] == "tiny" and rec["task"] == "qbe" and rec["metric"] == "mtwv" and rec["lr"] == 1.0
    assert rec["layer"] == 1 and rec["layer_weights"] == [0.0, 1.0, 0.0] and rec["device"] == "cpu"
    assert rec["dtw"] == {"normalize": "global", "metric": "cosine_exp", "minmax": True, "min_query_frames": rec["dtw"]["min_query_frames"],
                          "znorm": rec["dtw"]["znorm"], "beta": 999.9}
    assert (target.parent / "eval.stdlist.xml").is_file()
    assert "layer 1" in (tmp_path / "results" / "logs" / "superb_qbe" / "tiny.log").read_text()
    # the report reads it like every task's result
    from deepwide.report.collect import read_result

    rows, weights = read_result(target)
    assert rows[0]["key"] == "QbE" and rows[0]["metric"] == "MTWV" and rows[0]["test"] == rec["test_score"]
    assert weights == [0.0, 1.0, 0.0]
