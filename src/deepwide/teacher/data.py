"""Utterances, pseudo-labels and batches for tiny-HuBERT pretraining.

Batches follow HuBERT: utterances of similar length are grouped up to an audio budget and
every member is cropped to the shortest one (no padding), at a random offset that is a
multiple of the front end's stride, so frame ``i`` of the crop is frame ``offset + i`` of
the whole utterance and its label is known. The batch plan of an epoch and the crop
offsets of a step are pure functions of (seed, iteration, epoch/step): a resumed run sees
exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from deepwide.audio import SAMPLE_RATE, read_audio
from deepwide.errors import DeepwideError
from deepwide.models.arch import hop
from deepwide.teacher.features import conv_num_frames
from deepwide.utils.io import atomic_path
from deepwide.utils.manifest import read_manifest as read_manifest_table
from deepwide.utils.skips import skip_record
from deepwide.utils.train_loop import pack

log = logging.getLogger(__name__)


@dataclass
class Utterances:
    """Parallel arrays describing the utterances of one split."""

    ids: list[str]
    paths: list[str]
    num_samples: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, idx) -> "Utterances":
        idx = list(idx)
        return Utterances([self.ids[i] for i in idx], [self.paths[i] for i in idx], self.num_samples[idx])

    @property
    def seconds(self) -> float:
        return float(self.num_samples.sum()) / SAMPLE_RATE


def read_manifest(path: str | Path, min_seconds: float = 0.0, skipped: list | None = None) -> Utterances:
    """Read a LibriSpeech-layout manifest (id, path, num_samples[, sample_rate]).

    Utterances shorter than ``min_seconds`` (teacher.pretrain.min_seconds) are left out
    with a WARNING naming the count and threshold; the count is appended to ``skipped``
    (for info.json) as ``{manifest, reason, threshold_s, skipped, of, skipped_seconds}``.
    """
    df = read_manifest_table(path, need="the teacher")
    df = df.sort_values("id", kind="stable")
    keep = df["num_samples"] >= int(min_seconds * SAMPLE_RATE)
    record = skip_record(path, "shorter than teacher.pretrain.min_seconds", min_seconds, df["num_samples"][~keep], len(df))
    if skipped is not None:
        skipped.append(record)
    df = df[keep]
    if len(df) == 0:
        raise DeepwideError(f"manifest {path} has no utterance of at least {min_seconds} s")
    for p, uid in zip(df["path"], df["id"]):
        if not Path(p).is_file():
            raise DeepwideError(f"manifest {path}: audio file of utterance {uid} not found: {p}")
    return Utterances(
        ids=[str(i) for i in df["id"]],
        paths=[str(p) for p in df["path"]],
        num_samples=df["num_samples"].to_numpy(dtype=np.int64),
    )


def concat_utterances(parts: list[tuple[Path, Utterances]]) -> Utterances:
    """The utterances of several manifests (``(manifest, utterances)`` pairs) in the order
    given; an id in two of them is an error naming it and both manifests."""
    if len(parts) == 1:
        return parts[0][1]
    first: dict[str, Path] = {}
    for manifest, utts in parts:
        for uid in utts.ids:
            if uid in first:
                raise DeepwideError(f"utterance id {uid} is in two training manifests: {first[uid]} and {manifest} "
                                    "(teacher.pretrain.train_split lists overlapping splits?)")
            first[uid] = manifest
    return Utterances(
        ids=[i for _, u in parts for i in u.ids],
        paths=[p for _, u in parts for p in u.paths],
        num_samples=np.concatenate([u.num_samples for _, u in parts]),
    )


# ---------------------------------------------------------------- labels on disk


@dataclass
class Labels:
    """One int label per front-end frame of every utterance (concatenated + offsets)."""

    ids: list[str]
    values: np.ndarray  # int16, all utterances concatenated
    offsets: np.ndarray  # int64, len(ids) + 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    @classmethod
    def from_list(cls, ids: list[str], per_utt: list[np.ndarray]) -> "Labels":
        offsets = np.zeros(len(per_utt) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(x) for x in per_utt])
        values = np.concatenate(per_utt).astype(np.int16) if per_utt else np.zeros(0, np.int16)
        return cls(list(ids), values, offsets)

    def save(self, path: str | Path, meta: dict) -> None:
        import json

        buf = io.BytesIO()
        np.savez(buf, values=self.values, offsets=self.offsets, ids=np.array(self.ids), meta=np.array(json.dumps(meta)))
        with atomic_path(path) as tmp:
            tmp.write_bytes(buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> tuple["Labels", dict]:
        import json

        with np.load(path, allow_pickle=False) as z:
            labels = cls([str(i) for i in z["ids"]], z["values"], z["offsets"])
            meta = json.loads(str(z["meta"]))
        return labels, meta


# ---------------------------------------------------------------- batches


@dataclass
class Batch:
    wavs: np.ndarray  # (batch, samples) float32
    labels: np.ndarray  # (batch, frames) int64


class BatchPlan:
    """Length-bucketed batches of utterance indices, deterministic per epoch."""

    def __init__(self, num_samples: np.ndarray, batch_samples: int, crop_samples: int, seed: int, iteration: int):
        self.eff = np.minimum(num_samples, crop_samples)
        self.batch_samples = int(batch_samples)
        self.seed = seed
        self.iteration = iteration

    def epoch(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.iteration, epoch])
        order = rng.permutation(len(self.eff))
        bucket = 32 * max(1, self.batch_samples // max(1, int(self.eff.mean())))
        batches: list[list[int]] = []
        for start in range(0, len(order), bucket):
            chunk = sorted(order[start : start + bucket], key=lambda i: -self.eff[i])
            batches += pack(chunk, self.eff, self.batch_samples)  # cropped to the shortest, the last one added
        rng.shuffle(batches)
        return batches

    def stream(self, start_step: int) -> Iterator[tuple[int, list[int]]]:
        """Yield ``(step, indices)`` from ``start_step`` on (step counts from 0)."""
        step, epoch = 0, 0
        while True:
            plan = self.epoch(epoch)
            if step + len(plan) <= start_step:
                step += len(plan)
            else:
                for idx in plan:
                    if step >= start_step:
                        yield step, idx
                    step += 1
            epoch += 1


def crop_batch(
    utts: Utterances,
    labels: Labels,
    idx: list[int],
    crop_samples: int,
    conv,
    rng: np.random.Generator | None,
) -> Batch:
    """Read and crop utterances ``idx`` to their common length; random offsets if ``rng``."""
    h = hop(conv)
    length = int(min(min(utts.num_samples[i] for i in idx), crop_samples))
    frames = conv_num_frames(length, conv)
    wavs = np.zeros((len(idx), length), dtype=np.float32)
    labs = np.zeros((len(idx), frames), dtype=np.int64)
    for row, i in enumerate(idx):
        n = int(utts.num_samples[i])
        max_off = (n - length) // h
        off = int(rng.integers(0, max_off + 1)) if rng is not None and max_off > 0 else 0
        wav = read_audio(utts.paths[i], off * h, off * h + length, what="the teacher")
        if len(wav) < length:
            raise DeepwideError(
                f"audio {utts.paths[i]} (utterance {utts.ids[i]}) is shorter than its manifest's num_samples {n}"
            )
        lab = labels[i]
        if off + frames > len(lab):
            raise DeepwideError(f"labels of utterance {utts.ids[i]} do not cover its audio; delete the teacher work folder")
        wavs[row] = wav
        labs[row] = lab[off : off + frames]
    return Batch(wavs, labs)
