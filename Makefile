# Two commands on a fresh machine: `make demo` and `make test`.
# TORCH_SPEC picks the PyTorch build (default: the CPU wheel torch==2.13.0); GPU users set their own,
# e.g. make demo TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>".
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: demo test install install-dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/poisonlab train --config recipes/mnist5k-convnet.yaml --workdir runs/demo --force-new

test: install-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

bench: install-dev
	$(BIN)/python benchmarks/bench_trainer.py
	$(BIN)/python benchmarks/bench_many.py

clean:
	rm -rf runs benchmarks/out .pytest_cache .ruff_cache
