#!/usr/bin/env bash
# Build the Azora container images with buildah (no Docker engine needed).
#
#   hack/images.sh [base|build|list|archive|values] [component...|all]
#     base     make (or reuse) the local Python base image only
#     build    build the images (default); components: enrollment ledger pricing orchestrator
#              operator (the default set), and postgresql, pause, coredns, model-backend
#              (`all` = every one whose inputs exist)
#     list     print "<component> <Dockerfile> <image>" lines
#     archive  build, then export each image as an OCI archive (cached under
#              ~/.cache/azora/images/archives, one per image ID) and print "<image> <archive>" lines
#     values   print the Helm values that make charts/azora use these local images
#
# Local image names, the one convention shared by the chart, `make images`, `make kind-up` and
# `make kube-up`: localhost/<the chart's repository>:<AZORA_IMAGE_TAG>, e.g.
# localhost/azora/azora-ledger:dev (buildah names "azora/azora-ledger:dev" so; docker builds
# and archives use the full name). The chart takes them with image.registry=localhost,
# image.tag=dev, image.pullPolicy=Never (`hack/images.sh values`). Extra local images:
# localhost/azora/postgresql:dev (Debian PostgreSQL 15 standing in for postgres:17-alpine, for
# the chart's dev PostgreSQL), localhost/azora/pause:dev (the local cluster's sandbox image),
# localhost/azora/coredns:dev (the local cluster's DNS, from the binary build-tools.sh builds)
# and, once services/model-backend/Dockerfile exists, localhost/azora/model-backend:dev.
#
# Storage is vfs and RUN steps use chroot isolation, which work inside containers where overlay
# mounts and user namespaces are not available. vfs copies the whole root filesystem for every
# layer, so builds run without --layers (one commit per stage); the download caches are
# buildah cache mounts, so a rebuild downloads nothing.
#
# Base image: the Dockerfiles take PYTHON_BASE as a build argument (default: the official
# python:3.11-slim). When that cannot be pulled (no registry access), a local base is made once
# with debootstrap (Debian bookworm minbase + Debian's python3) and cached as a tarball under
# ${XDG_CACHE_HOME:-~/.cache}/azora/images/; set AZORA_PYTHON_BASE to force either.
#
# Environment: AZORA_IMAGE_TAG (default dev), AZORA_IMAGE_PREFIX (default azora),
# AZORA_BUILDAH_ROOT (buildah storage; default: buildah's own), DEBIAN_MIRROR,
# AZORA_CA_BUNDLE (CA bundle for the build's PyPI downloads; default: the host's),
# AZORA_IMAGES_FORCE=1 (rebuild even when the inputs did not change), AZORA_IMAGES_SRC (the
# source tree to build from; default: this checkout, uncommitted changes included).
set -euo pipefail

# AZORA_IMAGES_SRC: build from another checkout (e.g. a `git archive HEAD` export) instead of this one.
root=${AZORA_IMAGES_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/azora/images"
tag="${AZORA_IMAGE_TAG:-dev}"
prefix="${AZORA_IMAGE_PREFIX:-azora}"
registry_base="docker.io/library/python:3.11-slim-bookworm"
local_base="localhost/azora-python-base:bookworm"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

storage_args=(--storage-driver vfs)
if [[ -n "${AZORA_BUILDAH_ROOT:-}" ]]; then
    storage_args+=(--root "$AZORA_BUILDAH_ROOT/root" --runroot "$AZORA_BUILDAH_ROOT/run")
fi

log() { printf '[images] %s\n' "$*" >&2; }

# component -> Dockerfile (relative to the repository root) and image name.
dockerfile_of() {
    case "$1" in
        enrollment) echo services/enrollment-service/Dockerfile ;;
        ledger) echo services/azora-ledger/Dockerfile ;;
        pricing) echo services/azora-pricing/Dockerfile ;;
        orchestrator) echo services/ai-orchestrator/Dockerfile ;;
        operator) echo operator/Dockerfile ;;
        postgresql) echo hack/images/postgresql/Dockerfile ;;
        pause) echo hack/images/pause/Dockerfile ;;
        coredns) echo hack/images/coredns/Dockerfile ;;
        model-backend) echo services/model-backend/Dockerfile ;;
        *) log "unknown component: $1"; return 1 ;;
    esac
}

image_of() {
    case "$1" in
        enrollment) echo "$prefix/enrollment-service:$tag" ;;
        ledger) echo "$prefix/azora-ledger:$tag" ;;
        pricing) echo "$prefix/azora-pricing:$tag" ;;
        orchestrator) echo "$prefix/ai-orchestrator:$tag" ;;
        operator) echo "$prefix/azora-operator:$tag" ;;
        postgresql) echo "$prefix/postgresql:$tag" ;;
        pause) echo "$prefix/pause:$tag" ;;
        coredns) echo "$prefix/coredns:$tag" ;;
        model-backend) echo "$prefix/model-backend:$tag" ;;
    esac
}

all_components=(enrollment ledger pricing orchestrator operator)
# Built on request (or with `all`): the dev PostgreSQL, the pause image, the demo model backend
# (only when its Dockerfile exists).
extra_components=(postgresql pause)
# CoreDNS packs the binary hack/build-tools.sh --node builds.
bin_dir="${AZORA_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/azora/bin}"
if [[ -x "$bin_dir/coredns" ]]; then
    extra_components+=(coredns)
fi
if [[ -f "$root/services/model-backend/Dockerfile" ]]; then
    extra_components+=(model-backend)
fi

have_image() {
    buildah "${storage_args[@]}" inspect --type image "$1" >/dev/null 2>&1
}

# The Debian root filesystem: debootstrap once, cached as a tarball.
local_rootfs() {
    local tarball="$cache_dir/bookworm-python3-rootfs.tar"
    if [[ -s "$tarball" ]]; then
        echo "$tarball"
        return
    fi
    command -v debootstrap >/dev/null || { log "debootstrap missing (apt-get install debootstrap)"; return 1; }
    mkdir -p "$cache_dir"
    local work
    work=$(mktemp -d "$cache_dir/rootfs.XXXXXX")
    log "debootstrap bookworm (minbase + python3) into $work (first run only)"
    # python3-venv: the build stage makes a venv for uv; no compiler is pulled in.
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$work/rootfs" "$mirror" >&2
    # Trim what an image never needs: apt lists, caches, docs.
    rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/"*.bin \
        "$work/rootfs/usr/share/doc" "$work/rootfs/usr/share/man" "$work/rootfs/usr/share/info"
    tar -C "$work/rootfs" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$work"
    echo "$tarball"
}

ensure_local_base() {
    if have_image "$local_base"; then
        return
    fi
    local tarball ctr
    tarball=$(local_rootfs)
    log "importing $tarball as $local_base"
    ctr=$(buildah "${storage_args[@]}" from scratch)
    buildah "${storage_args[@]}" add "$ctr" "$tarball" / >/dev/null
    buildah "${storage_args[@]}" config --env LANG=C.UTF-8 --cmd '["python3"]' "$ctr"
    buildah "${storage_args[@]}" commit --quiet "$ctr" "$local_base" >/dev/null
    buildah "${storage_args[@]}" rm "$ctr" >/dev/null
}

# Which base to build on: AZORA_PYTHON_BASE, else the registry image if it can be pulled, else
# the local debootstrap base.
python_base() {
    if [[ -n "${AZORA_PYTHON_BASE:-}" ]]; then
        if [[ "$AZORA_PYTHON_BASE" == "$local_base" ]]; then
            ensure_local_base
        fi
        echo "$AZORA_PYTHON_BASE"
        return
    fi
    if have_image "$registry_base" || \
        timeout 60 buildah "${storage_args[@]}" pull --quiet "$registry_base" >/dev/null 2>&1; then
        echo "$registry_base"
        return
    fi
    log "cannot pull $registry_base: using the local debootstrap base"
    ensure_local_base
    echo "$local_base"
}

# The source directory of a component (besides services/common, which every image contains).
srcdir_of() {
    local file
    file=$(dockerfile_of "$1")
    dirname "$file"
}

# Hash of everything a component's image is made from: its Dockerfile, the base image, the lock
# file, every workspace pyproject.toml (uv reads them all), azora-common's and its own sources.
input_hash() {
    local component=$1 base_id=$2 dir
    dir=$(srcdir_of "$component")
    if [[ "$dir" == hack/images/* ]]; then
        (
            cd "$root"
            echo "base $base_id"
            find "$dir" -type f -print0 | sort -z | xargs -0 sha256sum
            if [[ "$component" == coredns ]]; then
                sha256sum "$bin_dir/coredns" | cut -d' ' -f1
            fi
        ) | sha256sum | cut -d' ' -f1
        return
    fi
    (
        cd "$root"
        echo "base $base_id"
        find pyproject.toml uv.lock services/*/pyproject.toml operator/pyproject.toml \
            services/common/src "$dir/src" "$dir/Dockerfile" \
            -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
            | sort -z | xargs -0 sha256sum
    ) | sha256sum | cut -d' ' -f1
}

build_one() {
    local component=$1 base=$2 file image hash base_id current
    file=$(dockerfile_of "$component")
    image=$(image_of "$component")
    base_id=$(buildah "${storage_args[@]}" inspect --type image --format '{{.FromImageID}}' "$base")
    hash=$(input_hash "$component" "$base_id")
    # Skip the build when the image was made from exactly these inputs (vfs builds are slow).
    current=$(buildah "${storage_args[@]}" inspect --type image \
        --format '{{index .ImageAnnotations "io.azora.input-hash"}}' "$image" 2>/dev/null || true)
    if [[ "$current" == "$hash" && -z "${AZORA_IMAGES_FORCE:-}" ]]; then
        log "$image is up to date (inputs $hash)"
        echo "$image"
        return
    fi
    local extra=()
    # Extra CAs (a TLS-intercepting proxy in front of PyPI): the Dockerfiles read this optional
    # build secret; it never lands in a layer.
    local ca="${AZORA_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
    if [[ -s "$ca" ]]; then
        extra+=(--secret "id=ca-bundle,src=$ca")
    fi
    local context="$root" dockerfile="$root/$file" ignore=(--ignorefile "$root/hack/images.containerignore") tmp=""
    case "$component" in
        postgresql)
            context="$root/hack/images/postgresql"
            ignore=()
            ;;
        pause)
            # A static binary in a FROM-scratch image: compiled here, not in a build stage.
            command -v gcc >/dev/null || { log "gcc missing (hack/system-deps.sh installs it)"; return 1; }
            tmp=$(mktemp -d)
            cp "$root/hack/images/pause/Dockerfile" "$tmp/"
            gcc -static -Os -s -o "$tmp/pause" "$root/hack/images/pause/pause.c"
            context="$tmp"
            dockerfile="$tmp/Dockerfile"
            ignore=()
            ;;
        coredns)
            [[ -x "$bin_dir/coredns" ]] || { log "no coredns binary: run hack/build-tools.sh --node"; return 1; }
            tmp=$(mktemp -d)
            cp "$root/hack/images/coredns/Dockerfile" "$tmp/"
            cp -L "$bin_dir/coredns" "$tmp/coredns"
            context="$tmp"
            dockerfile="$tmp/Dockerfile"
            ignore=()
            ;;
    esac
    # uv keys the wheels it builds from local (workspace) sources on pyproject.toml's mtime, so
    # the shared cache mount would hand back a stale azora-* wheel after a source-only change:
    # drop those (pure-Python, seconds to rebuild); downloaded wheels stay cached.
    rm -rf /var/tmp/buildah-cache/root/.cache/uv/sdists-v*/path \
        "/var/tmp/buildah-cache-$(id -u)"/root/.cache/uv/sdists-v*/path 2>/dev/null || true
    log "building $image from $file (base $base)"
    buildah "${storage_args[@]}" bud \
        "${extra[@]}" \
        --isolation chroot \
        "${ignore[@]}" \
        --build-arg "PYTHON_BASE=$base" \
        --annotation "io.azora.input-hash=$hash" \
        --file "$dockerfile" \
        --tag "$image" \
        "$context" >&2
    [[ -n "$tmp" ]] && rm -rf "$tmp"
    echo "$image"
}

# archive_one IMAGE: an OCI archive of IMAGE named localhost/IMAGE, cached by image ID.
archive_one() {
    local image=$1 id name dir file
    id=$(buildah "${storage_args[@]}" inspect --type image --format '{{.FromImageID}}' "$image")
    name="localhost/$image"
    dir="$cache_dir/archives"
    mkdir -p "$dir"
    file="$dir/$(echo "${image%:*}" | tr '/' '_')-${tag}-${id:0:16}.tar"
    if [[ ! -s "$file" ]]; then
        # Older archives of the same image name are stale.
        rm -f "$dir/$(echo "${image%:*}" | tr '/' '_')-${tag}-"*.tar
        log "exporting $name to $file"
        buildah "${storage_args[@]}" push --quiet "$image" "oci-archive:$file.tmp:$name" >&2
        mv "$file.tmp" "$file"
    fi
    printf '%s %s\n' "$name" "$file"
}

print_values() {
    cat <<VALUES
# Helm values for the images of hack/images.sh (tag $tag), printed by \`hack/images.sh values\`.
image:
  registry: localhost
  tag: "$tag"
  pullPolicy: Never
postgresql:
  image:
    registry: localhost
    repository: $prefix/postgresql
    tag: "$tag"
VALUES
}

main() {
    local cmd=${1:-build}
    [[ $# -gt 0 ]] && shift
    local components=("$@")
    [[ ${#components[@]} -eq 0 ]] && components=("${all_components[@]}")
    if [[ "${components[*]}" == all ]]; then
        components=("${all_components[@]}" "${extra_components[@]}")
    fi
    case "$cmd" in
        list)
            for c in "${components[@]}"; do
                printf '%s %s %s\n' "$c" "$(dockerfile_of "$c")" "$(image_of "$c")"
            done
            ;;
        base)
            python_base
            ;;
        build)
            command -v buildah >/dev/null || { log "buildah missing (apt-get install buildah)"; exit 1; }
            local base
            base=$(python_base)
            for c in "${components[@]}"; do
                build_one "$c" "$base"
            done
            # Rebuilding a tag leaves the previous image dangling: 300 MB each on vfs.
            buildah "${storage_args[@]}" rmi --prune >/dev/null 2>&1 || true
            ;;
        archive)
            local built=() img
            mapfile -t built < <(main build "${components[@]}")
            for img in "${built[@]}"; do
                archive_one "$img"
            done
            ;;
        values)
            print_values
            ;;
        *)
            log "usage: $0 [base|build|list|archive|values] [component...|all]"
            exit 2
            ;;
    esac
}

main "$@"
