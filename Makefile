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

## The whole test suite (unit, integration, end-to-end) against real services, on $(WORKERS)
## pytest-xdist workers: the suite mostly waits (broker group joins, server start-ups), so more
## workers than cores pay off. Tests that share a costly fixture stay on one worker, and the longest
## units start first (the scheduler in tests/conftest.py). `make test WORKERS=0` runs it in this one
## process.
WORKERS ?= 4
PYTEST  := $(BIN)/python -m pytest -q -n $(WORKERS) --dist loadscope

test: $(STAMP) tools
	$(PYTEST)

test-unit: $(STAMP) tools
	$(PYTEST) tests/unit

test-integration: $(STAMP) tools
	$(PYTEST) tests/integration tests/e2e

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
