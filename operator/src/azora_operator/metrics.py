"""Prometheus metrics of the operator (``azora_operator_*``, bounded labels only)."""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "azora_operator_reconciles_total",
    "Reconciliations by kind and result "
    "(applied, unchanged, stale, rejected, unavailable, error, deleted, drift_repaired).",
    ["kind", "result"],
)
RECONCILE_DURATION = Histogram(
    "azora_operator_reconcile_duration_seconds",
    "Time to apply a resource to its service and patch nothing else but status.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RESOURCES = Gauge(
    "azora_operator_resources",
    "Resources the operator manages, by kind and state (Ready, NotReady, Degraded).",
    ["kind", "condition"],
)
STATES = ("Ready", "NotReady", "Degraded")


class ResourceStates:
    """The last known state per resource, exported as counts (never per-resource labels)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # prometheus scrapes from its own thread
        self._state: dict[tuple[str, str, str], str] = {}

    def set(self, kind: str, namespace: str, name: str, state: str) -> None:
        with self._lock:
            self._state[(kind, namespace, name)] = state
            self._export(kind)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self._state.pop((kind, namespace, name), None)
            self._export(kind)

    def _export(self, kind: str) -> None:
        counts = dict.fromkeys(STATES, 0)
        for (k, _, _), state in self._state.items():
            if k == kind:
                counts[state] = counts.get(state, 0) + 1
        for state, count in counts.items():
            RESOURCES.labels(kind=kind, condition=state).set(count)


RESOURCE_STATES = ResourceStates()
