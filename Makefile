# cohortflow: `make demo` runs the whole pipeline on a simulated cohort, `make test` the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: demo test test-fast test-hpc lint install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cohortflow demo --outdir demo --samples 4 --cores $(CORES)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# A real one-node SLURM cluster (Debian slurm-wlm, munge, slurmdbd, MariaDB; needs root):
# the simulated cohort through --profile profiles/slurm, checked in sacct and against a local run.
test-hpc: $(STAMP)
	bash tests/hpc/run_slurm_test.sh

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not e2e" tests

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts bench
	$(BIN)/ruff format --check src tests scripts bench

clean:
	rm -rf demo results logs benchmarks .snakemake
