# fetometry: `make demo` and `make test` work on a fresh clone of a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fast benchmark pacs-demo clean

setup: $(STAMP)

# constraints.txt pins torch==2.13.0 (CPU wheel) so that pip never pulls a CUDA build.
$(STAMP): pyproject.toml requirements.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -r requirements.txt
	$(PIP) install --quiet -c constraints.txt --no-deps -e .
	touch $(STAMP)

demo: setup
	$(VENV)/bin/fetometry demo --out demo_output

# ruff (rules in pyproject.toml) first: a lint or format finding fails the test run.
test: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

benchmark: setup
	$(PY) benchmarks/foundation.py

# Orthanc (Debian package `orthanc`) on loopback with a temporary config; see docs/DEPLOYMENT.md.
pacs-demo: setup
	bash scripts/pacs_demo.sh

clean:
	rm -rf $(VENV) demo_output .pytest_cache
