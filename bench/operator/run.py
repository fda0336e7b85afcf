"""Operator benchmark (not a test): apply → live latency, live insight (a change in a service →
the resource's status, through the change feed), cold start with 500 resources, RSS.

    uv run python bench/operator/run.py [--samples 100] [--resources 500] [--live-samples 100]

Starts its own etcd + kube-apiserver, PostgreSQL, the three services and the operator as
processes on 127.0.0.1, and writes bench/results/operator-<date>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from azora_devenv import LocalControlPlane, LocalPostgres  # noqa: E402
from tests.operator.kube import CRDS, OperatorProcess, kubectl_ok  # noqa: E402
from tests.operator.objects import cohort, route, rule  # noqa: E402
from tests.support.services import ADMIN_TOKEN, API_TOKEN, ServiceProcess  # noqa: E402

GROUP = "/apis/azora.io/v1alpha1"
PLURAL = {
    "PricingRule": "pricingrules",
    "AIModelRoute": "aimodelroutes",
    "EnrollmentCohort": "enrollmentcohorts",
}
ADMIN = {"PricingRule": "pricing-rules", "AIModelRoute": "routes", "EnrollmentCohort": "cohorts"}
SERVICE = {
    "PricingRule": "pricing",
    "AIModelRoute": "orchestrator",
    "EnrollmentCohort": "enrollment",
}


def _get(url: str) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


def _create(kube: LocalControlPlane, obj: dict[str, Any]) -> None:
    ns = obj["metadata"]["namespace"]
    resp = kube.request("POST", f"{GROUP}/namespaces/{ns}/{PLURAL[obj['kind']]}", obj)
    assert resp.status == 201, resp


def _post(url: str, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST")
    req.add_header("Authorization", f"Bearer {API_TOKEN}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status in (200, 201), resp.status


def _load() -> str:
    one, five, _ = Path("/proc/loadavg").read_text().split()[:3]
    return f"load average {one} (1 min), {five} (5 min) on {os.cpu_count()} CPUs"


def _live_insight(kube: LocalControlPlane, enrollment_url: str, samples: int) -> list[float]:
    """Enroll one student at a time; time until the cohort's status.enrolled shows it."""
    kubectl_ok(kube, "create", "namespace", "live")
    obj = cohort("live", capacity=samples + 10)
    name = obj["metadata"]["name"]
    _create(kube, obj)
    path = f"{GROUP}/namespaces/live/enrollmentcohorts/{name}"

    def enrolled() -> int | None:
        status = kube.request("GET", path).json().get("status") or {}
        value = status.get("enrolled")
        return value if isinstance(value, int) else None

    while enrolled() != 0:
        time.sleep(0.05)
    latencies = []
    for i in range(samples):
        started = time.perf_counter()
        _post(f"{enrollment_url}/v1/enrollments", {
            "cohort": f"live/{name}", "student": {"id": f"bench-{i}"},
        })  # fmt: skip
        while enrolled() != i + 1:
            if time.perf_counter() - started > 120:
                raise SystemExit(f"live insight: status.enrolled never reached {i + 1}")
            time.sleep(0.01)
        latencies.append(time.perf_counter() - started)
        print(f"live insight {i + 1}/{samples}: {latencies[-1] * 1000:.0f} ms", file=sys.stderr)
        time.sleep(0.05)
    return latencies


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _make(kind: str, ns: str) -> dict[str, Any]:
    return {"PricingRule": rule, "AIModelRoute": route, "EnrollmentCohort": cohort}[kind](ns)


def _not_ready(kube: LocalControlPlane, ns: str) -> dict[str, int]:
    """Resources of ``ns`` not Ready, counted by "kind: reason: message"."""
    waiting: dict[str, int] = {}
    for kind, plural in PLURAL.items():
        items = kube.request("GET", f"{GROUP}/namespaces/{ns}/{plural}").json()["items"]
        for item in items:
            conditions = (item.get("status") or {}).get("conditions") or []
            ready = next((c for c in conditions if c["type"] == "Ready"), None)
            if ready is None or ready["status"] != "True":
                why = "no Ready condition" if ready is None else ready.get("message", "")
                label = f"{kind}: {why}"
                waiting[label] = waiting.get(label, 0) + 1
    return waiting


# A cold start that takes this long is a failure to report, not a figure to wait for.
COLD_START_DEADLINE_S = 300.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--resources", type=int, default=500)
    parser.add_argument("--live-samples", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="azora-operator-bench-"))
    kinds = list(PLURAL)
    with LocalPostgres(work / "pg", fast=True) as pg, LocalControlPlane(work / "kube") as kube:
        kubectl_ok(kube, "apply", "-f", str(CRDS))
        kubectl_ok(kube, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        services: dict[str, ServiceProcess] = {}
        op: OperatorProcess | None = None
        try:
            for name in ("pricing", "orchestrator", "enrollment"):
                pg.create_database(f"bench_{name}")
                env = {}
                if name == "enrollment":
                    env = {
                        "ENROLLMENT_PRICING_URL": services["pricing"].url,
                        "ENROLLMENT_SERVICE_TOKEN": API_TOKEN,
                    }
                services[name] = ServiceProcess(
                    name, pg.url(f"bench_{name}"), work, env=env
                ).start()
            urls = {n: s.url for n, s in services.items()}
            settings = {
                "log_level": "WARNING",
                "resync_interval": "30",
                "resync_initial_delay": "5",
            }
            op = OperatorProcess(kube.kubeconfig, urls, work, **settings).start()

            # 1. apply → live in the service, one resource at a time, kinds round-robin.
            kubectl_ok(kube, "create", "namespace", "latency")
            latencies: dict[str, list[float]] = {k: [] for k in kinds}
            for i in range(args.samples):
                kind = kinds[i % 3]
                obj = _make(kind, "latency")
                status_url = (
                    f"{urls[SERVICE[kind]]}/admin/v1/{ADMIN[kind]}/latency/"
                    f"{obj['metadata']['name']}/status"
                )
                started = time.perf_counter()
                _create(kube, obj)
                while _get(status_url) != 200:
                    time.sleep(0.002)
                latencies[kind].append(time.perf_counter() - started)
            everything = [v for vs in latencies.values() for v in vs]

            # 2. live insight: a change in the service → the resource's status (the resync
            # interval is 30 s: only the change feed explains an update within seconds).
            live = _live_insight(kube, urls["enrollment"], args.live_samples)
            load = _load()

            # 3. cold start: N resources created while the operator is down (--resources 0:
            # a smoke run of the first two scenarios only).
            op.stop()
            cold_start_s = rss_mb = float("nan")
            if args.resources:
                kubectl_ok(kube, "create", "namespace", "cold")
                for i in range(args.resources):
                    _create(kube, _make(kinds[i % 3], "cold"))
                started = time.perf_counter()
                op = OperatorProcess(kube.kubeconfig, urls, work, **settings)
                op.process.start()
                while waiting := _not_ready(kube, "cold"):
                    if time.perf_counter() - started > COLD_START_DEADLINE_S:
                        raise SystemExit(
                            f"cold start: not all Ready after {COLD_START_DEADLINE_S:.0f} s: "
                            + json.dumps(waiting)
                        )
                    time.sleep(0.25)
                cold_start_s = time.perf_counter() - started
                assert op.process.pid is not None
                time.sleep(2)
                rss_mb = _rss_mb(op.process.pid)
                op.stop()
        finally:
            if op is not None:
                op.stop()
            for svc in services.values():
                svc.stop()

    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.python_version()}, shared 2-core box",
        "apply_to_live": {
            "samples": len(everything),
            "p50_ms": round(statistics.median(everything) * 1000, 1),
            "p99_ms": round(_percentile(everything, 0.99) * 1000, 1),
            "max_ms": round(max(everything) * 1000, 1),
            "p50_ms_by_kind": {
                k: round(statistics.median(v) * 1000, 1) for k, v in latencies.items()
            },
        },
        "live_insight": {
            "what": "POST /v1/enrollments -> EnrollmentCohort status.enrolled, resync 30 s",
            "samples": len(live),
            "p50_ms": round(statistics.median(live) * 1000, 1),
            "p99_ms": round(_percentile(live, 0.99) * 1000, 1),
            "max_ms": round(max(live) * 1000, 1),
            "load": load,
        },
        "cold_start": {"resources": args.resources, "all_ready_s": round(cold_start_s, 2)},
        "operator_rss_mb": round(rss_mb, 1),
        "targets": {
            "p50_ms": 300,
            "p99_ms": 1000,
            "live_insight_p99_ms": 2000,
            "all_ready_s": 30,
            "rss_mb": 150,
        },
    }
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    out = ROOT / "bench" / "results" / f"operator-{stamp}"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    a = result["apply_to_live"]
    li = result["live_insight"]
    md = f"""# Operator benchmark, {result["date"]}

`uv run python bench/operator/run.py --samples {args.samples} --resources {args.resources} \
--live-samples {args.live_samples}` on {result["machine"]}; during the live-insight scenario:
{li["load"]}.

| measure | result | target |
|---|---|---|
| apply → live in the service, p50 ({a["samples"]} samples) | {a["p50_ms"]} ms | ≤ 300 ms |
| apply → live, p99 | {a["p99_ms"]} ms | ≤ 1000 ms |
| enrollment → cohort status, p50 ({li["samples"]} samples) | {li["p50_ms"]} ms | |
| enrollment → cohort status, p99 | {li["p99_ms"]} ms | ≤ 2000 ms |
| {args.resources} mixed resources all Ready after a cold start | {cold_start_s:.1f} s | ≤ 30 s |
| operator RSS with {args.resources} resources | {rss_mb:.0f} MB | ≤ 150 MB |

p50 by kind (ms): {json.dumps(a["p50_ms_by_kind"])}

Where the cold start and the memory go, and the before/after of the tuning: docs/operator.md
(Performance); `uv run python bench/operator/profile.py` breaks a cold start down.
"""
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
