# thermokern: the README's two commands (`make bench`, `make test`) and developer targets.
#
# Without an active virtual environment, everything goes into ./.venv (created on demand).
# The CUDA kernels are compiled when nvcc is found (CUDA_HOME, default /usr/local/cuda) and
# torch is a CUDA build; otherwise the build is CPU + Triton only.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
ifdef VIRTUAL_ENV
  BIN := $(VIRTUAL_ENV)/bin
else
  BIN := $(VENV)/bin
endif
PY := $(BIN)/python
PIP_DEPS_STAMP := $(BIN)/../.thermokern-deps

TORCH_SPEC ?= torch>=2.6
DEPS := "$(TORCH_SPEC)" "setuptools>=77" wheel pybind11 ninja cmake numpy pytest hypothesis pytest-benchmark expecttest \
  arviz transformers
# arviz: the reference of the ESS / R-hat tests; transformers: the tiny causal LM of examples/grpo_head.py.
# torch's CUDA wheels bring triton; a CPU-only torch gets it here for the interpreter.
TRITON_DEP := $(shell [ "$$(uname -s)" = Linux ] && echo triton)

CUDA_HOME ?= $(shell [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda)
export CUDA_HOME
# ccache, when installed, makes rebuilds cheap (CCACHE_NOHASHDIR: editable builds hit it).
CCACHE_PATH := $(shell [ -d /usr/lib/ccache ] && echo /usr/lib/ccache:)
export PATH := $(CCACHE_PATH)$(PATH)
export CCACHE_NOHASHDIR := 1

CMAKE_BUILD ?= build/cmake
CMAKE_ARGS ?=

.PHONY: all setup build test test-py test-cpp bench bench-quick lint format clean info

all: test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(PIP_DEPS_STAMP): | $(PY)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install $(DEPS) $(TRITON_DEP)
	touch $@

setup: $(PIP_DEPS_STAMP)

# Always re-run: ninja inside the build only recompiles what changed.
build: setup
	$(PY) -m pip install --no-build-isolation --no-deps -e .

info: build
	$(PY) -m thermokern.cli info

test: build test-py test-cpp

test-py:
	$(PY) -m pytest tests -q

# C++ unit tests (ctest) of csrc/include: Philox known answers, row statistics, MALA, the
# headers in device code (nvcc). They compile nothing of the extension (`make build` did that);
# CMAKE_ARGS=-DTHERMOKERN_CMAKE_EXTENSION=ON adds CMake's compile of the extension's sources.
test-cpp: setup
	PATH=$(BIN):$$PATH cmake -S . -B $(CMAKE_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS)
	PATH=$(BIN):$$PATH cmake --build $(CMAKE_BUILD)
	PATH=$(BIN):$$PATH ctest --test-dir $(CMAKE_BUILD) --output-on-failure

bench: build
	$(PY) -m thermokern.cli bench

bench-quick: build
	$(PY) -m thermokern.cli bench --quick

lint: setup
	$(PY) -m pip install -q ruff
	$(PY) -m ruff check src kernels tests bench examples && $(PY) -m ruff format --check src kernels tests bench examples

format: setup
	$(PY) -m pip install -q ruff
	$(PY) -m ruff format src kernels tests bench examples && $(PY) -m ruff check --fix src kernels tests bench examples

clean:
	rm -rf build $(CMAKE_BUILD) src/thermokern/_C*.so *.egg-info src/*.egg-info
