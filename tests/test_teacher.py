"""Tiny real speech for the teacher tests: espeak-ng sentences resampled to 16 kHz by sox."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf
from _distill_data import write_manifest

WORDS = ["speech", "model", "teacher", "student", "layer", "depth", "width", "sound", "voice", "signal",
         "masked", "frame", "cluster", "label", "noise", "music", "river", "garden", "yellow", "seven"]
VOICES = [("en-us", "m1", 40, 160), ("en", "f2", 60, 150), ("en-gb-x-rp", "m3", 50, 175), ("en-us", "f1", 70, 140)]


def synth_split(root: Path, split: str, n: int, seed: int) -> Path:
    """Write ``n`` utterances in LibriSpeech layout and their manifest; returns the manifest."""
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        pytest.skip("espeak-ng and sox are needed (Makefile APT_PACKAGES)")
    rng = random.Random(seed)
    rows = []
    for k in range(n):
        spk = k % len(VOICES)
        voice, variant, pitch, speed = VOICES[spk]
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 7)))
        folder = root / split / str(spk) / "0"
        folder.mkdir(parents=True, exist_ok=True)
        uid = f"{spk}-0-{k:04d}"
        raw, out = folder / f"{uid}.raw.wav", folder / f"{uid}.flac"
        subprocess.run(["espeak-ng", "-v", f"{voice}+{variant}", "-p", str(pitch), "-s", str(speed), "-w", str(raw), text],
                       check=True, capture_output=True)
        subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out)], check=True, capture_output=True)
        raw.unlink()
        rows.append({"id": uid, "path": str(out.resolve()), "num_samples": sf.info(str(out)).frames,
                     "sample_rate": 16000, "split": split, "speaker": str(spk), "text": text.upper(), "phones": ""})
    return write_manifest(root, split, rows)


# a micro teacher: every test run takes seconds
MICRO = {
    "arch": {"depth": 2, "width": 32, "ffn": 64, "heads": 2, "conv_channels": 16, "pos_conv_kernel": 8,
             "pos_conv_groups": 4},
    "kmeans": {"clusters": 8, "max_frames": 20000, "batch_size": 1000, "n_init": 1},
    "train": {"steps": 40, "batch_seconds": 6.0, "crop_seconds": 2.0, "lr": 0.003, "log_every": 5,
              "eval_every": 20, "checkpoint_every": 10},
    "threads": 1,
}


# ---------------------------------------------------------------- fixtures

import json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from deepwide.cli import main as cli_main  # noqa: E402
from deepwide.errors import DeepwideError  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("teacher_corpus")
    return {
        "root": root,
        "train": synth_split(root, "train-clean-100", 16, seed=1),
        "valid": synth_split(root, "dev-clean", 4, seed=2),
    }


def run_pretrain(corpus, out_dir: Path, cfg: dict, *extra: str, valid: bool = True) -> int:
    argv = ["teacher", "pretrain", "--manifest", str(corpus["train"]), "--config-json", json.dumps(cfg),
            "--out", str(out_dir / "teacher.pt"), "--workdir", str(out_dir / "work"), "--no-progress", *extra]
    if valid:
        argv += ["--valid-manifest", str(corpus["valid"])]
    return cli_main(argv)


def merged(base: dict, **sections) -> dict:
    out = json.loads(json.dumps(base))
    for key, value in sections.items():
        if isinstance(value, dict):
            out.setdefault(key, {}).update(value)
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------- features


@pytest.mark.parametrize("channels", [16, 128])
def test_mfcc_frames_match_conv_front_end(channels):
    """One MFCC frame (hop 320, 25 ms window) per output frame of the HuBERT-stride front end."""
    from deepwide.models.arch import ArchConfig, build_model, conv_layers
    from deepwide.teacher.features import (
        MFCCFeaturizer,
        conv_num_frames,
        receptive_field,
    )

    conv = conv_layers(channels)
    assert receptive_field(conv) == 400
    model = build_model(ArchConfig(1, 32, 64, 2, conv=conv, pos_conv_kernel=8, pos_conv_groups=4)).eval()
    feat = MFCCFeaturizer(conv)
    assert feat.hop == 320 and feat.win == 400 and feat.dim == 39
    rng = np.random.default_rng(0)
    for n in [400, 719, 720, 1039, 1040, 16000, 16001, 16319, 16320, 33333]:
        wav = rng.standard_normal(n).astype(np.float32)
        with torch.no_grad():
            frames = model.feature_extractor(torch.from_numpy(wav)[None], None)[0].shape[1]
        assert conv_num_frames(n, conv) == frames, n
        mf = feat(wav)
        assert mf.shape == (frames, 39), n
        assert np.isfinite(mf).all()


def test_mfcc_alignment_other_strides():
    """A front end with a 160-sample stride gets a 160-sample MFCC hop and aligned frames."""
    from deepwide.teacher.features import MFCCFeaturizer, conv_num_frames

    conv = [(8, 10, 5), (8, 4, 2), (8, 4, 2), (8, 2, 2), (8, 2, 2), (8, 2, 2)]
    feat = MFCCFeaturizer(conv)
    assert feat.hop == 160
    for n in [800, 8000, 12345]:
        assert feat(np.zeros(n, np.float32) + 0.01).shape[0] == conv_num_frames(n, conv)


def test_mfcc_too_short_is_a_clear_error():
    from deepwide.models.arch import conv_layers
    from deepwide.teacher.features import MFCCFeaturizer

    with pytest.raises(DeepwideError, match="shorter than one frame"):
        MFCCFeaturizer(conv_layers(16))(np.zeros(100, np.float32))


def test_batch_plan_stream_resumes_mid_epoch():
    from deepwide.teacher.data import BatchPlan

    n = np.array([16000 * (1 + i % 5) for i in range(40)])
    plan = BatchPlan(n, batch_samples=16000 * 8, crop_samples=16000 * 3, seed=3, iteration=1)
    full = [idx for _, (s, idx) in zip(range(60), plan.stream(0))]
    tail = [idx for _, (s, idx) in zip(range(60 - 23), plan.stream(23))]
    assert full[23:] == tail
    # every batch respects the audio budget after cropping to its shortest member
    eff = np.minimum(n, 16000 * 3)
    for idx in full:
        assert len(idx) == 1 or len(idx) * eff[idx].min() <= 16000 * 8
    # an epoch visits every utterance once
    assert sorted(i for b in plan.epoch(0) for i in b) == list(range(40))


# ---------------------------------------------------------------- pretraining


def test_pretrain_micro_teacher(corpus, tmp_path):
    """Real espeak-ng audio -> MFCC k-means -> masked prediction: loss falls, checkpoint loads."""

    from deepwide.models.arch import hidden_states
    from deepwide.models.checkpoint import load_checkpoint

    assert run_pretrain(corpus, tmp_path, MICRO) == 0
    curve = pd.read_parquet(tmp_path / "curve.parquet")
    train = curve[curve.split == "train"].sort_values("step")
    assert list(train.step) == list(range(5, 41, 5))
    assert train.loss.iloc[-2:].mean() < train.loss.iloc[:2].mean()
    valid = curve[curve.split == "valid"]
    assert list(valid.step) == [20, 40]
    assert ((valid.masked_acc >= 0) & (valid.masked_acc <= 1)).all()

    info = json.loads((tmp_path / "info.json").read_text())
    assert info["steps"] == 40 and info["n_clusters"] == 8 and info["device"] in ("cpu", "cuda")
    assert 0 < info["majority_rate"] < 1 and info["valid_masked_acc"] == valid.masked_acc.iloc[-1]
    assert info["valid_utterances"] == 4 and info["train_utterances"] == 16
    assert info["wall_time_s"] > 0 and info["cpu_time_s"] > 0
    assert info["usage"]["peak_rss_mb"] > 0 and info["usage"]["wall_s"] > 0  # plan resources
    # HuBERT Base's mask_prob 0.8; the unmasked frames' loss kept (masked-only learns nothing at the embedded size)
    assert info["config"]["train"]["unmasked_weight"] == 1.0 and info["config"]["train"]["mask_prob"] == 0.8
    from deepwide.utils.precision import resolve_precision

    assert info["config"]["train"]["precision"] == "auto"
    assert info["iterations"][0]["precision"] == resolve_precision("auto", torch.device(info["device"]))
    # first-vs-last-layer linear CKA on the held-out audio, for the report's warning
    assert 0.0 <= info["cka_first_last"] <= 1.0 + 1e-9 and "4 held-out" in info["cka_first_last_on"]

    model, arch, meta = load_checkpoint(tmp_path / "teacher.pt")
    assert arch.depth == 2 and arch.width == 32 and arch.conv[0] == (16, 10, 5)
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert meta["source"] == "pretrain" and meta["valid_masked_acc"] == info["valid_masked_acc"]
    assert meta["normalize"] is False
    wavs = torch.randn(2, 16000)
    with torch.no_grad():
        states, lengths = hidden_states(model, wavs)
    assert len(states) == 3 and all(s.shape == (2, 49, 32) for s in states)
    # resume files stay in the work folder, outside the declared outputs
    assert (tmp_path / "work" / "state_it1.pt").is_file()


def test_interrupted_run_resumes_to_identical_weights(corpus, tmp_path):
    """Stop after k steps and rerun: the same weights as one uninterrupted run (CPU, same seed)."""

    from deepwide.models.checkpoint import load_checkpoint

    cfg = merged(MICRO, train={"steps": 14, "checkpoint_every": 100, "eval_every": 7, "log_every": 2})
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_pretrain(corpus, a, cfg, valid=False) == 0
    assert run_pretrain(corpus, b, cfg, "--stop-at-step", "5", valid=False) == 0
    assert not (b / "teacher.pt").exists() and not (b / "info.json").exists()
    state = torch.load(b / "work" / "state_it1.pt", weights_only=False)
    assert state["step"] == 5
    assert run_pretrain(corpus, b, cfg, valid=False) == 0
    (ma, _, _), (mb, _, _) = load_checkpoint(a / "teacher.pt"), load_checkpoint(b / "teacher.pt")
    sa, sb = ma.state_dict(), mb.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    info = json.loads((b / "info.json").read_text())
    assert "held out" in info["valid_source"] and info["train_utterances"] + info["valid_utterances"] == 16
    ca, cb = pd.read_parquet(a / "curve.parquet"), pd.read_parquet(b / "curve.parquet")
    pd.testing.assert_frame_equal(ca.drop(columns="wall_s"), cb.drop(columns="wall_s"))
    # a finished work folder is reused as is: rerunning retrains nothing
    mtime = (b / "work" / "state_it1.pt").stat().st_mtime_ns
    assert run_pretrain(corpus, b, cfg, valid=False) == 0
    assert (b / "work" / "state_it1.pt").stat().st_mtime_ns == mtime


@pytest.mark.parametrize("precision,threads", [("fp32", 2), ("bf16", 1)])
def test_rerun_gives_bit_identical_teacher(corpus, tmp_path, precision, threads):
    """Issue 20 item 6: the same config trained twice on one machine gives the same bits:
    equal weight hashes, byte-identical teacher.pt, and equal records of what determines the
    weights. fp32 on two intra-op threads (parallel reductions run); bf16 on one (two threads
    on a busy 2-core machine cost 5x)."""
    import hashlib

    from deepwide.models.checkpoint import load_checkpoint
    from deepwide.utils.precision import cpu_kernel_flags, state_sha256

    cfg = merged(MICRO, train={"steps": 4, "eval_every": 4, "log_every": 2, "precision": precision}, threads=threads)
    infos, files = [], []
    for run in ("a", "b"):
        assert run_pretrain(corpus, tmp_path / run, cfg) == 0
        infos.append(json.loads((tmp_path / run / "info.json").read_text()))
        files.append(hashlib.sha256((tmp_path / run / "teacher.pt").read_bytes()).hexdigest())
        # the recorded hash is the hash of the weights in the checkpoint
        assert infos[-1]["weights_sha256"] == state_sha256(load_checkpoint(tmp_path / run / "teacher.pt")[0].state_dict())
    a, b = infos
    assert a["weights_sha256"] == b["weights_sha256"]
    assert files[0] == files[1]
    assert a["numerics"] == b["numerics"]
    # the record says what ran here
    rec = a["numerics"]
    assert rec["torch"] == torch.__version__ and rec["threads"] == threads == a["threads"]
    assert rec["precision"] == precision and [i["precision"] for i in a["iterations"]] == [precision]
    assert rec["device"] == a["device"] and rec["cpu_flags"] == cpu_kernel_flags()
    assert rec["aten_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert rec["deterministic_algorithms"] is True
    assert not torch.are_deterministic_algorithms_enabled()  # restored after the run


def test_thread_count_is_pinned_and_recorded(corpus, tmp_path):
    """The weights depend on the intra-op thread count (reduction order): the count used is
    the config's, not the machine's, and info.json says which."""
    cfg = merged(MICRO, train={"steps": 3, "eval_every": 3, "precision": "fp32"}, threads=1)
    # Snakemake passes its share of --cores as --threads: a pinned config count wins
    assert run_pretrain(corpus, tmp_path, cfg, "--threads", "2") == 0
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["threads"] == info["numerics"]["threads"] == 1 and torch.get_num_threads() == 1


def test_state_sha256_and_cpu_flags(monkeypatch):
    from deepwide.utils import precision as P

    sd = {"b": torch.ones(3), "a": torch.zeros(2, 2, dtype=torch.bfloat16)}
    h = P.state_sha256(sd)
    assert h == P.state_sha256(dict(reversed(list(sd.items()))))  # order of the dict is irrelevant
    sd2 = {"b": torch.ones(3), "a": torch.zeros(2, 2, dtype=torch.bfloat16)}
    sd2["b"][1] = torch.nextafter(torch.tensor(1.0), torch.tensor(2.0))  # one ulp
    assert P.state_sha256(sd2) != h
    assert P.state_sha256({"b": torch.ones(3), "a": torch.zeros(4, dtype=torch.bfloat16)}) != h  # shape counts
    monkeypatch.setattr(P, "cpu_info", lambda: ("Some CPU", frozenset({"avx2", "avx512f", "amx_bf16", "sse2"})))
    assert P.cpu_kernel_flags() == ["amx_bf16", "avx2", "avx512f"]
    assert P.cpu_has_native_bf16()
    monkeypatch.setattr(P, "cpu_info", lambda: ("", frozenset({"avx2"})))
    assert not P.cpu_has_native_bf16()
    rec = P.numerics_record(torch.device("cpu"), 3, "fp32")
    assert rec["threads"] == 3 and rec["cpu_flags"] == ["avx2"] and rec["torch"] == torch.__version__


def test_precision_auto_fp32_bf16(monkeypatch):
    from deepwide.utils import precision as P

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert P.resolve_precision("fp32", cuda) == "fp32" and P.resolve_precision("bf16", cpu) == "bf16"
    assert P.resolve_precision("auto", cuda) == "bf16"
    assert isinstance(P.cpu_has_native_bf16(), bool)
    for native, expect in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(P, "cpu_has_native_bf16", lambda n=native: n)
        assert P.resolve_precision("auto", cpu) == expect
    with pytest.raises(DeepwideError, match="'fp16'"):
        P.resolve_precision("fp16", cpu)


def test_teacher_precision_is_used_and_recorded(corpus, tmp_path):
    """train.precision switches the trainer's autocast; info.json records what ran."""
    from deepwide.models.checkpoint import load_checkpoint

    states = {}
    for prec in ("fp32", "bf16"):
        cfg = merged(MICRO, train={"steps": 6, "eval_every": 6, "precision": prec})
        assert run_pretrain(corpus, tmp_path / prec, cfg) == 0
        info = json.loads((tmp_path / prec / "info.json").read_text())
        assert [i["precision"] for i in info["iterations"]] == [prec]
        states[prec] = load_checkpoint(tmp_path / prec / "teacher.pt")[0].state_dict()
    # same seed and data: only the arithmetic differs, and it does change the weights
    assert any(not torch.equal(states["fp32"][k], states["bf16"][k]) for k in states["fp32"])


def test_eval_cadence_does_not_change_the_teacher(corpus, tmp_path):
    """train.eval_every is an execution setting (not in the job's identity): held-out
    evaluation draws its masks from forked RNG state, so the weights do not depend on it."""
    from deepwide.models.checkpoint import load_checkpoint

    sd = {}
    for every in (3, 10):
        cfg = merged(MICRO, train={"steps": 10, "eval_every": every, "precision": "fp32"})
        assert run_pretrain(corpus, tmp_path / str(every), cfg) == 0
        sd[every] = load_checkpoint(tmp_path / str(every) / "teacher.pt")[0].state_dict()
    assert all(torch.equal(sd[3][k], sd[10][k]) for k in sd[3])


def test_changed_config_discards_stale_resume_state(corpus, tmp_path):
    cfg = merged(MICRO, train={"steps": 6, "eval_every": 6})
    assert run_pretrain(corpus, tmp_path, cfg, "--stop-at-step", "3") == 0
    cfg2 = merged(cfg, train={"lr": 0.001})
    assert run_pretrain(corpus, tmp_path, cfg2, "--stop-at-step", "2") == 0
    # the new run started from step 0 with the new config, not from the old step 3
    assert torch.load(tmp_path / "work" / "state_it1.pt", weights_only=False)["step"] == 2


def test_second_iteration_clusters_teacher_layer(corpus, tmp_path):

    cfg = merged(MICRO, train={"steps": 10, "eval_every": 10}, iterations=2,
                 iteration2={"layer": 1, "clusters": 6, "steps": 8})
    assert run_pretrain(corpus, tmp_path, cfg) == 0
    info = json.loads((tmp_path / "info.json").read_text())
    assert [i["labels"] for i in info["iterations"]] == ["mfcc", "iteration1 layer 1"]
    assert info["n_clusters"] == 6 and info["steps"] == 18
    curve = pd.read_parquet(tmp_path / "curve.parquet")
    assert set(curve.iteration) == {1, 2} and curve.global_step.max() == 18


# ---------------------------------------------------------------- several training manifests


def _halves(corpus, tmp_path: Path) -> tuple[Path, Path]:
    """The training manifest split in two by id (10 + 6 utterances)."""
    df = pd.read_parquet(corpus["train"]).sort_values("id")
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    df.iloc[:10].to_parquet(a, index=False)
    df.iloc[10:].to_parquet(b, index=False)
    return a, b


def test_read_splits_concatenates_training_manifests(corpus, tmp_path):
    from deepwide.teacher.pretrain import pretrain_config, read_splits

    cfg = pretrain_config(MICRO)
    a, b = _halves(corpus, tmp_path)
    one = read_splits(corpus["train"], corpus["valid"], cfg)
    two = read_splits([a, b], corpus["valid"], cfg)
    assert two["train"].ids == one["train"].ids and two["train"].paths == one["train"].paths
    assert (two["train"].num_samples == one["train"].num_samples).all()
    assert two["manifests"] == [a, b, Path(corpus["valid"])]
    assert [s["manifest"] for s in two["skipped"]] == [str(a), str(b), str(corpus["valid"])]
    held = read_splits([a, b], None, cfg)
    assert len(held["train"]) + len(held["valid"]) == 16 and f"of {a}, {b} held out" in held["valid_source"]


def test_duplicate_utterance_id_across_manifests_names_both(corpus, tmp_path, capsys):
    a, _ = _halves(corpus, tmp_path)
    first = min(pd.read_parquet(a)["id"])
    rc = cli_main(["teacher", "pretrain", "--manifest", str(corpus["train"]), "--manifest", str(a),
                   "--out", str(tmp_path / "t.pt"), "--workdir", str(tmp_path / "w"), "--config-json", json.dumps(MICRO)])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"utterance id {first} is in two training manifests: {corpus['train']} and {a}" in err
    assert not (tmp_path / "t.pt").exists()


def test_pretrain_on_two_manifests_is_the_teacher_of_their_union(corpus, tmp_path):
    """``--manifest A B``: the same utterances in the same order as the one manifest they
    were cut from, so the same weights; info.json lists every manifest read."""
    cfg = merged(MICRO, train={"steps": 4, "eval_every": 4})
    assert run_pretrain(corpus, tmp_path / "one", cfg) == 0
    a, b = _halves(corpus, tmp_path)
    argv = ["teacher", "pretrain", "--manifest", str(a), str(b), "--valid-manifest", str(corpus["valid"]),
            "--config-json", json.dumps(cfg), "--out", str(tmp_path / "two" / "teacher.pt"),
            "--workdir", str(tmp_path / "two" / "work"), "--no-progress"]
    assert cli_main(argv) == 0
    one, two = (json.loads((tmp_path / d / "info.json").read_text()) for d in ("one", "two"))
    assert two["weights_sha256"] == one["weights_sha256"] and two["train_utterances"] == 16
    assert two["manifests"] == [str(a), str(b), str(corpus["valid"])]
    assert one["manifests"] == [str(corpus["train"]), str(corpus["valid"])]


# ---------------------------------------------------------------- CLI errors


def test_pretrain_missing_manifest(tmp_path, capsys):
    rc = cli_main(["teacher", "pretrain", "--manifest", str(tmp_path / "none.parquet"), "--out",
                   str(tmp_path / "t.pt"), "--workdir", str(tmp_path / "w")])
    assert rc == 2
    assert "manifest not found" in capsys.readouterr().err
    assert not (tmp_path / "t.pt").exists()


@pytest.mark.parametrize("config_json, message", [
    ('{"arch": {"dpth": 3}}', "teacher.pretrain.arch.dpth"),
    ("{not json", "--config-json is not valid JSON"),
    ('{"arch": {"width": 100, "heads": 3}}', "heads (3) must divide width (100)"),
])
def test_pretrain_bad_config_names_key(tmp_path, capsys, config_json, message):
    rc = cli_main(["teacher", "pretrain", "--manifest", "m.parquet", "--out", str(tmp_path / "t.pt"),
                   "--workdir", str(tmp_path / "w"), "--config-json", config_json])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_pretrain_manifest_problems(tmp_path, capsys):

    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"id": ["a"], "num_samples": [16000]}).to_parquet(bad)
    args = ["teacher", "pretrain", "--out", str(tmp_path / "t.pt"), "--workdir", str(tmp_path / "w")]
    assert cli_main(args + ["--manifest", str(bad)]) == 2
    assert "lacks column(s) path" in capsys.readouterr().err
    pd.DataFrame({"id": ["a"], "path": [str(tmp_path / "gone.flac")], "num_samples": [32000]}).to_parquet(bad)
    assert cli_main(args + ["--manifest", str(bad)]) == 2
    assert "audio file of utterance a not found" in capsys.readouterr().err
    pd.DataFrame({"id": ["a"], "path": [str(tmp_path / "gone.flac")], "num_samples": [3200]}).to_parquet(bad)
    assert cli_main(args + ["--manifest", str(bad)]) == 2
    assert "no utterance of at least 1.0 s" in capsys.readouterr().err
    sr = tmp_path / "sr.parquet"
    pd.DataFrame({"id": ["a"], "path": ["x"], "num_samples": [32000], "sample_rate": [8000]}).to_parquet(sr)
    assert cli_main(args + ["--manifest", str(sr)]) == 2
    assert "sample_rate 8000" in capsys.readouterr().err


def test_import_errors(tmp_path, capsys):
    out = str(tmp_path / "t.pt")
    assert cli_main(["teacher", "import", "--format", "hf", str(tmp_path / "none"), "--out", out]) == 2
    assert "source checkpoint not found" in capsys.readouterr().err
    f = tmp_path / "model.pt"
    f.write_bytes(b"x")
    assert cli_main(["teacher", "import", "--format", "hf", str(f), "--out", out]) == 2
    assert "expects a transformers model directory" in capsys.readouterr().err
    assert cli_main(["teacher", "import", "--format", "fairseq", str(tmp_path), "--out", out]) == 2
    assert "expects a .pt file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["teacher", "import", "--format", "onnx", str(f), "--out", out])


def test_import_hf_checkpoint_via_cli(tmp_path):
    """A random transformers HubertModel imported through the CLI gives the same hidden states."""
    from transformers import HubertConfig, HubertModel

    from deepwide.models.arch import hidden_states
    from deepwide.models.checkpoint import load_checkpoint

    torch.manual_seed(0)
    hf_cfg = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          conv_dim=(16,) * 7, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4,
                          feat_extract_norm="group", do_stable_layer_norm=False)
    hf = HubertModel(hf_cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    out = tmp_path / "teacher.pt"
    assert cli_main(["teacher", "import", "--format", "hf", str(tmp_path / "hf"), "--out", str(out)]) == 0
    model, arch, _ = load_checkpoint(out)
    assert (arch.depth, arch.width) == (2, 32)
    # info.json beside it, with the fields teacher pretrain / teacher random write
    from deepwide.utils.precision import state_sha256

    info = json.loads((tmp_path / "info.json").read_text())
    assert info["source"] == "import" and info["import"]["format"] == "hf" and info["arch"] == arch.to_dict()
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert info["weights_sha256"] == state_sha256(model.state_dict()) and info["usage"]["peak_rss_mb"] > 0
    wavs = torch.randn(1, 8000)
    with torch.no_grad():
        ours, _ = hidden_states(model, wavs)
        ref = hf(wavs, output_hidden_states=True).hidden_states
    assert len(ours) == len(ref) == 3
    assert torch.allclose(ours[-1], ref[-1], atol=1e-4)


# ---------------------------------------------------------------- config-time rule helpers


def test_import_source_requires_path(tmp_path):
    from deepwide.config import validate_config
    from deepwide.plan.teacher import import_source

    cfg = validate_config({"teacher": {"source": "import", "import": {"format": "fairseq"}}})
    with pytest.raises(DeepwideError, match="teacher.import.path: required"):
        import_source(cfg)
    cfg["teacher"]["import"]["path"] = str(tmp_path / "missing.pt")
    with pytest.raises(DeepwideError, match="teacher.import.path: .*does not exist"):
        import_source(cfg)
    (tmp_path / "hubert.pt").write_bytes(b"x")
    cfg["teacher"]["import"]["path"] = str(tmp_path / "hubert.pt")
    assert import_source(cfg) == ("fairseq", (tmp_path / "hubert.pt").resolve())


# ---------------------------------------------------------------- Snakemake rules


def snakemake(repo: Path, workdir: Path, config: dict, *targets: str, extra: tuple = ()):
    import os
    import subprocess
    import sys

    import yaml

    cfg_file = workdir / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(config))
    env = dict(os.environ, PYTHONPATH=str(repo / "src"))
    cmd = [str(Path(sys.executable).with_name("snakemake")), "-s", str(repo / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(cfg_file), "--cores", "1", *extra, "--", *targets]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_snakemake_teacher_pretrain_rule(repo_root, corpus, tmp_path):
    """The rule trains from the corpus manifests, reruns on a config change only."""
    import shutil as sh

    results = tmp_path / "results"
    sh.copytree(corpus["root"] / "manifests", results / "manifests")
    cfg = {"results": str(results),
           "teacher": {"source": "pretrain",
                       "pretrain": merged(MICRO, train={"steps": 6, "eval_every": 3}, threads=0)}}
    target = str(results / "teacher" / "teacher.pt")
    only = ("--allowed-rules", "teacher_pretrain")
    r = snakemake(repo_root, tmp_path, cfg, target, extra=only)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads((results / "teacher" / "info.json").read_text())
    assert info["steps"] == 6 and info["valid_utterances"] == 4
    assert (results / "logs" / "teacher_pretrain" / "teacher.log").is_file()
    assert (results / "teacher" / "work" / "state_it1.pt").is_file()
    # nothing to do on a rerun; a changed teacher config reruns the rule
    r = snakemake(repo_root, tmp_path, cfg, target, extra=(*only, "-n"))
    assert r.returncode == 0 and "Nothing to be done" in r.stdout, r.stdout
    cfg["teacher"]["pretrain"]["train"]["lr"] = 0.001
    r = snakemake(repo_root, tmp_path, cfg, target, extra=(*only, "-n"))
    assert r.returncode == 0 and "rule teacher_pretrain" in r.stdout and "Params have changed" in r.stdout, r.stdout


@pytest.mark.slow
def test_snakemake_teacher_pretrain_rule_on_a_list_of_splits(repo_root, corpus, tmp_path):
    """teacher.pretrain.train_split as a list: one input per manifest, all passed to --manifest."""
    import shutil as sh

    results = tmp_path / "results"
    man = results / "manifests" / "librispeech"
    man.mkdir(parents=True)
    a, b = _halves(corpus, tmp_path)
    sh.copy(a, man / "train-clean-100.parquet")
    sh.copy(b, man / "train-clean-360.parquet")
    sh.copy(corpus["valid"], man / "dev-clean.parquet")
    cfg = {"results": str(results),
           "corpus": {"librispeech": {"splits": ["train-clean-100", "train-clean-360", "dev-clean"],
                                      "synth": {"train_360_speakers": 1}}},
           "teacher": {"source": "pretrain",
                       "pretrain": merged(MICRO, train={"steps": 4, "eval_every": 4}, threads=0,
                                          train_split=["train-clean-100", "train-clean-360"])}}
    target = str(results / "teacher" / "teacher.pt")
    only = ("--allowed-rules", "teacher_pretrain")
    r = snakemake(repo_root, tmp_path, cfg, target, extra=only)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads((results / "teacher" / "info.json").read_text())
    assert info["train_utterances"] == 16
    assert [Path(m).name for m in info["manifests"]] == ["train-clean-100.parquet", "train-clean-360.parquet",
                                                         "dev-clean.parquet"]


@pytest.mark.slow
def test_snakemake_import_without_path_fails_at_config_time(repo_root, tmp_path):
    cfg = {"results": str(tmp_path / "results"), "teacher": {"source": "import", "import": {"format": "fairseq"}}}
    r = snakemake(repo_root, tmp_path, cfg, extra=("-n",))
    assert r.returncode != 0
    assert "teacher.import.path" in r.stdout + r.stderr
    ckpt = tmp_path / "hubert.pt"
    ckpt.write_bytes(b"not really a checkpoint")
    cfg["teacher"]["import"]["path"] = str(ckpt)
    target = str(tmp_path / "results" / "teacher" / "teacher.pt")
    r = snakemake(repo_root, tmp_path, cfg, target, extra=("-n",))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rule teacher_import" in r.stdout
