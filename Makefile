# One-command set-up, build, demo and tests (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(abspath $(VENV)/bin)
STAMP := $(VENV)/.requirements-installed
# The venv's cmake and ninja, whatever the machine has.
export PATH := $(BIN):$(PATH)

.PHONY: demo test build info bench cuda-check wheel lint format clean

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

build: $(STAMP)
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .

demo: build
	$(PY) -m pygen demo

test: build
	$(PY) -m pytest

info: build
	$(PY) -m pygen info

bench: build
	$(PY) -m pygen bench

# Every kernel under cuda/ compiled by nvcc alone (no torch), for TORCH_CUDA_ARCH_LIST.
cuda-check: $(STAMP)
	cmake -S cuda -B build/cuda-check -G Ninja
	cmake --build build/cuda-check

wheel: $(STAMP)
	$(PY) -m pip wheel --no-build-isolation --no-deps -w dist .

lint: $(STAMP)
	$(VENV)/bin/ruff check pygen tests bench setup.py
	$(VENV)/bin/ruff format --check pygen tests bench setup.py
	$(VENV)/bin/clang-format --dry-run --Werror $$(git ls-files 'csrc/*' 'cuda/*' 'bindings/*' | grep -E '\.(h|cpp|cu|cuh)$$')

format: $(STAMP)
	$(VENV)/bin/ruff format pygen tests bench setup.py
	$(VENV)/bin/clang-format -i $$(git ls-files 'csrc/*' 'cuda/*' 'bindings/*' | grep -E '\.(h|cpp|cu|cuh)$$')

clean:
	rm -rf build dist *.egg-info pygen/_C*.so
