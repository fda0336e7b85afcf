"""Usage over time (from ``usage_events``) and the live route status of the whole fleet.

Usage: requests, errors, tokens, cost and latency/TTFT percentiles (``percentile_cont`` in
SQL) per time bucket and per key, team, route, model or backend; JSON or CSV.

Fleet status: every replica publishes its view of every route (per backend: in flight,
ejected, active checks passing, latency EWMA, error rate) to ``replica_status`` every
``status_publish_s``; the status endpoint merges the views published in the last
``3 x status_publish_s`` (a replica that stopped publishing drops out).
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from azora_common.errors import InvalidField
from azora_common.tasks import stop_tasks
from azora_orchestrator import repository
from azora_orchestrator.schemas import parse_duration

if TYPE_CHECKING:
    from azora_orchestrator.gateway import Gateway

log = logging.getLogger("azora.orchestrator.reporting")

MAX_BUCKETS = 10_000
CSV_FIELDS = [
    "bucket_start", "group", "currency", "requests", "errors", "error_rate", "prompt_tokens",
    "completion_tokens", "cost", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99",
    "ttft_ms_p50", "ttft_ms_p95", "ttft_ms_p99",
]  # fmt: skip


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _pcts(values: list[float] | None) -> list[float | None]:
    if values is None:
        return [None, None, None]
    return [None if v is None else round(v, 3) for v in values]


async def usage(
    session: AsyncSession,
    *,
    start: datetime | None,
    end: datetime | None,
    bucket: str | None,
    group_by: str,
    filters: dict[str, str],
) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    end = end or now
    start = start or end - timedelta(days=1)
    for name, value in (("from", start), ("to", end)):
        if value.tzinfo is None:
            raise InvalidField(name, "must carry a time zone (UTC: a trailing 'Z')")
    if end <= start:
        raise InvalidField("to", "must be after 'from'")
    span = (end - start).total_seconds()
    if bucket is None:
        bucket_s = max(1, int(span) + 1)
    else:
        try:
            seconds = parse_duration(bucket)
        except ValueError as exc:
            raise InvalidField("bucket", str(exc)) from None
        if seconds < 1 or seconds != int(seconds):
            raise InvalidField("bucket", "must be whole seconds, at least 1s")
        bucket_s = int(seconds)
    if span / bucket_s > MAX_BUCKETS:
        raise InvalidField("bucket", f"the window would have more than {MAX_BUCKETS} buckets")
    rows = await repository.usage_report(
        session, start=start, end=end, bucket_s=bucket_s, group_by=group_by, filters=filters
    )
    items = []
    for r in rows:
        lat = _pcts(r.latency)
        ttft = _pcts(r.ttft)
        items.append(
            {
                "bucket_start": _iso(r.bucket_start),
                "group": r.grp,
                "currency": r.currency,
                "requests": int(r.requests),
                "errors": int(r.errors),
                "error_rate": round(int(r.errors) / int(r.requests), 6) if r.requests else 0.0,
                "prompt_tokens": int(r.prompt_tokens),
                "completion_tokens": int(r.completion_tokens),
                "cost": int(r.cost),
                "latency_ms_p50": lat[0],
                "latency_ms_p95": lat[1],
                "latency_ms_p99": lat[2],
                "ttft_ms_p50": ttft[0],
                "ttft_ms_p95": ttft[1],
                "ttft_ms_p99": ttft[2],
            }
        )
    return items


def usage_csv(items: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for item in items:
        writer.writerow({k: "" if item[k] is None else item[k] for k in CSV_FIELDS})
    return out.getvalue()


# -- fleet status --------------------------------------------------------------------------------


def replica_view(gateway: Gateway) -> dict[str, Any]:
    """This replica's live view of every route, as it publishes it."""
    now = time.monotonic()
    routes: dict[str, Any] = {}
    for key, route in gateway.table.by_key.items():
        backends = []
        for b in route.backends:
            st = b.state
            backends.append(
                {
                    "name": b.cfg.name,
                    "ejected": st.ejected_until > now,
                    "active_ok": st.active_ok,
                    "in_flight": st.in_flight,
                    "latency_ms_ewma": None if st.ewma_s is None else st.ewma_s * 1000,
                    "error_rate": st.error_rate,
                }
            )
        routes[key] = {"revision": route.revision, "backends": backends}
    return routes


def merge(key: str, rows: list[Any]) -> dict[str, Any]:
    """The route's backends as every fresh replica sees them, summed and averaged."""
    merged: dict[str, dict[str, Any]] = {}
    replicas = []
    for row in rows:
        view = row.routes.get(key)
        if view is None:
            continue
        replicas.append(
            {
                "replica": row.replica,
                "updated_at": _iso(row.updated_at),
                "revision": view["revision"],
            }
        )
        for b in view["backends"]:
            m = merged.setdefault(
                b["name"],
                {
                    "name": b["name"],
                    "replicas": 0,
                    "healthy_on": 0,
                    "ejected_on": 0,
                    "in_flight": 0,
                    "_lat": [],
                    "_err": [],
                },
            )
            m["replicas"] += 1
            healthy = b["active_ok"] and not b["ejected"]
            m["healthy_on"] += 1 if healthy else 0
            m["ejected_on"] += 1 if b["ejected"] else 0
            m["in_flight"] += b["in_flight"]
            if b["latency_ms_ewma"] is not None:
                m["_lat"].append(b["latency_ms_ewma"])
            m["_err"].append(b["error_rate"])
    backends = []
    for m in merged.values():
        lat, err = m.pop("_lat"), m.pop("_err")
        m["latency_ms_ewma"] = round(sum(lat) / len(lat), 3) if lat else None
        m["error_rate"] = round(sum(err) / len(err), 4) if err else 0.0
        backends.append(m)
    return {"route": key, "replicas": replicas, "backends": backends}


class StatusPublisher:
    """Publishes this replica's view every ``interval_s`` (one upsert)."""

    def __init__(self, gateway: Gateway, interval_s: float) -> None:
        self.gateway = gateway
        self.interval = interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="status-publisher")

    async def stop(self) -> None:
        await stop_tasks(self._task)

    async def publish(self) -> None:
        pool = self.gateway.shared.pool
        assert pool is not None
        body = orjson.dumps(replica_view(self.gateway)).decode()
        async with pool.acquire() as conn:
            await repository.publish_status(conn, self.gateway.replica, body)

    async def _run(self) -> None:
        while True:
            try:
                await self.publish()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("route status not published", exc_info=True)
            await asyncio.sleep(self.interval)
