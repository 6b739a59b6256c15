"""KD training throughput: the s3prl-style reference loop vs deepwide's pipeline loop.

    python benchmarks/kd_throughput.py [--device auto] [--out kd_throughput.json]

In one process, for each student shape:

- reference: the teacher runs online in float32 every step; the student runs under fp16
  autocast with a GradScaler and a non-fused AdamW, its conv front end trained with
  gradients x 0.1 (what s3prl's DistilHuBERT distiller does). On CPU there is no fp16
  autocast in s3prl: the student runs in float32.
- pipeline: ``deepwide.distill.trainer.train`` itself: teacher targets and the frozen
  teacher front end read from a targets cache on disk (memory-mapped shards, through the
  real loader), bf16 autocast and fused AdamW on CUDA; ``--compile`` adds torch.compile.

Both read the same audio through the same length-bucketed loader and the same batch
plan. Audio-seconds per second are measured after ``--warmup`` steps. GPU defaults: the
HuBERT Base teacher shape (random weights) and the 2x768, 3x768, 12x384 students at
batch 24 x 12 s; CPU defaults: a small teacher and students at batch 4 x 4 s. Audio is
synthesized (harmonic tones + noise): throughput does not depend on what is said.
Prints a table and writes JSON.
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

from deepwide.distill import data, targets  # noqa: E402
from deepwide.distill.methods import KDHeads, kd_loss, method_pairs  # noqa: E402
from deepwide.distill.trainer import scale_grad, train  # noqa: E402
from deepwide.models.arch import ArchConfig, build_model, conv_layers, hidden_states  # noqa: E402
from deepwide.models.checkpoint import save_checkpoint  # noqa: E402

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
    layers = sorted({t for _, t in pairs})
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
    audio, t_start = 0.0, None
    for i, b in enumerate(loader):
        if i == warmup:
            if cuda:
                torch.cuda.synchronize()
            t_start, audio = time.perf_counter(), 0.0
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
    if cuda:
        torch.cuda.synchronize()
    return audio / (time.perf_counter() - t_start)


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
    with tempfile.TemporaryDirectory() as tmp:
        info = train(job, teacher_ckpt, [manifest], Path(tmp) / "out", Path(tmp) / "resume", targets_dirs=cache,
                     device=str(dev))
        curve = pd.read_parquet(Path(tmp) / "out" / "curve.parquet")
    # steady state: from the first log row (after `warmup` steps) to the end
    first, last = curve.iloc[0], curve.iloc[-1]
    return (last["audio_seconds"] - first["audio_seconds"]) / (last["train_seconds"] - first["train_seconds"]), info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--shapes", help="comma-separated student shapes DxWfFhH (default: by device)")
    ap.add_argument("--batch", type=int, help="utterances per batch (GPU 24, CPU 4)")
    ap.add_argument("--seconds", type=float, help="seconds per utterance (GPU 12, CPU 4)")
    ap.add_argument("--steps", type=int, help="timed steps + warmup (GPU 60, CPU 16)")
    ap.add_argument("--warmup", type=int, help="untimed first steps (GPU 10, CPU 4)")
    ap.add_argument("--workers", type=int, default=None, help="loader workers (GPU 8, CPU 0)")
    ap.add_argument("--compile", action="store_true", help="also time the pipeline with torch.compile")
    ap.add_argument("--workdir", help="where audio and the targets cache go (default: a temporary folder)")
    ap.add_argument("--out", default="kd_throughput.json")
    args = ap.parse_args(argv)
    dev = targets.pick_device(args.device)
    gpu = dev.type == "cuda"
    batch = args.batch or (24 if gpu else 4)
    seconds = args.seconds or (12.0 if gpu else 4.0)
    steps = args.steps or (60 if gpu else 16)
    warmup = args.warmup or (10 if gpu else 4)
    workers = args.workers if args.workers is not None else (8 if gpu else 0)
    tarch = ArchConfig(**(GPU_TEACHER if gpu else CPU_TEACHER))
    shapes = args.shapes.split(",") if args.shapes else (GPU_STUDENTS if gpu else CPU_STUDENTS)
    device_name = torch.cuda.get_device_name(dev) if gpu else f"{platform.processor() or 'cpu'} x{os.cpu_count()} ({torch.get_num_threads()} threads)"

    work_ctx = tempfile.TemporaryDirectory() if not args.workdir else None
    work = Path(args.workdir or work_ctx.name)
    work.mkdir(parents=True, exist_ok=True)
    n_utts = batch * 4  # four distinct batches, reused across epochs
    t0 = time.time()
    manifest = synth_audio(work, n_utts, seconds)
    torch.manual_seed(0)
    teacher = build_model(tarch)
    ckpt = work / "teacher.pt"
    save_checkpoint(ckpt, teacher, tarch, {"source": "benchmark (random weights)"})
    teacher = teacher.to(dev).eval()
    layers = sorted({t for _, t in method_pairs("pred", 2, tarch.depth, {"layers": None, "num_targets": 3})})
    cache_info = targets.extract(ckpt, [manifest], layers, work / "targets", frontend=True, device=str(dev))
    print(f"setup {time.time() - t0:.0f} s; targets cache {cache_info['bytes_per_audio_second'] / 1e3:.0f} KB per audio second",
          file=sys.stderr)

    rows = []
    for name in shapes:
        arch = parse_shape(name, tarch)
        ref = reference_loop(teacher, tarch, arch, manifest, batch, seconds, steps, warmup, dev, workers)
        pipe, info = pipeline_loop(ckpt, arch, manifest, work / "targets", batch, seconds, steps, warmup, dev, workers, False)
        row = {"student": name, "reference": ref, "pipeline": pipe, "ratio": pipe / ref, "mode": info["mode"]}
        if args.compile:
            comp, _ = pipeline_loop(ckpt, arch, manifest, work / "targets", batch, seconds, steps, warmup, dev, workers, True)
            row.update(compiled=comp, compiled_ratio=comp / ref)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)

    result = {"device": device_name, "torch": torch.__version__, "batch": batch, "seconds": seconds, "steps": steps,
              "warmup": warmup, "workers": workers, "teacher": tarch.name,
              "targets_bytes_per_audio_second": cache_info["bytes_per_audio_second"], "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"\nKD throughput, audio-seconds per second ({device_name}; teacher {tarch.name}; batch {batch} x {seconds:g} s)")
    head = f"| student | reference | pipeline | ratio |" + (" compiled | ratio |" if args.compile else "")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        line = f"| {r['student']} | {r['reference']:.0f} | {r['pipeline']:.0f} | {r['ratio']:.2f}x |"
        if args.compile:
            line += f" {r['compiled']:.0f} | {r['compiled_ratio']:.2f}x |"
        print(line)
    print(f"JSON: {args.out}")
    if work_ctx:
        work_ctx.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
