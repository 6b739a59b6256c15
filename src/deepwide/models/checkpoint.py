"""The one on-disk format of every deepwide encoder (teacher or student).

A checkpoint is a ``torch.save`` dict::

    {"format": "deepwide-encoder/1", "arch": ArchConfig.to_dict(),
     "state_dict": Wav2Vec2Model state dict, "meta": {...free-form provenance...}}

``meta`` records where the weights came from (pretraining run, import source, KD method).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from deepwide.errors import DeepwideError
from deepwide.models.arch import ArchConfig, build_model
from deepwide.utils.io import atomic_path

FORMAT = "deepwide-encoder/1"


def save_checkpoint(path: str | Path, model: torch.nn.Module, arch: ArchConfig, meta: dict[str, Any] | None = None) -> None:
    """Atomically write ``model`` (a Wav2Vec2Model of shape ``arch``) to ``path``."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        # through a file object the zip's record prefix is "archive", not the (random)
        # temporary file name: equal weights and meta give byte-identical files
        torch.save({"format": FORMAT, "arch": arch.to_dict(), "state_dict": state, "meta": meta or {}}, f)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"):
    """Return ``(model, arch, meta)``; the model is in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise DeepwideError(f"checkpoint not found: {path}")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # corrupt or foreign file
        raise DeepwideError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise DeepwideError(
            f"{path} is not a deepwide checkpoint (format {blob.get('format') if isinstance(blob, dict) else type(blob).__name__!r}); "
            "convert it with `python -m deepwide teacher import`"
        )
    arch = ArchConfig.from_dict(blob["arch"])
    model = build_model(arch)
    missing, unexpected = model.load_state_dict(blob["state_dict"], strict=False)
    if missing or unexpected:
        raise DeepwideError(f"checkpoint {path}: weights do not fit its arch (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.eval(), arch, blob.get("meta", {})
