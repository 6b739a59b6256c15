"""A randomly initialised teacher: HuBERT's pretraining initialisation, no training.

CLI contract (what ``teacher.source: random`` runs)::

    python -m deepwide teacher random [--arch-json JSON] --seed N --out teacher.pt [--info info.json]

- ``--arch-json``: a JSON object of :class:`~deepwide.models.arch.ArchConfig` fields
  (``depth``, ``width``, ``ffn``, ``heads``, ``conv``, ``pos_conv_kernel``, ...) and/or
  ``conv_channels`` (HuBERT's kernels and strides with that many channels, like
  ``teacher.pretrain.arch``); fields it leaves out are HuBERT Base's
  (:func:`~deepwide.models.arch.hubert_base`). An unknown field or a value of the wrong
  type is a DeepwideError naming the field.
- ``--seed``: the only source of randomness. The checkpoint is byte-identical for equal
  arch and seed (the CPU RNG draws the weights; no thread count enters).
- ``--out``: a deepwide checkpoint (:mod:`deepwide.models.checkpoint`, read by
  ``load_checkpoint`` like an imported or pretrained teacher); ``meta`` holds ``source:
  "random"``, ``seed``, ``init``, ``params``, ``normalize: false``, ``role: "teacher"``.
- ``--info`` (default: ``info.json`` beside ``--out``): ``source`` ("random"), ``seed``,
  ``init``, ``arch``, ``name``, ``params``, ``weights_sha256`` (as ``teacher pretrain``
  writes them) and ``usage``. Written before the checkpoint, so a present checkpoint
  always has its info.

The weights are drawn as torchaudio's ``hubert_pretrain_model`` draws them (kaiming conv
front end, xavier attention, BERT-style transformer init): the teacher a HuBERT
pretraining run starts from.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from deepwide.errors import DeepwideError
from deepwide.models.arch import ArchConfig, build_model, conv_layers, hubert_base
from deepwide.models.checkpoint import save_checkpoint
from deepwide.models.solver import model_params
from deepwide.utils.io import atomic_write_text
from deepwide.utils.precision import state_sha256
from deepwide.utils.usage import usage

log = logging.getLogger(__name__)

INIT = "hubert_pretrain"  # torchaudio's HuBERT pretraining init (recorded in meta and info)


def _check_type(name: str, value: Any, default: Any, what: str) -> None:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif name == "conv":
        ok = (isinstance(value, list) and all(isinstance(c, list) and len(c) == 3 and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in c) for c in value))
    else:
        ok = isinstance(value, type(default))
    if not ok:
        kind = "a list of [channels, kernel, stride] positive integers" if name == "conv" else type(default).__name__
        raise DeepwideError(f"{what} field {name}: expected {kind}, got {value!r}")


def arch_from_json(fields: dict[str, Any], what: str = "--arch-json") -> ArchConfig:
    """HuBERT Base with ``fields`` overriding it (``conv_channels``: HuBERT's front end with that
    many channels); errors name ``what`` and the field."""
    base = hubert_base().to_dict()
    fields = dict(fields)
    if "conv_channels" in fields:
        channels = fields.pop("conv_channels")
        _check_type("conv_channels", channels, 512, what)
        if "conv" in fields:
            raise DeepwideError(f"{what}: give conv or conv_channels, not both")
        fields["conv"] = [list(c) for c in conv_layers(channels)]
    for name, value in fields.items():
        if name not in base:
            raise DeepwideError(f"{what}: unknown field {name!r}; known: conv_channels, {', '.join(sorted(base))}")
        _check_type(name, value, base[name], what)
    try:
        return ArchConfig.from_dict({**base, **fields})
    except DeepwideError as err:
        raise DeepwideError(f"{what}: {err}") from None


def random_teacher(arch: ArchConfig, seed: int) -> torch.nn.Module:
    """A Wav2Vec2Model of shape ``arch`` with HuBERT's pretraining init, drawn from ``seed``."""
    from torchaudio.models.wav2vec2.model import _init_hubert_pretrain_model

    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = build_model(arch)
        model.apply(_init_hubert_pretrain_model)
    finally:
        torch.random.set_rng_state(gen_state)  # the caller's RNG stream is left as it was
    return model.eval()


def write_random_teacher(arch: ArchConfig, seed: int, out: str | Path, info_path: str | Path | None = None) -> dict:
    """Write the checkpoint and its info.json (see the module docstring); returns the info."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DeepwideError(f"teacher random: --seed must be an integer >= 0, got {seed!r}")
    out = Path(out)
    info_path = Path(info_path) if info_path else out.with_name("info.json")
    model = random_teacher(arch, seed)
    params = model_params(model, arch)
    info = {
        "source": "random",
        "seed": seed,
        "init": INIT,
        "arch": arch.to_dict(),
        "name": arch.name,
        "params": params,
        "weights_sha256": state_sha256(model.state_dict()),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    info_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(info_path, json.dumps({**info, "usage": usage()}, indent=2, sort_keys=True) + "\n")
    meta = {"source": "random", "seed": seed, "init": INIT, "params": params, "normalize": False, "role": "teacher"}
    save_checkpoint(out, model, arch, meta)
    log.info("random teacher %s (%d params, seed %d) -> %s", arch.name, params, seed, out)
    return info
