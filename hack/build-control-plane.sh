#!/usr/bin/env bash
# Builds the real control-plane binaries (etcd, kube-apiserver, kube-controller-manager, kubectl)
# from their Go modules, pinned by the go.mod files under hack/controlplane/.
# Binaries land in a cache outside the work tree, keyed by version, so a second run builds nothing.
# Prints the directory holding the binaries (usable as KUBEBUILDER_ASSETS).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/build-lib.sh"

k8s_version=$(module_version k8s.io/kubernetes "$here/controlplane/kubernetes/go.mod")
etcd_version=$(module_version go.etcd.io/etcd/server/v3 "$here/controlplane/etcd/go.mod")
bin_dir="$cache_root/controlplane/k8s-$k8s_version-etcd-$etcd_version"
mkdir -p "$bin_dir"

go_build_cached "$here/controlplane/etcd" go.etcd.io/etcd/server/v3 "$bin_dir/etcd"
stamp=$(k8s_version_ldflags "$k8s_version")
for component in kube-apiserver kube-controller-manager kubectl; do
    go_build_cached "$here/controlplane/kubernetes" "k8s.io/kubernetes/cmd/$component" "$bin_dir/$component" "$stamp"
done

echo "$bin_dir"
