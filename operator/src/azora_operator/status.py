"""Status and Events: what a resource's ``status`` says and which Events tell a reader so.

Every writer (the apply, delete and resync paths) goes through :func:`write_status`, which
writes the complete conditions list (a JSON merge patch replaces lists whole), the
``observedGeneration`` and ``lastSyncTime``, and keeps the per-kind resource gauge current.
Events are posted on transitions only (:func:`event_on_change`), through Kopf's Event queue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import kopf

from azora_operator import conditions as cond
from azora_operator.conditions import DEGRADED, READY, Condition
from azora_operator.kinds import AI_MODEL_ROUTE, Degradation, Kind
from azora_operator.metrics import RESOURCE_STATES

JSON = dict[str, Any]


def resource_state(conditions: list[JSON]) -> str:
    """The gauge label of a resource: NotReady, Degraded or Ready."""
    if cond.condition_status(conditions, READY) != "True":
        return "NotReady"
    if cond.condition_status(conditions, DEGRADED) == "True":
        return "Degraded"
    return "Ready"


def live_conditions(
    kind: Kind,
    insight: Mapping[str, Any] | None,
    message: str,
    *,
    missing_fallbacks: Sequence[str] = (),
) -> list[Condition]:
    """Ready and Degraded for a config the service holds, refined by its live insight.

    ``missing_fallbacks``: fallback models of a route that no route serves. The route itself
    works (Ready), but the fallback it promises is not there: Degraded says which.
    """
    troubles = [kind.degradation(insight) if insight is not None else None]
    if missing_fallbacks:
        names = ", ".join(missing_fallbacks)
        troubles.append(
            Degradation(
                "FallbackModelMissing",
                f"no route serves the fallback model(s) {names}: requests this route cannot "
                "serve fail instead of falling back",
            )
        )
    found = [t for t in troubles if t is not None]
    degradation = (
        Degradation(found[0].reason, "; ".join(t.message for t in found)) if found else None
    )
    ready = Condition(READY, True, "Applied", message)
    if kind is AI_MODEL_ROUTE and insight is not None:
        figures = kind.insight_status(insight)
        if figures["totalBackends"] and figures["healthyBackends"] == 0:
            # Why, as the service says it (ejected, unhealthy, or unknown: not answered yet).
            why = troubles[0].message if troubles[0] is not None else "none is healthy"
            ready = Condition(READY, False, "NoHealthyBackends", f"no backend is healthy: {why}")
    if degradation is None:
        degraded = Condition(DEGRADED, False, "AsExpected", "no trouble reported by the service")
    else:
        degraded = Condition(DEGRADED, True, degradation.reason, degradation.message)
    return [ready, degraded]


def write_status(
    kind: Kind,
    meta: Mapping[str, Any],
    status: Mapping[str, Any],
    patch: kopf.Patch,
    updates: list[Condition],
    *,
    generation: int,
    extra: JSON | None = None,
) -> list[JSON]:
    """Put the new status into ``patch`` (conditions merged with ``status``'s)."""
    conditions = cond.merge_conditions(status.get("conditions"), updates, generation=generation)
    patch.status["conditions"] = conditions
    patch.status["observedGeneration"] = generation
    patch.status["lastSyncTime"] = cond.now_rfc3339()
    for key, value in (extra or {}).items():
        patch.status[key] = value
    RESOURCE_STATES.set(kind.kind, meta["namespace"], meta["name"], resource_state(conditions))
    return conditions


def report(
    kind: Kind,
    body: kopf.Body,
    patch: kopf.Patch,
    updates: list[Condition],
    *,
    generation: int,
    extra: JSON | None = None,
) -> None:
    """Write ``updates`` into ``patch``; an Event if Ready (the first update) changed."""
    event_on_change(body, body.status, updates[0], generation=generation)
    write_status(kind, body.meta, body.status, patch, updates, generation=generation, extra=extra)


def event_on_change(
    body: kopf.Body, status: Mapping[str, Any], new: Condition, *, generation: int
) -> None:
    """Post an Event when Ready's status or reason changes, or a new generation lands."""
    old_conditions = status.get("conditions")
    changed = (
        cond.condition_status(old_conditions, READY) != new.status_text
        or cond.condition_reason(old_conditions, READY) != new.reason
        or status.get("observedGeneration") != generation
    )
    if changed:
        kind = "Normal" if new.status else "Warning"
        kopf.event(body, type=kind, reason=new.reason, message=new.message)


def seconds_since(timestamp: Any, *, missing: float = 0.0) -> float:
    """Seconds since an RFC 3339 timestamp of the API server; ``missing`` if there is none."""
    if not isinstance(timestamp, str):
        return missing
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return missing
    return (datetime.now(UTC) - then).total_seconds()
