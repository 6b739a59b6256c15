"""Write envs/deepwide.yaml from requirements.txt: `python envs/generate.py` (make envs).

The conda environment that `snakemake --sdm conda` builds for every rule holds exactly the
pins of requirements.txt (installed by pip inside a conda Python), so a cluster job runs the
same versions as the .venv; tests/test_envs.py fails when the two drift apart.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = "3.11"  # the .venv's and CI's minor version

HEADER = """\
# Conda environment of every deepwide rule, for `snakemake --sdm conda` (conda: directives
# in workflow/rules/*.smk). GENERATED from requirements.txt by `make envs`; do not edit the
# pins here: tests/test_envs.py checks they equal requirements.txt's.
# One environment for all stages: every rule runs `python -m deepwide` from the same
# package, and requirements.txt is one resolved set (s3prl's pins fit the rest).
# The corpus synth rules also need the system programs espeak-ng, flite and sox (Debian
# packages, see README), which this file does not provide.
"""


def pins(requirements: Path) -> list[str]:
    out = []
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def render(requirements: Path) -> str:
    lines = [HEADER.rstrip("\n"), "name: deepwide", "channels:", "  - conda-forge", "  - nodefaults",
             "dependencies:", f"  - python={PYTHON}", "  - pip", "  - pip:"]
    lines += [f"      - {p}" for p in pins(requirements)]
    return "\n".join(lines) + "\n"


def main() -> int:
    target = ROOT / "envs" / "deepwide.yaml"
    target.write_text(render(ROOT / "requirements.txt"))
    print(f"wrote {target.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
