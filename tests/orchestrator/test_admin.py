"""Admin API: the operator's contract (generations, idempotency, 422 reasons, status)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest

from tests.conftest import ADMIN_TOKEN, API_TOKEN
from tests.orchestrator.conftest import Admin, Gw, backend_spec, bearer, chat, unique
from tests.support.schemathesis import run_schemathesis

ADMIN = bearer(ADMIN_TOKEN)


async def _put(
    http: aiohttp.ClientSession, gw: Gw, key: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any], str]:
    async with http.put(f"{gw.base_url}/admin/v1/routes/{key}", json=body, headers=ADMIN) as r:
        return r.status, await r.json(content_type=None), r.headers.get("Content-Type", "")


def _spec(model: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "backends": [{"name": "a", "url": "http://127.0.0.1:9/v1"}],
        **extra,
    }


async def test_put_list_status_delete(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends
) -> None:
    a = await backends("a")
    model = unique("adm")
    secret = "sk-very-secret-value-123"
    spec = {
        "model": model,
        "strategy": "least-request",
        "backends": [backend_spec(a, apiKey=secret, headers={"X-Team": "ml"}, weight=3)],
    }
    revision = await admin.put(model, spec)

    async with http.get(f"{gw.base_url}/admin/v1/routes", headers=ADMIN) as r:
        items = (await r.json())["items"]
    item = next(i for i in items if i["name"] == model)
    assert item["namespace"] == "test"
    assert item["generation"] == 1
    assert item["revision"] == revision
    assert item["uid"] == f"uid-{model}"
    assert "apiKey" not in item["spec"]["backends"][0]
    assert item["spec"]["backends"][0]["weight"] == 3

    status, body, _ = await chat(http, gw, model)
    assert status == 200, body
    # The key reaches the backend as a bearer token, with the route's extra header.
    assert a.headers[0]["Authorization"] == f"Bearer {secret}"
    assert a.headers[0]["X-Team"] == "ml"

    st = await admin.status(f"test/{model}")
    assert st["revision"] == revision
    assert st["generation"] == 1
    assert st["strategy"] == "least-request"
    assert st["healthy"] == 1
    assert st["total"] == 1
    (b,) = st["backends"]
    assert set(b) == {
        "name", "healthy", "health", "ejected_until", "in_flight", "effective_weight",
        "consecutive_failures", "latency_ms_ewma", "error_rate",
    }  # fmt: skip
    assert (st["unknown"], st["ejected"], st["unhealthy"], st["ready"]) == (0, 0, 0, True)
    assert b["health"] == "healthy"
    assert b["consecutive_failures"] == 0
    assert b["name"] == "a"
    assert b["healthy"] is True
    assert b["ejected_until"] is None
    assert b["in_flight"] == 0
    assert b["effective_weight"] == 3
    assert b["latency_ms_ewma"] is not None
    assert b["latency_ms_ewma"] > 0
    assert secret not in str(st)
    assert secret not in str(items)

    await admin.delete(f"test/{model}")
    admin.created.remove(f"test/{model}")
    await admin.delete(f"test/{model}")  # absent: still 204
    async with http.get(f"{gw.base_url}/admin/v1/routes/test/{model}/status", headers=ADMIN) as r:
        assert r.status == 404
        assert r.headers["Content-Type"].startswith("application/problem+json")
    # The deletion is live: the model is gone from the data plane.
    deadline = asyncio.get_running_loop().time() + 10
    while model in gw.gateway.table.by_model:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    status, body, _ = await chat(http, gw, model)
    assert status == 404
    assert body["error"]["code"] == "model_not_found"


async def test_generations_and_idempotent_replay(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin
) -> None:
    name = unique("gen")
    key = f"test/{name}"
    admin.created.append(key)
    spec = _spec(name)
    status, first, _ = await _put(http, gw, key, {"generation": 5, "uid": "u", "spec": spec})
    assert status == 200
    assert first["generation"] == 5
    status, again, _ = await _put(http, gw, key, {"generation": 5, "uid": "u", "spec": spec})
    assert status == 200
    assert again["revision"] == first["revision"]
    status, stale, ctype = await _put(http, gw, key, {"generation": 4, "uid": "u", "spec": spec})
    assert status == 409
    assert ctype.startswith("application/problem+json")
    assert stale["type"].endswith("/stale-generation")
    assert stale["stored_generation"] == 5
    changed = _spec(name, strategy="latency")
    status, newer, _ = await _put(http, gw, key, {"generation": 6, "uid": "u", "spec": changed})
    assert status == 200
    assert newer["revision"] > first["revision"]
    # A same-generation change (a rotated apiKey: the operator resolves Secrets itself) applies.
    rotated = {**changed, "backends": [{**changed["backends"][0], "apiKey": "k2"}]}
    status, rot, _ = await _put(http, gw, key, {"generation": 6, "uid": "u", "spec": rotated})
    assert status == 200
    assert rot["revision"] > newer["revision"]


@pytest.mark.parametrize(
    ("mutate", "reason", "field"),
    [
        (lambda s: s["backends"].append(dict(s["backends"][0])), "DuplicateBackend",
         "spec.backends[1].name"),
        (lambda s: s["backends"][0].update(weight=0), "InvalidTiers", "spec.backends"),
        (lambda s: s["backends"][0].update(weight=1001), "InvalidSpec",
         "spec.backends[0].weight"),
        (lambda s: s["backends"][0].update(url="ftp://x/v1"), "InvalidSpec",
         "spec.backends[0].url"),
        (lambda s: s.update(strategy="random"), "InvalidSpec", "spec.strategy"),
        (lambda s: s.update(surprise=True), "InvalidSpec", "spec.surprise"),
        (lambda s: s.update(retry={"perTryTimeout": "soon"}), "InvalidSpec",
         "spec.retry.perTryTimeout"),
        (lambda s: s.update(fallbacks=[s["model"]]), "InvalidFallbacks", "spec.fallbacks"),
        (lambda s: s["backends"][0].update(apiKeySecretRef={"name": "n", "key": "k"}),
         "UnresolvedSecret", "spec.backends[0].apiKey"),
        (lambda s: s["backends"][0].update(headers={"Host": "evil"}), "InvalidSpec",
         "spec.backends[0].headers"),
        (lambda s: s.update(backends=[]), "InvalidSpec", "spec.backends"),
        # The CRD's rules, enforced for whoever configures the service without Kubernetes.
        (lambda s: s["backends"][0].update(url="http://127.0.0.1:99999/v1"), "InvalidURL",
         "spec.backends[0].url"),
        (lambda s: s["backends"][0].update(url="http://127.0.0.1:0/v1"), "InvalidURL",
         "spec.backends[0].url"),
        (lambda s: s["backends"][0].update(url="http://[::1/v1"), "InvalidURL",
         "spec.backends[0].url"),
        (lambda s: s["backends"][0].update(url="http://h:8x/v1"), "InvalidURL",
         "spec.backends[0].url"),
        (lambda s: s["backends"][0].update(timeouts={"total": "99999999999999999999h"}),
         "InvalidDuration", "spec.backends[0].timeouts.total"),
        (lambda s: s["backends"][0].update(timeouts={"connect": "3601s"}), "InvalidDuration",
         "spec.backends[0].timeouts.connect"),
        (lambda s: s["backends"][0].update(timeouts={"firstByte": "100000s"}),
         "InvalidDuration", "spec.backends[0].timeouts.firstByte"),
        (lambda s: s["backends"][0].update(timeouts={"streamIdle": "0ms"}), "InvalidSpec",
         "spec.backends[0].timeouts.streamIdle"),
        (lambda s: s.update(retry={"perTryTimeout": "1h0m1s"}), "InvalidDuration",
         "spec.retry.perTryTimeout"),
        (lambda s: s.update(health={"baseEjection": "0s"}), "InvalidDuration",
         "spec.health.baseEjection"),
        (lambda s: s.update(health={"baseEjection": "2h"}), "InvalidDuration",
         "spec.health.baseEjection"),
        (lambda s: s.update(health={"activeCheck": {"interval": "61m"}}), "InvalidDuration",
         "spec.health.activeCheck.interval"),
        (lambda s: s["backends"][0].update(headers={"Authorization": "Bearer sk-1"}),
         "CredentialsInHeaders", "spec.backends[0].headers"),
        (lambda s: s["backends"][0].update(headers={"proxy-AUTHORIZATION": "Basic eA=="}),
         "CredentialsInHeaders", "spec.backends[0].headers"),
    ],
)  # fmt: skip
async def test_rejected_specs_name_reason_and_field(
    gw: Gw, http: aiohttp.ClientSession, mutate: Any, reason: str, field: str
) -> None:
    name = unique("bad")
    spec = _spec(name)
    mutate(spec)
    status, body, ctype = await _put(
        http, gw, f"test/{name}", {"generation": 1, "uid": "u", "spec": spec}
    )
    assert status == 422, body
    assert ctype.startswith("application/problem+json")
    assert body["reason"] == reason
    assert body["errors"][0]["field"] == field
    assert "Bearer sk-1" not in str(body)  # a refused credential is not echoed either
    async with http.get(f"{gw.base_url}/admin/v1/routes/test/{name}/status", headers=ADMIN) as r:
        assert r.status == 404  # nothing was written


async def test_bounds_accept_their_edges(gw: Gw, http: aiohttp.ClientSession, admin: Admin) -> None:
    name = unique("edges")
    spec = _spec(name)
    spec["backends"][0].update(
        url="http://127.0.0.1:65535/v1",
        timeouts={"connect": "250ms", "firstByte": "1h", "total": "59m60s", "streamIdle": "0.5s"},
        headers={"X-Authorization-Hint": "none", "OpenAI-Organization": "org-1"},
    )
    spec["retry"] = {"perTryTimeout": "99999ms"}
    spec["health"] = {"baseEjection": "1h", "activeCheck": {"interval": "60m"}}
    await admin.put(name, spec)


async def test_envelope_validation_and_auth(gw: Gw, http: aiohttp.ClientSession) -> None:
    name = unique("env")
    status, body, _ = await _put(
        http, gw, f"test/{name}", {"generation": -1, "uid": "u", "spec": {}}
    )
    assert status == 422
    assert body["errors"][0]["field"] == "generation"
    async with http.put(
        f"{gw.base_url}/admin/v1/routes/test/{name}",
        json={"generation": 1, "uid": "u", "spec": _spec(name)},
        headers=bearer(API_TOKEN + "x"),
    ) as r:
        assert r.status == 401
    async with http.get(f"{gw.base_url}/admin/v1/routes", headers=bearer("nope")) as r:
        assert r.status == 401


async def test_model_is_unique_across_routes_under_concurrency(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin
) -> None:
    model = unique("shared")
    names = [unique("claim") for _ in range(6)]
    admin.created.extend(f"test/{n}" for n in names)
    results = await asyncio.gather(
        *(
            _put(http, gw, f"test/{n}", {"generation": 1, "uid": n, "spec": _spec(model)})
            for n in names
        )
    )
    statuses = sorted(r[0] for r in results)
    assert statuses == [200, 422, 422, 422, 422, 422]
    assert all(r[1]["reason"] == "ModelConflict" for r in results if r[0] == 422)


async def test_api_key_is_never_logged(
    gw: Gw, http: aiohttp.ClientSession, admin: Admin, backends, caplog: pytest.LogCaptureFixture
) -> None:
    a = await backends("a")
    a.status = 500
    model = unique("logs")
    secret = "sk-do-not-log-this-4242"
    caplog.set_level(logging.DEBUG)
    await admin.put(
        model,
        {
            "model": model,
            "backends": [backend_spec(a, apiKey=secret)],
            "retry": {"attempts": 1},
        },
    )
    status, _, _ = await chat(http, gw, model)
    assert status == 500
    assert secret not in caplog.text


def test_schemathesis_admin_api_has_no_server_errors(gw: Gw) -> None:
    result = run_schemathesis(gw.base_url, ADMIN_TOKEN, max_examples=30, include_paths="^/admin")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
