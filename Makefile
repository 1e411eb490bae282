# Two commands on a fresh machine with Python 3.11 and Java 17:
#   make demo   -- simulate a lake and run the whole temporal_weaver DAG on it
#   make test   -- the test suite (what .ci/run calls)
# Both create or reuse .venv, install the pinned requirements and fetch the pinned Delta jars once.

PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.weaver-installed
JARS_STAMP := .cache/jars/.complete

export SPARK_LOCAL_IP := 127.0.0.1
export PYSPARK_PYTHON := $(abspath $(BIN)/python)
export PYTHONHASHSEED := 0

.PHONY: demo test install jars bench clean help

help:
	@echo "make demo | make test | make bench | make clean"

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found - install Python 3.11 (or run: make PY=/path/to/python3.11 ...)"; exit 1; }
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || { echo "error: $(PY) is not Python 3.11"; exit 1; }
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

install: $(STAMP)

$(JARS_STAMP): $(STAMP) weaver/core/jars.py
	$(BIN)/python -m weaver.core.jars fetch

jars: $(JARS_STAMP)

demo: install jars
	$(BIN)/weaver demo

test: install jars
	@sh scripts/system-packages.sh
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest

bench: install jars
	$(BIN)/python bench/restore.py && $(BIN)/python bench/forecast.py && $(BIN)/python bench/weave.py && $(BIN)/python bench/recovery.py

clean:
	rm -rf lake airflow_home out .pytest_cache
