# Helpers shared by the build scripts (sourced, not run): the cache location, the version a wrapper
# module pins, and a cached `go build` of one binary.
# shellcheck shell=bash

cache_root=${VHOST_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vhost-operator}
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

module_version() { # module go.mod -> pinned version (a one-line `require` or a line of a block)
    sed -n "s#^\(require \)\?[[:space:]]*$1 \(v[^ ]*\).*#\2#p" "$2" | head -n 1
}

go_build_cached() { # module_dir package output_path [ldflags]
    local module_dir=$1 package=$2 output=$3 ldflags=${4:-}
    if [ -x "$output" ]; then
        return
    fi
    mkdir -p "$(dirname "$output")"
    echo "building $(basename "$output") from $package (first run only; cached in $(dirname "$output"))" >&2
    local started=$SECONDS
    (cd "$module_dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$output.partial" "$package")
    mv "$output.partial" "$output"
    echo "built $(basename "$output") in $((SECONDS - started))s" >&2
}

k8s_version_ldflags() { # v1.X.Y -> the -X flags kubernetes' hack/lib/version.sh stamps
    local version=$1 minor stamp="" p
    minor=${version#v1.}
    minor=${minor%%.*}
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        stamp="$stamp -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor"
        stamp="$stamp -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    echo "$stamp"
}
