# Two commands on a fresh clone (Python >= 3.10 on PATH as python3):
#   make run    set up .venv and start the service with the bundled default policy
#   make test   set up .venv and run lint, type checks and the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup run test lint typecheck pytest clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/placement label data/traces/paper_table2.csv

lint: setup
	$(VENV)/bin/ruff check placement envs agents serve tests experiments

typecheck: setup
	$(VENV)/bin/mypy placement

pytest: setup
	$(PY) -m pytest

test: lint typecheck pytest

clean-venv:
	rm -rf $(VENV)
