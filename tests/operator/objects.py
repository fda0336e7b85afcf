"""Small builders for the three kinds, each in its own namespace and with unique names."""

from __future__ import annotations

from typing import Any

from tests.operator.kube import unique

API = "azora.io/v1alpha1"


def rule(ns: str, name: str | None = None, **spec: Any) -> dict[str, Any]:
    body = {"action": {"percentOff": "10"}, "target": {"products": [unique("sku")]}}
    body.update(spec)
    return {
        "apiVersion": API,
        "kind": "PricingRule",
        "metadata": {"name": name or unique("rule"), "namespace": ns},
        "spec": body,
    }


def route(ns: str, name: str | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": unique("model"),
        "backends": [
            {"name": "a", "url": "http://127.0.0.1:9/v1", "weight": 2},
            {"name": "b", "url": "http://127.0.0.1:9/v1"},
        ],
    }
    body.update(spec)
    return {
        "apiVersion": API,
        "kind": "AIModelRoute",
        "metadata": {"name": name or unique("route"), "namespace": ns},
        "spec": body,
    }


def cohort(ns: str, name: str | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"course": "k8s", "title": "Kubernetes", "capacity": 20}
    body.update(spec)
    return {
        "apiVersion": API,
        "kind": "EnrollmentCohort",
        "metadata": {"name": name or unique("cohort"), "namespace": ns},
        "spec": body,
    }


def secret(ns: str, name: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "stringData": data,
    }
