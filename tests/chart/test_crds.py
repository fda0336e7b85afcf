"""The chart ships the CRDs of crds/ byte for byte (hack/sync-chart-crds.sh copies them)."""

from __future__ import annotations

from tests.chart.conftest import CHART, ROOT


def test_chart_crds_equal_top_level_crds() -> None:
    source = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    shipped = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert source, "no CRDs in crds/"
    assert sorted(shipped) == sorted(source), "run hack/sync-chart-crds.sh"
    for name, content in source.items():
        assert shipped[name] == content, (
            f"charts/azora/crds/{name} differs: run hack/sync-chart-crds.sh"
        )
