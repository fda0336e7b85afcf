"""Kopf handlers: apply specs to the services' admin APIs, report conditions, repair drift.

``build_registry(settings)`` returns a fresh :class:`kopf.OperatorRegistry` with every handler
bound to one :class:`Reconciler`, so tests and ``azora-operator run`` each get their own
operator with their own settings (no module-level state besides Prometheus metrics).

Every handler is idempotent: the admin PUT is generation-stamped (the same generation and spec
is a no-op for the service; an older one is refused with 409), so a re-run after a crash, a
restart mid-way, or the resync loop racing an update cannot apply anything twice
or let an old spec win.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import hashlib
import logging
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
import kopf

from azora_operator import conditions as cond
from azora_operator.client import (
    AdminClient,
    Applied,
    Rejected,
    ServiceUnavailable,
    StaleGeneration,
)
from azora_operator.conditions import DEGRADED, READY, SYNCED, Condition
from azora_operator.http import build_app, start_server
from azora_operator.kinds import AI_MODEL_ROUTE, GROUP, KINDS, VERSION, Kind
from azora_operator.kube import KubeReader, SecretProblem
from azora_operator.metrics import RECONCILE_DURATION, RECONCILES, RESOURCE_STATES
from azora_operator.settings import OperatorSettings

FINALIZER = "azora.io/cleanup"
FORCE_DELETE_ANNOTATION = "azora.io/force-delete"
ANNOTATION_PREFIX = "azora.io"

# Reasons on Synced=False that are the spec's fault for this generation: the resync must not
# re-send such a spec (it would only be refused again); a new generation will be applied.
_RETRYABLE_REASONS = frozenset({"ServiceUnavailable"})

JSON = dict[str, Any]

log = logging.getLogger("azora_operator")


def _backoff(settings: OperatorSettings, retry: int) -> float:
    return float(min(settings.backoff_base * (2 ** min(retry, 16)), settings.backoff_max))


def _plain(value: Any) -> Any:
    """A deep, mutable copy of a Kopf body view (its mappings are read-only)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return copy.copy(value)


def _state(conditions: list[JSON]) -> str:
    if cond.condition_status(conditions, READY) != "True":
        return "NotReady"
    if cond.condition_status(conditions, DEGRADED) == "True":
        return "Degraded"
    return "Ready"


def _live_conditions(
    kind: Kind, insight: Mapping[str, Any] | None, message: str
) -> list[Condition]:
    """Ready and Degraded for a config the service holds, refined by its live insight."""
    degradation = kind.degradation(insight) if insight is not None else None
    ready = Condition(READY, True, "Applied", message)
    if kind is AI_MODEL_ROUTE and insight is not None:
        figures = kind.insight_status(insight)
        if figures["totalBackends"] and figures["healthyBackends"] == 0:
            ready = Condition(READY, False, "NoHealthyBackends", "every backend is ejected")
    if degradation is None:
        degraded = Condition(DEGRADED, False, "AsExpected", "no trouble reported by the service")
    else:
        degraded = Condition(DEGRADED, True, degradation.reason, degradation.message)
    return [ready, degraded]


class Reconciler:
    """The operator's state: settings, one HTTP session, one admin client per kind."""

    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self.kube = KubeReader(
            timeout=settings.kube_request_timeout, connections=settings.kube_connections
        )
        self._session: aiohttp.ClientSession | None = None
        self._clients: dict[str, AdminClient] = {}
        self._runner: Any = None
        self._started = False
        # Secret (namespace, name) → digest of its data: tells a real change from a resync.
        # Only a digest is kept, never the value.
        self._secret_digests: dict[tuple[str, str], str] = {}
        # Objects a Kopf handler is working on right now (kind, namespace, name): the resync
        # pass leaves them alone, as Kopf's per-object timer did with ``idle``.
        self._busy: set[tuple[str, str, str]] = set()
        self._resync_task: asyncio.Task[None] | None = None
        self._event_tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

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
        self._runner = await start_server(
            build_app(self.readiness), self.settings.host, self.settings.port
        )
        self._started = True

    def start_resync(self, indices: Mapping[str, Any]) -> None:
        """Start the one operator-wide resync loop over the Kopf indices of the three kinds."""
        self._resync_task = asyncio.create_task(self._resync_loop(indices), name="azora-resync")

    async def stop(self) -> None:
        self._started = False
        if self._resync_task is not None:
            self._resync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resync_task
            self._resync_task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self.kube.close()

    def readiness(self) -> dict[str, Any]:
        return {
            "ready": self._started,
            "services": {k: c.base_url for k, c in self._clients.items()},
        }

    def client(self, kind: Kind) -> AdminClient:
        return self._clients[kind.kind]

    # -- building the admin payload ----------------------------------------------------------

    async def payload(self, kind: Kind, namespace: str, spec: Mapping[str, Any]) -> JSON:
        """The spec as the service takes it; for routes, Secret references become ``apiKey``."""
        body: JSON = _plain(spec)
        if kind is AI_MODEL_ROUTE:
            cache: dict[tuple[str, str], str] = {}
            for backend in body.get("backends") or []:
                ref = backend.pop("apiKeySecretRef", None)
                if not isinstance(ref, Mapping):
                    continue
                key = (str(ref.get("name")), str(ref.get("key")))
                if key not in cache:
                    cache[key] = await self.kube.secret_value(namespace, key[0], key[1])
                backend["apiKey"] = cache[key]
        return body

    # -- status ------------------------------------------------------------------------------

    def _write_status(
        self,
        kind: Kind,
        meta: Mapping[str, Any],
        status: Mapping[str, Any],
        patch: kopf.Patch,
        updates: list[Condition],
        *,
        generation: int,
        extra: JSON | None = None,
    ) -> list[JSON]:
        conditions = cond.merge_conditions(status.get("conditions"), updates, generation=generation)
        patch.status["conditions"] = conditions
        patch.status["observedGeneration"] = generation
        patch.status["lastSyncTime"] = cond.now_rfc3339()
        for key, value in (extra or {}).items():
            patch.status[key] = value
        RESOURCE_STATES.set(kind.kind, meta["namespace"], meta["name"], _state(conditions))
        return conditions

    def _event(self, body: kopf.Body, *, type: str, reason: str, message: str) -> None:
        """Post an Event: through Kopf inside its handlers, ourselves in the resync loop.

        Kopf's ``kopf.event`` needs the per-object context Kopf sets up for handlers; the
        resync loop is not a handler, so it posts with the operator's own session instead
        (same Event shape). Posting never blocks or fails the reconcile.
        """
        if not _IN_RESYNC_LOOP.get():
            kopf.event(body, type=type, reason=reason, message=message)
            return
        involved = {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "name": body.meta.get("name"),
            "uid": body.meta.get("uid"),
            "namespace": body.meta.get("namespace"),
        }
        task = asyncio.create_task(self._post_event(involved, type, reason, message))
        # Keep a reference until it is done (the loop holds only weak ones).
        self._event_tasks.add(task)
        task.add_done_callback(self._event_tasks.discard)

    async def _post_event(self, involved: JSON, type_: str, reason: str, message: str) -> None:
        try:
            await self.kube.post_event(involved, type_, reason, message)
        except Exception as exc:  # an Event is best effort, like Kopf's own
            log.warning("posting Event %s failed: %s", reason, exc)

    def _event_on_change(
        self,
        body: kopf.Body,
        status: Mapping[str, Any],
        new: Condition,
        *,
        generation: int,
    ) -> None:
        """Post an Event when Ready's status or reason changes, or a new generation lands."""
        old_conditions = status.get("conditions")
        changed = (
            cond.condition_status(old_conditions, READY) != new.status_text
            or cond.condition_reason(old_conditions, READY) != new.reason
            or status.get("observedGeneration") != generation
        )
        if not changed:
            return
        if new.status:
            self._event(body, type="Normal", reason=new.reason, message=new.message)
        else:
            self._event(body, type="Warning", reason=new.reason, message=new.message)

    # -- apply (create / update / resume) ----------------------------------------------------

    async def apply(
        self,
        kind: Kind,
        *,
        body: kopf.Body,
        meta: Mapping[str, Any],
        spec: Mapping[str, Any],
        status: Mapping[str, Any],
        patch: kopf.Patch,
        retry: int,
        drift: bool = False,
    ) -> None:
        started = time.monotonic()
        try:
            result = await self._apply(
                kind,
                body=body,
                meta=meta,
                spec=spec,
                status=status,
                patch=patch,
                retry=retry,
                drift=drift,
            )
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
        *,
        body: kopf.Body,
        meta: Mapping[str, Any],
        spec: Mapping[str, Any],
        status: Mapping[str, Any],
        patch: kopf.Patch,
        retry: int,
        drift: bool,
    ) -> str:
        namespace, name = str(meta["namespace"]), str(meta["name"])
        generation, uid = int(meta["generation"]), str(meta["uid"])
        client = self.client(kind)

        try:
            payload = await self.payload(kind, namespace, spec)
        except SecretProblem as exc:
            ready = Condition(READY, False, exc.reason, exc.message)
            self._event_on_change(body, status, ready, generation=generation)
            self._write_status(
                kind,
                meta,
                status,
                patch,
                [ready, Condition(SYNCED, False, exc.reason, exc.message)],
                generation=generation,
            )
            # The Secret may appear later (the Secret watch also re-syncs then).
            raise kopf.TemporaryError(exc.message, delay=_backoff(self.settings, retry)) from None

        try:
            applied = await client.put(
                kind.admin_plural, namespace, name, generation=generation, uid=uid, spec=payload
            )
        except ServiceUnavailable as exc:
            message = f"{kind.service} is unreachable: {exc}; retrying"
            ready = Condition(READY, False, "ServiceUnavailable", message)
            self._event_on_change(body, status, ready, generation=generation)
            self._write_status(
                kind,
                meta,
                status,
                patch,
                [ready, Condition(SYNCED, False, "ServiceUnavailable", message)],
                generation=generation,
            )
            raise kopf.TemporaryError(message, delay=_backoff(self.settings, retry)) from None
        except Rejected as exc:
            # The service's verdict on this generation: report it and stop. Retrying cannot
            # help; the next generation (a fixed spec) triggers a new apply.
            message = f"{kind.service} rejected generation {generation}: {exc.detail}"
            ready = Condition(READY, False, exc.reason, message)
            self._event_on_change(body, status, ready, generation=generation)
            self._write_status(
                kind,
                meta,
                status,
                patch,
                [ready, Condition(SYNCED, False, exc.reason, message)],
                generation=generation,
            )
            return "rejected"
        except StaleGeneration as exc:
            return await self._stale(kind, namespace, name, uid, generation, payload, exc)

        return await self._applied(
            kind, body, meta, status, patch, applied, generation=generation, drift=drift
        )

    async def _applied(
        self,
        kind: Kind,
        body: kopf.Body,
        meta: Mapping[str, Any],
        status: Mapping[str, Any],
        patch: kopf.Patch,
        applied: Applied,
        *,
        generation: int,
        drift: bool,
    ) -> str:
        namespace, name = str(meta["namespace"]), str(meta["name"])
        try:
            insight = await self.client(kind).insight(kind.admin_plural, namespace, name)
        except ServiceUnavailable:
            insight = None  # the apply worked; the resync fills the live figures later
        reason_message = (
            f"generation {generation} is live in {kind.service} as revision {applied.revision}"
        )
        live = _live_conditions(kind, insight, reason_message)
        ready = live[0]
        if drift:
            self._event(
                body,
                type="Warning",
                reason="DriftRepaired",
                message=f"{kind.service} had lost or changed the config; re-applied "
                f"generation {generation} as revision {applied.revision}",
            )
        else:
            self._event_on_change(body, status, ready, generation=generation)
        extra: JSON = {"appliedRevision": applied.revision}
        if insight is not None:
            extra.update(kind.insight_status(insight))
        self._write_status(
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

    async def remove(
        self, kind: Kind, *, body: kopf.Body, meta: Mapping[str, Any], retry: int
    ) -> None:
        namespace, name = str(meta["namespace"]), str(meta["name"])
        annotations = meta.get("annotations") or {}
        if str(annotations.get(FORCE_DELETE_ANNOTATION, "")).lower() == "true":
            self._event(
                body,
                type="Warning",
                reason="ForceDeleted",
                message=f"{FORCE_DELETE_ANNOTATION} is set: released without removing the "
                f"config from {kind.service}",
            )
            RECONCILES.labels(kind=kind.kind, result="force_deleted").inc()
            RESOURCE_STATES.forget(kind.kind, namespace, name)
            return
        try:
            await self.client(kind).delete(kind.admin_plural, namespace, name)
        except (ServiceUnavailable, Rejected) as exc:
            waited = _seconds_since(meta.get("deletionTimestamp"))
            if waited >= self.settings.delete_timeout:
                self._event(
                    body,
                    type="Warning",
                    reason="CleanupAbandoned",
                    message=f"{kind.service} could not remove the config for {waited:.0f}s "
                    f"({exc}); finalizer released anyway",
                )
                RECONCILES.labels(kind=kind.kind, result="abandoned").inc()
                RESOURCE_STATES.forget(kind.kind, namespace, name)
                return
            RECONCILES.labels(kind=kind.kind, result="unavailable").inc()
            raise kopf.TemporaryError(
                f"{kind.service} unavailable for delete ({exc}); the finalizer is released "
                f"after {self.settings.delete_timeout:.0f}s or with {FORCE_DELETE_ANNOTATION}",
                delay=_backoff(self.settings, retry),
            ) from None
        RECONCILES.labels(kind=kind.kind, result="deleted").inc()
        RESOURCE_STATES.forget(kind.kind, namespace, name)
        log.info("%s %s/%s removed from %s", kind.kind, namespace, name, kind.service)

    # -- resync of one resource: drift repair and live insight -----------------------------

    async def resync(
        self,
        kind: Kind,
        *,
        body: kopf.Body,
        meta: Mapping[str, Any],
        spec: Mapping[str, Any],
        status: Mapping[str, Any],
        patch: kopf.Patch,
    ) -> None:
        if meta.get("deletionTimestamp"):
            return
        namespace, name = str(meta["namespace"]), str(meta["name"])
        generation = int(meta["generation"])
        conditions = status.get("conditions")
        synced = cond.condition_status(conditions, SYNCED)
        synced_reason = cond.condition_reason(conditions, SYNCED)
        if synced is None:
            return  # never applied yet: the create/resume handler owns the first apply
        if (
            synced == "False"
            and synced_reason not in _RETRYABLE_REASONS
            and status.get("observedGeneration") == generation
        ):
            return  # rejected (or a Secret problem the apply handler retries): nothing to sync
        try:
            insight = await self.client(kind).insight(kind.admin_plural, namespace, name)
        except ServiceUnavailable as exc:
            if cond.condition_status(conditions, READY) == "True":
                message = f"{kind.service} is unreachable: {exc}"
                ready = Condition(READY, False, "ServiceUnavailable", message)
                self._event_on_change(body, status, ready, generation=generation)
                self._write_status(kind, meta, status, patch, [ready], generation=generation)
            return
        stored_generation = insight.get("generation") if insight is not None else None
        if insight is None or (
            isinstance(stored_generation, int) and stored_generation < generation
        ):
            # Lost (e.g. a database restore) or behind: put our generation back.
            was_applied = synced == "True"
            await self.apply(
                kind,
                body=body,
                meta=meta,
                spec=spec,
                status=status,
                patch=patch,
                retry=0,
                drift=was_applied,
            )
            return
        if stored_generation != generation:
            # Newer than our body: our view lags behind an update kopf will deliver next.
            return
        message = f"generation {generation} is live in {kind.service}"
        revision = insight.get("revision")
        if isinstance(revision, int):
            message += f" as revision {revision}"
        live = _live_conditions(kind, insight, message)
        self._event_on_change(body, status, live[0], generation=generation)
        updates = list(live)
        if synced != "True":
            updates.append(Condition(SYNCED, True, "Applied", message))
        extra = kind.insight_status(insight)
        if isinstance(revision, int):
            extra["appliedRevision"] = revision
        self._write_status(kind, meta, status, patch, updates, generation=generation, extra=extra)
        RECONCILES.labels(kind=kind.kind, result="resynced").inc()

    # -- the operator-wide resync loop -------------------------------------------------------
    #
    # One task for all resources instead of a Kopf timer per object: a per-object timer is an
    # asyncio task plus Kopf's per-object daemon state, and each firing wrote status (a PATCH
    # and a watch event) even when nothing had changed. The loop reads Kopf's in-memory
    # indices (kept current by the watch, no API calls), checks every resource against its
    # service with bounded concurrency, and writes status only when it changed.

    @contextlib.contextmanager
    def handling(self, kind: Kind, meta: Mapping[str, Any]) -> Iterator[None]:
        """Mark an object as being handled by a Kopf handler (the resync skips it)."""
        key = (kind.kind, str(meta["namespace"]), str(meta["name"]))
        self._busy.add(key)
        try:
            yield
        finally:
            self._busy.discard(key)

    async def _resync_loop(self, indices: Mapping[str, Any]) -> None:
        _IN_RESYNC_LOOP.set(True)  # this task and the ones it starts: see _event
        await asyncio.sleep(self.settings.resync_initial_delay)
        while True:
            started = time.monotonic()
            try:
                await self.resync_all(indices)
            except Exception:  # one bad pass must not end drift repair for good
                log.exception("resync pass failed")
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(self.settings.resync_interval - elapsed, 0.1))

    async def resync_all(self, indices: Mapping[str, Any]) -> None:
        """One pass over every indexed resource (snapshot of the indices at its start)."""
        entries: list[tuple[Kind, JSON]] = []
        for kind in KINDS:
            index = indices.get(_index_id(kind))
            if index is None:
                continue
            for key in list(index):
                entries.extend((kind, entry) for entry in list(index.get(key, [])))
        slots = asyncio.Semaphore(self.settings.resync_concurrency)

        async def one(kind: Kind, entry: JSON) -> None:
            async with slots:
                try:
                    await self.resync_entry(kind, entry)
                except Exception:
                    meta = entry["body"]["metadata"]
                    log.exception(
                        "resync of %s %s/%s failed",
                        kind.kind,
                        meta.get("namespace"),
                        meta.get("name"),
                    )

        await asyncio.gather(*(one(kind, entry) for kind, entry in entries))

    async def resync_entry(self, kind: Kind, entry: JSON) -> None:
        """Drift repair and live insight for one resource, from its indexed body."""
        meta = entry["body"]["metadata"]
        key = (kind.kind, str(meta["namespace"]), str(meta["name"]))
        # Skip what a handler is working on or what changed a moment ago (its handler may
        # not have started yet): the next pass sees the result.
        if key in self._busy or time.monotonic() - entry.get("seen", 0.0) < _SETTLE_SECONDS:
            return
        body = kopf.Body(copy.deepcopy(entry["body"]))
        patch = kopf.Patch()
        try:
            await self.resync(
                kind, body=body, meta=body.meta, spec=body.spec, status=body.status, patch=patch
            )
        except kopf.TemporaryError as exc:
            # A drift repair that could not reach the service (or resolve a Secret): its
            # status is in the patch; the next pass tries again.
            log.info("resync of %s %s/%s: %s", kind.kind, key[1], key[2], exc)
        written = patch.get("status")
        if not written or not _status_differs(body.status, written, self.settings.status_heartbeat):
            return
        outcome = await self.kube.patch_status(
            f"{GROUP}/{VERSION}",
            kind.plural,
            key[1],
            key[2],
            dict(written),
            meta.get("resourceVersion"),
        )
        if outcome != "ok":
            log.debug("resync of %s %s/%s: status not written (%s)", *key, outcome)

    # -- Secrets referenced by routes --------------------------------------------------------

    async def secret_changed(
        self,
        *,
        namespace: str,
        name: str,
        body: Mapping[str, Any],
        event_type: str | None,
        routes: list[JSON],
    ) -> None:
        """Re-send routes whose API key Secret really changed (not on every resync event)."""
        key = (namespace, name)
        if event_type == "DELETED":
            self._secret_digests.pop(key, None)
            return
        data = body.get("data") or {}
        digest = hashlib.sha256(repr(sorted(data.items())).encode()).hexdigest()
        previous = self._secret_digests.get(key)
        self._secret_digests[key] = digest
        if previous is None or previous == digest or not routes:
            return
        client = self.client(AI_MODEL_ROUTE)
        for route in routes:
            try:
                payload = await self.payload(AI_MODEL_ROUTE, namespace, route["spec"])
                await client.put(
                    AI_MODEL_ROUTE.admin_plural,
                    namespace,
                    route["name"],
                    generation=route["generation"],
                    uid=route["uid"],
                    spec=payload,
                )
            except (ServiceUnavailable, Rejected, StaleGeneration, SecretProblem) as exc:
                # The route's own handlers and the resync report and retry; this is a fast path.
                log.warning(
                    "re-sending route %s/%s after Secret %s changed failed: %s",
                    namespace,
                    route["name"],
                    name,
                    type(exc).__name__,
                )
            else:
                RECONCILES.labels(kind=AI_MODEL_ROUTE.kind, result="secret_resynced").inc()


_IN_RESYNC_LOOP: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "azora_in_resync_loop", default=False
)

# An object whose last watch event is younger than this is left to its handlers this pass.
_SETTLE_SECONDS = 1.0


def _index_id(kind: Kind) -> str:
    return f"resync_{kind.plural}"


def _status_differs(
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
    return _seconds_since(current.get("lastSyncTime"), missing=float("inf")) >= heartbeat


def _normalized(value: Any) -> Any:
    """Drop ``None`` members the API server does not store (it prunes nulls in lists' items)."""
    if isinstance(value, Mapping):
        return {k: _normalized(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_normalized(v) for v in value]
    return value


def _seconds_since(timestamp: Any, *, missing: float = 0.0) -> float:
    if not isinstance(timestamp, str):
        return missing
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return missing
    return (datetime.now(UTC) - then).total_seconds()


def build_registry(
    settings: OperatorSettings, *, per_object_timers: bool = False
) -> tuple[kopf.OperatorRegistry, Reconciler]:
    """A registry with all handlers bound to a new :class:`Reconciler`.

    ``per_object_timers`` replaces the operator-wide resync loop with a Kopf timer per object:
    for peering, where Kopf pauses a standby replica's handlers and timers but knows nothing
    of our own loop (a paused standby must not repair drift or write status).
    """
    registry = kopf.OperatorRegistry()
    reconciler = Reconciler(settings)

    @kopf.on.startup(registry=registry)
    async def _startup(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
        own = reconciler.settings
        settings.persistence.finalizer = FINALIZER
        # Progress and the diff base live in our own annotations: the CRD schemas prune
        # undeclared status fields, and a status-based store would be silently lost.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix=ANNOTATION_PREFIX
        )
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
        )
        # Our own Events (kopf.event, which ignores this level) say what happened, on
        # transitions only; Kopf would also post every
        # retry of a temporary error as an Event, which floods `kubectl describe` during an
        # outage. Its log lines stay in the operator's log.
        settings.posting.level = logging.CRITICAL
        settings.watching.server_timeout = own.watch_server_timeout
        settings.watching.client_timeout = own.watch_server_timeout + 30
        settings.networking.request_timeout = own.kube_request_timeout
        settings.execution.max_workers = 4  # only login runs in threads
        # One worker per object with events, no limit: a cold start with hundreds of
        # resources runs their handlers concurrently; the admin clients bound the load on
        # each service. Idle workers exit after a second instead of five (memory).
        settings.queueing.worker_limit = None
        settings.queueing.idle_timeout = 1.0
        await reconciler.start()
        # Kopf hands every handler all indices (empty until the watch lists the objects).
        if not per_object_timers:
            reconciler.start_resync({_index_id(kind): kwargs[_index_id(kind)] for kind in KINDS})

    @kopf.on.cleanup(registry=registry)
    async def _cleanup(**_: Any) -> None:
        await reconciler.stop()

    @kopf.on.login(registry=registry)
    async def _login(**kwargs: Any) -> kopf.AiohttpSession | None:
        # Async so the session is created in the operator's loop. Kopf and our own calls
        # share it (see KubeReader: Kopf's default session has no connection limit).
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(
            **kwargs
        ) or kopf.login_with_kubeconfig(**kwargs)
        return reconciler.kube.use(info) if info is not None else None

    for kind in KINDS:
        _register_kind(registry, reconciler, kind, per_object_timers=per_object_timers)

    @kopf.index(GROUP, VERSION, AI_MODEL_ROUTE.plural, id="route_secrets", registry=registry)
    def route_secrets(
        *, namespace: str | None, name: str, meta: kopf.Meta, spec: kopf.Spec, **_: Any
    ) -> dict[tuple[str, str], JSON]:
        refs: dict[tuple[str, str], JSON] = {}
        for backend in spec.get("backends") or []:
            ref = backend.get("apiKeySecretRef")
            if isinstance(ref, Mapping) and ref.get("name"):
                refs[(str(namespace), str(ref["name"]))] = {
                    "name": name,
                    "uid": meta["uid"],
                    "generation": meta["generation"],
                    "spec": _plain(spec),
                }
        return refs

    @kopf.on.event("", "v1", "secrets", registry=registry)
    async def _secret_event(
        *,
        event: kopf.RawEvent,
        body: kopf.Body,
        namespace: str | None,
        name: str,
        **kwargs: Any,
    ) -> None:
        index: kopf.Index[tuple[str, str], JSON] = kwargs["route_secrets"]
        routes = list(index.get((str(namespace), name), []))
        await reconciler.secret_changed(
            namespace=str(namespace),
            name=name,
            body=body,
            event_type=event.get("type"),
            routes=routes,
        )

    return registry, reconciler


def _register_kind(
    registry: kopf.OperatorRegistry, reconciler: Reconciler, kind: Kind, *, per_object_timers: bool
) -> None:
    resource = (GROUP, VERSION, kind.plural)

    async def apply(
        *,
        param: Any = None,
        body: kopf.Body,
        meta: kopf.Meta,
        spec: kopf.Spec,
        status: kopf.Status,
        patch: kopf.Patch,
        retry: int,
        **_: Any,
    ) -> None:
        with reconciler.handling(param, meta):
            await reconciler.apply(
                param, body=body, meta=meta, spec=spec, status=status, patch=patch, retry=retry
            )

    async def remove(
        *, param: Any = None, body: kopf.Body, meta: kopf.Meta, retry: int, **_: Any
    ) -> None:
        with reconciler.handling(param, meta):
            await reconciler.remove(param, body=body, meta=meta, retry=retry)

    def index(
        *, body: kopf.Body, namespace: str | None, name: str, **_: Any
    ) -> dict[tuple[str, str], JSON]:
        # What the resync loop needs of each object: a compact copy of the body (without
        # managedFields and Kopf's annotations) and when its last event arrived.
        meta = body.meta
        compact = {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "metadata": {
                "namespace": namespace,
                "name": name,
                "uid": meta.get("uid"),
                "generation": meta.get("generation"),
                "resourceVersion": meta.get("resourceVersion"),
                "deletionTimestamp": meta.get("deletionTimestamp"),
            },
            "spec": _plain(body.spec),
            "status": _plain(body.status),
        }
        return {(str(namespace), name): {"body": compact, "seen": time.monotonic()}}

    kopf.on.resume(*resource, id="apply", param=kind, registry=registry)(apply)
    kopf.on.create(*resource, id="apply", param=kind, registry=registry)(apply)
    kopf.on.update(*resource, id="apply", param=kind, field="spec", registry=registry)(apply)
    kopf.on.delete(*resource, id="remove", param=kind, registry=registry)(remove)
    if not per_object_timers:
        kopf.index(*resource, id=_index_id(kind), registry=registry)(index)
        return

    async def resync(
        *,
        param: Any = None,
        body: kopf.Body,
        meta: kopf.Meta,
        spec: kopf.Spec,
        status: kopf.Status,
        patch: kopf.Patch,
        **_: Any,
    ) -> None:
        await reconciler.resync(param, body=body, meta=meta, spec=spec, status=status, patch=patch)
        written = patch.get("status")
        if written and not _status_differs(status, written, reconciler.settings.status_heartbeat):
            del patch["status"]  # nothing a reader would see: no PATCH, no watch event

    settings = reconciler.settings
    kopf.timer(
        *resource,
        id="resync",
        param=kind,
        registry=registry,
        interval=settings.resync_interval,
        initial_delay=settings.resync_initial_delay,
        # Not while an apply is in flight or the object changed a moment ago.
        idle=min(settings.resync_interval, _SETTLE_SECONDS),
    )(resync)
