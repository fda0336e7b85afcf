"""Drift repair and live insight: the body of the per-object Kopf timer ``resync``.

Change handlers are edge-triggered; this timer reconciles actual state. For one resource it
asks the service what it holds (``GET …/status``): missing or an older generation → apply again
(Event ``DriftRepaired``); a newer one → leave it to the update Kopf is about to deliver; the
same → copy the live figures into status and refresh ``Ready``/``Degraded``.

Kopf runs a timer in its own task, beside (not between) the object's change handlers, so this
module makes overlapping harmless instead of assuming there is none:

- the timer's ``idle`` keeps it away from an object whose spec changed a moment ago, and
  :func:`resync` leaves alone a generation the change handlers have not reported on yet
  (``status.observedGeneration`` behind ``metadata.generation``): their apply is in flight;
- it works on a snapshot of the body taken when it fires (Kopf's body view follows the watch);
- its status write is conditional on that snapshot's ``resourceVersion``: if a handler wrote
  a newer status meanwhile, the API server refuses the stale write (409) and the next firing
  sees the newer object;
- anything it applies is the generation-stamped PUT of :mod:`azora_operator.reconcile`.

It writes status only when a reader would see a difference (``lastSyncTime`` alone at most
every ``STATUS_HEARTBEAT``), so an unchanged resource costs one GET per interval and no write.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from azora_operator import conditions as cond
from azora_operator.client import ServiceUnavailable
from azora_operator.conditions import READY, SYNCED, Condition
from azora_operator.kinds import GROUP, VERSION, Kind
from azora_operator.kube import plain
from azora_operator.metrics import RECONCILES
from azora_operator.reconcile import Reconciler, outage
from azora_operator.status import live_conditions, report, seconds_since

# Reasons on Synced=False that are the service's trouble, not the spec's: the resync checks the
# service (and reports an outage) instead of re-sending a refused spec.
_RETRYABLE_REASONS = frozenset({"ServiceUnavailable", "ServiceError"})

log = logging.getLogger("azora_operator")


async def resync_object(reconciler: Reconciler, kind: Kind, live_body: kopf.Body) -> None:
    """One firing of the timer: resync a snapshot, then write its status if it changed.

    A drift repair that could not reach the service (or resolve a Secret) still writes the
    status that says so, then raises ``kopf.TemporaryError`` so Kopf fires again after one
    interval.
    """
    body = kopf.Body(plain(live_body))
    patch = kopf.Patch()
    failure: kopf.TemporaryError | None = None
    try:
        await resync(reconciler, kind, body=body, patch=patch)
    except kopf.TemporaryError as exc:
        failure = exc
    written = patch.get("status")
    if written and status_differs(body.status, written, reconciler.settings.status_heartbeat):
        meta = body.meta
        outcome = await reconciler.kube.patch_status(
            f"{GROUP}/{VERSION}",
            kind.plural,
            str(meta["namespace"]),
            str(meta["name"]),
            dict(written),
            meta.get("resourceVersion"),
        )
        if outcome != "ok":
            log.debug(
                "resync of %s %s/%s: status not written (%s)",
                kind.kind,
                meta["namespace"],
                meta["name"],
                outcome,
            )
    if failure is not None:
        raise kopf.TemporaryError(str(failure), delay=reconciler.settings.resync_interval)


async def resync(reconciler: Reconciler, kind: Kind, *, body: kopf.Body, patch: kopf.Patch) -> None:
    """Drift repair and live insight for one resource; the new status goes into ``patch``."""
    meta, spec, status = body.meta, body.spec, body.status
    if meta.get("deletionTimestamp"):
        return
    namespace, name = str(meta["namespace"]), str(meta["name"])
    generation = int(meta["generation"])
    conditions = status.get("conditions")
    synced = cond.condition_status(conditions, SYNCED)
    synced_reason = cond.condition_reason(conditions, SYNCED)
    if synced is None:
        return  # never applied yet: the create/resume handler owns the first apply
    if status.get("observedGeneration") != generation:
        return  # the change handlers have not reported on this generation yet: theirs
    if synced == "False" and synced_reason not in _RETRYABLE_REASONS:
        # Rejected: offered again at every resync, because some refusals name something outside
        # the spec that may appear later (UnknownProduct until azora-pricing has the product,
        # UnpricedCurrency until it has the price). An unchanged refusal costs one PUT and
        # writes no status (same conditions); an accepted one becomes Ready.
        await reconciler.apply(kind, body=body, patch=patch, retry=0, drift=False)
        return
    try:
        insight = await reconciler.client(kind).insight(kind.admin_plural, namespace, name)
    except ServiceUnavailable as exc:
        if cond.condition_status(conditions, READY) == "True":
            reason, message = outage(kind, exc)
            report(
                kind, body, patch, [Condition(READY, False, reason, message)], generation=generation
            )
        return
    stored_generation = insight.get("generation") if insight is not None else None
    if insight is None or (isinstance(stored_generation, int) and stored_generation < generation):
        # Lost (e.g. a database restore) or behind: put our generation back.
        await reconciler.apply(kind, body=body, patch=patch, retry=0, drift=synced == "True")
        return
    if stored_generation != generation:
        # Newer than our body: our view lags behind an update Kopf will deliver next.
        return
    revision = insight.get("revision")
    if isinstance(revision, int) and revision != status.get("appliedRevision"):
        # Our generation, but not the revision our last apply got: something wrote this config
        # since (e.g. an admin call that changed the spec and kept the generation). Comparing
        # the specs here would mean re-implementing each service's normalisation (defaults,
        # canonical forms), so the service compares: the same generation-stamped PUT is a
        # replay answered with the stored revision when the content is ours, and overwrites
        # it (a new revision: DriftRepaired) when it is not.
        await reconciler.apply(
            kind, body=body, patch=patch, retry=0, drift=True, replaced_revision=revision
        )
        return
    message = f"generation {generation} is live in {kind.service}"
    if isinstance(revision, int):
        message += f" as revision {revision}"
    missing = await reconciler.missing_fallbacks(kind, spec)
    live = live_conditions(kind, insight, message, missing_fallbacks=missing)
    updates = list(live)
    if synced != "True":
        updates.append(Condition(SYNCED, True, "Applied", message))
    extra = kind.insight_status(insight)
    if isinstance(revision, int):
        extra["appliedRevision"] = revision
    report(kind, body, patch, updates, generation=generation, extra=extra)
    RECONCILES.labels(kind=kind.kind, result="resynced").inc()


def status_differs(
    current: Mapping[str, Any], written: Mapping[str, Any], heartbeat: float
) -> bool:
    """Whether a resync's status patch changes anything a reader would see.

    ``lastSyncTime`` alone is written at most every ``heartbeat`` seconds. A ``None`` in the
    patch removes a field (JSON merge patch), so it equals an absent field.
    """
    for key, value in written.items():
        if key == "lastSyncTime":
            continue
        if _normalized(current.get(key)) != _normalized(value):
            return True
    return seconds_since(current.get("lastSyncTime"), missing=float("inf")) >= heartbeat


def _normalized(value: Any) -> Any:
    """Drop ``None`` members the API server does not store (it prunes nulls in lists' items)."""
    if isinstance(value, Mapping):
        return {k: _normalized(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_normalized(v) for v in value]
    return value
