# Job requests for cluster runs (snakemake --profile slurm), from config["resources"]:
#   rule distill:  resources: **gpu_job("distill")      # gpu, cpus_per_gpu, mem_mb, runtime
#   rule synth:    resources: **cpu_job("synth")        # mem_mb, runtime; CPUs = threads
# Per-rule overrides live in config resources.rules.<rule name>.
from deepwide.resources import job_resources


def gpu_job(rule_name):
    """Resources of a GPU rule's jobs (one GPU by default, CPUs and memory per GPU)."""
    return job_resources(config["resources"], rule_name, gpu=True)


def cpu_job(rule_name):
    """Resources of a CPU rule's jobs (memory and runtime; never a GPU)."""
    return job_resources(config["resources"], rule_name, gpu=False)
