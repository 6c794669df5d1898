# The verbs a newcomer types. Everything runs from the project's own virtualenv (.venv);
# `make test` and `make demo` create it first when it is missing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Rebuilt when pyproject.toml changes (new dependency) or when .venv is missing.
STAMP := $(VENV)/.installed

.PHONY: help install test test-unit demo demo-stations lint schemas configuration env up down load prometheus bench cluster-up cluster-down

help:
	@echo "make install   create .venv and install smartgrid with its dev tools and bench frameworks"
	@echo "make test      make sure RabbitMQ answers (start a local one if needed), run pytest: the unit tier on every core, then the rest"
	@echo "make test-unit  the tests that need no broker (pytest -m 'not integration': unit, loopback, deploy), < 1 min"
	@echo "make demo      local grid of three substations, a burst of 600 requests, live view"
	@echo "make demo-stations  the same plus an OCPP substation with STATIONS (4) simulated stations and walk-ins"
	@echo "make lint      ruff check + ruff format --check + mypy"
	@echo "make bench     benchmarks: load-table scale, balance simulation, throughput (JSON in bench/results/)"
	@echo "make schemas   write the messages' JSON Schemas to docs/schemas"
	@echo "make configuration  write docs/configuration.md from the settings classes"
	@echo "make env       deploy/.env from deploy/.env.example, with random passwords (once)"
	@echo "make up        the whole stack in Docker: broker, grid, Prometheus, Grafana"
	@echo "make load      rush-hour load against the Docker stack for 60 s"
	@echo "make down      stop the Docker stack (volumes kept; down -v removes them)"
	@echo "make prometheus  local Prometheus (Debian package) scraping the grid make demo starts"
	@echo "make cluster-up   a RabbitMQ cluster of NODES (3) nodes on this machine; prints SMARTGRID_AMQP_URL"
	@echo "make cluster-down  stop that cluster and remove its folder"

install:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

$(STAMP): pyproject.toml
	$(MAKE) install

# Two runs: what needs no broker on every core (nothing there shares state), then the tests of
# the real broker one after another (they time real processes, so they share no core).
test: $(STAMP)
	$(PY) -m loadgen ensure-broker
	$(VENV)/bin/pytest -m "not integration" -n auto
	$(VENV)/bin/pytest -m integration

# The fast loop: everything not marked integration (tests/integration and tests/chaos are, by
# directory), with the broker URL on a closed port so that nothing here can lean on a broker.
# Deploy checks whose tool (promtool, docker compose) is absent are skipped, reasons listed.
# Nothing here shares state between tests, so they run on every core (pytest-xdist).
test-unit: $(STAMP)
	SMARTGRID_AMQP_URL='amqp://guest:guest@127.0.0.1:1/%2F' $(VENV)/bin/pytest -m "not integration" -n auto -rs

demo: $(STAMP)
	$(PY) -m loadgen demo

# One more substation, served over OCPP 2.0.1 by simulated stations (docs/loadgen.md#the-demo).
STATIONS ?= 4
demo-stations: $(STAMP)
	$(PY) -m loadgen demo --stations $(STATIONS)

# Figures are ratios to baselines measured in the same run; each part prints its table and writes
# bench/results/<part>.json. The throughput part needs the broker (and wrk for the gateway).
bench: $(STAMP)
	$(PY) -m loadgen ensure-broker
	$(PY) -m bench.scale
	$(PY) -m bench.balance
	$(PY) -m bench.throughput
	$(PY) -m bench.flood
	$(PY) -m bench.charging

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

schemas: $(STAMP)
	$(PY) -m contracts schema --out docs/schemas

configuration: $(STAMP)
	$(PY) -m docs_tools.configuration

# -- the Docker stack (deploy/compose.yaml) ------------------------------------------------------
COMPOSE := docker compose -f deploy/compose.yaml --env-file deploy/.env

env: deploy/.env

deploy/.env:
	@python3 -c 'import re, secrets, sys; \
	src = open("deploy/.env.example").read(); \
	sys.stdout.write(re.sub(r"(?m)^([A-Z_]+)=$$", lambda m: m.group(1) + "=" + secrets.token_hex(24), src))' > $@
	@chmod 600 $@
	@echo "wrote $@ with random passwords; the Grafana one: grep GRAFANA $@"

up: deploy/.env
	$(COMPOSE) up -d --build --wait
	@echo "gateway http://127.0.0.1:8000/docs  management UI http://127.0.0.1:15672 (admin)"
	@echo "Prometheus http://127.0.0.1:9090  Grafana http://127.0.0.1:3000 (admin)"

load: deploy/.env
	$(COMPOSE) --profile load run --rm loadgen

down:
	$(COMPOSE) down

prometheus: $(STAMP)
	$(PY) -m loadgen prometheus

# -- a RabbitMQ cluster on this machine (Debian's rabbitmq-server; docs/operations.md) -----------
# Its folder is <tmp>/smartgrid-cluster unless CLUSTER_DIR is given; cluster-down finds it there.
NODES ?= 3
CLUSTER_DIR ?=
CLUSTER_ARGS := $(if $(CLUSTER_DIR),--dir $(CLUSTER_DIR))

cluster-up: $(STAMP)
	$(PY) -m loadgen cluster up --nodes $(NODES) $(CLUSTER_ARGS)

cluster-down: $(STAMP)
	$(PY) -m loadgen cluster down $(CLUSTER_ARGS)
