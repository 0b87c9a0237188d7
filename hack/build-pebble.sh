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
# Fixes of ours, applied to the module's source before it is built (each patch says why); the cache
# key names them, so a changed patch builds again.
patches=("$module_dir"/*.patch)
patched=$(cat "${patches[@]}" | sha256sum | cut -c1-12)
bin_dir="$cache_root/pebble/pebble-$version-patched-$patched"
if [ ! -x "$bin_dir/pebble" ] || [ ! -x "$bin_dir/pebble-challtestsrv" ]; then
    build_dir=$(mktemp -d)
    trap 'chmod -R u+w "$build_dir" && rm -rf "$build_dir"' EXIT
    source_dir=$(cd "$module_dir" && go mod download -json "$module@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    cp -r "$source_dir" "$build_dir/pebble"
    chmod -R u+w "$build_dir/pebble"
    for patch_file in "${patches[@]}"; do
        patch --quiet -d "$build_dir/pebble" -p1 < "$patch_file"
    done
    cp "$module_dir"/go.mod "$module_dir"/go.sum "$module_dir"/tools.go "$build_dir/"
    (cd "$build_dir" && go mod edit -replace "$module=$build_dir/pebble")
    for command in pebble pebble-challtestsrv; do
        go_build_cached "$build_dir" "$module/cmd/$command" "$bin_dir/$command" "-X main.version=$version"
    done
fi

echo "$bin_dir"
