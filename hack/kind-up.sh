#!/usr/bin/env bash
# `make kind-up`: a kind cluster with Azora installed from this checkout.
#
#   hack/kind-up.sh [step...]
#     steps (default: all, in order): cluster images load install info
#       cluster  create the kind cluster from kind-config.yaml (kept if it exists)
#       images   build the five images (docker build, or hack/images.sh with buildah)
#       load     load the images into the cluster's nodes
#       install  helm upgrade --install the chart with the local images
#       info     print how to reach the APIs
#
# Needs docker (or podman) + kind + kubectl + helm. Each step runs on its own, so a failed step
# can be re-run alone. Environment: KIND_CLUSTER (default azora), AZORA_NAMESPACE (azora),
# AZORA_IMAGE_TAG (kind), HELM_EXTRA_ARGS (extra `helm upgrade` arguments, word-split).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cluster="${KIND_CLUSTER:-azora}"
namespace="${AZORA_NAMESPACE:-azora}"
tag="${AZORA_IMAGE_TAG:-kind}"
release=azora
components=(enrollment ledger pricing orchestrator operator)

log() { printf '[kind-up] %s\n' "$*" >&2; }

need() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || { log "missing tool: $tool"; exit 1; }
    done
}

# Image name of a component, as hack/images.sh names it.
image_of() {
    AZORA_IMAGE_TAG="$tag" bash "$root/hack/images.sh" list "$1" | awk '{print $3}'
}

dockerfile_of() {
    bash "$root/hack/images.sh" list "$1" | awk '{print $2}'
}

step_cluster() {
    need kind kubectl
    if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
        log "cluster $cluster exists"
    else
        kind create cluster --name "$cluster" --config "$root/kind-config.yaml" --wait 120s
    fi
    kubectl config use-context "kind-$cluster" >/dev/null
}

step_images() {
    local c
    if command -v docker >/dev/null 2>&1; then
        for c in "${components[@]}"; do
            log "docker build $(image_of "$c")"
            docker build -f "$root/$(dockerfile_of "$c")" -t "$(image_of "$c")" "$root"
        done
    else
        need buildah
        AZORA_IMAGE_TAG="$tag" bash "$root/hack/images.sh" build "${components[@]}" >/dev/null
    fi
}

step_load() {
    need kind
    local c images=()
    for c in "${components[@]}"; do
        images+=("$(image_of "$c")")
    done
    if command -v docker >/dev/null 2>&1; then
        kind load docker-image --name "$cluster" "${images[@]}"
    else
        # buildah images reach kind through an OCI archive.
        local archive
        archive=$(mktemp --suffix=.tar)
        for c in "${images[@]}"; do
            buildah --storage-driver vfs push "$c" "oci-archive:$archive:$c"
            kind load image-archive --name "$cluster" "$archive"
        done
        rm -f "$archive"
    fi
}

step_install() {
    need helm kubectl
    local c sets=()
    for c in "${components[@]}"; do
        local image repo key
        image=$(image_of "$c")
        repo=${image%:*}
        key="services.$c"
        [[ "$c" == operator ]] && key=operator
        sets+=(--set "$key.image.repository=$repo")
    done
    local extra=()
    if [[ -n "${HELM_EXTRA_ARGS:-}" ]]; then
        read -r -a extra <<<"$HELM_EXTRA_ARGS"
    fi
    helm upgrade --install "$release" "$root/charts/azora" \
        --namespace "$namespace" --create-namespace \
        --set image.registry= --set image.tag="$tag" --set image.pullPolicy=Never \
        "${sets[@]}" "${extra[@]}" \
        --wait --timeout 10m
    helm test "$release" --namespace "$namespace" --timeout 5m
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
    local steps=("$@")
    [[ ${#steps[@]} -eq 0 ]] && steps=(cluster images load install info)
    local s
    for s in "${steps[@]}"; do
        case "$s" in
            cluster | images | load | install | info) "step_$s" ;;
            *) log "unknown step: $s (cluster images load install info)"; exit 2 ;;
        esac
    done
}

main "$@"
