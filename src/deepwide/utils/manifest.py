"""The one reader of utterance manifests (Parquet: id, path, num_samples[, sample_rate, ...]).

The teacher, the targets cache, the students and the report's held-out sets read them
here; errors name the file, the missing column or the utterance at another rate.
"""

from __future__ import annotations

from pathlib import Path

from deepwide.audio import SAMPLE_RATE
from deepwide.errors import DeepwideError

REQUIRED = ("id", "path", "num_samples")


def read_manifest(path: str | Path, what: str = "manifest", columns=REQUIRED, need: str = ""):
    """The manifest at ``path`` as a DataFrame, checked: the file exists and reads, has
    ``columns``, and every utterance with a ``sample_rate`` is at 16 kHz (``need``: who needs
    it, for the error). ``what`` names the file in errors (e.g. "held-out manifest")."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DeepwideError(f"{what} not found: {path}")
    try:
        df = pd.read_parquet(path)
    except Exception as err:
        raise DeepwideError(f"cannot read {what} {path}: {err}") from err
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DeepwideError(f"{what} {path} lacks column(s) {', '.join(missing)} (has {', '.join(map(str, df.columns))})")
    if "sample_rate" in df.columns:
        bad = df[df["sample_rate"] != SAMPLE_RATE]
        if len(bad):
            raise DeepwideError(
                f"{what} {path}: {len(bad)} utterance(s) not at {SAMPLE_RATE} Hz, e.g. {bad['id'].iloc[0]} with "
                f"sample_rate {bad['sample_rate'].iloc[0]}" + (f"; {need} needs {SAMPLE_RATE} Hz" if need else "")
            )
    return df


def read_manifests(paths, what: str = "manifest"):
    """Several manifests concatenated (id, path, num_samples), utterance ids unique."""
    import pandas as pd

    frames = [read_manifest(p, what)[list(REQUIRED)] for p in paths]
    if not frames:
        raise DeepwideError(f"no {what} given")
    df = pd.concat(frames, ignore_index=True)
    dup = df["id"][df["id"].duplicated()]
    if len(dup):
        raise DeepwideError(f"{what}s {', '.join(map(str, paths))}: duplicate utterance id {dup.iloc[0]!r}")
    df["num_samples"] = df["num_samples"].astype("int64")
    return df


def read_heldout(path: str | Path, max_utterances: int, max_seconds: float):
    """The first ``max_utterances`` utterances of a manifest by id (a fixed, reproducible set)."""
    df = read_manifest(path, "held-out manifest", columns=("id", "path"))
    if df.empty:
        raise DeepwideError(f"{path}: no utterances")
    df = df.sort_values("id").head(max_utterances).reset_index(drop=True)
    df.attrs["max_seconds"] = max_seconds
    return df
