"""The corpus stage's one audio check: a usable 16 kHz mono file, or why not (the reason
that goes to rejects.tsv)."""

from __future__ import annotations

from pathlib import Path

from deepwide.audio import SAMPLE_RATE


def check_audio(path: str | Path) -> tuple[dict | None, str | None]:
    """(info, None) for a usable 16 kHz mono file, else (None, reason)."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        return None, "missing: file not found"
    if path.stat().st_size == 0:
        return None, "empty: 0 bytes"
    try:
        info = sf.info(str(path))
    except Exception as err:  # libsndfile raises RuntimeError/LibsndfileError
        msg = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        return None, f"unreadable: {msg}"
    if info.frames <= 0:
        return None, "empty: 0 samples"
    if info.samplerate != SAMPLE_RATE:
        return None, f"sample rate {info.samplerate} Hz, expected {SAMPLE_RATE}"
    if info.channels != 1:
        return None, f"{info.channels} channels, expected mono"
    return dict(num_samples=int(info.frames), sample_rate=int(info.samplerate)), None
