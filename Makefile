# The README's Quick start is `make demo` and `make test`; CI runs `make test` (via .ci/run).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-unit test-integration check lint typecheck contracts proto clean stack-up stack-down

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## The main job: the closed-loop demo on the embedded default stack.
demo: $(STAMP)
	$(BIN)/aether demo

## The whole test suite (unit, integration, end-to-end) against real services.
test: $(STAMP)
	$(BIN)/python -m pytest -q

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

test-integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration tests/e2e

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
