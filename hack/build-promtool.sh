#!/usr/bin/env bash
# Builds promtool (Prometheus' rule checker and rule unit-test runner) from its Go module, pinned by
# hack/promtool/go.mod (+ go.sum), the way hack/build-helm.sh builds helm. The binary lands in a
# cache outside the work tree, keyed by version, so a second run builds nothing. The chart test
# uses it on the PrometheusRule the chart renders (tests/integration/test_alerts.py).
# Prints the path of the promtool binary.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache_root=${VHOST_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vhost-operator}
module_dir="$here/promtool"

module_version=$(sed -n 's#^require github.com/prometheus/prometheus \(v[^ ]*\)#\1#p' "$module_dir/go.mod")
# Prometheus tags its Go module v0.3MM.P for release 3.MM.P; promtool reports the release.
minor_patch=${module_version#v0.3}
release="3.$((10#${minor_patch%%.*})).${minor_patch#*.}"
bin_dir="$cache_root/promtool/promtool-$release"
promtool="$bin_dir/promtool"

if [ ! -x "$promtool" ]; then
    mkdir -p "$bin_dir"
    export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
    echo "building promtool $release (first run only; cached in $bin_dir)" >&2
    started=$SECONDS
    ldflags="-s -w -X github.com/prometheus/common/version.Version=$release"
    # remove_all_sd leaves out the cloud service discoveries (AWS, Azure, GCE, Kubernetes ...):
    # checking and unit-testing rules needs none of them, and they are most of the build.
    (cd "$module_dir" && go build -trimpath -tags remove_all_sd -ldflags "$ldflags" \
        -o "$promtool.partial" github.com/prometheus/prometheus/cmd/promtool)
    mv "$promtool.partial" "$promtool"
    echo "built promtool in $((SECONDS - started))s" >&2
fi

echo "$promtool"
