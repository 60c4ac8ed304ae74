# taskapi: `make run` serves the API on the embedded servers; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: promtool install run test lint openapi-lint postman node-tools fuzz e2e nginx wrk bench clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	@touch $(STAMP)

run: install
	exec $(PY) -m taskapi.runtime.devserver

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff (style, bugs, import order), mypy (strict on services and the token code), and the
# import contracts of pyproject.toml (layers; the app never imports the dev runner or tests).
lint: install promtool
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	cd deploy/prometheus && promtool check config prometheus.yml && promtool test rules taskapi-rules.test.yml

# promtool (alert rules, Prometheus config) from Debian's prometheus package.
promtool:
	@command -v promtool >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null)

# Node tools (newman, Redocly CLI), pinned in tools/package-lock.json, installed into tools/.
NODE_BIN := tools/node_modules/.bin
node-tools: $(NODE_BIN)/.installed

$(NODE_BIN)/.installed: tools/package.json tools/package-lock.json
	@command -v npm >/dev/null || { echo "make: newman and redocly need Node.js and npm; install them (e.g. apt-get install nodejs npm) and run this again" >&2; exit 2; }
	npm ci --prefix tools --no-audit --no-fund --silent
	@touch $@

# The OpenAPI document, as /openapi.json serves it, through Redocly's recommended rules.
openapi-lint: install node-tools
	@mkdir -p var
	TASKAPI_ENV=testing $(VENV)/bin/flask --app wsgi openapi export -o var/openapi.json
	$(NODE_BIN)/redocly lint --config redocly.yaml var/openapi.json

# The Postman collection with newman against a live server: twice in a row, then the admin folder.
postman: install node-tools
	$(PY) -m tests.postman.newman_run

fuzz: install
	$(PY) -m tests.fuzz.schemathesis_run

# Debian's Nginx, for the end-to-end suite (installed only if missing; never started as a service).
nginx:
	@command -v nginx >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null)

wrk:
	@command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null)

# Loopback load with wrk; writes bench/results.md and bench/results.json (about 15 minutes).
bench: install nginx wrk
	$(PY) -m bench.run

e2e: install nginx
	TASKAPI_E2E=1 $(PY) -m pytest tests/e2e -p no:randomly -s -q

clean:
	rm -rf $(VENV) .pytest_cache
