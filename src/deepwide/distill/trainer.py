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
import contextlib
import hashlib
import json
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from deepwide.audio import SAMPLE_RATE
from deepwide.distill import data
from deepwide.distill.methods import KDHeads, kd_loss, kd_total, method_pairs, target_name
from deepwide.distill.targets import TargetCacheSet, teacher_forward
from deepwide.errors import DeepwideError
from deepwide.identity import split_execution
from deepwide.models.arch import ArchConfig, build_model, hidden_states
from deepwide.models.checkpoint import load_checkpoint, save_checkpoint
from deepwide.models.solver import model_params
from deepwide.utils import train_loop
from deepwide.utils.device import resolve_device
from deepwide.utils.io import atomic_write_text, canonical_json, hash_files, sha256_file, write_parquet
from deepwide.utils.manifest import read_manifests
from deepwide.utils.usage import usage

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
    pkg = Path(__file__).resolve().parents[1]
    return hash_files([pkg / "distill", pkg / "models", pkg / "utils" / "train_loop.py"])


def job_hash(job: dict) -> str:
    """Identity of a training run: its result settings (not threads, workers or log and
    checkpoint cadence) and the code that runs them."""
    ident = {**job, "train": split_execution(job["train"], "distill.train")[0]}
    return hashlib.sha256((canonical_json(ident) + code_version()).encode()).hexdigest()


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward; gradient multiplied by ``scale`` (HuBERT's feature_grad_mult)."""
    return x * scale + x.detach() * (1.0 - scale)


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




# ---------------------------------------------------------------- models and data


@dataclass
class Models:
    """The teacher, the student, its KD heads and what the student took from the teacher."""

    teacher: torch.nn.Module
    tarch: ArchConfig
    teacher_sha: str
    normalize: bool  # the student sees the teacher's input
    arch: ArchConfig
    student: torch.nn.Module
    heads: KDHeads
    pairs: list
    layers: list[int]  # teacher layers the targets come from
    names: list[str]  # KD target names (curve columns loss_<name>)
    copied: list[str]


def load_models(job: dict, teacher_ckpt: str | Path) -> Models:
    """Load the teacher; build the student and KD heads from the seed; apply ``init`` and ``frontend``."""
    teacher, tarch, tmeta = load_checkpoint(teacher_ckpt)
    arch = ArchConfig.from_dict(job["arch"])
    if data.hop(arch.conv) != data.hop(tarch.conv):
        raise DeepwideError(
            f"student {arch.name} has {data.hop(arch.conv)} samples per frame, the teacher {data.hop(tarch.conv)}: "
            "frames must align (use the teacher's strides)"
        )
    method = job["method"]
    pairs = method_pairs(method, arch.depth, tarch.depth, job["method_config"])
    layers = sorted({t for _, t in pairs})
    planned = job.get("targets", {}).get("layers")
    if planned is not None and sorted(int(k) for k in planned) != layers:
        raise DeepwideError(
            f"the study planned teacher layers {sorted(planned)} for {method} {arch.name}, but the teacher "
            f"{teacher_ckpt} ({tarch.depth} layers) gives {layers}: teacher.pretrain.arch.depth (or the imported "
            "checkpoint's config) must match the teacher checkpoint"
        )
    torch.manual_seed(int(job["train"]["seed"]))
    student = build_model(arch)
    heads = KDHeads(method, pairs, arch.width, tarch.width)
    copied = []
    if job["init"] in ("teacher_frontend", "distilhubert"):
        copied = init_from_teacher(student, arch, teacher, tarch)
    if job["init"] == "distilhubert":
        copied += init_encoder_from_teacher(student, arch, teacher, tarch)
    if job["frontend"] == "frozen":
        if job["init"] not in ("teacher_frontend", "distilhubert"):
            raise DeepwideError("distill.frontend frozen needs distill.init teacher_frontend or distilhubert")
        for p in student.feature_extractor.parameters():
            p.requires_grad_(False)
    return Models(teacher, tarch, sha256_file(teacher_ckpt), bool(tmeta.get("normalize", False)), arch, student,
                  heads, pairs, layers, [target_name(method, p) for p in pairs], copied)


def training_utterances(job: dict, manifests, targets_dirs, m: Models) -> tuple[list, TargetCacheSet | None, dict, dict]:
    """The windows the student trains on (and its teacher sees), the targets cache (cached
    mode), the crop policy and the skip record."""
    tc, cached = job["train"], job["targets"]["mode"] == "cached"
    # the crop policy (distill.targets.crop): jobs built without one train as before (full)
    crop = data.crop_spec(**(job["targets"].get("crop") or {"policy": "full"}))
    if crop["policy"] == "fixed" and crop["max_seconds"] != float(tc["max_seconds"]):
        raise DeepwideError(f"targets crop max_seconds {crop['max_seconds']} differs from train.max_seconds "
                            f"{tc['max_seconds']}: the fixed windows are the student's crops")
    where = ", ".join(map(str, manifests))
    df = read_manifests(manifests)
    # frames as the teacher sees them (the cache was extracted with its conv), else the student's
    conv = m.tarch.conv if cached else m.arch.conv
    kept, skipped = data.drop_short(data.manifest_utterances(df, conv), tc["min_seconds"], m.arch.conv, where)
    if not kept:
        raise DeepwideError(f"no utterance of at least {tc['min_seconds']} s in {where}")
    # what the student and its teacher see: the whole utterances (randomly cropped per epoch) or
    # their fixed windows (the plan then has nothing left to crop); the cache's must be the same
    utts = data.crop_utterances(kept, crop, conv)
    cache = None
    if cached:
        if not targets_dirs:
            raise DeepwideError("cached targets mode needs --targets DIR (one per teacher layer, and the front end)")
        cache = TargetCacheSet(targets_dirs)
        cache.check(m.teacher_sha, m.layers, job["targets"]["frontend"], data.manifest_digest(df), crop)
        check_cached_windows(cache, utts, targets_dirs)
    max_frames = data.max_crop_frames(tc["max_seconds"], m.arch.conv)
    return utts, cache, {**crop, **data.crop_stats(kept, utts, max_frames)}, skipped


def check_cached_windows(cache: TargetCacheSet, utts: list, targets_dirs) -> None:
    """Every window the student reads has its targets in the cache, with the same samples and frames."""
    have = {u.id: u for u in cache.utterances()}
    for u in utts:
        c = have.get(u.id)
        if c is None or (c.start, c.num_samples, c.frames) != (u.start, u.num_samples, u.frames):
            got = "missing" if c is None else f"samples {c.start}+{c.num_samples}, {c.frames} frames"
            raise DeepwideError(
                f"stale targets: utterance {u.id} in {', '.join(map(str, targets_dirs))} is {got}; the student's "
                f"window is samples {u.start}+{u.num_samples}, {u.frames} frames; rerun `deepwide targets extract`"
            )


# ---------------------------------------------------------------- one forward per mode


class Forward:
    """One step's forward: student predictions, teacher targets and the valid-frame mask.

    A subclass per mode supplies the front-end features the student's encoder reads and
    the targets; bf16 autocast on CUDA, float32 on CPU."""

    mode = ""

    def __init__(self, m: Models, dev: torch.device, frontend: str, fe_scale: float):
        self.student, self.heads, self.teacher = m.student, m.heads, m.teacher
        self.pairs, self.layers, self.dev = m.pairs, m.layers, dev
        self.frozen, self.fe_scale = frontend == "frozen", fe_scale
        self.autocast = "bfloat16" if dev.type == "cuda" else "float32"  # the student's compute dtype (info.json)

    def __call__(self, batch: dict):
        dev = self.dev
        flen = batch["frame_lengths"].to(dev, non_blocking=True)
        wavs = lengths = None
        if "wavs" in batch:
            wavs = batch["wavs"].to(dev, non_blocking=True)
            lengths = batch["lengths"].to(dev, non_blocking=True)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=self.autocast == "bfloat16"):
            feats = self.features(batch, wavs, lengths)
            states, _ = hidden_states(self.student, None, flen, features=feats)
            preds = self.heads(states)
        targets = self.targets(batch, wavs, lengths, feats)
        fmax = preds[0].shape[1]
        if targets[0].shape[1] != fmax:
            raise DeepwideError(f"student gave {fmax} frames, targets have {targets[0].shape[1]} (batch {batch['ids'][:3]})")
        mask = torch.arange(fmax, device=dev)[None, :] < flen[:, None]
        return preds, targets, mask

    def student_features(self, wavs, lengths):
        """The student's own conv front end: frozen, gradient-scaled or trainable."""
        if self.frozen:
            with torch.no_grad():
                return self.student.feature_extractor(wavs, lengths)[0]
        feats, _ = self.student.feature_extractor(wavs, lengths)
        return scale_grad(feats, self.fe_scale) if self.fe_scale != 1.0 else feats


class CachedForward(Forward):
    """Targets from the cache; the student runs its own conv."""

    mode = "cached-targets"

    def features(self, batch, wavs, lengths):
        return self.student_features(wavs, lengths)

    def targets(self, batch, wavs, lengths, feats):
        tgt = batch["targets"].to(self.dev, non_blocking=True)
        return [tgt[:, :, self.layers.index(t)] for _, t in self.pairs]


class CachedFrontendForward(CachedForward):
    """Frozen teacher front end read from the cache too: no conv and no audio at all."""

    mode = "cached-targets+cached-frontend"

    def features(self, batch, wavs, lengths):
        return batch["features"].to(self.dev, non_blocking=True).float()


class OnlineForward(Forward):
    """Teacher forward every step."""

    mode = "online"

    def features(self, batch, wavs, lengths):
        return self.student_features(wavs, lengths)

    def targets(self, batch, wavs, lengths, feats, shared=None):
        outs, _, _ = teacher_forward(self.teacher, wavs, lengths, self.layers, self.dev, features=shared)
        return [outs[self.layers.index(t)] for _, t in self.pairs]


class SharedFrontendForward(OnlineForward):
    """Teacher forward every step; the frozen teacher front end feeds teacher and student."""

    mode = "online-shared-frontend"

    def features(self, batch, wavs, lengths):
        with torch.no_grad():
            return self.teacher.feature_extractor(wavs, lengths)[0]

    def targets(self, batch, wavs, lengths, feats, shared=None):
        return super().targets(batch, wavs, lengths, feats, shared=feats.detach())


def forward_class(job: dict) -> type[Forward]:
    frozen = job["frontend"] == "frozen"
    if job["targets"]["mode"] == "cached":
        return CachedFrontendForward if job["targets"]["frontend"] and frozen else CachedForward
    return SharedFrontendForward if frozen else OnlineForward


# ---------------------------------------------------------------- resume state


@dataclass
class Progress:
    """Where a run stands: what the resume state holds besides weights and optimizer."""

    step: int = 0
    curve: list = field(default_factory=list)
    audio_seconds: float = 0.0
    train_seconds: float = 0.0
    wall_prev: float = 0.0  # wall seconds of earlier (resumed) runs


def restore(path: Path, jh: str, modules: dict, cuda: bool) -> Progress:
    """Load the state at ``path`` into ``modules`` (student, heads, optimizer, scheduler) if
    it belongs to this job; the progress to continue from (step 0 otherwise)."""
    if not path.is_file():
        return Progress()
    st = train_loop.load_state(path)
    if st.get("format") != STATE_FORMAT or st.get("job_hash") != jh:
        log.warning("resume state %s belongs to another job config: starting from step 0", path)
        return Progress()
    for name, module in modules.items():
        module.load_state_dict(st[name])
    torch.set_rng_state(st["rng_cpu"])
    if cuda and st.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(st["rng_cuda"])
    return Progress(st["step"], st["curve"], st["audio_seconds"], st["train_seconds"], st["wall_seconds"])


def snapshot(job: dict, jh: str, modules: dict, cuda: bool, p: Progress, plan, t_start: float, rng=None) -> dict:
    """The full resume state; ``rng`` (CPU, CUDA generator states) defaults to the current ones."""
    rng_cpu, rng_cuda = rng or (torch.get_rng_state(), torch.cuda.get_rng_state() if cuda else None)
    return {
        "format": STATE_FORMAT, "job_hash": jh, "job": job,
        **{name: module.state_dict() for name, module in modules.items()},
        "rng_cpu": rng_cpu, "rng_cuda": rng_cuda if cuda else None,
        "step": p.step, "epoch": plan.position(p.step)[0], "pos": plan.position(p.step)[1], "curve": p.curve,
        "audio_seconds": p.audio_seconds, "train_seconds": p.train_seconds,
        "wall_seconds": p.wall_prev + time.time() - t_start,
    }


@contextlib.contextmanager
def caught_signals():
    """SIGTERM and SIGUSR1 are recorded (the loop saves at the next step boundary and exits)."""
    caught: list[int] = []
    old = {s: signal.signal(s, lambda signum, _frame: caught.append(signum)) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        yield caught
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ---------------------------------------------------------------- the loop


def loss_problem(vals: list[float], recent, names: list[str], step: int, batch: dict, targets_dirs) -> str | None:
    """Why a step's loss must not be trained on (non-finite, or orders of magnitude above the
    last steps: corrupt targets or a diverged run), or None."""
    if not all(np.isfinite(vals)):
        return (f"non-finite loss at step {step + 1} ({dict(zip(['total'] + names, vals))}); "
                f"utterances {', '.join(batch['ids'])}")
    if recent and vals[0] > LOSS_JUMP * float(np.median(recent)):
        return (f"loss jumped at step {step + 1}: {vals[0]:.4g}, more than {LOSS_JUMP:g} x the median "
                f"{float(np.median(recent)):.4g} of the previous {len(recent)} step(s); utterances "
                f"{', '.join(batch['ids'])}; check "
                + (f"the targets cache(s) {', '.join(map(str, targets_dirs))} and " if targets_dirs else "")
                + "the teacher")
    return None


class LossMeter:
    """Mean losses since the last curve row."""

    def __init__(self, names: list[str]):
        self.names = names
        self.reset()

    def reset(self) -> None:
        self.n, self.sums = 0, [0.0] * (1 + len(self.names))

    def add(self, vals: list[float]) -> None:
        self.n += 1
        for i, v in enumerate(vals):
            self.sums[i] += v

    def row(self) -> dict:
        means = [s / self.n for s in self.sums]
        self.reset()
        return {"loss": means[0], **{f"loss_{n}": v for n, v in zip(self.names, means[1:])}}


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
    tc, steps = job["train"], int(job["train"]["steps"])
    dev = torch.device(resolve_device(device))
    cuda = dev.type == "cuda"
    jh = job_hash(job)

    # ---- models, data, optimizer
    m = load_models(job, teacher_ckpt)
    n_params = model_params(m.student, m.arch)
    utts, cache, crop_info, skipped = training_utterances(job, manifests, targets_dirs, m)
    Fwd = forward_class(job)
    if Fwd in (CachedFrontendForward, CachedForward):
        m.teacher = None
    else:
        m.teacher = m.teacher.to(dev).eval().requires_grad_(False)
    m.student.to(dev).train()
    m.heads.to(dev).train()
    params = [p for p in m.student.parameters() if p.requires_grad] + list(m.heads.parameters())
    optimizer = train_loop.adamw(params, tc["lr"], tc["betas"], tc["eps"], tc["weight_decay"], fused=cuda)
    scheduler = train_loop.linear_schedule(optimizer, tc["steps"], tc["warmup"])
    modules = {"student": m.student, "heads": m.heads, "optimizer": optimizer, "scheduler": scheduler}
    fe_scale = float(job["frontend_grad_scale"]) if job["frontend"] == "scaled" else 1.0
    fwd = Fwd(m, dev, job["frontend"], fe_scale)
    fwd_c = torch.compile(fwd.__call__, dynamic=True) if tc.get("compile") else fwd

    # ---- resume
    resume_dir = Path(resume_dir)
    resume_dir.mkdir(parents=True, exist_ok=True)
    state_path = resume_dir / "state.pt"
    run = restore(state_path, jh, modules, cuda)
    plan = step_plan(utts, m.arch, tc)  # batch g of the run = step g + 1

    def save(rng=None) -> None:
        train_loop.save_state(state_path, snapshot(job, jh, modules, cuda, run, plan, t_start, rng))

    if run.step:
        log.info("resumed from %s at step %d (epoch %d, batch %d of %d)", state_path, run.step,
                 *plan.position(run.step), plan.per_epoch)
    log.info("distill %s %s (%d params, KD targets %s) from teacher %dx%d, mode %s, %d utterances, crop %s (%.1f %% "
             "of the audio), device %s, init %s (%s), front end %s", job["method"], m.arch.name, n_params, m.names,
             m.tarch.depth, m.tarch.width, Fwd.mode, len(utts), crop_info["policy"],
             100 * crop_info["audio_kept_fraction"], dev, job["init"], ",".join(m.copied) or "-", job["frontend"])
    loader = make_loader(utts, plan, m, cache, Fwd, tc, run.step, cuda)
    meter = LossMeter(m.names)
    recent: collections.deque = collections.deque(maxlen=50)  # the last steps' losses: a jump is an error
    bar = tqdm(total=steps, initial=run.step, desc=f"{job['method']} {m.arch.name}", unit="step", mininterval=5)
    with caught_signals() as caught, contextlib.closing(bar):
        t0 = time.perf_counter()  # step time includes waiting for the loader
        for batch in loader:
            rng = (torch.get_rng_state(), torch.cuda.get_rng_state() if cuda else None)
            preds, targets, mask = fwd_c(batch)
            parts = [kd_loss(p, t, mask, job["loss"]["cos_weight"])[0] for p, t in zip(preds, targets)]
            total = kd_total(parts)  # mean over targets
            vals = torch.stack([total.detach()] + [x.detach() for x in parts]).float().cpu().tolist()
            problem = loss_problem(vals, recent, m.names, run.step, batch, targets_dirs)
            if problem:  # the optimizer has not stepped on it
                save(rng)
                raise DeepwideError(f"{problem}; state saved to {state_path}")
            recent.append(vals[0])
            gnorm = train_loop.optimizer_step(total, params, optimizer, scheduler, tc["grad_clip"])
            run.step += 1
            if cuda and (run.step % tc["log_every"] == 0):
                torch.cuda.synchronize()
            now = time.perf_counter()
            run.train_seconds += now - t0
            t0 = now
            run.audio_seconds += batch["audio_samples"] / SAMPLE_RATE
            meter.add(vals)
            bar.update(1)
            if train_loop.due(run.step, tc["log_every"], steps):
                log_row(run, plan, scheduler, gnorm, meter, steps)
            if caught:
                save()
                log.warning("signal %d: state saved at step %d to %s; exiting for requeue", caught[0], run.step,
                            state_path)
                raise Preempted(caught[0], run.step)
            if run.step % tc["checkpoint_every"] == 0 and run.step < steps:
                save()

    save()  # a crash while exporting resumes at the end
    # what a GPU check verifies: the compiled forward and the autocast dtype actually used
    numerics = {"compile": fwd_c is not fwd, "autocast": fwd.autocast}
    info = write_outputs(job, teacher_ckpt, m, Path(out_dir), hf_dir, run, t_start, jh, Fwd.mode, str(dev),
                         n_params, len(utts), crop_info, skipped, numerics)
    state_path.unlink(missing_ok=True)  # finished: the outputs are the state now (optimizer state is large)
    log.info("done: %s (%.0f s, %.1f audio-s/s, mode %s)", Path(out_dir) / "student.pt", info["wall_time_s"],
             info["audio_seconds_per_second"], Fwd.mode)
    return info


def step_plan(utts: list, arch: ArchConfig, tc: dict) -> data.StepPlan:
    """Batches of at most ``batch_seconds`` of padded audio, crops of at most ``max_seconds``."""
    max_frames = data.max_crop_frames(tc["max_seconds"], arch.conv)
    fps = SAMPLE_RATE / data.hop(arch.conv)
    batch_frames = max(1, int(tc["batch_seconds"] * fps))
    return data.StepPlan([u.frames for u in utts], max_frames, batch_frames, int(tc["seed"]))


def make_loader(utts: list, plan, m: Models, cache, Fwd: type[Forward], tc: dict, step: int, cuda: bool):
    """The batches of steps ``step + 1`` to the last, read by ``num_workers`` processes."""
    ds = data.BatchLoader(utts, plan, m.arch.conv, cache, m.layers, need_audio=Fwd is not CachedFrontendForward,
                          use_frontend=Fwd is CachedFrontendForward, normalize=m.normalize)
    nw = int(tc["num_workers"])
    return torch.utils.data.DataLoader(
        ds, batch_size=None, sampler=range(step, int(tc["steps"])), num_workers=nw, pin_memory=cuda,
        generator=torch.Generator().manual_seed(int(tc["seed"])),  # keeps DataLoader from drawing on the global RNG
        prefetch_factor=4 if nw else None,
    )


def log_row(run: Progress, plan, scheduler, gnorm: float, meter: LossMeter, steps: int) -> None:
    """Append the curve row of the steps since the last one, and log it."""
    names = meter.names
    losses = meter.row()
    row = {"step": run.step, "epoch": plan.position(run.step - 1)[0], "lr": scheduler.get_last_lr()[0],
           "grad_norm": gnorm, **losses, "audio_seconds": run.audio_seconds, "train_seconds": run.train_seconds,
           "audio_seconds_per_second": run.audio_seconds / max(run.train_seconds, 1e-9)}
    run.curve.append(row)
    log.info("step %d/%d loss %.4f (%s) lr %.2e %.1f audio-s/s", run.step, steps, row["loss"],
             " ".join(f"{n}={row['loss_' + n]:.4f}" for n in names), row["lr"], row["audio_seconds_per_second"])


def write_outputs(job, teacher_ckpt, m: Models, out_dir: Path, hf_dir, run: Progress, t_start: float, jh: str,
                  mode: str, device: str, n_params: int, n_utts: int, crop_info: dict, skipped: dict,
                  numerics: dict) -> dict:
    """student.pt, kd_heads.pt, curve.parquet, [hf/], and info.json the very last."""
    import pandas as pd

    method, arch, tarch, pairs = job["method"], m.arch, m.tarch, [list(p) for p in m.pairs]
    m.student.eval().cpu()
    meta = {"kd_method": method, "pairs": pairs, "teacher_sha256": m.teacher_sha,
            "teacher_arch": tarch.to_dict(), "steps": int(job["train"]["steps"]), "job_hash": jh, "mode": mode,
            "normalize": m.normalize, "source": f"deepwide distill {method}"}
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out_dir / "student.pt", m.student, arch, meta)
    # the KD heads beside the student: the report's held-out KD loss needs them (deepwide.report.kdloss)
    torch.save({"method": method, "pairs": pairs, "student_width": arch.width,
                "teacher_width": tarch.width, "state_dict": m.heads.cpu().state_dict()}, out_dir / "kd_heads.pt")
    write_parquet(pd.DataFrame(run.curve), out_dir / "curve.parquet")
    if hf_dir is not None:
        from deepwide.models.convert import export_hf

        export_hf(out_dir / "student.pt", hf_dir)
    info = {
        "method": method, "shape": arch.name, "arch": arch.to_dict(), "params": n_params,
        "kd_head_params": sum(p.numel() for p in m.heads.parameters()),
        "pairs": pairs, "targets": m.names, "teacher": str(teacher_ckpt), "teacher_sha256": m.teacher_sha,
        "mode": mode, "init": job["init"], "init_copied": m.copied, "frontend": job["frontend"], "device": device,
        **numerics,  # compile (bool), autocast ("bfloat16" on CUDA, "float32" on CPU)
        "steps": int(job["train"]["steps"]),
        "final_loss": run.curve[-1]["loss"] if run.curve else None,
        "audio_seconds": run.audio_seconds,
        "train_seconds": run.train_seconds,
        "audio_seconds_per_second": run.audio_seconds / max(run.train_seconds, 1e-9),
        "wall_time_s": run.wall_prev + time.time() - t_start,  # over all resumed runs
        "job_hash": jh,
        "num_utterances": n_utts,
        "crop": crop_info,  # policy; share of audio the windows keep; share of frames past one crop
        "skipped": [skipped],  # utterances left out for length (count, threshold)
        "usage": usage(),  # peak memory and wall time of this job (plan resources)
    }
    atomic_write_text(out_dir / "info.json", json.dumps(info, indent=1))
    return info
