# Two commands on a fresh machine with Python 3.11+ and make:
#   make run    the main job: the emulator plus the example DAGs end to end
#   make test   the whole test suite
PYTHON ?= python3
AIRFLOW_VERSION ?= 3.3.2
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck check bench soak clean deploy-test ui-test e2e

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "apache-airflow==$(AIRFLOW_VERSION)" -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python scripts/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest

# The provider as users run it: the wheel in a fresh venv (the README's install line) under a real
# api-server, scheduler, dag-processor and triggerer, every example through the REST API.
deploy-test: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider deployment/test_1_deployment.py

# The UI in Debian's chromium driven by playwright (never downloads a browser).
ui-test: $(STAMP) $(VENV)/.playwright
	$(BIN)/python -m pytest -p no:cacheprovider deployment/test_2_browser.py

# Both on one deployment (what .ci/run calls).
e2e: $(STAMP) $(VENV)/.playwright
	$(BIN)/python -m pytest -p no:cacheprovider deployment

$(VENV)/.playwright: $(STAMP)
	$(BIN)/python -m pip install --quiet "playwright>=1.40"
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

# the ingest conservation-law property test, long (CI runs it with 300 examples)
soak: $(STAMP)
	M3TER_LAW_EXAMPLES=$${M3TER_LAW_EXAMPLES:-3000} $(BIN)/python -m pytest tests/ingest/test_law.py -q

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build dist *.egg-info
