"""QbE by DTW: the DTW recursion against a brute force, a query found inside a document
(synthetic features and espeak-ng speech by two voices), MTWV on hand-computed cases,
layer selection by dev MTWV on a QUESST14-layout tree, and the CLI with a real checkpoint."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio.compliance.kaldi as kaldi
from real_extra_trees import DOC_VOICE, QUERY_VOICE, quesst14_tree, say

from deepwide.errors import DeepwideError
from deepwide.superb.qbe.cli import register_qbe
from deepwide.superb.qbe.dtw import (
    DTWConfig,
    dtw_score_matrix,
    local_distance,
    subsequence_dtw,
    subsequence_dtw_path,
)
from deepwide.superb.qbe.features import FeatureStore, ModuleExtractor, load_audio
from deepwide.superb.qbe.quesst import load_quesst14, result_record, run_qbe
from deepwide.superb.qbe.twv import GroundTruth, mtwv, twv_curve

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one torch thread is faster than two fighting over a shared box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def main(argv):
    """`python -m deepwide superb ...` in-process."""
    from deepwide.cli import main as cli_main

    return cli_main(["superb", *argv])


def brute_force_cost(d: np.ndarray) -> float:
    """Asymmetric open-begin/open-end DTW by the textbook double loop."""
    n, length = d.shape
    g = np.full((n, length), np.inf)
    g[0] = d[0]
    for i in range(1, n):
        for j in range(length):
            g[i, j] = d[i, j] + min(g[i - 1, max(j - k, 0)] if j - k >= 0 else np.inf for k in (0, 1, 2))
    return g[-1].min() / n


def mfcc(wav: torch.Tensor) -> torch.Tensor:
    return kaldi.mfcc(wav[None] * 32768, sample_frequency=16000, num_ceps=13)


def test_dtw_recursion_matches_brute_force():
    gen = torch.Generator().manual_seed(1)
    d = torch.rand(9, 3, 17, generator=gen)
    lens = torch.tensor([17, 11, 4])
    cost, end = subsequence_dtw(d, lens)
    for b, n in enumerate(lens.tolist()):
        assert cost[b].item() == pytest.approx(brute_force_cost(d[:, b, :n].numpy()), rel=1e-6)
        assert end[b].item() < n  # padding never wins
    c, start, stop = subsequence_dtw_path(d[:, 0])
    assert c == pytest.approx(cost[0].item(), rel=1e-6) and stop == end[0].item() and 0 <= start <= stop


def test_scores_match_dtw_python_with_superb_settings():
    """SUPERB's QbE (s3prl quesst14_dtw) scores pairs with dtw-python: global standardisation,
    scipy's cosine distance mapped by exp(d) - 1, min-max per query frame, asymmetric steps,
    open begin and end, normalizedDistance; then z-normalises per query. Ours must agree."""
    from dtw import dtw
    from scipy.spatial import distance

    gen = torch.Generator().manual_seed(3)
    queries = [torch.randn(n, 10, generator=gen) for n in (6, 9)]
    docs = [torch.randn(n, 10, generator=gen) + 0.3 for n in (7, 15, 31, 12)]
    feats = torch.cat([*queries, *docs])
    mean, std = feats.mean(0), feats.std(0)
    ref = np.zeros((len(queries), len(docs)))
    for i, q in enumerate(queries):
        for j, d in enumerate(docs):
            dist = np.exp(distance.cdist(((q - mean) / std).numpy(), ((d - mean) / std).numpy(), "cosine")) - 1
            lo, hi = dist.min(1)[:, None], dist.max(1)[:, None]
            dist = (dist - lo) / np.clip(hi - lo, 1e-9, None)
            res = dtw(x=dist, step_pattern="asymmetric", keep_internals=False, distance_only=False,
                      open_begin=True, open_end=True)
            ref[i, j] = -res.normalizedDistance
    ref = (ref - ref.mean(1, keepdims=True)) / ref.std(1, keepdims=True)
    ours = dtw_score_matrix(queries, docs, DTWConfig(bucket_elements=200))  # several length buckets
    assert np.allclose(ours, ref, atol=1e-5)


def test_dtw_finds_embedded_query_in_synthetic_features():
    gen = torch.Generator().manual_seed(0)
    doc = torch.randn(120, 24, generator=gen)
    # the query is doc frames 50..69 sung slower (every frame twice, some thrice) plus noise
    idx = torch.tensor([50 + i // 2 for i in range(40)] + [69])
    query = doc[idx] + 0.1 * torch.randn(len(idx), 24, generator=gen)
    others = [torch.randn(n, 24, generator=gen) for n in (60, 150, 90)]
    scores = dtw_score_matrix([query], [others[0], doc, *others[1:]])
    assert scores[0].argmax() == 1 and scores[0, 1] > 1.5  # z-normalised: far above the rest
    cost, start, end = subsequence_dtw_path(local_distance(query, doc[None])[:, 0])
    assert abs(start - 50) <= 1 and abs(end - 69) <= 1
    # per-utterance standardisation and the plain cosine distance find it too
    for cfg in (DTWConfig(normalize="utterance"), DTWConfig(metric="cosine", minmax=False)):
        assert dtw_score_matrix([query], [others[0], doc, *others[1:]], cfg)[0].argmax() == 1


def test_short_queries_score_zero_and_bad_config():
    scores = dtw_score_matrix([torch.randn(3, 8), torch.randn(12, 8)], [torch.randn(40, 8), torch.randn(30, 8)])
    assert np.all(scores[0] == 0.0)
    with pytest.raises(DeepwideError, match="normalize must be"):
        DTWConfig(normalize="batch")
    with pytest.raises(DeepwideError, match="distance must be"):
        DTWConfig(metric="euclidean")


def test_dtw_finds_spoken_word_across_two_voices(tmp_path):
    """'garden' said alone by one espeak-ng voice, found inside a sentence by another voice,
    at the place where the sentence has the word (its parts rendered separately and joined)."""
    query = mfcc(load_audio(say("garden", QUERY_VOICE, tmp_path / "q.wav", trim=True)))
    parts = [say(t, DOC_VOICE, tmp_path / f"p{i}.wav", trim=True) for i, t in enumerate(["we sat in the", "garden", "all day"])]
    wavs = [load_audio(p) for p in parts]
    doc = mfcc(torch.cat(wavs))
    word_start = mfcc(wavs[0]).shape[0]
    word_end = mfcc(torch.cat(wavs[:2])).shape[0]
    distractors = [mfcc(load_audio(say(t, DOC_VOICE, tmp_path / f"d{i}.wav"))) for i, t in
                   enumerate(["please open the window now", "she drives a yellow bicycle", "nothing special happened today"])]
    scores = dtw_score_matrix([query], [distractors[0], doc, *distractors[1:]])
    assert scores[0].argmax() == 1
    feats = torch.cat([query, doc])
    mean, std = feats.mean(0), feats.std(0)
    _, start, end = subsequence_dtw_path(local_distance((query - mean) / std, ((doc - mean) / std)[None])[:, 0])
    assert word_start - 10 <= start and end <= word_end + 10 and end - start > 0.5 * (word_end - word_start)


def test_feature_store_on_disk_equals_in_memory(tmp_path):
    gen = torch.Generator().manual_seed(5)
    utts = [[torch.randn(n, 6, generator=gen), torch.randn(n, 4, generator=gen)] for n in (5, 9, 3)]
    mem, disk = FeatureStore(), FeatureStore(tmp_path / "f")
    for u in utts:
        mem.add(u)
        disk.add(u)
    mem.finish()
    disk.finish()
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["layer0.f16", "layer1.f16"]
    for layer in (0, 1):
        for i, u in enumerate(utts):
            assert torch.equal(mem.get(layer, i), disk.get(layer, i))
            assert torch.allclose(disk.get(layer, i), u[layer], atol=1e-2)  # float16 storage
        mean, std = disk.layer_stats(layer, [0, 2])
        ref = torch.cat([disk.get(layer, 0), disk.get(layer, 2)])
        assert torch.allclose(mean, ref.mean(0), atol=1e-5) and torch.allclose(std, ref.std(0), atol=1e-5)
    store = FeatureStore()
    store.add(utts[0])
    with pytest.raises(DeepwideError, match="upstream returned 1 layers, earlier 2"):
        store.add(utts[0][:1])
    with pytest.raises(DeepwideError, match=r"layer 1 features have shape \(5, 5\), expected \(5, 4\)"):
        store.add([utts[0][0], torch.zeros(5, 5)])


# ------------------------------------------------------------------ MTWV
def test_mtwv_hand_computed():
    docs = ["d1", "d2", "d3", "d4"]
    truth = GroundTruth(terms=["A", "B"], docs=docs, hits={("A", "d1"), ("B", "d2"), ("B", "d3")})
    scores = np.array([[0.9, 0.5, 0.1, 0.0],   # A: target d1
                       [0.8, 0.7, 0.2, 0.3]])  # B: targets d2, d3
    # beta 2: a hit of A is worth 1/2, a false alarm of A -2/3/2, a hit of B 1/4, a false alarm of B -1/2
    thr, twv = twv_curve(scores, truth, ["A", "B"], docs, beta=2.0)
    expected = [0.0, 0.5, 0.0, 0.25, 0.25 - 1 / 3, 0.25 - 1 / 3 - 0.5, 0.5 - 1 / 3 - 0.5, 0.5 - 2 / 3 - 0.5, 0.5 - 1 - 0.5]
    assert np.allclose(twv, expected)
    assert thr[0] == np.inf and np.allclose(thr[1:], [0.9, 0.8, 0.7, 0.5, 0.3, 0.2, 0.1, 0.0])
    assert mtwv(scores, truth, ["A", "B"], docs, beta=2.0) == pytest.approx((0.5, 0.9))
    # a term with an occurrence but no scores (e.g. another language) counts as all misses
    truth3 = GroundTruth(terms=["A", "B", "C"], docs=docs, hits=truth.hits | {("C", "d4")})
    assert mtwv(scores, truth3, ["A", "B"], docs, beta=2.0)[0] == pytest.approx(1 / 3)
    # terms without occurrences do not count; nor do occurrences in documents outside the ecf
    truth4 = GroundTruth(terms=["A", "B", "D"], docs=docs, hits=truth.hits | {("D", "d9")})
    assert mtwv(scores, truth4, ["A", "B", "D"], docs, beta=2.0)[0] == pytest.approx(0.5)


def test_mtwv_perfect_empty_and_ties():
    docs = [f"d{i}" for i in range(10)]
    terms = ["t0", "t1", "t2"]
    hits = {("t0", "d1"), ("t1", "d2"), ("t1", "d7"), ("t2", "d9")}
    truth = GroundTruth(terms=terms, docs=docs, hits=hits)
    perfect = np.array([[1.0 if (t, d) in hits else -1.0 for d in docs] for t in terms])
    assert mtwv(perfect, truth, terms, docs)[0] == pytest.approx(1.0)
    # every false alarm costs beta/9 per term: a detector that ranks a non-target first finds nothing worth it
    inverted = -perfect
    assert mtwv(inverted, truth, terms, docs) == (0.0, np.inf)
    assert mtwv(np.zeros((0, 10)), truth, [], docs)[0] == 0.0
    # a target tied with a false alarm is taken together with it (beta 999.9: not worth it)
    tied = 2 * perfect
    tied[0, 1] = tied[0, 3] = 1.0  # t0's target tied with a non-target, below t1's and t2's targets
    assert mtwv(tied, truth, terms, docs)[0] == pytest.approx(2 / 3)
    with pytest.raises(DeepwideError, match="no term of the tlist"):
        mtwv(perfect, GroundTruth(terms=terms, docs=docs, hits=set()), terms, docs)


# ------------------------------------------------------------------ QUESST14 tree, layer selection, CLI
@pytest.fixture(scope="module")
def quesst_root(tmp_path_factory):
    return quesst14_tree(tmp_path_factory.mktemp("quesst"))


def test_layer_selection_by_dev_mtwv(quesst_root):
    data = load_quesst14(quesst_root)
    assert len(data.docs) == 6 and [q for q, _ in data.queries["dev"]] == ["quesst14_dev_0001", "quesst14_dev_0002"]

    def three_layers(wav):  # noise, MFCC, a constant: only layer 1 carries the words
        m = mfcc(wav)
        noise = torch.randn(m.shape, generator=torch.Generator().manual_seed(int(wav.numel())))
        return [noise, m, torch.ones_like(m)]

    res = run_qbe(three_layers, data, select_on_dev=True)
    assert res["layer"] == 1 and res["num_layers"] == 3
    # the Czech dev term occurs only in the Czech document, which an English search never scores:
    # two of three terms found at most
    assert res["dev_by_layer"]["1"] == pytest.approx(2 / 3)
    assert res["dev_by_layer"]["0"] < 2 / 3 and res["dev_by_layer"]["2"] == 0.0
    # eval: garden and yellow found; yellow's second occurrence is in the rejected (unreadable) doc
    assert res["test_score"] == pytest.approx(0.5 + 0.25)
    rec = result_record(res, "mfcc", 1.0, 1.0, "cpu", DTWConfig(), 999.9)
    assert rec["layer_weights"] == [0.0, 1.0, 0.0] and rec["metric"] == "mtwv" and rec["higher_is_better"]
    fixed = run_qbe(three_layers, data, layer=2)
    assert fixed["layer"] == 2 and fixed["dev_score"] == 0.0
    with pytest.raises(DeepwideError, match="either a layer or select_on_dev"):
        run_qbe(three_layers, data)


def test_module_extractor_takes_s3prl_style_upstream(quesst_root):
    class Upstream(torch.nn.Module):  # forward(wavs, wavs_len) -> (states, lens), as s3prl upstreams
        def forward(self, wavs, wavs_len):
            feats = [mfcc(w[: int(n)]) for w, n in zip(wavs, wavs_len)]
            pad = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
            return [pad * 0.5, pad], [torch.tensor([f.shape[0] for f in feats])] * 2

    data = load_quesst14(quesst_root)
    res = run_qbe(ModuleExtractor(Upstream(), "cpu"), data, layer=1)
    assert res["dev_score"] == pytest.approx(2 / 3)


def _tiny_checkpoint(path: Path) -> Path:
    from deepwide.models.arch import ArchConfig, build_model, conv_layers
    from deepwide.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    arch = ArchConfig(depth=2, width=32, ffn=64, heads=2, conv=conv_layers(32), pos_conv_kernel=16, pos_conv_groups=4)
    save_checkpoint(path, build_model(arch).eval(), arch, {"source": "test"})
    return path


def test_cli_writes_result_json(quesst_root, tmp_path, capsys):
    ckpt = _tiny_checkpoint(tmp_path / "student.pt")
    out = tmp_path / "superb" / "pred-2x32" / "qbe" / "lr1.0" / "result.json"
    cmd = [sys.executable, "-m", "deepwide", "superb", "qbe", "--upstream", str(ckpt), "--upstream-name", "pred-2x32",
           "--root", str(quesst_root), "--select-on-dev", "--exec-json", '{"device": "cpu", "threads": 1, "qbe": {"feature_cache": true}}',
           "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    rec = json.loads(out.read_text())
    assert {"upstream", "task", "lr", "metric", "higher_is_better", "dev_score", "best_step", "test_score",
            "layer_weights", "runtime_s", "device"} <= set(rec)
    assert rec["task"] == "qbe" and rec["metric"] == "mtwv" and rec["upstream"] == "pred-2x32" and rec["device"] == "cpu"
    assert rec["usage"]["peak_rss_mb"] > 0 and rec["usage"]["cuda_max_allocated_mb"] is None  # plan resources
    assert len(rec["layer_weights"]) == 3 and sorted(rec["layer_weights"]) == [0.0, 0.0, 1.0]
    assert rec["layer_weights"][rec["layer"]] == 1.0 and set(rec["dev_by_layer"]) == {"0", "1", "2"}
    assert rec["dev_score"] == max(rec["dev_by_layer"].values()) and 0.0 <= rec["test_score"] <= 1.0
    stdlist = (out.parent / "eval.stdlist.xml").read_text()
    assert stdlist.count("<term ") == 2 * 6 and 'termid="quesst14_eval_0001"' in stdlist
    assert not (out.parent / ".qbe_work").exists()

    # errors a user can fix: exit 2 with the path or value named, nothing written (same entry, in-process)
    args = cmd[4:]
    assert main(args[:-1] + [str(tmp_path / "y.json")]) == 2
    assert "must name a result.json" in capsys.readouterr().err
    missing = args.copy()
    missing[missing.index("--root") + 1] = str(tmp_path / "nope")
    assert main(missing) == 2
    err = capsys.readouterr().err
    assert "QUESST14 root" in err and "nope" in err
    layer = args.copy()
    layer[layer.index("--select-on-dev")] = "--layer=7"
    out2 = tmp_path / "l7" / "result.json"
    layer[layer.index("--out") + 1] = str(out2)
    assert main(layer) == 2
    assert "layer 7 out of range" in capsys.readouterr().err and not out2.exists()


def test_register_qbe_plugs_into_a_stage_parser():
    import argparse

    parser = argparse.ArgumentParser()
    cmds = parser.add_subparsers(dest="command")
    register_qbe(cmds)
    args = parser.parse_args(["qbe", "--upstream", "a.pt", "--root", "r", "--layer", "3", "--out", "o/result.json"])
    assert args.layer == 3 and not args.select_on_dev and args.normalize == "global" and args.beta == 999.9
    assert callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["qbe", "--upstream", "a.pt", "--root", "r", "--layer", "3", "--select-on-dev", "--out", "o"])
