"""API-key Secrets of AIModelRoutes (``azora_operator.secrets``): resolved into the PUT,
re-sent on rotation, never leaked."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import asyncpg
import kopf
import pytest

from azora_devenv import LocalControlPlane
from azora_operator.kinds import AI_MODEL_ROUTE, PRICING_RULE
from azora_operator.kube import KubeReader
from azora_operator.secrets import SecretRotation, index_route_secrets, resolve_payload
from tests.operator.kube import (
    OperatorProcess,
    apply,
    kubectl_ok,
    unique,
    wait_condition,
)
from tests.operator.objects import route, secret
from tests.support.pg import PostgresServer
from tests.support.services import ServiceProcess


class _Kube(KubeReader):
    """Secrets from a dict instead of the API server (the rest of KubeReader is unused)."""

    def __init__(self, values: dict[tuple[str, str, str], str]) -> None:
        super().__init__(timeout=1)
        self.values = values
        self.reads = 0

    async def secret_value(self, namespace: str, name: str, key: str) -> str:
        self.reads += 1
        return self.values[(namespace, name, key)]


class _Routes:
    """An admin client that records the PUTs."""

    def __init__(self) -> None:
        self.puts: list[tuple[str, dict[str, Any]]] = []

    async def put(self, plural: str, namespace: str, name: str, **body: Any) -> None:
        self.puts.append((name, body["spec"]))


def _route_spec(*refs: dict[str, str] | None) -> dict[str, Any]:
    backends: list[dict[str, Any]] = []
    for i, ref in enumerate(refs):
        backend: dict[str, Any] = {"name": f"b{i}", "url": "http://x"}
        if ref is not None:
            backend["apiKeySecretRef"] = ref
        backends.append(backend)
    return {"model": "m", "backends": backends}


async def test_references_become_api_keys_read_once_per_secret() -> None:
    kube = _Kube({("ns", "llm", "token"): "sk-1"})
    ref = {"name": "llm", "key": "token"}
    spec = _route_spec(None, ref, ref)
    payload = await resolve_payload(kube, AI_MODEL_ROUTE, "ns", spec)
    assert [b.get("apiKey") for b in payload["backends"]] == [None, "sk-1", "sk-1"]
    assert all("apiKeySecretRef" not in b for b in payload["backends"])
    assert kube.reads == 1
    assert "apiKey" not in spec["backends"][1]  # the resource's own spec is not touched
    # Other kinds are sent as they are.
    assert await resolve_payload(kube, PRICING_RULE, "ns", {"a": [1]}) == {"a": [1]}


def test_the_index_maps_each_secret_to_its_routes() -> None:
    body = kopf.Body(
        {
            "metadata": {"uid": "u", "generation": 4},
            "spec": _route_spec({"name": "llm", "key": "token"}, None),
        }
    )
    index = index_route_secrets(namespace="ns", name="r", meta=body.meta, spec=body.spec)
    assert list(index) == [("ns", "llm")]
    assert (index[("ns", "llm")]["name"], index[("ns", "llm")]["generation"]) == ("r", 4)


async def test_only_a_real_change_of_the_data_resends_the_routes() -> None:
    kube = _Kube({("ns", "llm", "token"): "sk-2"})
    rotation, client = SecretRotation(kube), _Routes()
    routes = [
        {
            "name": "r",
            "uid": "u",
            "generation": 1,
            "spec": _route_spec({"name": "llm", "key": "token"}),
        }
    ]

    async def event(data: str, event_type: str | None = None) -> None:
        body = {"data": {"token": base64.b64encode(data.encode()).decode()}}
        await rotation.changed(
            client,  # type: ignore[arg-type]
            namespace="ns",
            name="llm",
            body=body,
            event_type=event_type,
            routes=routes,
        )

    await event("sk-1")  # first sighting (the watch's initial listing): nothing changed
    await event("sk-1")  # the same data again
    assert client.puts == []
    await event("sk-2")
    assert [(name, spec["backends"][0]["apiKey"]) for name, spec in client.puts] == [("r", "sk-2")]
    await event("sk-2", "DELETED")
    await event("sk-3")  # after a deletion it is a first sighting again
    assert len(client.puts) == 1


async def _stored_api_keys(pg: PostgresServer, ns: str, name: str) -> list[str | None]:
    conn = await asyncpg.connect(pg.url("azora_op_orchestrator"))
    try:
        raw = await conn.fetchval(
            "SELECT spec FROM routes WHERE namespace = $1 AND name = $2", ns, name
        )
    finally:
        await conn.close()
    spec = json.loads(raw) if isinstance(raw, str) else raw
    return [b.get("apiKey") for b in spec["backends"]]


@pytest.mark.e2e
async def test_secret_is_resolved_rotated_and_never_leaked(
    kube: LocalControlPlane,
    services: dict[str, ServiceProcess],
    operator: OperatorProcess,
    pg: PostgresServer,
    ns: str,
) -> None:
    key1, key2 = "sk-" + unique("first-key"), "sk-" + unique("second-key")
    obj = route(ns)
    obj["spec"]["backends"][1]["apiKeySecretRef"] = {"name": "llm", "key": "token"}
    name = obj["metadata"]["name"]
    apply(kube, obj)
    # The Secret does not exist yet: reported, and picked up once it appears.
    await asyncio.to_thread(
        wait_condition, kube, "AIModelRoute", ns, name, status="False", reason="SecretNotFound"
    )
    apply(kube, secret(ns, "llm", token=key1))
    await asyncio.to_thread(wait_condition, kube, "AIModelRoute", ns, name, status="True")
    assert await _stored_api_keys(pg, ns, name) == [None, key1]

    apply(kube, secret(ns, "llm", token=key2))  # rotation re-sends the route

    async def rotated() -> bool:
        for _ in range(300):
            if await _stored_api_keys(pg, ns, name) == [None, key2]:
                return True
            await asyncio.sleep(0.1)
        return False

    assert await rotated()
    everything = "\n".join(
        [
            kubectl_ok(kube, "get", "aimodelroute", name, "-n", ns, "-o", "yaml"),
            kubectl_ok(kube, "get", "events", "-n", ns, "-o", "yaml"),
            operator.log(),
        ]
    )
    assert key1 not in everything
    assert key2 not in everything
