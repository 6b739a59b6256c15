"""Architecture description and model factory.

Every teacher and student is a torchaudio ``Wav2Vec2Model`` (HuBERT encoders are
wav2vec 2.0 encoders) built from an :class:`ArchConfig`. ``hidden_states`` returns the
L+1 states a SUPERB upstream and the distiller need: the input of the first transformer
layer followed by the output of each of the L layers, all ``(batch, frames, width)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: CLI start-up stays fast
    import torch
    from torch import Tensor

from deepwide.errors import DeepwideError

# HuBERT Base / wav2vec 2.0 conv front end: (channels, kernel, stride); 320x downsampling
HUBERT_CONV = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2


def conv_layers(channels: int) -> list[tuple[int, int, int]]:
    """HuBERT's kernels and strides (20 ms frames at 16 kHz) with ``channels`` channels."""
    return [(channels, k, s) for _, k, s in HUBERT_CONV]



# Conv front-end geometry over (channels, kernel, stride) lists, shared by the teacher's
# MFCC alignment and the distiller's frame-aligned crops.
def receptive_field(conv) -> int:
    """Samples seen by one output frame of the conv stack (400 for HuBERT)."""
    field, jump = 1, 1
    for _, kernel, stride in conv:
        field += (kernel - 1) * jump
        jump *= stride
    return field


def hop(conv) -> int:
    """Samples between output frames (320 for HuBERT: 20 ms at 16 kHz)."""
    out = 1
    for _, _, stride in conv:
        out *= stride
    return out


def num_frames(samples: int, conv) -> int:
    """Frames the conv stack outputs for ``samples`` input samples (no padding, torchaudio's rule)."""
    n = int(samples)
    for _, kernel, stride in conv:
        n = (n - kernel) // stride + 1
        if n <= 0:
            return 0
    return n

@dataclass
class ArchConfig:
    """Shape of one encoder. Sizes follow HuBERT's naming.

    depth x width with ``ffn`` hidden units and ``heads`` attention heads; the conv front
    end is a list of (channels, kernel, stride); ``extractor_mode`` is "group_norm"
    (HuBERT Base) or "layer_norm" (HuBERT Large); ``layer_norm_first`` False for Base.
    """

    depth: int
    width: int
    ffn: int
    heads: int
    conv: list[tuple[int, int, int]] = field(default_factory=lambda: list(HUBERT_CONV))
    conv_bias: bool = False
    extractor_mode: str = "group_norm"
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    layer_norm_first: bool = False
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    projection_dropout: float = 0.1
    layer_drop: float = 0.0

    def __post_init__(self):
        self.conv = [tuple(int(v) for v in c) for c in self.conv]
        for name in ("depth", "width", "ffn", "heads", "pos_conv_kernel", "pos_conv_groups"):
            if int(getattr(self, name)) < 1:
                raise DeepwideError(f"architecture field {name} must be >= 1, got {getattr(self, name)}")
        if self.width % self.heads:
            raise DeepwideError(f"architecture: heads ({self.heads}) must divide width ({self.width})")
        if self.width % self.pos_conv_groups:
            raise DeepwideError(
                f"architecture: pos_conv_groups ({self.pos_conv_groups}) must divide width ({self.width})"
            )
        if self.extractor_mode not in ("group_norm", "layer_norm"):
            raise DeepwideError(f"architecture: extractor_mode must be group_norm or layer_norm, got {self.extractor_mode!r}")
        if not self.conv:
            raise DeepwideError("architecture: conv front end needs at least one layer")

    @property
    def downsample_rate(self) -> int:
        return hop(self.conv)

    @property
    def name(self) -> str:
        """Short id used in file names, e.g. ``4x192f768h4``."""
        return f"{self.depth}x{self.width}f{self.ffn}h{self.heads}"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["conv"] = [list(c) for c in self.conv]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ArchConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DeepwideError(f"architecture: unknown field(s) {', '.join(unknown)}")
        return cls(**d)


def hubert_base() -> ArchConfig:
    """HuBERT Base (Hsu et al. 2021): 12 x 768 / 3072, 12 heads; the other fields' defaults
    (conv front end, positional conv 128/16, post-LN) are Base's."""
    return ArchConfig(depth=12, width=768, ffn=3072, heads=12)


def encoder_kwargs(arch: ArchConfig) -> dict:
    """The keyword arguments torchaudio's ``wav2vec2_model`` and ``hubert_pretrain_model``
    share, for an encoder of shape ``arch``."""
    return dict(
        extractor_mode=arch.extractor_mode,
        extractor_conv_layer_config=[tuple(c) for c in arch.conv],
        extractor_conv_bias=arch.conv_bias,
        encoder_embed_dim=arch.width,
        encoder_projection_dropout=arch.projection_dropout,
        encoder_pos_conv_kernel=arch.pos_conv_kernel,
        encoder_pos_conv_groups=arch.pos_conv_groups,
        encoder_num_layers=arch.depth,
        encoder_num_heads=arch.heads,
        encoder_attention_dropout=arch.attention_dropout,
        encoder_ff_interm_features=arch.ffn,
        encoder_ff_interm_dropout=arch.activation_dropout,
        encoder_dropout=arch.dropout,
        encoder_layer_norm_first=arch.layer_norm_first,
        encoder_layer_drop=arch.layer_drop,
    )


def build_model(arch: ArchConfig) -> "torch.nn.Module":
    """A torchaudio Wav2Vec2Model of this shape (randomly initialised)."""
    from torchaudio.models import wav2vec2_model

    return wav2vec2_model(**encoder_kwargs(arch), aux_num_out=None)


def normalize_waveforms(wavs: Tensor, lengths: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Zero-mean unit-variance per waveform over its valid samples; padding stays 0.

    For teachers whose checkpoint meta has ``normalize: true`` (e.g. HuBERT Large): the
    same as s3prl's hubert upstream (``layer_norm`` of each unpadded waveform).
    """
    import torch

    if lengths is None:
        return torch.nn.functional.layer_norm(wavs, wavs.shape[-1:], eps=eps)
    valid = (torch.arange(wavs.shape[-1], device=wavs.device)[None] < lengths[:, None]).to(wavs.dtype)
    n = lengths.to(wavs.dtype).clamp(min=1)[:, None]
    mean = (wavs * valid).sum(-1, keepdim=True) / n
    var = (((wavs - mean) * valid) ** 2).sum(-1, keepdim=True) / n
    return (wavs - mean) / torch.sqrt(var + eps) * valid


def hidden_states(
    model: torch.nn.Module,
    wavs: Tensor,
    lengths: Tensor | None = None,
    features: Tensor | None = None,
    upto: int | None = None,
) -> tuple[list[Tensor], Tensor | None]:
    """All L+1 hidden states of a Wav2Vec2Model and their valid frame lengths.

    ``upto``: stop after layer ``upto`` (states 0..upto; the rest are not computed).

    ``wavs`` is ``(batch, samples)`` at 16 kHz, ``lengths`` the valid samples per row.
    Pass ``features`` (with ``lengths`` already in frames) to skip the conv front end,
    e.g. when the front end is frozen and its output was cached.
    State 0 is the first transformer layer's input (projection + positional conv
    [+ layer norm]); state k is layer k's output. For pre-LN encoders
    (``layer_norm_first``, HuBERT Large) the last state includes the encoder's final
    layer norm, as in transformers' ``hidden_states`` and s3prl's hubert upstream.
    """
    if features is None:
        features, lengths = model.feature_extractor(wavs, lengths)
    encoder = model.encoder
    x, mask = encoder._preprocess(features, lengths)
    transformer = encoder.transformer
    x = transformer._preprocess(x)
    states = [x]
    n = len(transformer.layers) if upto is None else int(upto)
    for layer in transformer.layers[:n]:
        x, _ = layer(x, mask)
        states.append(x)
    # torchaudio's Transformer.layer_norm_first is the negation of the arch's flag: when it
    # is False (pre-LN layers) the encoder layer norm comes after the last layer
    if not transformer.layer_norm_first and n == len(transformer.layers):
        states[-1] = transformer.layer_norm(states[-1])
    return states, lengths
