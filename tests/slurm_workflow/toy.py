"""Jobs of the SLURM test workflow: synthetic audio, a resumable tiny-model training run and
a summary of the trained model. Stand-in for the pipeline's distillation rule until that
lands in main; it keeps the same contract: resume state outside the declared outputs,
declared outputs written last and atomically, one log line per checkpoint and on resume.

    python toy.py wavs --out data/wavs.npy
    python toy.py train --wavs data/wavs.npy --out model/student.pt --state state/train \
        --steps 40 --every 5 --step-sleep 0.2
    python toy.py summary --model model/student.pt --wavs data/wavs.npy --out summary.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("toy")


def arch():
    from deepwide.models.arch import ArchConfig, conv_layers

    # dropout 0: every step is a pure function of (weights, optimizer state, step)
    return ArchConfig(depth=2, width=32, ffn=64, heads=2, conv=conv_layers(16), pos_conv_kernel=16,
                      pos_conv_groups=4, dropout=0.0, attention_dropout=0.0, projection_dropout=0.0)


def cmd_wavs(args) -> None:
    from deepwide.utils.io import atomic_path

    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000.0
    wavs = np.stack([0.3 * np.sin(2 * np.pi * (110 + 40 * i) * t * (1 + 0.5 * t)) + 0.02 * rng.standard_normal(t.size)
                     for i in range(8)]).astype(np.float32)
    with atomic_path(args.out) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, wavs)
    log.info("wrote %d utterances of %d samples to %s", *wavs.shape, args.out)


def cmd_train(args) -> None:
    import torch

    from deepwide.models.arch import build_model, hidden_states
    from deepwide.models.checkpoint import save_checkpoint
    from deepwide.utils.io import atomic_path

    torch.set_num_threads(1)
    torch.manual_seed(0)
    a = arch()
    model = build_model(a)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    wavs = torch.from_numpy(np.load(args.wavs))
    # regression target: a fixed random projection of the input's frame energies
    gen = torch.Generator().manual_seed(1)
    proj = torch.randn(1, a.width, generator=gen)

    state = Path(args.state)
    resume = state / "resume.pt"
    step = 0
    if resume.is_file():
        blob = torch.load(resume, weights_only=False)
        model.load_state_dict(blob["model"])
        opt.load_state_dict(blob["optimizer"])
        step = blob["step"]
        log.info("resumed from checkpoint %s at step %d (SLURM job %s)", resume, step, os.environ.get("SLURM_JOB_ID", "-"))
    else:
        log.info("no checkpoint in %s: starting at step 0 (SLURM job %s)", state, os.environ.get("SLURM_JOB_ID", "-"))
    model.train()
    while step < args.steps:
        x = wavs[step % len(wavs)].unsqueeze(0)
        states, _ = hidden_states(model, x)
        frames = states[-1].shape[1]
        energy = x[:, : frames * 320].reshape(1, frames, 320).pow(2).mean(-1, keepdim=True)
        loss = (states[-1] - energy @ proj).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        log.info("step %d/%d loss %.6f", step, args.steps, loss.item())
        if step % args.every == 0 and step < args.steps:
            with atomic_path(resume) as tmp:
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step}, tmp)
            log.info("checkpoint saved at step %d", step)
        time.sleep(args.step_sleep)  # stands in for a long training step
    save_checkpoint(args.out, model, a, {"steps": step, "source": "tests/slurm_workflow/toy.py"})
    resume.unlink(missing_ok=True)
    log.info("finished %d steps: %s", step, args.out)


def cmd_summary(args) -> None:
    import torch

    from deepwide.models.arch import hidden_states
    from deepwide.models.checkpoint import load_checkpoint
    from deepwide.utils.io import atomic_write_text

    torch.set_num_threads(1)
    model, a, meta = load_checkpoint(args.model)
    wavs = torch.from_numpy(np.load(args.wavs))
    with torch.no_grad():
        states, _ = hidden_states(model, wavs)
    summary = {"arch": a.name, "steps": meta["steps"], "layers": len(states),
               "mean_abs": [round(float(s.abs().mean()), 6) for s in states]}
    atomic_write_text(args.out, json.dumps(summary, indent=1, sort_keys=True) + "\n")
    log.info("summary: %s", summary)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wavs")
    w.add_argument("--out", required=True)
    w.set_defaults(func=cmd_wavs)
    t = sub.add_parser("train")
    t.add_argument("--wavs", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--state", required=True)
    t.add_argument("--steps", type=int, default=40)
    t.add_argument("--every", type=int, default=5)
    t.add_argument("--step-sleep", type=float, default=0.0)
    t.set_defaults(func=cmd_train)
    s = sub.add_parser("summary")
    s.add_argument("--model", required=True)
    s.add_argument("--wavs", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_summary)
    args = p.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
