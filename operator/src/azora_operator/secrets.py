"""API-key Secrets that AIModelRoute backends reference (``apiKeySecretRef: {name, key}``).

The operator reads a referenced Secret with its own identity when it builds the admin PUT body
and replaces the reference with ``apiKey``; the value goes to the service and nowhere else (not
to status, Events or logs). A Kopf index maps each Secret to the routes that reference it, so a
rotated Secret re-sends exactly those routes. The operator's own admin token is not one of
these: it comes from a mounted Secret file at start-up (``OperatorSettings``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from azora_operator.client import AdminClient, Rejected, ServiceUnavailable, StaleGeneration
from azora_operator.kinds import AI_MODEL_ROUTE, Kind
from azora_operator.kube import KubeReader, SecretProblem, plain
from azora_operator.metrics import RECONCILES

JSON = dict[str, Any]

ROUTE_SECRETS_INDEX = "route_secrets"

log = logging.getLogger("azora_operator")


async def resolve_payload(
    kube: KubeReader, kind: Kind, namespace: str, spec: Mapping[str, Any]
) -> JSON:
    """The spec as the service takes it; for routes, Secret references become ``apiKey``.

    Raises :class:`SecretProblem` (names the Secret and key, never a value).
    """
    body: JSON = plain(spec)
    if kind is AI_MODEL_ROUTE:
        cache: dict[tuple[str, str], str] = {}
        for backend in body.get("backends") or []:
            ref = backend.pop("apiKeySecretRef", None)
            if not isinstance(ref, Mapping):
                continue
            key = (str(ref.get("name")), str(ref.get("key")))
            if key not in cache:
                cache[key] = await kube.secret_value(namespace, key[0], key[1])
            backend["apiKey"] = cache[key]
    return body


def index_route_secrets(
    *, namespace: str | None, name: str, meta: kopf.Meta, spec: kopf.Spec, **_: Any
) -> dict[tuple[str, str], JSON]:
    """Kopf indexer: (namespace, Secret name) → what re-sending this route needs."""
    refs: dict[tuple[str, str], JSON] = {}
    for backend in spec.get("backends") or []:
        ref = backend.get("apiKeySecretRef")
        if isinstance(ref, Mapping) and ref.get("name"):
            refs[(str(namespace), str(ref["name"]))] = {
                "name": name,
                "uid": meta["uid"],
                "generation": meta["generation"],
                "spec": plain(spec),
            }
    return refs


class SecretRotation:
    """Re-sends the routes of a Secret whose data really changed.

    The Secret watch also delivers events that change nothing (its own resync, a label): a
    digest of the data per Secret tells them apart. Only the digest is kept, never the value.
    """

    def __init__(self, kube: KubeReader) -> None:
        self.kube = kube
        self._digests: dict[tuple[str, str], str] = {}

    async def changed(
        self,
        client: AdminClient,
        *,
        namespace: str,
        name: str,
        body: Mapping[str, Any],
        event_type: str | None,
        routes: list[JSON],
    ) -> None:
        key = (namespace, name)
        if event_type == "DELETED":
            self._digests.pop(key, None)
            return
        data = body.get("data") or {}
        digest = hashlib.sha256(repr(sorted(data.items())).encode()).hexdigest()
        previous = self._digests.get(key)
        self._digests[key] = digest
        if previous is None or previous == digest or not routes:
            return
        for route in routes:
            try:
                payload = await resolve_payload(self.kube, AI_MODEL_ROUTE, namespace, route["spec"])
                await client.put(
                    AI_MODEL_ROUTE.admin_plural,
                    namespace,
                    route["name"],
                    generation=route["generation"],
                    uid=route["uid"],
                    spec=payload,
                )
            except (ServiceUnavailable, Rejected, StaleGeneration, SecretProblem) as exc:
                # The route's own handlers and its resync timer report and retry; this is a
                # fast path.
                log.warning(
                    "re-sending route %s/%s after Secret %s changed failed: %s",
                    namespace,
                    route["name"],
                    name,
                    type(exc).__name__,
                )
            else:
                RECONCILES.labels(kind=AI_MODEL_ROUTE.kind, result="secret_resynced").inc()
