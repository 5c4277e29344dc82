# The README's commands. Everything installs itself into .venv with uv from the committed lock.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(PYTHON) -m uv
export DAGSTER_HOME := $(CURDIR)/.dagster
export UV_LINK_MODE := copy
# Byte-compile at install: dbt, dagster and the daemon start many Python processes, and with
# PYTHONDONTWRITEBYTECODE set (as on CI images) each would compile every module again.
export UV_COMPILE_BYTECODE := 1

# The instance config DAGSTER_HOME uses: dagster.yaml (SQLite) or deploy/dagster.yaml (PostgreSQL).
DAGSTER_YAML ?= dagster.yaml

.PHONY: install demo test dev bench lint clean dagster-home

install: $(VENV)/.installed dagster-home

$(VENV)/.installed: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen
	@touch $@

dagster-home:
	@mkdir -p .dagster
	@ln -sf $(abspath $(DAGSTER_YAML)) .dagster/dagster.yaml

demo: install  ## seed three weeks of Jaffle Shop deliveries and materialize everything
	$(BIN)/lakehouse seed --days 21 --fresh
	$(BIN)/lakehouse materialize
	$(BIN)/lakehouse serve

test: install  ## every test, including the S3, PostgreSQL and daemon ones
	$(BIN)/pytest

dev: install  ## the Dagster UI on http://127.0.0.1:3000, with the daemon (DAGSTER_YAML=deploy/dagster.yaml for PostgreSQL)
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: install  ## benchmarks: writes bench/results/ (BENCH_ARGS="--quick", "--sf 10", ...)
	$(UV) sync --frozen --group bench
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf data .dagster dbt/target dbt/logs
