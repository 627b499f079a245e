# workbench: `make demo` runs the quick start on the embedded model; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
WB     := $(VENV)/bin/workbench
# torch's CPU build is pinned (a plain `torch` pulls a multi-GB CUDA build).
TORCH  := torch==2.13.0

.PHONY: demo test test-fast install install-test browser-deps postgres-deps embedded ui bench-cpu bench-gpu bench-server clean help

help:
	@echo "make demo       set up .venv and run experiments/quickstart.yaml on the embedded shapes model"
	@echo "make test       set up .venv with test extras (and Debian's chromium) and run the whole suite"
	@echo "make bench-cpu  CPU throughput and planning benchmarks (a few minutes; writes docs/benchmarks.md)"
	@echo "make bench-gpu  the same throughput benchmark on an NVIDIA GPU (SD 1.5 architecture, random weights)"
	@echo "make ui         open the MLflow UI on the embedded store"

# setuptools' "Editable installation" notice (a box about folders named like the package) is for package
# authors, not for someone running the quick start, and pip -q passes it on: filter that one warning.
QUIET_EDITABLE := PYTHONWARNINGS="$${PYTHONWARNINGS:+$$PYTHONWARNINGS,}ignore:Editable installation"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(QUIET_EDITABLE) $(PIP) install -q -e '.[all]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(QUIET_EDITABLE) $(PIP) install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test browser-deps postgres-deps

# Debian's Chromium for tests/test_browser.py: Playwright drives /usr/bin/chromium and never downloads a
# browser of its own (that needs a network the machines here do not have).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "installing Debian's chromium for the browser test"; \
	  $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	fi

# Debian's PostgreSQL server for the team tracking-server test (tests/test_team_server.py); the test starts
# its own cluster on 127.0.0.1, so the Debian service is never started.
postgres-deps:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "installing Debian's postgresql for the team-server test"; \
	  $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; \
	fi

embedded: install
	$(WB) embedded build

# The shapes model ships in the package (workbench/models/shapes/weights): nothing to build or download.
demo: install
	$(WB) run experiments/quickstart.yaml

test: install-test
	$(PY) -m pytest -q -ra

test-fast: install-test
	$(PY) -m pytest -q -ra -m "not slow and not browser"

ui: install
	$(WB) ui

bench-cpu: install
	$(PY) benchmarks/throughput.py --device cpu
	$(PY) benchmarks/plan_scale.py

# The tracking-server figures of docs/scale.md (MLflow's HTTP servers; a minute or two, any machine).
bench-server: install
	$(PY) benchmarks/keepalive.py

# On a machine with an NVIDIA GPU (builds SD 1.5's architecture with random weights: no download).
bench-gpu: install
	$(PY) benchmarks/throughput.py --device cuda

# Train the shapes demo model again, on this CPU (118 minutes measured on 2 shared cores; docs/demo-model.md). It
# checkpoints every 5 minutes under ~/.cache/workbench/shapes-train: `make train-demo-model ARGS=--resume`
# goes on after a stop. The result replaces nothing: copy $(SHAPES_OUT) into workbench/models/shapes/weights.
SHAPES_OUT ?= $(HOME)/.cache/workbench/shapes-final
.PHONY: train-demo-model
train-demo-model: install
	$(PY) -m workbench.models.shapes.train --out $(SHAPES_OUT) $(ARGS)

clean:
	rm -rf $(VENV) .workbench .pytest_cache
