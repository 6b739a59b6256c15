"""Where the tests find the repository, its configs and the Snakemake of this interpreter."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SMOKE = REPO / "workflow" / "configs" / "smoke.yaml"
PAPER = REPO / "workflow" / "configs" / "paper.yaml"
