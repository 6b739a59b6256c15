"""The SUPERB tasks, one module each, and the module-level API the rest of the code uses.

Every task runs through s3prl's own problem class (``s3prl.problem.SuperbKS`` ...) and its
own ``prepare_data`` on a corpus root in the real dataset's layout (QbE: DTW, no s3prl).
:func:`check_root` tells a missing or malformed root apart before any job runs;
:func:`prepare_args` gives the ``prepare_data`` section of s3prl's config for a root.

Adding a task: a module that builds a :class:`~deepwide.superb.tasks.base.Task` and calls
:func:`~deepwide.superb.tasks.base.register`, either listed in :data:`BUILTIN` below or named
in the environment variable ``DEEPWIDE_SUPERB_TASKS`` (comma-separated importable modules,
imported here after the built-in tasks, so Snakemake and every job process see the task),
plus its ``superb.<name>`` section in workflow/schemas/superb.schema.yaml (the settings every
trained task has: lr, total_steps, eval_step, batch_size...).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from deepwide.errors import DeepwideError
from deepwide.superb.tasks.base import TASKS, Task, get_task, register  # noqa: F401  (the API)

BUILTIN = ["asr", "pr", "sid", "ks", "ic", "er", "asv", "sd", "sf", "qbe"]
PLUGINS = "DEEPWIDE_SUPERB_TASKS"
for _name in BUILTIN:
    importlib.import_module(f"deepwide.superb.tasks.{_name}")
for _module in filter(None, (m.strip() for m in os.environ.get(PLUGINS, "").split(","))):
    try:
        importlib.import_module(_module)
    except ModuleNotFoundError as err:
        raise DeepwideError(f"${PLUGINS}: cannot import SUPERB task module {_module!r}: {err}") from err


def check_root(task: str, root: str | Path, tcfg: dict | None = None, embedded: bool = False) -> None:
    """Raise DeepwideError naming task and path when ``root`` cannot serve ``task``.

    ``embedded`` roots are synthesized by the corpus stage; derived files (split lists,
    lexicons) may then be generated instead of supplied.
    """
    root = Path(root)
    if not root.is_dir():
        raise DeepwideError(f"superb.{task}: dataset root {root} does not exist (set superb.{task}.root or corpus.*.root)")
    get_task(task).check_layout(root, tcfg or {}, embedded)


def prepare_args(task: str, root: str | Path, tcfg: dict) -> dict:
    """The ``prepare_data`` section of s3prl's config for ``task`` on ``root``."""
    spec = get_task(task)
    if not spec.trainable:
        raise DeepwideError(f"task {task} has no s3prl prepare_data")
    return spec.prepare_args(str(Path(root).resolve()), tcfg)


def trainable() -> list[str]:
    """Tasks trained through s3prl, in registry order (the rule's ``{task}`` values)."""
    return [name for name, t in TASKS.items() if t.trainable]
