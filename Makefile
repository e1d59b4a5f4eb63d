# seqbench: every target sets up .venv/ first, so a fresh machine needs only Python and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Installed before the project so pip never resolves torch to a CUDA build here.
# GPU boxes: `make install TORCH_SPEC="torch"` (or pre-install your own torch).
TORCH_SPEC ?= torch==2.13.0
SHARED_ARCHIVE := ../shared/data/aclImdb_v1-labeled.tar.gz
# `make reproduce` uses IMDB_ARCHIVE when set, else the shared copy if present, else downloads.
IMDB_ARCHIVE ?= $(if $(wildcard $(SHARED_ARCHIVE)),$(abspath $(SHARED_ARCHIVE)),)
PORT ?= 5000
MLFLOW_DB := $(CURDIR)/outputs/mlflow/mlflow.db
# The Optuna studies of `hparams_search=...` (hydra.sweeper.storage: ${paths.mlflow_dir}/optuna.db).
STORAGE ?= sqlite:///$(CURDIR)/outputs/mlflow/optuna.db
DASHBOARD_PORT ?= 8080
# MLflow 3's servers start a job runner (8 huey worker processes, each importing MLflow) for its
# GenAI jobs; seqbench uses none of them, so `make ui` starts without it (MLFLOW_JOBS=true: on).
MLFLOW_JOBS ?= false
DASHBOARD_SPEC := optuna-dashboard>=0.17

# The MLflow UI test drives Debian's chromium headless. CI (CI=true) or INSTALL_BROWSER=1
# installs it with apt-get when missing; elsewhere that test skips with the reason.
INSTALL_BROWSER ?= $(if $(CI),1,0)

# The cluster tests start a real PostgreSQL (team tracking server) and a single-node SLURM
# from Debian's packages. CI (CI=true) or INSTALL_CLUSTER=1 installs them with apt-get when
# missing; elsewhere those tests skip with the reason.
INSTALL_CLUSTER ?= $(if $(CI),1,0)
CLUSTER_PACKAGES := postgresql slurm-wlm munge
# Optional extras installed into .venv/: the submitit launcher and the PostgreSQL driver are
# exercised by the test suite.
EXTRAS ?= dev,slurm,postgres

KERAS_VENV := benchmarks/.venv-keras
SEEDS ?= 1,2,3

.PHONY: help install browser cluster-deps tracking-server test test-scenarios test-all lint format demo reproduce ui dashboard serve bench bench-env clean

help:
	@echo "make demo       offline demo: small sweep on generated data, prints the comparison table"
	@echo "make test       install (if needed) and run lint + the test suite (all but the scenarios)"
	@echo "make test-scenarios  the multi-process fault and scale-out scenarios (make test-all: both)"
	@echo "make reproduce  the IMDB comparison: 6 architectures x 3 seeds, then the table"
	@echo "make ui         MLflow UI on the embedded store at http://127.0.0.1:$(PORT)"
	@echo "make dashboard  optuna-dashboard on the search studies at http://127.0.0.1:$(DASHBOARD_PORT) (STORAGE=sqlite:///... or journal:///...)"
	@echo "make serve      serve a model on 127.0.0.1: MODEL=models:/NAME@champion (or runs:/<run id>/model) PORT=5001 HOST=127.0.0.1"
	@echo "make bench      speed benchmark: seqbench vs plain PyTorch vs the Keras seed (SEEDS=1,2,3)"
	@echo "make tracking-server  team MLflow tracking server: PostgreSQL, proxied artifacts, sign-in (docs/team-server.md)"

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$(INSTALL_BROWSER)" = 1 ]; then \
	  echo "installing Debian's chromium for the MLflow UI test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "note: chromium not installed; the MLflow UI browser test will skip (INSTALL_BROWSER=1 installs it)"; fi

cluster-deps:
	@missing=""; \
	command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v slurmctld >/dev/null 2>&1 || missing="$$missing slurm-wlm"; \
	command -v munged >/dev/null 2>&1 || missing="$$missing munge"; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$(INSTALL_CLUSTER)" = 1 ]; then \
	  echo "installing Debian's$$missing for the team-server and SLURM tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(CLUSTER_PACKAGES) >/dev/null; \
	else echo "note:$$missing not installed; the PostgreSQL/SLURM tests will skip (INSTALL_CLUSTER=1 installs them)"; fi

# Two pytest workers: most tests wait on subprocesses, servers and signals. `loadgroup` keeps a
# module whose tests share a module fixture (a PostgreSQL or SLURM server, a trained sweep) on
# one worker and hands every other test out on its own, end-to-end ones first
# (tests/conftest.py), so neither worker idles at the end. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2

# `make test` runs every test except the multi-process scenarios marked `scenario` (kills and
# resumes of sweeps, SLURM preemption, DDP sweeps, tracking-server outages, the PostgreSQL and
# authenticated team servers, the real archive: minutes each), so that it stays under 20
# minutes on CI's 2 cores; `make test-scenarios` runs those, `make test-all` runs everything.
# `.ci/run` runs `make test`, then the scenarios.
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

test: install browser cluster-deps
	$(BIN)/ruff check src tests benchmarks
	$(PYTEST) -m "not scenario"

test-scenarios: install browser cluster-deps
	$(PYTEST) -m scenario

test-all: install browser cluster-deps
	$(BIN)/ruff check src tests benchmarks
	$(PYTEST)

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: install
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

demo: install
	$(BIN)/seqbench-train -m experiment=demo
	$(BIN)/seqbench-report --experiment demo --latest-sweep

reproduce: install
	$(BIN)/seqbench-train -m experiment=paper_table $(if $(IMDB_ARCHIVE),data.archive=$(IMDB_ARCHIVE),)
	$(BIN)/seqbench-report --experiment imdb --latest-sweep --reference conf/reference/published.yaml

# The team tracking server (docs/team-server.md): PostgreSQL backend store, proxied artifacts,
# sign-in required (MLFLOW_AUTH_ADMIN_PASSWORD or MLFLOW_AUTH_ADMIN_PASSWORD_FILE; AUTH=off opts
# out), HTTPS with TLS_CERT= TLS_KEY=, SERVER_NAME= for the host names clients use.
tracking-server: install
	PORT=$(PORT) scripts/team_server.sh

ui: install
	@mkdir -p $(dir $(MLFLOW_DB))
	@$(BIN)/python -m seqbench.report.registry --tracking-uri sqlite:///$(MLFLOW_DB) --port $(PORT)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$(MLFLOW_JOBS) $(BIN)/mlflow ui --backend-store-uri sqlite:///$(MLFLOW_DB) --host 127.0.0.1 --port $(PORT)

# optuna-dashboard (the `dashboard` extra) is installed into .venv/ on first use. A journal
# storage (journal:///path/optuna.journal) is handed over as its file path, which the
# dashboard reads as a journal. Each trial's MLflow run id is its `mlflow_run_id` attribute.
dashboard: install
	@$(BIN)/python -c "import optuna_dashboard" 2>/dev/null || { \
	  echo "installing $(DASHBOARD_SPEC) into $(VENV) (the dashboard extra)"; \
	  $(BIN)/python -m pip install --quiet "$(DASHBOARD_SPEC)"; }
	$(BIN)/optuna-dashboard "$(patsubst journal://%,%,$(STORAGE))" --host 127.0.0.1 --port $(DASHBOARD_PORT)

# MLflow starts the scoring server as `exec uvicorn ...`, so the venv's bin/ must be on PATH.
# Private by default: 127.0.0.1 unless HOST= is given on the command line (docs/security.md).
SERVE_PORT = $(if $(filter command line,$(origin PORT)),$(PORT),5001)
SERVE_HOST = $(if $(filter command line,$(origin HOST)),$(HOST),127.0.0.1)
serve: install
	@test -n "$(MODEL)" || { echo "usage: make serve MODEL=models:/NAME@champion [PORT=5001]"; exit 2; }
	PATH="$(CURDIR)/$(BIN):$$PATH" MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///$(MLFLOW_DB)} \
	  $(BIN)/mlflow models serve -m "$(MODEL)" --env-manager local --host $(SERVE_HOST) --port $(SERVE_PORT)

# TensorFlow/Keras for the side-by-side benchmark only, in its own environment (never a
# seqbench dependency). About 1.6 GB.
bench-env: $(KERAS_VENV)/.installed
$(KERAS_VENV)/.installed:
	$(PYTHON) -m venv $(KERAS_VENV)
	$(KERAS_VENV)/bin/python -m pip install --quiet "tensorflow-cpu==2.21.0" "keras==3.15.1"
	touch $@

bench: install bench-env
	$(BIN)/python benchmarks/speed.py --archive $(or $(IMDB_ARCHIVE),$(error set IMDB_ARCHIVE=/path/to/aclImdb_v1.tar.gz)) \
	  --seeds $(SEEDS) --json outputs/benchmarks/speed.json
clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
