# One-command set-up, build, demo and tests (see README.md).
SHELL := /bin/bash
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

.PHONY: demo test build info bench cuda-check gpu-lib gpu-build gpu-test gpu-bench gpu-cycle wheel lint format clean

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

# ---- GPU machines ------------------------------------------------------------------
# A device-tool call runs at most 10 minutes, a session has 30 minutes of device time, and
# the machine goes back about 30 s after a call (the next call then starts a bare one). So
# the cycle comes in phases, one call each, each ending well inside 10 minutes (GPU_DEADLINE
# seconds from its start; what does not fit is reported as not run) and writing its logs to
# $OUT (build/gpu-logs without one) as it goes:
#   make gpu-build SYSTEM_PYTHON=1   CUDA build for this GPU's arch only (sm_90 on an H100/H200),
#                                    nproc jobs; logs build.log, and the library itself (< 16 MiB)
#   make gpu-test SYSTEM_PYTHON=1    the CUDA tests (marked `cuda` in tests/conftest.py), family
#                                    by family, attention first, each test at most
#                                    GPU_TEST_TIMEOUT s (pytest-timeout): tests.log
#   make gpu-bench SYSTEM_PYTHON=1   python -m pygen bench --device cuda: bench.log and
#                                    bench/results/<gpu>.json/.png (only those: $OUT takes 8 files)
#   make gpu-cycle SYSTEM_PYTHON=1   the three in one call, under one deadline
# gpu-test and gpu-bench build first (CMake + Ninja in build/gpu, the library in place in
# pygen/, no pip: an editable install builds in a fresh temporary directory every time).
# On a warm machine that is a no-op; on a bare one it is the whole build again, unless the
# library gpu-build returned is carried (copy it from files_at into pygen/, name it in
# `carry`; only while the sources are unchanged). Narrow a phase with
# GPU_FAMILIES="attention quant" (tests) or GPU_BENCH="flows" plus GPU_BENCH_ARGS=--quick.
# The CPU tests are CI's and run nowhere here. Debugging a kernel fault:
# CUDA_LAUNCH_BLOCKING=1 names the launch that failed.
GPU_ARCH ?= $(or $(shell nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1),9.0)
GPU_JOBS ?= $(shell nproc)
GPU_LOGS ?= $(or $(OUT),build/gpu-logs)
GPU_DEADLINE ?= 540
GPU_TEST_TIMEOUT ?= 240
GPU_FAMILIES ?= attention quant common solvers sampling flows
GPU_BENCH ?= attention quant random solvers sampling flows
GPU_BENCH_ARGS ?=
GPU_T0 ?= $(shell date +%s)
GPU_T0 := $(GPU_T0)
# Seconds left before GPU_DEADLINE (counted from the first make's start: sub-makes get
# GPU_T0), at least 10, as a shell expression.
GPU_LEFT = $$(( $(GPU_DEADLINE) - $$(date +%s) + $(GPU_T0) > 10 ? $(GPU_DEADLINE) - $$(date +%s) + $(GPU_T0) : 10 ))
GPU_MAKE = $(MAKE) --no-print-directory GPU_T0=$(GPU_T0)

# The library for this GPU, in place. A carried pygen/_C*.so on a bare machine is used as is.
gpu-lib:
	@if [ ! -d build/gpu ] && ls pygen/_C*.so >/dev/null 2>&1; then \
	  echo "using the carried $$(ls pygen/_C*.so) (rm it to rebuild)"; \
	else \
	  set -e; echo "CUDA build for sm_$(subst .,,$(GPU_ARCH)) with $(GPU_JOBS) jobs"; \
	  TORCH_CUDA_ARCH_LIST="$(GPU_ARCH)" cmake -S . -B build/gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
	    -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$(CURDIR)/pygen" -DPYGEN_CUDA=1 \
	    -DPython_EXECUTABLE="$$($(PY) -c 'import sys; print(sys.executable)')" \
	    -DPYGEN_VERSION="$$(sed -n 's/^__version__ = "\(.*\)"/\1/p' pygen/__init__.py)" $(CMAKE_ARGS); \
	  NINJA_STATUS="[%f/%t %es] " timeout $(GPU_LEFT) cmake --build build/gpu -j $(GPU_JOBS); \
	fi
	$(PY) -m pygen info

gpu-build:
	@mkdir -p $(GPU_LOGS)
	@set -o pipefail; { nvidia-smi -L; nvcc --version | tail -n 1; time $(GPU_MAKE) gpu-lib; } \
	  2>&1 | tee $(GPU_LOGS)/build.log
	@lib=$$(ls pygen/_C*.so); if [ $$(stat -c %s $$lib) -lt 16000000 ]; then cp $$lib $(GPU_LOGS)/; \
	  else echo "$$lib is over 16 MB: not copied to $(GPU_LOGS)"; fi

# Always exits 0 once built (so gpu-cycle goes on to the benchmarks): read the summary.
gpu-test:
	@mkdir -p $(GPU_LOGS); : > $(GPU_LOGS)/tests.log
	@$(GPU_MAKE) gpu-lib >> $(GPU_LOGS)/build.log 2>&1 || { tail -n 30 $(GPU_LOGS)/build.log; exit 1; }
	@for f in $(GPU_FAMILIES); do \
	  left=$(GPU_LEFT); \
	  if [ $$left -lt 30 ]; then echo "== $$f: not run (GPU_DEADLINE)" | tee -a $(GPU_LOGS)/tests.log; continue; fi; \
	  echo "== $$f" >> $(GPU_LOGS)/tests.log; \
	  PYTHONUNBUFFERED=1 PYTEST_TIMEOUT=$(GPU_TEST_TIMEOUT) timeout -k 5 $$left $(PY) -m pytest tests/$$f -m cuda \
	    -q -rfE --tb=short -p no:cacheprovider -o timeout_method=thread >> $(GPU_LOGS)/tests.log 2>&1; \
	  echo "== $$f: exit $$?, $$(tail -n 1 $(GPU_LOGS)/tests.log)"; \
	done
	@grep -E "^(FAILED|ERROR) |Timeout" $(GPU_LOGS)/tests.log | cut -c1-240 | head -n 60 || true

gpu-bench:
	@mkdir -p $(GPU_LOGS); : > $(GPU_LOGS)/bench.log
	@$(GPU_MAKE) gpu-lib >> $(GPU_LOGS)/build.log 2>&1 || { tail -n 30 $(GPU_LOGS)/build.log; exit 1; }
	@for f in $(GPU_BENCH); do \
	  left=$(GPU_LEFT); \
	  if [ $$left -lt 30 ]; then echo "== bench $$f: not run (GPU_DEADLINE)" | tee -a $(GPU_LOGS)/bench.log; continue; fi; \
	  PYTHONUNBUFFERED=1 timeout -k 5 $$left $(PY) -m pygen bench $$f --device cuda $(GPU_BENCH_ARGS) \
	    >> $(GPU_LOGS)/bench.log 2>&1; \
	  echo "== bench $$f: exit $$?"; \
	done
	@name=$$($(PY) -c "from pygen.bench import device_name; print(device_name('cuda'))"); \
	  cp bench/results/$$name.json bench/results/$$name.png $(GPU_LOGS)/ 2>/dev/null || true
	@tail -n 40 $(GPU_LOGS)/bench.log

gpu-cycle: gpu-build gpu-test gpu-bench

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
