"""Kubernetes-style conditions (metav1.Condition), computed as pure functions.

``status`` is written with a JSON merge patch, which replaces lists whole: callers always write
the complete list this module returns, never a single entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

READY = "Ready"
SYNCED = "Synced"
DEGRADED = "Degraded"
ORDER = (READY, SYNCED, DEGRADED)


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool | None  # None = Unknown
    reason: str
    message: str

    @property
    def status_text(self) -> str:
        return {True: "True", False: "False", None: "Unknown"}[self.status]


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    existing: Iterable[Mapping[str, Any]] | None,
    updates: Iterable[Condition],
    *,
    generation: int,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """The full new conditions list.

    ``lastTransitionTime`` moves only when a condition's status flips (Kubernetes convention):
    a reason or message change alone keeps the old time. Conditions not in ``updates`` are
    kept as they are. Order is stable (Ready, Synced, Degraded, then others).
    """
    stamp = now or now_rfc3339()
    current: dict[str, dict[str, Any]] = {}
    for cond in existing or ():
        if isinstance(cond, Mapping) and isinstance(cond.get("type"), str):
            current[cond["type"]] = dict(cond)
    for update in updates:
        previous = current.get(update.type)
        transition = stamp
        if previous is not None and previous.get("status") == update.status_text:
            transition = str(previous.get("lastTransitionTime") or stamp)
        current[update.type] = {
            "type": update.type,
            "status": update.status_text,
            "reason": update.reason,
            # The API server limits message length; a service's detail could be long.
            "message": update.message[:4000],
            "lastTransitionTime": transition,
            "observedGeneration": generation,
        }
    ordered = [current.pop(t) for t in ORDER if t in current]
    ordered.extend(current[t] for t in sorted(current))
    return ordered


def condition_status(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> str | None:
    return _condition_field(conditions, type_, "status")


def condition_reason(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> str | None:
    return _condition_field(conditions, type_, "reason")


def _condition_field(
    conditions: Iterable[Mapping[str, Any]] | None, type_: str, field: str
) -> str | None:
    for cond in conditions or ():
        if isinstance(cond, Mapping) and cond.get("type") == type_:
            value = cond.get(field)
            return str(value) if value is not None else None
    return None
