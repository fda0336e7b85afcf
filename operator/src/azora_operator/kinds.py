"""The custom resources and how each maps onto its service's admin API.

Everything kind-specific lives here: the admin plural, which service owns the kind, and how the
service's live insight (``GET …/status``) becomes the resource's ``status`` fields, including
the strings the printer columns show.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from azora_operator.settings import OperatorSettings

GROUP = "azora.io"
VERSION = "v1alpha1"

JSON = dict[str, Any]


@dataclass(frozen=True)
class Degradation:
    """Live trouble worth a ``Degraded=True`` condition (the config itself is live)."""

    reason: str
    message: str


def _no_degradation(insight: Mapping[str, Any]) -> Degradation | None:
    return None


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str  # Kubernetes plural
    admin_plural: str  # the service's admin API plural
    service: str
    base_url: Callable[[OperatorSettings], str]
    # insight JSON → status fields (printer columns included)
    insight_status: Callable[[Mapping[str, Any]], JSON]
    # insight JSON → a degradation, if any
    degradation: Callable[[Mapping[str, Any]], Degradation | None] = _no_degradation


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _rule_status(insight: Mapping[str, Any]) -> JSON:
    redemptions = insight.get("redemptions")
    status: JSON = {"active": bool(insight.get("active", False))}
    if insight.get("mode") is not None:
        status["mode"] = str(insight["mode"])
    if isinstance(redemptions, Mapping):
        used = _int_or_none(redemptions.get("used")) or 0
        limit = _int_or_none(redemptions.get("limit"))
        remaining = _int_or_none(redemptions.get("remaining"))
        status["redemptions"] = {"used": used, "limit": limit, "remaining": remaining}
        status["redemptionsSummary"] = f"{used}/{limit}" if limit is not None else str(used)
    else:
        # JSON merge patch: None removes a stale value left by an earlier promotion.
        status["redemptions"] = None
        status["redemptionsSummary"] = "-"
    return status


def _rule_degradation(insight: Mapping[str, Any]) -> Degradation | None:
    redemptions = insight.get("redemptions")
    if isinstance(redemptions, Mapping) and redemptions.get("remaining") == 0:
        return Degradation("RedemptionsExhausted", "every promotion redemption has been used")
    return None


def _route_status(insight: Mapping[str, Any]) -> JSON:
    backends = []
    for item in insight.get("backends") or []:
        if not isinstance(item, Mapping):
            continue
        backend = {
            "name": str(item.get("name", "")),
            "healthy": bool(item.get("healthy", False)),
            "ejectedUntil": item.get("ejected_until"),
            "inFlight": _int_or_none(item.get("in_flight")) or 0,
            "effectiveWeight": _number(item.get("effective_weight")) or 0,
            "latencyMsEwma": _number(item.get("latency_ms_ewma")),
            "errorRate": _number(item.get("error_rate")),
        }
        # The API server drops nulls inside list items; leaving them out keeps the written
        # status equal to the stored one (else Kopf logs "inconsistencies" on every write and
        # the resync would see a difference that is not there).
        backends.append({k: v for k, v in backend.items() if v is not None})
    total = _int_or_none(insight.get("total"))
    healthy = _int_or_none(insight.get("healthy"))
    if total is None:
        total = len(backends)
    if healthy is None:
        healthy = sum(1 for b in backends if b["healthy"])
    status: JSON = {
        "healthyBackends": healthy,
        "totalBackends": total,
        "backendsSummary": f"{healthy}/{total}",
        "backends": backends,
    }
    if insight.get("strategy") is not None:
        status["strategy"] = str(insight["strategy"])
    return status


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    if isinstance(value, int | float):
        return value
    try:
        return float(value)  # status figures (latency, ratios), never money
    except ValueError:
        return None


def _route_degradation(insight: Mapping[str, Any]) -> Degradation | None:
    status = _route_status(insight)
    healthy, total = status["healthyBackends"], status["totalBackends"]
    if total and healthy < total:
        # The service says why a backend is not healthy (``health``: ejected, unhealthy, or
        # unknown: it has not answered yet); an older service only that it is not.
        why: dict[str, list[str]] = {}
        for item in insight.get("backends") or []:
            if isinstance(item, Mapping) and not item.get("healthy", False):
                why.setdefault(str(item.get("health") or "ejected"), []).append(
                    str(item.get("name", ""))
                )
        parts = [f"{h}: {', '.join(sorted(names))}" for h, names in sorted(why.items())]
        detail = "; ".join(parts) if parts else f"ejected: {total - healthy}"
        return Degradation("BackendsEjected", f"{healthy}/{total} backends healthy; {detail}")
    return None


def _cohort_status(insight: Mapping[str, Any]) -> JSON:
    enrolled = _int_or_none(insight.get("enrolled")) or 0
    capacity = _int_or_none(insight.get("capacity"))
    return {
        "enrolled": enrolled,
        "capacity": capacity,
        "pendingPayment": _int_or_none(insight.get("pending_payment")) or 0,
        "waitlisted": _int_or_none(insight.get("waitlisted")) or 0,
        "offered": _int_or_none(insight.get("offered")) or 0,
        "open": bool(insight.get("open", False)),
        "seats": f"{enrolled}/{capacity}" if capacity is not None else f"{enrolled}/-",
    }


def _policy_status(insight: Mapping[str, Any]) -> JSON:
    rounding = insight.get("rounding")
    modes = rounding if isinstance(rounding, Mapping) else {}
    return {"currencies": ",".join(f"{c}={m}" for c, m in sorted(modes.items())) or "-"}


PRICING_RULE = Kind(
    kind="PricingRule",
    plural="pricingrules",
    admin_plural="pricing-rules",
    service="azora-pricing",
    base_url=lambda s: s.pricing_url,
    insight_status=_rule_status,
    degradation=_rule_degradation,
)
AI_MODEL_ROUTE = Kind(
    kind="AIModelRoute",
    plural="aimodelroutes",
    admin_plural="routes",
    service="ai-orchestrator",
    base_url=lambda s: s.orchestrator_url,
    insight_status=_route_status,
    degradation=_route_degradation,
)
ENROLLMENT_COHORT = Kind(
    kind="EnrollmentCohort",
    plural="enrollmentcohorts",
    admin_plural="cohorts",
    service="enrollment-service",
    base_url=lambda s: s.enrollment_url,
    insight_status=_cohort_status,
)
PRICING_POLICY = Kind(
    kind="PricingPolicy",
    plural="pricingpolicies",
    admin_plural="pricing-policies",
    service="azora-pricing",
    base_url=lambda s: s.pricing_url,
    insight_status=_policy_status,
)

KINDS: tuple[Kind, ...] = (PRICING_RULE, AI_MODEL_ROUTE, ENROLLMENT_COHORT, PRICING_POLICY)
