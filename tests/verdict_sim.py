"""Simulated depth-vs-width studies with a known answer, for the verdict's calibration tests.

Each task's test items have a difficulty shared by every model, a model x item part, every
replicate (distillation + head seed) its own offset, and a replicate x item part, all on the
logit scale; accuracies are Bernoulli per utterance, error rates binomial per reference token.
The noise levels are set near what the embedded study measured (PR: about 1.7 PER between
replicates; SID: about 4 points; KS: about 2.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepwide.report import inference, verdict


@dataclass
class TaskSim:
    key: str
    n_items: int
    base: float          # logit of the accuracy / token error probability
    error_rate: bool     # binomial over reference tokens (PR) instead of Bernoulli (accuracy)
    sd_item: float
    sd_model_item: float
    sd_rep: float
    sd_rep_item: float

    def sample(self, rng, shifts: dict[str, float], reps: dict[str, int]) -> tuple[dict, np.ndarray]:
        """Per model: (R, n) numerators; and the items' weights."""
        n = self.n_items
        weights = rng.integers(15, 46, size=n).astype(float) if self.error_rate else np.ones(n)
        a = rng.normal(0, self.sd_item, n)
        out = {}
        for model, shift in shifts.items():
            b = rng.normal(0, self.sd_model_item, n)
            u = rng.normal(0, self.sd_rep, (reps[model], 1))
            e = rng.normal(0, self.sd_rep_item, (reps[model], n))
            p = 1 / (1 + np.exp(-(self.base + shift + a + b + u + e)))
            out[model] = rng.binomial(weights.astype(int), p).astype(float) if self.error_rate else \
                (rng.random(p.shape) < p).astype(float)
        return out, weights

    def expected(self, shift: float, draws: int = 400_000, seed: int = 1) -> float:
        """The population score (percent) at a logit shift: the estimand."""
        rng = np.random.default_rng(seed)
        z = self.base + shift + rng.normal(0, 1, draws) * np.sqrt(
            self.sd_item ** 2 + self.sd_model_item ** 2 + self.sd_rep ** 2 + self.sd_rep_item ** 2)
        p = 1 / (1 + np.exp(-z))
        if self.error_rate:
            w = rng.integers(15, 46, size=draws)
            return float(100 * (p * w).sum() / w.sum())
        return float(100 * p.mean())


PR = TaskSim("PR", 120, 0.4, True, 0.5, 0.25, 0.07, 0.2)
KS = TaskSim("KS", 110, 0.4, False, 1.5, 0.5, 0.12, 0.8)
SID = TaskSim("SID", 300, 0.2, False, 1.5, 0.5, 0.2, 0.8)
TASKS = {"PR": PR, "KS": KS, "SID": SID}
ANCHORS = ({"PR": 65.0, "KS": 22.0, "SID": 4.0}, {"PR": 53.0, "KS": 60.0, "SID": 58.0})
HIGHER = {"PR": False, "KS": True, "SID": True}
DEPTHS = (1, 2, 4)


def simulate(rng, seeds: int = 6, effects: dict[str, float] | None = None, tasks=TASKS) -> tuple[dict, verdict.Design]:
    """One study of one KD method: a student per depth with ``seeds`` replicates; ``effects``:
    task -> logit shift per step from the shallowest to the deepest student (0: no depth effect)."""
    effects = effects or {}
    models = {d: f"pred-{d}" for d in DEPTHS}
    cells = {}
    for key, sim in tasks.items():
        step = effects.get(key, 0.0)
        shifts = {m: step * i / (len(DEPTHS) - 1) for i, m in enumerate(models.values())}
        values, weights = sim.sample(rng, shifts, {m: seeds for m in models.values()})
        ids = tuple(range(sim.n_items))
        for m, v in values.items():
            scores = 100 * v.sum(axis=1) / weights.sum()
            cells[(key, m)] = inference.Cell(key=key, model=m, scores=scores, values=v, weights=weights, item_ids=ids)
    design = verdict.Design({"pred": {d: [m] for d, m in models.items()}}, [t for t in ("PR", "KS", "SID") if t in tasks],
                            ANCHORS, HIGHER)
    return cells, design


def run(n: int, seed: int = 0, **kw) -> list:
    rng = np.random.default_rng(seed)
    return [verdict.verdict_rows(*simulate(rng, **kw)) for _ in range(n)]
