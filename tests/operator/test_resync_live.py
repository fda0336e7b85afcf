"""Live insight through the services' change feeds (operator/src/azora_operator/live.py).

The operator under test resyncs only every 300 s (first firing after 300 s too), so a status
that follows a change within these tests' bounds was refreshed by the change feed, not the
timer. The bounds only stop a hang; the latency itself is measured in bench/operator.

The session's operator is stopped and started again around this module, so it sorts after
test_registration.py, whose metrics test reads the counters of the operator's first run.
"""

from __future__ import annotations

import http.server
import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from azora_devenv import LocalControlPlane, free_port
from tests.operator.kube import (
    OperatorProcess,
    apply,
    apply_and_wait,
    get_obj,
    unique,
    wait_for,
)
from tests.operator.objects import cohort, route, rule
from tests.support.services import API_TOKEN

FEED_ONLY = {"resync_interval": "300", "resync_initial_delay": "300"}
BOUND_S = 20.0  # far below the 300 s resync: only the feed explains an update


@pytest.fixture(scope="module")
def live_operator(
    operator: OperatorProcess,
    operator_kubeconfig: Path,
    service_urls: dict[str, str],
    work_root: Path,
) -> Iterator[OperatorProcess]:
    """The session's operator (1 s resync) stands down while these tests run."""
    operator.stop()
    own = OperatorProcess(operator_kubeconfig, service_urls, work_root, **FEED_ONLY)
    try:
        yield own.start()
    finally:
        own.stop()
        operator.start()


def _api(base: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {API_TOKEN}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status in (200, 201), resp.status
        return dict(json.loads(resp.read()))


def _status(kube: LocalControlPlane, kind: str, ns: str, name: str) -> dict[str, Any]:
    obj = get_obj(kube, kind, ns, name)
    return dict((obj or {}).get("status") or {})


def test_an_enrollment_shows_in_the_cohorts_status(
    kube: LocalControlPlane, live_operator: OperatorProcess, service_urls: dict[str, str], ns: str
) -> None:
    name, _ = apply_and_wait(kube, cohort(ns, capacity=5))
    assert _status(kube, "EnrollmentCohort", ns, name).get("enrolled", 0) == 0

    _api(service_urls["enrollment"], "POST", "/v1/enrollments", {
        "cohort": f"{ns}/{name}", "student": {"id": unique("student")},
    })  # fmt: skip

    status = wait_for(
        lambda: (s := _status(kube, "EnrollmentCohort", ns, name)).get("enrolled") == 1 and s,
        BOUND_S,
        what="status.enrolled = 1",
    )
    assert status["seats"] == "1/5"


def test_an_accepted_quote_shows_in_the_rules_redemptions(
    kube: LocalControlPlane, live_operator: OperatorProcess, service_urls: dict[str, str], ns: str
) -> None:
    pricing = service_urls["pricing"]
    sku, code = unique("sku"), unique("live")
    _api(pricing, "PUT", f"/v1/products/{sku}", {
        "name": sku, "prices": {"EUR": {"model": "perUnit", "unitAmount": 1000}},
    })  # fmt: skip
    obj = rule(
        ns,
        target={"products": [sku]},
        action={"percentOff": "10"},
        promotion={"code": code, "maxRedemptions": 3},
    )
    name, _ = apply_and_wait(kube, obj)
    assert (_status(kube, "PricingRule", ns, name).get("redemptions") or {}).get("used", 0) == 0

    quote = _api(pricing, "POST", "/v1/quotes", {
        "currency": "EUR", "lines": [{"product": sku, "quantity": 1}],
        "codes": [code.lower()], "customer": {"id": unique("customer")},
    })  # fmt: skip
    _api(pricing, "POST", f"/v1/quotes/{quote['id']}/accept")

    status = wait_for(
        lambda: (
            (s := _status(kube, "PricingRule", ns, name)).get("redemptions", {}).get("used") == 1
            and s
        ),
        BOUND_S,
        what="status.redemptions.used = 1",
    )
    assert status["redemptionsSummary"] == "1/3"


class _Models(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"object": "list", "data": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def _healthy(kube: LocalControlPlane, ns: str, name: str) -> dict[str, bool]:
    backends = _status(kube, "AIModelRoute", ns, name).get("backends") or []
    return {b["name"]: b.get("healthy") for b in backends}


def test_a_backend_going_down_shows_in_the_routes_status(
    kube: LocalControlPlane, live_operator: OperatorProcess, ns: str
) -> None:
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Models)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        obj = route(
            ns,
            backends=[{"name": "a", "url": f"http://127.0.0.1:{port}/v1"}],
            health={"activeCheck": {"interval": "500ms"}},
        )
        name = obj["metadata"]["name"]
        apply(kube, obj)
        # Created with its backend "unknown"; the first passing check is itself a change.
        wait_for(
            lambda: _healthy(kube, ns, name) == {"a": True},
            BOUND_S,
            what="backend a healthy in status",
        )
    finally:
        server.shutdown()
        server.server_close()

    wait_for(
        lambda: _healthy(kube, ns, name) == {"a": False},
        BOUND_S,
        what="backend a unhealthy in status",
    )
