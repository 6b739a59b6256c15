"""The pretrained teacher's architecture from its config section, torch-free: the planner
checks it before any job runs, :mod:`deepwide.teacher.pretrain` builds the model from it."""

from __future__ import annotations

from deepwide.models.arch import ArchConfig, conv_layers


def teacher_arch(a: dict) -> ArchConfig:
    return ArchConfig(
        depth=a["depth"],
        width=a["width"],
        ffn=a["ffn"],
        heads=a["heads"],
        conv=conv_layers(a["conv_channels"]),
        pos_conv_kernel=a["pos_conv_kernel"],
        pos_conv_groups=a["pos_conv_groups"],
        layer_norm_first=a["layer_norm_first"],
        dropout=a["dropout"],
        attention_dropout=a["attention_dropout"],
        activation_dropout=a["activation_dropout"],
        projection_dropout=a["projection_dropout"],
        layer_drop=a["layer_drop"],
    )
