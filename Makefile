# Two commands set up a fresh machine: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
EXAMPLE ?= A farmer has 3 fields with 12 cows each. He sells 7 cows. How many cows does he have left?

.PHONY: install install-test run test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned to the CPU build on this machine's disk: any unpinned torch pulls
# gigabytes of CUDA packages. The extras' torch range admits it, so nothing replaces it.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install torch==2.13.0
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
