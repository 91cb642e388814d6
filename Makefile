# Repogate. `make help` lists the targets.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
BUF    := node_modules/.bin/buf

.DEFAULT_GOAL := help
.PHONY: help run test lint gen check-gen proto-lint wheel-smoke clean

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/repogate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

$(BUF): package.json package-lock.json
	# npm ci would demand lock entries for every platform; install keeps to the lock.
	npm install --no-audit --no-fund
	@touch $@

run: $(BIN)/repogate ## Install into .venv and serve on the embedded default (SQLite, in-memory cache).
	$(BIN)/repogate serve

test: $(BIN)/repogate ## Install what tests need into .venv and run the whole suite.
	$(BIN)/pytest

lint: $(BIN)/repogate proto-lint ## ruff, mypy, buf lint and buf format.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

proto-lint: $(BUF) ## buf lint and buf format on protos/.
	$(BUF) lint
	$(BUF) format --diff --exit-code

gen: $(BIN)/repogate ## Regenerate generated/ from protos/.
	PYTHON=$(BIN)/python scripts/gen.sh

check-gen: gen ## Fail when generated/ differs from what protos/ produce.
	@test -z "$$(git status --porcelain -- generated)" || \
	  { git status --porcelain -- generated; echo "generated/ is stale: run make gen and commit"; exit 1; }

wheel-smoke: ## Build the wheel, install it in a fresh venv, migrate and serve from it.
	PYTHON=$(PYTHON) scripts/wheel-smoke.sh

clean: ## Remove the venv, node_modules and build output.
	rm -rf $(VENV) node_modules build dist *.egg-info
