"""The trainer on real espeak-ng audio and real (small, random) teachers: both methods
learn, every mode runs, signals save state, kill + resume is bit-identical, bad settings
and non-finite losses give clear errors."""

import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from _distill_data import STUDENT_DEFAULTS, corpus_and_teacher_fixtures, make_teacher
from deepwide.distill import targets
from deepwide.distill.trainer import train
from deepwide.errors import DeepwideError
from deepwide.models.arch import ArchConfig, conv_layers
from deepwide.models.checkpoint import load_checkpoint
from deepwide.models.solver import count_params


corpus, teacher = corpus_and_teacher_fixtures(n=16)


@pytest.fixture(scope="module")
def cache(corpus, teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("targets") / "all"
    targets.extract(teacher, [corpus], [0, 1, 2, 3], out, frontend=True)
    return out


def make_job(method="pred", depth=2, width=32, steps=40, frontend="frozen", init="teacher_frontend", mode="cached",
             cached_frontend=True, **train_over):
    arch = ArchConfig(depth=depth, width=width, ffn=2 * width, heads=2, conv=conv_layers(STUDENT_DEFAULTS["conv_channels"]),
                      pos_conv_kernel=STUDENT_DEFAULTS["pos_conv_kernel"], pos_conv_groups=STUDENT_DEFAULTS["pos_conv_groups"])
    return {
        "method": method,
        "method_config": {"layers": None, "num_targets": 3} if method == "pred" else {"student_layers": None, "pairs": None},
        "arch": arch.to_dict(), "loss": {"cos_weight": 1.0}, "init": init, "frontend": frontend,
        "frontend_grad_scale": 0.1,
        "train": {"steps": steps, "lr": 2e-3, "warmup": 0.1, "betas": [0.9, 0.98], "eps": 1e-6, "weight_decay": 1e-6,
                  "grad_clip": 5.0, "batch_seconds": 8.0, "max_seconds": 2.0, "min_seconds": 1.0, "checkpoint_every": 10,
                  "log_every": 5, "compile": False, "num_workers": 0, "cpu_threads": 1, "seed": 0, **train_over},
        "targets": {"mode": mode, "frontend": mode == "cached" and cached_frontend},
    }


def run_cli(job, teacher, corpus, out, resume, cache=None, wait=True, extra=()):
    cmd = [sys.executable, "-m", "deepwide", "distill", "train", "--threads", "1", "--job", json.dumps(job),
           "--teacher", str(teacher), "--manifest", str(corpus), "--out", str(out), "--resume-dir", str(resume), *extra]
    if cache:
        cmd += ["--targets", str(cache)]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.mark.parametrize("method", ["pred", "l2l"])
def test_both_methods_reduce_their_loss(method, corpus, teacher, cache, tmp_path):
    info = train(make_job(method, steps=60), teacher, [corpus], tmp_path / "out", tmp_path / "resume", targets_dirs=cache)
    curve = pd.read_parquet(tmp_path / "out" / "curve.parquet")
    first, last = curve["loss"].iloc[0], curve["loss"].iloc[-1]
    assert last < 0.75 * first, (first, last)
    names = ["t1", "t2", "t3"] if method == "pred" else ["s1t2", "s2t3"]  # 3-layer teacher, 2-layer student
    assert [c for c in curve.columns if c.startswith("loss_")] == [f"loss_{n}" for n in names]
    for n in names:  # every target learns
        assert curve[f"loss_{n}"].iloc[-1] < curve[f"loss_{n}"].iloc[0]
    # the objective is the mean over targets, not the sum (s3prl's distiller, DPHuBERT)
    mean = curve[[f"loss_{n}" for n in names]].mean(axis=1)
    assert curve["loss"].to_numpy() == pytest.approx(mean.to_numpy(), rel=1e-5)
    assert info["mode"] == "cached-targets+cached-frontend"
    assert info["params"] == sum(p.numel() for p in load_checkpoint(tmp_path / "out" / "student.pt")[0].parameters())
    assert info["params"] == count_params(ArchConfig.from_dict(info["arch"]))  # the solver's count
    assert info["audio_seconds_per_second"] > 0 and info["wall_time_s"] > 0
    used = json.loads((tmp_path / "out" / "info.json").read_text())["usage"]  # for plan resources
    assert used["peak_rss_mb"] > 0 and used["wall_s"] > 0 and "cuda_max_allocated_mb" in used
    assert info["compile"] is False and info["autocast"] == "float32"  # on CPU: no autocast (GPU check: bfloat16)
    assert json.loads((tmp_path / "out" / "info.json").read_text())["targets"] == names
    model, arch, meta = load_checkpoint(tmp_path / "out" / "student.pt")
    assert meta["kd_method"] == method and arch.depth == 2


@pytest.mark.parametrize(
    "mode,frontend,init,expect",
    [
        ("cached", "scaled", "teacher_frontend", "cached-targets"),
        ("online", "frozen", "teacher_frontend", "online-shared-frontend"),
        ("online", "trainable", "random", "online"),
    ],
)
def test_modes(mode, frontend, init, expect, corpus, teacher, cache, tmp_path):
    job = make_job("l2l", steps=4, frontend=frontend, init=init, mode=mode, cached_frontend=False, log_every=2)
    info = train(job, teacher, [corpus], tmp_path / "o", tmp_path / "r", targets_dirs=cache if mode == "cached" else None)
    assert info["mode"] == expect
    assert info["init_copied"] == ([] if init == "random" else ["feature_extractor"])
    student = load_checkpoint(tmp_path / "o" / "student.pt")[0]
    t = load_checkpoint(teacher)[0]
    same = torch.equal(student.feature_extractor.conv_layers[1].conv.weight, t.feature_extractor.conv_layers[1].conv.weight)
    assert same == (frontend == "frozen")  # frozen stays the teacher's; trained ones move


def test_frozen_cached_frontend_matches_audio_path(corpus, teacher, cache, tmp_path):
    """Skipping the conv (cached front end) gives the losses of running the frozen conv.

    One uncropped utterance per batch: the front end's GroupNorm then sees the same samples
    in both paths (crops and padding change its statistics)."""
    kw = dict(steps=3, batch_seconds=0.1, max_seconds=30.0, log_every=1)
    a = train(make_job("pred", **kw), teacher, [corpus], tmp_path / "a", tmp_path / "ra", targets_dirs=cache)
    b = train(make_job("pred", cached_frontend=False, **kw), teacher, [corpus], tmp_path / "b", tmp_path / "rb",
              targets_dirs=cache)
    assert (a["mode"], b["mode"]) == ("cached-targets+cached-frontend", "cached-targets")
    ca = pd.read_parquet(tmp_path / "a" / "curve.parquet")
    cb = pd.read_parquet(tmp_path / "b" / "curve.parquet")
    assert len(ca) == 3
    assert ca["loss"].to_numpy() == pytest.approx(cb["loss"].to_numpy(), rel=2e-3)  # bf16 cache vs float32 conv


def test_loader_workers_do_not_change_the_weights(corpus, teacher, cache, tmp_path):
    """Batches are a pure function of (seed, step): worker processes give the same run."""
    a = make_job("l2l", steps=6, num_workers=0, frontend="scaled", cached_frontend=False)
    b = make_job("l2l", steps=6, num_workers=2, frontend="scaled", cached_frontend=False)
    train(a, teacher, [corpus], tmp_path / "a", tmp_path / "ra", targets_dirs=cache)
    train(b, teacher, [corpus], tmp_path / "b", tmp_path / "rb", targets_dirs=cache)
    wa = load_checkpoint(tmp_path / "a" / "student.pt")[0].state_dict()
    wb = load_checkpoint(tmp_path / "b" / "student.pt")[0].state_dict()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_conv_mismatch_is_a_clear_error(corpus, teacher, cache, tmp_path):
    job = make_job("pred", steps=2)
    job["arch"]["conv"] = [list(c) for c in conv_layers(16)]
    with pytest.raises(DeepwideError, match=r"init teacher_frontend: student .* conv front end .*conv_channels to 32"):
        train(job, teacher, [corpus], tmp_path / "o", tmp_path / "r", targets_dirs=cache)
    assert not (tmp_path / "o").exists()


def test_stale_or_missing_targets(corpus, teacher, cache, tmp_path):
    other = make_teacher(tmp_path / "other.pt", seed=5)
    with pytest.raises(DeepwideError, match="stale targets"):
        train(make_job("pred", steps=2), other, [corpus], tmp_path / "o", tmp_path / "r", targets_dirs=cache)
    with pytest.raises(DeepwideError, match="needs --targets"):
        train(make_job("pred", steps=2), teacher, [corpus], tmp_path / "o", tmp_path / "r")


@pytest.mark.slow
def test_nonfinite_loss_saves_and_names_step_and_utterances(corpus, tmp_path):
    bad = make_teacher(tmp_path / "nan.pt", nan=True)
    r = run_cli(make_job("pred", steps=5, mode="online", frontend="scaled"), bad, corpus, tmp_path / "o", tmp_path / "r")
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("error: non-finite loss at step 1")
    ids = set(pd.read_parquet(corpus)["id"])
    named = [w.strip(",;") for w in err.split("utterances ")[1].split(";")[0].split(", ")]
    assert named and set(named) <= ids
    st = torch.load(tmp_path / "r" / "state.pt", weights_only=False)
    assert st["step"] == 0
    assert not (tmp_path / "o" / "info.json").exists()


def _wait_for(path, proc, timeout=120):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_saves_and_exits_nonzero_then_resumes(corpus, teacher, cache, tmp_path):
    job = make_job("l2l", steps=40, checkpoint_every=5)  # the rerun trains what is left: keep it short
    p = run_cli(job, teacher, corpus, tmp_path / "o", tmp_path / "r", cache=cache, wait=False)
    _wait_for(tmp_path / "r" / "state.pt", p)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM, err
    assert "state saved" in err
    st = torch.load(tmp_path / "r" / "state.pt", weights_only=False)
    assert 5 <= st["step"] < 40  # saved at the step it stopped (after the first periodic save)
    assert f"at step {st['step']}" in err
    assert not (tmp_path / "o" / "student.pt").exists()
    # the rerun resumes from that step, not from 0
    r = run_cli(job, teacher, corpus, tmp_path / "o", tmp_path / "r", cache=cache)
    assert r.returncode == 0, r.stderr
    assert f"resumed from {tmp_path / 'r' / 'state.pt'} at step {st['step']}" in r.stderr


# ----------------------------------------------------------------------------- verified targets


def _copy_cache(cache, dest):
    import shutil

    shutil.copytree(cache, dest)
    return dest


@pytest.mark.parametrize("fault", ["flipped", "truncated"])
def test_corrupt_targets_shard_fails_naming_it_and_is_removed_for_rebuild(fault, corpus, teacher, cache, tmp_path):
    bad = _copy_cache(cache, tmp_path / "targets" / "layer2")
    shard = bad / "shard_00000.layers.npy"
    raw = bytearray(shard.read_bytes())
    if fault == "flipped":
        mid = len(raw) // 2
        raw[mid : mid + 4096] = bytes(b ^ 0xFF for b in raw[mid : mid + 4096])
    else:
        raw = raw[: len(raw) // 2]
    shard.write_bytes(bytes(raw))
    with pytest.raises(DeepwideError) as err:
        train(make_job("l2l", steps=2), teacher, [corpus], tmp_path / "o", tmp_path / "r", targets_dirs=[bad])
    msg = str(err.value)
    assert str(shard) in msg and "rerun `snakemake`" in msg
    assert ("truncated" in msg) if fault == "truncated" else ("sha256 differs" in msg)
    assert not bad.exists()  # the next snakemake run sees its output missing and re-extracts it
    assert not (tmp_path / "o" / "student.pt").exists()


def test_loss_jump_stops_distillation(corpus, teacher, cache, tmp_path):
    """An unverified (older) cache with one utterance's targets blown up: the step that reads
    it stops the job with an error instead of training on a loss 1e4 x the others."""
    import numpy as np

    bad = _copy_cache(cache, tmp_path / "old")
    info = json.loads((bad / "cache.json").read_text())
    info.pop("checksums", None)
    (bad / "cache.json").write_text(json.dumps(info))
    index = pd.read_parquet(bad / "index.parquet")
    row = index.iloc[len(index) // 2]
    mm = np.load(bad / f"shard_{int(row['shard']):05d}.layers.npy", mmap_mode="r+")
    o, n = int(row["offset"]), int(row["frames"])
    mm[o : o + n] = targets._encode(np.full(mm[o : o + n].shape, 3e4, np.float32), info["dtype"], "test")
    mm.flush()
    del mm
    with pytest.raises(DeepwideError, match=r"loss jumped at step \d+: .* more than 1000 x the median") as err:
        train(make_job("l2l", steps=40), teacher, [corpus], tmp_path / "o", tmp_path / "r", targets_dirs=[bad])
    assert row["id"] in str(err.value)
    assert not (tmp_path / "o" / "student.pt").exists()
