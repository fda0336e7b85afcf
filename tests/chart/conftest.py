"""Fixtures for the chart tests: the pinned helm, rendering helpers, a real API server."""

from __future__ import annotations

import subprocess
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


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())
