# Patient import: `make run` (set up and run the demo) and `make test` on a fresh clone.
SHELL := /bin/bash
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
PY := $(ROOT)/.venv/bin/python
# The project's own Python packages (`make install` compiles them to bytecode).
PROJECT_PACKAGES := include dags plugins tools scripts bench tests

export PATIENT_IMPORT_HOME ?= $(ROOT)/var
export AIRFLOW_HOME ?= $(PATIENT_IMPORT_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(ROOT)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(ROOT)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False
export PYTHONPATH := $(ROOT)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: help install airflow-db demo run import undo up down airflow lint test suites clean purge reliability bench

# What a user passes (`make import FILE=...`) reaches the recipes as environment variables, taken
# as written (`$(value ...)`: make expands nothing in it) and quoted by the shell ("$$FILE"): a
# quote, `;`, `$` or `$(...)` in a value is part of the value, never make or shell code.
override PRACTICE := $(value PRACTICE)
override FILE := $(value FILE)
override EXPORTED_ON := $(value EXPORTED_ON)
override IMPORT := $(value IMPORT)
override DAYS := $(value DAYS)
export PRACTICE FILE EXPORTED_ON IMPORT DAYS

IMPORT_USAGE := usage: make import PRACTICE=<id> FILE=<path> [EXPORTED_ON=YYYY-MM-DD] [DRY_RUN=1]

help:
	@echo "Targets:"
	@echo "  make run          install, then import the demo export through the real DAG and print the summary"
	@echo "  make import PRACTICE=<id> FILE=<path> [EXPORTED_ON=YYYY-MM-DD] [DRY_RUN=1]"
	@echo "                    import one file through the real DAG; fails (make: ... Error 1) when rejected or failed, Error 2 when refused"
	@echo "  make undo IMPORT=<id>   take a completed import back (inserted patients removed, updated ones restored);"
	@echo "                    Error 1 when it cannot be undone (a dry run, rejected, failed, unknown)"
	@echo "  make up           start the local Airflow with the UI (scheduler, API server, DAG processor, triggerer)"
	@echo "  make down         stop it"
	@echo "  make airflow ARGS=\"<command>\"   any Airflow CLI command in this project's Airflow home,"
	@echo "                    e.g. make airflow ARGS=\"dags list\""
	@echo "  make purge [DAYS=N] [DRY_RUN=1]   delete patient files older than the retention period"
	@echo "  make lint         ruff (with its Airflow rules) on the repository and mypy on include/"
	@echo "  make test         ruff, the whole test suite (mypy and the hostile-memory figures beside it), then make reliability"
	@echo "  make reliability  hostile inputs, rows lost or duplicated, faults and markers: the figures"
	@echo "  make bench [BENCH_SIZES=1000,10000] [BENCH_REPEAT=3] [BENCH_OUT=dir]   the throughput benchmark (docs/performance.md)"
	@echo "  make suites       rewrite the Great Expectations suites in expectations/ from suites.py"
	@echo "  make install      uv (when missing) and the locked dependencies into .venv; all compiled to bytecode, the project's own folders too"
	@echo "  make airflow-db   create or migrate the local Airflow database (skipped when current)"
	@echo "  make demo         drop the demo export into the demo practice's inbox"
	@echo "  make clean        delete var/ (the local Airflow home, store and file areas)"
	@echo "  make help         this list"
	@echo "Settings (make variables):"
	@echo "  PRACTICE, FILE, EXPORTED_ON, DRY_RUN   make import; DRY_RUN=1 changes no patient"
	@echo "  IMPORT             make undo: the import's id (Import Results, its report's import_id)"
	@echo "  DAYS               make purge: keep files younger than DAYS days, at least 1 (default PATIENT_IMPORT_RETENTION_DAYS)"
	@echo "  ARGS               make airflow: the Airflow CLI command and its options"
	@echo "  BENCH_SIZES, BENCH_REPEAT   make bench: export sizes and runs per import figure"
	@echo "  BENCH_FIGURES, BENCH_DATABASES   make bench: which figures and databases (README \"Performance\")"
	@echo "  BENCH_LARGEST_FIGURES, BENCH_LARGEST_REPEAT, BENCH_LARGEST_DATABASES   make bench: the largest size's own"
	@echo "  BENCH_AIRFLOW_REPEAT        make bench: runs of each Airflow figure (default BENCH_REPEAT, at least 3)"
	@echo "  BENCH_FIGURE_TIMEOUT        make bench: seconds before one figure's process is stopped (default 1800)"
	@echo "  BENCH_MEMORY_SIZES make bench: sizes beyond 1,000,000 rows, up to 2,000,000, at which ours alone runs"
	@echo "                     (default 2000000 when BENCH_SIZES reaches 1,000,000; none to leave them out)"
	@echo "  BENCH_OUT          make bench: results elsewhere (default bench/results, which also rewrites docs/performance.md)"
	@echo "  TEST_WORKERS       make test: test processes (default cores + 1, pytest-xdist; 1 runs the suite in one process)"
	@echo "Settings (environment; README.md, Settings, has the whole table):"
	@echo "  PATIENT_IMPORT_HOME=$(PATIENT_IMPORT_HOME)"
	@echo "  AIRFLOW_HOME=$(AIRFLOW_HOME)"
	@echo "  PATIENT_IMPORT_AIRFLOW_PORT   make up's API server and UI port (default 8080; log servers on the next two)"
	@echo "  PATIENT_IMPORT_STORAGE, PATIENT_IMPORT_PRACTICES, PATIENT_IMPORT_SCHEDULE, PATIENT_IMPORT_TIMEZONE,"
	@echo "  PATIENT_IMPORT_RETENTION_DAYS, AIRFLOW_CONN_PATIENT_STORE, AIRFLOW_CONN_PATIENT_IMPORT_ALERTS, ..."

# uv itself is installed when missing; the locked dependencies go into .venv, compiled to bytecode
# once (about a minute of CPU the first time, a second after): uv installs none by default, and where
# PYTHONDONTWRITEBYTECODE is set (CI images, containers) every process would compile Great
# Expectations, Airflow and pandas from source again (`import great_expectations`: 9 s of CPU
# instead of 4), which is most of what the test suite's and the bench's processes spend. The
# project's own packages are compiled too (a second the first time, nothing after): every Airflow
# task process, DAG parse and script imports them, ~0.3 s of CPU each from source. A file that does
# not compile (or a tree it cannot write) is named and does not stop the install.
install:
	@command -v uv >/dev/null 2>&1 || test -x "$(HOME)/.local/bin/uv" || python3 -m pip install --quiet --user uv
	@PATH="$(HOME)/.local/bin:$$PATH" uv sync --frozen --inexact --quiet --compile-bytecode
	@cd "$(ROOT)" && $(PY) -m compileall -q -j 0 $(PROJECT_PACKAGES) \
		|| echo "make install: the files or folders named above were not compiled to bytecode (Python compiles them when imported)" >&2

# The local Airflow metadata database (SQLite under $$AIRFLOW_HOME), created or migrated; skipped in
# milliseconds when it is already at the installed Airflow's head revision (scripts/airflow_db.py).
airflow-db: install
	@$(PY) scripts/airflow_db.py

demo: install
	@$(PY) -m tools.demo

run: airflow-db demo
	@$(PY) scripts/run_dag.py --practice demo_clinic

# The conf is checked (SPEC §7) before Airflow's database is touched: a refused one exits 2 at once.
import: install
	@test -n "$$PRACTICE" || { echo "$(IMPORT_USAGE)"; exit 2; }
	@test -n "$$FILE" || { echo "$(IMPORT_USAGE)"; exit 2; }
	@$(PY) scripts/run_dag.py --check-only --practice "$$PRACTICE" --file "$$FILE" $${EXPORTED_ON:+--exported-on "$$EXPORTED_ON"}
	@$(MAKE) -s airflow-db
	@$(PY) scripts/run_dag.py --practice "$$PRACTICE" --file "$$FILE" \
		$${EXPORTED_ON:+--exported-on "$$EXPORTED_ON"} $(if $(filter 1 true yes,$(DRY_RUN)),--dry-run)

# One import taken back in the store (SPEC §8), recorded as undone by the shell user.
undo: install
	@test -n "$$IMPORT" || { echo "usage: make undo IMPORT=<import id>"; exit 2; }
	@$(PY) -m include.patient_import.undo -- "$$IMPORT"

# The local Airflow (scheduler, API server + UI, DAG processor, triggerer) on the embedded defaults.
up: install
	@$(PY) scripts/airflow_stack.py up

down:
	@$(PY) scripts/airflow_stack.py down

# Any Airflow CLI command with this project's AIRFLOW_HOME, DAGs, plugins and PYTHONPATH, e.g.
# make airflow ARGS="backfill create --dag-id patient_import --from-date 2026-11-01 --to-date 2026-11-03 --max-active-runs 1"
# `dags list` and friends warn in three lines that graphviz is missing: it only draws `dags show`
# images, which nothing here needs, so that one warning is silenced.
airflow: airflow-db
	@test -n "$(ARGS)" || { echo 'usage: make airflow ARGS="<airflow command>", e.g. make airflow ARGS="dags list"'; exit 2; }
	@PYTHONWARNINGS="$${PYTHONWARNINGS:+$$PYTHONWARNINGS,}ignore:Could not import graphviz:UserWarning" \
		$(ROOT)/.venv/bin/airflow $(ARGS)

# Settings in pyproject.toml ([tool.ruff], [tool.mypy]); both run from the project root to find them.
lint: install
	@cd "$(ROOT)" && .venv/bin/ruff check
	@cd "$(ROOT)" && .venv/bin/mypy include

# ruff first (a finding fails in seconds), then the suite with mypy and the hostile-memory figures
# beside it at the lowest CPU priority, then the reliability figures: scripts/run_tests.sh.
# TEST_WORKERS pytest-xdist processes share the suite; a module (and every test on the session's
# Airflow stack) stays on one worker (tests/conftest.py, SHARED_STACK_MODULES).
# Unset, the script's default: one more worker than cores (about a fifth of the suite is spent
# waiting on its servers and schedulers, which a third worker fills on two cores).
test: install
	@TEST_WORKERS="$(TEST_WORKERS)" bash "$(ROOT)/scripts/run_tests.sh"

# Patient files older than $$PATIENT_IMPORT_RETENTION_DAYS (or DAYS) leave archive/, quarantine/,
# outbox/, reports/ and data_docs/; inbox/ and staging/ are never touched.
purge: install
	@$(PY) -m include.patient_import.retention $${DAYS:+--days "$$DAYS"} $(if $(filter 1 true yes,$(DRY_RUN)),--dry-run)

reliability: install
	@$(PY) scripts/reliability.py

# The throughput benchmark (bench/, docs/performance.md): installs the bench-only group (dlt,
# DuckDB, matplotlib, pyinstrument) beside the rest, then runs every figure in its three cases and
# prints issue #14's targets met / NOT MET; writes bench/results/latest.json, the chart and the
# tables of docs/performance.md. BENCH_SIZES=1000,10000 and BENCH_REPEAT=3 override the defaults
# (1000,100000,1000000 rows; 3 runs of each import figure, the median reported; the Airflow figures
# BENCH_AIRFLOW_REPEAT, at least 3). A run that reaches 1,000,000 rows also
# runs ours alone at 2,000,000 (the most rows an export may hold), for the memory target's "flat
# beyond it"; BENCH_MEMORY_SIZES=none leaves that out.
bench:
	@command -v uv >/dev/null 2>&1 || test -x "$(HOME)/.local/bin/uv" || python3 -m pip install --quiet --user uv
	@PATH="$(HOME)/.local/bin:$$PATH" uv sync --frozen --inexact --quiet --compile-bytecode --group bench
	@$(PY) -m bench.run $(if $(BENCH_SIZES),--sizes "$(BENCH_SIZES)") $(if $(BENCH_REPEAT),--repeat "$(BENCH_REPEAT)") \
		$(if $(BENCH_OUT),--out "$(BENCH_OUT)")

suites: install
	@$(PY) -m include.patient_import.suites

clean:
	rm -rf "$(ROOT)/var"
