"""`make up`, then the tour (`make demo`), then `make down`: one platform start, every step real.

The platform runs as `make up` runs it (hack/local.py, its own AZORA_LOCAL_DIR and
AZORA_PORT_BASE). Besides the tour this checks what `make up` promises around it: the example
catalog is seeded (and seeding again changes nothing), a student enrolled in the example cohort
ends `enrolled` with the charge in the ledger, Prometheus scrapes every process with the chart's
alert rules loaded, `azora.env` puts the built kubectl and helm first on PATH, and `status` /
`down` find the copy from AZORA_LOCAL_DIR alone (the port base is recorded).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from azora_devenv.procs import port_is_open
from azora_devenv.tools import bin_dir
from tests.support.require import missing_dependency, require_tools

ROOT = Path(__file__).resolve().parents[2]
LOCAL = [sys.executable, str(ROOT / "hack" / "local.py")]
ALERTS = ROOT / "charts" / "azora" / "files" / "prometheus" / "azora-alerts.yaml"
# base+1..5 services and operator, +6/+7 model backends, +9 Prometheus.
OFFSETS = (1, 2, 3, 4, 5, 6, 7, 9)

pytestmark = pytest.mark.e2e


def _free_base() -> int:
    for base in range(21300, 40000, 157):
        if not any(port_is_open("127.0.0.1", base + i) for i in OFFSETS):
            return base
    raise RuntimeError("no free port range")


def _processes_under(path: Path) -> list[str]:
    out = subprocess.run(
        ["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True, check=True
    )
    return [line for line in out.stdout.splitlines() if str(path) in line and "ps -eo" not in line]


def _read_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = value.strip('"')
    return env


@dataclass
class Platform:
    state: Path
    base: int
    env: dict[str, str]  # azora.env
    run_env: dict[str, str]  # the environment `make status` / `make down` get: no port base

    @property
    def api(self) -> httpx.Client:
        token = self.env["AZORA_API_TOKEN"]
        return httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30)


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    require_tools("etcd", "kube-apiserver", "kubectl", "helm")
    if shutil.which("prometheus") is None:
        missing_dependency("prometheus not installed (Debian package prometheus; make system-deps)")
    # Outside pytest's temp root, like the `outside_tmp` fixture (PostgreSQL runs as another
    # user when the tests run as root).
    state = Path(tempfile.mkdtemp(prefix="azora-demo-")) / "local"
    base = _free_base()
    run_env = {**os.environ, "AZORA_LOCAL_DIR": str(state)}
    run_env.pop("AZORA_PORT_BASE", None)
    started = time.monotonic()
    try:
        up = subprocess.run(
            [*LOCAL, "up"],
            env=run_env | {"AZORA_PORT_BASE": str(base)},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert up.returncode == 0, up.stdout + up.stderr
        print(f"make up: {time.monotonic() - started:.1f} s")
        yield Platform(state, base, _read_env(state / "azora.env"), run_env)
    finally:
        down = subprocess.run(
            [*LOCAL, "down"], env=run_env, capture_output=True, text=True, timeout=120, check=False
        )
        leftovers = _processes_under(state)
        shutil.rmtree(state.parent, ignore_errors=True)
    assert down.returncode == 0, down.stdout + down.stderr
    assert leftovers == []
    for offset in OFFSETS:
        assert not port_is_open("127.0.0.1", base + offset), f"port base+{offset} still open"


def test_status_finds_the_copy_from_its_state_dir(platform: Platform) -> None:
    # No AZORA_PORT_BASE: `status` reads the base `up` recorded in the state dir.
    status = subprocess.run(
        [*LOCAL, "status"], env=platform.run_env, capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0, status.stderr
    for name, offset in (("ledger", 2), ("operator", 5), ("model-b", 7), ("prometheus", 9)):
        line = next(x for x in status.stdout.splitlines() if x.split()[:1] == [name])
        assert f":{platform.base + offset}" in line and line.rstrip().endswith("ready"), line
    assert "NOT READY" not in status.stdout, status.stdout


def test_env_puts_the_built_kubectl_and_helm_first_on_path(platform: Platform) -> None:
    env_file = platform.state / "azora.env"
    found = subprocess.run(
        ["bash", "-c", f". {env_file} && command -v kubectl && command -v helm"],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert found == [str(bin_dir() / "kubectl"), str(bin_dir() / "helm")]
    assert platform.env["AZORA_LOCAL_DIR"] == str(platform.state)


def test_catalog_is_seeded_and_seeding_again_changes_nothing(platform: Platform) -> None:
    with platform.api as api:
        before = api.get(f"{platform.env['AZORA_PRICING_URL']}/v1/products/k8s-fundamentals")
        assert before.status_code == 200, before.text
        assert before.json()["prices"]["EUR"]["unitAmount"] == 49000
        again = subprocess.run(
            [sys.executable, str(ROOT / "hack" / "seed_catalog.py")],
            env={**os.environ, **platform.env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert again.returncode == 0, again.stderr
        lines = again.stdout.splitlines()
        assert lines and all(line.endswith(": unchanged") for line in lines), again.stdout
        after = api.get(f"{platform.env['AZORA_PRICING_URL']}/v1/products/k8s-fundamentals")
        assert after.json()["revision"] == before.json()["revision"]
        categories = api.get(f"{platform.env['AZORA_LEDGER_URL']}/v1/categories").json()
        assert "enrollment" in {c["code"] for c in categories["items"]}


def test_an_enrollment_in_the_example_cohort_is_charged(platform: Platform) -> None:
    cohort = yaml.safe_load((ROOT / "examples" / "enrollmentcohort.yaml").read_text())
    key = f"{cohort['metadata']['namespace']}/{cohort['metadata']['name']}"
    with platform.api as api:
        created = api.post(
            f"{platform.env['AZORA_ENROLLMENT_URL']}/v1/enrollments",
            json={"cohort": key, "student": {"id": "example-student", "segment": "student"}},
        )
        assert created.status_code == 201, created.text
        url = f"{platform.env['AZORA_ENROLLMENT_URL']}/v1/enrollments/{created.json()['id']}"
        deadline = time.monotonic() + 30
        while (doc := api.get(url).json())["state"] == "pending_payment":
            assert time.monotonic() < deadline, doc
            time.sleep(0.2)
        assert doc["state"] == "enrolled", doc
        assert (doc["payment"]["amount"], doc["payment"]["currency"]) == (49000, "EUR")
        tx = api.get(
            f"{platform.env['AZORA_LEDGER_URL']}/v1/transactions/{doc['payment']['transaction_id']}"
        ).json()
        assert tx["reference"] == f"enrollment:{doc['id']}"
        assert {p["direction"]: p["amount"] for p in tx["postings"]} == {
            "debit": 49000,
            "credit": 49000,
        }


def _prometheus(platform: Platform, path: str, **params: str) -> Any:
    answer = httpx.get(f"{platform.env['AZORA_PROMETHEUS_URL']}{path}", params=params, timeout=30)
    body = answer.json()
    assert body["status"] == "success", body
    return body["data"]


def test_prometheus_scrapes_everything_with_the_chart_rules(platform: Platform) -> None:
    assert platform.env["AZORA_PROMETHEUS_URL"] == f"http://127.0.0.1:{platform.base + 9}"
    wanted = {
        ("azora-enrollment", f"127.0.0.1:{platform.base + 1}"),
        ("azora-ledger", f"127.0.0.1:{platform.base + 2}"),
        ("azora-pricing", f"127.0.0.1:{platform.base + 3}"),
        ("azora-orchestrator", f"127.0.0.1:{platform.base + 4}"),
        ("azora-operator", f"127.0.0.1:{platform.base + 5}"),
        ("azora-model-backend", f"127.0.0.1:{platform.base + 6}"),
        ("azora-model-backend", f"127.0.0.1:{platform.base + 7}"),
    }
    deadline = time.monotonic() + 30
    while True:
        targets = _prometheus(platform, "/api/v1/targets")["activeTargets"]
        up = {(t["labels"]["job"], t["labels"]["instance"]) for t in targets if t["health"] == "up"}
        if up >= wanted or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert up == wanted, targets
    chart = yaml.safe_load(ALERTS.read_text())
    loaded = _prometheus(platform, "/api/v1/rules")["groups"]
    assert sorted(g["name"] for g in loaded) == sorted(g["name"] for g in chart["groups"])
    names = sorted(r["name"] for g in loaded for r in g["rules"])
    assert names == sorted(
        r.get("alert") or r["record"] for g in chart["groups"] for r in g["rules"]
    )
    # The runbook links point at this checkout's runbooks.
    runbooks = {
        r["annotations"]["runbook_url"]
        for g in loaded
        for r in g["rules"]
        if "runbook_url" in r.get("annotations", {})
    }
    assert runbooks and all(u.startswith((ROOT / "docs").as_uri()) for u in runbooks), runbooks


def test_the_tour(platform: Platform, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    started = time.monotonic()
    tour = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "demo.py"), "--report", str(report_path)],
        env={**os.environ, "AZORA_LOCAL_DIR": str(platform.state)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    print(tour.stdout)
    print(f"the tour: {time.monotonic() - started:.1f} s")
    assert tour.returncode == 0, tour.stdout[-3000:] + tour.stderr
    steps = json.loads(report_path.read_text())["steps"]
    assert list(steps) == ["cohort", "enroll", "quote", "ledger", "promote", "gateway", "weights"]
    assert steps["cohort"]["ready"] is True

    students = steps["enroll"]["students"]
    assert [students[n]["first"] for n in ("ana", "ben", "cy")] == [
        "pending_payment",
        "pending_payment",
        "waitlisted",
    ]
    assert students["cy"]["waitlist_position"] == 1
    assert students["ana"]["final"] == students["ben"]["final"] == "enrolled"
    assert students["ana"]["charge"] == 49000
    assert steps["enroll"]["cohort"] == {"seats_taken": 2, "capacity": 2, "waitlisted": 1}

    quote = steps["quote"]
    assert quote["applied"] == ["EARLYBIRD"]
    assert (quote["subtotal"], quote["discount"], quote["total"]) == (49000, 9800, 39200)

    ledger = steps["ledger"]
    assert ledger["transaction"]["category"] == "enrollment"
    assert sorted(p["direction"] for p in ledger["transaction"]["postings"]) == ["credit", "debit"]
    assert ledger["trial_balance"]["balanced"] is True

    promote = steps["promote"]
    assert (promote["dropped"], promote["promoted"]) == ("dropped", "enrolled")
    assert promote["refund_transaction"]
    assert promote["cohort"] == {"seats_taken": 2, "capacity": 2, "waitlisted": 0}
    assert sorted(map(tuple, promote["revenue_statement"])) == [
        ("reversal", "debit"),
        ("transfer", "credit"),
        ("transfer", "credit"),
        ("transfer", "credit"),
    ]
    assert promote["revenue_balance"] == 2 * 49000
    assert promote["trial_balance"]["balanced"] is True

    gateway = steps["gateway"]
    assert gateway["chat"]["completion_tokens"] > 0 and gateway["chat"]["text"].strip()
    assert gateway["embedding_dimensions"] == 384

    splits = steps["weights"]["splits"]
    assert splits == {
        "3:1": {"model-a": 6, "model-b": 2},
        "1:1": {"model-a": 4, "model-b": 4},
        "0:1": {"model-a": 0, "model-b": 8},
    }
    # The example route is back at 3:1.
    kubectl = subprocess.run(
        [
            str(bin_dir() / "kubectl"),
            "get", "aimodelroute", "embeddings", "-n", "default",
            "-o", "jsonpath={.spec.backends[*].weight}",
        ],
        env={**os.environ, "KUBECONFIG": platform.env["KUBECONFIG"]},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert kubectl.stdout.split() == ["3", "1"]
