# mailgate: `make run` and `make test` do all set-up on a fresh Debian machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck check system-packages venv clean

system-packages:
	@bash deploy/install-system-packages.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: system-packages venv
	$(BIN)/mailgate serve

test: system-packages venv
	$(BIN)/ruff check gateway tests
	$(BIN)/mypy gateway
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check gateway tests

typecheck: venv
	$(BIN)/mypy gateway

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
