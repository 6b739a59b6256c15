"""deepwide.superb.der (SUPERB SD's DER, offline) against hand-computed RTTM pairs and
against pyannote.metrics (a maintained reference) on the same RTTM files; and DeepwideSD's
scoring stage, which replaces s3prl's dscore clone, on dumped predictions."""

import random
import subprocess
import warnings

import pytest

from deepwide.errors import DeepwideError
from deepwide.superb.der import DerComponents, Turn, der, der_from_rttm, read_rttm, write_rttm


def T(spk, onset, offset, file="rec"):
    return Turn(file, spk, onset, offset)


# (name, reference, system, collar, skip_overlap, expected (total, missed, false alarm, confusion))
HAND = [
    ("perfect", [T("A", 0, 5), T("B", 5, 10)], [T("x", 0, 5), T("y", 5, 10)], 0, False, (10, 0, 0, 0)),
    ("missed speech", [T("A", 0, 10)], [T("x", 0, 6)], 0, False, (10, 4, 0, 0)),
    ("false alarm", [T("A", 0, 5)], [T("x", 0, 5), T("x", 7, 9)], 0, False, (5, 0, 2, 0)),
    ("confusion", [T("A", 0, 6), T("B", 6, 10)], [T("x", 0, 10)], 0, False, (10, 0, 0, 4)),
    # 2 s of overlap: scored twice, one speaker missed there
    ("overlap missed", [T("A", 0, 6), T("B", 4, 10)], [T("x", 0, 6), T("y", 6, 10)], 0, False, (12, 2, 0, 0)),
    ("overlap found", [T("A", 0, 6), T("B", 4, 10)], [T("x", 0, 6), T("y", 4, 10)], 0, False, (12, 0, 0, 0)),
    ("overlap skipped", [T("A", 0, 6), T("B", 4, 10)], [T("x", 0, 6), T("y", 6, 10)], 0, True, (8, 0, 0, 0)),
    # system overlap where the reference has one speaker: false alarm, not confusion
    ("system overlap", [T("A", 0, 10)], [T("x", 0, 10), T("y", 3, 5)], 0, False, (10, 0, 2, 0)),
    # 0.2 s late change inside a 0.25 s collar (each side of 0, 5 and 10): unscored
    ("collar", [T("A", 0, 5), T("B", 5, 10)], [T("x", 0, 5.2), T("y", 5.2, 10)], 0.25, False, (9, 0, 0, 0)),
    ("no collar", [T("A", 0, 5), T("B", 5, 10)], [T("x", 0, 5.2), T("y", 5.2, 10)], 0, False, (10, 0, 0, 0.2)),
    # a speaker's own overlapping turns are one stretch of speech (dscore merges them)
    ("self overlap merged", [T("A", 0, 4), T("A", 2, 6)], [T("x", 0, 6)], 0, False, (6, 0, 0, 0)),
    ("no system", [T("A", 1, 4)], [], 0, False, (3, 3, 0, 0)),
]


@pytest.mark.parametrize("name,ref,hyp,collar,skip,expected", HAND, ids=[h[0] for h in HAND])
def test_hand_computed(name, ref, hyp, collar, skip, expected):
    total, per = der(ref, hyp, collar, skip)
    got = (total.total, total.missed, total.false_alarm, total.confusion)
    assert got == pytest.approx(expected, abs=1e-9)
    assert total.der == pytest.approx(sum(expected[1:]) / expected[0])
    assert list(per) == ["rec"]


def test_files_are_mapped_apart_and_pooled():
    # each file has its own mapping (x and y both map to A); DER pools speaker-seconds
    ref = [T("A", 0, 10, "f1"), T("A", 0, 2, "f2")]
    hyp = [T("x", 0, 5, "f1"), T("y", 0, 2, "f2"), T("z", 0, 1, "f3")]  # f3: no reference
    total, per = der(ref, hyp)
    assert per["f1"].missed == 5 and per["f2"].der == 0 and per["f3"].false_alarm == 1 and per["f3"].der == float("inf")
    assert total.der == pytest.approx((5 + 1) / 12)
    assert DerComponents().der == 0.0


def test_rttm_round_trip_and_errors(tmp_path):
    turns = [T("A", 0.5, 2.25), T("B", 1.0, 3.0, "other")]
    write_rttm(turns, tmp_path / "a.rttm")
    assert read_rttm(tmp_path / "a.rttm") == turns
    # s3prl's own line format (9 fields, padded numbers) and comments/other types are read
    (tmp_path / "s3prl.rttm").write_text(";; comment\nSPKR-INFO rec 1 <NA> <NA> <NA> unknown A <NA>\n"
                                         "SPEAKER rec 1    0.50    1.75 <NA> <NA> A <NA>\nSPEAKER rec 1 3.00 0.00 <NA> <NA> A <NA>\n")
    assert read_rttm(tmp_path / "s3prl.rttm") == [T("A", 0.5, 2.25)]  # the zero-length turn is dropped
    bad = {  # file -> (its text, the error)
        "bad.rttm": ("SPEAKER rec 1 0.5 1.0 <NA> <NA> A\nSPEAKER rec 1 zero 1.0 <NA> <NA> A <NA>\n", r"bad.rttm:2: onset/duration"),
        "short.rttm": ("SPEAKER rec 1 0.5\n", r"short.rttm:1: expected 'SPEAKER"),
        "neg.rttm": ("SPEAKER rec 1 0.5 -1 <NA> <NA> A <NA>\n", r"neg.rttm:1: onset 0.5 and duration -1.0"),
    }
    for name, (text, error) in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(DeepwideError, match=error):
            read_rttm(tmp_path / name)
    (tmp_path / "empty.rttm").write_text("")
    with pytest.raises(DeepwideError, match=r"reference RTTM .*empty.rttm has no SPEAKER turns"):
        der_from_rttm(tmp_path / "empty.rttm", tmp_path / "a.rttm")
    with pytest.raises(DeepwideError, match=r"RTTM file not found: .*missing.rttm"):
        read_rttm(tmp_path / "missing.rttm")
    with pytest.raises(DeepwideError, match="collar"):
        der(turns, turns, collar=-1)


# ------------------------------------------------------------------ against pyannote.metrics
def _random_turns(rng, files, speakers, per_speaker):
    """Per file and speaker, non-overlapping turns (pyannote counts a speaker's own overlaps twice)."""
    out = []
    for f in files:
        for spk in speakers[: rng.randint(1, len(speakers))]:
            t = rng.uniform(0, 2)
            for _ in range(rng.randint(0, per_speaker)):
                d = round(rng.uniform(0.1, 3), 2)
                out.append(Turn(f, spk, round(t, 2), round(t + d, 2)))
                t += d + rng.uniform(0.05, 3)
    return out


def _pyannote(ref_rttm, hyp_rttm, collar, skip_overlap):
    """Components by pyannote.metrics on the same RTTM files, read by pyannote's own loader.
    Its collar is the total width around a boundary: twice dscore's (each side)."""
    pytest.importorskip("pyannote.metrics")
    from pyannote.core import Annotation
    from pyannote.database.util import load_rttm
    from pyannote.metrics.diarization import DiarizationErrorRate

    ref, hyp = load_rttm(ref_rttm), load_rttm(hyp_rttm)
    metric = DiarizationErrorRate(collar=2 * collar, skip_overlap=skip_overlap)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "uem approximated by the union of extents": dscore's UEM too
        for uri in sorted(set(ref) | set(hyp)):
            metric(ref.get(uri, Annotation(uri=uri)), hyp.get(uri, Annotation(uri=uri)))
    c = metric.accumulated_
    return (c["total"], c["missed detection"], c["false alarm"], c["confusion"]), abs(metric)



def _ours_and_pyannote(tmp_path, ref, hyp, collar, skip):
    """Our DER components, pyannote's (total, missed, false alarm, confusion) and its rate,
    both read from the same two RTTM files."""
    write_rttm(ref, tmp_path / "ref.rttm")
    write_rttm(hyp, tmp_path / "hyp.rttm")
    ours, _ = der_from_rttm(tmp_path / "ref.rttm", tmp_path / "hyp.rttm", collar, skip)
    return (ours, *_pyannote(tmp_path / "ref.rttm", tmp_path / "hyp.rttm", collar, skip))

PAIRS = [(name, ref, hyp, collar, skip) for name, ref, hyp, collar, skip, _ in HAND if name not in ("self overlap merged", "no system")]


@pytest.mark.parametrize("name,ref,hyp,collar,skip", PAIRS, ids=[p[0] for p in PAIRS])
def test_matches_pyannote_on_hand_pairs(tmp_path, name, ref, hyp, collar, skip):
    ours, theirs, rate = _ours_and_pyannote(tmp_path, ref, hyp, collar, skip)
    assert (ours.total, ours.missed, ours.false_alarm, ours.confusion) == pytest.approx(theirs, abs=1e-6)
    assert ours.der == pytest.approx(rate, abs=1e-9)


@pytest.mark.parametrize("collar,skip", [(0.0, False), (0.0, True), (0.25, False), (0.5, True)])
def test_matches_pyannote_on_random_multi_file_rttms(tmp_path, collar, skip):
    rng = random.Random(f"{collar}{skip}")
    for trial in range(15):
        files = [f"rec{i}" for i in range(rng.randint(1, 4))]
        ref = _random_turns(rng, files, ["s1", "s2", "s3"], 4)
        hyp = _random_turns(rng, files + ["extra"], ["h0", "h1", "h2", "h3"], 4)
        if not ref:
            continue
        ours, theirs, rate = _ours_and_pyannote(tmp_path, ref, hyp, collar, skip)
        assert (ours.total, ours.missed, ours.false_alarm, ours.confusion) == pytest.approx(theirs, abs=1e-6), trial
        if ours.total > 0:
            assert ours.der == pytest.approx(rate, abs=1e-9), trial


# ------------------------------------------------------------------ DeepwideSD's scoring stage
def test_sd_scoring_stage_offline(tmp_path, monkeypatch):
    """Stage 3 of s3prl's SD recipe on dumped posteriors: no subprocess (dscore clone), a
    der.yaml with the best of the threshold x median grid, and per-setting RTTMs + results."""
    import torch
    import yaml

    from deepwide.superb.problems import problem_class

    def no_subprocess(*a, **k):
        raise AssertionError(f"SD scoring ran a subprocess: {a}")

    monkeypatch.setattr(subprocess, "check_output", no_subprocess)
    monkeypatch.setattr(subprocess, "check_call", no_subprocess)
    test_dir = tmp_path / "evaluate" / "valid_best" / "test"
    (test_dir / "prediction").mkdir(parents=True)
    # 10 ms frames: speaker 0 active 0-3 s, speaker 1 active 2-5 s (posteriors 0.9 / 0.35 / 0.1)
    p = torch.full((500, 2), 0.1)
    p[:300, 0] = 0.9
    p[200:500, 1] = 0.35
    torch.save(p, test_dir / "prediction" / "mixA.pt")
    ref = tmp_path / "test.rttm"
    ref.write_text("SPEAKER mixA 1 0.00 3.00 <NA> <NA> 19 <NA>\nSPEAKER mixA 1 2.00 3.00 <NA> <NA> 84 <NA>\n")
    problem = problem_class("sd")()
    problem.scoring({"thresholds": [0.3, 0.5], "median_filters": [1, 3]}, 3, [test_dir], [ref], 160)
    out = yaml.safe_load((test_dir / "der.yaml").read_text())
    assert out["der"] == pytest.approx(0.0, abs=1e-9) and out["threshold"] == 0.3 and out["median_filter"] == 1
    assert out["collar"] == 0.0 and out["skip_overlap"] is False
    grid = {(g["threshold"], g["median_filter"]): g for g in out["grid"]}
    assert grid[(0.5, 1)]["der"] == pytest.approx(100 * 3 / 6) and grid[(0.5, 1)]["missed"] == pytest.approx(50.0)
    assert (test_dir / "score" / "rttm" / "threshold-0.5_median-3.rttm").is_file()
    assert (test_dir / "score" / "result" / "threshold-0.3_median-1.json").is_file()
    assert not (test_dir / "score" / "dscore").exists()
    with pytest.raises(DeepwideError, match="unknown key"):
        problem.scoring({"thresholds": [0.5], "median_filters": [1], "colar": 0}, 3, [test_dir], [ref], 160)
    empty = tmp_path / "empty"
    (empty / "prediction").mkdir(parents=True)
    with pytest.raises(DeepwideError, match="no test predictions"):
        problem.scoring({}, 3, [empty], [ref], 160)
