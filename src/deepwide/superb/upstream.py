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
import math
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from deepwide.audio import SAMPLE_RATE
from deepwide.errors import DeepwideError


def receptive_field(kernels_strides) -> int:
    """Input samples one output frame sees through conv layers ``[(kernel, stride), ...]``."""
    span = 1
    for k, s in reversed(list(kernels_strides)):
        span = (span - 1) * s + k
    return span


def frozen(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with no parameter requiring grad."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


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


class FeatureStore:
    """Frozen-upstream states per utterance: memory first, then bf16 shards on local disk.

    ``put`` keeps an entry in memory (float32, exact) while ``mem_bytes`` allow, else
    appends it to a memory-mapped shard file under ``disk_dir`` (``dtype``, bf16 by
    default: half the bytes, rounding error ~0.4 %) while ``disk_bytes`` allow, else keeps
    nothing (the states are recomputed next time: the same values). Entries are never
    evicted: a frozen upstream's states do not change, and first come is as good as any.
    """

    SHARD_BYTES = 256 * 2**20

    def __init__(self, mem_bytes: int = 0, disk_bytes: int = 0, disk_dir: str | Path | None = None, dtype: str = "bf16"):
        self.mem_bytes, self.disk_bytes = int(mem_bytes), int(disk_bytes)
        self.disk_dir = Path(disk_dir) if disk_dir else None
        if self.disk_bytes and self.disk_dir is None:
            raise DeepwideError("superb feature cache: a disk budget needs a cache folder")
        self.dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
        self._mem: dict[bytes, Tensor] = {}
        self._disk: dict[bytes, tuple[Path, int, tuple]] = {}
        self.mem_used = self.disk_used = 0
        self._shard: Path | None = None
        self._shard_size = 0
        self.hits = self.misses = 0

    def __len__(self):
        return len(self._mem) + len(self._disk)

    def get(self, key: bytes) -> Tensor | None:
        hit = self._mem.get(key)
        if hit is None and key in self._disk:
            import numpy as np

            path, offset, shape = self._disk[key]
            raw = np.memmap(path, dtype=np.uint16 if self.dtype == torch.bfloat16 else np.float32, mode="r",
                            offset=offset, shape=shape)
            t = torch.from_numpy(np.array(raw))
            hit = (t.view(torch.bfloat16) if self.dtype == torch.bfloat16 else t).float()
        if hit is None:
            self.misses += 1
        else:
            self.hits += 1
        return hit

    def put(self, key: bytes, states: Tensor) -> None:
        states = states.detach()
        size = states.numel() * 4
        if self.mem_used + size <= self.mem_bytes:
            self._mem[key] = states.float().cpu()
            self.mem_used += size
            return
        data = states.to(self.dtype).cpu().contiguous()
        nbytes = data.numel() * data.element_size()
        if self.disk_used + nbytes > self.disk_bytes:
            return
        if self._shard is None or self._shard_size + nbytes > self.SHARD_BYTES:
            self.disk_dir.mkdir(parents=True, exist_ok=True)
            self._shard = self.disk_dir / f"shard-{os.getpid()}-{id(self):x}-{len(list(self.disk_dir.glob('shard-*')))}.bin"
            self._shard_size = 0
        raw = data.view(torch.int16).numpy() if self.dtype == torch.bfloat16 else data.numpy()
        with open(self._shard, "ab") as f:
            f.write(raw.tobytes())
        self._disk[key] = (self._shard, self._shard_size, tuple(data.shape))
        self._shard_size += nbytes
        self.disk_used += nbytes


_STORES: dict[str, FeatureStore] = {}


def feature_store(identity: str, mem_mb: float, disk_mb: float = 0, disk_dir: str | Path | None = None,
                  dtype: str = "bf16") -> FeatureStore:
    """The process's store for one upstream (``identity``): the heads of a sweep and the
    test stages of its heads (separate s3prl runs, separate upstream instances) share it."""
    key = f"{identity}|{mem_mb}|{disk_mb}|{disk_dir}|{dtype}"
    if key not in _STORES:
        sub = Path(disk_dir) / hashlib.sha256(identity.encode()).hexdigest()[:16] if disk_dir else None
        _STORES[key] = FeatureStore(int(float(mem_mb) * 2**20), int(float(disk_mb) * 2**20), sub, dtype)
    return _STORES[key]


class _Frozen(nn.Module):
    """Shared plumbing: properties s3prl reads, input shapes, autocast, length bookkeeping.

    With a feature cache (``cache_mb > 0`` and/or ``cache_disk_mb > 0``) each utterance's
    states are computed on its own (no padding, so they do not depend on what it was
    batched with) and kept in a :class:`FeatureStore` keyed by a hash of its samples: a
    frozen upstream gives the same states every epoch, for every lr and head seed, so
    later passes skip the upstream. Whether an utterance is stored (memory, disk, or not
    at all when the budgets are spent) changes no result: a miss recomputes the same
    per-utterance states (the disk tier rounds them to bf16 unless ``cache_dtype: fp32``).
    Utterances of exactly ``cache_skip_samples`` samples are never stored: they may be
    random crops (SID/ASV train crops to 8 s) that will not be seen again.
    No cache (both 0) runs whole padded batches (the s3prl default).
    """

    def __init__(self, num_layers: int, hidden_size: int, downsample_rate: int, min_samples: int, cache_mb: float = 0,
                 cache_disk_mb: float = 0, cache_dir: str | None = None, cache_dtype: str = "bf16",
                 cache_skip_samples: int = 0, identity: str = ""):
        super().__init__()
        self._num_layers = int(num_layers)
        self._hidden_size = int(hidden_size)
        self._downsample_rate = int(downsample_rate)
        self.min_samples = int(min_samples)
        self.cache_bytes = int(float(cache_mb) * 2**20) + int(float(cache_disk_mb) * 2**20)
        self.skip_samples = int(cache_skip_samples or 0)
        self.store = feature_store(identity or f"instance-{id(self)}", cache_mb, cache_disk_mb, cache_dir, cache_dtype) if self.cache_bytes else None

    @property
    def cache_hits(self) -> int:
        return self.store.hits if self.store else 0

    @property
    def cache_misses(self) -> int:
        return self.store.misses if self.store else 0

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

    def _per_utterance(self, wavs: Tensor, wavs_len: Tensor, lens: Tensor) -> list[Tensor]:
        """(L+1, frames_i, D) states of each unpadded utterance, from the store where there.

        Misses of equal length run as one batch (no padding, so the same states as one by
        one: Speech Commands clips are all 1 s)."""
        out: list[Tensor | None] = [None] * wavs.size(0)
        keys, todo = [], {}
        for i, (w, n) in enumerate(zip(wavs, wavs_len.tolist())):
            wav = w[:n]
            key = hashlib.blake2b(wav.detach().cpu().numpy().tobytes(), digest_size=16).digest()
            keys.append(key)
            hit = self.store.get(key)
            if hit is not None:
                out[i] = hit.to(wavs.device)
            else:
                todo.setdefault(n, []).append(i)
        for n, idx in todo.items():
            batch = wavs[idx, :n]
            frames = int(lens[idx[0]])
            states = torch.stack([_fit(h, frames) for h in self._run(batch, wavs_len[idx])], dim=1)  # (b, L+1, T, D)
            for j, i in enumerate(idx):
                out[i] = states[j]
                if n != self.skip_samples:
                    self.store.put(keys[i], states[j])
        return out

    def forward(self, wavs: Tensor, wavs_len: Tensor):
        """``wavs`` (B, T) or (B, T, 1) at 16 kHz, ``wavs_len`` (B,) valid samples."""
        if wavs.dim() == 3:
            wavs = wavs.squeeze(-1)
        wavs_len = wavs_len.to(wavs.device).long()
        lens = _frames(wavs_len, self._downsample_rate)
        frames = int(lens.max())
        if self.cache_bytes > 0:
            per_utt = self._per_utterance(wavs, wavs_len, lens)
            stacked = nn.utils.rnn.pad_sequence([s.transpose(0, 1) for s in per_utt], batch_first=True)
            states = list(stacked.permute(2, 0, 1, 3).unbind(0))  # L+1 x (B, T, D)
        else:
            states = [_fit(h, frames) for h in self._run(wavs, wavs_len)]
        return states, [lens] * len(states)


class EncoderUpstream(_Frozen):
    """A deepwide encoder (torchaudio Wav2Vec2Model): all L+1 hidden states."""

    def __init__(self, model: nn.Module, arch, normalize: bool = False, **cache):
        span = receptive_field([(k, s) for _, k, s in arch.conv])
        super().__init__(arch.depth + 1, arch.width, arch.downsample_rate, span, **cache)
        self.normalize = bool(normalize)
        self.model = frozen(model)

    def _states(self, wavs, wavs_len):
        from deepwide.models.arch import hidden_states, normalize_waveforms

        if self.normalize:  # teachers trained on normalised input (checkpoint meta normalize: true)
            wavs = normalize_waveforms(wavs, wavs_len)
        states, _ = hidden_states(self.model, wavs, wavs_len)
        return states


class HFUpstream(_Frozen):
    """A transformers HubertModel / Wav2Vec2Model directory: all L+1 hidden states."""

    def __init__(self, path: str | Path, **cache):
        from transformers import AutoConfig, AutoModel

        path = Path(path)
        if not (path / "config.json").is_file():
            raise DeepwideError(f"HF upstream {path}: no config.json (expected a transformers model directory)")
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
        span = receptive_field(zip(config.conv_kernel, config.conv_stride))
        rate = math.prod(config.conv_stride)
        super().__init__(config.num_hidden_layers + 1, config.hidden_size, rate, span, **cache)
        self.use_mask = getattr(config, "feat_extract_norm", "group") == "layer"
        prep = path / "preprocessor_config.json"
        # HF feature extractors normalise the waveform when do_normalize (HuBERT Large, ...)
        self.normalize = bool(prep.is_file() and json.loads(prep.read_text()).get("do_normalize", False))
        self.model = frozen(model)

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

    def __init__(self, num_mel_bins: int = 80, delta_order: int = 2, delta_win: int = 5, cmvn: bool = True, **cache):
        super().__init__(1, num_mel_bins * (delta_order + 1), SAMPLE_RATE // 100, 400, **cache)
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


CACHE_KEYS = ("cache_mb", "cache_disk_mb", "cache_dir", "cache_dtype", "cache_skip_samples")


def uses_cache(spec: dict) -> bool:
    """Whether ``spec`` runs the per-utterance (cached) upstream rather than padded batches."""
    return float(spec.get("cache_mb") or 0) > 0 or float(spec.get("cache_disk_mb") or 0) > 0


def _identity(kind: str, path, options: dict) -> str:
    ident = {"kind": kind, "path": str(path), **options}
    if path and Path(path).exists():
        p = Path(path)
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        ident["files"] = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]
    return json.dumps(ident, sort_keys=True, default=str)


def build_upstream(kind: str, path: str | None = None, **options) -> _Frozen:
    """The frozen upstream of ``kind`` (``deepwide``, ``hf`` or ``fbank``); ``cache_*``
    options (:data:`CACHE_KEYS`) set its feature cache (see :class:`_Frozen`)."""
    cache = {k: options.pop(k) for k in CACHE_KEYS if k in options}
    cache["identity"] = _identity(kind, path, options)
    if kind == "fbank":
        return FbankUpstream(**options, **cache)
    if kind == "deepwide":
        from deepwide.models.checkpoint import load_checkpoint

        model, arch, meta = load_checkpoint(path)
        return EncoderUpstream(model, arch, normalize=bool(meta.get("normalize", False)), **cache)
    if kind == "hf":
        return HFUpstream(path, **cache)
    raise DeepwideError(f"unknown upstream kind {kind!r} (expected deepwide, hf or fbank)")


def upstream_spec(source: str) -> dict:
    """Upstream spec from a config value: ``fbank``, a checkpoint file or an HF directory."""
    if source == "fbank":
        return {"kind": "fbank"}
    p = Path(source)
    if p.is_dir() or source.endswith("/"):
        return {"kind": "hf", "path": str(p.resolve())}
    return {"kind": "deepwide", "path": str(p.resolve())}
