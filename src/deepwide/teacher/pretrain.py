"""Tiny HuBERT pretraining: the embedded default's teacher.

HuBERT iteration 1 (Hsu et al. 2021): MFCC + deltas at the teacher's frame rate are
clustered with k-means; the model sees audio whose front-end frames are partly replaced
by a mask embedding and predicts the cluster of every masked frame (cosine similarity to
label embeddings, temperature 0.1, cross-entropy). Optionally iteration 2 clusters one
layer of the iteration-1 teacher and trains a fresh model on those labels.

The model is torchaudio's ``hubert_pretrain_model`` built from an :class:`ArchConfig`, so
``model.wav2vec2`` is exactly what ``build_model(arch)`` builds and is saved with
``save_checkpoint``. The trainer is resumable: the work folder (outside the declared
outputs) holds the pseudo-labels and a checkpoint of model, optimizer, scheduler, RNG
and step, written atomically every ``checkpoint_every`` steps.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from deepwide.audio import SAMPLE_RATE
from deepwide.errors import DeepwideError
from deepwide.models.arch import ArchConfig, encoder_kwargs
from deepwide.models.checkpoint import save_checkpoint
from deepwide.models.cka import first_last_cka
from deepwide.models.solver import count_params, model_params
from deepwide.teacher.data import BatchPlan, Labels, Utterances, concat_utterances, crop_batch, read_manifest
from deepwide.teacher.features import MFCCFeaturizer, layer_features
from deepwide.teacher.labels import fit_kmeans_labels
from deepwide.teacher.spec import teacher_arch
from deepwide.utils import train_loop
from deepwide.utils.device import resolve_device
from deepwide.utils.io import atomic_write_text, canonical_json, sha256_file, write_parquet
from deepwide.utils.precision import autocast, deterministic, numerics_record, resolve_precision, state_sha256
from deepwide.utils.usage import usage

log = logging.getLogger(__name__)

STATE_VERSION = 1


# ---------------------------------------------------------------- config and model


def pretrain_config(cfg: dict | None) -> dict:
    """Fill defaults of a ``teacher.pretrain`` config slice (validated by the schema)."""
    from deepwide.config import validate_config

    full = validate_config({"teacher": {"pretrain": dict(cfg or {})}})
    return full["teacher"]["pretrain"]


def build_pretrain_model(arch: ArchConfig, num_classes: int, t: dict) -> torch.nn.Module:
    """torchaudio ``HuBERTPretrainModel`` whose ``.wav2vec2`` has shape ``arch``."""
    from torchaudio.models import hubert_pretrain_model

    model = hubert_pretrain_model(
        **encoder_kwargs(arch),
        mask_prob=t["mask_prob"],
        mask_selection="static",
        mask_other=0.0,
        mask_length=t["mask_length"],
        no_mask_overlap=False,
        mask_min_space=1,
        mask_channel_prob=0.0,
        mask_channel_selection="static",
        mask_channel_other=0.0,
        mask_channel_length=10,
        no_mask_channel_overlap=False,
        mask_channel_min_space=1,
        skip_masked=False,
        skip_nomask=t["unmasked_weight"] == 0,
        num_classes=num_classes,
        final_dim=t["final_dim"],
        feature_grad_mult=t["feature_grad_mult"] if t["feature_grad_mult"] < 1 else None,
    )
    # torchaudio (like fairseq) draws label embeddings from U(0, 1): all pairwise cosines are
    # about 0.75, so every logit starts equal and separating them takes thousands of steps.
    # Zero-mean embeddings start nearly orthogonal, which a short tiny-scale run needs.
    torch.nn.init.normal_(model.logit_generator.label_embeddings)
    return model


def masked_forward(model: torch.nn.Module, wavs: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """HuBERTPretrainModel's forward (unpadded batch) that also returns the masked labels.

    Logit column 0 is the target class, so a frame is predicted right iff argmax is 0.
    """
    from torchaudio.models.wav2vec2 import components

    w2v = model.wav2vec2
    x, _ = w2v.feature_extractor(wavs, None)
    if model.feature_grad_mult is not None and model.feature_grad_mult < 1.0:
        x = components.GradMultiply.apply(x, model.feature_grad_mult)
    penalty = x.float().pow(2).mean()
    x, _ = w2v.encoder._preprocess(x, None)
    x, mask = model.mask_generator(x, None)
    x = w2v.encoder.transformer(x, attention_mask=None)
    if x.shape[1] != labels.shape[1]:
        raise RuntimeError(f"{labels.shape[1]} labels for {x.shape[1]} frames")
    logit_m, logit_u = model.logit_generator(x, labels, mask, ~mask)
    return {"logit_m": logit_m.float(), "logit_u": None if logit_u is None else logit_u.float(),
            "penalty": penalty, "labels_m": labels[mask]}


def _ce(logits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device), reduction=reduction)


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------- training


class Trainer:
    """One HuBERT iteration: masked prediction of fixed pseudo-labels."""

    def __init__(self, it: int, cfg: dict, arch: ArchConfig, num_classes: int, steps: int, step_offset: int,
                 train: Utterances, train_labels: Labels, valid: Utterances, valid_labels: Labels,
                 workdir: Path, device: torch.device):
        self.it, self.cfg, self.arch, self.t = it, cfg, arch, cfg["train"]
        self.num_classes, self.steps, self.step_offset = num_classes, steps, step_offset
        self.train, self.train_labels = train, train_labels
        self.valid, self.valid_labels = valid, valid_labels
        self.device = device
        self.state_path = workdir / f"state_it{it}.pt"
        self.seed = cfg["seed"]
        self.crop = int(self.t["crop_seconds"] * SAMPLE_RATE)
        self.batch_samples = int(self.t["batch_seconds"] * SAMPLE_RATE)
        self.precision = resolve_precision(self.t["precision"], device)
        self.autocast = autocast(self.precision, device)

        torch.manual_seed(self.seed * 1000 + it)
        self.model = build_pretrain_model(arch, num_classes, self.t).to(device)
        self.opt = train_loop.adamw(self.model.parameters(), self.t["lr"], (0.9, 0.98), 1e-6, self.t["weight_decay"])
        self.sched = train_loop.linear_schedule(self.opt, steps, self.t["warmup_fraction"])
        self.step = 0
        self.curve: list[dict] = []
        self.window: list[tuple[float, float]] = []
        self.wall_s = 0.0
        self.cpu_s = 0.0  # CPU seconds of all threads: comparable on a shared machine
        self.last_eval: dict | None = None
        self._valid_batches = None
        if self.state_path.is_file():
            self._load()

    # -- resume state
    def _save(self) -> None:
        blob = {
            "version": STATE_VERSION, "step": self.step, "model": self.model.state_dict(),
            "optim": self.opt.state_dict(), "sched": self.sched.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "curve": self.curve, "window": self.window, "wall_s": self.wall_s, "cpu_s": self.cpu_s,
            "last_eval": self.last_eval,
        }
        train_loop.save_state(self.state_path, blob)

    def _load(self) -> None:
        blob = train_loop.load_state(self.state_path, self.device)
        if blob.get("version") != STATE_VERSION:
            raise DeepwideError(f"{self.state_path} was written by another deepwide version; delete it to restart")
        self.model.load_state_dict(blob["model"])
        self.opt.load_state_dict(blob["optim"])
        self.sched.load_state_dict(blob["sched"])
        torch.set_rng_state(blob["torch_rng"])
        if blob["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(blob["cuda_rng"])
        self.step, self.curve, self.window = blob["step"], blob["curve"], blob["window"]
        self.wall_s, self.cpu_s, self.last_eval = blob["wall_s"], blob["cpu_s"], blob["last_eval"]
        log.info("iteration %d: resumed from %s at step %d", self.it, self.state_path, self.step)

    @property
    def done(self) -> bool:
        return self.step >= self.steps

    # -- evaluation on held-out utterances with fixed masks
    def _valid(self):
        if self._valid_batches is None:
            order = sorted(range(len(self.valid)), key=lambda i: -min(self.valid.num_samples[i], self.crop))
            batches, cur = [], []
            for i in order:
                eff = min(self.valid.num_samples[i], self.crop)
                if cur and (len(cur) + 1) * eff > self.batch_samples:
                    batches.append(cur)
                    cur = []
                cur.append(i)
            if cur:
                batches.append(cur)
            self._valid_batches = [
                crop_batch(self.valid, self.valid_labels, b, self.crop, self.arch.conv, rng=None) for b in batches
            ]
        return self._valid_batches

    @torch.no_grad()
    def evaluate(self) -> dict:
        self.model.eval()
        loss_sum, correct, total = 0.0, 0, 0
        counts = np.zeros(self.num_classes, dtype=np.int64)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + 99991)  # the same masks at every evaluation
            for b in self._valid():
                with self.autocast:
                    out = masked_forward(self.model, torch.from_numpy(b.wavs).to(self.device),
                                         torch.from_numpy(b.labels).to(self.device))
                lm = out["logit_m"]
                loss_sum += float(_ce(lm, "sum"))
                correct += int((lm.argmax(-1) == 0).sum())
                total += len(lm)
                counts += np.bincount(out["labels_m"].cpu().numpy(), minlength=self.num_classes)
        self.model.train()
        return {
            "valid_loss": loss_sum / max(1, total),
            "valid_masked_acc": correct / max(1, total),
            "majority_rate": float(counts.max() / max(1, total)),
            "valid_masked_frames": total,
        }

    # -- the loop
    def fit(self, stop_at_global: int | None = None, progress: bool = True) -> bool:
        """Train to ``steps`` (or to global step ``stop_at_global``); True when finished."""
        if self.done:
            return True
        t = self.t
        plan = BatchPlan(self.train.num_samples, self.batch_samples, self.crop, self.seed, self.it)
        self.model.train()
        self._clock = time.perf_counter(), time.process_time()
        bar = tqdm(total=self.steps, initial=self.step, desc=f"teacher it{self.it}", unit="step",
                   disable=not progress, mininterval=2.0)
        for step, idx in plan.stream(self.step):
            if step >= self.steps:
                break
            loss, acc = self._train_step(step, idx)
            self.step = step + 1
            self.window.append((loss, acc))
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}", refresh=False)
            if train_loop.due(self.step, t["log_every"], self.steps):
                losses, accs = zip(*self.window)
                self._curve_row("train", float(np.mean(losses)), float(np.mean(accs)), float("nan"))
                self.window = []
            if train_loop.due(self.step, t["eval_every"], self.steps):
                ev = self.last_eval = self.evaluate()
                self._curve_row("valid", ev["valid_loss"], ev["valid_masked_acc"], ev["majority_rate"])
                log.info("iteration %d step %d: held-out masked acc %.4f (majority %.4f), loss %.3f",
                         self.it, self.step, ev["valid_masked_acc"], ev["majority_rate"], ev["valid_loss"])
            stopped = stop_at_global is not None and self.step_offset + self.step >= stop_at_global
            if train_loop.due(self.step, t["checkpoint_every"], self.steps) or stopped:
                self._tick()
                self._save()
            if stopped:
                break
        bar.close()
        return self.done

    def _train_step(self, step: int, idx: list[int]) -> tuple[float, float]:
        """One optimizer step on batch ``idx`` (crop offsets drawn from the step); its loss and masked accuracy."""
        t = self.t
        rng = np.random.default_rng([self.seed, self.it, step, 7])
        b = crop_batch(self.train, self.train_labels, idx, self.crop, self.arch.conv, rng)
        wavs = torch.from_numpy(b.wavs).to(self.device)
        labels = torch.from_numpy(b.labels).to(self.device)
        with self.autocast:
            out = masked_forward(self.model, wavs, labels)
        loss = _ce(out["logit_m"]) + t["feature_penalty"] * out["penalty"]
        if out["logit_u"] is not None:
            loss = loss + t["unmasked_weight"] * _ce(out["logit_u"])
        if not torch.isfinite(loss):
            raise DeepwideError(f"teacher iteration {self.it}: loss is {float(loss)} at step {step}; lower teacher.pretrain.train.lr")
        train_loop.optimizer_step(loss, list(self.model.parameters()), self.opt, self.sched, t["clip"])
        return float(loss.detach()), float((out["logit_m"].argmax(-1) == 0).float().mean())

    def _curve_row(self, split: str, loss: float, acc: float, majority: float) -> None:
        self.curve.append({"iteration": self.it, "step": self.step, "global_step": self.step_offset + self.step,
                           "split": split, "loss": loss, "masked_acc": acc, "majority_rate": majority,
                           "lr": float(self.sched.get_last_lr()[0]),
                           "wall_s": self.wall_s + time.perf_counter() - self._clock[0]})

    def _tick(self) -> None:
        """Add the wall and CPU time since the last tick to the run's totals."""
        wall, cpu = self._clock
        self.wall_s += time.perf_counter() - wall
        self.cpu_s += time.process_time() - cpu
        self._clock = time.perf_counter(), time.process_time()


# ---------------------------------------------------------------- the whole run


def _fingerprint(cfg: dict, manifests: list[Path]) -> str:
    h = hashlib.sha256(canonical_json(cfg).encode())
    for m in manifests:
        h.update(sha256_file(m).encode())
    return h.hexdigest()


def _prepare_workdir(workdir: Path, fingerprint: str) -> None:
    """Reuse the work folder only if it was made for the same config and manifests."""
    workdir.mkdir(parents=True, exist_ok=True)
    fp_file = workdir / "fingerprint.json"
    if fp_file.is_file():
        old = json.loads(fp_file.read_text()).get("fingerprint")
        if old == fingerprint:
            return
        stale = sorted(workdir.glob("state_it*.pt")) + sorted(workdir.glob("labels_it*.npz"))
        log.warning("config or manifests changed since %s was written: discarding %d resume files", workdir, len(stale))
        for f in stale:
            f.unlink()
    atomic_write_text(fp_file, json.dumps({"fingerprint": fingerprint}))


def _labels(workdir: Path, it: int, make) -> tuple[Labels, Labels, dict]:
    tr, va = workdir / f"labels_it{it}_train.npz", workdir / f"labels_it{it}_valid.npz"
    if tr.is_file() and va.is_file():
        (lt, meta), (lv, _) = Labels.load(tr), Labels.load(va)
        log.info("iteration %d: pseudo-labels reused from %s", it, workdir)
        return lt, lv, meta
    start, start_cpu = time.perf_counter(), time.process_time()
    (lt, lv), meta = make()
    meta["wall_s"] = time.perf_counter() - start
    meta["cpu_s"] = time.process_time() - start_cpu
    lv.save(va, meta)
    lt.save(tr, meta)
    return lt, lv, meta


def split_valid(train: Utterances, fraction: float, seed: int) -> tuple[Utterances, Utterances]:
    if len(train) < 2:
        raise DeepwideError("teacher pretraining needs at least 2 training utterances to hold one out")
    n_valid = min(len(train) - 1, max(1, int(round(len(train) * fraction))))
    perm = np.random.default_rng([seed, 31]).permutation(len(train))
    va, tr = sorted(perm[:n_valid]), sorted(perm[n_valid:])
    return train.subset(tr), train.subset(va)


def pretrain(
    manifests: str | Path | list,
    cfg: dict,
    out: str | Path,
    workdir: str | Path,
    valid_manifest: str | Path | None = None,
    info_path: str | Path | None = None,
    curve_path: str | Path | None = None,
    threads: int | None = None,
    stop_at_step: int | None = None,
    progress: bool = True,
) -> dict | None:
    """Pretrain a tiny HuBERT teacher on one or several training manifests; returns the
    info dict (None if stopped early)."""
    cfg = pretrain_config(cfg)
    out, workdir = Path(out), Path(workdir)
    info_path = Path(info_path) if info_path else out.with_name("info.json")
    curve_path = Path(curve_path) if curve_path else out.with_name("curve.parquet")
    # torch's intra-op thread count sets the order of parallel reductions, so the weights'
    # last bits: a count pinned in the config (teacher.pretrain.threads) wins over the
    # caller's share (Snakemake scales its `threads:` down to --cores); 0 takes the share,
    # else every usable CPU. info.json records the count used.
    if cfg["threads"] and threads and threads != cfg["threads"]:
        log.info("teacher.pretrain.threads pins %d torch threads (the reduction order); --threads %d is not used",
                 cfg["threads"], threads)
    n_threads = cfg["threads"] or threads or default_threads()
    torch.set_num_threads(n_threads)
    device = torch.device(resolve_device("auto"))
    arch = teacher_arch(cfg["arch"])
    data = read_splits(manifests, valid_manifest, cfg)
    train, valid = data["train"], data["valid"]
    log.info("teacher %s (%d params): %d train utterances (%.1f min), %d held-out (%.1f min); device %s, %d threads",
             arch.name, count_params(arch), len(train), train.seconds / 60, len(valid), valid.seconds / 60, device,
             n_threads)
    _prepare_workdir(workdir, _fingerprint(cfg, data["manifests"]))

    # deterministic kernels (CPU and CUDA): a rerun on this machine gives the same bits
    with deterministic(device):
        run_start = time.perf_counter()
        iterations = []
        steps_list = [cfg["train"]["steps"]]
        if cfg["iterations"] == 2:
            steps_list.append(cfg["iteration2"]["steps"] or cfg["train"]["steps"])
        trainer = None
        for it, steps in enumerate(steps_list, start=1):
            clusters, source, featurize = iteration_labels(it, cfg, arch, trainer, device)
            km = cfg["kmeans"]
            lt, lv, kstats = _labels(workdir, it, lambda: fit_kmeans_labels(
                [train, valid], featurize, clusters, km["max_frames"], km["batch_size"], km["n_init"], cfg["seed"] + it,
                f"teacher it{it} k-means ({source})", threads=n_threads))
            offset = sum(steps_list[: it - 1])
            trainer = Trainer(it, cfg, arch, clusters, steps, offset, train, lt, valid, lv, workdir, device)
            if not trainer.fit(stop_at_step, progress):
                log.info("stopped at global step %d (--stop-at-step); rerun the same command to resume", stop_at_step)
                return None
            ev = trainer.last_eval or trainer.evaluate()
            iterations.append({"iteration": it, "labels": source, "clusters": clusters, "steps": steps,
                               "precision": trainer.precision,
                               "kmeans": kstats, "train_wall_s": trainer.wall_s, "train_cpu_s": trainer.cpu_s, **ev})
            if stop_at_step is not None and offset + steps >= stop_at_step and it < len(steps_list):
                log.info("stopped after iteration %d (--stop-at-step); rerun to resume", it)
                return None
        w2v = trainer.model.wav2vec2.cpu().eval()
        info = run_info(cfg, arch, w2v, iterations, data, device, n_threads, run_start)
        curve = []
        for it in range(1, len(steps_list) + 1):
            curve.extend(train_loop.load_state(workdir / f"state_it{it}.pt")["curve"])
        write_outputs(info, curve, w2v, arch, cfg, out, info_path, curve_path)
        return info


def read_splits(manifests, valid_manifest, cfg: dict) -> dict:
    """The training utterances (of one manifest or several, concatenated in the order given),
    the held-out ones (the held-out manifest, or a fraction of the training ones held out),
    the manifests read, where the held-out set comes from and the utterances left out for
    length (one record per manifest)."""
    manifests = [Path(m) for m in ([manifests] if isinstance(manifests, (str, Path)) else manifests)]
    skipped: list[dict] = []  # utterances left out for length, per manifest (info.json)
    train = concat_utterances([(m, read_manifest(m, cfg["min_seconds"], skipped)) for m in manifests])
    train_names = ", ".join(str(m) for m in manifests)
    if valid_manifest:
        valid = read_manifest(valid_manifest, cfg["min_seconds"], skipped)
        valid_source = str(valid_manifest)
        manifests = [*manifests, Path(valid_manifest)]
    else:
        train, valid = split_valid(train, cfg["valid_fraction"], cfg["seed"])
        valid_source = f"{cfg['valid_fraction']:.0%} of {train_names} held out"
    if len(valid) > cfg["max_valid_utterances"]:
        valid = valid.subset(range(cfg["max_valid_utterances"]))
    return {"train": train, "valid": valid, "manifests": manifests, "valid_source": valid_source, "skipped": skipped}


def iteration_labels(it: int, cfg: dict, arch: ArchConfig, previous, device: torch.device):
    """What iteration ``it`` clusters: MFCCs (1), or a layer of iteration 1's model (2).
    Returns the cluster count, a description and the featurizer."""
    if it == 1:
        mf = cfg["mfcc"]
        feat = MFCCFeaturizer(arch.conv, SAMPLE_RATE, mf["n_mfcc"], mf["n_mels"], mf["window_ms"])
        return cfg["kmeans"]["clusters"], "mfcc", feat
    prev = previous.model.wav2vec2.eval()
    layer = cfg["iteration2"]["layer"]
    if layer > arch.depth:
        raise DeepwideError(f"teacher.pretrain.iteration2.layer: {layer} exceeds the teacher depth {arch.depth}")
    return (cfg["iteration2"]["clusters"], f"iteration1 layer {layer}",
            lambda wav: layer_features(prev, wav, layer, device))


def run_info(cfg: dict, arch: ArchConfig, w2v, iterations: list[dict], data: dict, device, n_threads: int,
             run_start: float) -> dict:
    """info.json of a finished run (the CKA of its first and last layer included)."""
    final, valid = iterations[-1], data["valid"]
    # does the teacher have a layer hierarchy for depth to exploit? (the report warns above 0.8)
    cka_first_last = (first_last_cka(w2v, valid.paths[:16], max_seconds=10.0, max_frames=8000, seed=cfg["seed"],
                                     device="cpu") if arch.depth >= 2 else None)
    return {
        "source": "pretrain",
        "cka_first_last": cka_first_last,
        "cka_first_last_on": f"{min(len(valid), 16)} held-out utterances ({data['valid_source']})",
        "arch": arch.to_dict(),
        "name": arch.name,
        "params": model_params(w2v, arch),
        "steps": sum(i["steps"] for i in iterations),
        "iterations": iterations,
        "n_clusters": final["clusters"],
        "valid_masked_acc": final["valid_masked_acc"],
        "majority_rate": final["majority_rate"],
        "valid_loss": final["valid_loss"],
        "wall_time_s": sum(i["train_wall_s"] + i["kmeans"].get("wall_s", 0.0) for i in iterations),
        "cpu_time_s": sum(i["train_cpu_s"] + i["kmeans"].get("cpu_s", 0.0) for i in iterations),
        "this_run_wall_s": time.perf_counter() - run_start,
        "device": str(device),
        "threads": n_threads,
        # what determines the weights besides config and data (two runs with equal records
        # on one machine give equal weights_sha256; see deepwide.utils.precision)
        "numerics": numerics_record(device, n_threads, "+".join(sorted({i["precision"] for i in iterations}))),
        "weights_sha256": state_sha256(w2v.state_dict()),
        "train_utterances": len(data["train"]),
        "train_seconds": data["train"].seconds,
        "valid_utterances": len(valid),
        "valid_seconds": valid.seconds,
        "valid_source": data["valid_source"],
        "manifests": [str(m) for m in data["manifests"]],  # training ones first, then the held-out one
        "skipped": data["skipped"],
        "config": cfg,
    }


def write_outputs(info: dict, curve: list[dict], w2v, arch: ArchConfig, cfg: dict, out: Path, info_path: Path,
                  curve_path: Path) -> None:
    """curve.parquet, info.json and the teacher checkpoint (written last)."""
    import pandas as pd

    write_parquet(pd.DataFrame(curve), curve_path)
    info["usage"] = usage()  # peak memory and wall time of this job (plan resources)
    atomic_write_text(info_path, json.dumps(info, indent=2, sort_keys=True) + "\n")
    meta = {k: info[k] for k in ("source", "params", "steps", "n_clusters", "valid_masked_acc", "majority_rate", "valid_source")}
    meta["config"] = cfg
    meta["normalize"] = False  # trained on raw waveforms (like HuBERT Base), see models.convert
    save_checkpoint(out, w2v, arch, meta)
    log.info("teacher %s: %d params, held-out masked acc %.4f vs majority %.4f, %.0f s -> %s",
             arch.name, info["params"], info["valid_masked_acc"], info["majority_rate"], info["wall_time_s"], out)
