#!/usr/bin/env bash
# `make kind-down`: delete the kind cluster made by hack/kind-up.sh (and everything in it).
# Environment: KIND_CLUSTER (default azora).
set -euo pipefail

cluster="${KIND_CLUSTER:-azora}"
if ! command -v kind >/dev/null 2>&1; then
    echo "[kind-down] kind is not installed: nothing to delete" >&2
    exit 0
fi
if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    kind delete cluster --name "$cluster"
else
    echo "[kind-down] no kind cluster named $cluster" >&2
fi
