# deepwide: all set-up on a fresh machine lives here.
#   make run    create .venv, install what is missing, run the pipeline on config.yaml
#               (after a kill, the same command completes the study)
#   make test   same set-up, then the test suite
#   make gpu-check  every CUDA code path at smoke size and both benchmarks (one JSON)
#   make rehearse CONFIG=F  the study F at toy size on this machine (every rule; see README)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deepwide-installed
APT_PACKAGES := espeak-ng flite sox libsox-fmt-all wamerican
APT_PROGRAMS := espeak-ng flite sox
CORES ?= all
CONFIG ?= config.yaml
# librosa's numba JIT cache: keep it on a persistent path so only the first run compiles
export NUMBA_CACHE_DIR ?= $(CURDIR)/.cache/numba
export MPLBACKEND ?= Agg

.PHONY: setup sysdeps run study rehearse test clean-results install-profile envs gpu-check

setup: sysdeps $(STAMP)

# Debian packages: installed when root, otherwise one message naming the missing ones.
sysdeps:
	@missing=""; \
	for p in $(APT_PROGRAMS); do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	[ -f /usr/share/dict/words ] || missing="$$missing wamerican"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null || exit 1; \
	  else \
	    echo "error: missing system programs:$$missing. Install the Debian packages: $(APT_PACKAGES) (for example: sudo apt-get install $(APT_PACKAGES))" >&2; \
	    exit 1; \
	  fi; \
	fi

# The venv is rebuilt only when the pinned requirements or the package metadata change.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24" 
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

# envs/deepwide.yaml (conda env of every rule, `snakemake --sdm conda`) from requirements.txt
envs:
	$(PYTHON) envs/generate.py

# One command also after a kill: `recover` removes the Snakemake lock a killed run left (when
# no snakemake runs here), --rerun-incomplete reruns the jobs it interrupted.
run: setup
	@$(MAKE) --no-print-directory study

WORKDIR ?= .
study:
	$(PY) -m deepwide recover --directory $(WORKDIR)
	$(VENV)/bin/snakemake --rerun-incomplete --cores $(CORES) --configfile $(CONFIG) \
	  --snakefile $(CURDIR)/Snakefile --directory $(WORKDIR) $(SNAKEMAKE_ARGS)

# A rehearsal of CONFIG (`deepwide plan rehearse`): every rule of the study at toy size, data
# missing here synthesized, a missing teacher checkpoint drawn at random; its results go to
# results/rehearsal/<config stem>, next to the config it runs (REHEARSAL).
REHEARSAL ?= results/rehearsal/$(basename $(notdir $(CONFIG)))/config.yaml
rehearse: setup
	$(PY) -m deepwide plan rehearse --config $(CONFIG) --out $(REHEARSAL)
	@$(MAKE) --no-print-directory study CONFIG=$(REHEARSAL)

test: setup
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

# Every CUDA path at smoke size plus both benchmarks, in one script of at most 8 minutes;
# one JSON naming the card (results/gpu_check/gpu_check.json). GPU_DEVICE=cpu runs the
# same checks on the CPU, where they take 9 (Xeon) to 18 (AMD EPYC) minutes on 2 idle cores: 25 allowed.
GPU_DEVICE ?= cuda
GPU_BUDGET_S ?= $(if $(filter cpu,$(GPU_DEVICE)),1500,480)
gpu-check: setup
	$(PY) benchmarks/gpu_check.py --device $(GPU_DEVICE) --budget-s $(GPU_BUDGET_S) $(GPU_CHECK_ARGS)

# `snakemake --profile slurm` from anywhere: link the repository's SLURM profile into the
# user's snakemake config folder (an existing different profile there is left alone).
SNAKEMAKE_PROFILE_DIR ?= $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/snakemake
install-profile:
	@mkdir -p "$(SNAKEMAKE_PROFILE_DIR)"
	@dest="$(SNAKEMAKE_PROFILE_DIR)/slurm"; src="$(CURDIR)/workflow/profiles/slurm"; \
	if [ -L "$$dest" ] || [ ! -e "$$dest" ]; then \
	  ln -sfn "$$src" "$$dest" && echo "linked $$dest -> $$src"; \
	else \
	  echo "error: $$dest exists and is not a link; move it away or use --profile $$src" >&2; exit 1; \
	fi

clean-results:
	rm -rf results .snakemake
