"""Wiring: which Kopf handler of which kind calls what, with which retries and timers.

``build_registry(settings)`` returns a fresh :class:`kopf.OperatorRegistry` with every handler
bound to one :class:`~azora_operator.reconcile.Reconciler`, so each ``azora-operator run`` gets
its own operator with its own settings (no module-level state besides Prometheus metrics).

Per kind (``kinds.KINDS``):

============================  ==============================================================
``on.create/update/resume``   ``Reconciler.apply``: PUT the spec, report (reconcile.py)
``on.delete``                 ``Reconciler.remove``: DELETE, then Kopf drops the finalizer
``timer`` ``resync``          ``resync.resync_object``: drift repair and live insight
============================  ==============================================================

and, per kind whose service has an insight change feed, a long poll that runs the same
``resync_object`` for just the objects whose insight changed (live.py).

and for AIModelRoute's Secrets an index (Secret → routes) and a Secret watch (secrets.py).
Besides the handlers, ``@kopf.on.startup`` starts the orphan sweep (prune.py) as a task of the
operator process: it is about configs that have *no* object, so no per-object timer can carry it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
from aiohttp import web

from azora_operator.http import build_app, start_server
from azora_operator.kinds import AI_MODEL_ROUTE, GROUP, KINDS, VERSION, Kind
from azora_operator.live import LiveInsight
from azora_operator.prune import OrphanSweep
from azora_operator.reconcile import Reconciler
from azora_operator.resync import resync_object
from azora_operator.secrets import ROUTE_SECRETS_INDEX, SecretRotation, index_route_secrets
from azora_operator.settings import OperatorSettings

FINALIZER = "azora.io/cleanup"
ANNOTATION_PREFIX = "azora.io"

# A resource whose spec changed less than this ago is left to its change handlers: the resync
# timer waits (Kopf's ``idle``) until the object has been quiet this long.
SETTLE_SECONDS = 1.0


def build_registry(settings: OperatorSettings) -> tuple[kopf.OperatorRegistry, Reconciler]:
    """A registry with all handlers bound to a new :class:`Reconciler`."""
    registry = kopf.OperatorRegistry()
    reconciler = Reconciler(settings)
    rotation = SecretRotation(reconciler.kube)
    live = LiveInsight(reconciler)
    server: list[web.AppRunner] = []
    tasks: list[asyncio.Task[None]] = []

    @kopf.on.startup(registry=registry)
    async def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
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
        # transitions only; Kopf would also post every retry of a temporary error as an
        # Event, which floods `kubectl describe` during an outage. Its log lines stay in the
        # operator's log.
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
        server.append(await start_server(build_app(reconciler.readiness), own.host, own.port))
        sweep = OrphanSweep(reconciler)
        if sweep.kinds():
            tasks.append(asyncio.create_task(sweep.run(), name="orphan-sweep"))
        tasks.extend(live.tasks())

    @kopf.on.cleanup(registry=registry)
    async def _cleanup(**_: Any) -> None:
        while tasks:
            task = tasks.pop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        while server:
            await server.pop().cleanup()
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
        _register_kind(registry, reconciler, kind, live)

    kopf.index(GROUP, VERSION, AI_MODEL_ROUTE.plural, id=ROUTE_SECRETS_INDEX, registry=registry)(
        index_route_secrets
    )

    @kopf.on.event("", "v1", "secrets", registry=registry)
    async def _secret_event(
        *,
        event: kopf.RawEvent,
        body: kopf.Body,
        namespace: str | None,
        name: str,
        **kwargs: Any,
    ) -> None:
        index: kopf.Index[tuple[str, str], dict[str, Any]] = kwargs[ROUTE_SECRETS_INDEX]
        await rotation.changed(
            reconciler.client(AI_MODEL_ROUTE),
            namespace=str(namespace),
            name=name,
            body=body,
            event_type=event.get("type"),
            routes=list(index.get((str(namespace), name), [])),
        )

    return registry, reconciler


def _register_kind(
    registry: kopf.OperatorRegistry, reconciler: Reconciler, kind: Kind, live: LiveInsight
) -> None:
    resource = (GROUP, VERSION, kind.plural)
    settings = reconciler.settings

    # Kopf's meta, spec and status arguments are views of ``body``: it alone is passed on.
    async def apply(*, body: kopf.Body, patch: kopf.Patch, retry: int, **_: Any) -> None:
        live.adopt_context()
        await reconciler.apply(kind, body=body, patch=patch, retry=retry)

    async def remove(*, body: kopf.Body, retry: int, **_: Any) -> None:
        await reconciler.remove(kind, body=body, retry=retry)

    async def resync(*, body: kopf.Body, **_: Any) -> None:
        live.adopt_context()
        await resync_object(reconciler, kind, body)

    # An unreachable service raises kopf.TemporaryError with its own exponential delay
    # (reconcile.backoff); ``backoff`` is what Kopf waits after any other error.
    backoff = settings.backoff_max
    kopf.on.resume(*resource, id="apply", backoff=backoff, registry=registry)(apply)
    kopf.on.create(*resource, id="apply", backoff=backoff, registry=registry)(apply)
    kopf.on.update(*resource, id="apply", field="spec", backoff=backoff, registry=registry)(apply)
    kopf.on.delete(*resource, id="remove", backoff=backoff, registry=registry)(remove)
    kopf.timer(
        *resource,
        id="resync",
        registry=registry,
        interval=settings.resync_interval,
        initial_delay=settings.resync_initial_delay,
        # Not while the spec changed a moment ago: its change handler owns the object.
        idle=min(settings.resync_interval, SETTLE_SECONDS),
        # A failed firing (an error, or a drift repair that could not reach the service)
        # is tried again after one interval, as a successful one is.
        backoff=settings.resync_interval,
    )(resync)
