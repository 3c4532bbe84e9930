# Two commands for a fresh clone:  make demo   (set up + run the pipeline)
#                                  make test   (set up + run the test suite)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --quiet --constraint constraints.txt
export DAGSTER_HOME ?= $(CURDIR)/dagster_home

SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo test ui clean-demo chromium

setup: $(VENV)/.installed
	@command -v chromium >/dev/null || $(MAKE) chromium

# Debian's Chromium for the UI test (Playwright drives it; it downloads nothing).
chromium:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium

# Every pip call passes constraints.txt: it keeps torch on the CPU build.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(PIP) --editable ".[dev]"
	touch $@

demo: setup
	mkdir -p $(DAGSTER_HOME)
	$(BIN)/python -m flare_assets.demo $(ARGS)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

ui: setup
	mkdir -p $(DAGSTER_HOME)
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

clean-demo:
	rm -rf demo; find dagster_home -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
