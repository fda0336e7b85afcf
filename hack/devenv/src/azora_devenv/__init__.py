"""Development-only launchers: a private PostgreSQL and a local Kubernetes control plane.

Used by ``make up`` and the test fixtures; services never import this package. Standard
library only (plus the ``openssl`` CLI and the binaries built by ``hack/build-tools.sh``).
"""

from __future__ import annotations

from .kube import ADMIN_USER, ApiResponse, LocalControlPlane
from .postgres import LocalPostgres, PostgresNotFoundError, find_pg_bindir
from .procs import (
    CommandError,
    ManagedProcess,
    ProcessDiedError,
    RunAs,
    free_port,
    port_is_open,
    wait_until,
)
from .tools import (
    CONTROL_PLANE_TOOLS,
    ETCD_VERSION,
    HELM_VERSION,
    K8S_VERSION,
    TOOL_VERSIONS,
    ToolNotFoundError,
    bin_dir,
    missing_tools,
    tool_path,
)

__all__ = [
    "ADMIN_USER",
    "CONTROL_PLANE_TOOLS",
    "ETCD_VERSION",
    "HELM_VERSION",
    "K8S_VERSION",
    "TOOL_VERSIONS",
    "ApiResponse",
    "CommandError",
    "LocalControlPlane",
    "LocalPostgres",
    "ManagedProcess",
    "PostgresNotFoundError",
    "ProcessDiedError",
    "RunAs",
    "ToolNotFoundError",
    "bin_dir",
    "find_pg_bindir",
    "free_port",
    "missing_tools",
    "port_is_open",
    "tool_path",
    "wait_until",
]
