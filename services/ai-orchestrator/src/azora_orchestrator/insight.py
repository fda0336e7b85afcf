"""This replica's backend health on the insight change feed (azora_common.changes).

A backend's health lives in the memory of each replica, and much of it changes with the clock
alone (an ejection ends at ``ejected_until``, the slow-start ramp grows), with no event to hook.
So every replica looks at its own view a few times a second, in memory (no I/O), and publishes
a route whose view changed: a backend's health (healthy / unknown / ejected / unhealthy) or its
effective weight, in tenths of its configured weight (a ramp is a few steps, not a stream).
The operator then copies ``GET /admin/v1/routes/{ns}/{name}/status`` into the route's status.

A route seen for the first time is published only when a backend's health is already known
(its first check passed before this look): installing it went through the operator, which wrote
a status with its backends ``unknown``; a later first change (``unknown`` -> ``healthy``) is
published like any other.
"""

from __future__ import annotations

import asyncio
import logging
import time

from azora_common.changes import ChangeFeed
from azora_common.tasks import stop_tasks
from azora_orchestrator.gateway import Gateway
from azora_orchestrator.routing import Route

log = logging.getLogger("azora.orchestrator.insight")

PLURAL = "routes"

Fingerprint = tuple[tuple[str, str, int], ...]


def fingerprint(route: Route, now: float) -> Fingerprint:
    """What the route's status shows of its backends, coarse enough to change in steps."""
    return tuple(
        (
            b.cfg.name,
            route.health(b, now),
            round(10 * route.effective_weight(b, now) / b.cfg.weight) if b.cfg.weight else 0,
        )
        for b in route.backends
    )


class HealthWatch:
    def __init__(self, gateway: Gateway, feed: ChangeFeed, interval_s: float = 0.25) -> None:
        self.gateway = gateway
        self.feed = feed
        self.interval = interval_s
        self._seen: dict[str, Fingerprint] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="health-watch")

    async def stop(self) -> None:
        await stop_tasks(self._task)

    def look(self, now: float) -> list[Route]:
        """Routes whose view changed since the last look (published to the feed)."""
        seen: dict[str, Fingerprint] = {}
        changed: list[Route] = []
        for key, route in self.gateway.table.by_key.items():
            seen[key] = fingerprint(route, now)
            before = self._seen.get(key)
            if before is None:
                before = tuple((name, "unknown", weight) for name, _, weight in seen[key])
            if before != seen[key]:
                changed.append(route)
                self.feed.publish(PLURAL, route.namespace, route.name)
        self._seen = seen
        return changed

    async def _run(self) -> None:
        while True:
            try:
                self.look(time.monotonic())
            except Exception:
                log.exception("health watch failed")
            await asyncio.sleep(self.interval)
