"""Fixtures for the chart tests: the pinned helm, rendering helpers, a real API server."""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from azora_devenv import CONTROL_PLANE_TOOLS, LocalControlPlane
from azora_devenv.tools import tool_path
from tests.support.require import require_tools

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "azora"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
FIXTURES = Path(__file__).parent / "fixtures"


def helm(
    *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    require_tools("helm")
    result = subprocess.run(
        [str(tool_path("helm")), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def render(
    *,
    values: Sequence[Path] = (),
    sets: Sequence[str] = (),
    release: str = "azora",
    namespace: str = "azora",
) -> list[dict[str, Any]]:
    """``helm template`` (tests included) parsed into objects."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    for path in values:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set", item]
    out = helm(*args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: found {len(found)}"
    return found[0]


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalControlPlane]:
    require_tools(*CONTROL_PLANE_TOOLS, "helm")
    with LocalControlPlane(tmp_path_factory.mktemp("chart-kube")) as cp:
        # Test stand-ins for the Prometheus Operator's CRDs (ServiceMonitor, PrometheusRule):
        # strict schemas of the fields the chart writes, so the monitoring objects are
        # validated too.
        result = cp.kubectl("apply", "--server-side", "-f", str(FIXTURES / "monitoring-crds.yaml"))
        assert result.returncode == 0, result.stderr
        for crd in ("servicemonitors", "prometheusrules"):
            cp.kubectl("wait", "--for=condition=Established", f"crd/{crd}.monitoring.coreos.com")
        yield cp


class FakeJobController:
    """Marks every Job complete, standing in for the controller-manager + kubelet this API
    server lacks, so Helm's hook and test Jobs finish and their ordering is exercised."""

    def __init__(self, cp: LocalControlPlane) -> None:
        self.cp = cp
        self.completed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FakeJobController:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            jobs = self.cp.request("GET", "/apis/batch/v1/jobs").json() or {}
            for job in jobs.get("items", []):
                conditions = {c["type"] for c in job.get("status", {}).get("conditions", [])}
                if "Complete" not in conditions:
                    self._complete(job["metadata"])
            self._stop.wait(0.2)

    def _complete(self, meta: dict[str, Any]) -> None:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        condition = {"status": "True", "lastTransitionTime": now, "reason": "CompletionsReached"}
        body = {
            "status": {
                "startTime": now,
                "completionTime": now,
                "succeeded": 1,
                "conditions": [
                    {"type": "SuccessCriteriaMet", **condition},
                    {"type": "Complete", **condition},
                ],
            }
        }
        path = f"/apis/batch/v1/namespaces/{meta['namespace']}/jobs/{meta['name']}/status"
        resp = self.cp.request("PATCH", path, body, content_type="application/merge-patch+json")
        if resp.status == 200:
            self.completed.append(f"{meta['namespace']}/{meta['name']}")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())
