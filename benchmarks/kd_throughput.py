"""KD training throughput: the s3prl-style reference loop vs deepwide's pipeline loop.

    python benchmarks/kd_throughput.py [--quick] [--device auto] [--repeats 3] [--out kd_throughput.json]

In one process, for each student shape:

- reference: the teacher runs online in float32 every step; the student runs under fp16
  autocast with a GradScaler and a non-fused AdamW, its conv front end trained with
  gradients x 0.1 (what s3prl's DistilHuBERT distiller does). On CPU there is no fp16
  autocast in s3prl: the student runs in float32.
- pipeline: ``deepwide.distill.trainer.train`` itself: teacher targets and the frozen
  teacher front end read from a targets cache on disk (memory-mapped shards, through the
  real loader), bf16 autocast and fused AdamW on CUDA; ``--compile`` adds torch.compile.

Both read the same audio through the same length-bucketed loader and the same batch
plan. Audio-seconds per second are measured after ``--warmup`` steps, batch fetches
included. Each shape runs reference and pipeline interleaved, ``--repeats`` times (A B A B
..., see ``interleave.py``): ``ratio`` is the median of the per-repeat ratios pipeline /
reference, with ``ratio_min``/``ratio_max``. On CPU the clock is this process's CPU time
(one torch thread unless ``--threads``; the pipeline's from the trainer's own step clock,
read through :class:`StepClock`), with ``wall_ratio`` beside it; on CUDA wall time. GPU
defaults: the HuBERT Base teacher shape (random weights) and the 2x768, 3x768, 12x384
students at batch 24 x 12 s; CPU defaults: a small teacher and students at batch 4 x 4 s.
Audio is synthesized (harmonic tones + noise): throughput does not depend on what is said.
Prints a table and writes JSON. ``kd_step_profile.py`` splits a step's CPU time into parts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from interleave import Clock, interleave, now, since, summarize  # noqa: E402

import deepwide.distill.trainer as trainer_module  # noqa: E402
from deepwide.distill import data, targets  # noqa: E402
from deepwide.distill.methods import KDHeads, kd_loss, method_pairs  # noqa: E402
from deepwide.distill.trainer import scale_grad, train  # noqa: E402
from deepwide.models.arch import ArchConfig, build_model, conv_layers, hidden_states  # noqa: E402
from deepwide.models.checkpoint import save_checkpoint  # noqa: E402
from deepwide.utils.device import resolve_device  # noqa: E402

GPU_TEACHER = dict(depth=12, width=768, ffn=3072, heads=12)
GPU_STUDENTS = ["2x768f3072h12", "3x768f3072h12", "12x384f1536h6"]
CPU_TEACHER = dict(depth=4, width=256, ffn=1024, heads=4, conv=conv_layers(128), pos_conv_kernel=64, pos_conv_groups=16)
CPU_STUDENTS = ["2x160f640h4", "3x128f512h4", "8x64f256h2"]


def parse_shape(name: str, like: ArchConfig) -> ArchConfig:
    d, rest = name.split("x")
    w, rest = rest.split("f")
    f, h = rest.split("h")
    return ArchConfig(depth=int(d), width=int(w), ffn=int(f), heads=int(h), conv=like.conv,
                      pos_conv_kernel=like.pos_conv_kernel, pos_conv_groups=like.pos_conv_groups)


def synth_audio(folder: Path, n: int, seconds: float, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    t = np.arange(int(seconds * data.SAMPLE_RATE)) / data.SAMPLE_RATE
    for i in range(n):
        f0 = rng.uniform(90, 250)
        wav = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 8))
        wav = 0.1 * wav * (1 + np.sin(2 * np.pi * rng.uniform(2, 6) * t)) + 0.01 * rng.standard_normal(len(t))
        p = folder / f"utt{i:04d}.wav"
        sf.write(p, wav.astype(np.float32), data.SAMPLE_RATE, subtype="PCM_16")
        rows.append({"id": p.stem, "path": str(p), "num_samples": len(t), "sample_rate": data.SAMPLE_RATE})
    man = folder / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(man, index=False)
    return man


def reference_loop(teacher, tarch, arch, manifest, batch, seconds, steps, warmup, dev, workers):
    """s3prl-style step: fp32 online teacher, fp16-autocast student + GradScaler, plain AdamW."""
    torch.manual_seed(0)
    cuda = dev.type == "cuda"
    student = build_model(arch).to(dev).train()
    pairs = method_pairs("pred", arch.depth, tarch.depth, {"layers": None, "num_targets": 3})
    heads = KDHeads("pred", pairs, arch.width, tarch.width).to(dev)
    params = list(student.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=2e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=1e-6, foreach=False, fused=False)
    scaler = torch.amp.GradScaler(dev.type, enabled=cuda)
    df = pd.read_parquet(manifest)
    utts = [data.Utterance(u, p, int(n), data.num_frames(int(n), arch.conv)) for u, p, n in
            zip(df["id"], df["path"], df["num_samples"])]
    frames = [u.frames for u in utts]
    fps = data.SAMPLE_RATE / data.hop(arch.conv)
    plan = []
    epoch = 0
    while len(plan) < steps:
        plan += data.epoch_plan(frames, int(seconds * fps), int(batch * seconds * fps), 0, epoch)
        epoch += 1
    ds = data.BatchLoader(utts, plan[:steps], arch.conv)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers, pin_memory=cuda,
                                         generator=torch.Generator().manual_seed(0))
    audio, t_start = 0.0, now()  # restarted after `warmup` steps: timed steps include their batch fetch
    for i, b in enumerate(loader):
        wavs, lengths = b["wavs"].to(dev, non_blocking=True), b["lengths"].to(dev, non_blocking=True)
        with torch.no_grad():
            feats_t, flen = teacher.feature_extractor(wavs, lengths)
            states_t, _ = hidden_states(teacher, None, flen, features=feats_t)
        with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=cuda):
            feats, flen = student.feature_extractor(wavs, lengths)
            states, _ = hidden_states(student, None, flen, features=scale_grad(feats, 0.1))
            preds = heads(states)
        mask = torch.arange(preds[0].shape[1], device=dev)[None] < flen[:, None]
        loss = sum(kd_loss(p, states_t[t], mask)[0] for p, (_, t) in zip(preds, pairs))
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        scaler.step(opt)
        scaler.update()
        audio += b["audio_samples"] / data.SAMPLE_RATE
        if i + 1 == warmup:
            if cuda:
                torch.cuda.synchronize()
            t_start, audio = now(), 0.0
    if cuda:
        torch.cuda.synchronize()
    return audio, since(t_start)


class StepClock:
    """Stands in for ``time`` in the trainer's module during one benchmark call: the trainer
    reads ``time.perf_counter()`` once before its loop and once after every step; this one
    also notes this process's CPU time at each of those reads."""

    def __init__(self):
        self.marks: list[Clock] = []

    def perf_counter(self) -> float:
        self.marks.append(now())
        return self.marks[-1].wall

    def __getattr__(self, name):
        return getattr(time, name)


def pipeline_loop(teacher_ckpt, arch, manifest, cache, batch, seconds, steps, warmup, dev, workers, compile_):
    job = {
        "method": "pred", "method_config": {"layers": None, "num_targets": 3}, "arch": arch.to_dict(),
        "loss": {"cos_weight": 1.0}, "init": "teacher_frontend", "frontend": "frozen", "frontend_grad_scale": 0.1,
        "train": {"steps": steps, "lr": 2e-4, "warmup": 0.07, "betas": [0.9, 0.98], "eps": 1e-6, "weight_decay": 1e-6,
                  "grad_clip": 5.0, "batch_seconds": batch * seconds, "max_seconds": seconds, "min_seconds": 0.5,
                  "checkpoint_every": 10 ** 9, "log_every": warmup, "compile": compile_, "num_workers": workers,
                  "cpu_threads": torch.get_num_threads(), "seed": 0},
        "targets": {"mode": "cached", "frontend": True},
    }
    clock = StepClock()
    trainer_module.time = clock
    try:
        with tempfile.TemporaryDirectory() as tmp:
            info = train(job, teacher_ckpt, [manifest], Path(tmp) / "out", Path(tmp) / "resume", targets_dirs=cache,
                         device=str(dev))
            curve = pd.read_parquet(Path(tmp) / "out" / "curve.parquet")
    finally:
        trainer_module.time = time
    if len(clock.marks) != steps + 1:
        raise RuntimeError(f"the trainer read time.perf_counter() {len(clock.marks)} times in {steps} steps, not once "
                           "before its loop and once per step: update StepClock to its step timing")
    # steady state: from the first log row (after `warmup` steps) to the end; wall time from
    # the curve (synchronized on CUDA), CPU time from the step clock
    first, last = curve.iloc[0], curve.iloc[-1]
    cpu = clock.marks[steps].cpu - clock.marks[warmup].cpu
    return last["audio_seconds"] - first["audio_seconds"], Clock(cpu, last["train_seconds"] - first["train_seconds"]), info


def measure(name, tarch, teacher, ckpt, manifest, work, size, dev, args) -> dict:
    """One student shape: reference and pipeline (and compiled) interleaved ``args.repeats`` times."""
    arch = parse_shape(name, tarch)
    batch, seconds, steps, warmup, workers = size
    gpu = dev.type == "cuda"

    def pipe(compile_):
        return pipeline_loop(ckpt, arch, manifest, work / "targets", batch, seconds, steps, warmup, dev, workers, compile_)

    runs = interleave(lambda: reference_loop(teacher, tarch, arch, manifest, batch, seconds, steps, warmup, dev, workers),
                      lambda: (pipe(False), pipe(True) if args.compile else None), args.repeats)
    row = {"student": name, **summarize([(ra, rc, pa, pc) for (ra, rc), ((pa, pc, _), _) in runs], gpu)}
    row["pipeline"] = row.pop("ours")
    row["mode"] = runs[0][1][0][2]["mode"]
    row["cpu_s"] = [[round(rc.cpu, 2), round(pc.cpu, 2)] for (_, rc), ((_, pc, _), _) in runs]
    row["wall_s"] = [[round(rc.wall, 2), round(pc.wall, 2)] for (_, rc), ((_, pc, _), _) in runs]
    if args.compile:
        comp = summarize([(ra, rc, ca, cc) for (ra, rc), (_, (ca, cc, _)) in runs], gpu)
        row.update(compiled=comp["ours"], compiled_ratio=comp["ratio"], compiled_ratio_min=comp["ratio_min"],
                   compiled_ratio_max=comp["ratio_max"])
    return row


def setup(work: Path, tarch: ArchConfig, batch: int, seconds: float, dev):
    """Synthesized audio, a random-weight teacher checkpoint and its targets cache."""
    n_utts = batch * 4  # four distinct batches, reused across epochs
    manifest = synth_audio(work, n_utts, seconds)
    torch.manual_seed(0)
    teacher = build_model(tarch)
    ckpt = work / "teacher.pt"
    save_checkpoint(ckpt, teacher, tarch, {"source": "benchmark (random weights)"})
    teacher = teacher.to(dev).eval()
    layers = sorted({t for _, t in method_pairs("pred", 2, tarch.depth, {"layers": None, "num_targets": 3})})
    cache_info = targets.extract(ckpt, [manifest], layers, work / "targets", frontend=True, device=str(dev))
    return manifest, teacher, ckpt, cache_info


def print_table(result: dict, compiled: bool) -> None:
    print(f"\nKD throughput, audio-seconds per second ({result['device']}; teacher {result['teacher']}; batch "
          f"{result['batch']} x {result['seconds']:g} s; {result['clock']}; median of {result['repeats']})")
    head = "| student | reference | pipeline | ratio | min-max | wall ratio |" + (" compiled | ratio |" if compiled else "")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in result["rows"]:
        line = (f"| {r['student']} | {r['reference']:.0f} | {r['pipeline']:.0f} | {r['ratio']:.2f}x | "
                f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f} | {r['wall_ratio']:.2f}x |")
        if compiled:
            line += f" {r['compiled']:.0f} | {r['compiled_ratio']:.2f}x |"
        print(line)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="fewer steps (CPU: about 3 minutes on 2 cores)")
    ap.add_argument("--shapes", help="comma-separated student shapes DxWfFhH (default: by device)")
    ap.add_argument("--batch", type=int, help="utterances per batch (GPU 24, CPU 4)")
    ap.add_argument("--seconds", type=float, help="seconds per utterance (GPU 12, CPU 4)")
    ap.add_argument("--steps", type=int, help="timed steps + warmup (GPU 60, CPU 40, --quick 16)")
    ap.add_argument("--warmup", type=int, help="untimed first steps (GPU 10, CPU 4)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved reference/pipeline pairs per shape (median of these)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 on CPU, torch's on CUDA)")
    ap.add_argument("--workers", type=int, default=None, help="loader workers (GPU 8, CPU 0)")
    ap.add_argument("--compile", action="store_true", help="also time the pipeline with torch.compile")
    ap.add_argument("--workdir", help="where audio and the targets cache go (default: a temporary folder)")
    ap.add_argument("--out", default="kd_throughput.json")
    args = ap.parse_args(argv)
    dev = torch.device(resolve_device(args.device, "--device"))
    gpu = dev.type == "cuda"
    threads = args.threads if args.threads is not None else (0 if gpu else 1)
    if threads:
        torch.set_num_threads(threads)
    batch = args.batch or (24 if gpu else 4)
    seconds = args.seconds or (12.0 if gpu else 4.0)
    steps = args.steps or (60 if gpu else 16 if args.quick else 40)
    warmup = args.warmup or (10 if gpu else 4)
    workers = args.workers if args.workers is not None else (8 if gpu else 0)
    tarch = ArchConfig(**(GPU_TEACHER if gpu else CPU_TEACHER))
    shapes = args.shapes.split(",") if args.shapes else (GPU_STUDENTS if gpu else CPU_STUDENTS)
    device_name = torch.cuda.get_device_name(dev) if gpu else f"{platform.processor() or 'cpu'} x{os.cpu_count()} ({torch.get_num_threads()} threads)"

    work_ctx = tempfile.TemporaryDirectory() if not args.workdir else None
    work = Path(args.workdir or work_ctx.name)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    manifest, teacher, ckpt, cache_info = setup(work, tarch, batch, seconds, dev)
    print(f"setup {time.time() - t0:.0f} s; targets cache {cache_info['bytes_per_audio_second'] / 1e3:.0f} KB per audio second",
          file=sys.stderr)
    rows = []
    for name in shapes:
        rows.append(measure(name, tarch, teacher, ckpt, manifest, work, (batch, seconds, steps, warmup, workers), dev, args))
        print(json.dumps(rows[-1]), file=sys.stderr)
    result = {"device": device_name, "torch": torch.__version__, "batch": batch, "seconds": seconds, "steps": steps,
              "warmup": warmup, "workers": workers, "teacher": tarch.name, "quick": bool(args.quick),
              "repeats": args.repeats, "clock": "wall time" if gpu else "process CPU time (wall time beside it)",
              "method": "reference and pipeline interleaved (ABAB...), median of the per-repeat ratios with min-max",
              "targets_bytes_per_audio_second": cache_info["bytes_per_audio_second"], "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print_table(result, args.compile)
    print(f"JSON: {args.out}")
    if work_ctx:
        work_ctx.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
