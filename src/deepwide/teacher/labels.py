"""k-means pseudo-labels (HuBERT's discovery step).

Features of every utterance (MFCC + deltas, or a teacher layer) are standardised with the
mean and std of a random frame sample, a MiniBatchKMeans is fitted on that sample, and
every frame of every split gets the index of its nearest centroid.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from deepwide.audio import read_audio
from deepwide.errors import DeepwideError
from deepwide.teacher.data import Labels, Utterances

log = logging.getLogger(__name__)

Featurizer = Callable[[np.ndarray], np.ndarray]


def _features(utts: Utterances, featurize: Featurizer, desc: str) -> Iterator:
    for i in tqdm(range(len(utts)), desc=desc, unit="utt", mininterval=5.0):
        yield featurize(read_audio(utts.paths[i], what="the teacher"))


def fit_kmeans_labels(
    splits: Sequence[Utterances],
    featurize: Featurizer,
    clusters: int,
    max_frames: int,
    batch_size: int,
    n_init: int,
    seed: int,
    name: str,
    cache_bytes: int = 1 << 30,
    threads: int | None = None,
) -> tuple[list[Labels], dict]:
    """Fit k-means on frames of ``splits[0]`` and label every split; returns stats too.

    Deterministic: the frame sample comes from ``seed``, k-means++ from ``random_state``,
    and scikit-learn's OpenMP/BLAS pools run ``threads`` threads (the teacher's), not as
    many as the machine has (measured invariant to 1 vs 2 threads; fixed all the same).
    """
    from threadpoolctl import threadpool_limits

    train = splits[0]
    rng = np.random.default_rng([seed, 17])
    # pass 1: features of the training split, a random subset of frames kept for fitting
    total_frames = int(sum(n // 320 for n in train.num_samples))
    keep_p = min(1.0, max_frames / max(1, total_frames))
    sample, cache, cached_bytes = [], [], 0
    for feats in _features(train, featurize, f"{name}: features"):
        if cache is not None:
            cached_bytes += feats.nbytes
            if cached_bytes <= cache_bytes:
                cache.append(feats)
            else:
                cache = None  # too big to keep: recompute in pass 2
        pick = rng.random(len(feats)) < keep_p
        sample.append(feats[pick])
    x = np.concatenate(sample).astype(np.float64)
    if len(x) < clusters:
        raise DeepwideError(f"{name}: only {len(x)} frames to fit {clusters} k-means clusters; use fewer clusters or more audio")
    mean = x.mean(axis=0)
    std = x.std(axis=0) + 1e-5
    x = (x - mean) / std
    log.info("%s: fitting MiniBatchKMeans(k=%d) on %d frames of dim %d", name, clusters, len(x), x.shape[1])
    with threadpool_limits(limits=threads):
        return _fit_and_label(splits, featurize, clusters, batch_size, n_init, seed, name, x, mean, std, cache)


def _fit_and_label(splits, featurize, clusters, batch_size, n_init, seed, name, x, mean, std, cache):
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(
        n_clusters=clusters,
        batch_size=batch_size,
        n_init=n_init,
        max_iter=100,
        max_no_improvement=20,
        random_state=seed,
        compute_labels=False,
    )
    km.fit(x)
    inertia = float(-km.score(x) / len(x))

    def assign(feats: np.ndarray) -> np.ndarray:
        return km.predict((feats.astype(np.float64) - mean) / std).astype(np.int16)

    out = []
    for k, utts in enumerate(splits):
        if k == 0 and cache is not None:
            per_utt = [assign(f) for f in cache]
        else:
            per_utt = [assign(f) for f in _features(utts, featurize, f"{name}: labels")]
        out.append(Labels.from_list(utts.ids, per_utt))
    counts = np.bincount(out[0].values.astype(np.int64), minlength=clusters)
    stats = {
        "clusters": clusters,
        "fit_frames": int(len(x)),
        "inertia_per_frame": inertia,
        "used_clusters": int((counts > 0).sum()),
        "train_majority_rate": float(counts.max() / max(1, counts.sum())),
    }
    log.info("%s: %s", name, stats)
    return out, stats

