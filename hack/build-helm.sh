#!/usr/bin/env bash
# Builds the Helm v3 client from its Go module, pinned by hack/helm/go.mod (+ go.sum), the same way
# hack/build-control-plane.sh builds etcd and kube-apiserver. The binary lands in a cache outside
# the work tree, keyed by version, so a second run builds nothing.
# Prints the path of the helm binary.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache_root=${VHOST_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vhost-operator}
module_dir="$here/helm"

helm_version=$(sed -n 's#^require helm.sh/helm/v3 \(v[^ ]*\)#\1#p' "$module_dir/go.mod")
bin_dir="$cache_root/helm/helm-$helm_version"
helm="$bin_dir/helm"

if [ ! -x "$helm" ]; then
    mkdir -p "$bin_dir"
    export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
    echo "building helm $helm_version (first run only; cached in $bin_dir)" >&2
    started=$SECONDS
    # helm's Makefile stamps its version and the Kubernetes version it assumes for `helm lint` and
    # `helm template` (.Capabilities.KubeVersion) from the client-go it was built with; do the same.
    client_go=$(cd "$module_dir" && go list -m -f '{{.Version}}' k8s.io/client-go)
    k8s_minor=${client_go#v0.}
    k8s_minor=${k8s_minor%%.*}
    ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
    ldflags="$ldflags -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        ldflags="$ldflags -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$k8s_minor"
    done
    (cd "$module_dir" && go build -trimpath -ldflags "$ldflags" -o "$helm.partial" helm.sh/helm/v3/cmd/helm)
    mv "$helm.partial" "$helm"
    echo "built helm in $((SECONDS - started))s" >&2
fi

echo "$helm"
