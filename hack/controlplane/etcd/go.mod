// Pins the etcd server the test harness builds (see hack/build-control-plane.sh).
// Kept apart from the Kubernetes wrapper: kube-apiserver pulls etcd *client* modules whose
// versions must not be mixed into the server build by minimal version selection.
module vhost-operator.local/controlplane/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 v3.6.16
