# Two commands on a fresh machine: `make demo` and `make test`.
# TORCH_SPEC picks the PyTorch build (default: the CPU wheel torch==2.13.0); GPU users set their own,
# e.g. make demo TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>".
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: demo test install install-dev browser bench clean

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

# The main job: the quick audit of the default recipe on the embedded mnist5k data (under 10 minutes on
# 2 CPU cores); rerunning resumes and skips finished trials. Report: runs/demo/report/index.html
demo: install
	$(BIN)/poisonlab audit --dataset mnist5k --model convnet --recipe default --budget quick --workdir runs/demo

# Debian's chromium for the test that renders the audit report headless (installed when missing and root).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else sudo -n apt-get update -qq && sudo -n apt-get install -y -qq chromium >/dev/null; fi; } \
	  || echo "make browser: could not install chromium; the report-rendering test will be skipped"

test: install-dev browser
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

bench: install-dev
	$(BIN)/python benchmarks/bench_trainer.py
	$(BIN)/python benchmarks/bench_many.py

clean:
	rm -rf runs benchmarks/out .pytest_cache .ruff_cache
