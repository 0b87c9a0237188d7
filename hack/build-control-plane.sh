#!/usr/bin/env bash
# Builds the real control-plane binaries (etcd, kube-apiserver, kube-controller-manager, kubectl)
# from their Go modules, pinned by the go.mod files under hack/controlplane/.
# Binaries land in a cache outside the work tree, keyed by version, so a second run builds nothing.
# Prints the directory holding the binaries (usable as KUBEBUILDER_ASSETS).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache_root=${VHOST_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vhost-operator}

module_version() { # module go.mod -> pinned version
    sed -n "s#^require $1 \(v[^ ]*\)#\1#p" "$2"
}

k8s_version=$(module_version k8s.io/kubernetes "$here/controlplane/kubernetes/go.mod")
etcd_version=$(module_version go.etcd.io/etcd/server/v3 "$here/controlplane/etcd/go.mod")
bin_dir="$cache_root/controlplane/k8s-$k8s_version-etcd-$etcd_version"
mkdir -p "$bin_dir"

export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

build() { # module_dir package output [ldflags]
    local module_dir=$1 package=$2 output=$3 ldflags=${4:-}
    if [ -x "$bin_dir/$output" ]; then
        return
    fi
    echo "building $output from $package (first run only; cached in $bin_dir)" >&2
    local started=$SECONDS
    (cd "$module_dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$bin_dir/$output.partial" "$package")
    mv "$bin_dir/$output.partial" "$bin_dir/$output"
    echo "built $output in $((SECONDS - started))s" >&2
}

minor=${k8s_version#v1.}
minor=${minor%%.*}
stamp=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    stamp="$stamp -X $p.gitVersion=$k8s_version -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    stamp="$stamp -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done

build "$here/controlplane/etcd" go.etcd.io/etcd/server/v3 etcd
for component in kube-apiserver kube-controller-manager kubectl; do
    build "$here/controlplane/kubernetes" "k8s.io/kubernetes/cmd/$component" "$component" "$stamp"
done

echo "$bin_dir"
