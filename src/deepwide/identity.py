"""What makes a job what it is: stage code versions and the settings that are execution.

Every job has two parts. Its *identity* is the settings that change its result: they, and
only they, are its Snakemake ``params`` (the rerun trigger) and part of its output path.
Its *execution* (threads, loader workers, device, log and checkpoint cadence, cache sizes)
reaches the stage's CLI as ``--exec-json`` and never reruns anything.
:data:`EXECUTION_KEYS` lists the execution settings.

Each stage has an explicit code version in :data:`STAGE_VERSIONS` that is part of its jobs'
identity. A change to a stage's code that changes its results bumps that number (and so
reruns exactly that stage's jobs and what reads them); docstrings, refactors and
speed-ups do not.

This module is imported by the planner and by the stages' CLIs alike: it imports neither.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from deepwide.utils.io import canonical_json

# Bump a stage's number when its code changes what its jobs produce.
STAGE_VERSIONS = {"corpus": 2, "teacher": 3, "targets": 3, "distill": 4, "superb": 2, "qbe": 1, "report": 4}

# Settings that never change a job's result: (config path, key) pairs. Dotted paths; "*"
# stands for every SUPERB task section.
EXECUTION_KEYS = {
    "corpus": ["threads"],
    "teacher.pretrain": ["threads"],
    # held-out evaluation runs on forked RNG state: its cadence only thins the curve
    "teacher.pretrain.train": ["log_every", "eval_every", "checkpoint_every"],
    "distill.targets": ["shard_seconds"],
    "distill.train": ["cpu_threads", "num_workers", "log_every", "checkpoint_every", "compile"],
    "superb": ["device", "num_workers", "threads", "cache_mb"],
    "superb.*": ["log_step", "save_step"],
    "superb.qbe": ["feature_cache"],
}


def get_dotted(config: dict, dotted: str) -> Any:
    node = config
    for k in dotted.split("."):
        node = node[k]
    return node


def _execution_keys(dotted: str) -> list[str]:
    keys = list(EXECUTION_KEYS.get(dotted, []))
    parts = dotted.split(".")
    if len(parts) == 2 and parts[0] == "superb" and parts[1] != "qbe":
        keys += EXECUTION_KEYS["superb.*"]
    return keys


def split_execution(node: Any, dotted: str) -> tuple[Any, dict]:
    """``(identity, execution)`` of the config node at ``dotted``: execution keys (at any
    depth below it, by :data:`EXECUTION_KEYS`) are moved into the second dict."""
    if not isinstance(node, dict):
        return node, {}
    ident, exe = {}, {}
    ex_keys = _execution_keys(dotted)
    for k, v in node.items():
        if k in ex_keys:
            exe[k] = copy.deepcopy(v)
            continue
        sub_i, sub_e = split_execution(v, f"{dotted}.{k}")
        ident[k] = sub_i
        if sub_e:
            exe[k] = sub_e
    return ident, exe


def config_sha(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def format_lr(lr: float) -> str:
    """A learning rate as it appears in paths and job names (``lr{lr}``), formatted here
    only: ``1e-4`` -> ``0.0001``, ``1e-05`` stays."""
    return f"{float(lr):g}"


def with_execution(identity: dict, exec_json: str | None, what: str = "--exec-json") -> dict:
    """A stage CLI's settings: its identity JSON with the ``--exec-json`` flags merged in."""
    from deepwide.config import deep_merge
    from deepwide.utils.io import json_object_arg

    return deep_merge(identity, json_object_arg(exec_json, what)) if exec_json else identity
