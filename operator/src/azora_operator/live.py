"""Live insight without the lag: refresh a resource's status when its service says it changed.

The resync timer copies live insight (seats, waitlist, redemptions, backend health) into status
every ``RESYNC_INTERVAL``. Between two firings the services announce on their insight change feed
(``azora_common.changes``) which object's insight changed; per kind with a feed, this task
long-polls ``GET /admin/v1/{plural}/changes?after=<cursor>&wait=<s>``, gathers the keys for
``COALESCE_S`` (a burst of enrollments is one refresh per cohort), reads each object from the API
server and runs the timer's own code (``resync.resync_object``: the same insight call, the same
mapping, the status written only when a reader would see a change, conditional on the object's
resourceVersion). When nothing changes it costs one idle long poll per service and no write.

``reset`` (the cursor belongs to another replica, a restarted service or a lost ``LISTEN``)
means changes may have been missed: every object of the kind is refreshed once. The timer stays
the safety net for anything a feed loses (a service down, a notification dropped).

Why a task started by ``@kopf.on.startup`` (like prune.py): the feed belongs to a service, not to
any one object, so no per-object Kopf timer or daemon can carry it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any, cast

import kopf

from azora_operator.client import ServiceUnavailable
from azora_operator.kinds import GROUP, KINDS, VERSION, Kind
from azora_operator.kube import KubeListError
from azora_operator.prune import NamespaceScope
from azora_operator.reconcile import Reconciler
from azora_operator.resync import resync_object

log = logging.getLogger("azora_operator")

# Admin plurals whose service serves an insight change feed (a kind whose status shows nothing
# live, such as a PricingPolicy, has none).
FEED_PLURALS = frozenset({"cohorts", "pricing-rules", "routes"})
LONG_POLL_S = 25.0  # under the usual idle timeouts of proxies between us and a service
COALESCE_S = 0.15
BACKOFF_MAX_S = 30.0
SETTLE_ATTEMPTS, SETTLE_DELAY_S = 20, 0.5


def _settled(body: dict[str, Any]) -> bool:
    status = body.get("status") or {}
    meta = body.get("metadata") or {}
    return bool(status.get("observedGeneration") == meta.get("generation"))


class LiveInsight:
    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler
        self.scope = NamespaceScope(reconciler.settings.namespaces)
        # Kopf posts Events (status.event_on_change) through context variables it sets only
        # in its own handlers' tasks; a refresh runs in a copy of a handler's context.
        self.context: contextvars.Context | None = None

    def adopt_context(self) -> None:
        """Called by Kopf handlers: the first one lends its context to the refreshes."""
        if self.context is None:
            self.context = contextvars.copy_context()

    def kinds(self) -> list[Kind]:
        return [k for k in KINDS if k.admin_plural in FEED_PLURALS]

    def tasks(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(self.follow(kind), name=f"live-insight:{kind.admin_plural}")
            for kind in self.kinds()
        ]

    async def follow(self, kind: Kind) -> None:
        """Long-poll one kind's feed until cancelled."""
        client = self.reconciler.client(kind)
        cursor: str | None = None
        backoff = 1.0
        while True:
            try:
                answer = await client.changes(kind.admin_plural, cursor, LONG_POLL_S)
                keys = [str(k) for k in answer["keys"]]
                if keys:
                    # A burst (a bulk enrollment, a batch of accepted quotes) is one refresh.
                    await asyncio.sleep(COALESCE_S)
                    more = await client.changes(kind.admin_plural, str(answer["cursor"]), 0)
                    if more.get("reset"):
                        answer = more
                    else:
                        keys += [str(k) for k in more["keys"]]
                        answer["cursor"] = more["cursor"]
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except ServiceUnavailable as exc:
                # Keep the cursor: the same replica may come back; another one answers reset.
                log.debug("insight feed of %s: %s", kind.service, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            except Exception:
                log.exception("insight feed of %s failed", kind.service)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            if answer.get("reset") and cursor is not None:
                log.info("insight feed of %s reset: refreshing every %s", kind.service, kind.kind)
                await self.refresh_all(kind)
            elif keys:
                await self.refresh(kind, dict.fromkeys(keys))
            cursor = str(answer["cursor"])

    async def refresh(self, kind: Kind, keys: dict[str, None]) -> None:
        if self.context is None:
            return  # no handler has run yet: nothing is applied, the handlers write status
        await asyncio.gather(
            *(
                asyncio.create_task(self.refresh_one(kind, key), context=self.context.copy())
                for key in keys
            )
        )

    async def refresh_one(self, kind: Kind, key: str) -> None:
        namespace, _, name = key.partition("/")
        if not name or namespace not in self.scope:
            return
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{kind.plural}"
        try:
            for _attempt in range(SETTLE_ATTEMPTS):
                body = await self.reconciler.kube.get_object(path, name)
                if body is None:
                    return
                if _settled(body):
                    await resync_object(self.reconciler, kind, kopf.Body(cast(kopf.RawBody, body)))
                    return
                # Its change handler has not reported this generation yet (a backend's first
                # check passes while the route is being created): the timer's body would leave
                # it alone, and the change would wait for the next resync. Look again shortly.
                await asyncio.sleep(SETTLE_DELAY_S)
        except (kopf.TemporaryError, KubeListError, ServiceUnavailable) as exc:
            log.debug("live insight of %s %s not refreshed: %s", kind.kind, key, exc)
        except Exception:
            log.exception("live insight of %s %s failed", kind.kind, key)

    async def refresh_all(self, kind: Kind) -> None:
        base = f"/apis/{GROUP}/{VERSION}"
        try:
            if self.scope.cluster_wide:
                objects = await self.reconciler.kube.list_objects(f"{base}/{kind.plural}")
            else:
                objects = []
                listed = await self.reconciler.kube.list_objects("/api/v1/namespaces")
                for ns in listed:
                    namespace = str((ns.get("metadata") or {}).get("name", ""))
                    if namespace in self.scope:
                        path = f"{base}/namespaces/{namespace}/{kind.plural}"
                        objects += await self.reconciler.kube.list_objects(path)
        except KubeListError as exc:
            log.info("live insight reset of %s skipped (the timer covers it): %s", kind.kind, exc)
            return
        if self.context is None:
            return
        for body in objects:
            await asyncio.create_task(self._resync(kind, body), context=self.context.copy())

    async def _resync(self, kind: Kind, body: dict[str, Any]) -> None:
        try:
            await resync_object(self.reconciler, kind, kopf.Body(cast(kopf.RawBody, body)))
        except kopf.TemporaryError:
            pass
        except Exception:
            log.exception("live insight of a %s failed", kind.kind)
