"""The SUPERB task registry (deepwide.superb.tasks): cheap to import, the one source of the
schema's task names, the report's tables, the rule's wildcard and the s3prl problem classes."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deepwide.errors import DeepwideError
from deepwide.superb import tasks as T

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "superb.schema.yaml"


def test_schema_task_enum_is_the_registry():
    schema = yaml.safe_load(SCHEMA.read_text())["properties"]
    assert schema["tasks"]["items"]["enum"] == list(T.TASKS)
    assert schema["replicate_tasks"]["items"]["enum"] == list(T.TASKS)
    for name in T.TASKS:  # every task has its settings section
        assert schema[name]["type"] == "object", name


def test_registry_imports_no_heavy_module():
    code = ("import sys, deepwide.superb.tasks, deepwide.report.score; "
            "print(sorted(m for m in ('torch', 'numpy', 'pandas', 's3prl', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_report_tables_come_from_the_registry():
    from deepwide.report import score

    assert score.SCORE_KEYS == ["PR", "ASR", "KS", "QbE", "SID", "ASV", "SD", "IC", "SF_F1", "SF_CER", "ER"]
    assert score.TASKS == ["PR", "ASR", "KS", "QbE", "SID", "ASV", "SD", "IC", "SF", "ER"]
    assert score.FAMILIES == {"content": ["PR", "ASR", "KS", "QbE"], "speaker": ["SID", "ASV", "SD"],
                              "semantics": ["IC", "SF"], "paralinguistics": ["ER"]}
    assert score.TASK_KEYS["SF"] == ["SF_F1", "SF_CER"] and score.TASK_KEYS["PR"] == ["PR"]
    assert score.METRIC == {"PR": "PER", "ASR": "WER", "KS": "Acc", "QbE": "MTWV", "SID": "Acc", "ASV": "EER",
                            "SD": "DER", "IC": "Acc", "SF_F1": "F1", "SF_CER": "CER", "ER": "Acc"}
    assert [k for k, v in score.HIGHER_IS_BETTER.items() if v] == ["KS", "QbE", "SID", "IC", "SF_F1", "ER"]
    for t in T.TASKS.values():  # the anchors a task reads are the report's
        assert t.fbank == {k: score.FBANK[k] for k in t.score_keys}
        assert t.sota == {k: score.SOTA[k] for k in t.score_keys}


def test_cost_fields_and_trainable_tasks():
    seconds = {n: t.utterance_seconds for n, t in T.TASKS.items()}
    assert seconds == {"asr": 12.3, "pr": 12.3, "sid": 8.0, "ks": 1.0, "ic": 2.3, "er": 4.5, "asv": 8.0, "sd": 8.0,
                       "sf": 3.1, "qbe": None}
    rows = {n: t.cost_row for n, t in T.TASKS.items()}
    assert rows == {"asr": "pr", "pr": "pr", "sd": "pr", "sf": "pr", "sid": "sid", "asv": "sid", "er": "sid",
                    "ks": "ks", "ic": "ks", "qbe": None}
    assert T.trainable() == ["asr", "pr", "sid", "ks", "ic", "er", "asv", "sd", "sf"]
    rule = (REPO / "workflow" / "rules" / "superb.smk").read_text()
    assert 'task="|".join(superb_tasks.trainable())' in rule


def test_unknown_task_and_bad_plugin_are_named(tmp_path):
    with pytest.raises(DeepwideError, match="unknown SUPERB task 'nope'"):
        T.check_root("nope", tmp_path)
    env = {"DEEPWIDE_SUPERB_TASKS": "no_such_task_module", "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", "import deepwide.superb.tasks"], capture_output=True, text=True, env=env, check=False)
    assert out.returncode != 0 and "DEEPWIDE_SUPERB_TASKS" in out.stderr and "no_such_task_module" in out.stderr


def test_prepare_args_per_task(tmp_path):
    root = str(tmp_path.resolve())
    assert T.prepare_args("ks", tmp_path, {}) == {"gsc1": f"{root}/speech_commands_v0.01",
                                                  "gsc1_test": f"{root}/speech_commands_test_set_v0.01"}
    assert T.prepare_args("pr", tmp_path, {}) == {"dataset_root": root, "train_sets": ["train-clean-100"],
                                                  "valid_sets": ["dev-clean"], "test_sets": ["test-clean"]}
    assert T.prepare_args("er", tmp_path, {}) == {"iemocap": root}
    assert T.prepare_args("sd", tmp_path, {}) == {"data_dir": root}
    assert T.prepare_args("sf", tmp_path, {}) == {"dataset_root": root}
    with pytest.raises(DeepwideError, match="no s3prl prepare_data"):
        T.prepare_args("qbe", tmp_path, {})
