"""``teacher random``: an untrained teacher in the one checkpoint format (deepwide.teacher.random_init)."""

from __future__ import annotations

import json

import pytest
import torch

from deepwide.cli import main as cli_main
from deepwide.distill.trainer import init_encoder_from_teacher, init_from_teacher
from deepwide.errors import DeepwideError
from deepwide.models.arch import ArchConfig, build_model, hubert_base
from deepwide.models.checkpoint import load_checkpoint
from deepwide.models.solver import count_params
from deepwide.teacher.random_init import arch_from_json
from deepwide.utils.precision import state_sha256

TINY = {"depth": 3, "width": 32, "ffn": 64, "heads": 2, "conv_channels": 16, "pos_conv_kernel": 8, "pos_conv_groups": 4}


def make(tmp_path, name: str, seed: int = 7, arch: dict = TINY) -> tuple:
    out, info = tmp_path / name / "teacher.pt", tmp_path / name / "info.json"
    rc = cli_main(["teacher", "random", "--arch-json", json.dumps(arch), "--seed", str(seed), "--out", str(out),
                   "--info", str(info)])
    assert rc == 0
    return out, json.loads(info.read_text())


def test_random_teacher_loads_records_and_is_byte_reproducible(tmp_path):
    out, info = make(tmp_path, "a")
    model, arch, meta = load_checkpoint(out)  # the loader of imported and pretrained teachers
    assert (arch.depth, arch.width, arch.ffn, arch.heads, arch.conv[0][0]) == (3, 32, 64, 2, 16)
    assert info["source"] == meta["source"] == "random" and info["seed"] == meta["seed"] == 7
    assert info["arch"] == arch.to_dict() and info["params"] == meta["params"] == count_params(arch)
    assert info["weights_sha256"] == state_sha256(model.state_dict())
    assert {"peak_rss_mb", "wall_s"} <= set(info["usage"]) and meta["normalize"] is False
    # the states run: L+1 finite states of the right width
    from deepwide.models.arch import hidden_states

    with torch.no_grad():
        states, _ = hidden_states(model, torch.randn(1, 4000))
    assert len(states) == 4 and all(torch.isfinite(s).all() and s.shape[-1] == 32 for s in states)

    again, info2 = make(tmp_path, "b")
    assert again.read_bytes() == out.read_bytes()  # same seed and arch: the same file
    assert info2["weights_sha256"] == info["weights_sha256"]
    _, info3 = make(tmp_path, "c", seed=8)
    assert info3["weights_sha256"] != info["weights_sha256"]


def test_random_teacher_draws_hubert_init_and_keeps_the_callers_rng(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _, _ = make(tmp_path, "a")
    assert torch.equal(torch.rand(3), expected)
    model, _, _ = load_checkpoint(tmp_path / "a" / "teacher.pt")
    # HuBERT's pretraining init: out_proj biases are zeroed (torchaudio's default init is not)
    assert all(float(layer.attention.out_proj.bias.detach().abs().max()) == 0.0 for layer in model.encoder.transformer.layers)


def test_students_init_from_a_random_teacher(tmp_path):
    out, _ = make(tmp_path, "t")
    teacher, tarch, _ = load_checkpoint(out)
    sarch = ArchConfig.from_dict({**tarch.to_dict(), "depth": 2})
    student = build_model(sarch)
    copied = init_from_teacher(student, sarch, teacher, tarch) + init_encoder_from_teacher(student, sarch, teacher, tarch)
    assert copied == ["feature_extractor", "feature_projection", "pos_conv", "layers.0-1"]
    for i in range(2):
        s, t = student.encoder.transformer.layers[i].state_dict(), teacher.encoder.transformer.layers[i].state_dict()
        assert all(torch.equal(s[k], t[k]) for k in t)


def test_default_arch_is_hubert_base():
    assert arch_from_json({}) == hubert_base()
    base = hubert_base()
    assert (base.depth, base.width, base.ffn, base.heads, base.conv[0][0], base.pos_conv_kernel, base.pos_conv_groups,
            base.layer_norm_first) == (12, 768, 3072, 12, 512, 128, 16, False)
    assert arch_from_json({"depth": 2}).to_dict() == {**base.to_dict(), "depth": 2}
    assert arch_from_json({"conv_channels": 64}).conv[0] == (64, 10, 5)


@pytest.mark.parametrize("fields, match", [
    ({"depht": 2}, "unknown field 'depht'"),
    ({"depth": "two"}, "field depth: expected int"),
    ({"depth": 0}, "depth must be >= 1"),
    ({"layer_norm_first": 1}, "field layer_norm_first: expected bool"),
    ({"width": 100, "heads": 3}, "heads .3. must divide width .100."),
    ({"conv": [[16, 10]]}, "field conv: expected a list of"),
    ({"conv_channels": 16, "conv": [[16, 10, 5]]}, "conv or conv_channels"),
])
def test_bad_arch_names_the_field(fields, match):
    with pytest.raises(DeepwideError, match=match):
        arch_from_json(fields)


def test_cli_errors_are_named(tmp_path, capsys):
    out = tmp_path / "t.pt"
    assert cli_main(["teacher", "random", "--arch-json", '{"width": "wide"}', "--seed", "1", "--out", str(out)]) == 2
    assert "--arch-json field width" in capsys.readouterr().err
    assert cli_main(["teacher", "random", "--arch-json", "[1]", "--seed", "1", "--out", str(out)]) == 2
    assert "--arch-json must be a JSON object" in capsys.readouterr().err
    assert cli_main(["teacher", "random", "--arch-json", json.dumps(TINY), "--seed", "-1", "--out", str(out)]) == 2
    assert "--seed must be an integer >= 0" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "info.json").exists()
