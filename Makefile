# Patient import: `make run` (set up and run the demo) and `make test` on a fresh clone.
SHELL := /bin/bash
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
PY := $(ROOT)/.venv/bin/python

export PATIENT_IMPORT_HOME ?= $(ROOT)/var
export AIRFLOW_HOME ?= $(PATIENT_IMPORT_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(ROOT)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(ROOT)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False
export PYTHONPATH := $(ROOT)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: help install airflow-db demo run import up down test suites clean purge reliability bench

help:
	@echo "make run      install, then import the demo export through the real DAG"
	@echo "make test     the whole test suite"
	@echo "make import PRACTICE=<id> FILE=<path> [EXPORTED_ON=YYYY-MM-DD] [DRY_RUN=1]"
	@echo "make up / make down   start / stop the local Airflow with the UI (scheduler, API server, ...)"
	@echo "make purge [DAYS=N] [DRY_RUN=1]   delete patient files older than the retention period"
	@echo "make reliability   hostile inputs, rows lost or duplicated, faults and markers: the figures"

# uv itself is installed when missing; the locked dependencies go into .venv.
install:
	@command -v uv >/dev/null 2>&1 || test -x "$(HOME)/.local/bin/uv" || python3 -m pip install --quiet --user uv
	@PATH="$(HOME)/.local/bin:$$PATH" uv sync --frozen --inexact --quiet

# The local Airflow metadata database (SQLite under $$AIRFLOW_HOME), created or migrated.
airflow-db: install
	@mkdir -p "$(AIRFLOW_HOME)"
	@$(ROOT)/.venv/bin/airflow db migrate >"$(AIRFLOW_HOME)/db_migrate.log" 2>&1 || { cat "$(AIRFLOW_HOME)/db_migrate.log"; exit 1; }

demo: install
	@$(PY) -m include.patient_import.demo

run: airflow-db demo
	@$(PY) scripts/run_dag.py --practice demo_clinic

# The conf is checked (SPEC §7) before Airflow's database is touched: a refused one exits 2 at once.
import: install
	@test -n "$(PRACTICE)" || { echo "usage: make import PRACTICE=<id> FILE=<path> [EXPORTED_ON=YYYY-MM-DD] [DRY_RUN=1]"; exit 2; }
	@test -n "$(FILE)" || { echo "usage: make import PRACTICE=<id> FILE=<path> [EXPORTED_ON=YYYY-MM-DD] [DRY_RUN=1]"; exit 2; }
	@$(PY) scripts/run_dag.py --check-only --practice "$(PRACTICE)" --file "$(FILE)" $(if $(EXPORTED_ON),--exported-on "$(EXPORTED_ON)")
	@$(MAKE) -s airflow-db
	@$(PY) scripts/run_dag.py --practice "$(PRACTICE)" --file "$(FILE)" \
		$(if $(EXPORTED_ON),--exported-on "$(EXPORTED_ON)") $(if $(filter 1 true yes,$(DRY_RUN)),--dry-run)

# The local Airflow (scheduler, API server + UI, DAG processor, triggerer) on the embedded defaults.
up: install
	@$(PY) scripts/airflow_stack.py up

down:
	@$(PY) scripts/airflow_stack.py down

test: install
	@$(PY) -m pytest -q
	@$(PY) scripts/reliability.py

# Patient files older than $$PATIENT_IMPORT_RETENTION_DAYS (or DAYS) leave archive/, quarantine/,
# outbox/, reports/ and data_docs/; inbox/ and staging/ are never touched.
purge: install
	@$(PY) -m include.patient_import.retention $(if $(DAYS),--days "$(DAYS)") $(if $(filter 1 true yes,$(DRY_RUN)),--dry-run)

reliability: install
	@$(PY) scripts/reliability.py

# The throughput benchmark (bench/, docs/performance.md): installs the bench-only group (dlt,
# matplotlib, pyinstrument) beside the rest, then runs every figure. BENCH_SIZES=1000,10000 and
# BENCH_REPEAT=3 override the defaults (1000,100000,1000000 rows; 3 runs, the median reported).
bench:
	@command -v uv >/dev/null 2>&1 || test -x "$(HOME)/.local/bin/uv" || python3 -m pip install --quiet --user uv
	@PATH="$(HOME)/.local/bin:$$PATH" uv sync --frozen --inexact --quiet --group bench
	@$(PY) -m bench.run $(if $(BENCH_SIZES),--sizes "$(BENCH_SIZES)") $(if $(BENCH_REPEAT),--repeat "$(BENCH_REPEAT)")

suites: install
	@$(PY) -m include.patient_import.suites

clean:
	rm -rf "$(ROOT)/var"
