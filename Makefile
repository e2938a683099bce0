# Mercato: the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_LINK_MODE := copy
# uv keeps the venv's own interpreter ($(PYTHON)'s): .python-version (3.11, which Heroku's
# buildpack needs) would otherwise make it replace a venv made by another Python.
export UV_PYTHON := $(abspath $(BIN))/python

.DEFAULT_GOAL := help
.PHONY: help install run test test-browser test-fault test-deploy security lint format typecheck bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv

$(BIN)/mercato: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --all-groups
	@touch $@

install: $(BIN)/mercato ## create .venv with every dependency and the `mercato` command

run: install ## start the whole system on embedded defaults (Ctrl-C stops it)
	$(BIN)/mercato up

test: install ## the whole test suite (real-server tests skip without the servers, fail when CI=true)
	$(BIN)/pytest -m "not fault and not deploy" tests/unit tests/service tests/deploy
	$(BIN)/pytest -m "not fault and not deploy" tests/integration
	$(BIN)/pytest -m "not fault and not deploy" tests/e2e
	$(BIN)/pytest -m "not fault and not deploy" tests/security

test-browser: install ## the storefront in headless Chromium (needs /usr/bin/chromium); screenshots in tests/browser/artifacts
	$(BIN)/pytest -m browser tests/browser

test-fault: install ## fault tests: kill and restart private server instances
	$(BIN)/pytest -m fault

test-deploy: install ## the deployment files run for real: nginx, gunicorn, blue-green (needs nginx)
	$(BIN)/pytest -m deploy

security: install ## static checks (bandit, detect-secrets, pip-audit) and the thorough schema fuzzing
	$(BIN)/bandit --quiet --recursive src --severity-level medium
	$(BIN)/python .ci/check_secrets.py
	$(BIN)/python .ci/audit_dependencies.py
	cd tests && $(abspath $(BIN))/python -m support.fuzzing

lint: install ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install ## every benchmark scenario -> bench/REPORT.md (QUICK=1: a 2-minute check)
	@command -v wrk >/dev/null && command -v nginx >/dev/null || { \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -qq && $$sudo apt-get install -y --no-install-recommends wrk nginx; }
	$(BIN)/python -m bench $(if $(filter-out 0 false no,$(QUICK)),--quick)

clean: ## remove the virtualenv and local data
	rm -rf $(VENV) var .mypy_cache .ruff_cache
