"""Fixed crop windows (distill.targets.crop): cached and online targets see exactly the
student's crop. Real espeak-ng audio and a tiny random teacher built here."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from _distill_data import STUDENT_DEFAULTS, corpus_and_teacher_fixtures
from deepwide.audio import read_audio
from deepwide.config import validate_config
from deepwide.distill import data, targets
from deepwide.distill.trainer import train
from deepwide.errors import DeepwideError
from deepwide.models.arch import ArchConfig, conv_layers
from deepwide.models.checkpoint import load_checkpoint
from deepwide.plan import Study
from deepwide.utils.manifest import read_manifests

CROP_S = 1.0  # espeak utterances are 2-4 s: every one is cropped to 50 frames
FIXED = data.crop_spec("fixed", CROP_S, seed=7)


corpus, teacher = corpus_and_teacher_fixtures(n=6)


@pytest.fixture(scope="module")
def caches(corpus, teacher, tmp_path_factory):
    root = tmp_path_factory.mktemp("targets")
    fixed = targets.extract(teacher, [corpus], [1, 2, 3], root / "fixed", frontend=True, crop=FIXED)
    full = targets.extract(teacher, [corpus], [1, 2, 3], root / "full", frontend=True)
    return root / "fixed", root / "full", fixed, full


def _fixed_windows(corpus, teacher):
    """The teacher's conv layout and every utterance's FIXED crop window."""
    conv = load_checkpoint(teacher)[1].conv
    return conv, data.crop_utterances(_whole(corpus, conv), FIXED, conv)


def _whole(corpus, conv):
    return data.manifest_utterances(read_manifests([corpus]), conv)


def test_window_is_deterministic_inside_and_frame_aligned(corpus, teacher):
    _, arch, _ = load_checkpoint(teacher)
    conv, h = arch.conv, data.hop(arch.conv)
    assert h == 320
    whole = _whole(corpus, conv)
    m = data.max_crop_frames(CROP_S, conv)
    assert m == 50
    win = data.crop_utterances(whole, FIXED, conv)
    assert win == data.crop_utterances(whole, FIXED, conv)
    # a pure function of (seed, id): another order or a subset gives each utterance the same window
    assert {w.id: w for w in data.crop_utterances(whole[::-1][:4], FIXED, conv)} == \
        {w.id: w for w in win if w.id in {u.id for u in whole[::-1][:4]}}
    for u, w in zip(whole, win):
        assert u.frames > m and w.frames == m
        assert w.start % h == 0 and w.start >= 0
        assert w.start + w.num_samples <= u.num_samples  # inside the utterance
        assert w.num_samples == data.samples_for_frames(m, conv)
        assert data.num_frames(w.num_samples, conv) == m
        f0, f = data.crop_window(u.id, u.frames, m, FIXED["seed"])
        assert (f0 * h, f) == (w.start, w.frames)
    # the seed moves the windows; a short utterance is kept whole (less the sub-frame tail)
    other = data.crop_utterances(whole, {**FIXED, "seed": 8}, conv)
    assert [w.start for w in other] != [w.start for w in win]
    assert data.crop_window("x", 30, 50, 0) == (0, 30)
    short = data.crop_utterances([data.Utterance("x", "p", 16000, data.num_frames(16000, conv))],
                                 data.crop_spec("fixed", 4.0, 0), conv)[0]
    assert (short.start, short.frames, short.num_samples) == (0, 49, data.samples_for_frames(49, conv))
    with pytest.raises(DeepwideError, match="crop policy"):
        data.crop_spec("random", 4.0)


def test_extraction_loader_and_online_windows_are_identical(corpus, teacher, caches):
    fixed_dir, _, info, _ = caches
    conv, win = _fixed_windows(corpus, teacher)
    # extraction: the cache's index holds exactly these windows, and says so in cache.json
    cache = targets.TargetCache(fixed_dir)
    assert cache.utterances() == win
    assert cache.crop == FIXED and info["crop"]["policy"] == "fixed" and info["crop"]["max_frames"] == 50
    assert info["crop"]["cropped_utterances"] == len(win)
    assert 0 < info["crop"]["audio_kept_fraction"] < 1
    assert info["audio_seconds"] == pytest.approx(sum(w.num_samples for w in win) / 16000)
    assert info["crop"]["audio_kept_fraction"] == pytest.approx(info["audio_seconds"] / info["utterance_audio_seconds"])
    # loader: every epoch reads the same window, never re-cropped
    plan = data.StepPlan([w.frames for w in win], data.max_crop_frames(CROP_S, conv), 1, seed=0)
    loader = data.BatchLoader(win, plan, conv, cache, [1, 3])
    by_id = {w.id: w for w in win}
    for g in range(3 * plan.per_epoch):  # three epochs, one utterance per batch
        (it,) = plan[g]
        assert (it.start, it.frames) == (0, win[it.index].frames)
        b = loader[g]
        w = by_id[b["ids"][0]]
        ref = read_audio(w.path, w.start, w.start + w.num_samples)
        assert torch.equal(b["wavs"][0], torch.from_numpy(ref))
        assert torch.equal(b["targets"][0], cache.targets(w.id, 0, w.frames, [1, 3]))


def _online_targets(teacher_ckpt, win, conv, layers):
    """What the trainer's online mode computes: its loader's batch through teacher_forward."""
    model, _, _ = load_checkpoint(teacher_ckpt)
    model.eval()
    plan = [[data.BatchItem(i, 0, w.frames)] for i, w in enumerate(win)]
    loader = data.BatchLoader(win, plan, conv)
    out = {}
    for i in range(len(plan)):
        b = loader[i]
        outs, fe, _ = targets.teacher_forward(model, b["wavs"], b["lengths"], layers, torch.device("cpu"))
        out[b["ids"][0]] = (torch.stack(outs, dim=2)[0], fe[0])
    return out


def _bits(t: torch.Tensor) -> np.ndarray:
    return t.view(torch.int16).numpy().view(np.uint16)


def test_cached_and_online_targets_equal_on_the_same_crop(corpus, teacher, caches):
    fixed_dir, full_dir, _, _ = caches
    conv, win = _fixed_windows(corpus, teacher)
    online = _online_targets(teacher, win, conv, [1, 3])
    fixed, full = targets.TargetCache(fixed_dir), targets.TargetCache(full_dir)
    worst_full = 0.0
    for w in win:
        lay, fe = online[w.id]
        got = fixed.targets(w.id, 0, w.frames, [1, 3])
        # the cache holds the online teacher's float32 output rounded to bf16: the same bits
        assert np.array_equal(_bits(got), data.float32_to_bf16(lay.numpy())), w.id
        assert np.array_equal(_bits(fixed.frontend(w.id, 0, w.frames)), data.float32_to_bf16(fe.numpy())), w.id
        # whole-utterance targets at the same frames were computed with context the crop lacks
        f0 = w.start // data.hop(conv)
        old = full.targets(w.id, f0, w.frames, [1, 3]).float()
        worst_full = max(worst_full, float((old[:, 1] - lay[:, 1]).abs().max()))
        # (the conv front end is local: its frames agree either way, to bf16 precision)
        assert torch.allclose(full.frontend(w.id, f0, w.frames).float(), fe, rtol=1e-2, atol=1e-2)
    assert worst_full > 0.1  # far beyond bf16 rounding (~1e-2 here)


def test_normalizing_teacher_sees_the_same_window_cached_and_online(corpus, teacher, tmp_path):
    """A teacher that normalizes its input (HF do_normalize) normalizes the window alike."""
    from deepwide.models.checkpoint import save_checkpoint

    model, arch, meta = load_checkpoint(teacher)
    norm = tmp_path / "norm.pt"
    save_checkpoint(norm, model, arch, {**meta, "normalize": True})
    info = targets.extract(norm, [corpus], [2], tmp_path / "c", crop=FIXED)
    assert info["normalize"] is True
    cache = targets.TargetCache(tmp_path / "c")
    win = cache.utterances()
    plan = [[data.BatchItem(i, 0, w.frames)] for i, w in enumerate(win)]
    loader = data.BatchLoader(win, plan, arch.conv, normalize=True)  # as the trainer's online mode reads it
    model.eval()
    for i, w in enumerate(win):
        b = loader[i]
        outs, _, _ = targets.teacher_forward(model, b["wavs"], b["lengths"], [2], torch.device("cpu"))
        assert np.array_equal(_bits(cache.targets(w.id, 0, w.frames, [2])[:, 0]), data.float32_to_bf16(outs[0][0].numpy()))


def _job(mode, crop, cached_frontend=False, steps=2):
    return {
        "method": "pred", "method_config": {"layers": None, "num_targets": 3},
        "arch": ArchConfig(depth=2, width=32, ffn=64, heads=2, conv=conv_layers(STUDENT_DEFAULTS["conv_channels"]),
                           pos_conv_kernel=STUDENT_DEFAULTS["pos_conv_kernel"],
                           pos_conv_groups=STUDENT_DEFAULTS["pos_conv_groups"]).to_dict(),
        "loss": {"cos_weight": 1.0}, "init": "teacher_frontend", "frontend": "frozen", "frontend_grad_scale": 0.1,
        "train": {"steps": steps, "lr": 1e-3, "warmup": 0.1, "betas": [0.9, 0.98], "eps": 1e-6, "weight_decay": 0.0,
                  "grad_clip": 5.0, "batch_seconds": 3.0, "max_seconds": CROP_S, "min_seconds": 0.5,
                  "checkpoint_every": 100, "log_every": 1, "num_workers": 0, "cpu_threads": 1, "compile": False,
                  "seed": 0},
        "targets": {"mode": mode, "frontend": mode == "cached" and cached_frontend, **({"crop": crop} if crop else {})},
    }


def test_trainer_uses_the_same_windows_cached_and_online(corpus, teacher, caches, tmp_path):
    fixed_dir, full_dir, _, _ = caches
    a = train(_job("cached", FIXED, cached_frontend=True), teacher, [corpus], tmp_path / "a", tmp_path / "ra",
              targets_dirs=[fixed_dir])
    b = train(_job("online", FIXED), teacher, [corpus], tmp_path / "b", tmp_path / "rb")
    assert a["crop"] == b["crop"]
    assert a["crop"]["policy"] == "fixed" and a["crop"]["frames_kept_fraction"] < 1
    assert a["audio_seconds"] == pytest.approx(b["audio_seconds"])  # the same windows, batch by batch
    # a cache of whole utterances (or other windows) is refused by a fixed-crop student
    with pytest.raises(DeepwideError, match="stale targets.*crop"):
        train(_job("cached", FIXED), teacher, [corpus], tmp_path / "c", tmp_path / "rc", targets_dirs=[full_dir])
    with pytest.raises(DeepwideError, match="stale targets.*crop"):
        train(_job("cached", {**FIXED, "seed": 8}), teacher, [corpus], tmp_path / "d", tmp_path / "rd",
              targets_dirs=[fixed_dir])
    with pytest.raises(DeepwideError, match="differs from train.max_seconds"):
        train(_job("online", {**FIXED, "max_seconds": 2.0}), teacher, [corpus], tmp_path / "e", tmp_path / "re")


def test_crop_full_keeps_the_old_behaviour(corpus, teacher, caches, tmp_path):
    _, full_dir, _, full_info = caches
    _, arch, _ = load_checkpoint(teacher)
    conv = arch.conv
    whole = _whole(corpus, conv)
    assert data.crop_utterances(whole, data.crop_spec("full"), conv) == whole
    assert data.crop_utterances(whole, None, conv) == whole
    # the cache holds whole utterances, as before
    idx = pd.read_parquet(full_dir / "index.parquet")
    man = pd.read_parquet(corpus)
    assert list(idx["num_samples"]) == list(man["num_samples"]) and (idx["start"] == 0).all()
    assert list(idx["frames"]) == [data.num_frames(int(n), conv) for n in man["num_samples"]]
    assert full_info["crop"]["policy"] == "full" and full_info["crop"]["audio_kept_fraction"] == 1.0
    # the student still draws a random crop per epoch
    m = data.max_crop_frames(CROP_S, conv)
    starts = {tuple(it.start for b in data.epoch_plan([u.frames for u in whole], m, m, 0, e) for it in b)
              for e in range(3)}
    assert len(starts) > 1
    # a job without a crop (built by hand) trains as before, from the whole-utterance cache
    info = train(_job("cached", None), teacher, [corpus], tmp_path / "s", tmp_path / "r", targets_dirs=[full_dir])
    assert info["crop"]["policy"] == "full" and info["crop"]["audio_kept_fraction"] == 1.0
    assert info["crop"]["frames_beyond_one_crop_fraction"] > 0.4
    # a cache written before crop policies (format /1) reads as crop full
    old = tmp_path / "old"
    old.mkdir()
    meta = json.loads((full_dir / "cache.json").read_text())
    meta["format"] = "deepwide-targets/1"
    meta.pop("crop")
    meta.pop("checksums", None)  # nor shard checksums (recorded since 2026-12-07): read unverified
    (old / "cache.json").write_text(json.dumps(meta))
    idx.drop(columns=["start", "utterance_samples"]).to_parquet(old / "index.parquet")
    for f in full_dir.glob("shard_*.npy"):
        (old / f.name).symlink_to(f)
    c = targets.TargetCache(old)
    assert c.crop == {"policy": "full"} and c.utterances() == whole
    c.check(meta["teacher_sha256"], [1], False, crop={"policy": "full"})


def test_targets_key_follows_the_crop_policy():
    fixed = Study.from_config({})
    assert fixed.dcfg["targets"]["crop"] == "fixed"  # the default
    full = Study.from_config({"distill": {"targets": {"crop": "full"}}})
    assert fixed.targets_key != full.targets_key
    assert full.targets_spec == {"corpus": "librispeech", "splits": ["train-clean-100"], "dtype": "bf16", "crop": "full"}
    assert full.targets_key == "librispeech-4758c3475e"  # the key every cache had before crop policies
    assert fixed.targets_spec["crop"] == "fixed" and fixed.targets_spec["crop_seconds"] == 15.0
    assert fixed.targets_crop == {"policy": "fixed", "max_seconds": 15.0, "seed": 0}
    assert fixed.targets_crop_flags == "--crop fixed --crop-seconds 15.0 --crop-seed 0"
    assert full.targets_crop_flags == "--crop full"
    # fixed windows depend on their length and seed; whole utterances on neither
    for cfg in ({"distill": {"train": {"max_seconds": 4.0}}}, {"seed": 3}):
        assert Study.from_config(copy.deepcopy(cfg)).targets_key != fixed.targets_key
        both = copy.deepcopy(cfg)
        both.setdefault("distill", {})["targets"] = {"crop": "full"}
        assert Study.from_config(both).targets_key == full.targets_key
    # every student's identity carries the crop, cached or online alike
    cfg = validate_config({"distill": {"students": {"shapes": [{"depth": 2, "width": 64, "ffn": 256, "heads": 2}]},
                                       "targets": {"online_methods": ["l2l"]}}})
    s = Study(cfg)
    for j in s.student_jobs:
        assert s.student_identity(j)["targets"]["crop"] == s.targets_crop
    assert s.targets_identity("layer3")["crop"] == "fixed"


def test_cli_extracts_fixed_windows(corpus, teacher, caches, tmp_path):
    import subprocess
    import sys

    base = [sys.executable, "-m", "deepwide", "targets", "extract", "--threads", "1", "--teacher", str(teacher),
            "--manifest", str(corpus), "--layers", "3", "--out", str(tmp_path / "c")]
    r = subprocess.run(base + ["--crop", "fixed"], capture_output=True, text=True)
    assert r.returncode == 2 and "--crop fixed needs --crop-seconds" in r.stderr
    r = subprocess.run(base + ["--crop", "fixed", "--crop-seconds", str(CROP_S), "--crop-seed", "7"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["crop"]["policy"] == "fixed"
    c, ref = targets.TargetCache(tmp_path / "c"), targets.TargetCache(caches[0])
    assert c.crop == FIXED and c.utterances() == ref.utterances()
    uid = c.index["id"][0]
    assert torch.equal(c.targets(uid, 0, 50, [3]), ref.targets(uid, 0, 50, [3]))
