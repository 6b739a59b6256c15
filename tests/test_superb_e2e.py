"""KS end to end through s3prl's SuperbKS with a tiny random deepwide checkpoint as
upstream, run by Snakemake on the smoke config with two learning rates + selection."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from deepwide.models import ArchConfig, build_model, save_checkpoint
from deepwide.models.arch import conv_layers

from superb_tiny import REPO, deepwide_env


def tiny_checkpoint(path: Path, depth: int = 2) -> Path:
    arch = ArchConfig(depth=depth, width=32, ffn=64, heads=2, conv=conv_layers(32), pos_conv_kernel=16, pos_conv_groups=4)
    torch.manual_seed(0)
    save_checkpoint(path, build_model(arch), arch, {"source": "test"})
    return path


def _home_s3prl_cache():
    home = Path.home() / ".cache" / "s3prl"
    return sorted((str(p), p.stat().st_mtime_ns) for p in home.rglob("*")) if home.exists() else []


def _snakemake(tmp_path: Path, config: dict, target: Path, *args: str) -> subprocess.CompletedProcess:
    """Snakemake (2 cores) for ``target`` on ``config``, written to TMP/config.yaml."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    snakemake = Path(sys.executable).with_name("snakemake")
    return subprocess.run([str(snakemake), str(target), "--cores", "2", *args, "--configfile", str(cfg)],
                          cwd=REPO, env=deepwide_env(), capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_ks_two_lrs_through_snakemake(tmp_path):
    """The corpus stage synthesizes the smoke Speech Commands; SuperbKS runs on it."""
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    smoke = yaml.safe_load((REPO / "workflow" / "configs" / "smoke.yaml").read_text())
    results = tmp_path / "results"
    smoke["results"] = str(results)
    sup = smoke["superb"]
    sup.update(teacher=False, fbank=False, students=False, extra_upstreams={"tiny": str(ckpt)}, tasks=["ks"])
    sup["ks"] = dict(sup["ks"], lr=[0.001, 0.01])
    # only the superb targets (and the one corpus they need)
    proc = _snakemake(tmp_path, smoke, results / "superb" / "tiny" / "ks" / "selected.json", "-p")
    logs = "\n".join(p.read_text() for p in (results / "logs").rglob("*.log")) if (results / "logs").is_dir() else ""
    assert proc.returncode == 0, proc.stderr[-4000:] + logs[-4000:]

    runs = {}
    for lr in ("0.001", "0.01"):
        job = results / "superb" / "tiny" / "ks" / f"lr{lr}" / "seed0"
        res = json.loads((job / "result.json").read_text())
        runs[lr] = res
        assert res["upstream"] == "tiny" and res["task"] == "ks" and res["lr"] == float(lr) and res["seed"] == 0
        assert res["metric"] == "accuracy" and res["higher_is_better"] is True
        assert 0.0 <= res["dev_score"] <= 100.0 and 0.0 <= res["test_score"] <= 100.0
        assert res["best_step"] in (4, 8)
        assert res["device"] == "cpu" and res["runtime_s"] > 0
        w = res["layer_weights"]
        assert len(w) == 3 and all(x > 0 for x in w)  # depth 2 -> 3 hidden states
        assert math.isclose(sum(w), 1.0, rel_tol=1e-5)
        # the weights were learned (moved off the uniform start)
        assert max(abs(x - 1 / 3) for x in w) > 1e-5
        preds = (job / "predictions" / "predictions.tsv").read_text().splitlines()
        test_csv = next(job.glob("work-*/test.csv")).read_text().splitlines()
        assert preds[0] == "id\tprediction\tlabel" and len(preds) == len(test_csv) > 12  # 12 classes at least
        assert (job / "s3prl.log").read_text().count("Stage 3") >= 1
        # the test score is s3prl's own, recomputed from the dumped predictions
        rows = [r.split("\t") for r in preds[1:]]
        assert math.isclose(res["test_score"], 100 * sum(p == lab for _, p, lab in rows) / len(rows), abs_tol=1e-6)
        # and the report's per-item reader gives the same items and score (the verdict's pairing)
        from deepwide.superb.items import score_of, test_items

        items = test_items("KS", job / "predictions")
        assert len(items["item"]) == len(rows) and math.isclose(score_of(items), res["test_score"], abs_tol=1e-6)

    sel = json.loads((results / "superb" / "tiny" / "ks" / "selected.json").read_text())
    best = max(runs.values(), key=lambda r: (r["dev_score"], -r["lr"]))
    assert sel["selected_lr"] == best["lr"] and sel["test_score"] == best["test_score"]
    assert sorted(c["lr"] for c in sel["candidates"]) == [0.001, 0.01]


@pytest.mark.slow
def test_pr_with_fbank_on_smoke_librispeech(tmp_path):
    """PR through SuperbPR on the corpus stage's smoke LibriSpeech with the FBANK upstream:
    the phone lexicon s3prl would download is written offline and covers every word."""
    smoke = yaml.safe_load((REPO / "workflow" / "configs" / "smoke.yaml").read_text())
    results = tmp_path / "results"
    smoke["results"] = str(results)
    proc = _snakemake(tmp_path, smoke, results / "corpora" / "librispeech")
    assert proc.returncode == 0, proc.stderr[-3000:]
    from deepwide.plan import Study

    study = Study.from_config(smoke)
    home_cache_before = _home_s3prl_cache()
    job = study.superb_identity("fbank", "pr", "0.01", 0)  # one head (the superb_run rule passes the task's heads)
    job["task"].update(total_steps=6, eval_step=3, batch_size=4)
    out = results / "superb" / "fbank" / "pr" / "lr0.01" / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "deepwide", "superb", "run", "--task", "pr", "--upstream-name", "fbank", "--upstream", "fbank",
         "--lr", "0.01", "--root", str(results / "corpora" / "librispeech"), "--embedded", "--cfg", json.dumps(job),
         "--exec-json", study.execution_json("superb"), "--cache", str(results / "superb" / "cache"), "--threads", "1", "--out", str(out)],
        cwd=REPO, env=deepwide_env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(out.read_text())
    assert res["metric"] == "per" and res["higher_is_better"] is False and res["unit"] == "%"
    assert res["layer_weights"] == [1.0]  # FBANK is a single "layer"
    assert res["test_score"] > 0 and res["best_step"] in (3, 6)
    hyp = (out.parent / "predictions" / "hyp").read_text().splitlines()
    ref = (out.parent / "predictions" / "ref").read_text().splitlines()
    assert len(hyp) == len(ref) > 0
    # the PER's test-set standard error over utterances, from the same dumps s3prl scored
    from deepwide.superb.runner import error_rate_se

    er = error_rate_se(next((out.parent / "work-").parent.glob("work-*")))
    assert er["rate"] == pytest.approx(res["test_score"], abs=1e-6) and er["utterances"] == len(ref)
    assert res["test_se"] == pytest.approx(er["se"]) and 0 < res["test_se"] < 100
    from deepwide.superb.items import score_of, test_items

    items = test_items("PR", out.parent / "predictions")
    assert len(items["item"]) == len(ref) and score_of(items) == pytest.approx(res["test_score"], abs=1e-6)
    assert _home_s3prl_cache() == home_cache_before  # nothing went to ~/.cache/s3prl
    lexicons = list((results / "superb" / "cache" / "download").glob("*lexicon*g2p.txt"))
    assert len(lexicons) == 2
