"""Utterances a stage leaves out for their length: a WARNING naming count, total and
threshold, and a record in the stage's info.json (teacher pretraining, student training,
targets extraction), on real espeak-ng audio."""

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from _distill_data import make_corpus, make_teacher
from test_distill_trainer import make_job
from test_teacher import MICRO, merged, synth_split

from deepwide.cli import main as cli_main
from deepwide.teacher.data import read_manifest


def _threshold(manifest, n_short: int) -> float:
    """A min_seconds that leaves out exactly the ``n_short`` shortest utterances."""
    lengths = np.sort(pd.read_parquet(manifest)["num_samples"].to_numpy())
    assert lengths[n_short - 1] < lengths[n_short]
    return float(lengths[n_short - 1] + lengths[n_short]) / 2 / 16000


def _warnings(caplog, needle):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and needle in r.getMessage()]


@pytest.fixture(scope="module")
def teacher_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("skips_teacher")
    return {"root": root, "train": synth_split(root, "train-clean-100", 12, seed=3),
            "valid": synth_split(root, "dev-clean", 4, seed=4)}


def test_teacher_read_manifest_warns_with_count_and_threshold(teacher_corpus, caplog):
    thr = _threshold(teacher_corpus["train"], 3)
    skipped = []
    with caplog.at_level(logging.WARNING):
        utts = read_manifest(teacher_corpus["train"], thr, skipped)
    assert len(utts) == 9
    (msg,) = _warnings(caplog, "train-clean-100.parquet")
    assert f"skipped 3 of 12 utterances shorter than teacher.pretrain.min_seconds ({thr:.3g} s" in msg
    assert skipped[0]["skipped"] == 3 and skipped[0]["of"] == 12 and skipped[0]["threshold_s"] == thr
    assert skipped[0]["skipped_seconds"] > 0
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        read_manifest(teacher_corpus["train"], 0.1, skipped)
    assert not _warnings(caplog, "skipped") and skipped[1]["skipped"] == 0  # zero is recorded too


def test_teacher_info_json_counts_skips(teacher_corpus, tmp_path, caplog):
    thr = _threshold(teacher_corpus["train"], 2)
    cfg = merged(MICRO, min_seconds=thr, train={**MICRO["train"], "steps": 6, "eval_every": 6, "checkpoint_every": 6, "log_every": 2})
    argv = ["teacher", "pretrain", "--manifest", str(teacher_corpus["train"]), "--valid-manifest", str(teacher_corpus["valid"]),
            "--config-json", json.dumps(cfg), "--out", str(tmp_path / "teacher.pt"), "--workdir", str(tmp_path / "work"),
            "--no-progress"]
    with caplog.at_level(logging.WARNING):
        assert cli_main(argv) == 0
    info = json.loads((tmp_path / "info.json").read_text())
    train_rec, valid_rec = info["skipped"]
    assert train_rec["manifest"] == str(teacher_corpus["train"]) and (train_rec["skipped"], train_rec["of"]) == (2, 12)
    assert train_rec["threshold_s"] == thr and train_rec["reason"] == "shorter than teacher.pretrain.min_seconds"
    n_valid_short = int((pd.read_parquet(teacher_corpus["valid"])["num_samples"] < int(thr * 16000)).sum())
    assert (valid_rec["skipped"], valid_rec["of"]) == (n_valid_short, 4)
    assert info["train_utterances"] == 10
    assert _warnings(caplog, "skipped 2 of 12 utterances shorter than teacher.pretrain.min_seconds")


@pytest.fixture(scope="module")
def distill_inputs(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("skips_distill")
    return make_corpus(root, n=8), make_teacher(root / "teacher.pt")


def test_student_info_json_counts_skips(distill_inputs, tmp_path, caplog):
    from deepwide.distill.trainer import train

    corpus, teacher = distill_inputs
    thr = _threshold(corpus, 3)
    job = make_job("pred", steps=2, mode="online", frontend="trainable", init="random", log_every=1, min_seconds=thr)
    with caplog.at_level(logging.WARNING):
        info = train(job, teacher, [corpus], tmp_path / "out", tmp_path / "resume")
    (rec,) = info["skipped"]
    assert (rec["skipped"], rec["of"], rec["threshold_s"]) == (3, 8, pytest.approx(thr, abs=1 / 16000))
    assert rec["reason"] == "shorter than distill.train.min_seconds" and info["num_utterances"] == 5
    assert json.loads((tmp_path / "out" / "info.json").read_text())["skipped"] == [rec]
    (msg,) = _warnings(caplog, "skipped 3 of 8 utterances")
    assert "shorter than distill.train.min_seconds" in msg


def test_targets_info_json_counts_skips(distill_inputs, tmp_path):
    from deepwide.distill import targets

    corpus, teacher = distill_inputs
    info = targets.extract(teacher, [corpus], [1], tmp_path / "t")
    (rec,) = info["skipped"]
    assert (rec["skipped"], rec["of"]) == (0, 8) and rec["reason"] == "shorter than one frame of the teacher's conv front end"
    assert rec["threshold_s"] == 400 / 16000  # HuBERT's conv front end: 400-sample receptive field
