"""Admin rules for routes: semantic checks, generations, revisions. No HTTP here."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from yarl import URL

from azora_common.admin_store import (
    ConfigPut,
    ConfigWritten,
    check_generation,
    listing_item,
    stored_config,
)
from azora_common.errors import NotFound
from azora_orchestrator import repository
from azora_orchestrator.errors import RouteRejected
from azora_orchestrator.schemas import RouteSpec, parse_duration


def _loc(loc: tuple[int | str, ...]) -> str:
    out = "spec"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


# The CRD's rules (crds/aimodelroutes.azora.io.yaml), enforced here too for whoever configures
# the service without Kubernetes. Only new writes are held to them: a stored spec of an earlier
# release still loads (build_route parses with RouteSpec alone).
DURATION_PATTERN = re.compile(r"^([0-9]{1,5}(\.[0-9]{1,9})?(ms|s|m|h))+$")
DURATION_MAX_LENGTH = 32
DURATION_MAX_S = 3600.0
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization"})


def _durations(spec: RouteSpec) -> Iterator[tuple[str, str]]:
    for i, b in enumerate(spec.backends):
        t = b.timeouts
        for key, value in (
            ("connect", t.connect),
            ("firstByte", t.first_byte),
            ("total", t.total),
            ("streamIdle", t.stream_idle),
        ):
            yield f"spec.backends[{i}].timeouts.{key}", value
    yield "spec.retry.perTryTimeout", spec.retry.per_try_timeout
    yield "spec.health.baseEjection", spec.health.base_ejection
    if spec.health.active_check is not None:
        yield "spec.health.activeCheck.interval", spec.health.active_check.interval


def _duration_problem(value: str) -> str | None:
    if len(value) > DURATION_MAX_LENGTH or not DURATION_PATTERN.fullmatch(value):
        return (
            f"'{value[:40]}' is not a duration like 250ms, 30s, 1m30s or 1h (numbers of at most "
            f"5 digits, units ms, s, m, h, at most {DURATION_MAX_LENGTH} characters)"
        )
    seconds = parse_duration(value)
    if not 0 < seconds <= DURATION_MAX_S:
        return f"'{value}' must be greater than 0 and at most 1h"
    return None


def _url_problem(url: str) -> str | None:
    try:
        parsed = URL(url)
        port = parsed.explicit_port  # raises ValueError for a port beyond 65535
        host = parsed.raw_host
    except (ValueError, TypeError) as exc:
        return f"'{url[:100]}' does not parse as a URL ({exc}); a port, when given, is 1-65535"
    if not host:
        return f"'{url[:100]}' has no host"
    if port is not None and not 1 <= port <= 65535:
        return f"port {port} is outside 1-65535"
    return None


def validate_spec(raw: dict[str, Any]) -> RouteSpec:
    """Parse and check a spec; every refusal names the field and a CamelCase reason."""
    try:
        spec = RouteSpec.model_validate(raw)
    except ValidationError as exc:
        errors = [{"field": _loc(e["loc"]), "reason": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:5])
        raise RouteRejected("InvalidSpec", summary, errors) from None

    def reject(reason: str, field: str, message: str) -> RouteRejected:
        return RouteRejected(reason, f"{field}: {message}", [{"field": field, "reason": message}])

    seen: set[str] = set()
    for i, backend in enumerate(spec.backends):
        if backend.name in seen:
            raise reject("DuplicateBackend", f"spec.backends[{i}].name", "names a backend twice")
        seen.add(backend.name)
        problem = _url_problem(backend.url)
        if problem is not None:
            raise reject("InvalidURL", f"spec.backends[{i}].url", problem)
        for header in backend.headers:
            if header.lower() in CREDENTIAL_HEADERS:
                raise reject(
                    "CredentialsInHeaders",
                    f"spec.backends[{i}].headers",
                    f"'{header}' carries credentials: give the key as apiKeySecretRef (or "
                    "apiKey to the service directly), which is never returned or logged",
                )
        if backend.api_key_secret_ref is not None and backend.api_key is None:
            raise reject(
                "UnresolvedSecret",
                f"spec.backends[{i}].apiKey",
                "apiKeySecretRef must be resolved to apiKey before it reaches the service",
            )
    for field, value in _durations(spec):
        problem = _duration_problem(value)
        if problem is not None:
            raise reject("InvalidDuration", field, problem)
    tiers: dict[int, int] = {}
    for backend in spec.backends:
        tiers[backend.priority] = tiers.get(backend.priority, 0) + backend.weight
    for priority, weight in sorted(tiers.items()):
        if weight == 0:
            raise reject(
                "InvalidTiers",
                "spec.backends",
                f"priority tier {priority} has no backend with a weight above 0",
            )
    if len(set(spec.fallbacks)) != len(spec.fallbacks) or spec.model in spec.fallbacks:
        raise reject(
            "InvalidFallbacks",
            "spec.fallbacks",
            "fallbacks must be distinct and must not name the route's own model",
        )
    return spec


def public_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The stored spec without secrets: apiKey is write-only."""
    backends = [
        {k: v for k, v in b.items() if k != "apiKey"} if isinstance(b, dict) else b
        for b in spec.get("backends", [])
    ]
    return {**spec, "backends": backends}


def _now() -> datetime:
    return datetime.now(UTC)


async def put_route(
    session: AsyncSession, namespace: str, name: str, body: ConfigPut
) -> ConfigWritten:
    spec = validate_spec(body.spec)
    store = repository.ROUTES
    await store.lock(session, namespace, name)
    replay = check_generation(
        stored_config(await store.get(session, namespace, name)), body, body.spec
    )
    if replay is not None:
        return replay
    owner = await repository.model_owner(session, spec.model)
    if owner is not None and (owner.namespace, owner.name) != (namespace, name):
        raise RouteRejected(
            "ModelConflict",
            f"spec.model: '{spec.model}' is already served by route {owner.namespace}/{owner.name}",
            [{"field": "spec.model", "reason": "already served by another route"}],
        )
    try:
        written = await store.write(
            session,
            namespace,
            name,
            body,
            body.spec,
            model=spec.model,
            updated_at=datetime.now(UTC),
        )
    except IntegrityError:
        # A concurrent PUT of another route claimed the model between our check and insert.
        raise RouteRejected(
            "ModelConflict",
            f"spec.model: '{spec.model}' is already served by another route",
            [{"field": "spec.model", "reason": "already served by another route"}],
        ) from None
    await store.publish(session, str(written.revision))
    return written


async def delete_route(session: AsyncSession, namespace: str, name: str) -> None:
    store = repository.ROUTES
    await store.lock(session, namespace, name)
    removed = await store.remove(session, namespace, name)
    if removed is not None:
        await store.publish(session, str(removed.revision))


async def list_routes(session: AsyncSession) -> list[dict[str, Any]]:
    return [listing_item(r, public_spec(r.spec)) for r in await repository.ROUTES.list(session)]


async def stored_route(session: AsyncSession, namespace: str, name: str) -> Any:
    row = await repository.ROUTES.get(session, namespace, name)
    if row is None:
        raise NotFound(f"route {namespace}/{name} does not exist")
    return row
