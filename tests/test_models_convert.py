"""Teacher import (transformers, fairseq, s3prl converted HuBERT) and HF export.

Every source checkpoint is a small random model built by the source implementation
itself (transformers' HubertModel/Wav2Vec2Model; s3prl's copy of fairseq's HubertModel,
whose state_dict keys are fairseq's) and saved the way that project saves it. Hidden
states after conversion are compared with the source implementation's, all L+1 of them.
"""

import argparse
import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from deepwide.errors import DeepwideError
from deepwide.models.arch import ArchConfig, build_model, conv_layers, hidden_states, normalize_waveforms
from deepwide.models.checkpoint import load_checkpoint, save_checkpoint
from deepwide.models.convert import export_hf, import_checkpoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TOL = 1e-4
CONV_SPEC = "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2"


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random values in every parameter (norm gains near 1), so that swapped or
    unloaded weights change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name and name.endswith("weight") or name.endswith(("2.weight", "2.1.weight")):
                p.copy_(1.0 + 0.2 * noise)
            else:
                p.copy_(0.2 * noise)
    return model.eval()


def audio(lengths=(16000, 12345), seed=1):
    g = torch.Generator().manual_seed(seed)
    wavs = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wavs[i, :n] = 0.3 * torch.randn(n, generator=g)
    return wavs, torch.tensor(lengths)


def ours_states(model, wavs, lengths):
    with torch.no_grad():
        states, frames = hidden_states(model.eval(), wavs, lengths)
    return states, frames


def assert_same_states_as_hf(model, hf_model, depth):
    """Our L+1 hidden states equal a transformers model's on one padded batch."""
    wavs, lengths = audio()
    ours, frames = ours_states(model, wavs, lengths)
    mask = (torch.arange(wavs.shape[1])[None] < lengths[:, None]).long()
    with torch.no_grad():
        ref = hf_model(wavs, attention_mask=mask, output_hidden_states=True).hidden_states
    assert len(ours) == len(ref) == depth + 1
    assert_states_close(ours, ref, frames)


def assert_states_close(ours, ref, frames):
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref)):
        for row, n in enumerate(frames.tolist()):
            diff = (a[row, :n] - b[row, :n]).abs().max().item()
            assert diff < TOL, f"hidden state {i}, row {row}: max |diff| {diff:.2e}"


# ----------------------------------------------------------------------------- transformers


def hf_source(tmp_path, kind):
    from transformers import HubertConfig, HubertForCTC, HubertModel, Wav2Vec2Config, Wav2Vec2ForCTC

    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                 conv_dim=[32] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    if kind == "hubert":  # HuBERT Base layout: group norm front end, post-LN layers
        model = HubertModel(HubertConfig(**small))
        base = model
    elif kind == "hubert-ctc":
        model = HubertForCTC(HubertConfig(vocab_size=12, **small))
        base = model.hubert
    else:  # wav2vec2, Large layout: layer-norm front end with conv bias, pre-LN layers
        model = Wav2Vec2ForCTC(Wav2Vec2Config(vocab_size=12, feat_extract_norm="layer", conv_bias=True,
                                              do_stable_layer_norm=True, **{**small, "num_hidden_layers": 3}))
        base = model.wav2vec2
    randomize(model)
    src = tmp_path / f"hf-{kind}"
    model.save_pretrained(src)
    return src, base


@pytest.mark.parametrize("kind", ["hubert", "hubert-ctc", "wav2vec2-large-layout"])
def test_import_hf_equals_transformers(tmp_path, kind):
    src, ref_model = hf_source(tmp_path, kind)
    out = tmp_path / "teacher.pt"
    _, arch, meta = import_checkpoint("hf", src, out)
    model, arch2, meta2 = load_checkpoint(out)
    assert arch2 == arch and meta2["source"]["format"] == "hf" and meta2["source"]["path"] == str(src.resolve())
    assert arch.layer_norm_first == (kind == "wav2vec2-large-layout")
    assert_same_states_as_hf(model, ref_model.eval(), arch.depth)


def test_import_hf_old_weight_norm_names(tmp_path):
    """Older transformers checkpoints (e.g. hubert-base-ls960) store weight_g/weight_v."""
    from safetensors.torch import load_file

    src, ref_model = hf_source(tmp_path, "hubert")
    state = load_file(src / "model.safetensors")
    renamed = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v"): v
               for k, v in state.items()}
    assert any(k.endswith("weight_g") for k in renamed)
    (src / "model.safetensors").unlink()
    torch.save(renamed, src / "pytorch_model.bin")
    model, arch, _ = import_checkpoint("hf", src, tmp_path / "t.pt")
    wavs, lengths = audio((8000,))
    ours, frames = ours_states(model, wavs, lengths)
    with torch.no_grad():
        ref = ref_model.eval()(wavs, output_hidden_states=True).hidden_states
    assert_states_close(ours, ref, frames)


# ----------------------------------------------------------------------------- fairseq / s3prl


def s3prl_hubert(variant):
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

    fields = dict(label_rate=50, encoder_layers=2, encoder_embed_dim=64, encoder_ffn_embed_dim=96,
                  encoder_attention_heads=4, conv_feature_layers=CONV_SPEC, conv_pos=16, conv_pos_groups=4)
    if variant == "large-layout":
        fields.update(extractor_mode="layer_norm", layer_norm_first=True, conv_bias=True, encoder_layers=3)
    if variant == "no-projection":  # conv channels == width: fairseq builds no post_extract_proj
        fields.update(conv_feature_layers=CONV_SPEC.replace("32", "64"))
    cfg = HubertConfig(**fields)
    task = HubertPretrainingConfig(normalize=variant == "large-layout")
    model = randomize(HubertModel(cfg, task, [list(range(20))]))
    return model, cfg, task


def s3prl_reference(model, cfg, task, tmp_path, wavs):
    """Hidden states from s3prl's own hubert upstream, loaded from its converted format."""
    from s3prl.upstream.hubert.expert import UpstreamExpert

    path = tmp_path / "s3prl-converted.pt"
    torch.save({"task_cfg": dataclasses.asdict(task), "model_cfg": dataclasses.asdict(cfg),
                "model_weight": model.state_dict(), "dictionaries_symbols": [list(range(20))]}, path)
    # float64 on both sides: the comparison tests the weight mapping, not float32 rounding,
    # which on a loaded machine (other BLAS blocking) reached 1.07e-4 on the pre-LN layout
    upstream = UpstreamExpert(str(path)).eval().double()
    with torch.no_grad():
        return path, upstream([w.double() for w in wavs])["hidden_states"]


def fairseq_blob(model, cfg, task, style):
    """A checkpoint dict laid out as fairseq's trainer saves it."""
    model_cfg = {"_name": "hubert", **dataclasses.asdict(cfg)}
    task_cfg = {"_name": "hubert_pretraining", **dataclasses.asdict(task)}
    weights = dict(model.state_dict())
    blob = {"args": None, "cfg": {"_name": None, "model": model_cfg, "task": task_cfg, "common": {"fp16": False}},
            "model": weights, "optimizer_history": [], "extra_state": {}, "last_optimizer_state": None}
    if style == "omegaconf":
        from omegaconf import OmegaConf

        blob["cfg"] = OmegaConf.create(blob["cfg"])
    elif style == "legacy-args":  # pre-hydra fairseq: one flat argparse Namespace
        blob["cfg"] = None
        blob["args"] = argparse.Namespace(arch="hubert", task="hubert_pretraining", **dataclasses.asdict(cfg),
                                          normalize=task.normalize)
    elif style == "ctc-finetuned":  # hubert_ctc: encoder under w2v_encoder.w2v_model, config in w2v_args
        blob["model"] = {**{f"w2v_encoder.w2v_model.{k}": v for k, v in weights.items()},
                         "w2v_encoder.proj.weight": torch.randn(12, 64), "w2v_encoder.proj.bias": torch.zeros(12)}
        blob["cfg"]["model"] = {"_name": "hubert_ctc", "w2v_path": "/somewhere/hubert.pt",
                                "w2v_args": {"model": model_cfg, "task": task_cfg}}
    return blob


@pytest.mark.parametrize("variant", ["base-layout", "large-layout", "no-projection"])
def test_import_s3prl_hubert_equals_s3prl(tmp_path, variant):
    model, cfg, task = s3prl_hubert(variant)
    wavs, lengths = audio((16000, 16000))
    src, ref = s3prl_reference(model, cfg, task, tmp_path, wavs)
    ours_model, arch, meta = import_checkpoint("s3prl-hubert", src, tmp_path / "t.pt")
    assert meta["normalize"] == (variant == "large-layout")
    if meta["normalize"]:  # s3prl's upstream layer-normalises each waveform first
        wavs = normalize_waveforms(wavs, lengths)
    ours, frames = ours_states(ours_model.double(), wavs.double(), lengths)
    assert len(ours) == len(ref) == arch.depth + 1
    assert_states_close(ours, ref, frames)


@pytest.mark.parametrize("style", ["dict", "omegaconf", "legacy-args", "ctc-finetuned"])
def test_import_fairseq_equals_s3prl(tmp_path, style):
    model, cfg, task = s3prl_hubert("base-layout")
    wavs, lengths = audio((16000, 16000))
    _, ref = s3prl_reference(model, cfg, task, tmp_path, wavs)
    src = tmp_path / "hubert.pt"
    torch.save(fairseq_blob(model, cfg, task, style), src)
    ours_model, arch, meta = import_checkpoint("fairseq", src, tmp_path / "t.pt")
    assert (arch.depth, arch.width, arch.ffn, arch.heads, arch.conv) == (2, 64, 96, 4, conv_layers(32))
    assert meta["source"]["format"] == "fairseq"
    ours, frames = ours_states(ours_model.double(), wavs.double(), lengths)
    assert_states_close(ours, ref, frames)


def test_normalize_waveforms_matches_s3prl_per_utterance():
    wavs, lengths = audio((16000, 9000, 400))
    wavs = wavs * 3 + 0.5 * (torch.arange(wavs.shape[1])[None] < lengths[:, None])
    out = normalize_waveforms(wavs, lengths)
    for row, n in enumerate(lengths.tolist()):
        ref = torch.nn.functional.layer_norm(wavs[row, :n], (n,))  # what s3prl's hubert upstream does
        assert (out[row, :n] - ref).abs().max() < 1e-5
        assert not out[row, n:].any()  # padding stays zero


# ----------------------------------------------------------------------------- export


def student(tmp_path, layer_norm_first=False):
    arch = ArchConfig(depth=3, width=64, ffn=128, heads=4, conv=conv_layers(32), pos_conv_kernel=16, pos_conv_groups=4,
                      extractor_mode="layer_norm" if layer_norm_first else "group_norm", layer_norm_first=layer_norm_first)
    model = randomize(build_model(arch), seed=3)
    path = tmp_path / "student.pt"
    save_checkpoint(path, model, arch, {"method": "l2l"})
    return path, model, arch


@pytest.mark.parametrize("layer_norm_first", [False, True], ids=["post-ln", "pre-ln"])
def test_export_hf_cli_loads_in_transformers(tmp_path, repo_root, layer_norm_first):
    from transformers import HubertModel, Wav2Vec2FeatureExtractor

    ckpt, model, arch = student(tmp_path, layer_norm_first)
    out = tmp_path / "hf"
    env = {**os.environ, "PYTHONPATH": str(repo_root / "src")}
    r = subprocess.run([sys.executable, "-m", "deepwide", "export", "hf", str(ckpt), str(out)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hf.")]  # no temp dir left
    hf = HubertModel.from_pretrained(out).eval()
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(out)
    assert extractor.sampling_rate == 16000 and extractor.return_attention_mask and not extractor.do_normalize
    assert_same_states_as_hf(model, hf, arch.depth)
    # round trip: the export imports back to the very same weights
    back, arch_back, _ = import_checkpoint("hf", out, tmp_path / "back.pt")
    assert arch_back == arch
    for k, v in model.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k


def test_export_loads_in_s3prl_hf_hubert_custom(tmp_path):
    """s3prl's hf_hubert_custom upstream (the hub entry S3PRLUpstream('hf_hubert_custom',
    path_or_url=...) calls) reads the export from a local path, offline."""
    from s3prl.upstream.hf_hubert.expert import UpstreamExpert
    from s3prl.upstream.hf_hubert.hubconf import hf_hubert_custom

    ckpt, model, arch = student(tmp_path)
    out = export_hf(ckpt, tmp_path / "hf")
    upstream = hf_hubert_custom(str(out))
    assert isinstance(upstream, UpstreamExpert)
    wavs, lengths = audio()
    with torch.no_grad():
        ref = upstream.eval()([w[:n] for w, n in zip(wavs, lengths.tolist())])["hidden_states"]
    ours, frames = ours_states(model, wavs, lengths)
    assert len(ref) == arch.depth + 1
    assert_states_close(ours, ref, frames)


# ----------------------------------------------------------------------------- errors


def cli_result(capsys, argv: list[str]) -> subprocess.CompletedProcess:
    """``python -m deepwide ARGV`` run in this process (no interpreter and torch start-up):
    its exit status and stderr. An exception other than DeepwideError (a traceback) propagates."""
    from deepwide.cli import main

    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as err:  # argparse
        rc = err.code
    return subprocess.CompletedProcess(argv, rc, "", capsys.readouterr().err)


def test_import_errors(tmp_path, capsys):
    with pytest.raises(DeepwideError, match="unknown checkpoint format 'onnx'"):
        import_checkpoint("onnx", tmp_path, tmp_path / "t.pt")
    with pytest.raises(DeepwideError, match="not found: .*nothing.pt"):
        import_checkpoint("fairseq", tmp_path / "nothing.pt", tmp_path / "t.pt")
    with pytest.raises(DeepwideError, match="config.json"):
        import_checkpoint("hf", tmp_path, tmp_path / "t.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(DeepwideError, match="cannot read .*garbage.pt"):
        import_checkpoint("s3prl-hubert", garbage, tmp_path / "t.pt")
    torch.save({"model_cfg": {}, "model_weight": {}}, garbage)
    with pytest.raises(DeepwideError, match="task_cfg"):
        import_checkpoint("s3prl-hubert", garbage, tmp_path / "t.pt")

    model, cfg, task = s3prl_hubert("base-layout")
    # config says 3 layers, weights have 2
    blob = fairseq_blob(model, dataclasses.replace(cfg, encoder_layers=3), task, "dict")
    torch.save(blob, tmp_path / "deeper.pt")
    with pytest.raises(DeepwideError, match=r"deeper\.pt.*missing.*layers\.2\."):
        import_checkpoint("fairseq", tmp_path / "deeper.pt", tmp_path / "t.pt")
    # config says FFN 128, weights have 96
    torch.save(fairseq_blob(model, dataclasses.replace(cfg, encoder_ffn_embed_dim=128), task, "dict"), tmp_path / "ffn.pt")
    with pytest.raises(DeepwideError, match=r"ffn\.pt: weight encoder\.transformer\.layers\.0\.feed_forward\.intermediate_dense\.weight has shape"):
        import_checkpoint("fairseq", tmp_path / "ffn.pt", tmp_path / "t.pt")
    # a weight no HuBERT encoder has
    blob = fairseq_blob(model, cfg, task, "dict")
    blob["model"]["encoder.adapter.weight"] = torch.zeros(3)
    torch.save(blob, tmp_path / "odd.pt")
    with pytest.raises(DeepwideError, match=r"odd\.pt: unexpected weight 'encoder\.adapter\.weight'"):
        import_checkpoint("fairseq", tmp_path / "odd.pt", tmp_path / "t.pt")
    # conv_feature_layers is parsed, never evaluated
    blob = fairseq_blob(model, dataclasses.replace(cfg, conv_feature_layers="__import__('os').getcwd()"), task, "dict")
    torch.save(blob, tmp_path / "evil.pt")
    with pytest.raises(DeepwideError, match="conv_feature_layers"):
        import_checkpoint("fairseq", tmp_path / "evil.pt", tmp_path / "t.pt")
    assert not (tmp_path / "t.pt").exists()  # nothing written on failure

    r = cli_result(capsys, ["export", "hf", str(tmp_path / "none.pt"), str(tmp_path / "hf")])
    assert r.returncode == 2 and "none.pt" in r.stderr
    assert not (tmp_path / "hf").exists()


def test_import_hf_rejects_unsupported_config(tmp_path):
    src, _ = hf_source(tmp_path, "hubert")
    cfg = json.loads((src / "config.json").read_text())
    cfg["hidden_act"] = "relu"
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DeepwideError, match=r"config\.json: hidden_act='relu'"):
        import_checkpoint("hf", src, tmp_path / "t.pt")


# ----------------------------------------------------------------------------- export into an existing folder


def test_export_hf_never_deletes_what_it_did_not_write(tmp_path, capsys):
    """An existing non-empty folder is refused (exit 1, named, untouched); --force replaces only
    the export's own files; the result has normal permissions; a file in the way is named.
    (The CLI in-process, as `python -m deepwide` runs it: any exception but a DeepwideError
    would fail the test; test_export_hf_cli_loads_in_transformers runs the real process.)"""
    ckpt, model, arch = student(tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "config.json").write_text("{}")

    def export(*extra):
        return cli_result(capsys, ["export", "hf", str(ckpt), *map(str, extra)])

    r = export(out)
    assert r.returncode != 0
    assert "exists and is not empty" in r.stderr and str(out) in r.stderr and "--force" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "notes.txt"]
    assert (out / "config.json").read_text() == "{}"

    r = export(out, "--force")
    assert r.returncode == 0, r.stderr
    assert (out / "notes.txt").read_text() == "keep me"
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "notes.txt"} <= {p.name for p in out.iterdir()}
    assert (out / "config.json").read_text() != "{}"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mine.")]  # no temp folder left

    fresh = tmp_path / "fresh"
    assert export(fresh).returncode == 0
    umask = os.umask(0o022)
    os.umask(umask)
    assert fresh.stat().st_mode & 0o777 == 0o777 & ~umask
    assert (fresh / "config.json").stat().st_mode & 0o777 == 0o666 & ~umask

    afile = tmp_path / "afile"
    afile.write_text("x")
    r = export(afile)
    assert r.returncode != 0 and "is not a folder" in r.stderr
    assert afile.read_text() == "x"


# ----------------------------------------------------------------------------- verified checkpoints


def test_checkpoint_with_flipped_tensor_bytes_fails_and_is_moved_aside(tmp_path):
    """64 flipped bytes inside a tensor of student.pt: torch.load does not notice; the
    recorded digest does, the error names the file, and the file is moved aside (kept) so
    that snakemake rebuilds it."""
    ckpt, model, arch = student(tmp_path)
    load_checkpoint(ckpt)  # intact: loads
    big = max(model.state_dict().values(), key=lambda t: t.numel())
    raw = bytearray(ckpt.read_bytes())
    at = raw.find(big.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()[:256])
    assert at > 0
    raw[at + 512 : at + 576] = bytes(b ^ 0xFF for b in raw[at + 512 : at + 576])
    ckpt.write_bytes(bytes(raw))
    torch.load(ckpt, weights_only=False)  # still a readable file: only a digest can tell
    with pytest.raises(DeepwideError, match=r"corrupt checkpoint .*student\.pt.*sha256.*rerun `snakemake`"):
        load_checkpoint(ckpt)
    assert not ckpt.exists() and (tmp_path / "student.pt.corrupt").read_bytes() == bytes(raw)


def test_truncated_checkpoint_names_the_file_and_the_rerun(tmp_path):
    ckpt, _, _ = student(tmp_path)
    ckpt.write_bytes(ckpt.read_bytes()[:5000])
    with pytest.raises(DeepwideError, match=r"cannot read checkpoint .*student\.pt.*rerun `snakemake`"):
        load_checkpoint(ckpt)
