#!/usr/bin/env bash
# Builds the node binaries of the test harness's real node: kubelet, kube-scheduler and kube-proxy
# from the same pinned wrapper module as the control plane (hack/controlplane/kubernetes), and
# CoreDNS from its own wrapper module (hack/node/coredns). Cached by version like the control plane.
# Prints the directory holding the binaries.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/build-lib.sh"

k8s_version=$(module_version k8s.io/kubernetes "$here/controlplane/kubernetes/go.mod")
coredns_version=$(module_version github.com/coredns/coredns "$here/node/coredns/go.mod")
bin_dir="$cache_root/node/k8s-$k8s_version-coredns-$coredns_version"
mkdir -p "$bin_dir"

stamp=$(k8s_version_ldflags "$k8s_version")
for component in kubelet kube-scheduler kube-proxy; do
    go_build_cached "$here/controlplane/kubernetes" "k8s.io/kubernetes/cmd/$component" "$bin_dir/$component" "$stamp"
done
# CoreDNS stamps its git commit only; the version is a constant of the module (coremain.CoreVersion).
go_build_cached "$here/node/coredns" github.com/coredns/coredns "$bin_dir/coredns"

echo "$bin_dir"
