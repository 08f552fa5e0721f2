# Two commands set up a fresh machine: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
EXAMPLE ?= A farmer has 3 fields with 12 cows each. He sells 7 cows. How many cows does he have left?

.PHONY: install install-test run test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# llama.cpp (the OpenAI-compatible server the openai backend is tested on) is built from
# source. A -march=native build uses AMX tiles where the CPU has them, and on virtual machines
# that do not enable AMX every multi-token batch crashes; a portable AVX2 build does not, and
# pip's cache must not hand back a native wheel built earlier.
LLAMA_CMAKE_ARGS = -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

# torch first, pinned to the CPU build on this machine's disk: any unpinned torch pulls
# gigabytes of CUDA packages. The extras' torch range admits it, so nothing replaces it.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install torch==2.13.0
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --no-cache-dir 'llama-cpp-python[server]==0.3.36'
	$(BIN)/pip install -e '.[local,postgres]'
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed-run
	$(BIN)/pip install -e '.[local,postgres,test]'
	touch $@

install: $(VENV)/.installed-run

install-test: $(VENV)/.installed-test

## Solve an example problem with a CEO-managed discussion on the local CPU model.
run: install
	$(BIN)/thinktank solve "$(EXAMPLE)" --pattern discussion --agents 3 --max-rounds 2

## Install the test dependencies and run the whole suite.
test: install-test
	$(BIN)/ruff check .
	$(BIN)/pytest -q

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
