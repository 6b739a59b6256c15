"""The one on-disk format of every deepwide encoder (teacher or student).

A checkpoint is a ``torch.save`` dict::

    {"format": "deepwide-encoder/1", "arch": ArchConfig.to_dict(),
     "state_dict": Wav2Vec2Model state dict, "meta": {...free-form provenance...}}

``meta`` records where the weights came from (pretraining run, import source, KD method).
``sha256`` (written since 2026-12-07) is a digest of the arch and every tensor's name, dtype,
shape and bytes: :func:`load_checkpoint` recomputes it, so flipped bytes inside a tensor
(which ``torch.load`` does not notice) fail instead of loading silently.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from deepwide.errors import DeepwideError
from deepwide.models.arch import ArchConfig, build_model
from deepwide.utils.io import atomic_path

FORMAT = "deepwide-encoder/1"


def state_digest(arch: dict[str, Any], state: dict[str, torch.Tensor]) -> str:
    """sha256 over the arch and every tensor's name, dtype, shape and raw bytes."""
    from deepwide.utils.precision import state_sha256

    return state_sha256(state, prefix=json.dumps(arch, sort_keys=True, default=str).encode())


def save_checkpoint(path: str | Path, model: torch.nn.Module, arch: ArchConfig, meta: dict[str, Any] | None = None) -> None:
    """Atomically write ``model`` (a Wav2Vec2Model of shape ``arch``) to ``path``, with its digest."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    a = arch.to_dict()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        # through a file object the zip's record prefix is "archive", not the (random)
        # temporary file name: equal weights and meta give byte-identical files
        torch.save({"format": FORMAT, "arch": a, "state_dict": state, "meta": meta or {},
                    "sha256": state_digest(a, state)}, f)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"):
    """Return ``(model, arch, meta)``; the model is in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise DeepwideError(f"checkpoint not found: {path}")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # corrupt (truncated) or foreign file
        raise DeepwideError(f"cannot read checkpoint {path}: {err}; if deepwide wrote it, it is damaged: delete it "
                            "and rerun `snakemake` (or the command that wrote it)") from err
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise DeepwideError(
            f"{path} is not a deepwide checkpoint (format {blob.get('format') if isinstance(blob, dict) else type(blob).__name__!r}); "
            "convert it with `python -m deepwide teacher import`"
        )
    if "sha256" in blob and state_digest(blob["arch"], blob["state_dict"]) != blob["sha256"]:
        # its content changed after it was written: move it aside (nothing is deleted) so that
        # the next `snakemake` run, finding the output missing, rebuilds it
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        raise DeepwideError(
            f"corrupt checkpoint {path}: its weights do not match the sha256 recorded when it was written (a corrupt "
            f"disk, copy or edit); moved it to {aside}; rerun `snakemake` to rebuild it (or rerun the command that wrote it)"
        )
    arch = ArchConfig.from_dict(blob["arch"])
    model = build_model(arch)
    missing, unexpected = model.load_state_dict(blob["state_dict"], strict=False)
    if missing or unexpected:
        raise DeepwideError(f"checkpoint {path}: weights do not fit its arch (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.eval(), arch, blob.get("meta", {})
