"""A real Kubernetes API server for the test session.

``AZORA_TEST_KUBECONFIG`` points the tests at an existing cluster (e.g. kind); otherwise a
private etcd + kube-apiserver is started from the binaries ``make tools`` built. In CI missing
binaries are a failure, never a skip.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from azora_devenv.kube import LocalControlPlane
from azora_devenv.tools import tool_path
from tests.support.require import require_tools


class KubeCluster:
    def __init__(self, kubeconfig: Path, plane: LocalControlPlane | None) -> None:
        self.kubeconfig = kubeconfig
        self.plane = plane

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = False, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(tool_path("kubectl")), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=check,
        )


@contextmanager
def kube_cluster(work_dir: Path) -> Iterator[KubeCluster]:
    external = os.environ.get("AZORA_TEST_KUBECONFIG")
    if external:
        yield KubeCluster(Path(external), None)
        return
    require_tools("etcd", "kube-apiserver", "kubectl")
    plane = LocalControlPlane(work_dir)
    plane.start()
    try:
        yield KubeCluster(plane.kubeconfig, plane)
    finally:
        plane.stop()
