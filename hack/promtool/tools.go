//go:build tools

// Keeps `go mod tidy` from dropping the promtool command's dependencies from go.sum.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
