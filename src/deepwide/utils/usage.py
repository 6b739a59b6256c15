"""What a job used, measured by the job itself: peak RSS, peak CUDA memory, wall time.

Every job that writes an info or result JSON stores :func:`usage` under the key ``usage``
(never part of a job's identity: Snakemake params do not read it). ``plan resources``
(:mod:`deepwide.plan.resources`) compares these numbers with the SLURM requests.

- ``peak_rss_mb``: ``ru_maxrss`` of this process (Linux reports KiB);
- ``peak_rss_children_mb``: the largest ``ru_maxrss`` among the waited-for child processes
  (DataLoader workers, TTS programs); a job's RSS peak is at most the sum of the two;
- ``cuda_max_allocated_mb``: ``torch.cuda.max_memory_allocated`` on every visible device
  (summed), null when CUDA was not initialised;
- ``cpu_s``: user + system CPU seconds of this process and its waited-for children
  (``benchmarks/pipeline_profile.py`` reads it for a rule's share of the cores);
- ``wall_s``: seconds since this process started (a requeued job: the last attempt only).

A job whose only output is a Parquet table (the report's CKA and KD-loss tables) stores
``{"usage": ..., "device": ...}`` as JSON under :data:`PARQUET_INFO_KEY` in the file's
key-value metadata instead (no declared output added); :func:`parquet_info` reads it back.
A job whose outputs are tables and figures (the report's collect, tables and figures)
writes ``{"usage": ...}`` to :data:`USAGE_SIDECAR` in a folder of its outputs
(:func:`write_usage_sidecar`; not a declared output).
"""

from __future__ import annotations

import resource
import sys
import time

_KIB = 1024.0 if sys.platform != "darwin" else 1024.0 * 1024.0  # ru_maxrss unit: KiB (Linux), B (macOS)


def _process_start() -> float:
    try:
        import psutil

        return float(psutil.Process().create_time())
    except Exception:  # pragma: no cover - psutil is pinned; keep the import time as a floor
        return _IMPORTED


_IMPORTED = time.time()
PARQUET_INFO_KEY = "deepwide.info"
USAGE_SIDECAR = "usage.json"


def cuda_peak_mb() -> float | None:
    torch = sys.modules.get("torch")  # a job that never imported torch used no CUDA
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return round(sum(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())) / 2**20, 1)


def usage() -> dict:
    """This process's peak memory and wall time so far (see the module docstring)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "peak_rss_mb": round(me.ru_maxrss * _KIB / 2**20, 1),
        "peak_rss_children_mb": round(kids.ru_maxrss * _KIB / 2**20, 1),
        "cpu_s": round(me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime, 3),
        "cuda_max_allocated_mb": cuda_peak_mb(),
        "wall_s": round(time.time() - _process_start(), 3),
    }


def parquet_info(path) -> dict | None:
    """The ``{"usage", "device"}`` record of a Parquet table (:data:`PARQUET_INFO_KEY`), or
    None where the file has none (written before jobs recorded it) or is unreadable. pyarrow
    is imported here, not at module level: the planner imports no numpy until it reads a run."""
    import json

    import pyarrow.parquet as pq

    try:  # reads the footer only; pyarrow's ArrowInvalid (not Parquet) is a ValueError
        obj = json.loads((pq.read_schema(path).metadata or {})[PARQUET_INFO_KEY.encode()])
    except (OSError, KeyError, ValueError):
        return None
    return obj if isinstance(obj, dict) and isinstance(obj.get("usage"), dict) else None


def write_usage_sidecar(folder) -> None:
    """``folder/usage.json``: this job's :func:`usage` so far (call it last)."""
    import json
    from pathlib import Path

    from deepwide.utils.io import atomic_write_text

    atomic_write_text(Path(folder) / USAGE_SIDECAR, json.dumps({"usage": usage()}, indent=1) + "\n")
