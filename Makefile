# Every target sets up what it needs on a fresh machine, idempotently.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench serve servers clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tranche demo

servers:
	scripts/ensure-servers

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: $(STAMP) servers lint
	$(BIN)/pytest

bench: $(STAMP) servers
	@mkdir -p bench/results
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

serve: $(STAMP)
	$(BIN)/tranche serve

clean:
	rm -rf $(VENV) var bench/results .pytest_cache .mypy_cache .ruff_cache
