"""What a rule's jobs ask a cluster scheduler for, from the config's ``resources`` section.

A rule file writes ``resources: **STUDY.gpu_job("distill")`` (GPU rules) or
``resources: **STUDY.cpu_job("corpus_synth")`` (CPU rules); the Study binds these two to
the validated config. The returned keys are the standard Snakemake
resources that snakemake-executor-plugin-slurm 2.x turns into sbatch options:

- GPU rule: ``gpu`` -> ``--gpus=N``, ``cpus_per_gpu`` -> ``--cpus-per-gpu``,
  ``mem_mb`` (= N x ``mem_mb_per_gpu``) -> ``--mem``, ``runtime`` -> ``-t`` (minutes);
- CPU rule: ``mem_mb`` -> ``--mem``, ``runtime`` -> ``-t``; CPUs come from the rule's
  ``threads`` (``--cpus-per-task``) and no GPU is ever requested;
- ``slurm_partition`` -> ``-p`` only when the config names one.

Locally ``gpu`` and ``mem_mb`` only count against ``--resources`` limits, so the same rules
run unchanged on a laptop.
"""

from __future__ import annotations

from typing import Any

from deepwide.errors import DeepwideError

GPU_KEYS = ("gpu", "cpus_per_gpu", "mem_mb_per_gpu", "runtime", "slurm_partition")
CPU_KEYS = ("mem_mb", "runtime", "slurm_partition")


def job_resources(resources_cfg: dict[str, Any], rule: str, gpu: bool) -> dict[str, Any]:
    """Resources of one rule's jobs: its job class (``gpu``/``cpu``) plus ``rules.<rule>``.

    ``resources_cfg`` is the validated ``config["resources"]``. An override key that does
    not apply to the rule's class (say ``cpus_per_gpu`` on a CPU rule) raises
    ``DeepwideError`` naming the dotted config key.
    """
    cls = "gpu" if gpu else "cpu"
    keys = GPU_KEYS if gpu else CPU_KEYS
    merged = {k: v for k, v in resources_cfg.get(cls, {}).items() if k in keys}
    override = resources_cfg.get("rules", {}).get(rule) or {}
    for key, value in override.items():
        if key not in keys:
            raise DeepwideError(
                f"config key resources.rules.{rule}.{key}: does not apply to a {cls.upper()} rule "
                f"(allowed here: {', '.join(keys)})"
            )
        merged[key] = value
    missing = [k for k in keys if k != "slurm_partition" and merged.get(k) is None]
    if missing:
        raise DeepwideError(f"config key resources.{cls}: missing {', '.join(missing)} (validate the config first)")
    out: dict[str, Any] = {"runtime": int(merged["runtime"])}
    if gpu:
        out["gpu"] = int(merged["gpu"])
        out["cpus_per_gpu"] = int(merged["cpus_per_gpu"])
        out["mem_mb"] = int(merged["mem_mb_per_gpu"]) * out["gpu"]
    else:
        out["mem_mb"] = int(merged["mem_mb"])
    if merged.get("slurm_partition"):
        out["slurm_partition"] = str(merged["slurm_partition"])
    return out
