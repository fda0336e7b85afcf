"""The operator's own Kubernetes calls, on the one API-server session it shares with Kopf.

Kopf logs in (``@kopf.on.login``); :meth:`KubeReader.use` turns that
:class:`kopf.ConnectionInfo` into a connection-limited aiohttp session that Kopf and we both
use. Our own calls: ``GET`` of a Secret an AIModelRoute references, and the resync timer's
conditional status writes. A Secret's value is decoded here and handed straight to the admin
client; it is never logged, never part of an exception message, never written to status or an
Event.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf


def plain(value: Any) -> Any:
    """A deep, mutable copy of a Kopf body view (its mappings are read-only)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return copy.copy(value)


class SecretProblem(Exception):
    """A referenced Secret or key is missing or unreadable (message names it, never the value)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class KubeListError(Exception):
    """A list call failed (forbidden, the CRD missing, the API server unreachable)."""


class KubeReader:
    """Secrets, and the resync timer's status writes, with the operator's own identity.

    It also owns the one aiohttp session to the API server, which Kopf uses too (the login
    handler hands it over as :class:`kopf.AiohttpSession`). Kopf's own session has no limit on
    connections: a cold start with hundreds of resources opened one TLS connection per
    concurrent PATCH (400+ at ~0.6 MB each: most of the operator's memory). Ours caps them at
    ``connections``; watch streams hold one each, requests beyond the cap wait for a free one.
    """

    def __init__(self, timeout: float, connections: int = 32) -> None:
        self._info: kopf.ConnectionInfo | None = None
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._connections = connections
        self._retired: list[aiohttp.ClientSession] = []

    def use(self, info: kopf.ConnectionInfo) -> kopf.AiohttpSession:
        """Credentials from Kopf's login: a session for them, for Kopf and for us.

        Called again when Kopf re-authenticates (e.g. an expired token); the previous session
        is left to Kopf's requests still in flight and closed at :meth:`close`.
        """
        if self._session is not None:
            self._retired.append(self._session)
        self._info = info
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self._connections, ssl=info.as_ssl_context(), keepalive_timeout=60
            ),
            headers=info.as_http_headers(),
            trust_env=info.trust_env,
        )
        return kopf.AiohttpSession(
            server=info.server,
            default_namespace=info.default_namespace,
            priority=info.priority,
            expiration=info.expiration,
            aiohttp_session=self._session,
        )

    async def close(self) -> None:
        for session in [*self._retired, *([self._session] if self._session else [])]:
            await session.close()
        self._retired = []
        self._session = None

    def _client(self) -> tuple[aiohttp.ClientSession, kopf.ConnectionInfo]:
        if self._info is None or self._session is None:
            raise SecretProblem("NotLoggedIn", "the operator has no Kubernetes credentials yet")
        return self._session, self._info

    async def secret_value(self, namespace: str, name: str, key: str) -> str:
        session, info = self._client()
        headers: dict[str, str] = {"Accept": "application/json"}
        url = f"{info.server.rstrip('/')}/api/v1/namespaces/{namespace}/secrets/{name}"
        try:
            async with session.get(url, headers=headers, timeout=self._timeout) as resp:
                if resp.status == 404:
                    raise SecretProblem(
                        "SecretNotFound", f"Secret {namespace}/{name} does not exist"
                    )
                if resp.status == 403:
                    raise SecretProblem(
                        "SecretForbidden", f"the operator may not read Secret {namespace}/{name}"
                    )
                if resp.status != 200:
                    raise SecretProblem(
                        "SecretUnreadable", f"reading Secret {namespace}/{name}: HTTP {resp.status}"
                    )
                body: dict[str, Any] = await resp.json()
        except aiohttp.ClientError as exc:
            raise SecretProblem(
                "SecretUnreadable", f"reading Secret {namespace}/{name}: {type(exc).__name__}"
            ) from None
        data = body.get("data") or {}
        if key not in data:
            raise SecretProblem("SecretKeyNotFound", f"Secret {namespace}/{name} has no key {key}")
        try:
            return base64.b64decode(data[key]).decode("utf-8").strip()
        except (ValueError, UnicodeDecodeError):
            raise SecretProblem(
                "SecretUnreadable", f"key {key} of Secret {namespace}/{name} is not UTF-8 text"
            ) from None

    async def patch_status(
        self,
        group_version: str,
        plural: str,
        namespace: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None,
    ) -> str:
        """Merge-patch ``status`` of a custom resource; ``"ok"``, ``"conflict"`` or ``"gone"``.

        With ``resource_version`` the write is conditional: the API server refuses it (409)
        when the object changed since that version, e.g. a handler wrote a newer status
        meanwhile; the caller then leaves it to the next firing, which sees the newer object.
        """
        session, info = self._client()
        headers: dict[str, str] = {"Content-Type": "application/merge-patch+json"}
        url = (
            f"{info.server.rstrip('/')}/apis/{group_version}/namespaces/{namespace}/"
            f"{plural}/{name}/status"
        )
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        async with session.patch(url, json=body, headers=headers, timeout=self._timeout) as resp:
            if resp.status == 409:
                return "conflict"
            if resp.status == 404:
                return "gone"
            if resp.status >= 300:
                text = (await resp.text())[:300]
                raise RuntimeError(
                    f"PATCH {plural}/{namespace}/{name}/status: {resp.status} {text}"
                )
        return "ok"

    async def get_object(self, path: str, name: str) -> dict[str, Any] | None:
        """The object ``name`` of a collection (``/apis/…/namespaces/ns/plural``), or ``None``.

        A list with a field selector, not a GET of the object: the operator's RBAC grants
        ``list``/``watch`` on the kinds (what Kopf needs), and this needs no more.
        """
        body = await self._list_page(path, {"fieldSelector": f"metadata.name={name}"})
        items = [i for i in body.get("items") or () if isinstance(i, dict)]
        if not items:
            return None
        found: dict[str, Any] = items[0]
        # A list's items carry no kind/apiVersion; a Kopf body reads them from the object.
        found.setdefault("apiVersion", body.get("apiVersion"))
        found.setdefault("kind", str(body.get("kind", "")).removesuffix("List"))
        return found

    async def list_objects(self, path: str) -> list[dict[str, Any]]:
        """Every object of a collection (``/apis/…/namespaces/ns/plural``), page by page.

        Raises :class:`KubeListError` on any failure: a caller deciding what is *absent* must
        never read an error as an empty list.
        """
        found: list[dict[str, Any]] = []
        token = ""
        while True:
            body = await self._list_page(
                path, {"limit": "500", **({"continue": token} if token else {})}
            )
            found.extend(item for item in body.get("items") or () if isinstance(item, dict))
            token = str((body.get("metadata") or {}).get("continue") or "")
            if not token:
                return found

    async def _list_page(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        """One GET of a collection; any failure is a :class:`KubeListError`."""
        try:
            session, info = self._client()
        except SecretProblem as exc:
            raise KubeListError(str(exc)) from None
        url = f"{info.server.rstrip('/')}{path}"
        try:
            async with session.get(url, params=params, timeout=self._timeout) as resp:
                if resp.status != 200:
                    raise KubeListError(f"GET {path}: HTTP {resp.status}")
                body: dict[str, Any] = await resp.json()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise KubeListError(f"GET {path}: {type(exc).__name__}") from None
        return body
