# ppml: the two commands are `make demo` and `make test`; both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Small torch models run far faster with one intra-op thread on small CPUs; ppml sets its own
# thread count where it trains, this only keeps BLAS from oversubscribing during tests.
export OMP_NUM_THREADS ?= 1

.PHONY: install demo test bench bench-flower-env lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	# torch first: the pinned CPU wheel; the range in pyproject.toml is then satisfied by it.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ppml demo --out runs/demo --overwrite

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) benchmarks/run_all.py

# Flower, for the Flower rows of the simulation-speed benchmark only: its own environment, since it pins
# older typer and rich than ppml's. torch first (the pinned CPU wheel), so flwr's dependencies take it.
# benchmarks/bench_fl_speed.py finds .venv-flower/bin/python (or $$PPML_FLOWER_PYTHON) when it exists.
FLOWER_VENV := .venv-flower
FLOWER_STAMP := $(FLOWER_VENV)/.installed

$(FLOWER_STAMP):
	$(PYTHON) -m venv $(FLOWER_VENV)
	$(FLOWER_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(FLOWER_VENV)/bin/python -m pip install --quiet 'flwr[simulation]==1.42.0' numpy scikit-learn psutil
	touch $(FLOWER_STAMP)

bench-flower-env: $(FLOWER_STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache runs
