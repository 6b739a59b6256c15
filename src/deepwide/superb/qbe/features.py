"""QbE audio and features: 16 kHz mono at -3 dB, extractors over every hidden layer of an
upstream, and the per-layer feature store (memory or memory-mapped float16 files)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from deepwide.audio import read_audio
from deepwide.errors import DeepwideError

GAIN_DB = -3.0  # s3prl's sox effect on every QbE utterance

# an extractor maps one 16 kHz waveform (samples,) to per-layer features [(frames, dim)]
Extractor = Callable[[Tensor], Sequence[Tensor]]


def load_audio(path: str | Path, gain_db: float = GAIN_DB) -> Tensor:
    """Mono float32 waveform at 16 kHz (resampled if needed) with ``gain_db`` applied."""
    wav = torch.from_numpy(np.ascontiguousarray(read_audio(path, resample=True)))
    if gain_db:
        wav = wav * (10.0 ** (gain_db / 20.0))
    return wav.contiguous()


class CheckpointExtractor:
    """All L+1 hidden states of a deepwide checkpoint (teacher or student), frozen.

    Runs on ``device`` (bf16 autocast on CUDA); waveforms are normalised first when the
    checkpoint's meta says ``normalize`` (HuBERT Large style teachers).
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu"):
        from deepwide.models.checkpoint import load_checkpoint
        from deepwide.superb.upstream import frozen, receptive_field

        model, arch, meta = load_checkpoint(path)
        self.device = torch.device(device)
        self.model = frozen(model.to(self.device))
        self.arch = arch
        self.normalize = bool(meta.get("normalize", False))
        self.min_samples = receptive_field([(k, s) for _, k, s in arch.conv])
        self.num_layers = arch.depth + 1

    @torch.no_grad()
    def __call__(self, wav: Tensor) -> list[Tensor]:
        from deepwide.models.arch import hidden_states, normalize_waveforms

        wav = wav.to(self.device, torch.float32)
        if wav.numel() < self.min_samples:
            wav = torch.nn.functional.pad(wav, (0, self.min_samples - wav.numel()))
        x = wav[None]
        if self.normalize:
            x = normalize_waveforms(x)
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                states, _ = hidden_states(self.model, x)
        else:
            states, _ = hidden_states(self.model, x)
        return [h[0].float() for h in states]


class ModuleExtractor:
    """An s3prl-style upstream module: ``forward(wavs (B, T), wavs_len (B,)) -> (states, lens)``.

    ``states`` is a list of (B, frames, dim) tensors (one per layer); ``lens`` the valid
    frames (one tensor for all layers, or a list with one per layer).
    """

    def __init__(self, module: torch.nn.Module, device: str | torch.device | None = None):
        self.module = module.eval()
        self.device = torch.device(device) if device is not None else next(
            (p.device for p in module.parameters()), torch.device("cpu"))

    @torch.no_grad()
    def __call__(self, wav: Tensor) -> list[Tensor]:
        wav = wav.to(self.device, torch.float32)
        out = self.module(wav[None], torch.tensor([wav.numel()], device=self.device))
        states, lens = out if isinstance(out, tuple) else (out, None)
        feats = []
        for k, h in enumerate(states):
            n = h.shape[1]
            if lens is not None:
                lk = lens[k] if isinstance(lens, (list, tuple)) else lens
                n = int(lk[0])
            feats.append(h[0, :n].float())
        return feats


def make_extractor(upstream: str | Path | Extractor | torch.nn.Module, device: str = "cpu") -> Extractor:
    """An extractor for a checkpoint path, an s3prl-style module, or a callable."""
    if isinstance(upstream, torch.nn.Module):
        return ModuleExtractor(upstream, device)
    if callable(upstream):
        return upstream
    return CheckpointExtractor(upstream, device)


class FeatureStore:
    """Per-layer features of many utterances, kept as one float16 array per layer.

    ``add`` takes the per-layer features of one utterance; ``get(layer, i)`` returns the
    (frames, dim) float32 tensor of utterance ``i``. With ``directory`` each layer is
    streamed to a raw float16 file there and memory-mapped (full-scale QUESST: about
    1 GB per 768-d layer), so the features of all layers need not fit in memory.
    """

    def __init__(self, directory: str | Path | None = None):
        self.directory = Path(directory) if directory is not None else None
        self._chunks: list[list[np.ndarray]] = []
        self._files: list = []
        self._dims: list[int] = []
        self.lengths: list[int] = []
        self.arrays: list[np.ndarray] = []
        self.offsets = np.zeros(1, dtype=np.int64)

    def add(self, feats: Sequence[Tensor]) -> None:
        if not self._dims:
            self._dims = [int(f.shape[1]) for f in feats]
            self._chunks = [[] for _ in feats]
            if self.directory is not None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._files = [open(self.directory / f"layer{k}.f16", "wb") for k in range(len(feats))]
        if len(feats) != len(self._dims):
            raise DeepwideError(f"upstream returned {len(feats)} layers, earlier {len(self._dims)}")
        n = int(feats[0].shape[0])
        for k, f in enumerate(feats):
            if tuple(f.shape) != (n, self._dims[k]):
                raise DeepwideError(f"layer {k} features have shape {tuple(f.shape)}, expected ({n}, {self._dims[k]})")
            a = f.detach().to("cpu", torch.float16).numpy()
            if self._files:
                self._files[k].write(np.ascontiguousarray(a).tobytes())
            else:
                self._chunks[k].append(a)
        self.lengths.append(n)

    def finish(self) -> FeatureStore:
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        total = int(self.offsets[-1])
        for k, dim in enumerate(self._dims):
            if self._files:
                self._files[k].close()
                arr = np.memmap(self.directory / f"layer{k}.f16", dtype=np.float16, mode="r", shape=(total, dim))
            else:
                arr = np.concatenate(self._chunks[k], axis=0)
            self.arrays.append(arr)
        self._chunks, self._files = [], []
        return self

    @property
    def num_layers(self) -> int:
        return len(self.arrays)

    def get(self, layer: int, i: int) -> Tensor:
        a = self.arrays[layer][self.offsets[i]:self.offsets[i + 1]]
        return torch.from_numpy(np.asarray(a, dtype=np.float32))

    def layer_stats(self, layer: int, index: Sequence[int], chunk: int = 1 << 16) -> tuple[Tensor, Tensor]:
        """Mean and std (clamped at 1e-9) over all frames of the utterances ``index``."""
        arr = self.arrays[layer]
        total = None
        sq = None
        n = 0
        for i in index:
            a, b = int(self.offsets[i]), int(self.offsets[i + 1])
            for s in range(a, b, chunk):
                x = np.asarray(arr[s:min(b, s + chunk)], dtype=np.float64)
                total = x.sum(0) if total is None else total + x.sum(0)
                sq = (x * x).sum(0) if sq is None else sq + (x * x).sum(0)
                n += x.shape[0]
        mean = total / max(n, 1)
        var = np.maximum(sq / max(n, 1) - mean * mean, 0.0) * n / max(n - 1, 1)
        return torch.from_numpy(mean).float(), torch.from_numpy(np.sqrt(var)).float().clamp(min=1e-9)


def extract_features(extractor: Extractor, paths: Sequence[str | Path], directory: str | Path | None = None,
                     desc: str = "QbE features") -> FeatureStore:
    """Run ``extractor`` over every file (16 kHz, -3 dB) and keep all layers."""
    from tqdm import tqdm

    store = FeatureStore(directory)
    for p in tqdm(paths, desc=desc, mininterval=10, disable=len(paths) < 200):
        feats = extractor(load_audio(p))
        if len(feats) == 0 or feats[0].ndim != 2:
            raise DeepwideError(f"upstream features for {p} are not a list of (frames, dim) tensors")
        store.add(feats)
    return store.finish()




def resolve_upstream(spec: str, device: str) -> Extractor:
    """A deepwide checkpoint file, or (``fbank``, an HF directory) via the superb adapter."""
    from deepwide.superb.upstream import build_upstream, upstream_spec

    p = Path(spec)
    if p.is_file():
        return CheckpointExtractor(p, device)
    if spec != "fbank" and not p.exists():
        raise DeepwideError(f"QbE upstream not found: {spec}")
    module = build_upstream(**upstream_spec(spec)).to(device)
    return ModuleExtractor(module, device)
