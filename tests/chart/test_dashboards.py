"""Grafana dashboards: well-formed, shipped as sidecar ConfigMaps, and every panel query runs
against a real Prometheus scraping the real services and operator started here, with data for
the core panels. No panel may query a metric that no process exports."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from azora_devenv import LocalControlPlane
from azora_devenv.procs import ManagedProcess, free_port
from tests.chart.conftest import CHART, ROOT, by_kind, render
from tests.support.pg import PostgresServer
from tests.support.require import missing_dependency, require_tools
from tests.support.services import ADMIN_TOKEN, API_TOKEN, ServiceProcess, venv_script

DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
REQUIRED = {"overview", "ai-orchestrator", "ledger", "pricing", "enrollment", "operator"}

# Panels that must return data after the traffic below: (dashboard file stem, panel title).
CORE_PANELS = {
    ("overview", "Targets up"),
    ("overview", "Running versions"),
    ("overview", "Requests/s by service"),
    ("overview", "In flight by service"),
    ("overview", "p50 latency by service"),
    ("overview", "p95 latency by service"),
    ("overview", "p99 latency by service"),
    ("overview", "AI gateway calls/s by status"),
    ("overview", "AI gateway client error ratio (5xx)"),
    ("overview", "AI gateway tries/s by outcome"),
    ("ai-orchestrator", "Requests/s by route and backend"),
    ("ai-orchestrator", "Duration p50 / p95 / p99"),
    ("ai-orchestrator", "Time to first token p50 / p95 / p99"),
    ("ai-orchestrator", "Tokens/s by type"),
    ("ai-orchestrator", "Health (1 = may receive traffic)"),
    ("ai-orchestrator", "Effective weight"),
    ("ai-orchestrator", "In flight"),
    ("ledger", "Requests/s by route"),
    ("ledger", "Latency p50 / p95 / p99"),
    ("ledger", "Pending transactions"),
    ("pricing", "Requests/s by route"),
    ("pricing", "Latency p50 / p95 / p99"),
    ("enrollment", "Requests/s by route"),
    ("enrollment", "Seats taken / capacity"),
    ("enrollment", "Fill rate by cohort"),
    ("operator", "Operator up"),
    ("operator", "Reconciles/s by kind and result"),
    ("operator", "Resources by condition"),
    ("operator", "Reconcile duration p50 / p99"),
}


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            yield panel
        yield from panel.get("panels", [])


def queries() -> list[tuple[str, str, str]]:
    """(dashboard stem, panel title, expr) for every target of every panel."""
    return [
        (path.stem, panel["title"], target["expr"])
        for path in DASHBOARDS
        for panel in panels(load(path))
        for target in panel["targets"]
    ]


# -- static checks -----------------------------------------------------------------------------


def test_dashboards_are_well_formed() -> None:
    assert {p.stem for p in DASHBOARDS} == REQUIRED
    uids = [load(p)["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids)
    for path in DASHBOARDS:
        dashboard = load(path)
        assert dashboard["title"].startswith("Azora / ")
        assert "azora" in dashboard["tags"]
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(set(ids)) == len(ids), path.name
        for panel in panels(dashboard):
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], f"{path.name}: {panel['title']} has no query"
            for target in panel["targets"]:
                used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
                assert used <= set(variables), f"{path.name}: {panel['title']} uses {used}"
    titles = {(stem, title) for stem, title, _ in queries()}
    assert titles >= CORE_PANELS


def test_dashboards_ship_as_sidecar_configmaps() -> None:
    objects = render(
        sets=[
            "monitoring.dashboards.enabled=true",
            "monitoring.dashboards.labels.team=platform",
            "monitoring.dashboards.namespace=monitoring",
        ]
    )
    maps = by_kind(objects, "ConfigMap")
    maps = [m for m in maps if m["metadata"]["name"].startswith("azora-dashboard-")]
    assert len(maps) == len(DASHBOARDS)
    for cm in maps:
        assert cm["metadata"]["namespace"] == "monitoring"
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["labels"]["team"] == "platform"
        ((name, text),) = cm["data"].items()
        assert json.loads(text) == load(CHART / "dashboards" / name)
    off = render()
    assert not [m for m in by_kind(off, "ConfigMap") if "dashboard" in m["metadata"]["name"]]


def test_docs_link_every_dashboard() -> None:
    text = (ROOT / "docs" / "dashboards.md").read_text()
    for path in DASHBOARDS:
        assert f"charts/azora/dashboards/{path.name}" in text


# -- against a real Prometheus -----------------------------------------------------------------


def grafana_to_promql(expr: str) -> str:
    # What Grafana does before sending: $__rate_interval becomes a duration, "All" a regex.
    expr = expr.replace("$__rate_interval", "20s")
    return re.sub(r"\$\{?(\w+)\}?", ".*", expr)


class FakeModelServer(ThreadingHTTPServer):
    """A minimal OpenAI-compatible backend: /v1/models and (streamed) chat completions."""

    daemon_threads = True


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._json(200, {"object": "list", "data": [{"id": "demo", "object": "model"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        if not body.get("stream"):
            message = {"role": "assistant", "content": "hi there"}
            self._json(
                200,
                {
                    "id": "c1",
                    "object": "chat.completion",
                    "created": 1,
                    "model": body["model"],
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                    "usage": usage,
                },
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i, word in enumerate(["hi", " there", "!"]):
            chunk = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": body["model"],
                "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
            }
            if i == 2:
                chunk["usage"] = usage
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            time.sleep(0.01)
        self.wfile.write(b"data: [DONE]\n\n")
        self.close_connection = True


def call(
    url: str, method: str = "GET", body: Any = None, token: str = API_TOKEN, **headers: str
) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for name, value in headers.items():
        req.add_header(name.replace("_", "-"), value)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read()


@dataclass
class Stack:
    prometheus: str
    targets: dict[str, str]  # job -> base URL


def _prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        message = "prometheus not installed (Debian package prometheus; hack/system-deps.sh)"
        missing_dependency(message)
    return path


def _wait(url: str, timeout: float, what: str, proc: ManagedProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            proc.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    tail = proc.log_tail() if proc is not None else ""
    raise TimeoutError(f"{what} not ready in {timeout}s\n{tail}")


def _traffic(services: dict[str, ServiceProcess], model_url: str, cp: LocalControlPlane) -> None:
    ledger, pricing = services["ledger"].url, services["pricing"].url
    enrollment, orchestrator = services["enrollment"].url, services["orchestrator"].url
    # Some real calls (and a few refusals) on each service: rates, latencies, statuses.
    for i in range(3):
        call(
            f"{ledger}/v1/accounts",
            "POST",
            {"code": f"cash-{i}", "type": "asset", "currency": "EUR"},
        )
        call(f"{ledger}/v1/accounts")
        call(f"{pricing}/v1/quotes", "POST", {"currency": "EUR", "lines": []})
        call(f"{enrollment}/v1/cohorts", token="wrong-token-wrong-token")
    # An AI route pointing at the fake backend, then plain and streamed completions.
    status, body = call(
        f"{orchestrator}/admin/v1/routes/default/demo",
        "PUT",
        {
            "generation": 1,
            "uid": "route-uid-1",
            "spec": {"model": "demo", "backends": [{"name": "local", "url": model_url}]},
        },
        token=ADMIN_TOKEN,
    )
    assert status == 200, body
    chat = {"model": "demo", "messages": [{"role": "user", "content": "hello"}]}
    # The stored route reaches the live table through LISTEN/NOTIFY: wait for it.
    deadline = time.monotonic() + 15
    while call(f"{orchestrator}/v1/chat/completions", "POST", chat)[0] == 404:
        assert time.monotonic() < deadline, "route never became live"
        time.sleep(0.1)
    for _ in range(3):
        status, body = call(f"{orchestrator}/v1/chat/completions", "POST", chat)
        assert status == 200, body
        stream = {**chat, "stream": True, "stream_options": {"include_usage": True}}
        status, body = call(f"{orchestrator}/v1/chat/completions", "POST", stream)
        assert status == 200, body
    # A cohort through the operator: reconciles, resources by condition, cohort gauges. Its
    # product comes from the example catalog (as `make up` seeds it): enrollment-service refuses
    # a priced cohort whose product azora-pricing does not know.
    catalog = json.loads((ROOT / "examples" / "catalog" / "catalog.json").read_text())
    for sku, product in catalog["pricing"]["products"].items():
        status, body = call(f"{pricing}/v1/products/{sku}", "PUT", product)
        assert status in (200, 201), body
    result = cp.kubectl("apply", "-f", str(ROOT / "examples" / "enrollmentcohort.yaml"))
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def stack(
    pg: PostgresServer, control_plane: LocalControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    require_tools("kubectl")
    prometheus_bin = _prometheus_binary()
    work = tmp_path_factory.mktemp("dash")
    model = FakeModelServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=model.serve_forever, daemon=True).start()
    model_url = f"http://127.0.0.1:{model.server_address[1]}/v1"

    started: list[Any] = []
    try:
        services: dict[str, ServiceProcess] = {}
        for key in ("ledger", "pricing", "orchestrator", "enrollment"):
            url = pg.recreate_database(f"azora_dash_{key}")
            env: dict[str, str] = {}
            if key == "enrollment":
                env = {
                    "ENROLLMENT_PRICING_URL": services["pricing"].url,
                    "ENROLLMENT_LEDGER_URL": services["ledger"].url,
                    "ENROLLMENT_SERVICE_TOKEN": API_TOKEN,
                }
            services[key] = ServiceProcess(key, url, work, env=env)
            services[key].process.start()
            started.append(services[key])
        for svc in services.values():
            svc.wait_ready(120)

        result = control_plane.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        assert result.returncode == 0, result.stderr
        operator_port = free_port()
        operator = ManagedProcess(
            "operator",
            [venv_script("azora-operator"), "run"],
            log_path=work / "operator.log",
            env=control_plane.env()
            | {
                "AZORA_OPERATOR_PORT": str(operator_port),
                "AZORA_OPERATOR_ADMIN_TOKEN": ADMIN_TOKEN,
                "AZORA_OPERATOR_ENROLLMENT_URL": services["enrollment"].url,
                "AZORA_OPERATOR_PRICING_URL": services["pricing"].url,
                "AZORA_OPERATOR_ORCHESTRATOR_URL": services["orchestrator"].url,
                "AZORA_OPERATOR_RESYNC_INTERVAL": "5",
                "AZORA_OPERATOR_RESYNC_INITIAL_DELAY": "0",
            },
        )
        operator.start()
        started.append(operator)
        _wait(f"http://127.0.0.1:{operator_port}/healthz", 60, "operator", operator)

        targets = {f"azora-{k}": s.url for k, s in services.items()}
        targets["azora-operator"] = f"http://127.0.0.1:{operator_port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": job,
                    "static_configs": [{"targets": [url.removeprefix("http://")]}],
                }
                for job, url in targets.items()
            ],
        }
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        prom_port = free_port()
        prometheus = ManagedProcess(
            "prometheus",
            [
                prometheus_bin,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ],
            log_path=work / "prometheus.log",
        )
        prometheus.start()
        started.append(prometheus)
        prom_url = f"http://127.0.0.1:{prom_port}"
        _wait(f"{prom_url}/-/ready", 60, "prometheus", prometheus)

        _traffic(services, model_url, control_plane)
        # The operator applies the cohort; wait until its status says so.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready = control_plane.kubectl(
                "get", "enrollmentcohort", "k8s-fundamentals-2027-spring",
                "-o", "jsonpath={.status.observedGeneration}",
            ).stdout  # fmt: skip
            if ready:
                break
            time.sleep(0.5)
        # A few more scrapes so every rate() window holds two or more samples after traffic.
        time.sleep(6)
        yield Stack(prom_url, targets)
    finally:
        for proc in reversed(started):
            proc.stop()
        model.shutdown()


def promql(stack: Stack, expr: str) -> dict[str, Any]:
    query = urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(f"{stack.prometheus}/api/v1/query?{query}", timeout=30) as r:
            body: dict[str, Any] = json.loads(r.read())
    except urllib.error.HTTPError as err:
        with err:
            body = json.loads(err.read())
    return body


pytestmark_e2e = pytest.mark.e2e


@pytestmark_e2e
def test_every_panel_query_runs_and_core_panels_have_data(stack: Stack) -> None:
    failures, empty = [], set()
    with_data: set[tuple[str, str]] = set()
    for stem, title, expr in queries():
        result = promql(stack, grafana_to_promql(expr))
        if result.get("status") != "success":
            failures.append(f"{stem} / {title}: {result.get('error')} -- {expr}")
            continue
        if result["data"]["result"]:
            with_data.add((stem, title))
        else:
            empty.add((stem, title))
    assert not failures, "\n".join(failures)
    missing = CORE_PANELS - with_data
    assert not missing, f"core panels without data: {sorted(missing)}"


def _exported_series_names(url: str) -> set[str]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("_sum", "_count", "_created"),
        }.get(family.type, ())
        names.update(family.name + s for s in suffixes)
    return names


@pytestmark_e2e
def test_no_dashboard_or_alert_queries_a_metric_nothing_exports(stack: Stack) -> None:
    exported = {"up"}
    for url in stack.targets.values():
        exported |= _exported_series_names(url)
    rules = yaml.safe_load((CHART / "files/prometheus/azora-alerts.yaml").read_text())
    exprs = [e for _, _, e in queries()] + [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {name for expr in exprs for name in re.findall(r"\b(azora_[a-z0-9_]+|up)\b", expr)}
    assert used, "no metric names found"
    assert used <= exported, f"queried but exported by nothing: {sorted(used - exported)}"
