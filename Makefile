# One-command set-up, build, demo and tests (see README.md).
PYTHON ?= python3
VENV ?= .venv
# SYSTEM_PYTHON=1: use $(PYTHON) and what it has installed, no venv (machines without a
# package registry, such as the GPU machines: torch, cmake, ninja, pytest are there).
ifeq ($(SYSTEM_PYTHON),1)
PY := $(PYTHON)
STAMP :=
RUFF := $(PYTHON) -m ruff
CLANG_FORMAT := clang-format
else
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
RUFF := $(VENV)/bin/ruff
CLANG_FORMAT := $(VENV)/bin/clang-format
# The venv's cmake and ninja, whatever the machine has.
export PATH := $(abspath $(VENV)/bin):$(PATH)
endif

PY_SOURCES := pygen tests bench setup.py conftest.py

.PHONY: demo test build info bench cuda-check gpu-cycle wheel lint format clean

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
# Every kernel under cuda/ with nvcc alone, and the bindings' CUDA halves against torch's
# headers (a CPU torch is enough), so CI without a GPU catches what a CUDA build would.
cuda-check: $(STAMP)
	cmake -S cuda -B build/cuda-check -G Ninja -DPYGEN_TORCH_PYTHON="$$($(PY) -c 'import sys; print(sys.executable)')"
	cmake --build build/cuda-check

# One build-test-bench cycle on a GPU machine, for one device-tool call:
#   make gpu-cycle SYSTEM_PYTHON=1
# CUDA build, the whole suite (the bench still runs if a test fails: read the summary),
# the benchmarks on cuda; results go to bench/results/ and, when $OUT is set, there too.
gpu-cycle: export PYGEN_CUDA = 1
gpu-cycle: $(STAMP)
	nvidia-smi -L
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	$(PY) -m pygen info
	-$(PY) -m pytest -q
	$(PY) -m pygen bench --device cuda
	if [ -n "$$OUT" ]; then cp -r bench/results "$$OUT/"; fi

wheel: $(STAMP)
	$(PY) -m pip wheel --no-build-isolation --no-deps -w dist .

lint: $(STAMP)
	$(RUFF) check $(PY_SOURCES)
	$(RUFF) format --check $(PY_SOURCES)
	$(CLANG_FORMAT) --dry-run --Werror $$(git ls-files 'csrc/*' 'cuda/*' 'bindings/*' | grep -E '\.(h|cpp|cu|cuh)$$')

format: $(STAMP)
	$(RUFF) format $(PY_SOURCES)
	$(CLANG_FORMAT) -i $$(git ls-files 'csrc/*' 'cuda/*' 'bindings/*' | grep -E '\.(h|cpp|cu|cuh)$$')

clean:
	rm -rf build dist *.egg-info pygen/_C*.so
