"""The pretrained teacher's architecture from its config section, torch-free: the planner
checks it before any job runs, :mod:`deepwide.teacher.pretrain` builds the model from it."""

from __future__ import annotations

import dataclasses

from deepwide.models.arch import ArchConfig, conv_layers


def teacher_arch(a: dict) -> ArchConfig:
    """``teacher.pretrain.arch`` (ArchConfig fields, the conv front end as ``conv_channels``)."""
    fields = {f.name for f in dataclasses.fields(ArchConfig)} - {"conv"}
    return ArchConfig(conv=conv_layers(a["conv_channels"]), **{k: v for k, v in a.items() if k in fields})
