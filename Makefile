# Two commands on a fresh machine with Python 3.11+ and make:
#   make run    the main job: the emulator plus the example DAGs end to end
#   make test   the whole test suite
PYTHON ?= python3
AIRFLOW_VERSION ?= 3.3.2
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The version matrix (`make matrix`, README "Compatibility"): the other claimed Airflow lines (3.2)
# and the newest Airflow on the other proven Pythons (from pyenv, or python3.X on PATH), each in its
# own venv. Each line gets its dependency caps (constraints/airflow-<line>.txt) and the project
# installed --no-deps. Airflow 3.1 is not claimed: `make matrix MATRIX_LINES="3.1 3.2"` shows it.
MATRIX_LINES ?= 3.2
AIRFLOW_3.1 := 3.1.8
AIRFLOW_3.2 := 3.2.2
MATRIX_PYTHONS ?= 3.10 3.12 3.13
PYENV_ROOT ?= $(HOME)/.pyenv
python_for = $(firstword $(wildcard $(PYENV_ROOT)/versions/$(1).*/bin/python) $(shell command -v python$(1)))
NEWEST_CONSTRAINTS := constraints/airflow-$(basename $(AIRFLOW_VERSION)).txt

.PHONY: run test lint typecheck check bench soak clean deploy-test ui-test e2e matrix

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "apache-airflow==$(AIRFLOW_VERSION)" -e ".[test]"
	touch $(STAMP)

.venv-af%/.installed: pyproject.toml constraints/airflow-%.txt
	$(PYTHON) -m venv .venv-af$*
	.venv-af$*/bin/python -m pip install --quiet --upgrade pip
	.venv-af$*/bin/python -m pip install --quiet "apache-airflow==$(AIRFLOW_$*)" \
		$$($(PYTHON) .ci/requirements.py test) -c constraints/airflow-$*.txt
	.venv-af$*/bin/python -m pip install --quiet --no-deps -e .
	touch $@

.venv-py%/.installed: pyproject.toml $(NEWEST_CONSTRAINTS)
	@test -n "$(call python_for,$*)" || { echo "no Python $* (pyenv or python$* on PATH)"; exit 1; }
	$(call python_for,$*) -m venv .venv-py$*
	.venv-py$*/bin/python -m pip install --quiet --upgrade pip
	.venv-py$*/bin/python -m pip install --quiet "apache-airflow==$(AIRFLOW_VERSION)" -e ".[test]" \
		-c $(NEWEST_CONSTRAINTS)
	touch $@

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
	$(BIN)/python -m pytest -p no:cacheprovider -s deployment

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

matrix: $(foreach line,$(MATRIX_LINES),.venv-af$(line)/.installed) $(foreach py,$(MATRIX_PYTHONS),.venv-py$(py)/.installed)
	$(PYTHON) .ci/matrix.py --lines "$(MATRIX_LINES)" --pythons "$(MATRIX_PYTHONS)"

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .venv-af* .venv-py* build dist *.egg-info
