"""Frozen upstreams served to s3prl: deepwide checkpoints, HF directories, FBANK.

s3prl's problem classes call ``build_upstream(dict)`` and need a module with
``num_layers``, ``hidden_sizes``, ``downsample_rates`` (one entry per hidden state) and
``forward(wavs, wavs_len) -> (list of (B, T, D) states, list of (B,) lengths)``.
:func:`build_upstream` returns such a module for

- ``kind="deepwide"``: a checkpoint written by :func:`deepwide.models.save_checkpoint`
  (teacher or student): all L+1 hidden states of :func:`deepwide.models.hidden_states`;
- ``kind="hf"``: a transformers HubertModel / Wav2Vec2Model directory: its L+1
  ``hidden_states``;
- ``kind="fbank"``: s3prl's FBANK baseline settings (Kaldi log-mel fbank, 80 bins, 25 ms
  window, 10 ms shift, plus first and second deltas (window 5) and per-utterance mean and
  variance normalisation: 240 dims, one "layer", 160 samples per frame).

The encoder stays in eval mode and frozen; on CUDA it runs under bf16 autocast and its
states are returned in float32.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor, nn

from deepwide.errors import DeepwideError

SAMPLE_RATE = 16000


def _frames(wavs_len: Tensor, stride: int) -> Tensor:
    """Frame count s3prl assumes for ``wavs_len`` samples at ``stride`` (ceil division)."""
    return torch.div(wavs_len - 1, stride, rounding_mode="floor") + 1


def _fit(h: Tensor, frames: int) -> Tensor:
    """Cut or repeat-pad ``h`` (B, T, D) along time to ``frames``."""
    if h.size(1) > frames:
        return h[:, :frames]
    if h.size(1) < frames:
        pad = h[:, -1:].expand(-1, frames - h.size(1), -1)
        return torch.cat([h, pad], dim=1)
    return h


class _Frozen(nn.Module):
    """Shared plumbing: properties s3prl reads, input shapes, autocast, length bookkeeping.

    With ``cache_mb > 0`` each utterance's states are computed on its own (no padding, so
    they do not depend on what it was batched with) and kept in memory, keyed by a hash
    of its samples: a frozen upstream gives the same states every epoch, so later epochs
    of the small embedded tasks skip the upstream entirely. ``cache_mb = 0`` runs whole
    padded batches (the s3prl default; use it for the full-scale datasets).
    """

    def __init__(self, num_layers: int, hidden_size: int, downsample_rate: int, min_samples: int, cache_mb: float = 0):
        super().__init__()
        self._num_layers = int(num_layers)
        self._hidden_size = int(hidden_size)
        self._downsample_rate = int(downsample_rate)
        self.min_samples = int(min_samples)
        self.cache_bytes = int(float(cache_mb) * 2**20)
        self._cache: OrderedDict[bytes, Tensor] = OrderedDict()
        self._cache_used = 0
        self.cache_hits = 0
        self.cache_misses = 0

    @property
    def num_layers(self) -> int:
        return self._num_layers

    @property
    def hidden_sizes(self) -> list[int]:
        return [self._hidden_size] * self._num_layers

    @property
    def downsample_rates(self) -> list[int]:
        return [self._downsample_rate] * self._num_layers

    def train(self, mode: bool = True):  # always frozen: dropout stays off
        return super().train(False)

    def _states(self, wavs: Tensor, wavs_len: Tensor) -> list[Tensor]:
        raise NotImplementedError

    def _run(self, wavs: Tensor, wavs_len: Tensor) -> list[Tensor]:
        if wavs.size(1) < self.min_samples:  # too short for the conv front end
            wavs = nn.functional.pad(wavs, (0, self.min_samples - wavs.size(1)))
        wavs_len = wavs_len.clamp(min=self.min_samples)
        with torch.no_grad():
            if wavs.is_cuda:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    return [h.float() for h in self._states(wavs, wavs_len)]
            return [h.float() for h in self._states(wavs, wavs_len)]

    def _cached(self, wav: Tensor, frames: int) -> Tensor:
        """(L+1, frames, D) states of one unpadded utterance, from the cache if there."""
        key = hashlib.blake2b(wav.detach().cpu().numpy().tobytes(), digest_size=16).digest()
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            self.cache_hits += 1
            return hit.to(wav.device)
        self.cache_misses += 1
        n = torch.tensor([wav.numel()], device=wav.device)
        states = torch.stack([_fit(h, frames)[0] for h in self._run(wav[None], n)])
        size = states.numel() * states.element_size()
        if size <= self.cache_bytes:
            self._cache[key] = states.cpu()
            self._cache_used += size
            while self._cache_used > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cache_used -= old.numel() * old.element_size()
        return states

    def forward(self, wavs: Tensor, wavs_len: Tensor):
        """``wavs`` (B, T) or (B, T, 1) at 16 kHz, ``wavs_len`` (B,) valid samples."""
        if wavs.dim() == 3:
            wavs = wavs.squeeze(-1)
        wavs_len = wavs_len.to(wavs.device).long()
        lens = _frames(wavs_len, self._downsample_rate)
        frames = int(lens.max())
        if self.cache_bytes > 0:
            per_utt = [self._cached(w[: int(n)], int(f)) for w, n, f in zip(wavs, wavs_len, lens)]
            stacked = nn.utils.rnn.pad_sequence([s.transpose(0, 1) for s in per_utt], batch_first=True)
            states = list(stacked.permute(2, 0, 1, 3).unbind(0))  # L+1 x (B, T, D)
        else:
            states = [_fit(h, frames) for h in self._run(wavs, wavs_len)]
        return states, [lens] * len(states)


class EncoderUpstream(_Frozen):
    """A deepwide encoder (torchaudio Wav2Vec2Model): all L+1 hidden states."""

    def __init__(self, model: nn.Module, arch, cache_mb: float = 0, normalize: bool = False):
        kernel_span = 1
        for _, k, s in reversed(arch.conv):
            kernel_span = (kernel_span - 1) * s + k
        super().__init__(arch.depth + 1, arch.width, arch.downsample_rate, kernel_span, cache_mb)
        self.normalize = bool(normalize)
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def _states(self, wavs, wavs_len):
        from deepwide.models.arch import hidden_states, normalize_waveforms

        if self.normalize:  # teachers trained on normalised input (checkpoint meta normalize: true)
            wavs = normalize_waveforms(wavs, wavs_len)
        states, _ = hidden_states(self.model, wavs, wavs_len)
        return states


class HFUpstream(_Frozen):
    """A transformers HubertModel / Wav2Vec2Model directory: all L+1 hidden states."""

    def __init__(self, path: str | Path, cache_mb: float = 0):
        from transformers import AutoConfig, AutoModel

        path = Path(path)
        if not (path / "config.json").is_file():
            raise DeepwideError(f"HF upstream {path}: no config.json (expected a transformers model directory)")
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
        rate = 1
        span = 1
        for k, s in reversed(list(zip(config.conv_kernel, config.conv_stride))):
            span = (span - 1) * s + k
        for s in config.conv_stride:
            rate *= s
        super().__init__(config.num_hidden_layers + 1, config.hidden_size, rate, span, cache_mb)
        self.use_mask = getattr(config, "feat_extract_norm", "group") == "layer"
        prep = path / "preprocessor_config.json"
        # HF feature extractors normalise the waveform when do_normalize (HuBERT Large, ...)
        self.normalize = bool(prep.is_file() and json.loads(prep.read_text()).get("do_normalize", False))
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def _states(self, wavs, wavs_len):
        from deepwide.models.arch import normalize_waveforms

        if self.normalize:
            wavs = normalize_waveforms(wavs, wavs_len)
        mask = None
        if self.use_mask:
            mask = (torch.arange(wavs.size(1), device=wavs.device)[None] < wavs_len[:, None]).long()
        out = self.model(wavs, attention_mask=mask, output_hidden_states=True)
        return list(out.hidden_states)


class FbankUpstream(_Frozen):
    """s3prl's FBANK baseline: 80 log-mel + deltas + per-utterance CMVN = 240 dims."""

    def __init__(self, num_mel_bins: int = 80, delta_order: int = 2, delta_win: int = 5, cmvn: bool = True, cache_mb: float = 0):
        super().__init__(1, num_mel_bins * (delta_order + 1), SAMPLE_RATE // 100, 400, cache_mb)
        self.num_mel_bins = num_mel_bins
        self.delta_order = delta_order
        self.delta_win = delta_win
        self.cmvn = cmvn

    def features(self, wav: Tensor) -> Tensor:
        """(samples,) -> (frames, 240) for one utterance."""
        import torchaudio.compliance.kaldi as kaldi
        import torchaudio.functional as F

        x = kaldi.fbank(
            wav.float().view(1, -1),
            sample_frequency=SAMPLE_RATE,
            num_mel_bins=self.num_mel_bins,
            frame_length=25.0,
            frame_shift=10.0,
            use_log_fbank=True,
        )  # (frames, bins)
        feats = [x]
        for _ in range(self.delta_order):
            feats.append(F.compute_deltas(feats[-1].t().unsqueeze(0), win_length=self.delta_win).squeeze(0).t())
        x = torch.cat(feats, dim=-1)
        if self.cmvn:
            x = (x - x.mean(dim=0, keepdim=True)) / (1e-10 + x.std(dim=0, keepdim=True))
        return x

    def _states(self, wavs, wavs_len):
        feats = [self.features(w[: int(n)]) for w, n in zip(wavs.float(), wavs_len)]
        return [nn.utils.rnn.pad_sequence(feats, batch_first=True)]


def build_upstream(kind: str, path: str | None = None, cache_mb: float = 0, **options) -> _Frozen:
    """The frozen upstream of ``kind`` (``deepwide``, ``hf`` or ``fbank``)."""
    if kind == "fbank":
        return FbankUpstream(cache_mb=cache_mb, **options)
    if kind == "deepwide":
        from deepwide.models.checkpoint import load_checkpoint

        model, arch, meta = load_checkpoint(path)
        return EncoderUpstream(model, arch, cache_mb=cache_mb, normalize=bool(meta.get("normalize", False)))
    if kind == "hf":
        return HFUpstream(path, cache_mb=cache_mb)
    raise DeepwideError(f"unknown upstream kind {kind!r} (expected deepwide, hf or fbank)")


def upstream_spec(source: str) -> dict:
    """Upstream spec from a config value: ``fbank``, a checkpoint file or an HF directory."""
    if source == "fbank":
        return {"kind": "fbank"}
    p = Path(source)
    if p.is_dir() or source.endswith("/"):
        return {"kind": "hf", "path": str(p.resolve())}
    return {"kind": "deepwide", "path": str(p.resolve())}
