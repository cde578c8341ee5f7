# The README's Quick start is `make demo` and `make test`; CI runs `make test` (via .ci/run).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-unit test-integration check lint typecheck contracts proto clean stack-up stack-down tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## The main job: the closed-loop demo on the embedded default stack.
demo: $(STAMP)
	$(BIN)/aether demo

## The whole test suite (unit, integration, end-to-end) against real services, in two phases.
## First every test not marked `solo`, on $(WORKERS) pytest-xdist workers: the suite mostly waits
## (broker group joins, server start-ups), so more workers than cores pay off. Tests that share a
## costly fixture stay on one worker, and the longest units start first (the scheduler in
## tests/conftest.py). Then the `solo` tests, one at a time in one process: benchmarks and crash
## replays, CPU-bound with several processes each, which on a slow machine starved the rest (and
## themselves) when they ran beside it. Both phases always run; either failing fails the target.
## `make test WORKERS=0` runs the first phase in one process too.
WORKERS ?= 4
PYTEST  := $(BIN)/python -m pytest -q
# $(call two_phases,PATHS): exit status 5 is "no test collected" (a phase may be empty).
two_phases = $(PYTEST) -n $(WORKERS) --dist loadscope -m "not solo" $(1); first=$$?; \
	$(PYTEST) -n 0 -m solo $(1); solo=$$?; \
	for rc in $$first $$solo; do [ $$rc = 0 ] || [ $$rc = 5 ] || exit 1; done

test: $(STAMP) tools
	$(call two_phases,)

test-unit: $(STAMP) tools
	$(call two_phases,tests/unit)

test-integration: $(STAMP) tools
	$(call two_phases,tests/integration tests/e2e)

## Debian tools the tests drive, installed only when missing (one apt run): promtool (package
## `prometheus`) checks every /metrics output and the alert rules; chromium renders the dashboard
## (tests/integration/dashboard); kcat talks to the embedded broker (docs/kafka-clients.md); h2load
## (package `nghttp2-client`) is `aether bench serve`'s load generator. A tool that cannot be
## installed makes its tests fail under CI=true.
TOOLS := promtool:prometheus chromium:chromium kcat:kcat h2load:nghttp2-client
tools:
	@missing=""; for pair in $(TOOLS); do command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "installing:$$missing" >&2; \
	  $$sudo apt-get update -qq && $$sudo apt-get install -y -qq --no-install-recommends $$missing \
	  || echo "not installed:$$missing (apt-get install$$missing)" >&2; \
	fi

## Static checks CI runs before the tests: ruff, mypy on the typed core, import contracts.
check: lint typecheck contracts

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

contracts: $(STAMP)
	$(BIN)/lint-imports

proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. serving/proto/recommender.proto

stack-up: $(STAMP)
	$(BIN)/aether stack up

stack-down: $(STAMP)
	$(BIN)/aether stack down

clean:
	rm -rf $(VENV) .aether .pytest_cache .mypy_cache .ruff_cache
