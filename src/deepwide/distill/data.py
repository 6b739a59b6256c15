"""Distillation data: frame geometry, length-bucketed batch plans, audio and target loading.

A *plan* fixes, for one epoch, which utterances form each batch and where each one is
cropped. It is a pure function of (seed, epoch, utterance lengths), so a resumed run
rebuilds exactly the batches an uninterrupted run would have seen and simply skips the
ones already consumed. Batches are bucketed by total (padded) seconds of audio, not by
utterance count: similar lengths are grouped and each batch holds at most
``batch_seconds`` of padded audio.

Crops are frame-aligned: a crop of F frames starting at frame f0 reads samples
``[f0 * hop, f0 * hop + (F - 1) * hop + receptive_field)``. With the conv front end's
valid (unpadded) convolutions, the crop's frames are exactly frames f0..f0+F-1 of the full
utterance, so cached teacher targets line up with the student's output frame by frame.

Crop policy (``distill.targets.crop``, see :func:`crop_utterances`): with ``fixed`` every
utterance longer than ``max_seconds`` is replaced, once and for all, by one frame-aligned
window (a pure function of the seed and the utterance id). Extraction runs the teacher on
that window, the loader reads that window every epoch (its plan has no slack left to
re-crop), and the online teacher sees it too: the targets never use context the student
does not see. ``full`` keeps whole utterances and random crops per epoch (cached targets
then come from whole utterances).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from deepwide.audio import SAMPLE_RATE, read_audio
from deepwide.distill.spec import CROP_POLICIES, crop_spec  # noqa: F401 (this module's API too)
from deepwide.errors import DeepwideError
from deepwide.models.arch import hop, num_frames, receptive_field  # noqa: F401 (this module's API too)
from deepwide.utils.train_loop import pack


def samples_for_frames(frames: int, conv: Sequence[Sequence[int]]) -> int:
    """Fewest samples that give exactly ``frames`` frames."""
    return (frames - 1) * hop(conv) + receptive_field(conv) if frames > 0 else 0


def bf16_to_float32(a: np.ndarray) -> np.ndarray:
    """bfloat16 stored as uint16 -> float32 (exact)."""
    return (a.astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits as uint16, round to nearest even (as torch does)."""
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(torch.bfloat16)
    return t.view(torch.int16).numpy().view(np.uint16)


def stored_to_tensor(a: np.ndarray, dtype: str) -> torch.Tensor:
    """A stored target array as a tensor in its storage precision (bf16 or fp16)."""
    a = np.array(a, copy=True)  # out of the read-only memmap
    if dtype == "bf16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


@dataclass
class Utterance:
    id: str
    path: str
    num_samples: int  # samples the student may read: the whole utterance, or its fixed crop window
    frames: int  # frames of those samples
    start: int = 0  # first sample of the window in the audio file (0: the whole utterance)


def max_crop_frames(max_seconds: float, conv) -> int:
    """Frames of a ``max_seconds`` crop (distill.train.max_seconds): the trainer's batches and
    the fixed crop windows use this one number."""
    return max(1, int(max_seconds * (SAMPLE_RATE / hop(conv))))


def crop_window(uid: str, frames: int, max_frames: int, seed: int) -> tuple[int, int]:
    """``(first frame, frames)`` of an utterance's fixed crop window: the whole utterance when
    it has at most ``max_frames`` frames, else ``max_frames`` frames starting at a frame drawn
    from (seed, utterance id) alone, so any process, any order, any manifest subset gives the
    same window. In samples it is ``[f0 * hop, f0 * hop + samples_for_frames(F))``: aligned to
    the frame stride and inside the utterance."""
    import hashlib

    frames, max_frames = int(frames), int(max_frames)
    if frames <= max_frames:
        return 0, max(frames, 0)
    h = hashlib.sha256(f"deepwide-crop\0{int(seed)}\0{uid}".encode()).digest()
    return int.from_bytes(h[:8], "big") % (frames - max_frames + 1), max_frames


def crop_utterances(utts: Sequence[Utterance], crop: dict | None, conv) -> list[Utterance]:
    """What the student (and the teacher) see of each utterance under a crop spec
    (:func:`crop_spec`): ``full`` returns the utterances unchanged; ``fixed`` returns each
    one's window (:func:`crop_window`) as an :class:`Utterance` with ``start`` and
    ``num_samples`` in samples. The one place windows are made: targets extraction, the
    cached loader (through the cache's index, checked against this) and the online teacher."""
    crop = crop or {"policy": "full"}
    if crop["policy"] == "full":
        return list(utts)
    m = max_crop_frames(crop["max_seconds"], conv)
    h = hop(conv)
    out = []
    for u in utts:
        if u.start:
            raise DeepwideError(f"utterance {u.id} is already a crop window (start {u.start})")
        f0, f = crop_window(u.id, u.frames, m, crop["seed"])
        # uncropped ones too lose the < hop samples past their last frame: extraction, loader and
        # online teacher then read (and normalize) exactly the same samples
        out.append(Utterance(u.id, u.path, samples_for_frames(f, conv), f, f0 * h))
    return out


def crop_stats(utts: Sequence[Utterance], windows: Sequence[Utterance], max_frames: int | None) -> dict:
    """For info.json: how many utterances the windows crop, the share of the audio and frames
    they keep, and the share of the whole utterances' frames past one ``max_frames`` crop (what
    whole-utterance targets compute from context a cropped student never sees; None without
    ``max_frames``)."""
    total_s = sum(u.num_samples for u in utts)
    total_f = sum(u.frames for u in utts)
    return {
        "cropped_utterances": sum(1 for u, w in zip(utts, windows) if w.frames < u.frames),
        "audio_kept_fraction": sum(w.num_samples for w in windows) / max(total_s, 1),
        "frames_kept_fraction": sum(w.frames for w in windows) / max(total_f, 1),
        "frames_beyond_one_crop_fraction": (sum(max(0, u.frames - max_frames) for u in utts) / max(total_f, 1)
                                            if max_frames else None),
    }


def manifest_utterances(df, conv) -> list[Utterance]:
    """The manifest's utterances (whole, frames under ``conv``)."""
    return [Utterance(str(u), str(p), int(n), num_frames(int(n), conv))
            for u, p, n in zip(df["id"], df["path"], df["num_samples"])]


@dataclass
class BatchItem:
    index: int  # into the utterance list
    start: int  # first frame of the crop
    frames: int  # frames in the crop


def epoch_plan(
    frames: Sequence[int],
    max_frames: int,
    batch_frames: int,
    seed: int,
    epoch: int,
) -> list[list[BatchItem]]:
    """Batches of one epoch: shuffled, bucketed by length, randomly cropped.

    ``frames`` are the utterances' frame counts; crops are at most ``max_frames``; a
    batch holds at most ``batch_frames`` padded frames (size x longest crop), and at least
    one utterance.
    """
    rng = np.random.default_rng([int(seed), int(epoch), 0x6B64])
    n = len(frames)
    crop = np.minimum(np.asarray(frames, dtype=np.int64), max_frames)
    # sort by crop length, ties broken randomly: similar lengths share a batch
    order = np.lexsort((rng.random(n), crop))
    batches = pack(order, crop, batch_frames)  # padded to the longest crop, the last one added
    perm = rng.permutation(len(batches))
    plan = []
    for b in perm:
        items = []
        for i in batches[b]:
            slack = int(frames[i]) - int(crop[i])
            start = int(rng.integers(0, slack + 1)) if slack > 0 else 0
            items.append(BatchItem(i, start, int(crop[i])))
        plan.append(items)
    return plan


def drop_short(utts: list[Utterance], min_seconds: float, conv, source) -> tuple[list[Utterance], dict]:
    """The utterances a student trains on: at least ``min_seconds`` (distill.train.min_seconds)
    and one frame of the conv front end. Returns them and the skip record for info.json
    (:func:`deepwide.utils.skips.skip_record`, which logs a WARNING with count and threshold)."""
    from deepwide.utils.skips import skip_record

    one_frame = receptive_field(conv)
    min_samples = max(int(round(min_seconds * SAMPLE_RATE)), one_frame)
    kept = [u for u in utts if u.num_samples >= min_samples and u.frames > 0]
    dropped = [u.num_samples for u in utts if not (u.num_samples >= min_samples and u.frames > 0)]
    reason = ("shorter than distill.train.min_seconds" if min_samples > one_frame
              else "shorter than one frame of the student's conv front end")
    return kept, skip_record(source, reason, min_samples / SAMPLE_RATE, dropped, len(utts))


def normalize_wav(wav: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance (HF Wav2Vec2FeatureExtractor's do_normalize)."""
    return (wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)


def manifest_digest(df) -> str:
    """Content hash of the utterance list (ids, paths, lengths) in order."""
    import hashlib

    h = hashlib.sha256()
    for uid, path, n in zip(df["id"], df["path"], df["num_samples"]):
        h.update(f"{uid}\t{path}\t{int(n)}\n".encode())
    return h.hexdigest()


class StepPlan:
    """Batch ``g`` of the whole run (all epochs): epoch ``g // per_epoch``, position
    ``g % per_epoch``. Every epoch has the same number of batches (the batches depend only
    on the multiset of crop lengths), so one DataLoader serves the whole run and its
    workers are started once. Epoch plans are built lazily (and cached) in each process."""

    def __init__(self, frames, max_frames, batch_frames, seed):
        self.args = (list(frames), max_frames, batch_frames, seed)
        self._cache: dict[int, list] = {}
        self.per_epoch = len(self.epoch(0))

    def epoch(self, e: int) -> list[list[BatchItem]]:
        if e not in self._cache:
            frames, max_frames, batch_frames, seed = self.args
            if len(self._cache) > 2:
                self._cache.clear()
            self._cache[e] = epoch_plan(frames, max_frames, batch_frames, seed, e)
        return self._cache[e]

    def position(self, g: int) -> tuple[int, int]:
        return divmod(int(g), self.per_epoch)

    def __getitem__(self, g: int) -> list[BatchItem]:
        e, i = self.position(g)
        return self.epoch(e)[i]

    def __len__(self):  # unbounded; the sampler decides how many batches are drawn
        return 2**62


class BatchLoader(torch.utils.data.Dataset):
    """Batch ``i`` of a plan (a list of batches or a :class:`StepPlan`) as tensors; used
    through a DataLoader (batch_size=None).

    Reads audio crops unless ``need_audio`` is False (frozen, cached front end: the
    student never sees the waveform), and cached targets / front-end features when a
    :class:`~deepwide.distill.targets.TargetCache` is given.
    """

    def __init__(self, utts: list[Utterance], plan, conv, cache=None, layers=None, need_audio=True, use_frontend=False,
                 normalize=False):
        self.normalize = normalize
        self.utts = utts
        self.plan = plan
        self.conv = conv
        self.cache = cache
        self.layers = list(layers or [])
        self.need_audio = need_audio
        self.use_frontend = use_frontend

    def __len__(self):
        return len(self.plan)

    def __getitem__(self, i: int) -> dict:
        items = self.plan[i]
        h = hop(self.conv)
        out: dict = {"ids": [self.utts[it.index].id for it in items], "batch": i}
        nf = torch.tensor([it.frames for it in items], dtype=torch.long)
        out["frame_lengths"] = nf
        fmax = int(nf.max())
        if self.need_audio:
            ns = [samples_for_frames(it.frames, self.conv) for it in items]
            wavs = torch.zeros(len(items), samples_for_frames(fmax, self.conv))
            for r, (it, n) in enumerate(zip(items, ns)):
                u = self.utts[it.index]
                s0 = u.start + it.start * h  # a fixed crop window starts at u.start
                wav = read_audio(u.path, s0, s0 + n, what="distillation")
                if len(wav) < n:
                    raise DeepwideError(
                        f"{u.path}: {len(wav) + s0} samples on disk, manifest says at least {u.start + u.num_samples}"
                    )
                wavs[r, :n] = torch.from_numpy(normalize_wav(wav) if self.normalize else wav)
            out["wavs"] = wavs
            out["lengths"] = torch.tensor(ns, dtype=torch.long)
            out["audio_samples"] = int(sum(ns))
        else:
            out["audio_samples"] = int(sum(samples_for_frames(it.frames, self.conv) for it in items))
        if self.cache is not None:
            tgt = None
            fe = None
            for r, it in enumerate(items):
                uid = self.utts[it.index].id
                t = self.cache.targets(uid, it.start, it.frames, self.layers)
                if tgt is None:
                    tgt = torch.zeros((len(items), fmax) + t.shape[1:], dtype=t.dtype)
                tgt[r, : it.frames] = t
                if self.use_frontend:
                    f = self.cache.frontend(uid, it.start, it.frames)
                    if fe is None:
                        fe = torch.zeros((len(items), fmax, f.shape[-1]), dtype=f.dtype)
                    fe[r, : it.frames] = f
            out["targets"] = tgt  # (B, F, n_layers, D) in storage precision
            if fe is not None:
                out["features"] = fe  # (B, F, C)
        return out
