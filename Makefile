# Two commands set up a fresh machine: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
EXAMPLE ?= A farmer has 3 fields with 12 cows each. He sells 7 cows. How many cows does he have left?

.PHONY: install install-test run test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# llama.cpp runs the embedded model in-process and is built from source for this CPU. Never
# with -march=native: on virtual machines that list AMX without enabling it, AMX tiles crash
# every multi-token batch. Instead the ISA levels are named: AVX2 everywhere, and AVX512 with
# VNNI and BF16 where /proc/cpuinfo lists them (BF16 kernels make batched steps and prompts
# several times faster; see README, "The embedded model"). pip's cache must not hand back a
# wheel built for another CPU; the multimodal library is not built (nothing here uses it).
LLAMA_AVX512 := $(shell grep -qw avx512_bf16 /proc/cpuinfo 2>/dev/null && grep -qw avx512_vnni /proc/cpuinfo && grep -qw avx512vbmi /proc/cpuinfo && echo -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX512_VBMI=ON)
LLAMA_AVX_VNNI := $(shell grep -qw avx_vnni /proc/cpuinfo 2>/dev/null && echo -DGGML_AVX_VNNI=ON)
LLAMA_CMAKE_ARGS = -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON \
	-DGGML_F16C=ON $(LLAMA_AVX512) $(LLAMA_AVX_VNNI)
NPROC := $(shell nproc 2>/dev/null || echo 2)

# torch first, pinned to the CPU build on this machine's disk: any unpinned torch pulls
# gigabytes of CUDA packages. The extras' torch range admits it, so nothing replaces it.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install torch==2.13.0
	CMAKE_BUILD_PARALLEL_LEVEL=$(NPROC) CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" \
		$(BIN)/pip install --no-cache-dir 'llama-cpp-python[server]==0.3.36'
	$(BIN)/pip install -e '.[local,postgres]'
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed-run
	$(BIN)/pip install -e '.[local,postgres,test]'
	touch $@

install: $(VENV)/.installed-run

install-test: $(VENV)/.installed-test

## Solve an example problem with a CEO-managed discussion on the local CPU model. Greedy, so
## the demo says the same every time: sampled at the paper's 0.7, the 0.5B model slips on
## 36 - 7 now and then.
run: install
	$(BIN)/thinktank solve "$(EXAMPLE)" --pattern discussion --agents 3 --max-rounds 2 --temperature 0

## Install the test dependencies and run the whole suite.
test: install-test
	$(BIN)/ruff check .
	$(BIN)/pytest -q --durations=20

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install-test
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) .pytest_cache
