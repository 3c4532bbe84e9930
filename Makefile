# Two commands for a fresh clone:  make demo   (set up + run the pipeline)
#                                  make test   (set up + run the test suite)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --quiet --constraint constraints.txt
export DAGSTER_HOME ?= $(CURDIR)/dagster_home

SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo test ui clean-demo system-packages

# Debian packages the tests use: Chromium (the UI test; Playwright drives it
# and downloads nothing), PostgreSQL and Redis (the scale-out test starts its
# own servers on 127.0.0.1 and stops them; nothing runs as a system service).
APT_PACKAGES := chromium postgresql redis-server
HAVE_APT_PACKAGES := $(shell command -v chromium >/dev/null && command -v redis-server >/dev/null \
	&& ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && echo yes)

setup: $(VENV)/.installed
	@[ "$(HAVE_APT_PACKAGES)" = yes ] || $(MAKE) system-packages

system-packages:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES)
	@# Debian starts the packaged servers as services: stop them, the tests start their own.
	-$(SUDO) service redis-server stop >/dev/null 2>&1
	-$(SUDO) service postgresql stop >/dev/null 2>&1

# Every pip call passes constraints.txt: it keeps torch on the CPU build.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(PIP) --editable ".[dev]"
	touch $@

demo: setup
	mkdir -p $(DAGSTER_HOME)
	$(BIN)/python -m flare_assets.demo $(ARGS)

# Two workers, whole test files each (their module fixtures are built once).
test: setup
	$(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

ui: setup
	mkdir -p $(DAGSTER_HOME)
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

clean-demo:
	rm -rf demo; find dagster_home -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
