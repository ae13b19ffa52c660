# Everything a newcomer needs: `make test` and `make demo` set up what they use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo bench lint typecheck pytest system-deps clean lua-suite

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

# mysql-proxy's own functional suite and Lua unit tests against our `mysql-proxy`
# (lua_compat/suite.py). The GPL source is read at run time, never copied here: set
# MYSQL_PROXY_SRC to a checkout or bare git dir of github.com/mysql/mysql-proxy.
MYSQL_PROXY_SRC ?= $(wildcard /work/.mirror/mysql+mysql-proxy/repo)
LUA_SUITE_ARGS ?= --keep-going
lua-suite: $(STAMP) system-deps
	@test -n "$(MYSQL_PROXY_SRC)" || { echo "lua-suite: set MYSQL_PROXY_SRC to a mysql-proxy checkout or bare git dir"; exit 2; }
	@rc=0; \
	$(BIN)/python -m lua_compat.suite --mysql-proxy-src "$(MYSQL_PROXY_SRC)" $(LUA_SUITE_ARGS) || rc=1; \
	$(BIN)/python -m lua_compat.suite --mysql-proxy-src "$(MYSQL_PROXY_SRC)" --unit || rc=1; \
	exit $$rc

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
