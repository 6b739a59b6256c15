"""Frozen upstreams as s3prl sees them: deepwide checkpoints, HF directories, FBANK."""

import sys
from pathlib import Path

import pytest
import torch

from deepwide.models import load_checkpoint
from deepwide.models.arch import hidden_states
from deepwide.superb.upstream import FbankUpstream, build_upstream, upstream_spec

sys.path.insert(0, str(Path(__file__).parent))
from test_superb_e2e import tiny_checkpoint  # noqa: E402


def _wavs(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    wavs = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wavs[i, :n] = 0.1 * torch.randn(n, generator=g)
    return wavs, torch.tensor(lengths)


def test_deepwide_checkpoint_gives_all_states(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "t.pt", depth=3)
    up = build_upstream(**upstream_spec(str(ckpt)))
    assert up.num_layers == 4 and up.hidden_sizes == [32] * 4 and up.downsample_rates == [320] * 4
    wavs, lens = _wavs([16000, 12345])
    states, hs_lens = up(wavs.unsqueeze(-1), lens)  # s3prl may pass (B, T, 1)
    assert len(states) == len(hs_lens) == 4
    expect = (lens - 1) // 320 + 1
    for h, n in zip(states, hs_lens):
        assert h.shape == (2, int(expect.max()), 32) and h.dtype == torch.float32
        assert torch.equal(n, expect)
    # the same numbers as the model contract's hidden_states on the unpadded utterance
    model, _, _ = load_checkpoint(ckpt)
    with torch.no_grad():
        ref, _ = hidden_states(model, wavs[:1, :16000], lens[:1])
    for h, r in zip(states, ref):
        torch.testing.assert_close(h[0, : r.shape[1]], r[0], atol=1e-5, rtol=1e-4)
    assert not any(p.requires_grad for p in up.parameters())
    up.train()
    assert not up.training  # stays frozen (dropout off) whatever s3prl asks


def test_state_cache_reuses_and_matches(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "t.pt")
    plain = build_upstream(kind="deepwide", path=str(ckpt))
    cached = build_upstream(kind="deepwide", path=str(ckpt), cache_mb=16)
    wavs, lens = _wavs([8000, 8000, 8000], seed=1)
    a, _ = plain(wavs, lens)  # equal lengths: no padding, so batched == per utterance
    b, _ = cached(wavs, lens)
    c, _ = cached(wavs.flip(0), lens)
    assert cached.cache_misses == 3 and cached.cache_hits == 3
    for x, y, z in zip(a, b, c):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(y, z.flip(0))


def test_fbank_matches_s3prl_baseline():
    """Our FBANK is s3prl's fbank upstream: same 240-dim features, 10 ms frames."""
    from s3prl.upstream.baseline.extracter import get_extracter

    ref_extracter, dim, shift = get_extracter(
        {
            "kaldi": {"feat_type": "fbank", "fbank": {"num_mel_bins": 80, "frame_length": 25.0, "frame_shift": 10.0, "use_log_fbank": True}},
            "delta": {"order": 2, "win_length": 5},
            "cmvn": {"use_cmvn": True},
        }
    )
    up = FbankUpstream()
    assert (up.num_layers, up.hidden_sizes, up.downsample_rates) == (1, [dim], [round(shift * 16)])
    wavs, lens = _wavs([16000, 9000], seed=2)
    states, hs_lens = up(wavs, lens)
    assert len(states) == 1 and torch.equal(hs_lens[0], (lens - 1) // 160 + 1)
    for i, n in enumerate(lens.tolist()):
        ref = ref_extracter(wavs[i, :n])
        torch.testing.assert_close(states[0][i, : ref.shape[0]], ref, atol=1e-4, rtol=1e-4)


def test_hf_directory_upstream(tmp_path):
    from transformers import HubertConfig, HubertModel

    cfg = HubertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
    )
    torch.manual_seed(0)
    HubertModel(cfg).save_pretrained(tmp_path / "hf")
    up = build_upstream(**upstream_spec(str(tmp_path / "hf")))
    assert up.num_layers == 3 and up.hidden_sizes == [32] * 3 and up.downsample_rates == [320] * 3
    wavs, lens = _wavs([16000, 16000])
    states, hs_lens = up(wavs, lens)
    assert len(states) == 3 and states[0].shape == (2, 50, 32)


def test_bad_upstream_is_a_user_error(tmp_path):
    from deepwide.errors import DeepwideError

    with pytest.raises(DeepwideError, match="checkpoint not found"):
        build_upstream(**upstream_spec(str(tmp_path / "missing.pt")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeepwideError, match="config.json"):
        build_upstream(kind="hf", path=str(tmp_path / "empty"))


def test_normalising_teacher_gets_normalised_input(tmp_path):
    """A checkpoint whose meta says normalize (HuBERT Large style) sees layer-normed audio."""
    from deepwide.models import save_checkpoint
    from deepwide.models.arch import normalize_waveforms

    plain = tiny_checkpoint(tmp_path / "t.pt")
    model, arch, _ = load_checkpoint(plain)
    save_checkpoint(tmp_path / "n.pt", model, arch, {"normalize": True})
    up = build_upstream(kind="deepwide", path=str(tmp_path / "n.pt"))
    wavs, lens = _wavs([8000])
    states, _ = up(3.0 * wavs + 0.5, lens)  # scale and offset vanish after normalisation
    with torch.no_grad():
        ref, _ = hidden_states(model, normalize_waveforms(wavs, lens), lens)
    torch.testing.assert_close(states[-1][:, : ref[-1].shape[1]], ref[-1], atol=1e-4, rtol=1e-3)
