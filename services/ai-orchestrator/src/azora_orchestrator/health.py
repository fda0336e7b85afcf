"""Active health checks: ``GET <backend url><path>`` on each route's interval.

Every route is checked from the moment it is installed (the first round runs within half a
second): with its ``health.activeCheck`` (a 2xx passes), or else with the default probe
(``GET <url>/models`` every 10 s, any answer below 500 passes; see routing.py). Until a backend
has answered once (a passing check or a successful request) its health is ``unknown`` and it
does not count towards the route's readiness.

A backend fails ``active_unhealthy_threshold`` checks in a row -> no traffic; one passing check
brings it back through slow start. Passive ejection (from real traffic) is separate: a backend
must pass both to receive requests.
"""

from __future__ import annotations

import asyncio
import logging
import time

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
        now = time.monotonic()
        checks = []
        for route in self.gateway.table.by_key.values():
            for backend in route.backends:
                key = id(backend.state)
                if self._due.get(key, 0.0) > now:
                    continue
                self._due[key] = now + route.active_interval_s
                checks.append(self._check(route, backend))
        if checks:
            await asyncio.gather(*checks)

    async def _check(self, route: Route, backend: Backend) -> None:
        session = self.gateway.upstream.session
        url = backend.cfg.health_url
        if session is None:
            return
        headers = {k: v for k, v in backend.cfg.headers.items() if k != "Content-Type"}
        timeout = aiohttp.ClientTimeout(total=self.gateway.settings.active_check_timeout_s)
        try:
            async with session.get(url, headers=headers, timeout=timeout) as resp:
                await resp.read()
                ok = resp.status < 500 if route.active_default else 200 <= resp.status < 300
        except Exception:  # unreachable, invalid URL, TLS, protocol: all a failed check
            ok = False
        route.mark_active(
            backend, ok, time.monotonic(), self.gateway.settings.active_unhealthy_threshold
        )
