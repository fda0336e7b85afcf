"""The gateway of one process: the live route table, admission and the upstream attempts.

A data-plane request (``api.py``) is served in two steps: :meth:`Gateway.serve` admits it
(admission.py: token, body, model, limits) and answers a refusal at once, or returns the
:class:`~azora_orchestrator.upstream.Relay` that ServiceApp then runs as the response
(upstream.py: backend pick, tries, retries, fallbacks, relay, metrics).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from azora_common.listener import libpq_url
from azora_orchestrator import asgi, metrics
from azora_orchestrator.admission import Admission, Ticket
from azora_orchestrator.keys import snapshot
from azora_orchestrator.ledger import LedgerBooker
from azora_orchestrator.quota import LeasePolicy, SharedState
from azora_orchestrator.reporting import StatusPublisher
from azora_orchestrator.routing import BackendState, Route, RouteTable, StateKey, build_route
from azora_orchestrator.settings import OrchestratorSettings
from azora_orchestrator.upstream import Relay, Upstream
from azora_orchestrator.usage import Recorder

log = logging.getLogger("azora.orchestrator")


class Gateway:
    """Holds the route table, the admission state and the upstream pool of one process."""

    def __init__(self, settings: OrchestratorSettings) -> None:
        self.settings = settings
        self.table = RouteTable({}, {}, 0, b'{"object":"list","data":[]}')
        self._states: dict[StateKey, BackendState] = {}
        self.shared = SharedState(
            libpq_url(settings.database_url),
            settings.shared_pool_size,
            LeasePolicy(settings.lease_permille, settings.lease_ttl_s, settings.lease_safety),
        )
        self.replica = (
            settings.replica_name or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        )
        self.admission = Admission(settings, self.shared)
        self.upstream = Upstream(settings)
        self.recorder = Recorder(settings, self.shared, self.replica)
        self.upstream.on_done = self.recorder.add
        self.publisher = StatusPublisher(self, settings.status_publish_s)
        self.booker = LedgerBooker(settings, self.shared)

    async def start(self) -> None:
        await self.upstream.start()
        await self.shared.start()
        await self.recorder.start()
        await self.publisher.start()
        await self.booker.start()
        metrics.GAUGE_SOURCE.get = lambda: self.table

    async def stop(self) -> None:
        await self.booker.stop()
        await self.publisher.stop()
        await self.recorder.stop()
        await self.shared.stop()
        await self.upstream.stop()

    def install(self, rows: list[Any]) -> None:
        """Build a new table from stored rows and swap it in with one assignment."""
        new_states: dict[StateKey, BackendState] = {}
        by_model: dict[str, Route] = {}
        by_key: dict[str, Route] = {}
        revision = 0
        for row in rows:
            try:
                route = build_route(row, self.settings, self._states, new_states)
            except Exception:  # a row stored by an older version that no longer parses
                log.exception("route %s/%s cannot be loaded; skipped", row.namespace, row.name)
                continue
            by_model[route.model] = route
            by_key[route.key] = route
            revision = max(revision, route.revision)
        models = {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "azora"}
                for m in sorted(by_model)
            ],
        }
        self._states = new_states
        self.table = RouteTable(by_model, by_key, revision, orjson.dumps(models))

    def install_keys(self, rows: list[Any]) -> None:
        """Swap in a new snapshot of the active virtual keys (one assignment); the slices of
        keys revoked or changed go back (quota.py)."""
        self.admission.keys = keys = snapshot(rows)
        self.shared.keys_changed(keys)

    async def serve(self, request: Request, op: str) -> Response:
        """One data-plane request (``op``: chat, completions, embeddings or models)."""
        try:
            admitted = await self.admission.admit(request, op, self.table)
        except Exception:
            log.exception("unhandled error on %s", request.scope["path"])
            return asgi.error(500, "internal error in the gateway", "internal_error")
        if isinstance(admitted, Ticket):
            return Relay(self.upstream, admitted)
        return admitted
