# Shared by every rule file: config validation (defaults filled, unknown keys rejected),
# paths, and the params that make a rule rerun when its config slice or its code changes.
import os
import sys
from pathlib import Path

from deepwide.config import validate_config
from deepwide.utils.io import canonical_json, hash_files

validate_config(config)

# Jobs inherit this: OpenMP threads that spin while waiting made a busy 2-core machine
# run torch 5x slower (measured on the teacher's pretraining); a user's own value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

RESULTS = Path(config["results"])
LOGS = RESULTS / "logs"
# the interpreter that runs snakemake also runs every stage (same venv on a cluster node)
PY = sys.executable
SRC = Path(workflow.basedir) / "src" / "deepwide"
# every rule file appends the final outputs it contributes to `rule all`
ALL_TARGETS = []


def code_hash(*modules):
    """Content hash of the src/deepwide modules (files or folders) a rule runs."""
    return hash_files([SRC / m for m in modules])


def config_slice(*keys):
    """Canonical JSON of config[k1][k2]...: a rule's params, so a change reruns it."""
    node = config
    for k in keys:
        node = node[k]
    return canonical_json(node)
