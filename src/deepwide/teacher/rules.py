"""Config-time helpers of ``workflow/rules/teacher.smk`` (kept here so they are tested)."""

from __future__ import annotations

from pathlib import Path

from deepwide.errors import DeepwideError


def import_source(config: dict) -> tuple[str, Path]:
    """``(format, path)`` of the checkpoint to import; errors name the config key."""
    imp = config["teacher"]["import"]
    fmt, path = imp["format"], imp["path"]
    if not path:
        raise DeepwideError(
            "config key teacher.import.path: required when teacher.source is 'import' "
            f"(the {fmt} checkpoint to convert)"
        )
    p = Path(path).expanduser()
    if not p.exists():
        raise DeepwideError(f"config key teacher.import.path: {p} does not exist")
    if fmt == "hf" and not p.is_dir():
        raise DeepwideError(f"config key teacher.import.path: format hf needs a transformers model directory, {p} is a file")
    if fmt != "hf" and not p.is_file():
        raise DeepwideError(f"config key teacher.import.path: format {fmt} needs a .pt file, {p} is a directory")
    return fmt, p.resolve()
