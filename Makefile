# plantops: `make demo` runs the whole loop on embedded defaults; `make test` runs the test suite.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-nodeps.txt | cksum | cut -d' ' -f1)
export PLANTOPS_HOME ?= $(CURDIR)/data
export GX_ANALYTICS_ENABLED := false
export MLFLOW_ENABLE_TELEMETRY := false
export PYTHONPATH := $(CURDIR)/include:$(CURDIR)

.PHONY: install demo test docs up bench lint clean stack-up stack-down stack-airflow

install: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt
	$(PY) -m uv --version >/dev/null 2>&1 || $(PY) -m pip install --quiet uv==0.13.8
	[ -x $(BIN)/python ] || $(PY) -m uv venv --quiet --python $(PY) $(VENV)
	$(PY) -m uv pip install --quiet --python $(BIN)/python -r requirements.txt
	$(PY) -m uv pip install --quiet --python $(BIN)/python --no-deps -r requirements-nodeps.txt
	echo "$(CURDIR)/include" > "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/plantops.pth"
	rm -f $(VENV)/.installed-* && touch $@

demo: install
	$(BIN)/python -m plantops.demo

# The suite builds the docs site too: tests/test_docs.py runs `mkdocs build --strict` (CI runs exactly `make test`).
test: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest

# The documentation site (docs/, mkdocs.yml) into site/ (git-ignored); --strict fails on a broken link,
# a missing anchor or a page left out of the navigation.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --site-dir site

up: install
	$(BIN)/python -m plantops.environments.up

# The native stack (PostgreSQL, Trino, MLflow server, Redis, a Spark cluster) on 127.0.0.1, no Docker: see docs/tiers-and-scale.md.
stack-up: install
	$(BIN)/python -m plantops.environments.stack up $(if $(FRESH),--fresh,)

stack-down: install
	$(BIN)/python -m plantops.environments.stack down

stack-airflow: install
	$(BIN)/python -m plantops.environments.up --stack

# Arguments for bench.run go through ARGS (make would take --only itself): make bench ARGS="--only parsing".
bench: install
	$(BIN)/python -m bench.run $(ARGS)

lint: install
	$(BIN)/python -m ruff check . 2>/dev/null || echo "ruff not installed"

clean:
	rm -rf data .pytest_cache spark-warehouse site
