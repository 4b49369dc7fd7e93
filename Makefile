# Quick start: `make demo` (set up + run a real demo job) and `make test` (set up + run the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= runs/demo

.PHONY: setup demo test test-slow test-reproductions test-cluster lint bench clean

$(BIN)/gentool: pyproject.toml core/diffusion/_noise.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU build of torch from this disk where no torch is present; GPU users keep theirs.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test,diffusers]"
	# k-diffusion as a test peer: its sampling.py only (the package pins training dependencies we do not need)
	$(BIN)/python -m pip install -q --no-deps k-diffusion==0.1.1.post1
	touch $@

setup: $(BIN)/gentool

demo: setup
	rm -rf $(DEMO_DIR)
	$(BIN)/gentool sample --target gmm-ring --sampler dpmpp-2m --steps 10 -n 10000 --out $(DEMO_DIR)/sample
	$(BIN)/gentool mad-loop --family gaussian --loop fully-synthetic --generations 100 --seeds 1000 --out $(DEMO_DIR)/mad
	@echo "demo outputs in $(DEMO_DIR)/"

test: setup
	$(BIN)/python -m pytest -q -n 2 -m "not slow"

# The checks too long for `make test` (full-size reproductions, runs at the shipped defaults, figures of every
# recipe point); CI runs them after `make test`. Reproductions of published or README results that take tens
# of CPU-minutes each (marker `reproduction`) are left to `make test-reproductions`.
test-slow: setup
	$(BIN)/python -m pytest -q -n 2 -m "slow and not reproduction" --durations=20

test-reproductions: setup
	$(BIN)/python -m pytest -q -n 2 -m reproduction --durations=0

# Sweeps on a real Slurm (tests/cluster): starts a private single-node Slurm (root; installs Debian's
# slurm-wlm, munge and mariadb-server when missing), runs every recipe's smoke sweep and the fault tests
# on it, then stops exactly the daemons it started.
test-cluster: setup
	$(BIN)/python -m pytest tests/cluster --slurm -n 0 -q --durations=0

lint: setup
	$(BIN)/ruff check cli core tests bench

bench: setup
	$(BIN)/python bench/solvers.py

clean:
	rm -rf $(VENV) runs build *.egg-info .pytest_cache
