# The interface to the project: `make run`, `make test`, `make lint`, `make proto`, `make bench`.
# Every target installs what it needs into .venv (Python) and node_modules (buf), so a fresh
# machine needs nothing but python3, npm and make.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
BUF := node_modules/.bin/buf
PROTO_SRC := $(wildcard protos/nchat/entitlements/v1/*.proto)
PROTO_OUT := clients/python
PYTEST_ARGS ?=

export PATH := $(CURDIR)/$(BIN):$(PATH)

# (browser is phony too)
.PHONY: install run migrate test test-fast soak lint proto proto-check proto-lint proto-breaking bench clean

install: $(VENV)/.installed node_modules/.installed browser

## browser: headless Chromium for the /admin page test (Debian's package; installed when this
## runs as root with apt, otherwise that one test is skipped and says why).
.PHONY: browser
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser test"; \
	    apt-get install -y -qq chromium >/dev/null 2>&1 || \
	      { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null; }; \
	  else echo "no chromium and not root: the /admin browser test will be skipped"; fi; }

$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e clients/python -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

## run: migrate the embedded SQLite database and serve gRPC on :50051 and HTTP on :8080.
## Without ENTITLEMENTS_CALLERS_FILE it runs in dev mode (no authentication, logged loudly).
run: $(VENV)/.installed
	$(BIN)/entitlements migrate
	@if [ -z "$$ENTITLEMENTS_CALLERS_FILE" ] && [ -z "$$ENTITLEMENTS_DEV_MODE" ]; then \
	  echo "make run: no ENTITLEMENTS_CALLERS_FILE, starting in dev mode (ENTITLEMENTS_DEV_MODE=1)"; \
	  export ENTITLEMENTS_DEV_MODE=1; exec $(BIN)/entitlements serve; \
	else exec $(BIN)/entitlements serve; fi

migrate: $(VENV)/.installed
	$(BIN)/entitlements migrate

## test: everything CI runs: generated code is fresh, protos lint, lint, then the whole suite.
## The suite mostly waits (chains, databases, subprocesses): a few worker processes share the
## cores (every test gets its own database, ports and files). TEST_WORKERS=0 runs it in one.
TEST_WORKERS ?= 3
test: install proto-check proto-lint lint test-node
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

## test-node: the TypeScript client (clients/typescript, its own lockfile): install, check the
## generated stubs are fresh, type-check, and call a real server (started from the venv).
.PHONY: test-node
test-node: $(VENV)/.installed
	cd clients/typescript && npm ci --no-audit --no-fund --loglevel=error && \
	  npm run generate:check && npm test

## test-fast: the suite without the slow and PostgreSQL tests.
test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not slow and not postgres" $(PYTEST_ARGS)

## soak: the billing simulations with more seeds (make soak SEEDS=5000).
SEEDS ?= 3000
soak: $(VENV)/.installed
	ENTITLEMENTS_SIM_SEEDS=$(SEEDS) $(PY) -m pytest tests/simulation $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## proto: the Python stubs, and descriptor_set.binpb: every file of the API and its imports WITH
## source info (comments), which the server's reflection serves so `grpcurl describe` shows them
## (plus google/rpc/error_details.proto, so grpcurl -format-error decodes BadRequest and ErrorInfo).
DESCRIPTOR_SET := $(PROTO_OUT)/nchat/entitlements/v1/descriptor_set.binpb
proto: install
	rm -f $(PROTO_OUT)/nchat/entitlements/v1/*_pb2*.py $(PROTO_OUT)/nchat/entitlements/v1/*_pb2*.pyi \
	  $(DESCRIPTOR_SET)
	$(PY) -m grpc_tools.protoc -Iprotos -Ithird_party/protos \
	  --python_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
	  --mypy_out=$(PROTO_OUT) --mypy_grpc_out=$(PROTO_OUT) $(PROTO_SRC)
	$(PY) -m grpc_tools.protoc -Iprotos -Ithird_party/protos \
	  --include_imports --include_source_info --descriptor_set_out=$(DESCRIPTOR_SET) \
	  $(PROTO_SRC) google/rpc/error_details.proto

## proto-check: regenerate and fail if the committed generated code differs.
proto-check: proto
	@git diff --exit-code --stat -- $(PROTO_OUT)/nchat || \
	  { echo "generated code is stale: run 'make proto' and commit the result"; exit 1; }
	@test -z "$$(git status --porcelain -- $(PROTO_OUT)/nchat)" || \
	  { echo "generated code is not committed: run 'make proto' and commit the result"; exit 1; }

proto-lint: node_modules/.installed
	$(BUF) lint
	$(BUF) format -d --exit-code

## proto-breaking: compare the protos with BREAKING_AGAINST (default: main; CI uses the first
## published v1 commit, so v1 never breaks).
BREAKING_AGAINST ?= .git\#branch=main
proto-breaking: node_modules/.installed
	$(BUF) breaking --against '$(BREAKING_AGAINST)'

bench: install
	$(PY) -m benchmarks
	$(PY) -m benchmarks.scaling

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
