"""A tiny, real study tree for the report tests: real checkpoints, real audio, and
SUPERB result.json / info.json files written the way the superb and distill stages write them.

The metric values are synthetic (the report's tests check how it handles them, not what they
are): content tasks improve with depth, speaker tasks with width, the teacher is best and
FBANK worst, with a small per-seed jitter.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from _distill_data import write_manifest as write_split_manifest

from deepwide.models.arch import ArchConfig, build_model, conv_layers
from deepwide.models.checkpoint import save_checkpoint

SR = 16000
TINY = dict(conv=conv_layers(16), pos_conv_kernel=8, pos_conv_groups=4)
TEACHER = ArchConfig(depth=4, width=64, ffn=128, heads=2, **TINY)
# an iso-parameter-ish grid: deeper is narrower
STUDENTS = {
    "pred": [ArchConfig(depth=1, width=64, ffn=128, heads=2, **TINY), ArchConfig(depth=2, width=48, ffn=96, heads=2, **TINY),
             ArchConfig(depth=4, width=32, ffn=64, heads=2, **TINY)],
    "l2l": [ArchConfig(depth=1, width=64, ffn=128, heads=2, **TINY), ArchConfig(depth=2, width=48, ffn=96, heads=2, **TINY),
            ArchConfig(depth=4, width=32, ffn=64, heads=2, **TINY)],
}
# s3prl metric names and their direction, fractions as s3prl reports them
TASKS = {"PR": ("per", False), "ASR": ("wer", False), "KS": ("accuracy", True), "SID": ("accuracy", True),
         "IC": ("accuracy", True), "ER": ("accuracy", True)}
CONTENT = {"PR", "ASR", "IC"}
# all ten SUPERB tasks (QbE as raw MTWV; SF's result carries its slot-value CER too)
ALL_TASKS = {**TASKS, "QbE": ("mtwv", True), "ASV": ("EER", False), "SD": ("der", False), "SF": ("slot_type_f1", True)}


def write_manifest(root: Path, n: int = 4) -> Path:
    """Held-out LibriSpeech-layout manifest with n utterances of chirps in noise (0.6-1.0 s)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        samples = int(SR * (0.6 + 0.1 * i))
        t = np.arange(samples) / SR
        f0 = 120 + 40 * i
        wav = 0.3 * np.sin(2 * np.pi * (f0 + 200 * t) * t) + 0.05 * rng.standard_normal(samples)
        path = root / "corpora" / "librispeech" / "test-clean" / f"utt{i}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wav.astype(np.float32), SR)
        rows.append({"id": f"utt{i}", "path": str(path.resolve()), "num_samples": samples, "sample_rate": SR,
                     "split": "test-clean", "speaker": f"s{i % 2}", "text": "a", "phones": "a"})
    return write_split_manifest(root, "test-clean", rows)


def write_checkpoints(root: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    paths = {}
    model = build_model(TEACHER)
    paths["teacher"] = root / "teacher" / "teacher.pt"
    save_checkpoint(paths["teacher"], model, TEACHER, {"kind": "test"})
    for method, archs in STUDENTS.items():
        for arch in archs:
            d = root / "students" / method / arch.name
            model = build_model(arch)
            save_checkpoint(d / "student.pt", model, arch, {"method": method})
            params = sum(p.numel() for p in model.parameters())
            (d / "info.json").write_text(json.dumps({
                "params": params, "arch": arch.to_dict(), "wall_time_s": 1.0, "throughput": 10.0, "mode": "cached"}))
            paths[f"{method}-{arch.name}"] = d / "student.pt"
    return paths


def write_kd_heads(student_ckpt: Path, method: str, pairs, student_width: int, teacher_width: int, identity=False) -> Path:
    """kd_heads.pt beside a student, as the distill stage writes it (``identity``: l2l heads = I)."""
    from deepwide.distill.methods import KDHeads

    heads = KDHeads(method, [tuple(p) for p in pairs], student_width, teacher_width)
    if identity:
        for h in heads.heads:
            torch.nn.init.eye_(h.weight)
            torch.nn.init.zeros_(h.bias)
    path = Path(student_ckpt).with_name("kd_heads.pt")
    torch.save({"method": method, "pairs": [list(p) for p in pairs], "student_width": student_width,
                "teacher_width": teacher_width, "state_dict": heads.state_dict()}, path)
    return path


def metric_value(task: str, upstream: str, depth: int, width: int, seed: int, lr: float) -> float:
    """Synthetic quality in 0..1 (1 best); the lr 1e-3 run is a bit better on dev and test."""
    rng = np.random.default_rng(zlib.crc32(f"{task}/{upstream}/{seed}".encode()))
    q = trend_quality(upstream, depth, width, task in CONTENT)
    q = min(q + (0.03 if lr == 1e-3 else 0.0) + 0.01 * rng.standard_normal(), 0.99)
    return float(q)


def trend_quality(upstream: str, depth: int, width: int, deeper_is_better: bool) -> float:
    """Noiseless quality: FBANK 0.1, the teacher 0.9, a student 0.3 + a trend in depth or in width."""
    if upstream == "fbank":
        return 0.1
    if upstream == "teacher":
        return 0.9
    return 0.3 + (0.1 * depth if deeper_is_better else 0.006 * width)


def write_results(root: Path, upstreams: dict[str, tuple[int, int]], seeds=(0,), lrs=(1e-4, 1e-3),
                  tasks=TASKS, quality=None, n_test: int | None = 2000) -> list[Path]:
    """superb/{upstream}/{task}/lr{lr}/result.json for each upstream (name -> (depth, width)).

    ``quality(task, upstream, depth, width, seed, lr) -> 0..1`` replaces :func:`metric_value`.
    ``n_test``: the test-set size the results carry (the superb stage's; None: left out)."""
    paths = []
    quality = quality or metric_value
    for up, (depth, width) in upstreams.items():
        for task, (metric, higher) in tasks.items():
            for lr in lrs:
                for seed in seeds:
                    q = quality(task, up, depth, width, seed, lr)
                    score = q if higher else 1 - q
                    raw = task == "QbE"  # MTWV: no percent
                    name = up if len(seeds) == 1 else f"{up}-seed{seed}" if up not in ("teacher", "fbank") else up
                    sub = root / "superb" / name / task.lower() / f"lr{lr:g}"
                    if len(seeds) > 1 and up in ("teacher", "fbank"):
                        sub = root / "superb" / name / task.lower() / f"lr{lr:g}" / f"seed{seed}"
                    w = np.exp(np.random.default_rng(zlib.crc32(f"{up}/{task}/{seed}".encode())).standard_normal(depth + 1))
                    # as the superb stage writes it: scores in percent, s3prl's raw logs beside
                    scale = 1.0 if raw else 100.0
                    logs = {metric: score, **({"slot_value_cer": 1 - q} if task == "SF" else {})}
                    obj = {"upstream": name, "task": task.lower(), "lr": lr, "metric": metric, "unit": "" if raw else "%",
                           "higher_is_better": higher, "dev_score": scale * score, "best_step": 100,
                           "test_score": scale * score, "test_metrics": logs, "dev_metrics": logs,
                           "layer_weights": (w / w.sum()).tolist(), "runtime_s": 1.0, "device": "cpu", "seed": seed,
                           "n_test": n_test}
                    sub.mkdir(parents=True, exist_ok=True)
                    (sub / "result.json").write_text(json.dumps(obj))
                    paths.append(sub / "result.json")
                    if up not in ("teacher", "fbank"):
                        write_info(root, name, depth, width)
    return paths


def write_info(root: Path, upstream: str, depth: int, width: int) -> Path:
    """students/{method}/{shape}/seedN/info.json of a result's student, as the distill stage
    writes it: the report reads the architecture from here, never from the name."""
    method, shape = upstream.split("-")[:2]
    seed = upstream.rsplit("-seed", 1)[1] if "-seed" in upstream else "0"
    ffn, heads = (int(x) for x in shape.split("f")[1].split("h"))
    if (root / "students" / method / shape / "info.json").is_file():  # write_checkpoints' real one
        return root / "students" / method / shape / "info.json"
    path = root / "students" / method / shape / f"seed{seed}" / "info.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    arch = {"depth": depth, "width": width, "ffn": ffn, "heads": heads}
    path.write_text(json.dumps({"method": method, "shape": shape, "params": 12 * depth * width * width, "arch": arch}))
    return path


def infos(results: list[Path]) -> list[Path]:
    """The student info.json files beside the results :func:`write_results` wrote."""
    roots = {next(p for p in Path(r).parents if p.name == "superb").parent for r in results}
    return sorted(i for root in roots for i in (root / "students").rglob("info.json"))


def study_upstreams() -> dict[str, tuple[int, int]]:
    ups = {"fbank": (0, 0), "teacher": (TEACHER.depth, TEACHER.width)}
    for method, archs in STUDENTS.items():
        for a in archs:
            ups[f"{method}-{a.name}"] = (a.depth, a.width)
    return ups


def build_study(root: Path, seeds=(0,)) -> dict:
    root = Path(root)
    manifest = write_manifest(root)
    ckpts = write_checkpoints(root)
    results = write_results(root, study_upstreams(), seeds=seeds)
    infos = sorted((root / "students").rglob("info.json"))
    return {"root": root, "manifest": manifest, "checkpoints": ckpts, "results": results, "infos": infos}
