# The two commands of the README, each doing all set-up on a fresh machine:
#   make bench   the main job: speed and streaming tables (every backend and nn.LSTM), numerics table
#   make test    the full test suite: the CMake build and its ctest (when cmake is present), then pytest,
#                then the Triton kernels' tests under TRITON_INTERPRET=1
# A virtual environment in $(VENV) is created on first use and refreshed when the build files change.

PYTHON ?= python3
VENV ?= .venv
# This machine's CPU wheel; on a GPU machine use e.g. `make test TORCH=torch` for the CUDA build.
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.nrnm_fast-installed

.PHONY: test bench clean

$(INSTALLED): setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/*.h csrc/*/*.cpp csrc/*/*.h csrc/*/*.cu csrc/*/*.cuh)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "setuptools>=64" wheel ninja "$(TORCH)"
	$(PY) -m pip install --quiet --no-build-isolation -e ".[test]"
	touch $@

test: $(INSTALLED)
	@if command -v cmake >/dev/null 2>&1; then \
	  cmake -S . -B build/cmake -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')" \
	    -Wno-dev >/dev/null && cmake --build build/cmake -j 2 && \
	  OMP_NUM_THREADS=1 ctest --test-dir build/cmake --output-on-failure; \
	else echo "cmake not found: skipping the libtorch build and its ctest"; fi
	OMP_NUM_THREADS=1 NRNM_REQUIRE_EXTENSION=1 $(PY) -m pytest tests
	@# The Triton kernels in Triton's interpreter: TRITON_INTERPRET is read at import, so in a process of their own.
	OMP_NUM_THREADS=1 NRNM_REQUIRE_EXTENSION=1 TRITON_INTERPRET=1 $(PY) -m pytest tests/interpret

bench: $(INSTALLED)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
