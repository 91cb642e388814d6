# Repogate. `make help` lists the targets.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
BUF    := node_modules/.bin/buf
DCLINT := node_modules/.bin/dclint
NODE_CLIENT := clients/node/node_modules/.package-lock.json
GO_EXAMPLE  := clients/go/build/repogate-example
JAVA_STUBS  := clients/java/build/repogate-stubs.jar
PYTHON_CLIENT := clients/python/dist/.built
TS_CLIENT   := clients/node-package/dist/example.js
DEPLOY_TOOLS := $(VENV)/.deploy-tools
# Every Kubernetes manifest in deploy/ (compose.yaml is not one).
K8S_MANIFESTS := $(filter-out deploy/compose.yaml,$(wildcard deploy/*.yaml))
BENCH_TOOLS := $(VENV)/.bench-tools
# Beyond serving: what `make test` and `make lint` need (the [test] extra), and `make gen` ([gen]).
TEST_TOOLS := $(VENV)/.test-tools
GEN_TOOLS := $(VENV)/.gen-tools
# Where the suite's PostgreSQL and Redis are, as tests/conftest.py and tests/cache_support.py
# read them (for `make help`; the environment reaches pytest as it is).
TEST_POSTGRES_URL := $(or $(REPOGATE_TEST_POSTGRES_URL),postgresql+asyncpg://postgres@127.0.0.1:5432/test)
TEST_REDIS_URL := $(or $(REPOGATE_TEST_REDIS_URL),redis://127.0.0.1:6379/0)

.DEFAULT_GOAL := help
.PHONY: help buf test-deps run test lint gen check-gen proto-lint proto-breaking stubs clients deploy-check wheel-smoke bench bench-smoke bench-deps clean

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'
	@echo
	@echo "make test uses the PostgreSQL server REPOGATE_TEST_POSTGRES_URL reaches ($(TEST_POSTGRES_URL)):"
	@echo "  it creates databases named repogate_*_<hex> there and drops them when done."
	@echo "  And the Redis database REPOGATE_TEST_REDIS_URL names ($(TEST_REDIS_URL)):"
	@echo "  it writes keys under random tenants there and never flushes it."
	@echo "  Either unreachable: its tests are skipped (REPOGATE_TEST_REQUIRE_POSTGRES=1 / _REDIS=1 fail them)."
	@echo "  docs/development.md#tests lists every REPOGATE_TEST_* variable."

# Serving needs the package alone; the tools of the other targets come in their own steps.
$(BIN)/repogate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	@touch $@

$(TEST_TOOLS): pyproject.toml | $(BIN)/repogate
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

$(GEN_TOOLS): pyproject.toml | $(BIN)/repogate
	$(BIN)/pip install -q -e '.[gen]'
	@touch $@

# package-lock.json records every platform's buf binary package, so npm ci installs
# exactly what it pins, on any platform, and never rewrites it.
$(BUF) $(DCLINT) &: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $(BUF) $(DCLINT)

buf: $(BUF) ## Install buf (and dclint) into node_modules/.bin with npm ci, as package-lock.json pins them.

run: $(BIN)/repogate ## Install the package alone into .venv and serve on 127.0.0.1:50051 (SQLite file ./repogate.db, in-memory cache).
	$(BIN)/repogate serve

test-deps: $(TEST_TOOLS) clients ## Install what the tests need (.venv with the [test] extra, the client examples) without running them.

test: test-deps ## Install what tests need and run the whole suite: CREATEs and DROPs databases on PostgreSQL, writes keys to Redis (below).
	$(BIN)/pytest

lint: $(TEST_TOOLS) proto-lint ## ruff, mypy, buf lint and buf format.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

proto-lint: $(BUF) ## buf lint and buf format on protos/.
	$(BUF) lint
	$(BUF) format --diff --exit-code

proto-breaking: $(BUF) ## buf breaking: protos/ against HEAD and the API before each recent protos/ commit.
	BUF=$(BUF) scripts/proto-breaking.sh

gen: $(GEN_TOOLS) ## Regenerate generated/ from protos/.
	PYTHON=$(BIN)/python scripts/gen.sh

stubs: $(GEN_TOOLS) $(BUF) ## Client stubs (Go, TypeScript, Java, Python) into build/stubs: buf generate with buf.gen.yaml, less plugins not installed.
	$(BIN)/python scripts/stubs.py $(BUF)

check-gen: gen ## Fail when generated/ differs from what protos/ produce.
	@test -z "$$(git status --porcelain -- generated)" || \
	  { git status --porcelain -- generated; echo "generated/ is stale: run make gen and commit"; exit 1; }

clients: $(PYTHON_CLIENT) ## Build the repogate-client wheel; install clients/node's packages and build clients/node-package; build the Go example and compile the Java stubs where their Debian packages are installed.
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory $(NODE_CLIENT) $(TS_CLIENT); \
	else echo "NOTE: npm is not installed: the Node client tests will be skipped"; fi
	@missing="$$(clients/go/build.sh --missing)"; if [ -z "$$missing" ]; then \
	  $(MAKE) --no-print-directory $(GO_EXAMPLE); \
	else echo "NOTE: not building the Go example, missing Debian packages: $$missing"; \
	  echo "      (the Go client tests will be skipped; apt-get install them to run them)"; fi
	@missing="$$(clients/java/build.sh --missing)"; if [ -z "$$missing" ]; then \
	  $(MAKE) --no-print-directory $(JAVA_STUBS); \
	else echo "NOTE: not compiling the Java stubs, missing Debian packages: $$missing"; fi

$(NODE_CLIENT): clients/node/package.json clients/node/package-lock.json
	cd clients/node && npm ci --no-audit --no-fund
	@touch $@

$(PYTHON_CLIENT): $(BIN)/repogate clients/python/build.sh clients/python/pyproject.toml buf.gen.yaml $(wildcard clients/python/src/repogate_client/*.py) $(wildcard protos/repogate/*/*.proto)
	PYTHON=$(BIN)/python clients/python/build.sh
	@touch $@

$(TS_CLIENT): $(BUF) clients/node-package/build.sh clients/node-package/package.json clients/node-package/package-lock.json clients/node-package/tsconfig.json buf.gen.yaml $(wildcard clients/node-package/src/*.ts) $(wildcard protos/repogate/*/*.proto)
	clients/node-package/build.sh

$(JAVA_STUBS): clients/java/build.sh buf.gen.yaml $(wildcard protos/repogate/*/*.proto)
	clients/java/build.sh

$(GO_EXAMPLE): clients/go/build.sh clients/go/example/main.go buf.gen.yaml $(wildcard protos/repogate/*/*.proto)
	clients/go/build.sh

$(DEPLOY_TOOLS): deploy/requirements.txt | $(BIN)/repogate
	$(BIN)/pip install -q -r deploy/requirements.txt
	@touch $@

deploy-check: $(DEPLOY_TOOLS) $(DCLINT) ## Validate deploy/: manifests against Kubernetes 1.29 and 1.37 schemas, compose.yaml against the compose spec.
	$(BIN)/kubernetes-validate --strict -k 1.29.0 $(K8S_MANIFESTS)
	$(BIN)/kubernetes-validate --strict -k 1.37.0 $(K8S_MANIFESTS)
	$(DCLINT) deploy/compose.yaml && echo "deploy/compose.yaml: valid (compose spec, dclint rules)"

$(BENCH_TOOLS): bench/requirements.txt | $(BIN)/repogate
	$(BIN)/pip install -q -r bench/requirements.txt
	@touch $@

bench-deps: $(BENCH_TOOLS) ## Install what the benchmark needs: psutil into .venv, h2load (Debian's nghttp2-client).
	@command -v h2load >/dev/null || { \
	  if [ "$$(id -u)" -eq 0 ]; then sudo=; else sudo=sudo; fi; \
	  $$sudo apt-get install -y nghttp2-client || \
	  { $$sudo apt-get update && $$sudo apt-get install -y nghttp2-client; }; }

bench: bench-deps ## Benchmark Repogate on PostgreSQL and Redis against bare baselines (BENCH_ARGS='--help').
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-smoke: bench-deps ## The benchmark's main rows for a second each: ratios, no verdicts; fails if a scenario does.
	$(BIN)/python -m bench --smoke $(BENCH_ARGS)

wheel-smoke: ## Build the wheel, install it in a fresh venv, migrate and serve from it.
	PYTHON=$(PYTHON) scripts/wheel-smoke.sh

clean: ## Remove the venv, node_modules and build output.
	rm -rf $(VENV) node_modules build dist *.egg-info clients/node/node_modules clients/go/build clients/java/build clients/python/dist clients/node-package/node_modules clients/node-package/dist
