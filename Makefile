# Repogate. `make help` lists the targets.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
BUF    := node_modules/.bin/buf
DCLINT := node_modules/.bin/dclint
NODE_CLIENT := clients/node/node_modules/.package-lock.json
GO_EXAMPLE  := clients/go/build/repogate-example
PYTHON_CLIENT := clients/python/dist/.built
TS_CLIENT   := clients/node-package/dist/example.js
DEPLOY_TOOLS := $(VENV)/.deploy-tools
# Every Kubernetes manifest in deploy/ (compose.yaml is not one).
K8S_MANIFESTS := $(filter-out deploy/compose.yaml,$(wildcard deploy/*.yaml))
BENCH_TOOLS := $(VENV)/.bench-tools

.DEFAULT_GOAL := help
.PHONY: help run test lint gen stubs check-gen proto-lint proto-breaking clients deploy-check wheel-smoke bench bench-smoke bench-deps clean

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

$(BIN)/repogate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

$(BUF) $(DCLINT) &: package.json package-lock.json
	# npm ci would demand lock entries for every platform; install keeps to the lock.
	npm install --no-audit --no-fund
	@touch $(BUF) $(DCLINT)

run: $(BIN)/repogate ## Install into .venv and serve on the embedded default (SQLite, in-memory cache).
	$(BIN)/repogate serve

test: $(BIN)/repogate clients ## Install what tests need into .venv and run the whole suite.
	$(BIN)/pytest

lint: $(BIN)/repogate proto-lint ## ruff, mypy, buf lint and buf format.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

proto-lint: $(BUF) ## buf lint and buf format on protos/.
	$(BUF) lint
	$(BUF) format --diff --exit-code

proto-breaking: $(BUF) ## buf breaking: protos/ against HEAD and the API before each recent protos/ commit.
	BUF=$(BUF) scripts/proto-breaking.sh

gen: $(BIN)/repogate ## Regenerate generated/ from protos/.
	PYTHON=$(BIN)/python scripts/gen.sh

stubs: $(BIN)/repogate $(BUF) ## Client stubs (Go, TypeScript, Java, Python) into build/stubs with buf generate and buf.gen.yaml.
	PATH="$$PWD/node_modules/.bin:$$PATH" $(BUF) generate

check-gen: gen ## Fail when generated/ differs from what protos/ produce.
	@test -z "$$(git status --porcelain -- generated)" || \
	  { git status --porcelain -- generated; echo "generated/ is stale: run make gen and commit"; exit 1; }

clients: $(PYTHON_CLIENT) ## Build the repogate-client wheel; install clients/node's packages and build clients/node-package; build the Go example if its Debian packages are installed.
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory $(NODE_CLIENT) $(TS_CLIENT); \
	else echo "NOTE: npm is not installed: the Node client tests will be skipped"; fi
	@missing="$$(clients/go/build.sh --missing)"; if [ -z "$$missing" ]; then \
	  $(MAKE) --no-print-directory $(GO_EXAMPLE); \
	else echo "NOTE: not building the Go example, missing Debian packages: $$missing"; \
	  echo "      (the Go client tests will be skipped; apt-get install them to run them)"; fi

$(NODE_CLIENT): clients/node/package.json clients/node/package-lock.json
	cd clients/node && npm ci --no-audit --no-fund
	@touch $@

$(PYTHON_CLIENT): $(BIN)/repogate clients/python/build.sh clients/python/pyproject.toml buf.gen.yaml $(wildcard clients/python/src/repogate_client/*.py) $(wildcard protos/repogate/*/*.proto)
	PYTHON=$(BIN)/python clients/python/build.sh
	@touch $@

$(TS_CLIENT): $(BUF) clients/node-package/build.sh clients/node-package/package.json clients/node-package/package-lock.json clients/node-package/tsconfig.json buf.gen.yaml $(wildcard clients/node-package/src/*.ts) $(wildcard protos/repogate/*/*.proto)
	clients/node-package/build.sh

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
	rm -rf $(VENV) node_modules build dist *.egg-info clients/node/node_modules clients/go/build clients/python/dist clients/node-package/node_modules clients/node-package/dist
