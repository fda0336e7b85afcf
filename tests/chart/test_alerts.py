"""The alert rules, as the chart renders them: `promtool check rules` and `promtool test rules`
(tests/chart/alerts_test.yaml, a unit test for every alert), plus runbook links that resolve."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import CHART, ROOT, by_kind, render
from tests.support.require import missing_dependency

RUNBOOK_BASE = "https://runbooks.example/azora"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool not installed (Debian package prometheus; hack/system-deps.sh)"
        missing_dependency(message)
    return path


def rendered_groups() -> list[dict[str, Any]]:
    objects = render(
        sets=[
            "monitoring.prometheusRule.enabled=true",
            f"monitoring.prometheusRule.runbookBaseUrl={RUNBOOK_BASE}/",
        ]
    )
    (rule,) = by_kind(objects, "PrometheusRule")
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("rules")
    (work / "azora-alerts.rendered.yaml").write_text(
        yaml.safe_dump({"groups": rendered_groups()}, sort_keys=False)
    )
    shutil.copy(Path(__file__).parent / "alerts_test.yaml", work / "alerts_test.yaml")
    return work


def test_promtool_check_rules(rules_dir: Path) -> None:
    for path in (
        rules_dir / "azora-alerts.rendered.yaml",
        CHART / "files/prometheus/azora-alerts.yaml",
    ):
        result = subprocess.run(
            [promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout


def test_promtool_unit_tests(rules_dir: Path) -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", "alerts_test.yaml"],
        cwd=rules_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test_and_a_runbook() -> None:
    alerts = [r for g in rendered_groups() for r in g["rules"] if "alert" in r]
    tests = yaml.safe_load((Path(__file__).parent / "alerts_test.yaml").read_text())
    tested = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    required = {
        "AzoraServiceDown",
        "AzoraHighErrorRate",
        "AzoraHighLatency",
        "AzoraRouteAllBackendsUnhealthy",
        "AzoraBackendEjectedLong",
        "AzoraLedgerVerifyFailed",
        "AzoraWaitlistOffersExpiring",
        "AzoraOperatorReconcileErrors",
    }
    names = {a["alert"] for a in alerts}
    assert required <= names
    assert names <= tested, f"alerts without a firing unit test: {names - tested}"
    for alert in alerts:
        url = alert["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_BASE + "/"), url
        page = ROOT / "docs" / "runbooks" / url.removeprefix(RUNBOOK_BASE + "/")
        assert page.is_file(), f"{alert['alert']}: missing runbook {page}"
        assert alert["alert"] in page.read_text(), f"{page} does not mention {alert['alert']}"
