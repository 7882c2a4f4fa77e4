# The README's commands. Everything runs from .venv at the repository root.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/include:$(CURDIR)/plugins
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export AIRFLOW_HOME ?= $(CURDIR)/.sandbox/airflow
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__UNIT_TEST_MODE := False
DAG ?= dr_drill_postgres_primary_loss
CONF ?= {}

.PHONY: venv drill run test sandbox-up sandbox-down sandbox-status drill-lock break-drill-lock drills-off drills-on drills-status airflow airflow-down airflow-status bench lint clean

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[venv] installing pinned requirements (first run takes a few minutes)"
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -r requirements.txt
	@touch $@

sandbox-up: venv
	@$(PY) -m rehearsal_sandbox up

sandbox-down: venv
	@$(PY) -m rehearsal_sandbox down

sandbox-status: venv
	@$(PY) -m rehearsal_sandbox status

# A disruptive drill holds its environment's lock until its teardown; a run killed before its teardown leaves it
# behind. The next drill breaks a lock whose run no longer exists by itself; this shows and breaks it by hand.
ENV ?= sandbox
drill-lock: venv
	@set -a; [ ! -f .sandbox/env ] || . .sandbox/env; set +a; $(PY) -m rehearsal.results show-lock --environment '$(ENV)'

break-drill-lock: venv
	@set -a; [ ! -f .sandbox/env ] || . .sandbox/env; set +a; $(PY) -m rehearsal.results break-lock --environment '$(ENV)'

# The kill switch: while drills are off for an environment every drill (scheduled or triggered by hand) skips, naming
# the reason; incidents are never held back (declaring one switches drills off). The Airflow Variable
# rehearsal_drills_off (any non-empty value) switches them off too, from the UI.
drills-off: venv
	@[ -n "$$REASON" ] || { echo 'make drills-off needs REASON="why" (everyone whose drill skips reads it)'; exit 2; }
	@set -a; [ ! -f .sandbox/env ] || . .sandbox/env; set +a; $(PY) -m rehearsal.results drills-off --environment '$(ENV)' --reason "$$REASON"

drills-on: venv
	@set -a; [ ! -f .sandbox/env ] || . .sandbox/env; set +a; $(PY) -m rehearsal.results drills-on --environment '$(ENV)'

drills-status: venv
	@set -a; [ ! -f .sandbox/env ] || . .sandbox/env; set +a; $(PY) -m rehearsal.results drills-status --environment '$(ENV)'

# EXECUTOR=local (LocalExecutor, the default) or EXECUTOR=edge: the Edge executor with one edge worker per sandbox
# region (worker-us-east-1, worker-us-west-2, both serving the queues default and recovery) that reach the
# api-server over HTTP; a runbook whose worker dies with its region is retried on the other.
EXECUTOR ?= local
airflow: venv
	@REHEARSAL_AIRFLOW_EXECUTOR='$(EXECUTOR)' $(PY) -m rehearsal_sandbox airflow-up

airflow-down: venv
	@$(PY) -m rehearsal_sandbox airflow-down

airflow-status: venv
	@$(PY) -m rehearsal_sandbox airflow-status

drill: venv
	@$(PY) scripts/run_dag.py --sandbox dr_drill_postgres_primary_loss --conf '{"mode": "disruptive", "path": "auto"}'

run: venv
	@$(PY) scripts/run_dag.py --sandbox $(DAG) --conf '$(CONF)'

test: venv
	@$(PY) -m pytest

bench: venv
	@$(PY) bench/run.py

lint: venv
	@$(VENV)/bin/ruff check .

clean: sandbox-down
	rm -rf reports .sandbox
