# shipskip — `make run` starts the whole stack; `make test` runs ruff, mypy and the test suite.
# Both create .venv and install the project first, so a fresh clone needs nothing else.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test lint typecheck pytest chromium bench soak format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[local,dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/shipskip run

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# The widget's browser tests drive Debian's Chromium; install it when missing (root, as on CI). Without it
# those tests are skipped with a reason.
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium >/dev/null; } || echo "chromium could not be installed: browser tests skip"

pytest: install chromium
	$(BIN)/pytest

test: lint typecheck pytest

# bench: about 25 minutes of load on the embedded stack (10 of them the soak); results in bench/results/ and README's
# Performance section. wrk (Debian's package) drives the HTTP load; installed here when missing (the Python generator
# stands in if it cannot be). BENCH_QUICK=1 runs each benchmark once for a few seconds; see bench/README.md for the knobs.
bench: install
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } \
		|| echo "bench: wrk could not be installed; the Python load generator stands in"
	$(BIN)/python -m bench --readme README.md --command "make bench"

# soak: the soak benchmark alone (also part of `make bench`): 10 minutes of paced votes and reads with 500 open SSE
# clients; SOAK_SECONDS=120 for a shorter one. Results in bench/results/soak.{json,md} and README's Reliability section.
soak: install
	$(BIN)/python -m bench --only soak $(if $(SOAK_SECONDS),--soak-seconds $(SOAK_SECONDS)) --readme README.md \
		--command "make soak$(if $(SOAK_SECONDS), SOAK_SECONDS=$(SOAK_SECONDS))"

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .shipskip .mypy_cache .ruff_cache
