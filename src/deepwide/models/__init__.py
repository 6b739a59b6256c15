"""HuBERT-style encoders (teacher and students) on torchaudio's wav2vec2 components.

Names are resolved lazily so that ``import deepwide.models.solver`` (and every CLI start)
does not pay for importing torch.
"""

import importlib

_EXPORTS = {
    "ArchConfig": "arch",
    "build_model": "arch",
    "hidden_states": "arch",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "count_params": "solver",
    "solve": "solver",
    "export_hf": "convert",
    "import_checkpoint": "convert",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"deepwide.models.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'deepwide.models' has no attribute {name!r}")
