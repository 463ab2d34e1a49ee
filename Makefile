# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU build of torch 2.13.0 is served from this machine's disk; elsewhere pip gets it from PyPI.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test venv dev clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_SPEC)" || $(PIP) install --quiet torch
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(PIP) install --quiet -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

dev: $(VENV)/.dev-installed

demo: $(VENV)/.installed
	FMMFORGE_HOME=$${FMMFORGE_HOME:-$(CURDIR)/.fmmforge-demo} $(VENV)/bin/fmmforge demo

test: $(VENV)/.dev-installed
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .fmmforge-demo build dist *.egg-info .pytest_cache .hypothesis
