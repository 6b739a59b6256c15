"""Utterances a stage leaves out for their length: one WARNING and one info.json record."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from deepwide.audio import SAMPLE_RATE

log = logging.getLogger("deepwide.skips")


def skip_record(manifest, reason: str, threshold_s: float, skipped_samples, total: int) -> dict:
    """Count of utterances left out for length (``skipped_samples``: their num_samples).

    Logs a WARNING naming count, total and threshold when any are left out, and returns
    the record a stage's info.json keeps under ``skipped``:
    ``{manifest, reason, threshold_s, skipped, of, skipped_seconds}`` (zeros included).
    """
    n = int(len(skipped_samples))
    secs = float(np.sum(np.asarray(skipped_samples, dtype=np.int64))) / SAMPLE_RATE
    if n:
        log.warning("%s: skipped %d of %d utterances %s (%.3g s; %.1f s of audio left out)",
                    Path(str(manifest)).name, n, total, reason, threshold_s, secs)
    return {"manifest": str(manifest), "reason": reason, "threshold_s": float(threshold_s), "skipped": n,
            "of": int(total), "skipped_seconds": round(secs, 3)}
