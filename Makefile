# The two commands that set everything up on a fresh machine:
#   make demo   the operator on an embedded local control plane, examples applied (Ctrl-C stops)
#   make test   lint, type checks and the whole test suite against real servers
# Everything they need is installed on the way: Debian packages (nginx, pebble), a Python venv,
# and etcd/kube-apiserver/kubectl built from their Go modules into ~/.cache/vhost-operator.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEBIAN_PACKAGES := nginx pebble
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: demo test lint unit system-packages control-plane venv clean

demo: venv control-plane
	$(BIN)/python -m tests.harness.demo $(DEMO_ARGS)

test: lint system-packages control-plane
	$(BIN)/pytest $(PYTEST_ARGS)

unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint]'
	touch $@

# Debian packages for the real servers the tests use; apt-get only when one is missing.
system-packages:
	@dpkg -s $(DEBIAN_PACKAGES) >/dev/null 2>&1 || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_PACKAGES); }

# etcd, kube-apiserver, kube-controller-manager and kubectl: built once, then cached by version.
control-plane:
	bash hack/build-control-plane.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .demo
