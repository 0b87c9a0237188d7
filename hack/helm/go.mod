// Pins the Helm v3 client the chart tests use (see hack/build-helm.sh).
// helm.sh/helm/v3 has no replace directives, so a plain require is enough; the wrapper exists so
// that go.sum pins every module hash in the repository, as hack/controlplane/ does.
// v3.21.4: the newest patch release of a Helm line whose Kubernetes skew (1.33-1.36) covers the
// local control plane (v1.34).
module vhost-operator.local/helm

go 1.26.0

require helm.sh/helm/v3 v3.21.4
