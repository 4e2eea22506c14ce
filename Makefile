# repairqc — `make run` does everything on a fresh machine; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
STAMP := $(VENV)/.installed
# Stage commands in dvc.yaml call `repairqc`: the venv must come first on PATH.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.DEFAULT_GOAL := help
.PHONY: help install run pipeline test test-fast browser lint format docs bench lock clean

help: ## List every target with one line each
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the pinned dependencies (requirements.lock)

pipeline: install ## Run the whole DVC pipeline on the embedded default data (dvc repro)
	$(BIN)/dvc repro
	@echo
	@echo "Pipeline outputs (dvc metrics show / dvc plots show for the full evaluation):"
	@echo "  data/raw/         generated contract files + ground_truth.parquet"
	@echo "  data/validated/   orders.parquet, quarantine.csv, validation_metrics.json"
	@echo "  data/sentiment/   comment sentiment model learned from rated comments"
	@echo "  data/labelled/    labelled.parquet, label_metrics.json"
	@echo "  data/features/    as-of features and the time split"
	@echo "  data/model/       the two risk heads (MLflow pyfunc), registered in mlflow.db"
	@echo "  data/evaluation/  metrics.json, slices.csv, plots/ (ROC, calibration, lift)"
	@$(BIN)/python -c "import json; m = json.load(open('data/evaluation/metrics.json')); \
	[print(f'  {h:<13} AUC {m[h+\"_auc\"]:.3f} (rule {m[h+\"_rule_auc\"]:.3f}, logreg {m[h+\"_logreg_auc\"]:.3f}, oracle {m.get(h+\"_oracle_auc\", float(\"nan\")):.3f})  ECE {m[h+\"_ece\"]:.3f}  lift@10% {m[h+\"_lift_top10\"]:.2f}') for h in ('rework', 'dissatisfied')]"

run: pipeline ## Install, run the pipeline on the embedded data, then serve the API + dashboard (dev mode)
	@echo "Serving on http://127.0.0.1:$(PORT): dashboard /dashboard, API docs /docs (dev mode)."
	@echo "API keys: $(BIN)/repairqc keys create --role quality|system|admin (printed once)."
	REPAIRQC_DEV_MODE=1 $(BIN)/repairqc serve --port $(PORT)

test: install ## Install if needed and run the whole test suite (incl. slow tests)
	$(BIN)/python -m pytest

test-fast: install ## Run the tests without the slow end-to-end ones
	$(BIN)/python -m pytest -m "not slow"

browser: install ## Install chromium + chromedriver (Debian) and run the dashboard browser tests
	bash scripts/install-browser.sh
	REPAIRQC_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -m browser

lint: install ## Ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## Apply ruff formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

docs: install ## Regenerate docs/order-data-contract.md from models/schemas.py
	$(BIN)/python -m pipelines.contract_doc

bench: install ## Benchmarks (speed targets live here, not in tests); prints ratios vs baselines
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lock: ## Re-resolve and pin dependencies into requirements.lock (needs network to PyPI)
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install -q --upgrade pip && .lockenv/bin/pip install -q -e '.[dev]'
	.lockenv/bin/pip freeze --exclude-editable | grep -v '^repairqc' > requirements.lock
	rm -rf .lockenv

clean: ## Remove the virtualenv, caches and pipeline outputs
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis data/raw data/validated data/labelled
