#!/usr/bin/env bash
# Build the local development tools from Go modules (no Docker, no release
# downloads): etcd, kube-apiserver, kubectl and helm by default;
# kube-controller-manager and kube-scheduler on request.
#
#   hack/build-tools.sh                      # build whatever is missing (defaults)
#   hack/build-tools.sh --only kubectl helm  # just these
#   hack/build-tools.sh --list               # names, versions, cache paths
#
# Binaries land in ${AZORA_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/azora/bin} as
# <name>-<version>, with a stable symlink <name> -> <name>-<version>. A binary
# that already exists is never rebuilt ("cached"); delete it to force a rebuild.
# The Go module and build caches are the normal Go ones (GOMODCACHE, GOCACHE).
#
# Versions are pinned here and in the wrapper modules hack/k8s and hack/etcd
# (go.mod + go.sum are checked in). To bump Kubernetes: edit K8S_VERSION and
# K8S_STAGING_VERSION, regenerate the replace block of hack/k8s/go.mod from the
# `=> ./staging/` lines of `go mod download -json k8s.io/kubernetes@<v>`'s
# GoMod file, then `go mod tidy` in hack/k8s.
set -euo pipefail

readonly ETCD_VERSION="v3.6.16"
readonly K8S_VERSION="v1.35.4"
readonly K8S_STAGING_VERSION="v0.35.4"
readonly HELM_VERSION="v4.3.1"
readonly COREDNS_VERSION="v1.12.4"
readonly DEFAULT_TOOLS=(etcd kube-apiserver kubectl helm)
readonly NODE_TOOLS=(kube-controller-manager kube-scheduler kubelet kube-proxy coredns)
readonly ALL_TOOLS=(etcd kube-apiserver kubectl kube-controller-manager kube-scheduler kubelet
    kube-proxy helm coredns)

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT_DIR
BIN_DIR="${AZORA_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/azora/bin}"
readonly BIN_DIR

log() { printf '[build-tools] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() {
    sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

find_go() {
    if [[ -n "${GO:-}" ]]; then
        printf '%s\n' "$GO"
    elif command -v go >/dev/null 2>&1; then
        command -v go
    elif [[ -x /usr/local/go/bin/go ]]; then
        printf '%s\n' /usr/local/go/bin/go
    else
        die "no Go toolchain found (set GO=/path/to/go or put go on PATH)"
    fi
}

version_of() {
    case "$1" in
        etcd) printf '%s\n' "$ETCD_VERSION" ;;
        kube-apiserver | kubectl | kube-controller-manager | kube-scheduler | kubelet | kube-proxy)
            printf '%s\n' "$K8S_VERSION"
            ;;
        helm) printf '%s\n' "$HELM_VERSION" ;;
        coredns) printf '%s\n' "$COREDNS_VERSION" ;;
        *) die "unknown tool '$1' (known: ${ALL_TOOLS[*]})" ;;
    esac
}

human_size() {
    local bytes
    bytes="$(stat -c %s "$1")"
    awk -v b="$bytes" 'BEGIN { printf "%.1f MiB (%d bytes)", b / 1048576, b }'
}

TICKER_PID=""
start_ticker() {
    local what="$1" start="$2"
    (
        while sleep 30; do
            printf '[build-tools] ... still building %s (%ds)\n' "$what" "$(($(date +%s) - start))" >&2
        done
    ) &
    TICKER_PID=$!
}
stop_ticker() {
    if [[ -n "$TICKER_PID" ]]; then
        kill "$TICKER_PID" 2>/dev/null || true
        wait "$TICKER_PID" 2>/dev/null || true
        TICKER_PID=""
    fi
}

TMP_OUT=""
cleanup() {
    stop_ticker
    if [[ -n "$TMP_OUT" ]]; then
        rm -rf "$TMP_OUT"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# k8s ldflags. buildDate is the release tag's time from the module proxy (not
# "now") so that rebuilding gives the same binary. The upstream git commit is
# not known from the module proxy; pass K8S_GIT_COMMIT to stamp one.
k8s_ldflags() {
    local go_bin="$1" minor build_date
    minor="${K8S_VERSION#v1.}"
    minor="${minor%%.*}"
    build_date="$(cd "$ROOT_DIR/hack/k8s" && GOWORK=off GOTOOLCHAIN=local GOFLAGS=-mod=mod \
        "$go_bin" list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes)"
    if [[ -z "$build_date" ]]; then
        build_date="1970-01-01T00:00:00Z"
    fi
    local flags="-s -w" pkg
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X ${pkg}.gitVersion=${K8S_VERSION}"
        flags+=" -X ${pkg}.gitMajor=1"
        flags+=" -X ${pkg}.gitMinor=${minor}"
        flags+=" -X ${pkg}.gitCommit=${K8S_GIT_COMMIT:-}"
        flags+=" -X ${pkg}.gitTreeState=clean"
        flags+=" -X ${pkg}.buildDate=${build_date}"
    done
    printf '%s\n' "$flags"
}

# build_one NAME: builds $BIN_DIR/NAME-VERSION unless present; refreshes the symlink.
build_one() {
    local name="$1" version target go_bin start elapsed
    version="$(version_of "$name")"
    target="$BIN_DIR/${name}-${version}"
    if [[ -x "$target" ]]; then
        ln -sfn "${name}-${version}" "$BIN_DIR/$name"
        log "$name $version: cached ($target)"
        return 0
    fi
    go_bin="$(find_go)"
    TMP_OUT="$(mktemp -d "$BIN_DIR/.build-${name}.XXXXXX")"
    start="$(date +%s)"
    log "$name $version: building with $("$go_bin" env GOVERSION) ..."
    start_ticker "$name" "$start"

    # -trimpath + -buildvcs=false + fixed ldflags: output depends only on the
    # sources, not on this checkout's git state.
    local -a common=(-p 2 -trimpath -buildvcs=false)
    case "$name" in
        etcd)
            (cd "$ROOT_DIR/hack/etcd" &&
                GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod \
                    "$go_bin" build "${common[@]}" -ldflags "-s -w" \
                    -o "$TMP_OUT/$name" go.etcd.io/etcd/server/v3)
            ;;
        kube-apiserver | kubectl | kube-controller-manager | kube-scheduler | kubelet | kube-proxy)
            local ldflags
            ldflags="$(k8s_ldflags "$go_bin")"
            (cd "$ROOT_DIR/hack/k8s" &&
                GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod \
                    "$go_bin" build "${common[@]}" -ldflags "$ldflags" \
                    -o "$TMP_OUT/$name" "k8s.io/kubernetes/cmd/${name}")
            ;;
        helm)
            # No replace directives upstream: plain `go install pkg@version`. Without the
            # ldflags `helm version` says "v4.3" (the source default), not the release.
            local helm_ldflags="-s -w"
            helm_ldflags+=" -X helm.sh/helm/v4/internal/version.version=${HELM_VERSION}"
            helm_ldflags+=" -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
            (cd "$TMP_OUT" &&
                GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="" GOBIN="$TMP_OUT" \
                    "$go_bin" install "${common[@]}" -ldflags "$helm_ldflags" \
                    "helm.sh/helm/v4/cmd/helm@${HELM_VERSION}")
            ;;
        coredns)
            # No replace directives upstream either. The version ldflag makes `coredns -version`
            # report the release instead of the source default.
            (cd "$TMP_OUT" &&
                GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="" GOBIN="$TMP_OUT" \
                    "$go_bin" install "${common[@]}" -ldflags "-s -w" \
                    "github.com/coredns/coredns@${COREDNS_VERSION}")
            ;;
    esac

    stop_ticker
    mv -f "$TMP_OUT/$name" "$target"
    rm -rf "$TMP_OUT"
    TMP_OUT=""
    ln -sfn "${name}-${version}" "$BIN_DIR/$name"
    elapsed=$(($(date +%s) - start))
    log "$name $version: built in ${elapsed}s, $(human_size "$target") -> $target"
}

main() {
    local -a tools=()
    while (($#)); do
        case "$1" in
            --only)
                shift
                while (($#)) && [[ "$1" != --* ]]; do
                    version_of "$1" >/dev/null
                    tools+=("$1")
                    shift
                done
                ((${#tools[@]})) || die "--only needs at least one tool name"
                ;;
            --node)
                tools+=("${DEFAULT_TOOLS[@]}" "${NODE_TOOLS[@]}")
                shift
                ;;
            --list)
                local t
                for t in "${ALL_TOOLS[@]}"; do
                    printf '%-24s %-9s %s\n' "$t" "$(version_of "$t")" "$BIN_DIR/$t-$(version_of "$t")"
                done
                return 0
                ;;
            -h | --help)
                usage
                return 0
                ;;
            *) die "unknown argument '$1' (try --help)" ;;
        esac
    done
    if ((${#tools[@]} == 0)); then
        tools=("${DEFAULT_TOOLS[@]}")
    fi
    : "$K8S_STAGING_VERSION" # documented pin; the replaces live in hack/k8s/go.mod

    mkdir -p "$BIN_DIR"
    # One build at a time per cache dir (two `make tools` in parallel would
    # otherwise compile everything twice on a 2-core machine).
    exec 9>"$BIN_DIR/.lock"
    if ! flock -n 9; then
        log "another build-tools run holds $BIN_DIR/.lock; waiting ..."
        flock 9
    fi

    local total_start t
    total_start="$(date +%s)"
    for t in "${tools[@]}"; do
        build_one "$t"
    done
    log "done in $(($(date +%s) - total_start))s (bin dir: $BIN_DIR)"
}

main "$@"
