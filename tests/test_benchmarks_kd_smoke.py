"""benchmarks/kd_throughput.py runs end to end at a tiny size against today's trainer (it
times the pipeline through the trainer's own step clock, so a trainer change can break it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_kd_throughput_tiny_run_writes_its_rows(tmp_path):
    out = tmp_path / "kd.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "kd_throughput.py"), "--device", "cpu", "--shapes", "2x64f128h2",
         "--batch", "2", "--seconds", "2", "--steps", "6", "--warmup", "2", "--repeats", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["student"] for r in rows] == ["2x64f128h2"]
    assert rows[0]["pipeline"] > 0 and rows[0]["reference"] > 0 and rows[0]["ratio"] > 0
