# Everything a newcomer needs: `make test` and `make demo` set up what they use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo bench lint typecheck pytest system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# The tests start their own MariaDB, and run real clients; these come from Debian.
system-deps:
	@$(PYTHON) scripts/system_deps.py

lint: $(STAMP)
	$(BIN)/ruff check mysqlproxy lua_compat tests scripts $(wildcard bench/*.py)

typecheck: $(STAMP)
	$(BIN)/mypy mysqlproxy lua_compat

pytest: $(STAMP) system-deps
	$(BIN)/pytest -q

test: lint typecheck pytest

demo: $(STAMP) system-deps
	$(BIN)/python scripts/demo.py

bench: $(STAMP) system-deps
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
