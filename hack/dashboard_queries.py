"""Open the Grafana dashboards' queries in the local Prometheus (``make up``), without Grafana.

    python hack/dashboard_queries.py                  # every dashboard: panel, query, link
    python hack/dashboard_queries.py enrollment       # one dashboard (file name or title word)
    python hack/dashboard_queries.py --check ledger   # also run each query, print its series

Each query is rewritten the way Grafana would send it with every variable at "All":
``$__rate_interval`` becomes ``1m`` (four of the local Prometheus' 5 s scrapes, and more), any
other ``$variable`` the regex ``.*``. The link opens Prometheus' graph page with the query
(``AZORA_PROMETHEUS_URL``, from ``.local/azora.env``, or ``--prometheus``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "charts" / "azora" / "dashboards"
RATE_INTERVAL = "1m"


def to_promql(expr: str) -> str:
    expr = expr.replace("$__rate_interval", RATE_INTERVAL)
    return re.sub(r"\$\{?(\w+)\}?", ".*", expr)


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # panels inside a collapsed row


def queries(path: Path) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every query of the dashboard at ``path``."""
    dashboard = json.loads(path.read_text())
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield panel.get("title", "?"), to_promql(target["expr"])


def graph_link(prometheus: str, expr: str) -> str:
    params = {"g0.expr": expr, "g0.tab": "0", "g0.range_input": "30m"}
    return f"{prometheus.rstrip('/')}/graph?{urllib.parse.urlencode(params)}"


def default_prometheus() -> str | None:
    if os.environ.get("AZORA_PROMETHEUS_URL"):
        return os.environ["AZORA_PROMETHEUS_URL"]
    env_file = Path(os.environ.get("AZORA_LOCAL_DIR", ROOT / ".local")) / "azora.env"
    if env_file.exists():
        match = re.search(r"^export AZORA_PROMETHEUS_URL=(\S+)$", env_file.read_text(), re.M)
        if match:
            return match.group(1)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/dashboard_queries.py")
    parser.add_argument("dashboards", nargs="*", help="file names or title words (default: all)")
    parser.add_argument("--prometheus", default=default_prometheus())
    parser.add_argument("--check", action="store_true", help="run each query, count its series")
    args = parser.parse_args(argv)
    if not args.prometheus:
        parser.error("no Prometheus URL: `make up` first, or --prometheus URL")
    files = sorted(DASHBOARDS.glob("*.json"))
    if args.dashboards:
        wanted = [w.lower() for w in args.dashboards]
        files = [
            f
            for f in files
            if any(w in f.stem or w in json.loads(f.read_text())["title"].lower() for w in wanted)
        ]
        if not files:
            parser.error(f"no dashboard matches {args.dashboards}")
    failed = 0
    with httpx.Client(timeout=30) as client:
        for path in files:
            title = json.loads(path.read_text())["title"]
            print(f"# {title}  ({path.relative_to(ROOT)})")
            for panel, expr in queries(path):
                print(f"\n  {panel}\n    {expr}\n    {graph_link(args.prometheus, expr)}")
                if args.check:
                    answer = client.get(f"{args.prometheus}/api/v1/query", params={"query": expr})
                    body = answer.json()
                    if body.get("status") != "success":
                        failed += 1
                        print(f"    ERROR {body.get('error')}")
                    else:
                        print(f"    {len(body['data']['result'])} series")
            print()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
