"""Shared-pass sweeps: K heads on one upstream pass equal K separate s3prl runs."""

from __future__ import annotations

import json

import pytest
import torch

from deepwide.superb.runner import run_job, run_sweep
from superb_tiny import KS_TCFG, tiny_ks
from test_superb_e2e import tiny_checkpoint


def _same(a: dict, b: dict):
    assert a["best_step"] == b["best_step"]
    assert a["dev_score"] == pytest.approx(b["dev_score"], abs=1e-9)
    assert a["test_score"] == pytest.approx(b["test_score"], abs=1e-9)
    for k, v in a["folds"][0]["dev_metrics"].items():
        assert v == pytest.approx(b["folds"][0]["dev_metrics"][k], rel=1e-4, abs=1e-6), k
    assert a["layer_weights"] == pytest.approx(b["layer_weights"], rel=1e-4, abs=1e-6)


def _head_state(result: dict) -> dict:
    from pathlib import Path

    return torch.load(Path(result["work_dir"]) / "train" / "valid_best" / "model" / "state_dict.pt", weights_only=True)


def _tiny_ks_job(tmp_path) -> dict:
    """The arguments of a KS job on a tiny corpus and a tiny checkpoint, less its heads."""
    root = tiny_ks(tmp_path / "ks")
    up = {"kind": "deepwide", "path": str(tiny_checkpoint(tmp_path / "tiny.pt")), "cache_mb": 0}
    return dict(task="ks", upstream_name="tiny", upstream=up, root=root, tcfg=KS_TCFG, cache_root=tmp_path / "cache",
                device="cpu", num_workers=0)


def test_shared_pass_sweep_equals_separate_runs(tmp_path):
    common = _tiny_ks_job(tmp_path)
    heads = [(1e-3, 0), (1e-2, 0), (1e-2, 1)]
    separate = [run_job(lr=lr, seed=seed, out_dir=tmp_path / "sep" / f"lr{lr:g}" / f"seed{seed}", **common) for lr, seed in heads]
    from deepwide.superb import sweep

    swept = run_sweep(heads=[(lr, seed, tmp_path / "sw" / f"lr{lr:g}" / f"seed{seed}") for lr, seed in heads], **common)
    assert sweep.STATS["heads"] == 3 and sweep.STATS["groups"] == 1
    # one upstream pass per training batch serves all three heads
    assert sweep.STATS["upstream_passes"] * 3 == sweep.STATS["upstream_calls"]
    for a, b in zip(separate, swept):
        _same(a, b)
        assert b["sweep"]["shared_pass"] is True
        assert b["usage"]["peak_rss_mb"] > 0 and b["usage"]["wall_s"] > 0  # the job's, for plan resources
        sa, sb = _head_state(a), _head_state(b)
        assert sa.keys() == sb.keys()
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], rtol=1e-4, atol=1e-6)
    # the heads really differ (different lr / seed), so the test above means something
    assert swept[0]["layer_weights"] != pytest.approx(swept[1]["layer_weights"], abs=1e-7)
    for lr, seed in heads:
        assert (tmp_path / "sw" / f"lr{lr:g}" / f"seed{seed}" / "result.json").is_file()


def test_added_lr_restores_finished_heads_and_resumes(tmp_path, monkeypatch):
    """Rerun rule: a job for [old lrs + a new lr] retrains only the new head; a head whose
    training was interrupted resumes from its own checkpoint."""
    common = _tiny_ks_job(tmp_path)
    out = lambda lr: tmp_path / "sw" / f"lr{lr:g}" / "seed0"  # noqa: E731
    first = run_sweep(heads=[(lr, 0, out(lr)) for lr in (1e-3, 1e-2)], **common)
    work = {r["lr"]: r["work_dir"] for r in first}
    from pathlib import Path

    from deepwide.superb import sweep

    from deepwide.superb import runner

    # a tested head keeps valid_best's model and task only: its resume state is gone
    assert [p.name for p in (Path(work[1e-3]) / "train").iterdir() if p.is_dir()] == ["valid_best"]
    assert not (Path(work[1e-3]) / "train" / "valid_best" / "optimizer.pt").exists()
    # the third head is killed after s3prl finished and before it was marked tested: its
    # resume checkpoints are still there (they are removed after the mark)
    with monkeypatch.context() as m:
        m.setattr(runner, "prune_resume_checkpoints", lambda train_dir, keep: None)
        third = run_sweep(heads=[(lr, 0, out(lr)) for lr in (1e-3, 1e-2, 1e-1)], **common)
    assert sweep.STATS == {}  # one head left to train: s3prl's own loop, no sweep
    assert [r["sweep"]["restored_folds"] for r in third] == [[None], [None], []]
    for a, b in zip(first, third[:2]):
        assert (a["dev_score"], a["test_score"], a["layer_weights"]) == (b["dev_score"], b["test_score"], b["layer_weights"])
        assert b["work_dir"] == work[b["lr"]]
    # a requeue after the new head trained but before it was tested: it resumes from its
    # own final checkpoint (no training left) and is tested again, with the same result
    w = Path(third[2]["work_dir"])
    (w / "deepwide_tested.json").unlink()
    assert any(p.name.startswith("step_") for p in (w / "train").iterdir())
    again = run_sweep(heads=[(lr, 0, out(lr)) for lr in (1e-3, 1e-2, 1e-1)], **common)
    assert again[2]["test_score"] == third[2]["test_score"] and again[2]["best_step"] == third[2]["best_step"]
    assert json.loads((out(1e-1) / "result.json").read_text())["lr"] == 1e-1
    assert not any(p.name.startswith("step_") for p in (w / "train").iterdir())  # tested now: removed


def test_checkpoints_hold_the_head_not_the_frozen_upstream(tmp_path):
    """s3prl's checkpoints would copy the frozen upstream into every step_N and valid_best;
    ours hold the featurizer and head plus the upstream's digest, and loading rebuilds the
    upstream from its source, refusing one that differs."""
    from pathlib import Path

    from deepwide.errors import DeepwideError
    from deepwide.superb.problems import FROZEN_UPSTREAM, problem_class
    from deepwide.utils.precision import state_sha256

    result = run_job(lr=1e-2, seed=0, out_dir=tmp_path / "out", **_tiny_ks_job(tmp_path))
    best = Path(result["work_dir"]) / "train" / "valid_best" / "model"
    saved = torch.load(best / "state_dict.pt", weights_only=True)
    assert saved and not any(k.startswith("upstream.") for k in saved) and "featurizer.weights" in saved
    model = problem_class("ks")().load_model(best)
    full = model.state_dict()
    assert any(k.startswith("upstream.") for k in full)
    for k, v in saved.items():
        torch.testing.assert_close(full[k], v, rtol=0, atol=0)
    assert json.loads((best / FROZEN_UPSTREAM).read_text())["upstream_state_sha256"] == state_sha256(model.upstream.state_dict())
    (best / FROZEN_UPSTREAM).write_text(json.dumps({"upstream_state_sha256": "0" * 64}))
    with pytest.raises(DeepwideError, match="upstream rebuilt from its source differs"):
        problem_class("ks")().load_model(best)


def test_feature_cache_equals_uncached(tmp_path):
    """States cached in memory (exact) or on disk (bf16 shards) give the run an uncached
    per-utterance upstream gives; later epochs, lrs and the test stages hit the cache."""
    root = tiny_ks(tmp_path / "ks")
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    heads = [(1e-3, 0), (1e-2, 0)]

    def run(name, **cache):
        up = {"kind": "deepwide", "path": str(ckpt), **cache}
        return run_sweep(task="ks", upstream_name="tiny", upstream=up, root=root, tcfg=KS_TCFG, cache_root=tmp_path / "cache",
                         device="cpu", num_workers=0, heads=[(lr, s, tmp_path / name / f"lr{lr:g}" / f"seed{s}") for lr, s in heads])

    from deepwide.superb import upstream as U

    uncached = run("none", cache_mb=1e-9)  # per utterance, nothing fits: every pass recomputes
    memory = run("mem", cache_mb=64)
    disk = run("disk", cache_mb=1e-9, cache_disk_mb=64, cache_dir=str(tmp_path / "features"))
    stores = {k.split("|")[1:3][0] + "/" + k.split("|")[2]: s for k, s in U._STORES.items() if str(ckpt) in k}
    mem_store = next(s for s in stores.values() if s.mem_bytes > 2**20)
    disk_store = next(s for s in stores.values() if s.disk_bytes > 0)
    assert mem_store.hits > 0 and mem_store.misses > 0 and 0 < len(mem_store._mem) <= mem_store.misses  # equal clips in one batch miss together
    assert disk_store.hits > 0 and len(disk_store._disk) > 0 and list((tmp_path / "features").rglob("shard-*.bin"))
    for a, b in zip(uncached, memory):
        assert (a["dev_score"], a["test_score"], a["best_step"]) == (b["dev_score"], b["test_score"], b["best_step"])
        sa, sb = _head_state(a), _head_state(b)
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=1e-7)
    for a, c in zip(uncached, disk):  # bf16 states: equal within bf16 rounding
        assert c["layer_weights"] == pytest.approx(a["layer_weights"], abs=2e-3)
        assert c["folds"][0]["dev_metrics"]["loss"] == pytest.approx(a["folds"][0]["dev_metrics"]["loss"], rel=2e-2)
