# Two commands do all the set-up on a fresh machine with python3: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: env demo test lint bench clean system container-test

# Debian programs the tests run for real: promtool (the prometheus package) checks /metrics and the alert rules;
# prometheus scrapes `mlops serve` and node_exporter (prometheus-node-exporter) reads the jobs' --prom-file textfiles
# in tests/test_ops_e2e.py; redis-server is the online feature store (tests start their own on 127.0.0.1, without
# persistence). Installed once, by one apt-get (the first missing program installs them all).
SYSTEM := /usr/bin/promtool /usr/bin/prometheus /usr/bin/prometheus-node-exporter /usr/bin/redis-server
$(SYSTEM):
	command -v apt-get >/dev/null || { echo "install Prometheus, node_exporter and redis-server by hand" >&2; exit 1; }
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-node-exporter redis-server >/dev/null

system: $(SYSTEM)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash sample_data/demo.sh

test: $(STAMP) $(SYSTEM)
	$(BIN)/ruff check mlops_cli tests benchmarks sample_data
	$(BIN)/ruff format --check mlops_cli tests benchmarks sample_data
	$(BIN)/mypy mlops_cli
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check mlops_cli tests benchmarks sample_data
	$(BIN)/ruff format --check mlops_cli tests benchmarks sample_data
	$(BIN)/mypy mlops_cli

# Builds the serve image on a debootstrapped Debian and runs it (root, podman; a few minutes). Not part of `test`.
container-test: $(STAMP)
	VENV_BIN=$(BIN) bash deploy/container-test.sh

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) build .pytest_cache
