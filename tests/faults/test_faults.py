"""The fault suite: the whole platform as real processes, a mixed workload running, and one
fault at a time — kill -9 of each service (then restarted), a PostgreSQL restart, an API
server + etcd restart, the operator killed while it applies a changed resource, and the
gateway's model backends killed (one, then both).

After every fault, and once more at the end, the invariants hold:

* ledger ``verify`` passes; every transfer the ledger accepted (a 2xx) is there exactly once
  (looked up by its unique reference); every enrollment charge is there exactly once;
* no cohort holds more seats than its capacity, every accepted enrollment is stored once, and
  the promotion's redemption count equals the accepts that answered with it;
* every custom resource is Ready at its generation, with its spec live in the owning service
  (the service's admin GET);
* every gateway error (a non-2xx answer or no answer) happened while the gateway process was
  down or no backend of the route was healthy. The second window is measured from outside: it
  opens when the last live backend process is killed and closes when a backend process is up
  again *and* the gateway's route status reports a healthy backend (polled every 0.1 s).

Recovery times (fault → first success of the affected traffic, fault → every resource
converged) are printed and, with ``AZORA_FAULTS_OUT=<dir>``, written there as
``faults-<date>.md``. Figures, not assertions: the tests assert invariants, never speed.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.faults.platform import Platform, http_json
from tests.faults.workload import CREDIT, DEBIT, PROMO, Workload
from tests.support.require import in_ci, missing_dependency, require_tools
from tests.support.services import ADMIN_TOKEN

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PRODUCT_PRICE = 49_900  # minor units, EUR
TINY = {
    "apiVersion": "azora.io/v1alpha1",
    "kind": "EnrollmentCohort",
    "metadata": {"name": "faults-tiny", "namespace": "default"},
    "spec": {
        "course": "faults-tiny",
        "title": "A cohort the workload fills",
        "capacity": 5,
        "opensAt": "2025-01-01T00:00:00Z",
        "closesAt": "2030-03-01T00:00:00Z",
        "waitlist": {"enabled": True, "capacity": 3},
        "pricing": {"product": "k8s-fundamentals", "currency": "EUR"},
    },
}


@dataclass
class Window:
    label: str
    start: float
    end: float | None = None


@dataclass
class Run:
    platform: Platform
    workload: Workload
    docs: list[dict[str, Any]]
    windows: list[Window] = field(default_factory=list)
    recoveries: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def doc(self, kind: str, name: str) -> dict[str, Any]:
        return next(d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    require_tools("etcd", "kube-apiserver", "kubectl")
    # Outside pytest's temp root: PostgreSQL runs as another user when we are root.
    begun = time.time()
    work = Path(tempfile.mkdtemp(prefix="azora-faults-"))
    platform = Platform(work)
    workload: Workload | None = None
    try:
        try:
            platform.start()
        except Exception as exc:
            if "PostgreSQL" in type(exc).__name__ and not in_ci():
                missing_dependency(f"no PostgreSQL: {exc}")
            raise
        urls = {name: proc.url for name, proc in platform.services.items()}
        _seed(urls)
        ports = {name: stub.port for name, stub in platform.stubs.items()}
        from tests.faults.platform import examples

        docs = [*examples(ports), TINY]
        platform.apply(docs)
        _wait_converged(platform, docs, time.time(), timeout=90)
        cohorts = [
            f"default/{d['metadata']['name']}" for d in docs if d["kind"] == "EnrollmentCohort"
        ]
        workload = Workload(urls, cohorts)
        workload.start()
        yield Run(platform, workload, docs, started=begun)
    finally:
        if workload is not None:
            workload.stop()
        platform.stop_all()
        if os.environ.get("AZORA_FAULTS_KEEP"):
            print(f"\nfault suite logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _seed(urls: dict[str, str]) -> None:
    status, body = http_json(
        "PUT",
        f"{urls['pricing']}/v1/products/k8s-fundamentals",
        {
            "name": "Kubernetes Fundamentals",
            "prices": {"EUR": {"model": "perUnit", "unitAmount": PRODUCT_PRICE}},
        },
    )
    assert status in (200, 201), body
    for code, kind in [(DEBIT, "asset"), (CREDIT, "revenue")]:
        status, body = http_json(
            "POST", f"{urls['ledger']}/v1/accounts", {"code": code, "type": kind, "currency": "EUR"}
        )
        assert status == 201, body


def _wait_converged(
    platform: Platform, docs: list[dict[str, Any]], t0: float, timeout: float = 60
) -> float:
    """Seconds from ``t0`` (wall clock) until every resource is Ready with its spec live."""
    deadline = time.monotonic() + timeout
    problems: list[str] = []
    while time.monotonic() < deadline:
        try:
            problems = platform.not_converged(docs)
        except (OSError, AssertionError, KeyError) as exc:  # a service or the API still down
            problems = [repr(exc)]
        if not problems:
            return time.time() - t0
        time.sleep(0.2)
    raise AssertionError(f"not converged {timeout:.0f}s after the fault: {problems}")


def _record(run: Run, fault: str, t0: float, **figures: float | str | None) -> None:
    row = {"fault": fault, **dict(figures.items())}
    run.recoveries.append(row)
    shown = ", ".join(
        f"{k} {v:.2f}s" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()
    )
    print(f"\n[fault] {fault}: {shown}")


# -- invariants ------------------------------------------------------------------------------


def check_invariants(run: Run) -> None:
    platform, workload = run.platform, run.workload
    urls = {name: proc.url for name, proc in platform.services.items()}
    # Ledger: verify, then every accepted transfer exactly once.
    status, body = http_json(
        "POST", f"{urls['ledger']}/admin/v1/verify", token=ADMIN_TOKEN, timeout=30
    )
    assert status == 200 and body["ok"], f"ledger verify failed: {body}"
    # The record first, then the ledger: a transfer accepted in between is not in the record.
    transfers = workload.snapshot("transfer")
    stored = _references_on(urls["ledger"], DEBIT)
    for op in transfers:
        if not op.attempts or (op.status is None and op.attempts[-1].ended > time.time() - 5):
            continue  # still in flight
        found = stored.get(op.key, 0)
        if op.accepted:
            assert found == 1, f"accepted transfer {op.key} is there {found} times"
        else:
            assert found <= 1, f"unanswered transfer {op.key} applied {found} times"
    # Cohorts: never over capacity; every accepted enrollment stored once.
    for doc in run.docs:
        if doc["kind"] != "EnrollmentCohort":
            continue
        name = doc["metadata"]["name"]
        status, st = http_json(
            "GET", f"{urls['enrollment']}/admin/v1/cohorts/default/{name}/status", token=ADMIN_TOKEN
        )
        assert status == 200, st
        held = st["enrolled"] + st["pending_payment"] + st["offered"]
        assert held <= st["capacity"], f"cohort {name} over capacity: {st}"
    accepted_enrollments = [op for op in workload.snapshot("enrollment") if op.accepted]
    ids = [op.result["id"] for op in accepted_enrollments if op.status == 201]
    assert len(ids) == len(set(ids)), "one enrollment id answered for two keys"
    # Promotion: the redemptions counted are exactly the accepts that answered with the code.
    status, rule = http_json(
        "GET",
        f"{urls['pricing']}/admin/v1/pricing-rules/default/early-bird-k8s/status",
        token=ADMIN_TOKEN,
    )
    assert status == 200, rule
    redeemed = {
        op.result["id"]
        for op in workload.snapshot("accept")
        # Codes are case-insensitive; the accept answers them normalised.
        if op.accepted and PROMO.lower() in {c.lower() for c in op.result.get("redemptions") or []}
    }
    in_flight = [op for op in workload.snapshot("accept") if op.status is None]
    used = rule["redemptions"]["used"]
    assert len(redeemed) <= used <= len(redeemed) + len(in_flight), (
        f"promotion counted {used} redemptions for {len(redeemed)} accepted"
        f" (+{len(in_flight)} unanswered)"
    )
    assert used <= rule["redemptions"]["limit"]
    # Custom resources: Ready at their generation, spec live in the service.
    _wait_converged(platform, run.docs, time.time(), timeout=60)
    # Gateway: errors only inside an outage window.
    check_gateway_errors(run)


def _get(url: str) -> Any:
    """GET as a client would: a 5xx or no answer is retried for a while."""
    deadline = time.monotonic() + 30
    while True:
        try:
            status, body = http_json("GET", url, timeout=10)
        except OSError as exc:
            status, body = None, repr(exc)
        if status == 200:
            return body
        assert status is None or status >= 500, f"GET {url}: {status} {body}"
        assert time.monotonic() < deadline, f"GET {url}: {status} {body}"
        time.sleep(0.5)


def _references_on(ledger: str, account: str) -> Counter[str]:
    """How many transactions carry each reference, over every transaction on ``account``."""
    seen: Counter[str] = Counter()
    cursor = ""
    while True:
        page = _get(f"{ledger}/v1/transactions?account={account}&limit=500{cursor}")
        seen.update(item["reference"] for item in page["items"])
        if not page.get("next_cursor"):
            return seen
        cursor = f"&cursor={page['next_cursor']}"


def _transactions_by_reference(ledger: str, reference: str) -> int:
    return len(_get(f"{ledger}/v1/transactions?reference={reference}")["items"])


def check_gateway_errors(run: Run) -> None:
    now = time.time()
    windows = [(w.start, w.end if w.end is not None else now) for w in run.windows]
    outside = []
    for op in run.workload.snapshot("chat"):
        for attempt in op.attempts:
            if attempt.status is not None and 200 <= attempt.status < 300:
                continue
            if not any(a <= attempt.ended and attempt.started <= b for a, b in windows):
                outside.append(attempt)
    assert not outside, f"{len(outside)} gateway errors outside any outage window: {outside[:5]}"


# -- faults (pytest runs them in file order on the one platform) ------------------------------


def test_baseline(run: Run) -> None:
    run.workload.wait_success_after({"transfer", "enrollment", "accept", "chat"}, time.time() - 60)
    time.sleep(2)
    check_invariants(run)


KIND_OF = {
    "ledger": "transfer",
    "pricing": "quote",
    "enrollment": "enrollment",
    "orchestrator": "chat",
}


@pytest.mark.parametrize("service", ["ledger", "pricing", "enrollment", "orchestrator"])
def test_kill9_service(run: Run, service: str) -> None:
    platform = run.platform
    t0 = time.time()
    window = Window(f"{service} down", t0) if service == "orchestrator" else None
    if window:
        run.windows.append(window)
    platform.kill_service(service)
    time.sleep(0.5)  # the workload meets the dead port
    platform.restart_service(service)
    t_ready = time.time()
    if window:
        window.end = t_ready
    t_ok = run.workload.wait_success_after({KIND_OF[service]}, t0)
    converged = _wait_converged(platform, run.docs, t0)
    _record(
        run,
        f"kill -9 {service}",
        t0,
        ready=t_ready - t0,
        first_success=t_ok - t0,
        converged=converged,
    )
    check_invariants(run)


def test_restart_postgres(run: Run) -> None:
    platform = run.platform
    t0 = time.time()
    platform.pg.stop()
    time.sleep(0.5)
    platform.pg.start()
    t_up = time.time()
    firsts = {
        kind: run.workload.wait_success_after({kind}, t_up) - t0
        for kind in ("transfer", "enrollment", "quote", "chat")
    }
    converged = _wait_converged(platform, run.docs, t0)
    _record(
        run,
        "PostgreSQL restart",
        t0,
        postgres_up=t_up - t0,
        first_transfer=firsts["transfer"],
        first_enrollment=firsts["enrollment"],
        first_quote=firsts["quote"],
        converged=converged,
    )
    check_invariants(run)


def _changed(
    run: Run, kind: str, name: str, change: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    doc = run.doc(kind, name)
    change(doc["spec"])
    return doc


def test_restart_apiserver_and_etcd(run: Run) -> None:
    platform = run.platform
    t0 = time.time()
    platform.cp.stop()
    platform.cp.start()
    t_up = time.time()
    # A change made as soon as the API is back must reach the service: the operator's watch
    # has to have come back on its own.
    rule = _changed(
        run, "PricingRule", "early-bird-k8s", lambda s: s.update(priority=s["priority"] + 1)
    )
    platform.apply([rule])
    converged = _wait_converged(platform, run.docs, t0)
    if not (platform.operator and platform.operator.is_running()):
        run.notes.append("the operator exited during the API server restart")
    _record(run, "kube-apiserver + etcd restart", t0, apiserver_up=t_up - t0, converged=converged)
    check_invariants(run)


def test_kill_operator_mid_reconcile(run: Run) -> None:
    platform = run.platform
    assert platform.operator is not None
    cohort = _changed(
        run,
        "EnrollmentCohort",
        "k8s-fundamentals-2027-spring",
        lambda s: s.update(capacity=s["capacity"] + 5),
    )
    route = _changed(run, "AIModelRoute", "tutor", lambda s: s["backends"][1].update(weight=2))
    platform.apply([cohort, route])
    t0 = time.time()
    time.sleep(0.05)  # the watch event is in; the handlers are calling the services
    platform.kill9(platform.operator)
    platform.start_operator()
    t_up = time.time()
    converged = _wait_converged(platform, run.docs, t0)
    _record(run, "operator kill -9 mid-reconcile", t0, operator_up=t_up - t0, converged=converged)
    check_invariants(run)


def _route_healthy(run: Run) -> bool:
    status, body = http_json(
        "GET",
        f"{run.platform.services['orchestrator'].url}/admin/v1/routes/default/tutor/status",
        token=ADMIN_TOKEN,
    )
    return status == 200 and body["healthy"] > 0


def test_kill_one_backend(run: Run) -> None:
    # One backend left healthy: the gateway must answer every request (no window opens).
    stub = run.platform.stubs["model-b"]
    t0 = time.time()
    run.platform.kill9(stub.process)
    time.sleep(3)
    stub.start()
    _record(
        run,
        "kill -9 one model backend (model-b)",
        t0,
        first_success=run.workload.wait_success_after({"chat"}, t0) - t0,
    )
    check_invariants(run)


def test_kill_both_backends(run: Run) -> None:
    stubs = run.platform.stubs
    run.platform.kill9(stubs["model-b"].process)
    t0 = time.time()
    window = Window("no healthy backend", t0)
    run.windows.append(window)
    run.platform.kill9(stubs["model-a"].process)
    time.sleep(2)
    for stub in stubs.values():
        stub.start()
    t_up = time.time()
    deadline = time.monotonic() + 60
    while not _route_healthy(run):
        assert time.monotonic() < deadline, "the route never reported a healthy backend again"
        time.sleep(0.1)
    window.end = time.time()
    t_ok = run.workload.wait_success_after({"chat"}, t0)
    _record(
        run,
        "kill -9 both model backends",
        t0,
        backends_up=t_up - t0,
        route_healthy=window.end - t0,
        first_success=t_ok - t0,
    )
    check_invariants(run)


def test_final_invariants_and_report(run: Run) -> None:
    run.workload.stop()
    platform = run.platform
    urls = {name: proc.url for name, proc in platform.services.items()}
    # The outbox drains: no charge stays pending, each charge is in the ledger exactly once.
    deadline = time.monotonic() + 60
    while True:
        pending = 0
        for doc in run.docs:
            if doc["kind"] == "EnrollmentCohort":
                _, st = http_json(
                    "GET",
                    f"{urls['enrollment']}/admin/v1/cohorts/default/{doc['metadata']['name']}/status",
                    token=ADMIN_TOKEN,
                )
                pending += st["pending_payment"]
        if pending == 0:
            break
        assert time.monotonic() < deadline, f"{pending} charges still pending after 60 s"
        time.sleep(0.5)
    charged = 0
    for op in run.workload.snapshot("enrollment"):
        if op.status != 201:
            continue
        enrollment = _get(f"{urls['enrollment']}/v1/enrollments/{op.result['id']}")
        found = _transactions_by_reference(urls["ledger"], f"enrollment:{enrollment['id']}")
        if enrollment["state"] == "enrolled":
            assert found == 1, f"enrollment {enrollment['id']} charged {found} times"
            charged += 1
        elif enrollment["state"] in ("waitlisted", "offered"):
            assert found == 0, f"waitlisted enrollment {enrollment['id']} charged"
    check_invariants(run)
    counts = {
        kind: len(run.workload.snapshot(kind))
        for kind in ("transfer", "enrollment", "quote", "accept", "chat")
    }
    accepted = {kind: sum(op.accepted for op in run.workload.snapshot(kind)) for kind in counts}
    chat_errors = sum(
        1
        for op in run.workload.snapshot("chat")
        for a in op.attempts
        if a.status is None or not 200 <= a.status < 300
    )
    duration = time.time() - run.started
    report = _report(run, counts, accepted, charged, chat_errors, duration)
    print("\n" + report)
    out = os.environ.get("AZORA_FAULTS_OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"faults-{dt.date.today().isoformat()}.md").write_text(report)


def _statuses(run: Run, kind: str) -> str:
    seen = Counter(str(op.status) for op in run.workload.snapshot(kind))
    return ", ".join(f"{status}: {n}" for status, n in sorted(seen.items()))


def _report(
    run: Run,
    counts: dict[str, int],
    accepted: dict[str, int],
    charged: int,
    chat_errors: int,
    duration: float,
) -> str:
    lines = [
        "| fault | recovery (seconds from the fault) |",
        "|---|---|",
    ]
    for row in run.recoveries:
        figures = ", ".join(
            f"{k.replace('_', ' ')} {v:.2f}"
            for k, v in row.items()
            if k != "fault" and isinstance(v, float)
        )
        lines.append(f"| {row['fault']} | {figures} |")
    lines += [
        "",
        "| traffic | requests | accepted (2xx) | final answers by status |",
        "|---|---|---|---|",
        *[
            f"| {kind} | {counts[kind]} | {accepted[kind]} | {_statuses(run, kind)} |"
            for kind in counts
        ],
        "",
        f"Enrollment charges in the ledger, each exactly once: {charged}.",
        f"Gateway attempts that failed: {chat_errors}, all inside the outage windows: "
        + "; ".join(
            f"{w.label} {w.start - run.started:.1f}-{(w.end or 0) - run.started:.1f}s"
            for w in run.windows
        ),
        f"Platform up + faults + checks: {duration:.0f} s.",
        *run.notes,
    ]
    return "\n".join(lines) + "\n"
