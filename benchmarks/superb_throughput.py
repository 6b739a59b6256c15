"""SUPERB head-training throughput: s3prl's one-lr-per-job loop vs deepwide's shared-pass sweep.

    python benchmarks/superb_throughput.py [--quick] [--device cpu|cuda|auto] [--repeats 3] [--out superb_throughput.json]

In one process, for each (task, upstream), a 3-lr sweep is trained both ways on the same
synthesized utterances, batches and steps:

- reference (s3prl): one job per lr, each running s3prl's ``UpstreamDownstreamModel``
  (frozen upstream on the padded batch every step, s3prl's ``Featurizer``, the task's s3prl
  head) with Adam, gradient clipping 1.0, as ``Problem.train`` does; times add up over lrs.
- ours: the three heads in one loop (:mod:`deepwide.superb.sweep`): one upstream pass per
  batch shared by the heads (``share_upstream_pass``), each head in its own RNG streams,
  and the frozen-upstream feature cache (:class:`deepwide.superb.upstream.FeatureStore`,
  memory tier) so epochs after the first skip the upstream.

Heads are s3prl's own: PR ``FrameLevelLinear`` + CTC, SID and KS ``MeanPoolingLinear`` +
cross entropy (s3prl's defaults, hidden 256). Upstreams are deepwide encoders with random
weights: ``small`` (4 x 256, FFN 1024, 128-channel conv) and ``12x384`` (12 x 384, FFN
1536, 512-channel conv: the 26.87 M "12-L Half" class). Throughput is training audio
seconds per second per lr (3 x audio trained / total time). Each row runs reference and
ours interleaved, ``--repeats`` times (A B A B ..., see ``interleave.py``): ``ratio`` is
the median of the per-repeat ratios ours / reference, with ``ratio_min``/``ratio_max``.
The clock is this process's CPU time on CPU (one torch thread unless ``--threads``), so
other users' load on a shared machine moves it little; wall time on CUDA. ``wall_ratio``
is the median ratio by wall time. Validation and test passes are not timed (at SUPERB
scale they are a few percent of a job; they share the same cache). Writes JSON and prints
a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from interleave import Clock, interleave, now, since, summarize  # noqa: E402

from deepwide.models.arch import ArchConfig, build_model, conv_layers  # noqa: E402

LRS = [1e-4, 1e-3, 1e-2]
UPSTREAMS = {
    "small": dict(depth=4, width=256, ffn=1024, heads=4, conv=conv_layers(128), pos_conv_kernel=64, pos_conv_groups=16),
    "12x384": dict(depth=12, width=384, ffn=1536, heads=6, conv=conv_layers(512), pos_conv_kernel=128, pos_conv_groups=16),
}
# (utterance seconds range, batch size, classes) per task; KS: 1 s clips, 12 classes
TASKS = {"pr": ((2.0, 4.0), 4, 40), "sid": ((2.0, 5.0), 4, 20), "ks": ((1.0, 1.0), 8, 12)}


def _utterances(task: str, n: int, seed: int, quick: bool = False) -> list[torch.Tensor]:
    (lo, hi), _, _ = TASKS[task]
    if quick and task != "ks":
        lo, hi = 1.5, 3.0
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        secs = lo + (hi - lo) * float(torch.rand(1, generator=g))
        t = torch.arange(int(secs * 16000)) / 16000
        f0 = 100 + 150 * float(torch.rand(1, generator=g))
        x = sum(torch.sin(2 * torch.pi * f0 * k * t) / k for k in (1, 2, 3)) + 0.05 * torch.randn(t.numel(), generator=g)
        out.append((0.3 * x).float())
    return out


def _batches(task: str, utts: list[torch.Tensor], epochs: int, seed: int):
    """The same padded batches for both loops (a fixed shuffle per epoch)."""
    _, bs, classes = TASKS[task]
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (len(utts),), generator=g)
    out = []
    for _ in range(epochs):
        order = torch.randperm(len(utts), generator=g).tolist()
        for i in range(0, len(order) - bs + 1, bs):
            idx = order[i: i + bs]
            lens = torch.tensor([utts[j].numel() for j in idx])
            wavs = torch.nn.utils.rnn.pad_sequence([utts[j] for j in idx], batch_first=True)
            if task == "pr":  # phone targets: ~12 per second, no blank (0)
                tl = (lens // 1333).clamp(min=1)
                tgt = torch.randint(1, classes, (int(tl.sum()),), generator=g)
                out.append((wavs, lens, (tgt, tl)))
            else:
                out.append((wavs, lens, labels[idx]))
    return out


def _head(task: str, upstream):
    from s3prl.nn import Featurizer
    from s3prl.nn.linear import FrameLevelLinear, MeanPoolingLinear

    feat = Featurizer(upstream)
    classes = TASKS[task][2]
    if task == "pr":
        down = FrameLevelLinear(feat.output_size, classes, hidden_size=256)
    else:
        down = MeanPoolingLinear(feat.output_size, classes, hidden_size=256)
    return feat, down


def _loss(task: str, model, wavs, lens, target):
    out = model(wavs, lens)
    if task == "pr":
        out, out_len = out
        tgt, tl = target
        logp = out.log_softmax(-1).transpose(0, 1)
        return torch.nn.functional.ctc_loss(logp, tgt, out_len, tl, zero_infinity=True)
    return torch.nn.functional.cross_entropy(out, target)


def _step(params, opt):
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad()


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _upstream(name: str, cache_mb: float, device: str):
    from deepwide.superb.upstream import EncoderUpstream

    arch = ArchConfig(**UPSTREAMS[name])
    torch.manual_seed(0)
    return EncoderUpstream(build_model(arch), arch, cache_mb=cache_mb, identity=f"bench-{name}-{cache_mb}-{time.time()}").to(device)


def reference(task: str, up_name: str, batches, device: str) -> Clock:
    """s3prl: one job per lr, upstream on every padded batch. Returns the time over all lrs."""
    from s3prl.nn.upstream import UpstreamDownstreamModel

    total = Clock()
    for lr in LRS:
        torch.manual_seed(0)
        up = _upstream(up_name, 0, device)
        feat, down = _head(task, up)
        model = UpstreamDownstreamModel(up, feat, down).to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=lr)
        _sync(device)
        t0 = now()
        for wavs, lens, target in batches:
            model.train()
            wavs, lens = wavs.to(device), lens.to(device)
            target = tuple(t.to(device) for t in target) if isinstance(target, tuple) else target.to(device)
            _loss(task, model, wavs, lens, target).backward()
            _step(params, opt)
        _sync(device)
        total += since(t0)
    return total


def ours(task: str, up_name: str, batches, device: str) -> Clock:
    """deepwide: the heads share one upstream pass per batch and the feature cache."""
    from s3prl.nn.upstream import UpstreamDownstreamModel

    from deepwide.superb.sweep import _RNG, share_upstream_pass

    up = _upstream(up_name, 4096, device)
    share_upstream_pass(up)
    heads = []
    for lr in LRS:
        torch.manual_seed(0)
        feat, down = _head(task, up)
        model = UpstreamDownstreamModel(up, feat, down).to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        heads.append((model, params, torch.optim.Adam(params, lr=lr), _RNG()))
    _sync(device)
    t0 = now()
    for wavs, lens, target in batches:
        wavs, lens = wavs.to(device), lens.to(device)
        target = tuple(t.to(device) for t in target) if isinstance(target, tuple) else target.to(device)
        for model, params, opt, rng in heads:
            with rng:
                model.train()
                _loss(task, model, wavs, lens, target).backward()
        for model, params, opt, rng in heads:
            with rng:
                _step(params, opt)
    _sync(device)
    return since(t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small datasets (about 4 minutes on 2 CPU cores)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--epochs", type=int, default=None, help="passes over the data (default 2 quick, 3 otherwise)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved reference/ours pairs per row (median of these)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 on CPU, torch's on CUDA)")
    ap.add_argument("--out", default="superb_throughput.json")
    args = ap.parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    gpu = device.startswith("cuda")
    threads = args.threads if args.threads is not None else (0 if gpu else 1)
    if threads:
        torch.set_num_threads(threads)
    from deepwide.superb import compat

    compat.install()
    epochs = args.epochs or (2 if args.quick else 3)
    # utterances per task: quick keeps every row to a few seconds of upstream work per lr
    n_utts = {"small": 48, "12x384": 8} if args.quick else {"small": 96, "12x384": 48}
    if gpu and not args.quick:
        n_utts = {"small": 512, "12x384": 512}
    rows = []
    for up_name in UPSTREAMS:
        for task in TASKS:
            utts = _utterances(task, n_utts[up_name], seed=1, quick=args.quick)
            batches = _batches(task, utts, epochs, seed=2)
            audio = len(LRS) * sum(float(lens.sum()) for _, lens, _ in batches) / 16000
            reference(task, up_name, batches[:1], device)  # warm-up (allocator, kernels) of both sides
            ours(task, up_name, batches[:1], device)
            pairs = interleave(partial(reference, task, up_name, batches, device),
                               partial(ours, task, up_name, batches, device), args.repeats)
            row = {"task": task, "upstream": up_name,
                   **summarize([(audio, r, audio, o) for r, o in pairs], gpu),
                   "audio_s_per_lr": round(audio / len(LRS), 1), "epochs": epochs, "steps_per_lr": len(batches),
                   "cpu_s": [[round(r.cpu, 2), round(o.cpu, 2)] for r, o in pairs],
                   "wall_s": [[round(r.wall, 2), round(o.wall, 2)] for r, o in pairs]}
            rows.append(row)
            print(f"{task:4s} {up_name:7s} ref {row['reference']:9.1f}  ours {row['ours']:9.1f}  ratio {row['ratio']:5.2f} "
                  f"({row['ratio_min']:.2f}-{row['ratio_max']:.2f}; wall {row['wall_ratio']:.2f})", flush=True)
    if gpu:
        machine = torch.cuda.get_device_name(0)
    else:
        machine = f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    out = {"rows": rows, "machine": machine, "device": device, "lrs": LRS, "quick": bool(args.quick),
           "repeats": args.repeats, "unit": "training audio seconds per second per lr",
           "clock": "wall time" if gpu else "process CPU time (wall time beside it)",
           "method": "reference and ours interleaved (ABAB...), median of the per-repeat ratios with min-max",
           "torch": torch.__version__}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"\n{'task':5s} {'upstream':8s} {'reference':>10s} {'ours':>10s} {'ratio':>6s} {'min-max':>11s} {'wall':>6s}"
          f"   ({machine}; median of {args.repeats})")
    for r in rows:
        print(f"{r['task']:5s} {r['upstream']:8s} {r['reference']:10.1f} {r['ours']:10.1f} {r['ratio']:6.2f} "
              f"{r['ratio_min']:5.2f}-{r['ratio_max']:<5.2f} {r['wall_ratio']:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
