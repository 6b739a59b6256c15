"""Audio on disk: the one sample rate and the one reader every stage uses.

Every corpus this project builds or reads is 16 kHz mono; :func:`read_audio` is the only
place a waveform is read from a file (soundfile, never torchaudio: torchaudio >= 2.9 has
no ``load`` without torchcodec). Errors name the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepwide.errors import DeepwideError

SAMPLE_RATE = 16000


def read_audio(path: str | Path, start: int = 0, stop: int | None = None, *, resample: bool = False,
               dtype: str = "float32", what: str = "") -> np.ndarray:
    """Samples ``[start, stop)`` of ``path`` as a mono array at :data:`SAMPLE_RATE`.

    Channels are averaged. A file at another rate is an error naming it (``what`` says who
    needs 16 kHz) unless ``resample`` is set, which resamples the whole file with
    ``torchaudio.functional.resample`` (``start``/``stop`` then count output samples).
    """
    import soundfile as sf

    try:
        if resample:
            wav, sr = sf.read(str(path), dtype=dtype, always_2d=True)
        else:
            wav, sr = sf.read(str(path), start=start, stop=stop, dtype=dtype, always_2d=True)
    except Exception as err:
        raise DeepwideError(f"cannot read audio {path}: {err}") from err
    mono = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
    if sr == SAMPLE_RATE:
        return mono[start:stop] if resample else mono
    if not resample:
        need = f"; {what} needs {SAMPLE_RATE} Hz" if what else f", expected {SAMPLE_RATE}"
        raise DeepwideError(f"audio {path} has sample rate {sr}{need}")
    import torch
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(np.ascontiguousarray(mono)), sr, SAMPLE_RATE).numpy()
    return out[start:stop]
