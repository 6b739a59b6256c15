"""Query-by-Example spoken term detection by DTW, as SUPERB runs it (QUESST 2014).

No training: one hidden layer of a frozen upstream represents every query and document;
each (query, document) pair gets a score from a subsequence DTW (the query may start and
end anywhere in the document) and the scores are judged by MTWV, the maximum over
detection thresholds of the term-weighted value.

SUPERB's recipe (s3prl ``quesst14_dtw``), followed here with our own code:

- audio: mono, 16 kHz, gain -3 dB (s3prl's sox effects);
- features: one layer; standardised with the mean/std of all query and document frames
  of that layer (``normalize="global"``, s3prl's ``feature_normalization``) or per
  utterance (``"utterance"``) or not at all (``"none"``);
- distance: cosine distance, mapped by ``exp(d) - 1`` (``cosine_exp``, s3prl's default)
  or left as is (``cosine``); then min-max normalised along each query frame's row
  (per document);
- DTW: asymmetric steps (the query index advances by one per step, the document index by
  0, 1 or 2), open begin and open end; cost = best path cost / query frames; score =
  -cost; queries shorter than 5 frames score 0 everywhere; each query's scores are
  z-normalised over the documents;
- MTWV over the official ground truth (``scoring/groundtruth_quesst14_{dev,eval}``: ecf,
  tlist, rttm): the term-averaged value ``1 - P_miss - beta * P_FA`` maximised over
  thresholds, averaging over every term of the tlist that occurs in the rttm (trials
  that were not scored, e.g. non-English queries, count as never detected, as the
  official scorer does with its default score). ``beta`` defaults to 999.9 (NIST STD
  2006: C/V = 0.1, P_target = 1e-4); the MediaEval QUESST scorer's own cost setting
  was not verifiable offline, so the NIST ``stdlist.xml`` files written beside the
  result can be re-scored with the dataset's ``scoring/score-TWV-Cnxe.sh DIR
  groundtruth_quesst14_eval -10`` (Java) for numbers comparable with published ones.
- layer choice: a given layer, or the layer with the best dev MTWV (``select_on_dev``);
  the test score is the eval-query MTWV at that layer.

The DTW runs vectorised over documents and document frames (one tensor step per query
frame, documents bucketed by length), on CUDA when available; tests check it against
dtw-python (the library s3prl's recipe calls) with SUPERB's settings.

CLI: :func:`register_qbe` adds ``qbe`` to a stage's subparsers (``python -m deepwide
superb qbe --upstream CKPT --root QUESST_ROOT --layer L|--select-on-dev --out
.../result.json``); ``python -m deepwide superb qbe ...`` runs it.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from deepwide.errors import DeepwideError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
GAIN_DB = -3.0
MIN_QUERY_FRAMES = 5
from deepwide.superb.qbe_cli import NIST_STD_BETA, register_qbe  # noqa: E402,F401  (torch-free CLI)
DECISION_THRESHOLD = 2.0  # s3prl's YES/NO cut on z-normalised scores (the stdlist decision)

# an extractor maps one 16 kHz waveform (samples,) to per-layer features [(frames, dim)]
Extractor = Callable[[Tensor], Sequence[Tensor]]


# ------------------------------------------------------------------ audio and features
def load_audio(path: str | Path, gain_db: float = GAIN_DB) -> Tensor:
    """Mono float32 waveform at 16 kHz (resampled if needed) with ``gain_db`` applied."""
    import soundfile as sf

    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:
        raise DeepwideError(f"cannot read audio {path}: {err}") from err
    wav = torch.from_numpy(x.mean(axis=1))
    if sr != SAMPLE_RATE:
        import torchaudio.functional as AF

        wav = AF.resample(wav, sr, SAMPLE_RATE)
    if gain_db:
        wav = wav * (10.0 ** (gain_db / 20.0))
    return wav.contiguous()


class CheckpointExtractor:
    """All L+1 hidden states of a deepwide checkpoint (teacher or student), frozen.

    Runs on ``device`` (bf16 autocast on CUDA); waveforms are normalised first when the
    checkpoint's meta says ``normalize`` (HuBERT Large style teachers).
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu"):
        from deepwide.models.checkpoint import load_checkpoint

        model, arch, meta = load_checkpoint(path)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.arch = arch
        self.normalize = bool(meta.get("normalize", False))
        span = 1
        for _, k, s in reversed(arch.conv):
            span = (span - 1) * s + k
        self.min_samples = span
        self.num_layers = arch.depth + 1

    @torch.no_grad()
    def __call__(self, wav: Tensor) -> list[Tensor]:
        from deepwide.models.arch import hidden_states, normalize_waveforms

        wav = wav.to(self.device, torch.float32)
        if wav.numel() < self.min_samples:
            wav = torch.nn.functional.pad(wav, (0, self.min_samples - wav.numel()))
        x = wav[None]
        if self.normalize:
            x = normalize_waveforms(x)
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                states, _ = hidden_states(self.model, x)
        else:
            states, _ = hidden_states(self.model, x)
        return [h[0].float() for h in states]


class ModuleExtractor:
    """An s3prl-style upstream module: ``forward(wavs (B, T), wavs_len (B,)) -> (states, lens)``.

    ``states`` is a list of (B, frames, dim) tensors (one per layer); ``lens`` the valid
    frames (one tensor for all layers, or a list with one per layer).
    """

    def __init__(self, module: torch.nn.Module, device: str | torch.device | None = None):
        self.module = module.eval()
        self.device = torch.device(device) if device is not None else next(
            (p.device for p in module.parameters()), torch.device("cpu"))

    @torch.no_grad()
    def __call__(self, wav: Tensor) -> list[Tensor]:
        wav = wav.to(self.device, torch.float32)
        out = self.module(wav[None], torch.tensor([wav.numel()], device=self.device))
        states, lens = out if isinstance(out, tuple) else (out, None)
        feats = []
        for k, h in enumerate(states):
            n = h.shape[1]
            if lens is not None:
                lk = lens[k] if isinstance(lens, (list, tuple)) else lens
                n = int(lk[0])
            feats.append(h[0, :n].float())
        return feats


def make_extractor(upstream: str | Path | Extractor | torch.nn.Module, device: str = "cpu") -> Extractor:
    """An extractor for a checkpoint path, an s3prl-style module, or a callable."""
    if isinstance(upstream, torch.nn.Module):
        return ModuleExtractor(upstream, device)
    if callable(upstream):
        return upstream
    return CheckpointExtractor(upstream, device)


class FeatureStore:
    """Per-layer features of many utterances, kept as one float16 array per layer.

    ``add`` takes the per-layer features of one utterance; ``get(layer, i)`` returns the
    (frames, dim) float32 tensor of utterance ``i``. With ``directory`` each layer is
    streamed to a raw float16 file there and memory-mapped (full-scale QUESST: about
    1 GB per 768-d layer), so the features of all layers need not fit in memory.
    """

    def __init__(self, directory: str | Path | None = None):
        self.directory = Path(directory) if directory is not None else None
        self._chunks: list[list[np.ndarray]] = []
        self._files: list = []
        self._dims: list[int] = []
        self.lengths: list[int] = []
        self.arrays: list[np.ndarray] = []
        self.offsets = np.zeros(1, dtype=np.int64)

    def add(self, feats: Sequence[Tensor]) -> None:
        if not self._dims:
            self._dims = [int(f.shape[1]) for f in feats]
            self._chunks = [[] for _ in feats]
            if self.directory is not None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._files = [open(self.directory / f"layer{k}.f16", "wb") for k in range(len(feats))]
        if len(feats) != len(self._dims):
            raise DeepwideError(f"upstream returned {len(feats)} layers, earlier {len(self._dims)}")
        n = int(feats[0].shape[0])
        for k, f in enumerate(feats):
            if tuple(f.shape) != (n, self._dims[k]):
                raise DeepwideError(f"layer {k} features have shape {tuple(f.shape)}, expected ({n}, {self._dims[k]})")
            a = f.detach().to("cpu", torch.float16).numpy()
            if self._files:
                self._files[k].write(np.ascontiguousarray(a).tobytes())
            else:
                self._chunks[k].append(a)
        self.lengths.append(n)

    def finish(self) -> "FeatureStore":
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        total = int(self.offsets[-1])
        for k, dim in enumerate(self._dims):
            if self._files:
                self._files[k].close()
                arr = np.memmap(self.directory / f"layer{k}.f16", dtype=np.float16, mode="r", shape=(total, dim))
            else:
                arr = np.concatenate(self._chunks[k], axis=0)
            self.arrays.append(arr)
        self._chunks, self._files = [], []
        return self

    @property
    def num_layers(self) -> int:
        return len(self.arrays)

    def get(self, layer: int, i: int) -> Tensor:
        a = self.arrays[layer][self.offsets[i]:self.offsets[i + 1]]
        return torch.from_numpy(np.asarray(a, dtype=np.float32))

    def layer_stats(self, layer: int, index: Sequence[int], chunk: int = 1 << 16) -> tuple[Tensor, Tensor]:
        """Mean and std (clamped at 1e-9) over all frames of the utterances ``index``."""
        arr = self.arrays[layer]
        total = None
        sq = None
        n = 0
        for i in index:
            a, b = int(self.offsets[i]), int(self.offsets[i + 1])
            for s in range(a, b, chunk):
                x = np.asarray(arr[s:min(b, s + chunk)], dtype=np.float64)
                total = x.sum(0) if total is None else total + x.sum(0)
                sq = (x * x).sum(0) if sq is None else sq + (x * x).sum(0)
                n += x.shape[0]
        mean = total / max(n, 1)
        var = np.maximum(sq / max(n, 1) - mean * mean, 0.0) * n / max(n - 1, 1)
        return torch.from_numpy(mean).float(), torch.from_numpy(np.sqrt(var)).float().clamp(min=1e-9)


def extract_features(extractor: Extractor, paths: Sequence[str | Path], directory: str | Path | None = None,
                     desc: str = "QbE features") -> FeatureStore:
    """Run ``extractor`` over every file (16 kHz, -3 dB) and keep all layers."""
    from tqdm import tqdm

    store = FeatureStore(directory)
    for p in tqdm(paths, desc=desc, mininterval=10, disable=len(paths) < 200):
        feats = extractor(load_audio(p))
        if len(feats) == 0 or feats[0].ndim != 2:
            raise DeepwideError(f"upstream features for {p} are not a list of (frames, dim) tensors")
        store.add(feats)
    return store.finish()


# ------------------------------------------------------------------ DTW
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


# ------------------------------------------------------------------ MTWV
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


# ------------------------------------------------------------------ QUESST evaluation
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


# ------------------------------------------------------------------ CLI
def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeepwideError(f"--device {name}: CUDA is not available here")
    return name


def _resolve_upstream(spec: str, device: str):
    """A deepwide checkpoint file, or (``fbank``, an HF directory) via the superb adapter."""
    p = Path(spec)
    if p.is_file():
        return CheckpointExtractor(p, device)
    try:
        from deepwide.superb.upstream import build_upstream, upstream_spec
    except ImportError as err:
        raise DeepwideError(f"QbE upstream {spec!r}: not a checkpoint file, and the superb upstream adapter is not available") from err
    if spec != "fbank" and not p.exists():
        raise DeepwideError(f"QbE upstream not found: {spec}")
    module = build_upstream(**upstream_spec(spec)).to(device)
    return ModuleExtractor(module, device)


def _cmd_qbe(args) -> int:
    from deepwide.utils.io import atomic_write_text

    out = Path(args.out)
    if out.name != "result.json":
        raise DeepwideError(f"--out must name a result.json file, got {out}")
    if args.layer is None and not args.select_on_dev:
        raise DeepwideError("superb qbe: give --layer L or --select-on-dev")
    if args.layer is not None and args.select_on_dev:
        raise DeepwideError("superb qbe: --layer and --select-on-dev exclude each other")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _device(args.device)
    cfg = DTWConfig(normalize=args.normalize, metric=args.distance)
    t0 = time.time()
    languages = None if args.languages == ["all"] else args.languages
    data = load_quesst14(args.root, languages=languages, jobs=args.jobs)
    extractor = _resolve_upstream(args.upstream, device)
    work = out.parent / ".qbe_work"
    res = run_qbe(extractor, data, layer=args.layer, select_on_dev=args.select_on_dev, cfg=cfg, beta=args.beta,
                  device=device, feature_dir=work / "features" if args.feature_cache else None, stdlist_dir=work)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    rec = result_record(res, args.upstream_name, args.lr, time.time() - t0, name, cfg, args.beta)
    for f in ("dev.stdlist.xml", "eval.stdlist.xml"):
        (work / f).replace(out.parent / f)
    shutil.rmtree(work, ignore_errors=True)
    from deepwide.utils.usage import usage

    rec["usage"] = usage()  # peak memory and wall time of this job (plan resources)
    atomic_write_text(out, json.dumps(rec, indent=1) + "\n")
    log.info("superb qbe %s: layer %d, dev MTWV %.4f, test MTWV %.4f, %.1f s on %s", args.upstream_name, res["layer"],
             res["dev_score"], res["test_score"], rec["runtime_s"], name)
    return 0
