"""Where the locally built development tools live (see ``hack/build-tools.sh``).

Binaries are ``<bin_dir>/<name>-<version>``; the versions here must match the pins in
``hack/build-tools.sh``.
"""

from __future__ import annotations

import os
from pathlib import Path

K8S_VERSION = "v1.35.4"
ETCD_VERSION = "v3.6.16"
HELM_VERSION = "v4.3.1"
COREDNS_VERSION = "v1.12.4"

TOOL_VERSIONS: dict[str, str] = {
    "etcd": ETCD_VERSION,
    "kube-apiserver": K8S_VERSION,
    "kubectl": K8S_VERSION,
    "kube-controller-manager": K8S_VERSION,
    "kube-scheduler": K8S_VERSION,
    "kubelet": K8S_VERSION,
    "kube-proxy": K8S_VERSION,
    "helm": HELM_VERSION,
    "coredns": COREDNS_VERSION,
}

#: What a local control plane needs.
CONTROL_PLANE_TOOLS: tuple[str, ...] = ("etcd", "kube-apiserver", "kubectl")
#: What a real single-node cluster needs on top (``azora_devenv.node``, ``make kube-up``).
NODE_TOOLS: tuple[str, ...] = (
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "coredns",
    "helm",
)


class ToolNotFoundError(FileNotFoundError):
    """A development tool has not been built yet."""


def bin_dir() -> Path:
    """``$AZORA_BIN_DIR``, else ``${XDG_CACHE_HOME:-~/.cache}/azora/bin``."""
    override = os.environ.get("AZORA_BIN_DIR")
    if override:
        return Path(override)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "azora" / "bin"


def tool_path(name: str) -> Path:
    """Path of the pinned build of ``name``; :class:`ToolNotFoundError` if it is not built."""
    try:
        version = TOOL_VERSIONS[name]
    except KeyError:
        raise ToolNotFoundError(
            f"unknown tool {name!r}; known tools: {', '.join(sorted(TOOL_VERSIONS))}"
        ) from None
    path = bin_dir() / f"{name}-{version}"
    if not os.access(path, os.X_OK):
        raise ToolNotFoundError(
            f"{name} {version} not found at {path}: run `make tools` "
            f"(or `hack/build-tools.sh --only {name}`) to build it"
        )
    return path


def missing_tools(*names: str) -> list[str]:
    """The subset of ``names`` (default: the control-plane tools) that is not built."""
    missing = []
    for name in names or CONTROL_PLANE_TOOLS:
        try:
            tool_path(name)
        except ToolNotFoundError:
            missing.append(name)
    return missing
