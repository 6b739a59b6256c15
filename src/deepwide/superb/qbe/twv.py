"""QbE scoring: term-weighted value over thresholds (MTWV) and the NIST STD 2006
``stdlist.xml`` the official scorer reads. numpy only."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepwide.errors import DeepwideError

NIST_STD_BETA = 999.9  # TWV false-alarm weight of the NIST STD 2006 evaluation
DECISION_THRESHOLD = 2.0  # s3prl's YES/NO cut on z-normalised scores (the stdlist decision)


@dataclass
class GroundTruth:
    """QUESST-style ground truth: the terms (tlist), documents (ecf) and occurrences (rttm)."""

    terms: list[str]
    docs: list[str]
    hits: set[tuple[str, str]] = field(default_factory=set)  # (term, doc)


def twv_curve(scores: np.ndarray, truth: GroundTruth, term_ids: Sequence[str], doc_ids: Sequence[str],
              beta: float = NIST_STD_BETA) -> tuple[np.ndarray, np.ndarray]:
    """TWV at every threshold: (thresholds, twv), detection meaning ``score >= threshold``.

    ``scores`` (len(term_ids), len(doc_ids)) covers some trials; the trials of the ground
    truth it does not cover are never detected. TWV averages ``1 - P_miss - beta * P_FA``
    over the ground-truth terms with at least one occurrence in its documents, with
    ``P_FA = false alarms / (documents - occurrences)``.
    """
    doc_set = set(truth.docs)
    n_docs = len(truth.docs)
    n_true: dict[str, int] = {}
    for t, d in truth.hits:
        if d in doc_set:
            n_true[t] = n_true.get(t, 0) + 1
    counted = [t for t in truth.terms if n_true.get(t, 0) > 0]
    if not counted:
        raise DeepwideError("QbE ground truth: no term of the tlist occurs in any ecf document")
    n_terms = len(counted)
    tpos = {t: i for i, t in enumerate(term_ids)}
    dmask = np.array([d in doc_set for d in doc_ids], dtype=bool)
    vals, gains = [], []
    for t in counted:
        i = tpos.get(t)
        if i is None:
            continue
        s = scores[i, dmask]
        target = np.array([(t, d) in truth.hits for d, m in zip(doc_ids, dmask) if m], dtype=bool)
        gain = np.where(target, 1.0 / n_true[t], -beta / max(n_docs - n_true[t], 1)) / n_terms
        vals.append(s)
        gains.append(gain)
    if not vals:
        return np.array([math.inf]), np.array([0.0])
    v = np.concatenate(vals)
    g = np.concatenate(gains)
    order = np.argsort(-v, kind="stable")
    v, g = v[order], g[order]
    cum = np.cumsum(g)
    last = np.r_[v[1:] != v[:-1], True]  # the end of each group of tied scores
    thresholds = np.r_[math.inf, v[last]]
    twv = np.r_[0.0, cum[last]]
    return thresholds, twv


def mtwv(scores: np.ndarray, truth: GroundTruth, term_ids: Sequence[str], doc_ids: Sequence[str],
         beta: float = NIST_STD_BETA) -> tuple[float, float]:
    """(maximum TWV over thresholds, the threshold reaching it); 0 when nothing is detected."""
    thr, twv = twv_curve(scores, truth, term_ids, doc_ids, beta)
    k = int(np.argmax(twv))
    return float(twv[k]), float(thr[k])


def write_stdlist(path: str | Path, scores: np.ndarray, term_ids: Sequence[str], doc_ids: Sequence[str],
                  threshold: float = DECISION_THRESHOLD) -> None:
    """A NIST STD 2006 ``stdlist.xml`` (one detection per trial) for the official scorer."""
    from deepwide.utils.io import atomic_path

    root = ET.Element("stdlist", termlist_filename="benchmark.stdlist.xml", indexing_time="1.00",
                      language="english", index_size="1", system_id="deepwide")
    for i, t in enumerate(term_ids):
        tl = ET.SubElement(root, "detected_termlist", termid=t, term_search_time="1.0", oov_term_count="1")
        for j, d in enumerate(doc_ids):
            s = float(scores[i, j])
            ET.SubElement(tl, "term", file=d, channel="1", tbeg="0.000", dur="0.00", score=f"{s:.4f}",
                          decision="YES" if s > threshold else "NO")
    ET.indent(root)
    with atomic_path(path) as tmp:
        ET.ElementTree(root).write(tmp, encoding="UTF-8", xml_declaration=True)


