"""Teacher targets cache: run the frozen teacher once, store layers as memory-mapped shards.

Layout of a finished cache folder::

    cache.json        content key, teacher sha256, layers, dtype, crop policy, sizes, bytes per audio second
    index.parquet     id, path, start, num_samples, utterance_samples, frames, shard, offset
    shard_00000.layers.npy    (frames, n_layers, width)  uint16 (bf16 bits) or float16
    shard_00000.frontend.npy  (frames, conv_channels)    optional: conv front-end output

Storage dtype:
- ``bf16`` (default): the float32 teacher output rounded to bfloat16 and stored as its
  uint16 bit pattern (numpy has no bfloat16). Same exponent range as float32, so nothing can
  overflow; 8 significant bits, about 0.4 % relative error, well under the L1/cosine
  loss's sensitivity. This is what an online bf16 teacher produces anyway.
- ``fp16``: 11 significant bits but a maximum of 65504; every value is checked and an
  overflow stops extraction naming the utterance and layer (HuBERT's layer outputs are
  post-LayerNorm and small, but a foreign teacher may not be).

Crop policy (:func:`deepwide.distill.data.crop_utterances`): with ``fixed`` the teacher runs
on each utterance's fixed crop window, samples ``[start, start + num_samples)`` of the file,
and the shards hold that window's frames only (``utterance_samples`` is the whole file);
with ``full`` on the whole utterance (``start`` 0). The student reads the same windows.

The cache is keyed by a hash of the teacher's weights, the layer list, the front-end flag,
the dtype, the crop policy and the manifest content: :meth:`TargetCache.check` refuses a
cache built from another teacher, corpus or crop, so a changed teacher never feeds stale targets.

Extraction writes shards into a work folder (outside the declared output); each shard is
complete once its ``.json`` exists. An interrupted run keeps completed shards and resumes
at the first missing one. The finished shards are moved into the output folder last.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from deepwide.audio import SAMPLE_RATE, read_audio
from deepwide.distill import data
from deepwide.errors import DeepwideError
from deepwide.models.checkpoint import load_checkpoint
from deepwide.utils.device import resolve_device
from deepwide.utils.io import (atomic_path, atomic_write_text, canonical_json, file_checksum, sha256_file,
                               verify_checksums, write_parquet)
from deepwide.utils.manifest import read_manifests
from deepwide.utils.skips import skip_record
from deepwide.utils.usage import usage

log = logging.getLogger(__name__)

FORMAT = "deepwide-targets/2"
# /1 caches (no crop policy, whole utterances) are still read, as crop policy full
READ_FORMATS = ("deepwide-targets/1", FORMAT)
FP16_MAX = 65504.0
DTYPES = ("bf16", "fp16")


def content_key(teacher_sha: str, layers: Sequence[int], frontend: bool, dtype: str, manifest_sha: str,
                crop: dict | None = None) -> str:
    import hashlib

    spec = {"teacher": teacher_sha, "layers": sorted(int(x) for x in layers), "frontend": bool(frontend),
            "dtype": dtype, "manifest": manifest_sha, "format": FORMAT, "crop": crop or {"policy": "full"}}
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


@torch.no_grad()
def teacher_forward(teacher, wavs, lengths, layers: Sequence[int], device: torch.device, features=None):
    """Teacher layers (list of (B, F, D) float32) and front-end output (B, F, C) or None.

    bf16 autocast on CUDA, float32 on CPU. Pass ``features`` to reuse a front-end pass.
    """
    from deepwide.models.arch import hidden_states

    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        if features is None:
            features, flen = teacher.feature_extractor(wavs, lengths)
        else:
            flen = lengths
        # layers past the deepest requested one are not computed (0: the front end only)
        states, flen = hidden_states(teacher, None, flen, features=features, upto=max(layers, default=0))
    return [states[k].float() for k in layers], features.float(), flen


def _shards(utts: list[data.Utterance], shard_seconds: float) -> list[list[int]]:
    shards, cur, secs = [], [], 0.0
    for i, u in enumerate(utts):
        cur.append(i)
        secs += u.num_samples / SAMPLE_RATE
        if secs >= shard_seconds:
            shards.append(cur)
            cur, secs = [], 0.0
    if cur:
        shards.append(cur)
    return shards


def _encode(x: np.ndarray, dtype: str, what: str) -> np.ndarray:
    if not np.isfinite(x).all():
        raise DeepwideError(f"teacher output is not finite ({what}); check the teacher checkpoint")
    if dtype == "bf16":
        return data.float32_to_bf16(x)
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak > FP16_MAX:
        raise DeepwideError(
            f"fp16 overflow: {what} reaches |x| = {peak:.4g} > {FP16_MAX:.0f}; store targets as bf16 "
            "(distill.targets.dtype: bf16)"
        )
    return x.astype(np.float16)


def extract(
    teacher_ckpt: str | Path,
    manifests: Sequence[str | Path],
    layers: Sequence[int],
    out: str | Path,
    work: str | Path | None = None,
    frontend: bool = False,
    dtype: str = "bf16",
    shard_seconds: float = 600.0,
    device: str | None = None,
    stop_after_shards: int | None = None,
    crop: dict | None = None,
) -> dict:
    """Run the frozen teacher over the manifests and write the cache folder ``out``.

    ``crop`` (:func:`deepwide.distill.data.crop_spec`; None: ``full``) picks what the teacher
    sees of each utterance: the whole of it, or its fixed crop window.

    ``stop_after_shards`` (tests, debugging) stops after that many new shards, leaving the
    work folder to resume from. Returns the cache.json dict.
    """
    from tqdm import tqdm

    if dtype not in DTYPES:
        raise DeepwideError(f"targets dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    out = Path(out)
    work = Path(work) if work else out.parent / f".{out.name}.partial"
    dev = torch.device(resolve_device(device))
    teacher, tarch, tmeta = load_checkpoint(teacher_ckpt)
    normalize = bool(tmeta.get("normalize", False))
    layers = sorted({int(x) for x in layers})
    bad = [k for k in layers if not 0 <= k <= tarch.depth]
    if bad:
        raise DeepwideError(f"targets layers {bad}: the teacher has layers 0..{tarch.depth} (0 = input of layer 1)")
    if not layers and not frontend:
        raise DeepwideError("targets: give teacher layers, the front end (--frontend), or both")
    crop = crop or data.crop_spec("full")
    teacher_sha = sha256_file(teacher_ckpt)
    df = read_manifests(manifests)
    manifest_sha = data.manifest_digest(df)
    key = content_key(teacher_sha, layers, frontend, dtype, manifest_sha, crop)
    whole, utts, skipped, skip = _teacher_windows(df, tarch.conv, crop, manifests)
    _claim_work_folder(work, key)

    shards = _shards(utts, shard_seconds)
    teacher = teacher.to(dev).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    todo = [s for s in range(len(shards)) if not (work / f"shard_{s:05d}.json").is_file()]
    if len(todo) < len(shards):
        log.info("resuming: %d of %d shard(s) already done in %s", len(shards) - len(todo), len(shards), work)
    t0 = time.time()
    bar = tqdm(total=sum(len(shards[s]) for s in todo), desc="targets", unit="utt", mininterval=5)
    with contextlib.closing(bar):
        for done_new, s in enumerate(todo):
            if stop_after_shards is not None and done_new >= stop_after_shards:
                log.info("stopping after %d shard(s) as asked", done_new)
                return {}
            rows = _write_shard(work / f"shard_{s:05d}", s, [(utts[i], whole[i]) for i in shards[s]], teacher, tarch,
                                layers, frontend, dtype, normalize, dev, bar)
            atomic_write_text(work / f"shard_{s:05d}.json", json.dumps(rows))
    elapsed = time.time() - t0

    import pandas as pd

    index = pd.DataFrame([r for s in range(len(shards)) for r in json.loads((work / f"shard_{s:05d}.json").read_text())])
    nbytes = sum(
        (work / f"shard_{s:05d}.{part}.npy").stat().st_size
        for s in range(len(shards))
        for part in (("layers",) if layers else ()) + (("frontend",) if frontend else ())
    )
    new_seconds = sum(utts[i].num_samples for s in todo for i in shards[s]) / SAMPLE_RATE
    m = data.max_crop_frames(crop["max_seconds"], tarch.conv) if crop["policy"] == "fixed" else None
    crop_info = {**crop, **({"max_frames": m} if m else {}), **data.crop_stats(whole, utts, m)}
    info = _cache_info(key, teacher_ckpt, teacher_sha, tarch, manifests, manifest_sha, layers, frontend, normalize,
                       dtype, crop_info, index, skipped, skip, len(shards), nbytes, elapsed, new_seconds, dev)
    seconds = info["audio_seconds"]
    log.info(
        "targets: %d utterances, %.1f h audio, %d shard(s), %.1f MB, %.0f bytes per audio second (%s, layers %s%s), "
        "crop %s: %d cropped, %.1f %% of the audio kept",
        len(index), seconds / 3600, len(shards), nbytes / 1e6, info["bytes_per_audio_second"], dtype, layers,
        ", front end" if frontend else "", crop["policy"], crop_info["cropped_utterances"],
        100 * crop_info["audio_kept_fraction"],
    )
    _publish(out, work, len(shards), index, info)
    return info


def _cache_info(key, teacher_ckpt, teacher_sha, tarch, manifests, manifest_sha, layers, frontend, normalize, dtype,
                crop_info, index, skipped, skip, n_shards, nbytes, elapsed, new_seconds, dev) -> dict:
    """cache.json (without the checksums and usage, added when the shards are published)."""
    seconds = float(index["num_samples"].sum()) / SAMPLE_RATE
    return {
        "format": FORMAT,
        "key": key,
        "teacher": str(teacher_ckpt),
        "teacher_sha256": teacher_sha,
        "teacher_arch": tarch.to_dict(),
        "manifests": [str(m) for m in manifests],
        "manifest_sha256": manifest_sha,
        "layers": layers,
        "frontend": bool(frontend),
        "normalize": normalize,
        "dtype": dtype,
        "crop": crop_info,
        "width": tarch.width,
        "frontend_channels": tarch.conv[-1][0],
        "num_utterances": len(index),
        "skipped_short": [u.id for u in skipped],
        "skipped": [skip],
        "num_shards": n_shards,
        "audio_seconds": seconds,  # what the teacher ran on (the crop windows)
        "utterance_audio_seconds": float(index["utterance_samples"].sum()) / SAMPLE_RATE,
        "bytes": nbytes,
        "bytes_per_audio_second": nbytes / max(seconds, 1e-9),
        "extract_seconds_this_run": elapsed,
        "extract_audio_seconds_per_second": new_seconds / max(elapsed, 1e-9),
        "device": str(dev),
    }


def _teacher_windows(df, conv, crop: dict, manifests) -> tuple[list, list, list, dict]:
    """The whole utterances with at least one frame, the windows the teacher runs on (one per
    utterance), the utterances left out and their skip record."""
    whole, skipped = [], []
    for u in data.manifest_utterances(df, conv):
        (whole if u.frames > 0 else skipped).append(u)
    utts = data.crop_utterances(whole, crop, conv)  # what the teacher runs on, one window per utterance
    skip = skip_record(", ".join(map(str, manifests)), "shorter than one frame of the teacher's conv front end",
                       data.receptive_field(conv) / SAMPLE_RATE, [u.num_samples for u in skipped], len(df))
    if not utts:
        raise DeepwideError(f"manifests {', '.join(map(str, manifests))}: no utterance long enough for one frame")
    return whole, utts, skipped, skip


def _claim_work_folder(work: Path, key: str) -> None:
    """The work folder belongs to one content key; anything else in it is stale."""
    work.mkdir(parents=True, exist_ok=True)
    kfile = work / "key.txt"
    if kfile.is_file() and kfile.read_text().strip() != key:
        log.info("work folder %s holds another teacher/manifest/layers: starting over", work)
        shutil.rmtree(work)
        work.mkdir(parents=True)
    atomic_write_text(kfile, key + "\n")


def _write_shard(stem: Path, s: int, items: list, teacher, tarch, layers: list[int], frontend: bool, dtype: str,
                 normalize: bool, dev: torch.device, bar) -> list[dict]:
    """Run the teacher over ``items`` ((window, whole utterance) pairs); write the shard's
    ``.layers.npy`` and ``.frontend.npy``; return its index rows."""
    total = sum(u.frames for u, _ in items)
    npdt = np.uint16 if dtype == "bf16" else np.float16
    rows = []
    with contextlib.ExitStack() as stack_ctx:
        lay_mm = fe_mm = None
        if layers:
            tl = stack_ctx.enter_context(atomic_path(Path(f"{stem}.layers.npy")))
            lay_mm = np.lib.format.open_memmap(tl, mode="w+", dtype=npdt, shape=(total, len(layers), tarch.width))
        if frontend:
            tf = stack_ctx.enter_context(atomic_path(Path(f"{stem}.frontend.npy")))
            fe_mm = np.lib.format.open_memmap(tf, mode="w+", dtype=npdt, shape=(total, tarch.conv[-1][0]))
        off = 0
        for u, w in items:
            outs, fe = _window_forward(teacher, u, layers, normalize, dev)
            if lay_mm is not None:
                stack = torch.stack(outs, dim=2)[0].cpu().numpy()  # (F, n_layers, D)
                lay_mm[off : off + u.frames] = _encode(stack, dtype, f"utterance {u.id}, layers {layers}")
            if fe_mm is not None:
                fe_mm[off : off + u.frames] = _encode(fe[0].cpu().numpy(), dtype, f"utterance {u.id}, front end")
            rows.append({"id": u.id, "path": u.path, "start": u.start, "num_samples": u.num_samples,
                         "utterance_samples": w.num_samples, "frames": u.frames, "shard": s, "offset": off})
            off += u.frames
            bar.update(1)
        for mm in (lay_mm, fe_mm):
            if mm is not None:
                mm.flush()
        del lay_mm, fe_mm, mm  # closed before the files are renamed into place
    return rows


def _window_forward(teacher, u: data.Utterance, layers: list[int], normalize: bool, dev: torch.device):
    """The teacher's layers and front-end output on one utterance's window."""
    wav = read_audio(u.path, u.start, u.start + u.num_samples, what="the teacher")
    if normalize:
        wav = data.normalize_wav(wav)
    wav = torch.from_numpy(wav)[None].to(dev)
    if wav.shape[1] != u.num_samples:
        raise DeepwideError(f"{u.path}: {wav.shape[1] + u.start} samples on disk, manifest says at least "
                            f"{u.start + u.num_samples}")
    outs, fe, _ = teacher_forward(teacher, wav, None, layers, dev)
    if fe.shape[1] != u.frames:
        raise DeepwideError(f"{u.id}: teacher gave {fe.shape[1]} frames, expected {u.frames}")
    return outs, fe


def _publish(out: Path, work: Path, n_shards: int, index, info: dict) -> None:
    """Move the shards into the output folder, index and cache.json written last; cache.json
    records each shard's size and sha256, checked once per reading job (TargetCache)."""
    with atomic_path(out, is_dir=True) as tmp:
        checksums = {}
        for s in range(n_shards):
            for part in ("layers", "frontend"):
                src = work / f"shard_{s:05d}.{part}.npy"
                if src.is_file():
                    os.replace(src, tmp / src.name)
                    checksums[src.name] = file_checksum(tmp / src.name)
        write_parquet(index, tmp / "index.parquet")
        checksums["index.parquet"] = file_checksum(tmp / "index.parquet")
        info["checksums"] = checksums
        info["usage"] = usage()  # peak memory and wall time of this job (plan resources)
        atomic_write_text(tmp / "cache.json", json.dumps(info, indent=1))
    shutil.rmtree(work, ignore_errors=True)


class TargetCache:
    """Read side of a cache folder: memory-mapped shards, opened lazily (fork-safe)."""

    def __init__(self, folder: str | Path, verify: bool = True):
        import pandas as pd

        self.folder = Path(folder)
        meta = self.folder / "cache.json"
        if not meta.is_file():
            raise DeepwideError(f"{self.folder} is not a finished targets cache (no cache.json)")
        self.info = json.loads(meta.read_text())
        if self.info.get("format") not in READ_FORMATS:
            raise DeepwideError(f"{meta}: unknown format {self.info.get('format')!r}")
        if verify and self.info.get("checksums"):
            # a corrupt or truncated shard fails here, naming it; the cache folder (a Snakemake
            # output) is removed so that the next run re-extracts it and retrains its students
            verify_checksums(self.folder, self.info["checksums"], "teacher targets shard",
                             "`snakemake` (it re-extracts this cache and retrains the students that read it)",
                             remove=self.folder)
        self.index = pd.read_parquet(self.folder / "index.parquet")
        if "start" not in self.index.columns:  # a /1 cache: whole utterances
            self.index["start"] = 0
        self.crop = {k: v for k, v in (self.info.get("crop") or {"policy": "full"}).items()
                     if k in ("policy", "max_seconds", "seed")}
        self.row = {uid: i for i, uid in enumerate(self.index["id"])}
        self.layers = list(self.info["layers"])
        self.dtype = self.info["dtype"]
        self._shard = self.index["shard"].to_numpy()
        self._offset = self.index["offset"].to_numpy()
        self._mm: dict = {}

    def __getstate__(self):  # DataLoader workers open their own memory maps
        state = self.__dict__.copy()
        state["_mm"] = {}
        return state

    def check(self, teacher_sha: str, layers: Sequence[int], frontend: bool, manifest_sha: str | None = None,
              crop: dict | None = None) -> None:
        """Refuse a cache made from another teacher/corpus/crop policy or lacking needed layers."""
        where = self.folder / "cache.json"
        if crop is not None and self.crop != crop:
            raise DeepwideError(
                f"stale targets: {where} was extracted with crop {canonical_json(self.crop)}, the student trains on "
                f"crop {canonical_json(crop)} (distill.targets.crop, distill.train.max_seconds, seed); rerun "
                "`deepwide targets extract` with the same --crop, --crop-seconds and --crop-seed"
            )
        if self.info["teacher_sha256"] != teacher_sha:
            raise DeepwideError(
                f"stale targets: {where} was extracted from another teacher (sha256 {self.info['teacher_sha256'][:12]}..., "
                f"current {teacher_sha[:12]}...); rerun `deepwide targets extract`"
            )
        if manifest_sha is not None and self.info["manifest_sha256"] != manifest_sha:
            raise DeepwideError(f"stale targets: {where} was extracted from other manifests than {self.info['manifests']}")
        missing = sorted(set(int(x) for x in layers) - set(self.layers))
        if missing:
            raise DeepwideError(f"targets cache {self.folder} lacks teacher layer(s) {missing} (has {self.layers})")
        if frontend and not self.info["frontend"]:
            raise DeepwideError(f"targets cache {self.folder} has no front-end features (extract with --frontend)")

    def _open(self, shard: int, part: str):
        key = (shard, part)
        if key not in self._mm:
            path = self.folder / f"shard_{shard:05d}.{part}.npy"
            try:
                self._mm[key] = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as err:  # truncated or not a .npy file
                raise DeepwideError(f"corrupt teacher targets shard {path}: {err}; remove {self.folder} and rerun "
                                    "`snakemake` (it re-extracts this cache)") from err
        return self._mm[key]

    def targets(self, uid: str, start: int, frames: int, layers: Sequence[int]) -> torch.Tensor:
        """(frames, len(layers), width) in storage precision."""
        r = self.row[uid]
        mm = self._open(int(self._shard[r]), "layers")
        o = int(self._offset[r]) + start
        block = mm[o : o + frames]
        sel = [self.layers.index(int(k)) for k in layers]
        if sel != list(range(len(self.layers))):
            block = block[:, sel]
        return data.stored_to_tensor(block, self.dtype)

    def frontend(self, uid: str, start: int, frames: int) -> torch.Tensor:
        r = self.row[uid]
        mm = self._open(int(self._shard[r]), "frontend")
        o = int(self._offset[r]) + start
        return data.stored_to_tensor(mm[o : o + frames], self.dtype)

    def utterances(self) -> list[data.Utterance]:
        return [
            data.Utterance(str(u), str(p), int(n), int(f), int(s))
            for u, p, n, f, s in zip(self.index["id"], self.index["path"], self.index["num_samples"], self.index["frames"],
                                     self.index["start"])
        ]


class TargetCacheSet:
    """Several cache folders read as one: the pipeline extracts each teacher layer (and the
    front end) into a folder of its own, so a new student extracts only the layers no
    other student needed. Same interface as :class:`TargetCache`; every folder must hold
    the same utterances (same teacher and manifests)."""

    def __init__(self, folders):
        if isinstance(folders, (str, os.PathLike)):
            folders = [folders]
        self.caches = [TargetCache(f) for f in folders]
        if not self.caches:
            raise DeepwideError("no targets cache folder given")
        first = self.caches[0]
        for c in self.caches[1:]:
            for key in ("teacher_sha256", "manifest_sha256", "dtype"):
                if c.info[key] != first.info[key]:
                    raise DeepwideError(
                        f"targets caches {first.folder} and {c.folder} differ in {key} "
                        f"({first.info[key]!r} vs {c.info[key]!r}); extract them from the same teacher and manifests"
                    )
            if c.crop != first.crop:
                raise DeepwideError(
                    f"targets caches {first.folder} and {c.folder} differ in crop ({canonical_json(first.crop)} vs "
                    f"{canonical_json(c.crop)}); extract them with the same crop policy"
                )
        self.info = first.info
        self.crop = first.crop
        self.dtype = first.dtype
        self._by_layer: dict[int, TargetCache] = {}
        for c in self.caches:
            for k in c.layers:
                self._by_layer.setdefault(int(k), c)
        self.layers = sorted(self._by_layer)
        self._fe = next((c for c in self.caches if c.info["frontend"]), None)
        self._main = next((c for c in self.caches if c.layers), first)

    def check(self, teacher_sha: str, layers: Sequence[int], frontend: bool, manifest_sha: str | None = None,
              crop: dict | None = None) -> None:
        for c in self.caches:
            c.check(teacher_sha, [k for k in layers if k in c.layers], False, manifest_sha, crop)
        missing = sorted(set(int(x) for x in layers) - set(self.layers))
        if missing:
            raise DeepwideError(
                f"targets caches {', '.join(str(c.folder) for c in self.caches)} lack teacher layer(s) {missing} (have {self.layers})"
            )
        if frontend and self._fe is None:
            raise DeepwideError(f"targets caches {', '.join(str(c.folder) for c in self.caches)} hold no front-end features")

    def targets(self, uid: str, start: int, frames: int, layers: Sequence[int]) -> torch.Tensor:
        groups: list[tuple[TargetCache, list[int]]] = []
        for k in layers:
            c = self._by_layer[int(k)]
            if groups and groups[-1][0] is c:
                groups[-1][1].append(int(k))
            else:
                groups.append((c, [int(k)]))
        blocks = [c.targets(uid, start, frames, ks) for c, ks in groups]
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)

    def frontend(self, uid: str, start: int, frames: int) -> torch.Tensor:
        if self._fe is None:
            raise DeepwideError("no front-end features in the targets caches")
        return self._fe.frontend(uid, start, frames)

    def utterances(self) -> list[data.Utterance]:
        return self._main.utterances()
