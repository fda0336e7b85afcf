"""The admin API client: PUT/DELETE/GET against one service (docs/development.md convention).

Outcomes are typed so handlers can tell them apart without looking at HTTP: a success, a stale
generation (someone already stored something newer: done), a semantic rejection (the service's
``reason`` and ``detail``: report, do not retry), or an unavailable service (retry later).
Request bodies may carry resolved secrets, so neither bodies nor headers ever reach a log line
or an exception message.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp

JSON = dict[str, Any]


class AdminError(Exception):
    """Base of the admin API outcomes that are not a success."""


class ServiceUnavailable(AdminError):
    """Connection refused, timeout, or an answer we cannot read: retry with backoff."""


class ServiceError(ServiceUnavailable):
    """The service answered, with a 5xx: it is reachable but failed on this request.

    A subclass of :class:`ServiceUnavailable` because the remedy is the same (retry with a
    bounded backoff: a 5xx may be transient, e.g. its database restarting), but reported as its
    own reason with the status code and the problem's detail, so nobody looks for a network
    fault when the service choked on a value (an overflowing duration answered 500).
    """

    def __init__(self, what: str, status: int, detail: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {detail}" if detail else f"{what}: HTTP {status}")
        self.status = status
        self.detail = detail


class Rejected(AdminError):
    """422 (or another 4xx we cannot fix by retrying): the spec is not acceptable."""

    def __init__(self, reason: str, detail: str, status: int) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.status = status


class StaleGeneration(AdminError):
    """409: the service holds a newer generation than the one we sent."""

    def __init__(self, stored_generation: int | None) -> None:
        super().__init__(f"service holds generation {stored_generation}")
        self.stored_generation = stored_generation


@dataclass(frozen=True)
class Applied:
    revision: int
    generation: int


def _reason_from_problem(problem: JSON, status: int) -> tuple[str, str]:
    reason = problem.get("reason")
    if not isinstance(reason, str) or not reason:
        # A validation-error problem (e.g. a field the service's schema refuses) has no reason.
        slug = str(problem.get("type", "")).rsplit("/", 1)[-1]
        reason = "".join(part.capitalize() for part in slug.split("-")) or f"HTTP{status}"
    detail = problem.get("detail") or problem.get("title") or f"HTTP {status}"
    errors = problem.get("errors")
    if isinstance(errors, list) and errors:
        fields = "; ".join(
            f"{e.get('field', '?')}: {e.get('reason', '?')}" for e in errors if isinstance(e, dict)
        )
        if fields and fields not in str(detail):
            detail = f"{detail} ({fields})"
    return reason, str(detail)


class AdminClient:
    """Admin API of one service. ``session`` is shared by all clients of the operator."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        token: str,
        timeout: float,
        *,
        concurrency: int = 16,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        # At most this many calls in flight to this service. The timeout starts only once a
        # call holds a slot: a burst (a cold start with hundreds of resources) waits its turn
        # instead of timing out in aiohttp's connection-pool queue and being reported as an
        # unavailable service, which used to trigger a retry storm that made it worse.
        self._slots = asyncio.Semaphore(concurrency)

    @property
    def base_url(self) -> str:
        return self._base

    def _url(self, plural: str, namespace: str | None = None, name: str | None = None) -> str:
        url = f"{self._base}/admin/v1/{plural}"
        if namespace is not None and name is not None:
            url += f"/{namespace}/{name}"
        return url

    async def _request(
        self,
        method: str,
        url: str,
        body: JSON | None = None,
        *,
        client_timeout: aiohttp.ClientTimeout | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, JSON | None]:
        try:
            async with (
                self._slots,
                self._session.request(
                    method,
                    url,
                    json=body,
                    params=params,
                    headers=self._headers,
                    timeout=client_timeout or self._timeout,
                ) as resp,
            ):
                status = resp.status
                payload: JSON | None = None
                if status != 204:
                    try:
                        data = await resp.json(content_type=None)
                    except (ValueError, aiohttp.ContentTypeError):
                        data = None
                    payload = data if isinstance(data, dict) else None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # Only the exception's class: short enough for a condition message, and it can
            # never carry a request body (which may hold a resolved API key).
            what = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise ServiceUnavailable(f"{method} {self._base}: {what}") from None
        # 401/403 mean a wrong admin token: an operator configuration problem that a restart
        # with the right Secret fixes, so keep retrying rather than giving up. A PUT answered
        # 404/405 comes from a service without the admin API (yet): also not the spec's fault.
        if status >= 500:
            # The problem's detail, never the request body: a service does not echo secrets.
            detail = str((payload or {}).get("detail") or (payload or {}).get("title") or "")
            raise ServiceError(f"{method} {url}", status, detail[:500])
        if status in (401, 403, 429) or (method == "PUT" and status in (404, 405)):
            raise ServiceUnavailable(f"{method} {url}: HTTP {status}")
        return status, payload

    async def put(
        self, plural: str, namespace: str, name: str, *, generation: int, uid: str, spec: JSON
    ) -> Applied:
        url = self._url(plural, namespace, name)
        status, body = await self._request(
            "PUT", url, {"generation": generation, "uid": uid, "spec": spec}
        )
        body = body or {}
        if status == 200 or status == 201:
            try:
                return Applied(revision=int(body["revision"]), generation=int(body["generation"]))
            except (KeyError, TypeError, ValueError):
                raise ServiceUnavailable(f"PUT {url}: unreadable answer") from None
        if status == 409 and str(body.get("type", "")).endswith("stale-generation"):
            stored = body.get("stored_generation")
            raise StaleGeneration(stored if isinstance(stored, int) else None)
        reason, detail = _reason_from_problem(body, status)
        raise Rejected(reason, detail, status)

    async def delete(self, plural: str, namespace: str, name: str) -> None:
        url = self._url(plural, namespace, name)
        status, body = await self._request("DELETE", url)
        if status in (200, 202, 204, 404):
            return
        reason, detail = _reason_from_problem(body or {}, status)
        raise Rejected(reason, detail, status)

    async def insight(self, plural: str, namespace: str, name: str) -> JSON | None:
        """Live status of one item; ``None`` when the service does not hold it."""
        url = self._url(plural, namespace, name) + "/status"
        status, body = await self._request("GET", url)
        if status == 404:
            return None
        if status != 200 or body is None:
            raise ServiceUnavailable(f"GET {url}: HTTP {status}")
        return body

    async def changes(self, plural: str, after: str | None, wait: float) -> JSON:
        """One long poll of the insight change feed: ``{cursor, reset, keys}``.

        Holds one of the service's call slots while it waits (the other calls keep the rest).
        """
        url = self._url(plural) + "/changes"
        params = {"wait": f"{wait:g}", **({"after": after} if after else {})}
        timeout = aiohttp.ClientTimeout(total=wait + (self._timeout.total or 0.0))
        status, body = await self._request("GET", url, client_timeout=timeout, params=params)
        if status != 200 or body is None or not isinstance(body.get("keys"), list):
            raise ServiceUnavailable(f"GET {url}: HTTP {status}")
        return body

    async def items(self, plural: str) -> list[JSON]:
        url = self._url(plural)
        status, body = await self._request("GET", url)
        if status != 200 or body is None or not isinstance(body.get("items"), list):
            raise ServiceUnavailable(f"GET {url}: HTTP {status}")
        return [item for item in body["items"] if isinstance(item, dict)]
