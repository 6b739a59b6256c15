"""Every patch deepwide makes to s3prl 0.4.18 and the libraries under it, in one place.

:func:`install` (idempotent; :mod:`deepwide.superb.problems` calls it before its first s3prl
import, and nothing else installs anything) puts back what s3prl needs:

- torchaudio >= 2.9 removed ``set_audio_backend``, ``info``, ``sox_effects`` and ``load``
  (which now needs torchcodec): working versions built on soundfile and
  ``torchaudio.functional``;
- pandas 3 removed ``Series.iteritems`` (s3prl's corpus parsers call it);
- ``s3prl.hub`` imports every upstream s3prl knows: a lazy stand-in (:class:`_LazyHub`);
- s3prl reads audio with ``librosa.load`` (seconds of numba JIT per process):
  :class:`LibrosaShim` returns the same samples through soundfile.

:func:`run_settings` repoints, for one run only, the paths and worker counts s3prl
hard-codes. Nothing in site-packages is changed and nothing is downloaded.

Effects done natively (the ones SUPERB's datasets use): ``channels``, ``rate``, ``gain``
(dB, or ``-n [dB]`` to normalise), ``norm [dB]``, ``pad``, ``trim``, ``reverse``, ``vol``.
Any other effect (``silence``, ``vad``, ...) runs through the ``sox`` program on a raw
float32 pipe, so it behaves exactly like libsox did.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import subprocess
import sys
import types
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

__all__ = [
    "AudioMetaData",
    "apply_effects_file",
    "apply_effects_tensor",
    "info",
    "install",
    "load",
    "save",
]


@dataclass
class AudioMetaData:
    """What the old ``torchaudio.info`` returned."""

    sample_rate: int
    num_frames: int
    num_channels: int
    bits_per_sample: int
    encoding: str


_SUBTYPE_BITS = {
    "PCM_S8": (8, "PCM_S"),
    "PCM_U8": (8, "PCM_U"),
    "PCM_16": (16, "PCM_S"),
    "PCM_24": (24, "PCM_S"),
    "PCM_32": (32, "PCM_S"),
    "FLOAT": (32, "PCM_F"),
    "DOUBLE": (64, "PCM_F"),
    "ULAW": (8, "ULAW"),
    "ALAW": (8, "ALAW"),
}


def _path(filepath) -> str:
    if isinstance(filepath, (str, os.PathLike)):
        return os.fspath(filepath)
    return filepath  # file-like object: soundfile reads those too


def info(filepath, format: str | None = None, buffer_size: int = 4096, backend=None) -> AudioMetaData:
    """Sample rate, frames, channels, bits and encoding of an audio file (soundfile)."""
    import soundfile as sf

    meta = sf.info(_path(filepath))
    bits, encoding = _SUBTYPE_BITS.get(meta.subtype, (0, meta.subtype))
    if meta.format == "FLAC":
        encoding = "FLAC"
    return AudioMetaData(int(meta.samplerate), int(meta.frames), int(meta.channels), bits, encoding)


def load(
    filepath,
    frame_offset: int = 0,
    num_frames: int = -1,
    normalize: bool = True,
    channels_first: bool = True,
    format: str | None = None,
    buffer_size: int = 4096,
    backend=None,
) -> tuple[torch.Tensor, int]:
    """Read audio like the old ``torchaudio.load``: ``(waveform, sample_rate)``.

    ``waveform`` is ``(channels, frames)`` (``(frames, channels)`` if not
    ``channels_first``), float32 in [-1, 1] when ``normalize``; otherwise the file's
    integer type for integer PCM (float files stay float32).
    """
    import soundfile as sf

    path = _path(filepath)
    dtype = "float32"
    if not normalize:
        subtype = sf.info(path).subtype
        dtype = {"PCM_16": "int16", "PCM_32": "int32", "PCM_24": "int32"}.get(subtype, "float32")
    stop = None if num_frames is None or num_frames < 0 else frame_offset + num_frames
    data, sr = sf.read(path, start=frame_offset, stop=stop, dtype=dtype, always_2d=True)
    wav = torch.from_numpy(np.ascontiguousarray(data))  # (frames, channels)
    if channels_first:
        wav = wav.t().contiguous()
    return wav, int(sr)


def save(filepath, src: torch.Tensor, sample_rate: int, channels_first: bool = True, format=None, encoding=None, bits_per_sample=None, **_) -> None:
    """Write audio with soundfile (16-bit PCM by default for wav/flac)."""
    import soundfile as sf

    data = src.detach().cpu()
    if data.dim() == 1:
        data = data.unsqueeze(0 if channels_first else 1)
    if channels_first:
        data = data.t()
    subtype = {8: "PCM_U8", 16: "PCM_16", 24: "PCM_24", 32: "FLOAT" if encoding in (None, "PCM_F") else "PCM_32"}.get(
        bits_per_sample or 16, "PCM_16"
    )
    sf.write(_path(filepath), data.numpy(), int(sample_rate), subtype=subtype, format=format)


# ----------------------------------------------------------------------------- effects


def _seconds_to_samples(spec: str, sr: int) -> int:
    """sox time spec: seconds (``1.5``), ``hh:mm:ss.frac``, or samples (``1000s``)."""
    spec = str(spec).strip()
    if spec.endswith("s"):
        return int(spec[:-1])
    secs = 0.0
    for part in spec.split(":"):
        secs = secs * 60 + float(part)
    return int(round(secs * sr))


def _db_to_amp(db: float) -> float:
    return 10.0 ** (db / 20.0)


def _peak_normalise(wav: torch.Tensor, db: float) -> torch.Tensor:
    peak = wav.abs().max()
    if peak <= 0:
        return wav
    return wav * (_db_to_amp(db) / peak)


def _effect_channels(wav, sr, args):
    n = int(args[0])
    c = wav.shape[0]
    if n == c:
        return wav, sr
    if n == 1:
        return wav.mean(dim=0, keepdim=True), sr
    if c == 1:
        return wav.expand(n, -1).clone(), sr
    raise _Fallback


def _effect_rate(wav, sr, args):
    import torchaudio.functional as F

    # options (-q/-l/-m/-h/-v, -s, ...) select sox's filter quality; the rate is the last arg
    opts = [a for a in args if str(a).startswith("-")]
    if any(o not in ("-q", "-l", "-m", "-h", "-v") for o in opts):
        raise _Fallback
    rest = [a for a in args if not str(a).startswith("-")]
    new_sr = int(float(str(rest[-1]).rstrip("kK")) * (1000 if str(rest[-1])[-1] in "kK" else 1))
    if new_sr == sr:
        return wav, sr
    return F.resample(wav, sr, new_sr), new_sr


def _effect_gain(wav, sr, args):
    args = [str(a) for a in args]
    normalise = False
    rest = []
    for a in args:
        if a == "-n":
            normalise = True
        elif a.startswith("-") and not _is_number(a):
            raise _Fallback  # -e -B -r -l -h: balance/limiter options
        else:
            rest.append(a)
    db = float(rest[0]) if rest else 0.0
    if normalise:
        return _peak_normalise(wav, db), sr
    return wav * _db_to_amp(db), sr


def _effect_norm(wav, sr, args):
    db = float(args[0]) if args else 0.0
    return _peak_normalise(wav, db), sr


def _effect_vol(wav, sr, args):
    value = str(args[0])
    if value.endswith("dB"):
        return wav * _db_to_amp(float(value[:-2])), sr
    if len(args) > 1 or value.endswith(("amplitude", "power")):
        raise _Fallback
    return wav * float(value), sr


def _effect_pad(wav, sr, args):
    if any("@" in str(a) for a in args):
        raise _Fallback
    before = _seconds_to_samples(args[0], sr) if args else 0
    after = _seconds_to_samples(args[1], sr) if len(args) > 1 else 0
    return torch.nn.functional.pad(wav, (before, after)), sr


def _effect_trim(wav, sr, args):
    if any(str(a).startswith("=") or str(a).startswith("-") for a in args):
        raise _Fallback
    start = _seconds_to_samples(args[0], sr)
    end = start + _seconds_to_samples(args[1], sr) if len(args) > 1 else wav.shape[-1]
    return wav[:, start:end], sr


def _effect_reverse(wav, sr, args):
    return wav.flip(-1), sr


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class _Fallback(Exception):
    """This effect (or these options) is not done natively: run it through sox."""


_NATIVE = {
    "channels": _effect_channels,
    "remix": None,  # always sox
    "rate": _effect_rate,
    "gain": _effect_gain,
    "norm": _effect_norm,
    "vol": _effect_vol,
    "pad": _effect_pad,
    "trim": _effect_trim,
    "reverse": _effect_reverse,
}


def _sox_effect(wav: torch.Tensor, sr: int, effect: Sequence[str]) -> tuple[torch.Tensor, int]:
    """Run one effect through the sox program over a raw float32 pipe."""
    sox = shutil.which("sox")
    if sox is None:
        raise RuntimeError(
            f"sox effect {list(effect)!r} needs the `sox` program (Debian package sox); it is not on PATH"
        )
    channels = wav.shape[0]
    out_sr = sr
    out_channels = channels
    if effect[0] == "rate":
        rest = [a for a in effect[1:] if not a.startswith("-")]
        out_sr = int(float(rest[-1].rstrip("kK")) * (1000 if rest[-1][-1] in "kK" else 1))
    raw = ["-t", "raw", "-e", "floating-point", "-b", "32", "-L"]
    cmd = [sox, "-V1", *raw, "-r", str(sr), "-c", str(channels), "-", *raw]
    if effect[0] in ("channels", "remix"):
        out_channels = int(effect[1]) if effect[0] == "channels" else len(effect) - 1
    cmd += ["-r", str(out_sr), "-c", str(out_channels), "-", *[str(e) for e in effect]]
    data = wav.detach().cpu().to(torch.float32).t().contiguous().numpy().astype("<f4").tobytes()
    proc = subprocess.run(cmd, input=data, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"sox effect {list(effect)!r} failed: {proc.stderr.decode(errors='replace').strip()}")
    out = np.frombuffer(proc.stdout, dtype="<f4").reshape(-1, out_channels)
    return torch.from_numpy(out.T.copy()), out_sr


def apply_effects_tensor(
    tensor: torch.Tensor, sample_rate: int, effects: Sequence[Sequence[str]], channels_first: bool = True
) -> tuple[torch.Tensor, int]:
    """Apply a sox effects chain to ``tensor`` (``(channels, frames)`` float).

    Returns ``(waveform, sample_rate)`` like the old ``torchaudio.sox_effects`` did.
    """
    wav = tensor if channels_first else tensor.t()
    if wav.dim() != 2:
        raise ValueError(f"apply_effects_tensor expects a 2-D (channels, frames) tensor, got shape {tuple(tensor.shape)}")
    wav = wav.to(torch.float32)
    sr = int(sample_rate)
    for effect in effects:
        effect = [str(e) for e in effect]
        if not effect:
            continue
        fn = _NATIVE.get(effect[0])
        try:
            if fn is None:
                raise _Fallback
            wav, sr = fn(wav, sr, effect[1:])
        except _Fallback:
            wav, sr = _sox_effect(wav, sr, effect)
    return (wav if channels_first else wav.t()), sr


def apply_effects_file(
    path,
    effects: Sequence[Sequence[str]],
    normalize: bool = True,
    channels_first: bool = True,
    format: str | None = None,
) -> tuple[torch.Tensor, int]:
    """Load ``path`` and apply ``effects`` (see :func:`apply_effects_tensor`)."""
    wav, sr = load(path, normalize=True, channels_first=True)
    return apply_effects_tensor(wav, sr, effects, channels_first=channels_first)


def librosa_load(path, sr: int | None = 22050, mono: bool = True, offset: float = 0.0, duration: float | None = None, dtype=np.float32, res_type: str = "soxr_hq"):
    """``librosa.load`` on soundfile: ``(y, sr)``, float32, channels averaged when ``mono``.

    s3prl's ``LoadAudio`` reads every utterance with ``librosa.load``; librosa's audio
    module JIT-compiles numba kernels on first use (15-60 s per fresh process without a
    warm NUMBA_CACHE_DIR, about 3 s with one), which dominates a short SUPERB job. The
    result is identical for files already at ``sr`` (all SUPERB corpora are 16 kHz);
    other rates are resampled with ``torchaudio.functional.resample``.
    """
    import soundfile as sf

    with sf.SoundFile(_path(path)) as f:
        native = f.samplerate
        start = int(round((offset or 0.0) * native))
        frames = -1 if duration is None else int(round(duration * native))
        f.seek(min(start, f.frames))
        data = f.read(frames=frames, dtype="float32", always_2d=True)  # (frames, channels)
    y = data.T  # (channels, frames)
    if mono:
        y = y.mean(axis=0)
    if sr is not None and sr != native:
        import torchaudio.functional as AF

        y = AF.resample(torch.from_numpy(np.ascontiguousarray(y)), native, sr).numpy()
    else:
        sr = native
    return np.ascontiguousarray(y, dtype=dtype), sr


class LibrosaShim:
    """Stands in for the ``librosa`` module inside s3prl's ``load_audio`` (only ``load``)."""

    load = staticmethod(librosa_load)


def effect_names() -> list[str]:
    return sorted(k for k in _NATIVE if _NATIVE[k] is not None)


def _noop_set_audio_backend(backend=None) -> None:
    """The old backend switch; soundfile serves every backend now."""


class _LazyHub(types.ModuleType):
    """``s3prl.hub`` that imports the real one only when something is looked up in it.

    ``s3prl.problem`` imports ``s3prl.nn.upstream``, which imports ``s3prl.hub``, which
    imports every upstream s3prl knows (transformers models, fairseq shims...): 60 % of a
    SUPERB job's start-up. Our problems build their own upstream and never touch the hub;
    anything that does gets the real module transparently.
    """

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        sys.modules.pop("s3prl.hub", None)
        real = importlib.import_module("s3prl.hub")
        import s3prl

        s3prl.hub = real
        return getattr(real, name)


def _install_torchaudio() -> None:
    """The torchaudio APIs s3prl calls that torchaudio 2.9 removed."""
    import torchaudio

    torchaudio.set_audio_backend = _noop_set_audio_backend  # s3prl picks a backend at import
    torchaudio.get_audio_backend = lambda: "soundfile"
    torchaudio.list_audio_backends = lambda: ["soundfile"]
    torchaudio.info = info  # s3prl's corpus parsers read lengths with it
    torchaudio.load = load  # needs torchcodec in torchaudio >= 2.9
    torchaudio.save = save
    if "torchaudio.sox_effects" in sys.modules and hasattr(sys.modules["torchaudio.sox_effects"], "apply_effects_tensor"):
        mod = sys.modules["torchaudio.sox_effects"]
    else:
        mod = types.ModuleType("torchaudio.sox_effects", "deepwide shim of the removed torchaudio.sox_effects")
        sys.modules["torchaudio.sox_effects"] = mod
    mod.apply_effects_tensor = apply_effects_tensor  # s3prl's datasets resample and normalise through sox effects
    mod.apply_effects_file = apply_effects_file
    mod.effect_names = effect_names
    mod.init_sox_effects = lambda: None
    mod.shutdown_sox_effects = lambda: None
    torchaudio.sox_effects = mod


def install() -> None:
    """Install every patch s3prl needs (idempotent; before or after ``import s3prl``)."""
    import torchaudio

    if getattr(torchaudio, "_deepwide_compat", False):
        return
    _install_torchaudio()
    import pandas as pd

    if not hasattr(pd.Series, "iteritems"):  # pandas 3 removed it; s3prl's corpus parsers call it
        pd.Series.iteritems = pd.Series.items
    if not hasattr(pd.DataFrame, "iteritems"):
        pd.DataFrame.iteritems = pd.DataFrame.items
    import s3prl

    if "s3prl.hub" not in sys.modules:  # the real hub imports every upstream s3prl knows (slow start-up)
        proxy = _LazyHub("s3prl.hub", _LazyHub.__doc__)
        sys.modules["s3prl.hub"] = proxy
        s3prl.hub = proxy
    from s3prl.dataio.dataset import load_audio

    load_audio.librosa = LibrosaShim  # librosa.load's numba JIT costs seconds per process; same samples
    torchaudio._deepwide_compat = True


@contextlib.contextmanager
def run_settings(cache_root, n_jobs: int):
    """Settings s3prl hard-codes, pointed at ours for the duration of one run.

    - its download dir and the VoxCeleb1 split cache go to ``cache_root`` (not ~/.cache);
    - ``get_info`` (ASR/PR length scan) uses ``n_jobs`` joblib workers instead of a fixed 6
      (spawning six processes costs more than the scan itself on small machines).
    """
    import functools
    from pathlib import Path

    import s3prl.problem.asr.superb_asr as asr_mod
    import s3prl.problem.asr.superb_pr as pr_mod
    import s3prl.problem.common.superb_sid as sid_mod
    import s3prl.util.download as dl

    ours = Path(cache_root)
    original = sid_mod.VoxCeleb1SID

    def voxceleb1sid(dataset_root, n_jobs=4, cache_root=None):
        return original(dataset_root, n_jobs, cache_root=ours)

    patches = [(dl, "_download_dir", ours / "download"),  # not ~/.cache
            (sid_mod, "VoxCeleb1SID", voxceleb1sid)]  # its split cache under ours
    patches += [(mod, "get_info", functools.partial(mod.get_info, n_jobs=n_jobs)) for mod in (asr_mod, pr_mod)]  # not 6 workers
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    for obj, name, value in patches:
        setattr(obj, name, value)
    try:
        yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)
