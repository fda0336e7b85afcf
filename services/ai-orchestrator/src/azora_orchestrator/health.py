"""Active health checks: ``GET <backend url><path>`` on each route's interval.

Every route is checked from the moment it is installed (the first round runs within half a
second): with its ``health.activeCheck`` (a 2xx passes), or else with the default probe
(``GET <url>/models`` every 10 s, any answer below 500 passes; see routing.py). Until a backend
has answered once (a passing check or a successful request) its health is ``unknown`` and it
does not count towards the route's readiness.

A backend fails ``active_unhealthy_threshold`` checks in a row -> no traffic; one passing check
brings it back through slow start. Passive ejection (from real traffic) is separate: a backend
must pass both to receive requests.

One probe per endpoint and round: the backends due in a round that would send the same request
(URL, headers) and judge it by the same rule share one probe and its answer, so 500 routes in
front of one model server cost that server one request per interval, not 1,000. At most
``active_check_concurrency`` probes are in flight, and a probe's timeout starts when it is sent
(not while it waits for a slot), so a burst of checks never fails on the gateway's own queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable

import aiohttp

from azora_common.tasks import stop_tasks
from azora_orchestrator.gateway import Gateway
from azora_orchestrator.routing import Backend, Route

log = logging.getLogger("azora.orchestrator.health")


class ActiveHealthChecker:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._task: asyncio.Task[None] | None = None
        # Next due time per backend state; states survive swaps, so do the schedules.
        self._due: dict[int, float] = {}
        self._slots = asyncio.Semaphore(gateway.settings.active_check_concurrency)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="active-health")

    async def stop(self) -> None:
        await stop_tasks(self._task)

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("active health round failed")
            await asyncio.sleep(self._sleep())

    def _sleep(self) -> float:
        intervals = [r.active_interval_s for r in self.gateway.table.by_key.values()]
        if not intervals:
            return 0.5
        return max(0.05, min(0.5, min(intervals) / 4))

    async def tick(self) -> None:
        """Check every backend that is due, one probe per endpoint (module docstring)."""
        now = time.monotonic()
        probes: dict[Hashable, list[tuple[Route, Backend]]] = {}
        # Rebuilt each round from the live table: a deleted route's schedule goes with it (it
        # would otherwise stay for good, and a new state at a reused id() inherit its due time).
        due: dict[int, float] = {}
        for route in self.gateway.table.by_key.values():
            for backend in route.backends:
                key = id(backend.state)
                next_due = due.get(key) or self._due.get(key, 0.0)
                if next_due <= now:
                    next_due = now + route.active_interval_s
                    probes.setdefault(_endpoint(route, backend), []).append((route, backend))
                due[key] = next_due
        self._due = due
        if probes:
            await asyncio.gather(*(self._probe(sharers) for sharers in probes.values()))

    async def _probe(self, sharers: list[tuple[Route, Backend]]) -> None:
        route, backend = sharers[0]
        ok = await self._check(route, backend)
        now = time.monotonic()
        threshold = self.gateway.settings.active_unhealthy_threshold
        for route, backend in sharers:
            route.mark_active(backend, ok, now, threshold)

    async def _check(self, route: Route, backend: Backend) -> bool:
        session = self.gateway.upstream.session
        if session is None:
            return False
        headers = _probe_headers(backend)
        timeout = aiohttp.ClientTimeout(total=self.gateway.settings.active_check_timeout_s)
        async with self._slots:
            try:
                async with session.get(
                    backend.cfg.health_url, headers=headers, timeout=timeout
                ) as resp:
                    await resp.read()
                    if route.active_default:
                        return resp.status < 500
                    return 200 <= resp.status < 300
            except Exception:  # unreachable, invalid URL, TLS, protocol: all a failed check
                return False


def _probe_headers(backend: Backend) -> dict[str, str]:
    return {k: v for k, v in backend.cfg.headers.items() if k != "Content-Type"}


def _endpoint(route: Route, backend: Backend) -> Hashable:
    """What makes two checks the same probe: the request sent and the rule that judges it."""
    return (
        backend.cfg.health_url,
        tuple(sorted(_probe_headers(backend).items())),
        route.active_default,
    )
