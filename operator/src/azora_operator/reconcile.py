"""Create, update, resume and delete: a resource's spec → its service's admin API.

:class:`Reconciler` holds the operator's admin clients (one per kind, on one HTTP session) and
the two operations Kopf's change handlers call: :meth:`Reconciler.apply` (PUT the spec, then
report) and :meth:`Reconciler.remove` (DELETE before the finalizer is released).

Both are idempotent: the PUT is generation-stamped (the same generation and spec is a no-op for
the service; an older one is refused with 409), so a re-run after a crash, a restart mid-way,
or the resync timer re-applying the same generation can neither apply anything twice nor let
an old spec win.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf

from azora_operator.client import (
    AdminClient,
    Applied,
    Rejected,
    ServiceError,
    ServiceUnavailable,
    StaleGeneration,
)
from azora_operator.conditions import READY, SYNCED, Condition
from azora_operator.kinds import AI_MODEL_ROUTE, KINDS, Kind
from azora_operator.kube import KubeReader, SecretProblem
from azora_operator.metrics import RECONCILE_DURATION, RECONCILES, RESOURCE_STATES
from azora_operator.secrets import resolve_payload
from azora_operator.settings import OperatorSettings
from azora_operator.status import (
    event_on_change,
    live_conditions,
    report,
    seconds_since,
    write_status,
)

FORCE_DELETE_ANNOTATION = "azora.io/force-delete"

JSON = dict[str, Any]

log = logging.getLogger("azora_operator")


def backoff(settings: OperatorSettings, retry: int) -> float:
    """Delay before retry number ``retry`` while a service is unreachable: base·2^retry, capped."""
    return float(min(settings.backoff_base * (2 ** min(retry, 16)), settings.backoff_max))


def _not_synced(reason: str, message: str) -> list[Condition]:
    """Ready and Synced, False for the same reason: this generation is not live."""
    return [Condition(READY, False, reason, message), Condition(SYNCED, False, reason, message)]


def _released_anyway(kind: Kind, body: kopf.Body, result: str, reason: str, message: str) -> None:
    """The finalizer goes while the service may still hold the config: a Warning says why."""
    kopf.event(body, type="Warning", reason=reason, message=message)
    RECONCILES.labels(kind=kind.kind, result=result).inc()
    RESOURCE_STATES.forget(kind.kind, str(body.meta["namespace"]), str(body.meta["name"]))


def outage(kind: Kind, exc: ServiceUnavailable) -> tuple[str, str]:
    """The condition reason and message for a call that did not get a usable answer.

    A 5xx is the service's own failure (``ServiceError``, with the status and the problem's
    detail), not a network fault (``ServiceUnavailable``): both are retried with the same
    bounded backoff, but a reader must not go looking for a dead pod when the service choked
    on a value.
    """
    if isinstance(exc, ServiceError):
        return "ServiceError", f"{kind.service} failed: {exc}; retrying"
    return "ServiceUnavailable", f"{kind.service} is unreachable: {exc}; retrying"


class Reconciler:
    """Settings, the Kubernetes reader, and one admin client per kind."""

    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self.kube = KubeReader(
            timeout=settings.kube_request_timeout, connections=settings.kube_connections
        )
        self._session: aiohttp.ClientSession | None = None
        self._clients: dict[str, AdminClient] = {}
        self._served_models: tuple[float, frozenset[str]] | None = None
        self.started = False

    async def start(self) -> None:
        # One session for all admin calls: keep-alive connections, at most
        # ``service_concurrency`` in flight per service (AdminClient's own limit).
        per_host = self.settings.service_concurrency
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=per_host * len(KINDS), limit_per_host=per_host, keepalive_timeout=60
            )
        )
        token = self.settings.bearer_token()
        for kind in KINDS:
            self._clients[kind.kind] = AdminClient(
                self._session,
                kind.base_url(self.settings),
                token,
                self.settings.request_timeout,
                concurrency=per_host,
            )
        self.started = True

    async def stop(self) -> None:
        self.started = False
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self.kube.close()

    def readiness(self) -> dict[str, Any]:
        return {
            "ready": self.started,
            "services": {k: c.base_url for k, c in self._clients.items()},
        }

    def client(self, kind: Kind) -> AdminClient:
        return self._clients[kind.kind]

    async def missing_fallbacks(self, kind: Kind, spec: Mapping[str, Any]) -> list[str]:
        """Fallback models of a route that no route in the orchestrator serves (in order).

        Asks the orchestrator (what it holds is what a fallback can reach, whatever namespace
        or operator put it there); the answer is cached briefly so a resync pass over many
        routes costs one list call. Unknown (the orchestrator unreachable) counts as none
        missing: the Ready condition already says the service is unreachable.
        """
        if kind is not AI_MODEL_ROUTE:
            return []
        wanted = [str(m) for m in spec.get("fallbacks") or ()]
        if not wanted:
            return []
        now = time.monotonic()
        ttl = min(5.0, self.settings.resync_interval / 2)
        if self._served_models is None or now - self._served_models[0] > ttl:
            try:
                items = await self.client(kind).items(kind.admin_plural)
            except ServiceUnavailable:
                return []
            models = frozenset(
                str(item["spec"].get("model"))
                for item in items
                if isinstance(item.get("spec"), Mapping)
            )
            self._served_models = (now, models)
        served = self._served_models[1]
        return [model for model in wanted if model not in served]

    # -- apply (create / update / resume, and drift repair) ----------------------------------

    async def apply(
        self,
        kind: Kind,
        *,
        body: kopf.Body,
        patch: kopf.Patch,
        retry: int,
        drift: bool = False,
        replaced_revision: int | None = None,
    ) -> None:
        """PUT the spec and write the outcome into ``patch.status``.

        ``kopf.TemporaryError`` (with a backoff delay) when the service is unreachable or
        failed (5xx) or a referenced Secret is missing; a rejected spec is reported and not
        retried. ``replaced_revision``: the revision the service held when a resync re-sends
        the same generation; answered again, it was a replay (the content was ours after all),
        not drift.
        """
        started = time.monotonic()
        try:
            result = await self._apply(kind, body, patch, retry, drift, replaced_revision)
        except kopf.TemporaryError:
            RECONCILES.labels(kind=kind.kind, result="unavailable").inc()
            raise
        except Exception:
            RECONCILES.labels(kind=kind.kind, result="error").inc()
            raise
        finally:
            RECONCILE_DURATION.labels(kind=kind.kind).observe(time.monotonic() - started)
        RECONCILES.labels(kind=kind.kind, result=result).inc()

    async def _apply(
        self,
        kind: Kind,
        body: kopf.Body,
        patch: kopf.Patch,
        retry: int,
        drift: bool,
        replaced_revision: int | None,
    ) -> str:
        meta, spec = body.meta, body.spec
        namespace, name = str(meta["namespace"]), str(meta["name"])
        generation, uid = int(meta["generation"]), str(meta["uid"])
        client = self.client(kind)

        try:
            payload = await resolve_payload(self.kube, kind, namespace, spec)
        except SecretProblem as exc:
            report(kind, body, patch, _not_synced(exc.reason, exc.message), generation=generation)
            # The Secret may appear later (the Secret watch also re-syncs then).
            raise kopf.TemporaryError(exc.message, delay=backoff(self.settings, retry)) from None

        try:
            applied = await client.put(
                kind.admin_plural, namespace, name, generation=generation, uid=uid, spec=payload
            )
        except ServiceUnavailable as exc:
            reason, message = outage(kind, exc)
            report(kind, body, patch, _not_synced(reason, message), generation=generation)
            raise kopf.TemporaryError(message, delay=backoff(self.settings, retry)) from None
        except Rejected as exc:
            # The service's verdict on this generation: report it and stop. Retrying cannot
            # help; the next generation (a fixed spec) triggers a new apply.
            message = f"{kind.service} rejected generation {generation}: {exc.detail}"
            report(kind, body, patch, _not_synced(exc.reason, message), generation=generation)
            return "rejected"
        except StaleGeneration as exc:
            return await self._stale(kind, namespace, name, uid, generation, payload, exc)

        if drift and applied.revision == replaced_revision:
            drift = False  # a replay: the service already held this spec at this generation
        missing = await self.missing_fallbacks(kind, spec)
        return await self._applied(
            kind,
            body,
            patch,
            applied,
            generation=generation,
            drift=drift,
            missing_fallbacks=missing,
        )

    async def _applied(
        self,
        kind: Kind,
        body: kopf.Body,
        patch: kopf.Patch,
        applied: Applied,
        *,
        generation: int,
        drift: bool,
        missing_fallbacks: list[str],
    ) -> str:
        meta, status = body.meta, body.status
        namespace, name = str(meta["namespace"]), str(meta["name"])
        try:
            insight = await self.client(kind).insight(kind.admin_plural, namespace, name)
        except ServiceUnavailable:
            insight = None  # the apply worked; the resync timer fills the live figures later
        reason_message = (
            f"generation {generation} is live in {kind.service} as revision {applied.revision}"
        )
        live = live_conditions(kind, insight, reason_message, missing_fallbacks=missing_fallbacks)
        ready = live[0]
        if drift:
            kopf.event(
                body,
                type="Warning",
                reason="DriftRepaired",
                message=f"{kind.service} had lost or changed the config; re-applied "
                f"generation {generation} as revision {applied.revision}",
            )
        else:
            event_on_change(body, status, ready, generation=generation)
        extra: JSON = {"appliedRevision": applied.revision}
        if insight is not None:
            extra.update(kind.insight_status(insight))
        write_status(
            kind,
            meta,
            status,
            patch,
            [*live, Condition(SYNCED, True, "Applied", reason_message)],
            generation=generation,
            extra=extra,
        )
        if drift:
            return "drift_repaired"
        unchanged = (
            status.get("appliedRevision") == applied.revision
            and status.get("observedGeneration") == generation
        )
        return "unchanged" if unchanged else "applied"

    async def _stale(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        uid: str,
        generation: int,
        payload: JSON,
        exc: StaleGeneration,
    ) -> str:
        """409: the service holds a newer generation. Normally that is the newer spec of this
        very object (our event was outdated): done. But if the stored item belongs to an older
        object of the same name (deleted with the finalizer forced, then re-created), its
        generations are unrelated to ours: replace it."""
        client = self.client(kind)
        stored = next(
            (
                item
                for item in await client.items(kind.admin_plural)
                if item.get("namespace") == namespace and item.get("name") == name
            ),
            None,
        )
        if stored is None or stored.get("uid") in (None, uid):
            log.info(
                "%s %s/%s: stale generation %s, the service holds %s; nothing to do",
                kind.kind,
                namespace,
                name,
                generation,
                exc.stored_generation,
            )
            return "stale"
        await client.delete(kind.admin_plural, namespace, name)
        await client.put(
            kind.admin_plural, namespace, name, generation=generation, uid=uid, spec=payload
        )
        return "applied"

    # -- delete ------------------------------------------------------------------------------

    async def remove(self, kind: Kind, *, body: kopf.Body, retry: int) -> None:
        """DELETE from the service; the finalizer is released when this returns."""
        meta = body.meta
        namespace, name = str(meta["namespace"]), str(meta["name"])
        annotations = meta.get("annotations") or {}
        if str(annotations.get(FORCE_DELETE_ANNOTATION, "")).lower() == "true":
            _released_anyway(
                kind,
                body,
                "force_deleted",
                "ForceDeleted",
                f"{FORCE_DELETE_ANNOTATION} is set: released without removing the config from "
                f"{kind.service}",
            )
            return
        try:
            await self.client(kind).delete(kind.admin_plural, namespace, name)
        except (ServiceUnavailable, Rejected) as exc:
            waited = seconds_since(meta.get("deletionTimestamp"))
            if waited >= self.settings.delete_timeout:
                _released_anyway(
                    kind,
                    body,
                    "abandoned",
                    "CleanupAbandoned",
                    f"{kind.service} could not remove the config for {waited:.0f}s ({exc}); "
                    "finalizer released anyway",
                )
                return
            RECONCILES.labels(kind=kind.kind, result="unavailable").inc()
            raise kopf.TemporaryError(
                f"{kind.service} unavailable for delete ({exc}); the finalizer is released "
                f"after {self.settings.delete_timeout:.0f}s or with {FORCE_DELETE_ANNOTATION}",
                delay=backoff(self.settings, retry),
            ) from None
        RECONCILES.labels(kind=kind.kind, result="deleted").inc()
        RESOURCE_STATES.forget(kind.kind, namespace, name)
        log.info("%s %s/%s removed from %s", kind.kind, namespace, name, kind.service)
