"""QbE's subsequence DTW: frame distances, the open-begin/open-end recursion (vectorised
over documents), and the (query, document) score matrix with SUPERB's normalisations."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from deepwide.errors import DeepwideError

MIN_QUERY_FRAMES = 5  # shorter queries score 0 everywhere (s3prl's recipe)


def subsequence_dtw(dist: Tensor, doc_lens: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Asymmetric open-begin/open-end DTW of a query against a batch of documents.

    ``dist`` is (N, B, L): the local distance of query frame i to frame j of document b
    (frames beyond ``doc_lens[b]`` are ignored). The cost of a path is the sum of the
    local distances of its N cells, one per query frame; from (i-1, j') to (i, j) the
    document index may move by j - j' in {0, 1, 2}. Returns the best cost per document
    divided by N, and the document frame where that path ends.
    """
    n, b, length = dist.shape
    if doc_lens is not None:
        pad = torch.arange(length, device=dist.device)[None, :] >= doc_lens.to(dist.device)[:, None]
        dist = dist.masked_fill(pad[None], math.inf)
    # row i-1 of the cost table lives in buf[:, 2:]; buf[:, :2] stays +inf, so the three
    # predecessors (j, j-1, j-2) are the slices buf[:, 2:], buf[:, 1:-1], buf[:, :-2]
    buf = torch.full((b, length + 2), math.inf, dtype=dist.dtype, device=dist.device)
    g = dist[0].clone()
    for i in range(1, n):
        buf[:, 2:] = g
        g = torch.minimum(torch.minimum(buf[:, 2:], buf[:, 1:-1]), buf[:, :-2]).add_(dist[i])
    cost, end = g.min(dim=-1)
    return cost / n, end


def subsequence_dtw_path(dist: Tensor) -> tuple[float, int, int]:
    """Cost/N, start frame and end frame of the best path for one (N, L) distance matrix."""
    n, length = dist.shape
    g = dist[0].double().clone()
    start = torch.arange(length)
    for i in range(1, n):
        prev = torch.full((3, length), math.inf, dtype=torch.float64)
        prev_start = torch.zeros((3, length), dtype=torch.long)
        for k in range(3):  # predecessor j - k
            prev[k, k:] = g[: length - k]
            prev_start[k, k:] = start[: length - k]
        best, arg = prev.min(dim=0)
        start = prev_start.gather(0, arg[None])[0]
        g = best + dist[i].double()
    cost, end = g.min(dim=-1)
    return float(cost) / n, int(start[end]), int(end)


def local_distance(q: Tensor, docs: Tensor, metric: str = "cosine_exp", minmax: bool = True,
                   doc_lens: Tensor | None = None, unit: bool = False) -> Tensor:
    """(N, B, L) distances between query frames ``q`` (N, D) and padded ``docs`` (B, L, D).

    ``unit``: rows of ``q`` and ``docs`` are already unit vectors. Padding frames
    (beyond ``doc_lens``) are ignored by the min-max normalisation and set to +inf.
    """
    if not unit:
        q = torch.nn.functional.normalize(q, dim=-1, eps=1e-12)
        docs = torch.nn.functional.normalize(docs, dim=-1, eps=1e-12)
    b, length, dim = docs.shape
    sim = torch.matmul(docs.reshape(b * length, dim), q.T)  # (B*L, N)
    d = sim.T.reshape(q.shape[0], b, length).neg_().add_(1.0).clamp_(0.0, 2.0)
    if metric == "cosine_exp":
        d = d.expm1_()
    elif metric != "cosine":
        raise DeepwideError(f"QbE distance must be cosine or cosine_exp, got {metric!r}")
    pad = None
    if doc_lens is not None:
        pad = (torch.arange(length, device=d.device)[None, :] >= doc_lens.to(d.device)[:, None])[None]
    if minmax:
        if pad is not None:
            lo = d.masked_fill(pad, math.inf).amin(-1, keepdim=True)
            hi = d.masked_fill(pad, -math.inf).amax(-1, keepdim=True)
        else:
            lo, hi = d.amin(-1, keepdim=True), d.amax(-1, keepdim=True)
        d = d.sub_(lo).div_((hi - lo).clamp_(min=1e-9))
    if pad is not None:
        d = d.masked_fill_(pad, math.inf)
    return d


def _edge_padded(feats: Sequence[Tensor]) -> Tensor:
    """(B, L, D) with each sequence padded by repeating its first frame: padding then never
    changes a row's min or max distance, so the min-max needs no mask."""
    length = max(f.shape[0] for f in feats)
    return torch.stack([torch.cat([f, f[:1].expand(length - f.shape[0], -1)]) for f in feats])


@dataclass
class DTWConfig:
    normalize: str = "global"  # global | utterance | none
    metric: str = "cosine_exp"  # cosine_exp | cosine
    minmax: bool = True
    min_query_frames: int = MIN_QUERY_FRAMES
    znorm: bool = True
    bucket_elements: int | None = None  # query x doc frames per block; None: 4M on CPU, 64M on CUDA

    def __post_init__(self):
        if self.normalize not in ("global", "utterance", "none"):
            raise DeepwideError(f"QbE normalize must be global, utterance or none, got {self.normalize!r}")
        if self.metric not in ("cosine_exp", "cosine"):
            raise DeepwideError(f"QbE distance must be cosine or cosine_exp, got {self.metric!r}")


def _standardise(x: Tensor, how: str, mean: Tensor | None, std: Tensor | None) -> Tensor:
    if how == "global":
        return (x - mean) / std
    if how == "utterance":
        return (x - x.mean(0)) / x.std(0, unbiased=x.shape[0] > 1).clamp(min=1e-9) if x.shape[0] > 1 else x - x.mean(0)
    return x


def dtw_score_matrix(queries: Sequence[Tensor], docs: Sequence[Tensor], cfg: DTWConfig | None = None,
                     device: str | torch.device = "cpu", mean: Tensor | None = None, std: Tensor | None = None,
                     progress: bool = False) -> np.ndarray:
    """(n_queries, n_docs) detection scores: -DTW cost, z-normalised per query.

    ``queries`` and ``docs`` are (frames, dim) features of one layer. With
    ``cfg.normalize == "global"`` the statistics are ``mean``/``std`` when given, else
    computed over all query and document frames.
    """
    from tqdm import tqdm

    cfg = cfg or DTWConfig()
    device = torch.device(device)
    if cfg.normalize == "global" and (mean is None or std is None):
        std, mean = torch.std_mean(torch.cat([*queries, *docs]).float(), dim=0)
        std = std.clamp(min=1e-9)
    if mean is not None:
        mean, std = mean.to(device), std.to(device)
    dq = [_standardise(q.to(device).float(), cfg.normalize, mean, std) for q in queries]
    dd = [_standardise(d.to(device).float(), cfg.normalize, mean, std) for d in docs]
    budget = cfg.bucket_elements or (1 << 26 if device.type == "cuda" else 1 << 22)
    order = sorted(range(len(dd)), key=lambda i: dd[i].shape[0])
    scores = np.zeros((len(dq), len(dd)), dtype=np.float64)
    max_q = max((q.shape[0] for q in dq), default=1)
    buckets, cur = [], []
    for i in order:  # docs sorted by length: a bucket holds B docs of length <= L with N*B*L bounded
        length = dd[i].shape[0]
        if cur and max_q * (len(cur) + 1) * length > budget:
            buckets.append(cur)
            cur = []
        cur.append(i)
    if cur:
        buckets.append(cur)
    padded = []
    for idx in buckets:  # unit-length frames, edge-padded, with the padding mask, made once
        lens = torch.tensor([dd[i].shape[0] for i in idx], device=device)
        block = torch.nn.functional.normalize(_edge_padded([dd[i] for i in idx]), dim=-1, eps=1e-12)
        pad = (torch.arange(block.shape[1], device=device)[None, :] >= lens[:, None])[None]
        padded.append((idx, pad, block))
    for qi, q in enumerate(tqdm(dq, desc="DTW", mininterval=10, disable=not progress)):
        if q.shape[0] < cfg.min_query_frames:
            continue  # too short to match: score 0 for every document (as s3prl)
        qn = torch.nn.functional.normalize(q, dim=-1, eps=1e-12)
        for idx, pad, block in padded:
            dist = local_distance(qn, block, cfg.metric, cfg.minmax, unit=True)
            cost, _ = subsequence_dtw(dist.masked_fill_(pad, math.inf))
            scores[qi, idx] = -cost.double().cpu().numpy()
    if cfg.znorm:
        mu = scores.mean(axis=1, keepdims=True)
        sd = np.clip(scores.std(axis=1, keepdims=True), 1e-9, None)
        scores = (scores - mu) / sd
    return scores


