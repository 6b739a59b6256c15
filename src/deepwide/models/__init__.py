"""HuBERT-style encoders (teacher and students) on torchaudio's wav2vec2 components."""

from deepwide.models.arch import ArchConfig, build_model, hidden_states  # noqa: F401
from deepwide.models.checkpoint import load_checkpoint, save_checkpoint  # noqa: F401,E402
from deepwide.models.solver import count_params, solve  # noqa: F401,E402
from deepwide.models.convert import export_hf, import_checkpoint  # noqa: F401,E402
