# workbench: `make demo` runs the quick start on the embedded model; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
WB     := $(VENV)/bin/workbench
# torch's CPU build is pinned (a plain `torch` pulls a multi-GB CUDA build).
TORCH  := torch==2.13.0

.PHONY: demo test test-fast install install-test embedded ui bench-cpu clean help

help:
	@echo "make demo       set up .venv, build the embedded model, run experiments/quickstart.yaml"
	@echo "make test       set up .venv with test extras and run the whole suite"
	@echo "make bench-cpu  CPU throughput benchmark (a few minutes; writes docs/benchmarks.md)"
	@echo "make ui         open the MLflow UI on the embedded store"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[all]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

embedded: install
	$(WB) embedded build

demo: install
	$(WB) embedded build
	$(WB) run experiments/quickstart.yaml

test: install-test
	$(PY) -m pytest -q -ra

test-fast: install-test
	$(PY) -m pytest -q -ra -m "not slow and not browser"

ui: install
	$(WB) ui

bench-cpu: install
	$(PY) benchmarks/throughput_cpu.py

clean:
	rm -rf $(VENV) .workbench .pytest_cache
