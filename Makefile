# Orchestrator: every command a developer or operator needs. `make help` lists them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
TYPE   ?=
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install demo test soak up down migrate api worker workers beat flower bench lint typecheck check clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## make .venv and install the project with its dev extras

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

demo: install ## run market_research_pipeline end to end (needs Redis; starts everything else)
	$(BIN)/orchestrator demo

test: install ## the whole suite on real Redis, PostgreSQL, S3 and Celery workers
	@scripts/services.sh start var/test-services
	@status=0; $(BIN)/pytest $(PYTEST_ARGS) || status=$$?; \
	  scripts/services.sh stop var/test-services; exit $$status

soak: install ## the long fault-injection runs (kills, restarts) of the durability suite
	@scripts/services.sh start var/test-services
	@status=0; $(BIN)/pytest -m soak -p no:cacheprovider $(PYTEST_ARGS) || status=$$?; \
	  scripts/services.sh stop var/test-services; exit $$status

up: ## the full stack in compose.yaml (needs a Docker engine)
	docker compose up -d --build

down: ## stop the compose stack
	docker compose down

migrate: install ## alembic upgrade head on ORCH_DATABASE_URL
	$(BIN)/orchestrator migrate

api: install ## the HTTP API (gunicorn + gevent) on :8000
	$(BIN)/orchestrator api

worker: install ## one worker process: make worker TYPE=<worker type>
	@test -n "$(TYPE)" || { echo "usage: make worker TYPE=<worker type>"; exit 2; }
	$(BIN)/orchestrator worker --type $(TYPE)

workers: install ## the coordinator and one worker process per worker type
	$(BIN)/orchestrator workers

beat: install ## Celery beat (reconciler, estimate refits, housekeeping, worker health)
	$(BIN)/orchestrator beat

flower: install ## Flower on :5555
	$(BIN)/celery -A orchestrator.celery_app flower --port=5555

bench: install ## the benchmarks; results in bench/results/
	@scripts/services.sh start var/bench-services
	@status=0; $(BIN)/python bench/run_all.py || status=$$?; \
	  scripts/services.sh stop var/bench-services; exit $$status

lint: install ## ruff: lint rules (complexity included) and formatting
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: install ## mypy on orchestrator/ and workers/ (pydantic plugin), zero errors
	$(BIN)/mypy

check: lint typecheck test ## what CI runs: lint, typecheck, the whole suite

clean: ## remove the virtualenv and local state
	rm -rf $(VENV) var .pytest_cache .ruff_cache
