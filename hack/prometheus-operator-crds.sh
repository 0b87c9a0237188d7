#!/usr/bin/env bash
# Fetches the Prometheus Operator's Go module, pinned by hack/prometheus-operator/go.mod (+ go.sum,
# which Go checks the download against), into the Go module cache (once), and prints the
# directory with its CustomResourceDefinitions. Nothing is built: the chart test only needs the
# ServiceMonitor and PrometheusRule CRDs to validate the chart's monitoring objects against.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
module_dir="$here/prometheus-operator"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod

dir=$(cd "$module_dir" && go mod download -json github.com/prometheus-operator/prometheus-operator |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
crds="$dir/example/prometheus-operator-crd"
test -f "$crds/monitoring.coreos.com_servicemonitors.yaml"
echo "$crds"
