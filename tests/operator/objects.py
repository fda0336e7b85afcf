"""Small builders for the kinds, each in its own namespace and with unique names."""

from __future__ import annotations

import http.server
import threading
from functools import cache
from typing import Any

from tests.operator.kube import unique

API = "azora.io/v1alpha1"


class ModelsHandler(http.server.BaseHTTPRequestHandler):
    """The smallest OpenAI-compatible backend a route's health check accepts."""

    def do_GET(self) -> None:
        ok = self.path.rstrip("/").endswith("/models")
        body = b'{"object": "list", "data": []}' if ok else b"{}"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@cache
def backend_url() -> str:
    """A real backend that answers the routes' health checks, for the test session: a route is
    Ready only once a backend has answered (honest readiness), so the builders point at it."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ModelsHandler)
    threading.Thread(target=server.serve_forever, daemon=True, name="models-backend").start()
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def _obj(kind: str, ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": kind,
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def rule(ns: str, name: str | None = None, **spec: Any) -> dict[str, Any]:
    body = {"action": {"percentOff": "10"}, "target": {"products": [unique("sku")]}}
    body.update(spec)
    return _obj("PricingRule", ns, name or unique("rule"), body)


def route(ns: str, name: str | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": unique("model"),
        "backends": [
            {"name": "a", "url": backend_url(), "weight": 2},
            {"name": "b", "url": backend_url()},
        ],
    }
    body.update(spec)
    return _obj("AIModelRoute", ns, name or unique("route"), body)


def cohort(ns: str, name: str | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"course": "k8s", "title": "Kubernetes", "capacity": 20}
    body.update(spec)
    return _obj("EnrollmentCohort", ns, name or unique("cohort"), body)


def secret(ns: str, name: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "stringData": data,
    }
