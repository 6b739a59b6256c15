"""Report stage: SUPERB score, result collection, tables, figures, CKA and cost."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from deepwide.cli import main
from deepwide.errors import DeepwideError
from deepwide.report import analysis
from deepwide.models.cka import cka_matrix, linear_cka
from deepwide.report.collect import collect, read_result
from deepwide.report.score import FBANK, PUBLISHED, SCORE_KEYS, SOTA, superb_score
from deepwide.utils.usage import parquet_info

import report_fixtures as fx


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path


# ---------------------------------------------------------------- SUPERB score

@pytest.mark.parametrize("name, expected", [("HuBERT Base", 941.0), ("DistilHuBERT", 717.0)])
def test_published_superb_scores(tmp_path, capsys, name, expected):
    path = _write(tmp_path / "m.json", PUBLISHED[name]["metrics"])
    assert main(["score", "superb", str(path)]) == 0
    printed = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == pytest.approx(expected, abs=0.5)
    assert superb_score(PUBLISHED[name]["metrics"]) == pytest.approx(printed, abs=0.01)


def test_score_anchors_and_direction():
    assert superb_score(FBANK) == pytest.approx(0.0)
    assert superb_score(SOTA) == pytest.approx(1000.0)
    base = dict(PUBLISHED["DistilHuBERT"]["metrics"])
    for key in ("PR", "ASV", "SF_CER", "SID", "QbE"):  # lower- and higher-is-better alike
        better = dict(base)
        better[key] = base[key] + (base[key] - FBANK[key]) * 0.1  # 10 % further from FBANK
        assert superb_score(better) > superb_score(base), key
    # SF counts once: its two terms are averaged
    half = dict(FBANK, SF_F1=SOTA["SF_F1"])
    assert superb_score(half) == pytest.approx(50.0)


def test_score_cli_errors_name_the_key(tmp_path, capsys):
    metrics = dict(PUBLISHED["HuBERT Base"]["metrics"])
    del metrics["SF_CER"]
    assert main(["score", "superb", str(_write(tmp_path / "a.json", metrics))]) == 2
    assert "'SF_CER'" in capsys.readouterr().err
    bad = tmp_path / "b.json"
    bad.write_text("{not json")
    with pytest.raises(DeepwideError, match="not valid JSON"):
        main_raise(["score", "superb", str(bad)])
    metrics = dict(PUBLISHED["HuBERT Base"]["metrics"], ASR="six")
    with pytest.raises(DeepwideError, match="'ASR' must be a finite number"):
        main_raise(["score", "superb", str(_write(tmp_path / "c.json", metrics))])
    metrics = dict(PUBLISHED["HuBERT Base"]["metrics"], ASRR=1.0)
    with pytest.raises(DeepwideError, match="unknown key"):
        main_raise(["score", "superb", str(_write(tmp_path / "d.json", metrics))])


def main_raise(argv):
    from deepwide.cli import build_parser

    args = build_parser().parse_args(argv)
    return args.func(args)


# ---------------------------------------------------------------- CKA

def test_linear_cka_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 24, generator=g, dtype=torch.float64)
    y = x @ torch.randn(24, 40, generator=g, dtype=torch.float64) + 0.5 * torch.randn(300, 40, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(24, 24, generator=g, dtype=torch.float64))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-9)  # orthogonal transform
    ref = linear_cka(x, y)
    assert 0.0 < ref < 1.0
    assert linear_cka(x @ q, y) == pytest.approx(ref, abs=1e-9)
    assert linear_cka(3.7 * x, 0.01 * y) == pytest.approx(ref, abs=1e-9)  # isotropic scaling
    assert linear_cka(x + 5.0, y) == pytest.approx(ref, abs=1e-9)  # centring
    assert linear_cka(y, x) == pytest.approx(ref, abs=1e-9)
    unrelated = torch.randn(300, 24, generator=g, dtype=torch.float64)
    assert linear_cka(x, unrelated) < 0.2
    # not invariant to a non-isotropic scaling
    assert linear_cka(x, x * torch.linspace(0.1, 10, 24, dtype=torch.float64)) < 0.99
    m = cka_matrix([x, y], [x, unrelated, y])
    assert m.shape == (2, 3)
    assert m[0, 0] == pytest.approx(1.0) and m[1, 2] == pytest.approx(1.0)
    assert m[1, 0] == pytest.approx(ref)
    with pytest.raises(DeepwideError, match="same n"):
        linear_cka(x, y[:-1])


# ---------------------------------------------------------------- collection

def _result(**kw):
    obj = {"upstream": "pred-2x48f96h2", "task": "asr", "lr": 1e-4, "metric": "wer", "higher_is_better": False,
           "dev_score": 0.3, "best_step": 10, "test_score": 0.25, "layer_weights": [0.2, 0.3, 0.5],
           "runtime_s": 1.0, "device": "cpu"}
    obj.update(kw)
    return obj


def test_read_result_units_and_errors(tmp_path):
    rows, weights = read_result(_write(tmp_path / "r.json", _result()))
    assert rows[0]["test"] == pytest.approx(25.0) and rows[0]["dev"] == pytest.approx(30.0)
    assert rows[0]["key"] == "ASR" and rows[0]["metric"] == "WER"
    assert rows[0]["depth"] is None  # the architecture comes from info.json, never from the name
    assert weights == [0.2, 0.3, 0.5]
    rows, _ = read_result(_write(tmp_path / "p.json", _result(test_score=25.0, dev_score=30.0, unit="percent")))
    assert rows[0]["test"] == pytest.approx(25.0)
    rows, _ = read_result(_write(tmp_path / "q.json", _result(task="qbe", metric="mtwv", test_score=0.05)))
    assert rows[0]["test"] == pytest.approx(0.05)
    # the superb stage's format: scores scaled, "unit": "%" (or "" for MTWV), raw s3prl logs beside
    rows, _ = read_result(_write(tmp_path / "s.json", _result(test_score=25.0, dev_score=30.0, unit="%",
                                                              test_metrics={"wer": 0.25})))
    assert rows[0]["test"] == pytest.approx(25.0) and len(rows) == 1
    rows, _ = read_result(_write(tmp_path / "t.json", _result(task="qbe", metric="maxTWV", unit="", test_score=0.05)))
    assert rows[0]["test"] == pytest.approx(0.05) and rows[0]["metric"] == "MTWV"
    with pytest.raises(DeepwideError, match="key 'unit'"):
        read_result(_write(tmp_path / "v.json", _result(unit="permille")))
    # an extra upstream (e.g. an imported HuBERT) keeps its name, method "extra"
    rows, _ = read_result(_write(tmp_path / "x.json", _result(upstream="hubert_base")))
    assert rows[0]["method"] == "extra" and rows[0]["model"] == "hubert_base"
    # SF: F1 and, when present, the slot-value CER
    rows, _ = read_result(_write(tmp_path / "sf.json", _result(
        task="sf", metric="slot_type_f1", test_score=80.0, dev_score=79.0, unit="%",
        test_metrics={"slot_type_f1": 0.8, "slot_value_cer": 0.3}, dev_metrics={"slot_value_cer": 0.31})))
    assert {r["key"]: r["test"] for r in rows} == pytest.approx({"SF_F1": 80.0, "SF_CER": 30.0})
    with pytest.raises(DeepwideError, match="above 1"):
        read_result(_write(tmp_path / "a.json", _result(task="sid", metric="accuracy", test_score=75.0)))
    obj = _result()
    del obj["test_score"]
    with pytest.raises(DeepwideError, match="missing key 'test_score'"):
        read_result(_write(tmp_path / "m.json", obj))
    with pytest.raises(DeepwideError, match="unknown SUPERB task 'asrr'"):
        read_result(_write(tmp_path / "t.json", _result(task="asrr")))
    with pytest.raises(DeepwideError, match="upstream name 'pred small'"):
        read_result(_write(tmp_path / "u.json", _result(upstream="pred small")))
    with pytest.raises(DeepwideError, match="not valid JSON"):
        (tmp_path / "j.json").write_text("{")
        read_result(tmp_path / "j.json")


def test_collect_table(tmp_path):
    ups = {"fbank": (0, 0), "teacher": (4, 64), "pred-2x48f96h2": (2, 48), "l2l-4x32f64h2": (4, 32)}
    results = fx.write_results(tmp_path, ups)
    info = tmp_path / "students" / "pred" / "2x48f96h2" / "info.json"
    _write(info, {"method": "pred", "shape": "2x48f96h2", "params": 12345, "wall_time_s": 60.0, "mode": "cached",
                  "arch": {"depth": 2, "width": 48, "ffn": 96, "heads": 2}})
    df, lw, _ = collect(results, [info])
    assert set(df.columns) >= {"method", "shape", "depth", "width", "ffn", "heads", "params", "task", "lr", "seed",
                               "dev", "test", "upstream", "published"}
    measured = df[~df["published"]]
    assert len(measured) == len(ups) * len(fx.TASKS) * 2
    assert set(measured["task"]) == set(fx.TASKS)
    assert (measured.loc[measured["model"] == "pred-2x48f96h2", "params"] == 12345).all()
    assert (measured.loc[measured["model"] == "pred-2x48f96h2", "train_wall_s"] == 60.0).all()
    assert (measured.loc[measured["model"] == "pred-2x48f96h2", "train_mode"] == "cached").all()
    assert (measured.loc[measured["model"] == "fbank", "params"] == 0).all()
    pub = df[df["published"]]
    assert set(pub["upstream"]) == {f"published:{n}" for n in PUBLISHED}
    assert len(pub) == len(PUBLISHED) * len(SCORE_KEYS)
    dh = pub[pub["upstream"] == "published:DistilHuBERT"].set_index("key")["test"]
    assert superb_score(dh.to_dict()) == pytest.approx(717.35, abs=0.01)
    # layer weights: one per hidden state (L+1)
    n = lw[(lw["model"] == "l2l-4x32f64h2") & (lw["task"] == "ASR") & (lw["lr"] == 1e-4)]
    assert len(n) == 5 and n["weight"].sum() == pytest.approx(1.0)
    with pytest.raises(DeepwideError, match="duplicate result"):
        collect(results + results[:1])
    with pytest.raises(DeepwideError, match="no SUPERB result"):
        collect([])


def test_best_lr_by_dev_not_test(tmp_path):
    paths = []
    for lr, dev, test in [(1e-4, 0.9, 0.5), (1e-3, 0.6, 0.9)]:
        d = tmp_path / f"lr{lr:g}"
        d.mkdir()
        paths.append(_write(d / "result.json", _result(upstream="teacher", task="sid", metric="accuracy",
                                                       lr=lr, dev_score=dev, test_score=test)))
    for lr, dev, test in [(1e-4, 0.10, 0.10), (1e-3, 0.30, 0.05)]:  # WER: lower is better
        d = tmp_path / f"asr{lr:g}"
        d.mkdir()
        paths.append(_write(d / "result.json", _result(upstream="teacher", lr=lr, dev_score=dev, test_score=test)))
    df, _, _ = collect(paths, include_published=False)
    best = analysis.best_lr(df).set_index("key")
    assert best.loc["SID", "lr"] == 1e-4 and best.loc["SID", "test"] == pytest.approx(50.0)
    assert best.loc["ASR", "lr"] == 1e-4 and best.loc["ASR", "test"] == pytest.approx(10.0)


def test_scores_normalised_and_seeds(tmp_path):
    results = fx.write_results(tmp_path, fx.study_upstreams(), seeds=(0, 1, 2))
    df, _, _ = collect(results, fx.infos(results))
    assert sorted(df.loc[~df["published"], "seed"].unique()) == [0, 1, 2]
    best = analysis.best_lr(df)
    # the fixture makes lr 1e-3 better on dev everywhere
    assert (best.loc[~best["published"], "lr"] == 1e-3).all()
    summary = analysis.model_summary(best)
    sc = analysis.scores(best, summary).set_index("model")
    n_tasks = len(fx.TASKS)
    assert sc.loc["teacher", "normalised"] == pytest.approx(100 * n_tasks)
    assert sc.loc["fbank", "normalised"] == pytest.approx(0.0)
    assert sc.loc["teacher", "normalised_tasks"] == "PR,ASR,KS,SID,IC,ER"
    # three seeds: a standard deviation for students, mean of per-seed scores
    s = sc.loc["pred-4x32f64h2"]
    assert s["seeds"] == 3 and s["normalised_std"] > 0
    # the fixture's depth trend: content up with depth, speaker down
    assert sc.loc["pred-4x32f64h2", "normalised_content"] > sc.loc["pred-1x64f128h2", "normalised_content"]
    assert sc.loc["pred-4x32f64h2", "normalised_speaker"] < sc.loc["pred-1x64f128h2", "normalised_speaker"]
    # published rows: leaderboard score only
    assert sc.loc["published:HuBERT Base", "leaderboard"] == pytest.approx(941.0, abs=0.5)
    assert math.isnan(sc.loc["published:HuBERT Base", "normalised"])
    # leaderboard constants applied to measured rows, by hand for one model
    m = summary.set_index("model").loc["teacher"]
    by_hand = sum(100 * (m[k] - FBANK[k]) / (SOTA[k] - FBANK[k]) for k in fx.TASKS)
    assert sc.loc["teacher", "leaderboard"] == pytest.approx(by_hand)


# ---------------------------------------------------------------- tables and figures

def test_tables_and_figures_cli(tmp_path):
    results = fx.write_results(tmp_path, fx.study_upstreams(), seeds=(0, 1))
    out = tmp_path / "report"
    assert main(["report", "collect", "--results", *map(str, results), "--infos", *map(str, fx.infos(results)),
                 "--out", str(out / "results.parquet"),
                 "--layer-weights", str(out / "lw.parquet")]) == 0
    df = pd.read_parquet(out / "results.parquet")
    assert df["published"].sum() == len(PUBLISHED) * len(SCORE_KEYS)
    assert main(["report", "tables", "--results", str(out / "results.parquet"), "--out-dir", str(out / "t")]) == 0
    for name in ("results", "grid", "families", "score", "trend"):
        md = (out / "t" / f"{name}.md").read_text()
        tex = (out / "t" / f"{name}.tex").read_text()
        csv = pd.read_csv(out / "t" / f"{name}.csv")
        assert "|" in md and "\\toprule" in tex and "\\bottomrule" in tex and "\\caption{" in tex
        assert len(csv) > 0
    md = (out / "t" / "results.md").read_text()
    assert "mean ± standard deviation over 2 seeds" in md and " ± " in md and "HuBERT Base †" in md
    grid = pd.read_csv(out / "t" / "grid.csv")
    assert set(grid.columns) >= {"task", "depth", "width", "pred", "l2l"}
    assert len(grid) == len(fx.TASKS) * 3
    score = pd.read_csv(out / "t" / "score.csv").set_index("model")
    assert score.loc["teacher", "SUPERB (normalised)"].startswith("600.0")
    assert "normalised" in (out / "t" / "score.md").read_text() and "teacher row = 100 per task" in (out / "t" / "score.md").read_text()
    trend = pd.read_csv(out / "t" / "trend.csv").set_index(["method", "family"])
    # the fixture: content improves with depth, speaker with width; the trend table shows the
    # verdict's levels with 95 % intervals and the verdict's own answer, no ranking of its own
    level = {d: float(trend.loc[("pred", "content"), f"L={d}"].split(" [")[0]) for d in (1, 2, 4)}
    assert level[1] < level[2] < level[4]
    for usage_json in (out / "collect" / "usage.json", out / "t" / "usage.json"):  # each job's usage (plan resources)
        assert json.loads(usage_json.read_text())["usage"]["peak_rss_mb"] > 0
    assert trend.loc[("pred", "content"), "verdict"] == "deeper better"
    assert trend.loc[("l2l", "speaker"), "verdict"] == "wider better"
    assert trend.loc[("pred", "all"), "verdict"] == "see the primary test"
    assert "best depth" not in trend.columns and "95 % interval" in (out / "t" / "trend.md").read_text()
    fams = pd.read_csv(out / "t" / "families.csv").set_index("model")
    assert fams.loc["fbank", "content (normalised)"].startswith("0.0")

    # two distillation seeds of one model: the figure shows their mean matrix
    cka = pd.DataFrame([{"upstream": f"pred-2x48f96h2-seed{s}", "model": "pred-2x48f96h2", "student_layer": i,
                         "teacher_layer": j, "cka": 1.0 / (1 + abs(i - j)) - 0.1 * s}
                        for s in (0, 1) for i in range(3) for j in range(5)])
    cka.to_parquet(tmp_path / "cka.parquet")
    opts = json.dumps({"dpi": 60})
    assert main(["report", "figures", "--results", str(out / "results.parquet"), "--layer-weights", str(out / "lw.parquet"),
                 "--cka", str(tmp_path / "cka.parquet"), "--options", opts, "--out-dir", str(out / "f")]) == 0
    import matplotlib.image as mpimg

    for name in ("depth", "heatmap", "layer_weights", "cka", "pareto"):
        png = out / "f" / f"{name}.png"
        assert (out / "f" / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
        img = mpimg.imread(png)
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert img[..., :3].std() > 0.01  # not blank
    assert json.loads((out / "f" / "usage.json").read_text())["usage"]["wall_s"] > 0
    # a bad option value is a user error
    with pytest.raises(DeepwideError, match="cmap"):
        main_raise(["report", "figures", "--results", str(out / "results.parquet"), "--options",
                    json.dumps({"cmap": "no-such-map"}), "--out-dir", str(out / "g")])


def test_pareto_front():
    from deepwide.report.figures import pareto_front

    cost = np.array([1.0, 2.0, 3.0, 4.0, 2.0])
    score = np.array([10.0, 5.0, 20.0, 15.0, 12.0])
    assert list(pareto_front(cost, score)) == [0, 4, 2]


# ---------------------------------------------------------------- CKA and cost on real models

def test_cka_and_cost_on_checkpoints(tmp_path):
    manifest = fx.write_manifest(tmp_path, n=3)
    ckpts = fx.write_checkpoints(tmp_path)
    out = tmp_path / "cka.parquet"
    opts = json.dumps({"utterances": 3, "max_frames": 100})
    assert main(["report", "cka", "--teacher", str(ckpts["teacher"]), "--student", str(ckpts["teacher"]),
                 "--upstream", "teacher", "--manifest", str(manifest), "--options", opts, "--out", str(out)]) == 0
    m = pd.read_parquet(out).pivot(index="student_layer", columns="teacher_layer", values="cka").to_numpy()
    assert m.shape == (5, 5)
    assert np.diag(m) == pytest.approx(1.0, abs=1e-6)  # a model against itself
    assert ((m >= -1e-9) & (m <= 1 + 1e-9)).all()
    assert main(["report", "cka", "--teacher", str(ckpts["teacher"]), "--student", str(ckpts["l2l-2x48f96h2"]),
                 "--upstream", "l2l-2x48f96h2", "--manifest", str(manifest), "--options", opts, "--out", str(out)]) == 0
    df = pd.read_parquet(out)
    assert len(df) == 3 * 5 and (df["model"] == "l2l-2x48f96h2").all() and df["frames"].iloc[0] == 100
    info = parquet_info(out)  # the job's usage, in the table's metadata (plan resources)
    assert info["device"] == "cpu" and info["usage"]["peak_rss_mb"] > 0 and info["usage"]["wall_s"] > 0
    plain = tmp_path / "plain.parquet"  # a table without the record, and a file that is not Parquet: None
    df.to_parquet(plain, index=False)
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not a table")
    assert parquet_info(plain) is None and parquet_info(tmp_path / "junk.parquet") is None

    cost = tmp_path / "cost.json"
    assert main(["report", "cost", "--checkpoint", str(ckpts["pred-1x64f128h2"]), "--upstream", "pred-1x64f128h2",
                 "--manifest", str(manifest), "--options", json.dumps({"utterances": 2, "repeats": 1}),
                 "--out", str(cost)]) == 0
    c = json.loads(cost.read_text())
    assert c["usage"]["peak_rss_mb"] > 0 and c["usage"]["wall_s"] > 0  # plan resources
    assert c["params"] == json.loads((ckpts["pred-1x64f128h2"].parent / "info.json").read_text())["params"]
    assert c["utterances"] == 2 and c["audio_seconds"] == pytest.approx(0.6 + 0.7)
    assert c["rtf"] > 0 and c["machine"]
    # MACs by hand for the transformer layer: 4 w^2 + 2 w ffn per frame plus 2 T^2 w attention
    from deepwide.report.cost import count_macs
    from deepwide.models.arch import ArchConfig, build_model

    wav = [torch.randn(16000)]
    two = ArchConfig(depth=2, width=64, ffn=128, heads=2, **fx.TINY)
    one = ArchConfig(depth=1, width=64, ffn=128, heads=2, **fx.TINY)
    t = 49  # frames of one second
    diff = count_macs(build_model(two).eval(), wav) - count_macs(build_model(one).eval(), wav)
    assert diff == t * (4 * 64 * 64 + 2 * 64 * 128) + 2 * t * t * 64


def test_cka_errors(tmp_path):
    with pytest.raises(DeepwideError, match="held-out manifest not found"):
        main_raise(["report", "cka", "--teacher", "a.pt", "--student", "b.pt", "--upstream", "pred-1x8f8h1",
                    "--manifest", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "x.parquet")])


def test_report_config_defaults_and_errors():
    from deepwide.config import validate_config

    cfg = validate_config({"report": {"cost": {"utterances": 2}}})
    assert cfg["report"]["cost"] == {"utterances": 2, "max_seconds": 10.0, "repeats": 3}
    assert cfg["report"]["reference"] == "normalised"
    assert cfg["report"]["heldout"] == {"corpus": "librispeech", "split": "test-clean"}
    with pytest.raises(DeepwideError, match=r"report.reference"):
        validate_config({"report": {"reference": "sota"}})
    with pytest.raises(DeepwideError, match=r"report.figures.dpii: unknown key"):
        validate_config({"report": {"figures": {"dpii": 3}}})


@pytest.mark.parametrize("ups, reference", [
    ({"fbank": (0, 0), "teacher": (4, 64)}, "normalised"),          # no students yet
    ({"pred-2x48f96h2": (2, 48)}, "leaderboard"),                    # one student, no anchors
])
def test_tables_and_figures_with_partial_results(tmp_path, ups, reference, caplog):
    from deepwide.report.figures import write_figures
    from deepwide.report.tables import write_tables

    results = fx.write_results(tmp_path, ups, lrs=(1e-4,))
    df, lw, _ = collect(results, fx.infos(results))
    assert len(write_tables(df, tmp_path / "t", reference=reference)) == 24
    cka = pd.DataFrame(columns=["model", "student_layer", "teacher_layer", "cka"])
    assert len(write_figures(df, lw, cka, tmp_path / "f", {"reference": reference, "dpi": 50})) == 12
    if reference == "leaderboard":
        # no anchors: the normalised score is undefined, the per-task figures are still drawn
        import logging

        with caplog.at_level(logging.WARNING, logger="deepwide.report.figures"):
            assert len(write_figures(df, lw, cka, tmp_path / "g", {"reference": "normalised"})) == 12
        assert "normalised score is undefined" in caplog.text
