#!/usr/bin/env bash
# Builds pebble and pebble-challtestsrv (Let's Encrypt's ACME test server and its DNS/HTTP mock)
# from their Go module, pinned by hack/pebble/go.mod (+ go.sum), like the control plane. Debian's
# pebble 2.4 has neither ACME Renewal Information nor ACME profiles, which the tests need. The
# binaries land in a cache outside the work tree, keyed by version, so a second run builds nothing.
# Prints the directory holding both binaries.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/build-lib.sh
source "$here/build-lib.sh"
module_dir="$here/pebble"
module=github.com/letsencrypt/pebble/v2

version=$(module_version "$module" "$module_dir/go.mod")
bin_dir="$cache_root/pebble/pebble-$version"
for command in pebble pebble-challtestsrv; do
    go_build_cached "$module_dir" "$module/cmd/$command" "$bin_dir/$command" "-X main.version=$version"
done

echo "$bin_dir"
