# shipskip — `make run` starts the whole stack; `make test` runs ruff, mypy and the test suite.
# Both create .venv and install the project first, so a fresh clone needs nothing else.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test lint typecheck pytest chromium bench format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
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

# bench: about 15 minutes of load on the embedded stack; results in bench/results/ and README's Performance
# section. wrk (Debian's package) drives the HTTP load; installed here when missing (the Python generator stands in
# if it cannot be). BENCH_QUICK=1 runs each benchmark once for a few seconds; see bench/README.md for the knobs.
bench: install
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } \
		|| echo "bench: wrk could not be installed; the Python load generator stands in"
	$(BIN)/python -m bench --readme README.md --command "make bench"

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .shipskip .mypy_cache .ruff_cache
