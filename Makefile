# Two commands for a new user: `make demo` (the default job: the whole Dreamer 4 loop on CarRacing-v3)
# and `make test` (the suite).
# Both create .venv, install torch==2.13.0 FIRST (the CPU build; any other torch spec pulls CUDA wheels),
# then this package with its dev tools.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PRESET ?= cpu

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/minidreamer4 train --preset $(PRESET)

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install
	$(BIN)/python benchmarks/bench_collect.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
