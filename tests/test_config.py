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


def test_defaults_filled_inside_ref_schema_with_own_dollar_schema(tmp_path):
    """A stage schema that declares $schema must still get its defaults filled."""
    (tmp_path / "config.schema.yaml").write_text(
        yaml.safe_dump(
            {"type": "object", "additionalProperties": False,
             "properties": {"stage": {"$ref": "stage.schema.yaml", "default": {}}}}
        )
    )
    (tmp_path / "stage.schema.yaml").write_text(
        yaml.safe_dump(
            {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
             "additionalProperties": False, "properties": {"x": {"type": "integer", "default": 3}}}
        )
    )
    assert validate_config({}, tmp_path) == {"stage": {"x": 3}}
    with pytest.raises(DeepwideError, match=r"config key stage.y: unknown key"):
        validate_config({"stage": {"y": 1}}, tmp_path)


class _UniqueKeyLoader(yaml.SafeLoader):
    pass


def _no_duplicates(loader, node, deep=False):
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    assert not dupes, f"duplicate keys {dupes} at line {node.start_mark.line + 1}"
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


@pytest.mark.parametrize("name", ["config.yaml", "workflow/configs/smoke.yaml", "workflow/configs/paper.yaml"])
def test_shipped_configs_have_no_duplicate_keys(repo_root, name):
    """Stages append sections to these files; a repeated key would silently win over the first."""
    with open(repo_root / name) as f:
        yaml.load(f, Loader=_UniqueKeyLoader)
