"""Parameter counts (closed form vs real models, published sizes) and the budget solver."""

import json
import os
import subprocess
import sys

import pytest
import torch

from deepwide.errors import DeepwideError
from deepwide.models.arch import ArchConfig, build_model, conv_layers
from deepwide.models.solver import count_params, parse_budget, pick_heads, solve


def run_cli(repo_root, *args):
    env = {**os.environ, "PYTHONPATH": str(repo_root / "src")}
    return subprocess.run([sys.executable, "-m", "deepwide", *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    "depth,width,ffn,heads,expected_m",
    [
        (2, 768, 3072, 12, "23.49"),  # DistilHuBERT
        (3, 768, 3072, 12, "30.58"),  # 3-L One
        (12, 384, 1536, 12, "26.87"),  # 12-L Half
        (12, 768, 3072, 12, "94.37"),  # torchaudio hubert_base
    ],
)
def test_published_counts_via_cli(repo_root, depth, width, ffn, heads, expected_m):
    r = run_cli(repo_root, "arch", "count", "--depth", str(depth), "--width", str(width), "--ffn", str(ffn),
                "--heads", str(heads), "--conv-channels", "512", "--pos-conv-kernel", "128", "--pos-conv-groups", "16")
    assert r.returncode == 0, r.stderr
    exact = int(r.stdout.split()[0])
    assert f"{exact / 1e6:.2f}" == expected_m
    assert exact == count_params(ArchConfig(depth, width, ffn, heads))


def test_count_equals_torchaudio_hubert_base():
    import torchaudio

    model = torchaudio.models.hubert_base()
    assert count_params(ArchConfig(12, 768, 3072, 12)) == sum(p.numel() for p in model.parameters()) == 94_370_944


@pytest.mark.parametrize(
    "arch",
    [
        ArchConfig(2, 64, 256, 4, conv=conv_layers(32), pos_conv_kernel=16, pos_conv_groups=4),
        ArchConfig(1, 96, 100, 3, conv=conv_layers(48), pos_conv_kernel=17, pos_conv_groups=8),
        ArchConfig(3, 48, 96, 6, conv=[(16, 10, 5), (24, 3, 2)], conv_bias=True, extractor_mode="layer_norm",
                   pos_conv_kernel=15, pos_conv_groups=8, layer_norm_first=True),
        ArchConfig(4, 128, 512, 8, conv=conv_layers(64), pos_conv_kernel=32, pos_conv_groups=16),
    ],
    ids=lambda a: a.name,
)
def test_formula_equals_numel(arch):
    model = build_model(arch)
    assert count_params(arch) == sum(p.numel() for p in model.parameters())


def test_count_json_breakdown(repo_root):
    r = run_cli(repo_root, "arch", "count", "--depth", "2", "--width", "64", "--conv-channels", "32",
                "--pos-conv-kernel", "16", "--pos-conv-groups", "4", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    arch = ArchConfig.from_dict(out["arch"])
    assert (arch.ffn, arch.heads) == (256, 1)  # defaults: FFN 4 x width, head size 64
    assert out["total"] == count_params(arch) == sum(p.numel() for p in build_model(arch).parameters())
    assert out["total"] == out["frontend"] + out["projection"] + out["pos_conv"] + out["encoder_norm"] + out["layers"]


def test_parse_budget():
    assert parse_budget("26.87M") == 26_870_000
    assert parse_budget("900k") == 900_000
    assert parse_budget("1.5e6") == 1_500_000
    assert parse_budget(1234) == 1234
    for bad in ("lots", "-3M", "0", "12Q"):
        with pytest.raises(DeepwideError, match="budget"):
            parse_budget(bad)


DEPTHS = [2, 3, 4, 6, 8, 12, 16, 24]


def test_solve_cli_published_budget(repo_root):
    r = run_cli(repo_root, "arch", "solve", "--budget", "26.87M", "--depths", ",".join(map(str, DEPTHS)), "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["depth"] for row in rows] == DEPTHS
    by_depth = {row["depth"]: row for row in rows}
    # 12-L Half is exactly on the grid
    assert (by_depth[12]["width"], by_depth[12]["ffn"], by_depth[12]["params"]) == (384, 1536, 26_872_960)
    target = 26_870_000
    for row in rows:
        arch = ArchConfig.from_dict(row["arch"])
        assert row["params"] == count_params(arch)
        assert arch.width % 64 == 0 and arch.width % arch.heads == 0 and arch.ffn == 4 * arch.width
        assert arch.conv == conv_layers(512) and arch.pos_conv_kernel == 128 and arch.pos_conv_groups == 16
        # no other width on the grid gets closer to the budget
        err = abs(row["params"] - target)
        for w in range(64, 2048 + 1, 64):
            other = ArchConfig(arch.depth, w, 4 * w, pick_heads(w))
            assert abs(count_params(other) - target) >= err
    widths = [row["width"] for row in rows]
    assert widths == sorted(widths, reverse=True)  # deeper -> narrower at constant budget


def test_solve_tuned_ffn_hits_budget():
    target = 26_870_000
    shapes = solve(target, DEPTHS, tune_ffn=True, ffn_step=8)
    for arch in shapes:
        per_step = arch.depth * 8 * (2 * arch.width + 1)  # parameters per FFN step
        assert abs(count_params(arch) - target) <= per_step / 2 + 1
        assert arch.ffn % 8 == 0
        assert 3.0 < arch.ffn / arch.width < 5.5
    assert shapes[DEPTHS.index(12)].width == 384


def test_solve_grid_and_fixed_heads():
    shapes = solve("5M", [1, 2, 4, 8], width_step=32, heads=12, conv=conv_layers(128), pos_conv_groups=16)
    for arch in shapes:
        assert arch.heads == 12 and arch.width % 12 == 0 and arch.width % 32 == 0
        assert arch.conv == conv_layers(128)
    shapes = solve("5M", [4], width_step=32, conv_channels=128)
    assert shapes[0].width % 32 == 0 and shapes[0].width % shapes[0].heads == 0
    assert shapes[0].conv == conv_layers(128)
    template = ArchConfig(1, 64, 256, 4, conv=conv_layers(64), pos_conv_kernel=32, pos_conv_groups=8)
    (arch,) = solve("1M", [4], template=template)
    assert (arch.conv, arch.pos_conv_kernel, arch.pos_conv_groups) == (conv_layers(64), 32, 8)


def test_solve_errors(repo_root):
    with pytest.raises(DeepwideError, match="depth 2"):
        solve("1k", [2])  # the 512-channel front end alone is 4.2 M
    with pytest.raises(DeepwideError, match="depths"):
        solve("1M", [0])
    with pytest.raises(DeepwideError, match="unknown constraint"):
        solve("1M", [2], colour="red")
    r = run_cli(repo_root, "arch", "solve", "--budget", "huge", "--depths", "2")
    assert r.returncode == 2 and "budget" in r.stderr and "Traceback" not in r.stderr
