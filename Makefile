# The verbs everyone runs the same way; .ci/run calls `make test` and `make lint`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= policies/exchanger.yaml

.PHONY: serve test lint demo bench soak clean

# Serving needs the package alone; the tests and linters need their extras too.
$(BIN)/.installed-serve: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(BIN)/.installed: $(BIN)/.installed-serve
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $@

serve: $(BIN)/.installed-serve
	$(BIN)/exchanger serve --config $(CONFIG)

demo: $(BIN)/.installed-serve
	$(BIN)/exchanger demo

test: $(BIN)/.installed
	bash scripts/install-test-deps.sh
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest $(PYTEST_ARGS)
	$(BIN)/coverage combine --quiet
	$(BIN)/coverage report

lint: $(BIN)/.installed
	$(BIN)/ruff check exchanger tests
	$(BIN)/ruff format --check exchanger tests
	$(BIN)/mypy --strict exchanger tests

bench: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench

soak: $(BIN)/.installed
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) .coverage .pytest_cache .mypy_cache .ruff_cache
