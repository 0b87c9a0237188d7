// Pins the Prometheus Operator whose CustomResourceDefinitions (ServiceMonitor, PrometheusRule)
// the chart's monitoring objects are validated against by a real API server
// (tests/integration/test_alerts.py, hack/prometheus-operator-crds.sh). Only the module's files
// are used (example/prometheus-operator-crd/), nothing is built; go.sum pins their hash.
// v0.85.0: the newest release on the module proxy.
module vhost-operator.local/prometheus-operator

go 1.26.0

require github.com/prometheus-operator/prometheus-operator v0.85.0
