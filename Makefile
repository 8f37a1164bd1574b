# speechcodec: `make demo` runs the main job on the built-in demo corpus, `make test` runs the checks.
# Both set up .venv first (and the system libraries, with apt-get when root on Debian).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is installed first, from TORCH_INDEX when set, so no resolver reaches for another build.
# On a stock Linux machine pip's default index gives the CUDA build (several GB); for the CPU
# build:  make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
# for CUDA 12.8:  make setup TORCH_INDEX=https://download.pytorch.org/whl/cu128
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
STAMP := $(VENV)/.installed

.PHONY: setup system-deps test-deps demo test lint clean

setup: $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

$(STAMP): pyproject.toml scripts/system-deps.sh
	@bash scripts/system-deps.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

demo: setup
	@bash scripts/demo.sh

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --lint

test-deps: setup
	@bash scripts/system-deps.sh --test

test: lint test-deps
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache
