# The verbs a newcomer types. Everything runs from the project's own virtualenv (.venv);
# `make test` and `make demo` create it first when it is missing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Rebuilt when pyproject.toml changes (new dependency) or when .venv is missing.
STAMP := $(VENV)/.installed

.PHONY: help install test demo lint schemas

help:
	@echo "make install   create .venv and install smartgrid with its dev tools"
	@echo "make test      make sure RabbitMQ answers (start a local one if needed), run pytest"
	@echo "make demo      local grid of three substations, a burst of 600 requests, live view"
	@echo "make lint      ruff check + ruff format --check + mypy"
	@echo "make schemas   write the messages' JSON Schemas to docs/schemas"

install:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

$(STAMP): pyproject.toml
	$(MAKE) install

test: $(STAMP)
	$(PY) -m loadgen ensure-broker
	$(VENV)/bin/pytest

demo: $(STAMP)
	$(PY) -m loadgen demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

schemas: $(STAMP)
	$(PY) -m contracts schema --out docs/schemas
