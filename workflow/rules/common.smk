# Shared by every rule file: the one Study (validated config -> every job, its identity,
# its paths and its cluster request) and the interpreter. Rule files share nothing else.
#
# A job's params are its identity (STUDY.params: the settings that change its result plus
# its stage's version); threads, workers, device, log and checkpoint cadence and cache
# sizes reach the CLI through {STUDY.exec[stage]}, formatted into the shell command at run
# time, so changing them reruns nothing (the command template stays equal).
import os
import sys

from snakemake.settings.types import DeploymentMethod

from deepwide.plan import Study

STUDY = Study.from_config(config)

# Jobs inherit this: OpenMP threads that spin while waiting made a busy 2-core machine
# run torch 5x slower (measured on the teacher's pretraining); a user's own value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Software: plain `snakemake` runs every stage with the interpreter that runs snakemake
# (the .venv, also on a cluster node). `--sdm conda` runs each rule in envs/deepwide.yaml
# (conda: CONDA_ENV on every rule, pinned to requirements.txt): then `python` is the env's,
# and the deepwide package comes from this checkout's src/ (the env holds its dependencies).
CONDA_ENV = os.path.join(workflow.basedir, "envs", "deepwide.yaml")
if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    PY = "python"
    _src = os.path.join(workflow.basedir, "src")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_src, os.environ.get("PYTHONPATH")) if p)
else:
    PY = sys.executable


# One study per results folder: Snakemake's lock covers only the working directory, so a
# second clone naming the same `results:` is refused here (deepwide.runlock); released at
# the end, taken over with a WARNING when the run that held it is gone.
onstart:
    from deepwide.runlock import acquire_results_lock

    acquire_results_lock(STUDY.results)


onsuccess:
    from deepwide.runlock import release_results_lock

    release_results_lock(STUDY.results)


onerror:
    from deepwide.runlock import release_results_lock

    release_results_lock(STUDY.results)
