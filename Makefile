# kvmweb: the commands a person (and CI) runs. See README.md.
#
#   make demo           install what is missing, start the lab, web and worker
#   make stop           stop the web server, the worker and the Redis the demo started
#   make status         what of the demo runs
#   make lint           ruff (lint and format), strict mypy, the import layers and no import circle
#   make test           the whole suite (honours DATABASE_URL; extra args: PYTEST_ARGS='-m "not lab"')
#   make test-fast      the developer's loop, under a minute: no lab, browser, started processes or waits; no root
#   make test-postgres  the whole suite on a local PostgreSQL it installs and starts
#   make lab-up / lab-down / lab-status   the demo's lab of simulated KVM hosts
#   make bench          the benchmarks, as `name: value` lines
#   make load           locust: 200 users for 60 s on pages, API and dashboard socket while migrations run
#   make scale-test     2 daphne, 3 workers, PostgreSQL, Redis, 4 lab hosts, 12 migrations at once, with faults

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# The lab's name: LAB_NAME=x or KVMWEB_LAB_NAME=x (what scripts/demo.sh reads), else demo.
LAB_NAME ?= $(or $(KVMWEB_LAB_NAME),demo)
export KVMWEB_LAB_NAME := $(LAB_NAME)

.PHONY: help demo stop status lint test test-fast test-postgres lab-up lab-down lab-status bench load scale-test \
	system-deps-fast system-deps-demo system-deps-test system-deps-ci

help:
	@sed -n 's/^#   //p' Makefile

demo: system-deps-demo $(VENV)/.installed-runtime
	@scripts/demo.sh start

stop:
	@scripts/demo.sh stop

status:
	@scripts/demo.sh status

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	$(PY) scripts/code_shape.py --check

test: system-deps-test $(VENV)/.installed-dev
	$(PY) -m pytest $(PYTEST_ARGS)

# The markers are declared in pytest.ini; a test that starts a server or
# Python without `processes` fails (tests/conftest.py), so this stays fast.
FAST_MARKERS := not lab and not browser and not processes and not slow
# Spread over the cores (pytest-xdist: each worker has its own test database
# and Redis): the fast tests mostly wait (sockets, Redis, short timeouts), so
# two workers on two cores took 47 s where one took 69-72 s. FAST_WORKERS=0: one process.
FAST_WORKERS ?= auto
test-fast: system-deps-fast $(VENV)/.installed-dev
	$(PY) -m pytest -m "$(FAST_MARKERS)" -n $(FAST_WORKERS) $(PYTEST_ARGS)

test-postgres: system-deps-ci $(VENV)/.installed-dev
	DATABASE_URL="$$(scripts/start-postgres.sh)" $(PY) -m pytest $(PYTEST_ARGS)

lab-up: system-deps-demo $(VENV)/.installed-runtime
	$(PY) -m tests.lab up --name $(LAB_NAME)

lab-down: $(VENV)/.installed-runtime
	$(PY) -m tests.lab down --name $(LAB_NAME)

lab-status: $(VENV)/.installed-runtime
	$(PY) -m tests.lab status --name $(LAB_NAME)

bench: system-deps-demo $(VENV)/.installed-dev
	$(PY) -m bench

LOAD_ARGS ?=
load: system-deps-demo $(VENV)/.installed-dev
	$(PY) -m bench.load $(LOAD_ARGS)

SCALE_ARGS ?=
scale-test: system-deps-ci $(VENV)/.installed-dev
	$(PY) -m bench.scale $(SCALE_ARGS)

system-deps-fast:
	@scripts/install-system-deps.sh fast

system-deps-demo:
	@scripts/install-system-deps.sh demo

system-deps-test:
	@scripts/install-system-deps.sh test

system-deps-ci:
	@scripts/install-system-deps.sh ci

# The virtualenv: created once, the pinned requirements installed again only
# when a requirements file changes. libvirt-python builds from source against
# the system's libvirt, hence the system packages first.
$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-runtime: requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	@touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $@ $(VENV)/.installed-runtime
