//go:build tools

// Keeps `go mod tidy` from dropping the two commands' dependencies from go.sum.
package tools

import (
	_ "github.com/letsencrypt/pebble/v2/cmd/pebble"
	_ "github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv"
)
