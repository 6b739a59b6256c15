"""Load and validate the pipeline config against ``workflow/schemas/``.

The top schema ``config.schema.yaml`` names one sub-schema per stage with ``$ref``
(``corpus.schema.yaml``, ...). Validation fills in every default, rejects unknown keys,
and reports the dotted path of the offending key, e.g.
``config key corpus.librispeech.synth.speakerz: unknown key (allowed: ...)``.
The Snakefile and the CLI use the same function, so a typo fails before any job runs.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from deepwide.errors import DeepwideError

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = REPO_ROOT / "workflow" / "schemas"


def _load_yaml(path: Path) -> Any:
    with open(path) as f:
        return yaml.safe_load(f)


def _registry(schema_dir: Path):
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    def retrieve(uri: str):
        path = schema_dir / uri.split("#", 1)[0]
        if not path.is_file():
            raise DeepwideError(f"schema {uri!r} not found in {schema_dir}")
        contents = _load_yaml(path)
        # a stage schema's own "$schema" would switch jsonschema to the plain validator class
        # for that file, which fills no defaults: every file is validated as the top one is
        if isinstance(contents, dict):
            contents.pop("$schema", None)
        return Resource.from_contents(contents, default_specification=DRAFT202012)

    return Registry(retrieve=retrieve)


def _validator_with_defaults():
    from jsonschema import Draft202012Validator, validators

    base_props = Draft202012Validator.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from base_props(validator, properties, instance, schema)

    return validators.extend(Draft202012Validator, {"properties": set_defaults})


def _format_error(err) -> str:
    path = ".".join(str(p) for p in err.absolute_path)
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        allowed = ", ".join(sorted(err.schema.get("properties", {})))
        keys = ", ".join(f"{path + '.' if path else ''}{k}" for k in extra)
        return f"config key {keys}: unknown key (allowed here: {allowed})"
    return f"config key {path or '<root>'}: {err.message}"


def validate_config(config: dict, schema_dir: str | Path | None = None) -> dict:
    """Validate ``config`` in place (defaults filled) and return it.

    Raises DeepwideError naming the key's dotted path on the first problems found.
    """
    schema_dir = Path(schema_dir) if schema_dir else SCHEMA_DIR
    schema = _load_yaml(schema_dir / "config.schema.yaml")
    cls = _validator_with_defaults()
    validator = cls(schema, registry=_registry(schema_dir))
    # two passes: the first fills defaults (also inside defaults just filled), the second reports
    for _ in range(2):
        errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        raise DeepwideError("invalid config:\n  " + "\n  ".join(_format_error(e) for e in errors[:10]))
    return config


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    """Read a YAML config file, merge ``overrides`` (nested dict) and validate it."""
    path = Path(path)
    if not path.is_file():
        raise DeepwideError(f"config file not found: {path}")
    config = _load_yaml(path) or {}
    if overrides:
        config = deep_merge(config, overrides)
    return validate_config(config)


def deep_merge(base: dict, update: dict | None) -> dict:
    """``base`` with ``update`` merged in, recursively for nested dicts (copies; None: nothing)."""
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
