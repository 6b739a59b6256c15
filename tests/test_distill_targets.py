"""Targets cache: values, storage dtype, resume, staleness (real espeak-ng audio, real teacher)."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from _distill_data import make_corpus, make_teacher
from deepwide.audio import read_audio
from deepwide.distill import targets
from deepwide.errors import DeepwideError
from deepwide.models.arch import hidden_states
from deepwide.models.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    torch.set_num_threads(1)
    return make_corpus(root, n=10)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return make_teacher(tmp_path_factory.mktemp("teacher") / "teacher.pt")


def test_extract_values_index_and_bytes(corpus, teacher, tmp_path):
    info = targets.extract(teacher, [corpus], [1, 3], tmp_path / "cache", frontend=True, shard_seconds=8)
    assert info["num_shards"] > 1 and info["layers"] == [1, 3]
    assert json.loads((tmp_path / "cache" / "cache.json").read_text())["usage"]["peak_rss_mb"] > 0  # plan resources
    # bytes: frames x (2 layers x 64 + 32 front-end channels) x 2 bytes, plus the .npy headers
    frames = int(pd.read_parquet(tmp_path / "cache" / "index.parquet")["frames"].sum())
    payload = frames * (2 * 64 + 32) * 2
    assert payload <= info["bytes"] <= payload + 2 * 128 * info["num_shards"]
    assert info["bytes_per_audio_second"] == pytest.approx(info["bytes"] / info["audio_seconds"])
    assert 15000 < info["bytes_per_audio_second"] < 16500  # about 50 frames/s x 320 bytes
    assert not (tmp_path / ".cache.partial").exists()  # work folder cleaned after publishing
    cache = targets.TargetCache(tmp_path / "cache")
    man = pd.read_parquet(corpus)
    assert sorted(cache.index["id"]) == sorted(man["id"])
    model, arch, _ = load_checkpoint(teacher)
    row = man.iloc[3]
    wav = torch.from_numpy(read_audio(row["path"], 0, row["num_samples"]))[None]
    with torch.no_grad():
        states, _ = hidden_states(model, wav)
        fe, _ = model.feature_extractor(wav, None)
    got = cache.targets(row["id"], 5, 20, [3]).float()
    ref = states[3][0, 5:25]
    assert got.shape == (20, 1, 64)
    assert torch.allclose(got[:, 0], ref, rtol=1e-2, atol=1e-2)  # bf16: ~3 significant digits
    assert torch.allclose(cache.frontend(row["id"], 0, 10).float(), fe[0, :10], rtol=1e-2, atol=1e-2)
    both = cache.targets(row["id"], 0, 4, [1, 3]).float()
    assert torch.allclose(both[:, 0], states[1][0, :4], rtol=1e-2, atol=1e-2)


def test_fp16_overflow_is_caught(corpus, tmp_path):
    big = make_teacher(tmp_path / "big.pt", scale=1e5)
    with pytest.raises(DeepwideError, match="fp16 overflow.*bf16"):
        targets.extract(big, [corpus], [3], tmp_path / "c16", dtype="fp16")
    assert not (tmp_path / "c16").exists()
    # bf16 has float32's range: the same teacher stores fine
    info = targets.extract(big, [corpus], [3], tmp_path / "cbf", dtype="bf16")
    assert info["dtype"] == "bf16"


def test_fp16_storage(corpus, teacher, tmp_path):
    targets.extract(teacher, [corpus], [2], tmp_path / "c", dtype="fp16")
    cache = targets.TargetCache(tmp_path / "c")
    assert cache.targets(cache.index["id"][0], 0, 3, [2]).dtype == torch.float16


def test_interrupted_extraction_resumes_keeping_shards(corpus, teacher, tmp_path):
    out, work = tmp_path / "cache", tmp_path / "work"
    assert targets.extract(teacher, [corpus], [2, 3], out, work=work, shard_seconds=6, stop_after_shards=2) == {}
    assert not out.exists()
    done = sorted(work.glob("shard_*.json"))
    assert len(done) == 2
    stamps = {p.name: p.stat().st_mtime_ns for p in work.glob("shard_*.npy")}
    # the CLI resumes: completed shards are not rewritten
    env_py = [sys.executable, "-m", "deepwide", "targets", "extract", "--threads", "1", "--teacher", str(teacher),
              "--manifest", str(corpus), "--layers", "2,3", "--shard-seconds", "6", "--work", str(work), "--out", str(out)]
    r = subprocess.run(env_py, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "resuming: 2 of" in r.stderr
    for name, ns in stamps.items():
        assert (out / name).stat().st_mtime_ns == ns
    full = tmp_path / "full"
    targets.extract(teacher, [corpus], [2, 3], full, shard_seconds=6)
    a, b = targets.TargetCache(out), targets.TargetCache(full)
    for uid in b.index["id"]:
        n = int(b.index.set_index("id").loc[uid, "frames"])
        assert torch.equal(a.targets(uid, 0, n, [2, 3]), b.targets(uid, 0, n, [2, 3]))
    assert json.loads((out / "cache.json").read_text())["key"] == b.info["key"]


def test_stale_cache_refused(corpus, teacher, tmp_path):
    targets.extract(teacher, [corpus], [3], tmp_path / "c")
    cache = targets.TargetCache(tmp_path / "c")
    other = make_teacher(tmp_path / "other.pt", seed=1)
    from deepwide.utils.io import sha256_file

    cache.check(sha256_file(teacher), [3], False)
    with pytest.raises(DeepwideError, match="stale targets.*another teacher"):
        cache.check(sha256_file(other), [3], False)
    with pytest.raises(DeepwideError, match=r"lacks teacher layer\(s\) \[1\]"):
        cache.check(sha256_file(teacher), [1, 3], False)
    with pytest.raises(DeepwideError, match="no front-end features"):
        cache.check(sha256_file(teacher), [3], True)


def test_bad_layers_and_missing_manifest(corpus, teacher, tmp_path):
    with pytest.raises(DeepwideError, match="teacher has layers 0..3"):
        targets.extract(teacher, [corpus], [4], tmp_path / "c")
    r = subprocess.run([sys.executable, "-m", "deepwide", "targets", "extract", "--teacher", str(teacher),
                        "--manifest", str(tmp_path / "nope.parquet"), "--layers", "1", "--out", str(tmp_path / "c")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "manifest not found" in r.stderr and "Traceback" not in r.stderr


def test_per_layer_caches_read_as_one(corpus, teacher, tmp_path):
    """The pipeline extracts each teacher layer (and the front end) on its own: read
    together they equal one cache holding them all, bit for bit."""
    whole = targets.extract(teacher, [corpus], [1, 3], tmp_path / "whole", frontend=True, shard_seconds=8)
    for k in (1, 3):
        targets.extract(teacher, [corpus], [k], tmp_path / f"layer{k}", shard_seconds=8)
    fe_only = targets.extract(teacher, [corpus], [], tmp_path / "frontend", frontend=True, shard_seconds=8)
    assert fe_only["layers"] == [] and not list((tmp_path / "frontend").glob("*.layers.npy"))
    ref = targets.TargetCache(tmp_path / "whole")
    parts = targets.TargetCacheSet([tmp_path / "layer3", tmp_path / "frontend", tmp_path / "layer1"])
    assert parts.layers == [1, 3]
    parts.check(whole["teacher_sha256"], [1, 3], True, whole["manifest_sha256"])
    for uid in list(ref.index["id"])[:4]:
        assert torch.equal(parts.targets(uid, 2, 9, [1, 3]), ref.targets(uid, 2, 9, [1, 3]))
        assert torch.equal(parts.targets(uid, 0, 5, [3]), ref.targets(uid, 0, 5, [3]))
        assert torch.equal(parts.frontend(uid, 1, 6), ref.frontend(uid, 1, 6))
    assert [u.id for u in parts.utterances()] == [u.id for u in ref.utterances()]
    with pytest.raises(DeepwideError, match=r"lack teacher layer\(s\) \[2\]"):
        parts.check(whole["teacher_sha256"], [1, 2], False)
    with pytest.raises(DeepwideError, match="no front-end"):
        targets.TargetCacheSet([tmp_path / "layer1"]).check(whole["teacher_sha256"], [1], True)
    other = make_teacher(tmp_path / "other.pt", seed=4)
    targets.extract(other, [corpus], [2], tmp_path / "other2", shard_seconds=8)
    with pytest.raises(DeepwideError, match="differ in teacher_sha256"):
        targets.TargetCacheSet([tmp_path / "layer1", tmp_path / "other2"])
