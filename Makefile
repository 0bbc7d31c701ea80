# The two commands a newcomer needs: `make run` and `make test`.
# Both create the virtual environment and install into it on first use.

PYTHON ?= python3
# make run PORT=8100 CONFIG=config/hermes.example.toml
CONFIG ?= config/default.toml
PORT ?=
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "perpstream needs Python 3.11 or newer (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,contracts]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/perpstream serve --config $(CONFIG) $(if $(PORT),--port $(PORT))

# Two workers (pytest-xdist): most of the suite's time is real processes
# waiting on each other, so two run in about 60 % of the time of one.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# Quality gates: lint, and types (the actor runtime strictly).
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy --strict actors
	$(BIN)/mypy perpstream

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/fanout.py --quick
	$(BIN)/python bench/topic_fanout.py
	$(BIN)/python bench/liquidation_index.py
	$(BIN)/python bench/indexer_catchup.py
	$(BIN)/python bench/conn_memory.py
	$(BIN)/python bench/mass_disconnect.py
	$(BIN)/python bench/abuse_limits.py
	$(BIN)/python bench/oracle_fidelity.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
