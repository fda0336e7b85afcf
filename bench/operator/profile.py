"""Where the operator's cold start and memory go (a diagnostic, not the benchmark).

    uv run python bench/operator/profile.py [--resources 500] [--arena 2] [--no-trace]

Creates N resources while the operator is down, starts it (under tracemalloc unless
``--no-trace``), and prints: time until all are Ready, RSS, the operator's API-server requests
by verb/resource (from an audit log), the top allocation sites and the asyncio tasks.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "operator"))

from run import PLURAL, _all_ready, _create, _make, _rss_mb  # noqa: E402

from azora_devenv import LocalControlPlane, LocalPostgres, ManagedProcess  # noqa: E402
from tests.operator.kube import CRDS, OperatorProcess, kubectl_ok  # noqa: E402
from tests.support.services import API_TOKEN, ServiceProcess  # noqa: E402

POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resources", type=int, default=500)
    parser.add_argument("--arena", default="")
    parser.add_argument("--no-trace", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, audit)")
    parser.add_argument(
        "--set", action="append", default=[], help="operator setting, e.g. kube_connections=64"
    )
    parser.add_argument("--settle", type=float, default=40.0, help="seconds after Ready")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="azora-operator-profile-"))
    (work / "kube").mkdir()
    policy = work / "policy.yaml"
    policy.write_text(POLICY)
    audit = work / "audit.log"
    cp = LocalControlPlane(
        work / "kube",
        extra_apiserver_args=[
            f"--audit-policy-file={policy}",
            f"--audit-log-path={audit}",
            "--audit-log-format=json",
        ],
    )
    kinds = list(PLURAL)
    with LocalPostgres(work / "pg", fast=True) as pg, cp as kube:
        kubectl_ok(kube, "apply", "-f", str(CRDS))
        kubectl_ok(kube, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        services: dict[str, ServiceProcess] = {}
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
            kubectl_ok(kube, "create", "namespace", "cold")
            for i in range(args.resources):
                _create(kube, _make(kinds[i % 3], "cold"))
            op = OperatorProcess(
                kube.kubeconfig,
                urls,
                work,
                log_level="WARNING",
                resync_interval="30",
                resync_initial_delay="5",
                **dict(item.split("=", 1) for item in args.set),
            )
            env = dict(op.process.env or {})
            env["AZORA_PROFILE_OUT"] = str(work / "profile.txt")
            if args.arena:
                env["MALLOC_ARENA_MAX"] = args.arena
            argv = (
                [str(Path(sys.executable).parent / "azora-operator"), "run"]
                if args.no_trace
                else [sys.executable, str(ROOT / "bench/operator/traced.py")]
            )
            proc = ManagedProcess("op", argv, log_path=work / "op.log", env=env)
            audit_start = audit.stat().st_size if audit.exists() else 0
            started = time.perf_counter()
            proc.start()
            while _all_ready(kube, "cold", args.resources) < args.resources:
                time.sleep(0.25)
            ready_s = time.perf_counter() - started
            assert proc.pid is not None
            rss_ready = _rss_mb(proc.pid)
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            ready_audit = audit.stat().st_size
            time.sleep(args.settle)
            rss = _rss_mb(proc.pid)
            if not args.no_trace:
                os.kill(proc.pid, signal.SIGUSR1)
                time.sleep(3)
            proc.stop()
        finally:
            for svc in services.values():
                svc.stop()

    def count(lo: int, hi: int) -> collections.Counter[str]:
        c: collections.Counter[str] = collections.Counter()
        with audit.open("rb") as fh:
            fh.seek(lo)
            data = fh.read(hi - lo)
        for line in data.splitlines():
            ev = json.loads(line)
            if "kubectl" in ev.get("userAgent", "") or "urllib" in ev.get("userAgent", ""):
                continue
            ref = ev.get("objectRef", {})
            key = f"{ev['verb']} {ref.get('resource', ev.get('requestURI', ''))}"
            if ref.get("subresource"):
                key += "/" + ref["subresource"]
            c[key] += 1
        return c

    print(
        f"all {args.resources} Ready after {ready_s:.1f} s; RSS {rss_ready:.0f} MB at Ready, "
        f"{rss:.0f} MB after {args.settle:.0f} s more; operator CPU {cpu_s:.1f} s until Ready"
    )
    print("operator API requests until Ready:")
    for key, n in count(audit_start, ready_audit).most_common():
        print(f"  {n:6d} {key}")
    print(f"operator API requests in the {args.settle:.0f} s after:")
    for key, n in count(ready_audit, audit.stat().st_size).most_common():
        print(f"  {n:6d} {key}")
    if (work / "profile.txt").exists():
        print((work / "profile.txt").read_text())
    if args.keep:
        print(f"work dir {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
