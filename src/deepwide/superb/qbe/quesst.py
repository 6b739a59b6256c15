"""QbE on QUESST14: its queries, documents and ground truth, the MTWV of each layer, the
layer choice and the job's result.json."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deepwide.errors import DeepwideError
from deepwide.superb.qbe.dtw import DTWConfig, dtw_score_matrix
from deepwide.superb.qbe.features import FeatureStore, extract_features, make_extractor
from deepwide.superb.qbe.twv import NIST_STD_BETA, GroundTruth, mtwv, write_stdlist

log = logging.getLogger(__name__)


@dataclass
class QbEData:
    """Queries per split, documents, and the ground truth per split."""

    docs: list[tuple[str, str]]  # (id, path)
    queries: dict[str, list[tuple[str, str]]]  # split -> [(id, path)]
    truth: dict[str, GroundTruth]


def load_quesst14(root: str | Path, languages: Sequence[str] | None = ("nnenglish",), jobs: int = 1) -> QbEData:
    """QUESST 2014 from its root via :func:`deepwide.corpus.real_extra.prepare_quesst14`.

    Rejected audio (unreadable, empty) is dropped with a warning; the ground truth stays
    whole, so a dropped file counts as never detected.
    """
    from deepwide.corpus.real_extra import prepare_quesst14, quesst14_truth

    prep = prepare_quesst14(root, languages=languages, jobs=jobs)
    for r in prep.rejects[:20]:
        log.warning("QUESST14: rejected %s: %s", r["path"], r["reason"])
    if not prep.records:
        raise DeepwideError(f"QUESST14 root {root}: no usable audio")
    docs = [(r["id"], r["path"]) for r in prep.records if r["split"] == "docs"]
    queries = {s: [(r["id"], r["path"]) for r in prep.records if r["split"] == s] for s in ("dev", "eval")}
    truth = {s: GroundTruth(*quesst14_truth(prep.tables, s)) for s in ("dev", "eval")}
    for s in ("dev", "eval"):
        if not queries[s]:
            raise DeepwideError(f"QUESST14 root {root}: no usable {s} queries (languages {list(languages or [])})")
    if not docs:
        raise DeepwideError(f"QUESST14 root {root}: no usable documents (languages {list(languages or [])})")
    return QbEData(docs=docs, queries=queries, truth=truth)


def evaluate_layers(store: FeatureStore, query_index: dict[str, list[int]], doc_index: list[int],
                    term_ids: dict[str, list[str]], doc_ids: list[str], truth: dict[str, GroundTruth],
                    layers: Sequence[int], split: str, cfg: DTWConfig, beta: float, device: str) -> dict[int, dict]:
    """MTWV of ``split``'s queries for each layer in ``layers``."""
    out = {}
    for layer in layers:
        t0 = time.time()
        qi = query_index[split]
        mean = std = None
        if cfg.normalize == "global":
            mean, std = store.layer_stats(layer, qi + doc_index)
        scores = dtw_score_matrix([store.get(layer, i) for i in qi], [store.get(layer, i) for i in doc_index],
                                  cfg, device, mean, std, progress=len(qi) * len(doc_index) > 20000)
        value, thr = mtwv(scores, truth[split], term_ids[split], doc_ids, beta)
        out[layer] = {"mtwv": value, "threshold": thr, "scores": scores, "seconds": time.time() - t0}
        log.info("QbE %s layer %d: MTWV %.4f (threshold %.3f), %.1f s", split, layer, value, thr, time.time() - t0)
    return out


def run_qbe(upstream, data: QbEData, layer: int | None = None, select_on_dev: bool = False,
            cfg: DTWConfig | None = None, beta: float = NIST_STD_BETA, device: str = "cpu",
            feature_dir: str | Path | None = None, stdlist_dir: str | Path | None = None) -> dict:
    """Dev and eval MTWV at one layer (``layer``) or at the best dev layer (``select_on_dev``).

    Returns dev_score, test_score, layer, num_layers, dev_by_layer (when selecting),
    thresholds and counts. ``stdlist_dir`` receives ``dev.stdlist.xml``/``eval.stdlist.xml``.
    """
    cfg = cfg or DTWConfig()
    if (layer is None) == (not select_on_dev):
        raise DeepwideError("QbE: give either a layer or select_on_dev, not both or neither")
    extractor = make_extractor(upstream, device)
    known = getattr(extractor, "num_layers", None)  # checkpoints know their depth: fail before extracting
    if layer is not None and known is not None and not 0 <= layer < known:
        raise DeepwideError(f"QbE: layer {layer} out of range: the upstream has {known} hidden states (0..{known - 1})")
    items = list(data.docs) + data.queries["dev"] + data.queries["eval"]
    t0 = time.time()
    store = extract_features(extractor, [p for _, p in items], feature_dir)
    t_feat = time.time() - t0
    n_docs, n_dev = len(data.docs), len(data.queries["dev"])
    doc_index = list(range(n_docs))
    query_index = {"dev": list(range(n_docs, n_docs + n_dev)),
                   "eval": list(range(n_docs + n_dev, len(items)))}
    term_ids = {s: [q for q, _ in data.queries[s]] for s in ("dev", "eval")}
    doc_ids = [d for d, _ in data.docs]
    if layer is not None and not 0 <= layer < store.num_layers:
        raise DeepwideError(f"QbE: layer {layer} out of range: the upstream has {store.num_layers} hidden states (0..{store.num_layers - 1})")
    dev_layers = list(range(store.num_layers)) if select_on_dev else [layer]
    dev = evaluate_layers(store, query_index, doc_index, term_ids, doc_ids, data.truth, dev_layers, "dev", cfg, beta, device)
    best = max(dev_layers, key=lambda k: (dev[k]["mtwv"], -k))
    test = evaluate_layers(store, query_index, doc_index, term_ids, doc_ids, data.truth, [best], "eval", cfg, beta, device)[best]
    if stdlist_dir is not None:
        write_stdlist(Path(stdlist_dir) / "dev.stdlist.xml", dev[best]["scores"], term_ids["dev"], doc_ids)
        write_stdlist(Path(stdlist_dir) / "eval.stdlist.xml", test["scores"], term_ids["eval"], doc_ids)
    return {
        "dev_score": dev[best]["mtwv"],
        "test_score": test["mtwv"],
        "layer": best,
        "num_layers": store.num_layers,
        "dev_by_layer": {str(k): dev[k]["mtwv"] for k in dev_layers},
        "dev_threshold": dev[best]["threshold"],
        "test_threshold": test["threshold"],
        "counts": {"docs": n_docs, "dev_queries": n_dev, "eval_queries": len(query_index["eval"])},
        "feature_seconds": t_feat,
    }


def result_record(res: dict, upstream_name: str, lr: float, runtime_s: float, device: str, cfg: DTWConfig, beta: float) -> dict:
    """The ``result.json`` of a QbE job (the schema every SUPERB job writes)."""
    weights = [0.0] * res["num_layers"]
    weights[res["layer"]] = 1.0
    return {
        "upstream": upstream_name,
        "task": "qbe",
        "lr": lr,
        "metric": "mtwv",
        "higher_is_better": True,
        "dev_score": res["dev_score"],
        "best_step": 0,
        "test_score": res["test_score"],
        "layer_weights": weights,
        "runtime_s": runtime_s,
        "device": device,
        "layer": res["layer"],
        "dev_by_layer": res["dev_by_layer"],
        # the TWV-maximising score threshold; null when no threshold admits a detection
        # (strict JSON has no Infinity)
        "dev_threshold": res["dev_threshold"] if math.isfinite(res["dev_threshold"]) else None,
        "test_threshold": res["test_threshold"] if math.isfinite(res["test_threshold"]) else None,
        "counts": res["counts"],
        "n_test": res["counts"]["eval_queries"],
        "dtw": {"normalize": cfg.normalize, "metric": cfg.metric, "minmax": cfg.minmax,
                "min_query_frames": cfg.min_query_frames, "znorm": cfg.znorm, "beta": beta},
    }


