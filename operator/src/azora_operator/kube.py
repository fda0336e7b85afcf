"""Reading Secrets with the operator's own Kubernetes identity.

Kopf logs in once (``@kopf.on.login``); we keep that :class:`kopf.ConnectionInfo` and use it for
the one extra call the operator makes itself, ``GET`` of a Secret an AIModelRoute references.
The value is decoded here and handed straight to the admin client; it is never logged, never
part of an exception message, never written to status or an Event.
"""

from __future__ import annotations

import base64
import ssl
from typing import Any

import aiohttp
import kopf


class SecretProblem(Exception):
    """A referenced Secret or key is missing or unreadable (message names it, never the value)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if info.insecure:
        return False
    ctx = ssl.create_default_context()
    if info.ca_path:
        ctx.load_verify_locations(cafile=str(info.ca_path))
    elif info.ca_data:
        data = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
        ctx.load_verify_locations(cadata=data)
    if info.certificate_path and info.private_key_path:
        ctx.load_cert_chain(str(info.certificate_path), str(info.private_key_path))
    return ctx


class KubeReader:
    def __init__(self, timeout: float) -> None:
        self._info: kopf.ConnectionInfo | None = None
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def use(self, info: kopf.ConnectionInfo) -> None:
        self._info = info

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> tuple[aiohttp.ClientSession, kopf.ConnectionInfo]:
        if self._info is None:
            raise SecretProblem("NotLoggedIn", "the operator has no Kubernetes credentials yet")
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=_ssl_context(self._info))
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session, self._info

    async def secret_value(self, namespace: str, name: str, key: str) -> str:
        session, info = self._client()
        headers: dict[str, str] = {"Accept": "application/json"}
        if info.token:
            headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        url = f"{info.server.rstrip('/')}/api/v1/namespaces/{namespace}/secrets/{name}"
        try:
            async with session.get(url, headers=headers) as resp:
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
