"""The distillation trainer: one student, one KD method, resumable and GPU-aware.

One step: a length-bucketed batch (at most ``batch_seconds`` of padded audio, crops of at
most ``max_seconds``: the fixed windows of ``job["targets"]["crop"]`` policy ``fixed``, which
the cache's teacher and the online teacher see too, or random crops per epoch with ``full``,
the policy of jobs without a crop) -> student hidden states -> KD heads -> loss against teacher targets
(read from the cache, or from an online teacher) -> AdamW (fused on CUDA) with linear
warmup and decay, gradient clipping. bf16 autocast on CUDA, float32 on CPU.

Modes (recorded in info.json as ``mode``):
- ``cached-targets+cached-frontend``: frozen teacher front end, its output read from the
  cache: no conv and no audio I/O at all (fastest);
- ``cached-targets``: targets from the cache, the student runs its own conv;
- ``online-shared-frontend``: teacher forward every step; a frozen teacher front end is
  computed once and feeds both teacher and student;
- ``online``: teacher forward every step.

Resume: every ``checkpoint_every`` steps the full state (student, heads, optimizer,
scheduler, RNG, step, epoch and position in the epoch's batch plan, curve so far) is saved
atomically to ``RESUME_DIR/state.pt``. On start a state with the same job hash is
resumed; batches are a pure function of (seed, epoch), so a resumed run sees exactly the
batches an uninterrupted one would, and on CPU ends with identical weights. SIGTERM or
SIGUSR1 saves and exits with 128 + signal number (SLURM requeues); a non-finite loss saves
and raises an error naming the step and the batch's utterance ids.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from deepwide.distill import data
from deepwide.distill.methods import KDHeads, kd_loss, kd_total, method_pairs, target_name
from deepwide.distill.targets import TargetCacheSet, pick_device, teacher_forward
from deepwide.errors import DeepwideError
from deepwide.models.arch import ArchConfig, build_model, hidden_states
from deepwide.models.checkpoint import load_checkpoint, save_checkpoint
from deepwide.utils.io import atomic_path, atomic_write_text, canonical_json, sha256_file, write_parquet

log = logging.getLogger(__name__)

STATE_FORMAT = "deepwide-distill-state/1"
# a step loss above this many times the median of the last steps stops the job (corrupt targets,
# divergence): 2.9e20 from a shard with 4 KiB flipped was once logged at INFO and trained on
LOSS_JUMP = 1e3


class Preempted(Exception):
    """Raised after the state was saved because SIGTERM/SIGUSR1 arrived."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"signal {signum} at step {step}: state saved")
        self.signum = signum
        self.step = step


def code_version() -> str:
    """Hash of the code a student depends on: a resume state from other code is not reused."""
    from deepwide.utils.io import hash_files

    pkg = Path(__file__).resolve().parents[1]
    return hash_files([pkg / "distill", pkg / "models"])


def job_hash(job: dict) -> str:
    """Identity of a training run: its result settings (not threads, workers or log and
    checkpoint cadence) and the code that runs them."""
    from deepwide.identity import split_execution

    ident = {**job, "train": split_execution(job["train"], "distill.train")[0]}
    return hashlib.sha256((canonical_json(ident) + code_version()).encode()).hexdigest()


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward; gradient multiplied by ``scale`` (HuBERT's feature_grad_mult)."""
    return x * scale + x.detach() * (1.0 - scale)


def lr_lambda(steps: int, warmup: float):
    warm = int(round(warmup * steps))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (steps - step) / max(1, steps - warm))

    return f


def count_params(arch: ArchConfig, model: torch.nn.Module) -> int:
    n = sum(p.numel() for p in model.parameters())
    try:
        from deepwide.models.solver import count_params as solver_count
    except ImportError:
        return n
    c = solver_count(arch)
    if c != n:
        raise DeepwideError(f"parameter count of {arch.name}: solver says {c}, model has {n}")
    return c


def init_from_teacher(student, arch: ArchConfig, teacher, tarch: ArchConfig) -> list[str]:
    """Copy the teacher's conv front end (required) and projection (when shapes match)."""
    if [tuple(c) for c in arch.conv] != [tuple(c) for c in tarch.conv] or arch.conv_bias != tarch.conv_bias \
            or arch.extractor_mode != tarch.extractor_mode:
        raise DeepwideError(
            f"init teacher_frontend: student {arch.name} has conv front end {arch.conv} ({arch.extractor_mode}), "
            f"the teacher {tarch.conv} ({tarch.extractor_mode}); set distill.students.conv_channels to "
            f"{tarch.conv[0][0]} or use distill.init: random"
        )
    student.feature_extractor.load_state_dict(teacher.feature_extractor.state_dict())
    copied = ["feature_extractor"]
    sp, tp = student.encoder.feature_projection, teacher.encoder.feature_projection
    if all(a.shape == b.shape for a, b in zip(sp.state_dict().values(), tp.state_dict().values())):
        sp.load_state_dict(tp.state_dict())
        copied.append("feature_projection")
    return copied


def init_encoder_from_teacher(student, arch: ArchConfig, teacher, tarch: ArchConfig) -> list[str]:
    """DistilHuBERT's encoder init (s3prl distiller, ``init_teacher_encoder_layers``): copy the
    teacher's positional conv and its first L transformer layers into an L-layer student.

    Only where the shapes match (same width, and FFN and heads for the layers): a student
    narrower than the teacher keeps its random encoder. The encoder's layer norm after the
    positional conv is not copied, as in s3prl's distiller. Returns what was copied.
    """
    if arch.width != tarch.width:
        return []
    copied = []
    st, tt = student.encoder.transformer, teacher.encoder.transformer

    def same(a, b):
        sa, sb = a.state_dict(), b.state_dict()
        return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)

    if same(st.pos_conv_embed, tt.pos_conv_embed):
        st.pos_conv_embed.load_state_dict(tt.pos_conv_embed.state_dict())
        copied.append("pos_conv")
    layers = []
    for i in range(min(arch.depth, tarch.depth)):
        if not same(st.layers[i], tt.layers[i]):
            break
        st.layers[i].load_state_dict(tt.layers[i].state_dict())
        layers.append(i)
    if layers:
        copied.append(f"layers.0-{layers[-1]}" if len(layers) > 1 else "layers.0")
    return copied


def _mode(cached: bool, cached_fe: bool, shared_fe: bool) -> str:
    if cached:
        return "cached-targets+cached-frontend" if cached_fe else "cached-targets"
    return "online-shared-frontend" if shared_fe else "online"


def _save_state(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def train(
    job: dict,
    teacher_ckpt: str | Path,
    manifests: Sequence[str | Path],
    out_dir: str | Path,
    resume_dir: str | Path,
    targets_dirs: Sequence[str | Path] = (),
    hf_dir: str | Path | None = None,
    device: str | None = None,
) -> dict:
    """Train one student; write ``student.pt``, ``curve.parquet``, [``hf/``], ``info.json``."""
    from tqdm import tqdm

    t_start = time.time()
    out_dir, resume_dir = Path(out_dir), Path(resume_dir)
    method = job["method"]
    tc = job["train"]
    dev = pick_device(device)
    cuda = dev.type == "cuda"
    seed = int(tc["seed"])
    jh = job_hash(job)

    teacher, tarch, tmeta = load_checkpoint(teacher_ckpt)
    normalize = bool(tmeta.get("normalize", False))  # the student sees the teacher's input
    teacher_sha = sha256_file(teacher_ckpt)
    arch = ArchConfig.from_dict(job["arch"])
    if data.hop(arch.conv) != data.hop(tarch.conv):
        raise DeepwideError(
            f"student {arch.name} has {data.hop(arch.conv)} samples per frame, the teacher {data.hop(tarch.conv)}: "
            "frames must align (use the teacher's strides)"
        )
    pairs = method_pairs(method, arch.depth, tarch.depth, job["method_config"])
    layers = sorted({t for _, t in pairs})
    names = [target_name(method, p) for p in pairs]
    planned = job.get("targets", {}).get("layers")
    if planned is not None and sorted(int(k) for k in planned) != layers:
        raise DeepwideError(
            f"the study planned teacher layers {sorted(planned)} for {method} {arch.name}, but the teacher "
            f"{teacher_ckpt} ({tarch.depth} layers) gives {layers}: teacher.pretrain.arch.depth (or the imported "
            "checkpoint's config) must match the teacher checkpoint"
        )

    torch.manual_seed(seed)
    student = build_model(arch)
    heads = KDHeads(method, pairs, arch.width, tarch.width)
    copied = []
    if job["init"] in ("teacher_frontend", "distilhubert"):
        copied = init_from_teacher(student, arch, teacher, tarch)
    if job["init"] == "distilhubert":
        copied += init_encoder_from_teacher(student, arch, teacher, tarch)
    frozen = job["frontend"] == "frozen"
    if frozen:
        if job["init"] not in ("teacher_frontend", "distilhubert"):
            raise DeepwideError("distill.frontend frozen needs distill.init teacher_frontend or distilhubert")
        for p in student.feature_extractor.parameters():
            p.requires_grad_(False)
    fe_scale = float(job["frontend_grad_scale"]) if job["frontend"] == "scaled" else 1.0
    n_params = count_params(arch, student)

    cached = job["targets"]["mode"] == "cached"
    # the crop policy (distill.targets.crop): jobs built without one train as before (full)
    crop = data.crop_spec(**(job["targets"].get("crop") or {"policy": "full"}))
    if crop["policy"] == "fixed" and crop["max_seconds"] != float(tc["max_seconds"]):
        raise DeepwideError(f"targets crop max_seconds {crop['max_seconds']} differs from train.max_seconds "
                            f"{tc['max_seconds']}: the fixed windows are the student's crops")
    cache = None
    df = data.load_manifests(manifests)
    # frames as the teacher sees them (the cache was extracted with its conv), else the student's
    whole = data.manifest_utterances(df, tarch.conv if cached else arch.conv)
    cached_fe = cached and bool(job["targets"]["frontend"]) and frozen
    shared_fe = (not cached) and frozen
    mode = _mode(cached, cached_fe, shared_fe)
    kept, skipped = data.drop_short(whole, tc["min_seconds"], arch.conv, ", ".join(map(str, manifests)))
    if not kept:
        raise DeepwideError(f"no utterance of at least {tc['min_seconds']} s in {', '.join(map(str, manifests))}")
    # what the student and its teacher see: the whole utterances (randomly cropped per epoch) or
    # their fixed windows (the plan then has nothing left to crop); the cache's must be the same
    utts = data.crop_utterances(kept, crop, tarch.conv if cached else arch.conv)
    if cached:
        if not targets_dirs:
            raise DeepwideError("cached targets mode needs --targets DIR (one per teacher layer, and the front end)")
        cache = TargetCacheSet(targets_dirs)
        cache.check(teacher_sha, layers, job["targets"]["frontend"], data.manifest_digest(df), crop)
        have = {u.id: u for u in cache.utterances()}
        for u in utts:
            c = have.get(u.id)
            if c is None or (c.start, c.num_samples, c.frames) != (u.start, u.num_samples, u.frames):
                got = "missing" if c is None else f"samples {c.start}+{c.num_samples}, {c.frames} frames"
                raise DeepwideError(
                    f"stale targets: utterance {u.id} in {', '.join(map(str, targets_dirs))} is {got}; the student's "
                    f"window is samples {u.start}+{u.num_samples}, {u.frames} frames; rerun `deepwide targets extract`"
                )
    frames = [u.frames for u in utts]
    fps = data.SAMPLE_RATE / data.hop(arch.conv)
    max_frames = data.max_crop_frames(tc["max_seconds"], arch.conv)
    batch_frames = max(1, int(tc["batch_seconds"] * fps))
    crop_info = {**crop, **data.crop_stats(kept, utts, max_frames)}

    if not cached:
        teacher = teacher.to(dev).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    else:
        del teacher
    student.to(dev).train()
    heads.to(dev).train()
    params = [p for p in student.parameters() if p.requires_grad] + list(heads.parameters())
    opt_kw = dict(lr=tc["lr"], betas=tuple(tc["betas"]), eps=tc["eps"], weight_decay=tc["weight_decay"])
    if cuda:
        opt_kw["fused"] = True
    optimizer = torch.optim.AdamW(params, **opt_kw)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(tc["steps"], tc["warmup"]))

    # ---- resume ----
    resume_dir.mkdir(parents=True, exist_ok=True)
    state_path = resume_dir / "state.pt"
    step = 0
    curve: list[dict] = []
    audio_done, train_time, wall_prev = 0.0, 0.0, 0.0
    if state_path.is_file():
        st = torch.load(state_path, map_location="cpu", weights_only=False)
        if st.get("format") != STATE_FORMAT or st.get("job_hash") != jh:
            log.warning("resume state %s belongs to another job config: starting from step 0", state_path)
        else:
            student.load_state_dict(st["student"])
            heads.load_state_dict(st["heads"])
            optimizer.load_state_dict(st["optimizer"])
            scheduler.load_state_dict(st["scheduler"])
            torch.set_rng_state(st["rng_cpu"])
            if cuda and st.get("rng_cuda") is not None:
                torch.cuda.set_rng_state(st["rng_cuda"])
            step = st["step"]
            curve, audio_done, train_time = st["curve"], st["audio_seconds"], st["train_seconds"]
            wall_prev = st["wall_seconds"]

    def snapshot(rng_cpu=None, rng_cuda=None) -> dict:
        return {
            "format": STATE_FORMAT, "job_hash": jh, "job": job,
            "student": student.state_dict(), "heads": heads.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng_cpu": torch.get_rng_state() if rng_cpu is None else rng_cpu,
            "rng_cuda": (torch.cuda.get_rng_state() if rng_cuda is None else rng_cuda) if cuda else None,
            "step": step, "epoch": plan.position(step)[0], "pos": plan.position(step)[1], "curve": curve,
            "audio_seconds": audio_done, "train_seconds": train_time,
            "wall_seconds": wall_prev + time.time() - t_start,
        }

    # ---- signals: save at the next step boundary, exit non-zero ----
    caught: list[int] = []

    def on_signal(signum, _frame):
        caught.append(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGUSR1)}

    def fwd(batch):
        """Student predictions, targets and the valid-frame mask of one batch."""
        flen = batch["frame_lengths"].to(dev, non_blocking=True)
        wavs = lengths = None
        if "wavs" in batch:
            wavs = batch["wavs"].to(dev, non_blocking=True)
            lengths = batch["lengths"].to(dev, non_blocking=True)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=cuda):
            if cached_fe:
                feats = batch["features"].to(dev, non_blocking=True).float()
            elif shared_fe:
                with torch.no_grad():
                    feats, _ = teacher.feature_extractor(wavs, lengths)
            elif frozen:
                with torch.no_grad():
                    feats, _ = student.feature_extractor(wavs, lengths)
            else:
                feats, _ = student.feature_extractor(wavs, lengths)
                if fe_scale != 1.0:
                    feats = scale_grad(feats, fe_scale)
            states, _ = hidden_states(student, None, flen, features=feats)
            preds = heads(states)
        if cached:
            tgt = batch["targets"].to(dev, non_blocking=True)
            targets = [tgt[:, :, layers.index(t)] for _, t in pairs]
        else:
            outs, _, _ = teacher_forward(teacher, wavs, lengths, layers, dev, features=feats.detach() if shared_fe else None)
            targets = [outs[layers.index(t)] for _, t in pairs]
        fmax = preds[0].shape[1]
        if targets[0].shape[1] != fmax:
            raise DeepwideError(f"student gave {fmax} frames, targets have {targets[0].shape[1]} (batch {batch['ids'][:3]})")
        mask = torch.arange(fmax, device=dev)[None, :] < flen[:, None]
        return preds, targets, mask

    fwd_c = torch.compile(fwd, dynamic=True) if tc.get("compile") else fwd

    steps = int(tc["steps"])
    plan = data.StepPlan(frames, max_frames, batch_frames, seed)  # batch g of the run = step g + 1
    if step:
        log.info("resumed from %s at step %d (epoch %d, batch %d of %d)", state_path, step, *plan.position(step),
                 plan.per_epoch)
    log.info(
        "distill %s %s (%d params, KD targets %s) from teacher %dx%d, mode %s, %d utterances, crop %s "
        "(%.1f %% of the audio), device %s, init %s (%s), front end %s",
        method, arch.name, n_params, names, tarch.depth, tarch.width, mode, len(utts), crop["policy"],
        100 * crop_info["audio_kept_fraction"], dev, job["init"], ",".join(copied) or "-", job["frontend"],
    )
    bar = tqdm(total=steps, initial=step, desc=f"{method} {arch.name}", unit="step", mininterval=5)
    acc = {"n": 0, "loss": 0.0, "audio": 0.0, **{n: 0.0 for n in names}}
    recent: collections.deque = collections.deque(maxlen=50)  # the last steps' losses: a jump is an error
    gen = torch.Generator().manual_seed(seed)  # keeps DataLoader from drawing on the global RNG
    try:
        ds = data.BatchLoader(utts, plan, arch.conv, cache, layers, need_audio=not cached_fe, use_frontend=cached_fe,
                              normalize=normalize)
        nw = int(tc["num_workers"])
        loader = torch.utils.data.DataLoader(
            ds, batch_size=None, sampler=range(step, steps), num_workers=nw, pin_memory=cuda,
            generator=gen, prefetch_factor=4 if nw else None,
        )
        t0 = time.perf_counter()  # step time includes waiting for the loader
        for batch in loader:
            rng_cpu = torch.get_rng_state()
            rng_cuda = torch.cuda.get_rng_state() if cuda else None
            preds, targets, mask = fwd_c(batch)
            parts = [kd_loss(p, t, mask, job["loss"]["cos_weight"])[0] for p, t in zip(preds, targets)]
            total = kd_total(parts)  # mean over targets
            vals = torch.stack([total.detach()] + [x.detach() for x in parts]).float().cpu().tolist()
            if not all(np.isfinite(vals)):
                _save_state(state_path, snapshot(rng_cpu, rng_cuda))
                raise DeepwideError(
                    f"non-finite loss at step {step + 1} ({dict(zip(['total'] + names, vals))}); "
                    f"utterances {', '.join(batch['ids'])}; state saved to {state_path}"
                )
            if recent and vals[0] > LOSS_JUMP * float(np.median(recent)):
                # orders of magnitude above the last steps: corrupt targets or a diverged run,
                # never a result to train on (the optimizer has not stepped on it)
                _save_state(state_path, snapshot(rng_cpu, rng_cuda))
                raise DeepwideError(
                    f"loss jumped at step {step + 1}: {vals[0]:.4g}, more than {LOSS_JUMP:g} x the median "
                    f"{float(np.median(recent)):.4g} of the previous {len(recent)} step(s); utterances "
                    f"{', '.join(batch['ids'])}; check "
                    + (f"the targets cache(s) {', '.join(map(str, targets_dirs))} and " if targets_dirs else "")
                    + f"the teacher; state saved to {state_path}"
                )
            recent.append(vals[0])
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            gnorm = float(torch.nn.utils.clip_grad_norm_(params, tc["grad_clip"]))
            optimizer.step()
            scheduler.step()
            step += 1
            secs = batch["audio_samples"] / data.SAMPLE_RATE
            if cuda and (step % tc["log_every"] == 0):
                torch.cuda.synchronize()
            now = time.perf_counter()
            train_time += now - t0
            t0 = now
            audio_done += secs
            acc["n"] += 1
            acc["loss"] += vals[0]
            acc["audio"] += secs
            for n, v in zip(names, vals[1:]):
                acc[n] += v
            bar.update(1)
            if step % tc["log_every"] == 0 or step == steps:
                row = {"step": step, "epoch": plan.position(step - 1)[0], "lr": scheduler.get_last_lr()[0], "grad_norm": gnorm,
                       "loss": acc["loss"] / acc["n"],
                       **{f"loss_{n}": acc[n] / acc["n"] for n in names},
                       "audio_seconds": audio_done, "train_seconds": train_time,
                       "audio_seconds_per_second": audio_done / max(train_time, 1e-9)}
                curve.append(row)
                log.info("step %d/%d loss %.4f (%s) lr %.2e %.1f audio-s/s", step, steps, row["loss"],
                         " ".join(f"{n}={row['loss_' + n]:.4f}" for n in names), row["lr"],
                         row["audio_seconds_per_second"])
                acc = {"n": 0, "loss": 0.0, "audio": 0.0, **{n: 0.0 for n in names}}
            if caught:
                _save_state(state_path, snapshot())
                log.warning("signal %d: state saved at step %d to %s; exiting for requeue", caught[0], step, state_path)
                raise Preempted(caught[0], step)
            if step % tc["checkpoint_every"] == 0 and step < steps:
                _save_state(state_path, snapshot())
    finally:
        bar.close()
        for s, h in old.items():
            signal.signal(s, h)

    # ---- outputs, written last; info.json the very last ----
    _save_state(state_path, snapshot())  # a crash while exporting resumes at the end
    student.eval().cpu()
    meta = {"kd_method": method, "pairs": [list(p) for p in pairs], "teacher_sha256": teacher_sha,
            "teacher_arch": tarch.to_dict(), "steps": steps, "job_hash": jh, "mode": mode,
            "normalize": normalize, "source": f"deepwide distill {method}"}
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out_dir / "student.pt", student, arch, meta)
    # the KD heads beside the student: the report's held-out KD loss needs them (deepwide.report.kdloss)
    torch.save({"method": method, "pairs": [list(p) for p in pairs], "student_width": arch.width,
                "teacher_width": tarch.width, "state_dict": heads.cpu().state_dict()}, out_dir / "kd_heads.pt")
    import pandas as pd

    write_parquet(pd.DataFrame(curve), out_dir / "curve.parquet")
    if hf_dir is not None:
        try:
            from deepwide.models.convert import export_hf
        except ImportError as err:
            raise DeepwideError(f"HF export needs deepwide.models.convert ({err})") from err
        export_hf(out_dir / "student.pt", hf_dir)
    info = {
        "method": method,
        "shape": arch.name,
        "arch": arch.to_dict(),
        "params": n_params,
        "kd_head_params": sum(p.numel() for p in heads.parameters()),
        "pairs": [list(p) for p in pairs],
        "targets": names,
        "teacher": str(teacher_ckpt),
        "teacher_sha256": teacher_sha,
        "mode": mode,
        "init": job["init"],
        "init_copied": copied,
        "frontend": job["frontend"],
        "device": str(dev),
        "steps": steps,
        "final_loss": curve[-1]["loss"] if curve else None,
        "audio_seconds": audio_done,
        "train_seconds": train_time,
        "audio_seconds_per_second": audio_done / max(train_time, 1e-9),
        "wall_time_s": wall_prev + time.time() - t_start,  # over all resumed runs
        "job_hash": jh,
        "num_utterances": len(utts),
        "crop": crop_info,  # policy; share of audio the windows keep; share of frames past one crop
        "skipped": [skipped],  # utterances left out for length (count, threshold)
    }
    from deepwide.utils.usage import usage

    info["usage"] = usage()  # peak memory and wall time of this job (plan resources)
    atomic_write_text(out_dir / "info.json", json.dumps(info, indent=1))
    state_path.unlink(missing_ok=True)  # finished: the outputs are the state now (optimizer state is large)
    log.info("done: %s (%.0f s, %.1f audio-s/s, mode %s)", out_dir / "student.pt", info["wall_time_s"],
             info["audio_seconds_per_second"], mode)
    return info
