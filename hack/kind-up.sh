#!/usr/bin/env bash
# `make kind-up`: a kind cluster with Azora installed from this checkout.
#
#   hack/kind-up.sh [--dry-run] [step...]
#     steps (default: all, in order): cluster images load install info
#       cluster  create the kind cluster from kind-config.yaml (kept if it exists)
#       images   build the images: the four services, the operator and the dev PostgreSQL
#                (docker build when a Docker daemon answers, else hack/images.sh with buildah)
#       load     load those images into the cluster's nodes
#       install  helm upgrade --install the chart with the local images (hack/images.sh values)
#       info     print how to reach the APIs
#     --dry-run  (or AZORA_DRY_RUN=1) print every command that changes something, run none of
#                them: "+ cmd arg..." lines on stdout, shell-quoted
#
# Image names are hack/images.sh's (`hack/images.sh list all`): localhost/azora/<name>:<tag>,
# the names `make images` and `make kube-up` use, and the chart takes them through the values
# `hack/images.sh values` prints (registry localhost, pullPolicy Never — so every image a pod
# runs, the dev PostgreSQL's included, must be loaded first; kind's pause image is its own).
#
# Engine: Docker only when a daemon answers (`docker info`), not merely when a docker CLI
# exists; otherwise images are built with buildah and loaded from OCI archives, and kind runs
# its nodes with podman (KIND_EXPERIMENTAL_PROVIDER=podman) when podman exists. Force a choice
# with AZORA_KIND_ENGINE=docker|buildah.
#
# The node image is pinned by digest in kind-config.yaml (published with kind v0.32.0; older
# or newer kind releases warn). Environment: KIND_CLUSTER (default azora), AZORA_NAMESPACE
# (azora), AZORA_IMAGE_TAG (dev), KIND_NODE_IMAGE (overrides the pinned node image),
# AZORA_KIND_STATE (where the generated values file goes; default .local/kind), HELM_EXTRA_ARGS
# (extra `helm upgrade` arguments, word-split).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cluster="${KIND_CLUSTER:-azora}"
namespace="${AZORA_NAMESPACE:-azora}"
tag="${AZORA_IMAGE_TAG:-dev}"
state_dir="${AZORA_KIND_STATE:-$root/.local/kind}"
release=azora
# The kind release whose published node images kind-config.yaml pins.
kind_release=v0.32.0
dry_run="${AZORA_DRY_RUN:-}"

log() { printf '[kind-up] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# run CMD...: run it, or print it (shell-quoted) in a dry run.
run() {
    if [[ -n "$dry_run" ]]; then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

need() {
    local tool
    for tool in "$@"; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            [[ -n "$dry_run" ]] && { log "(dry run) $tool is not installed"; continue; }
            die "missing tool: $tool"
        fi
    done
}

# A Docker daemon that answers, not just a docker CLI on PATH.
docker_running() {
    command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1
}

# The engine, chosen once (main): docker or buildah.
selected_engine=""
choose_engine() {
    case "${AZORA_KIND_ENGINE:-}" in
        docker | buildah) selected_engine=$AZORA_KIND_ENGINE ;;
        "") if docker_running; then selected_engine=docker; else selected_engine=buildah; fi ;;
        *) die "AZORA_KIND_ENGINE must be docker or buildah, not ${AZORA_KIND_ENGINE}" ;;
    esac
}

# Without a Docker daemon kind needs another node provider: podman, or a clear error.
kind_provider() {
    if [[ "$selected_engine" == docker || -n "${KIND_EXPERIMENTAL_PROVIDER:-}" ]]; then
        return
    fi
    if command -v podman >/dev/null 2>&1; then
        export KIND_EXPERIMENTAL_PROVIDER=podman
        log "no Docker daemon answers (docker info): kind runs its nodes with podman"
        return
    fi
    [[ -n "$dry_run" ]] && { log "(dry run) no Docker daemon and no podman"; return; }
    die "kind needs a running Docker daemon (\`docker info\` failed) or podman; none found"
}

# The images kind-up builds and loads: everything hack/images.sh makes except the pause image
# (kind nodes bring their own). Lines: "<component> <Dockerfile> <image>".
image_lines() {
    AZORA_IMAGE_TAG="$tag" bash "$root/hack/images.sh" list all | awk '$1 != "pause"'
}

components() { image_lines | awk '{print $1}'; }

# The full local name (buildah stores "azora/x:tag" as localhost/azora/x:tag; docker and kind
# need the registry part spelled out).
local_names() { image_lines | awk '{print "localhost/" $3}'; }

step_cluster() {
    need kind kubectl
    kind_provider
    if command -v kind >/dev/null 2>&1; then
        local version
        version=$(kind version 2>/dev/null | awk '{print $2}')
        if [[ -n "$version" && "$version" != "$kind_release" ]]; then
            log "kind $version: the pinned node image was published with kind $kind_release"
        fi
    fi
    if command -v kind >/dev/null 2>&1 && kind get clusters 2>/dev/null | grep -qx "$cluster"; then
        log "cluster $cluster exists"
    else
        local image=()
        [[ -n "${KIND_NODE_IMAGE:-}" ]] && image=(--image "$KIND_NODE_IMAGE")
        run kind create cluster --name "$cluster" --config "$root/kind-config.yaml" \
            "${image[@]}" --wait 120s
    fi
    run kubectl config use-context "kind-$cluster"
}

step_images() {
    local component file image context
    if [[ "$selected_engine" == docker ]]; then
        need docker
        while read -r component file image; do
            # hack/images/<name>/ images (the dev PostgreSQL) build from their own folder; the
            # services and the operator from the workspace root.
            context="$root"
            [[ "$file" == hack/images/* ]] && context="$root/$(dirname "$file")"
            log "docker build localhost/$image ($component)"
            run docker build -f "$root/$file" -t "localhost/$image" "$context"
        done < <(image_lines)
    else
        need buildah
        local list=()
        mapfile -t list < <(components)
        run env AZORA_IMAGE_TAG="$tag" bash "$root/hack/images.sh" build "${list[@]}"
    fi
}

step_load() {
    need kind
    kind_provider
    local images=()
    mapfile -t images < <(local_names)
    if [[ "$selected_engine" == docker ]]; then
        run kind load docker-image --name "$cluster" "${images[@]}"
        return
    fi
    # buildah images reach kind through OCI archives (cached by image ID by hack/images.sh).
    local list=() image archive
    mapfile -t list < <(components)
    if [[ -n "$dry_run" ]]; then
        run env AZORA_IMAGE_TAG="$tag" bash "$root/hack/images.sh" archive "${list[@]}"
        for image in "${images[@]}"; do
            run kind load image-archive --name "$cluster" "<archive of $image>"
        done
        return
    fi
    while read -r image archive; do
        log "loading $image"
        kind load image-archive --name "$cluster" "$archive"
    done < <(AZORA_IMAGE_TAG="$tag" bash "$root/hack/images.sh" archive "${list[@]}")
}

step_install() {
    need helm kubectl
    mkdir -p "$state_dir"
    local values="$state_dir/values.yaml"
    # The one source of the local image names and pull policy: hack/images.sh.
    AZORA_IMAGE_TAG="$tag" bash "$root/hack/images.sh" values >"$values"
    local extra=()
    if [[ -n "${HELM_EXTRA_ARGS:-}" ]]; then
        read -r -a extra <<<"$HELM_EXTRA_ARGS"
    fi
    run helm upgrade --install "$release" "$root/charts/azora" \
        --namespace "$namespace" --create-namespace \
        --values "$values" \
        "${extra[@]}" \
        --wait --timeout 10m
    run helm test "$release" --namespace "$namespace" --timeout 5m
}

step_info() {
    cat <<INFO
Azora runs in kind cluster "$cluster", namespace "$namespace".

  kubectl -n $namespace get pods
  export TOKEN=\$(kubectl -n $namespace get secret $release-tokens -o jsonpath='{.data.client-token}' | base64 -d)

Reach an API (one terminal each):
  kubectl -n $namespace port-forward svc/$release-enrollment 8101:8000
  kubectl -n $namespace port-forward svc/$release-ledger 8102:8000
  kubectl -n $namespace port-forward svc/$release-pricing 8103:8000
  kubectl -n $namespace port-forward svc/$release-orchestrator 8104:8000
  curl -H "Authorization: Bearer \$TOKEN" http://127.0.0.1:8102/v1/accounts

Configure it:  kubectl apply -f $root/examples/   (then: kubectl get azora -A)
Remove it:     make kind-down
INFO
}

main() {
    if [[ "${1:-}" == --dry-run ]]; then
        dry_run=1
        shift
    fi
    local steps=("$@")
    [[ ${#steps[@]} -eq 0 ]] && steps=(cluster images load install info)
    local s
    for s in "${steps[@]}"; do
        case "$s" in
            cluster | images | load | install | info) ;;
            *) log "unknown step: $s (cluster images load install info)"; exit 2 ;;
        esac
    done
    choose_engine
    [[ -n "$dry_run" ]] && log "dry run: engine $selected_engine, nothing is changed"
    for s in "${steps[@]}"; do
        "step_$s"
    done
}

main "$@"
