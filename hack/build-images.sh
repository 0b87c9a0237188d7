#!/usr/bin/env bash
# Builds the two images of the Dockerfile (the operator, default target, and `--target agent`)
# with podman, without any Docker engine or registry:
#
# - podman runs rootful with runc (crun cannot run on a cgroup-v1 hybrid host) and a
#   containers.conf that empties podman's default ulimits (raising RLIMIT_NOFILE is refused in
#   these machines' sandboxes). That file lives in the cache, passed through CONTAINERS_CONF;
#   nothing under /etc is changed.
# - The base image is made here from Debian packages (debootstrap --variant=minbase from the
#   machine's Debian mirror) and imported with `podman import`, because no registry is reachable.
#   The Dockerfile gets it through its PYTHON_IMAGE argument; its default stays the official
#   slim image for everyone else.
# - The host's CA bundle is bind-mounted read-only into the build's RUN steps only (pip inside
#   the build goes through this machine's egress, which presents its own CA). It is never
#   copied into an image; tests/integration/test_images.py checks every layer for it.
#
# Both are cached by content: the base by (suite, packages, this script's version); the images
# by a hash of everything they are built from (Dockerfile, .dockerignore, pyproject.toml,
# README.md, operator/, the base's key). A warm run builds nothing. Each image is also saved as a
# docker-archive tar (for `ctr -n k8s.io images import` on a node) in
#   $cache/images/<key>/{operator.tar,agent.tar,refs.json}
# and the $VHOST_OPERATOR_IMAGES_KEEP (default 3) most recently used keys are kept.
#
# `hack/build-images.sh --key` prints the images' key and builds nothing.
# Otherwise prints the path of refs.json, which names both images, their tars and the chart values:
#   {"key": ..., "operator": {"ref": "localhost/vhost-operator:0.1.0-<key>", "tar": ...},
#    "agent": {"ref": "localhost/vhost-operator:0.1.0-<key>-agent", "tar": ...}, ...}
set -euo pipefail

# Bump when this script changes how it makes the base (base_version) or the images.
base_version=1
script_version=2

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
cache_root=${VHOST_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vhost-operator}
images_root="$cache_root/images"
keep=${VHOST_OPERATOR_IMAGES_KEEP:-3}

suite=bookworm
# What the Dockerfile's stages expect of the official python image: python/pip/venv, and what
# its slim variant ships besides (CA certificates for the operator's own TLS clients, netbase).
base_packages="python3,python3-venv,python3-pip,python-is-python3,ca-certificates,netbase,tzdata"
base_repository=localhost/vhost-operator-base/python-$suite
repository=localhost/vhost-operator

log() { echo "build-images: $*" >&2; }

sha() { sha256sum | cut -c1-64; }

# -- the keys: the base by what it is made of, the images by everything they are built from ----
base_key=$(printf '%s\n' "$suite" "$base_packages" "$base_version" | sha | cut -c1-16)
base_image="$base_repository:$base_key"

inputs_hash() { # path + content of every file of the build context, in a stable order
    (
        cd "$repo"
        find Dockerfile .dockerignore pyproject.toml README.md operator -type f \
            ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 |
            LC_ALL=C sort -z | xargs -0 sha256sum
    ) | sha
}
key=$(printf '%s\n' "$(inputs_hash)" "$base_key" "$script_version" | sha | cut -c1-16)
if [ "${1:-}" = --key ]; then # the key only: nothing is built
    echo "$key"
    exit 0
fi

# -- podman, configured for this machine -----------------------------------------------------
mkdir -p "$images_root"
# One build at a time (make images and a test harness may both ask); the others then find it.
exec 9>"$images_root/.lock"
flock 9
export CONTAINERS_CONF="$images_root/containers.conf"
containers_conf='[containers]
default_ulimits = []

[engine]
runtime = "runc"
'
if [ "$(cat "$CONTAINERS_CONF" 2>/dev/null)" != "$containers_conf" ]; then
    printf '%s' "$containers_conf" >"$CONTAINERS_CONF"
fi

# -- a warm run: the saved images, back in podman's storage if they went missing ----------
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/pyproject.toml")
operator_ref="$repository:$version-$key"
agent_ref="$operator_ref-agent"
out="$images_root/$key"
refs="$out/refs.json"

ensure_loaded() { # ref tar: put a saved image back into podman's storage if it went missing
    if ! podman image exists "$1"; then
        log "loading $1 from $2"
        podman load --quiet --input "$2" >/dev/null
    fi
}

if [ -f "$refs" ]; then
    touch "$out" # pruning keeps the most recently used keys
    ensure_loaded "$operator_ref" "$out/operator.tar"
    ensure_loaded "$agent_ref" "$out/agent.tar"
    log "cached: $operator_ref, $agent_ref"
    echo "$refs"
    exit 0
fi

# -- what a run that did not finish leaves behind, removed on exit -----------------------------
# A failed or interrupted `podman build` leaves its buildah working containers and the images of
# its finished stages behind (podman exits on SIGINT or SIGTERM without removing them: an
# interrupted session left a container). Builds of other cache roots share podman's storage, so
# every build also holds a lock of the machine's; a run that did not finish removes those that
# appeared since it took that lock and come from its base (a `FROM <stage>` one names it too, in
# its org.opencontainers.image.base.name annotation), and no others.
exec 8>/run/lock/vhost-operator-images.lock
flock 8
containers() { buildah containers --quiet --notruncate; }
dangling() { podman images --quiet --no-trunc --filter dangling=true | sort; }
present=$(containers && dangling)
from_this_run() { # container|image ID: new since the lock was taken, and made from our base
    local key=org.opencontainers.image.base.name base
    if grep -qxF "$2" <<<"$present"; then return 1; fi
    if [ "$1" = container ]; then
        base=$(buildah inspect --type container \
            --format "{{index .ImageAnnotations \"$key\"}}" "$2")
    else
        base=$(podman image inspect --format "{{index .Annotations \"$key\"}}" "$2")
    fi
    [ "$base" = "$base_image" ]
}
rootfs=
cleanup() {
    local status=$? id
    if [ -n "$rootfs" ]; then rm -rf "$rootfs"; fi
    if [ "$status" = 0 ]; then return; fi
    for id in $(containers); do
        if from_this_run container "$id" 2>/dev/null; then
            log "removing the working container $id of the build that did not finish"
            buildah rm "$id" >/dev/null 2>&1 || true
        fi
    done
    for id in $(dangling); do # the images of its finished stages, once no container uses them
        if from_this_run image "$id" 2>/dev/null; then podman rmi "$id" >/dev/null 2>&1 || true; fi
    done
}
trap cleanup EXIT
# A signal ends the script through the EXIT trap (once the foreground podman has exited).
trap 'exit 130' INT
trap 'exit 143' TERM

# -- the base image: Debian packages, imported ------------------------------------------------
debian_mirror() { # the machine's configured mirror for $suite (deb822 or one-line sources)
    if [ -n "${VHOST_OPERATOR_DEBIAN_MIRROR:-}" ]; then
        echo "$VHOST_OPERATOR_DEBIAN_MIRROR"
        return
    fi
    local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
    local found
    found=$(awk -v suite="$suite" '
        /^deb / { for (i = 2; i < NF; i++) if ($i ~ /^[a-z+]+:\/\//) { if ($(i + 1) == suite) print $i; break } }
        /^URIs:/ { uri = $2 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite && uri != "") print uri }
        /^$/ { uri = "" }
    ' "${files[@]}" 2>/dev/null | head -n1)
    echo "${found:-http://deb.debian.org/debian}"
}

if ! podman image exists "$base_image"; then
    mirror=$(debian_mirror)
    log "making $base_image from Debian packages ($suite, $mirror; first run only)"
    started=$SECONDS
    rootfs=$(mktemp -d "$images_root/rootfs.XXXXXX")
    debootstrap --variant=minbase --include="$base_packages" "$suite" "$rootfs" "$mirror" >&2
    # What a registry's image would not carry: the download cache, package lists, and this
    # host's name and resolver (podman provides both at run time).
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    rm -f "$rootfs/etc/resolv.conf" "$rootfs/etc/hostname"
    tar --numeric-owner -C "$rootfs" -c . | podman import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        - "$base_image" >/dev/null
    rm -rf "$rootfs"
    rootfs=
    log "made $base_image in $((SECONDS - started))s"
    # Bases of other keys (an older package list or script) are not needed any more.
    podman images --format '{{.Repository}}:{{.Tag}}' --filter "reference=$base_repository" |
        grep -vxF "$base_image" | xargs -r podman rmi >/dev/null 2>&1 || true
fi

bundle=${SSL_CERT_FILE:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}
mkdir -p "$out"
build() { # ref [podman build args...]
    local ref=$1
    shift
    log "building $ref"
    local started=$SECONDS
    # --layers=false: podman's layer cache keys the runtime stage's `RUN --mount=...,from=build`
    # by its text alone, so a cached layer would keep the wheels of older sources (seen: an
    # image without the current cli.py). The key above already decides when to build.
    # --network=host: podman creates no bridge or firewall rules for the build's downloads.
    podman build --quiet --layers=false --network=host \
        --build-arg "PYTHON_IMAGE=$base_image" \
        --volume "$bundle:/etc/ssl/certs/ca-certificates.crt:ro" \
        --tag "$ref" "$@" "$repo" >/dev/null
    log "built $ref in $((SECONDS - started))s"
}
dangling_before=$(dangling)
build "$operator_ref"
build "$agent_ref" --target agent
# The build stage is committed as an untagged image; only the tagged images are kept.
comm -13 <(echo "$dangling_before") <(dangling) | xargs -r podman rmi >/dev/null 2>&1 || true

save() { # ref tar
    rm -f "$2.partial"
    podman save --quiet --format docker-archive --output "$2.partial" "$1"
    mv "$2.partial" "$2"
}
save "$operator_ref" "$out/operator.tar"
save "$agent_ref" "$out/agent.tar"

cat >"$refs.partial" <<EOF
{
  "key": "$key",
  "version": "$version",
  "base": "$base_image",
  "repository": "$repository",
  "containers_conf": "$CONTAINERS_CONF",
  "operator": {"ref": "$operator_ref", "tag": "$version-$key", "tar": "$out/operator.tar"},
  "agent": {"ref": "$agent_ref", "tag": "$version-$key-agent", "tar": "$out/agent.tar"}
}
EOF
mv "$refs.partial" "$refs"

# -- keep the cache bounded: the $keep most recently used keys, their images with them ----------
# shellcheck disable=SC2012 # names are our hex keys
ls -1dt "$images_root"/*/ 2>/dev/null | tail -n +"$((keep + 1))" | while read -r old; do
    [[ $(basename "$old") =~ ^[0-9a-f]{16}$ ]] || continue
    log "pruning $old"
    for old_ref in $(sed -n 's/.*"ref": "\([^"]*\)".*/\1/p' "$old/refs.json" 2>/dev/null); do
        podman rmi "$old_ref" >/dev/null 2>&1 || true
    done
    rm -rf "$old"
done

echo "$refs"
