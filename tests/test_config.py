import pytest
import yaml

from deepwide.config import load_config, validate_config
from deepwide.errors import DeepwideError


def test_defaults_filled():
    cfg = validate_config({})
    assert cfg["results"] == "results"
    assert cfg["seed"] == 0
    assert isinstance(cfg["corpus"], dict)


def test_unknown_top_level_key_named():
    with pytest.raises(DeepwideError, match=r"config key reslts: unknown key"):
        validate_config({"reslts": "x"})


def test_wrong_type_named():
    with pytest.raises(DeepwideError, match=r"config key seed:"):
        validate_config({"seed": "zero"})


@pytest.mark.parametrize("name", ["config.yaml", "workflow/configs/smoke.yaml"])
def test_shipped_configs_validate(repo_root, name):
    cfg = load_config(repo_root / name)
    assert cfg["results"].startswith("results")


def test_missing_config_file(tmp_path):
    with pytest.raises(DeepwideError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
