# taskapi: `make run` serves the API on the embedded servers; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test fuzz clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	@touch $(STAMP)

run: install
	exec $(PY) -m taskapi.devserver

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

fuzz: install
	$(PY) tests/fuzz/schemathesis_run.py

clean:
	rm -rf $(VENV) .pytest_cache
