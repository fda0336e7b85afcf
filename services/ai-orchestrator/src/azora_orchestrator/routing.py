"""The route table and the routing decisions: strategies, tiers, health, slow start.

Concurrency model: everything here runs on the event loop thread, and no method awaits, so
every pick and every outcome update is atomic with respect to other requests. That is what
makes smooth weighted round-robin exact and the in-flight counters correct without locks.

Runtime state (:class:`BackendState`: health, EWMA, in-flight, ejections) is kept across route
swaps for backends that keep the same route, name and URL; configuration
(:class:`BackendConfig`) is immutable and replaced on every swap. A request holds the
:class:`Backend` (config + state) it started on, so it finishes there even if the route
changed meanwhile.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from yarl import URL

from azora_orchestrator.cost import BackendPrice
from azora_orchestrator.schemas import (
    BackendStatus,
    Health,
    RouteSpec,
    RouteStatus,
    parse_duration,
)
from azora_orchestrator.settings import OrchestratorSettings

OPERATIONS = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}

# Upper bound of the latency EWMA fed by failures (seconds per output token).
MAX_PENALTY_S = 60.0

# Active checks run for every route from the moment it is installed. A route without its own
# ``health.activeCheck`` gets this probe: GET <url>/models every 10 s, where any HTTP answer
# below 500 counts (it proves the backend is there; /models is part of the OpenAI API, but a
# 404 from a server without it still is an answer). A configured check wants a 2xx.
DEFAULT_CHECK_PATH = "/models"
DEFAULT_CHECK_INTERVAL_S = 10.0

HEALTH_STATES: tuple[Health, ...] = ("healthy", "unknown", "ejected", "unhealthy")

WRR = "weighted-round-robin"
LEAST_REQUEST = "least-request"
LATENCY = "latency"


@dataclass(frozen=True, slots=True)
class BackendConfig:
    name: str
    url: str
    upstream_model: str
    weight: int
    priority: int
    max_concurrency: int
    connect_s: float
    first_byte_s: float
    total_s: float
    stream_idle_s: float
    headers: dict[str, str]
    endpoints: dict[str, URL]
    health_url: URL
    plain_timeout: aiohttp.ClientTimeout
    stream_timeout: aiohttp.ClientTimeout
    price: BackendPrice | None = None  # cost.py; None: the backend costs nothing


class BackendState:
    """Live state of one backend; survives route swaps (same route key, name and URL).

    Everything time-bound is a timestamp read against the clock (``now``, monotonic), never a
    flag cleared when the router next looks: an ejection is in force while
    ``now < ejected_until`` and the slow-start ramp runs from ``ramp_from`` (the end of the
    ejection, or the passing check that restored the backend). So the router, the status and
    the metrics, asked at the same ``now``, agree whatever traffic there was meanwhile.
    """

    __slots__ = (
        "active_failures",
        "active_ok",
        "answered",
        "consecutive_failures",
        "cooldown_until",
        "ejected_until",
        "ejections",
        "error_rate",
        "ewma_s",
        "in_flight",
        "ramp_from",
    )

    def __init__(self) -> None:
        self.in_flight = 0
        self.consecutive_failures = 0
        self.ejections = 0  # consecutive ejections; grows the next ejection's length
        self.ejected_until = 0.0  # monotonic; ejected while now < ejected_until
        self.cooldown_until = 0.0  # monotonic; set by Retry-After on a 429/503
        self.active_ok = True
        self.active_failures = 0
        # Monotonic start of the slow-start ramp (the end of an ejection: may lie ahead).
        self.ramp_from: float | None = None
        # False until the backend has answered once (a passing check or a successful try):
        # until then its health is "unknown", not "healthy".
        self.answered = False
        self.ewma_s: float | None = None
        self.error_rate = 0.0


@dataclass(slots=True, eq=False)
class Backend:
    cfg: BackendConfig
    state: BackendState
    route_label: str
    # Prometheus children cached per outcome so the hot path does not resolve labels.
    metric_children: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class Tier:
    priority: int
    backends: list[Backend]
    # Smooth WRR "current weight" per backend (nginx's algorithm); reset on every swap.
    current: list[float]


@dataclass(frozen=True, slots=True)
class Tunables:
    slow_start_s: float
    max_ejection_s: float
    failure_penalty_s: float
    ewma_alpha: float
    error_alpha: float


@dataclass(slots=True, eq=False)
class Route:
    key: str  # namespace/name, the route label of every metric
    namespace: str
    name: str
    model: str
    generation: int
    revision: int
    strategy: str
    tiers: list[Tier]
    fallbacks: tuple[str, ...]
    attempts: int
    budget_percent: int
    per_try_s: float
    consecutive_failures: int
    base_ejection_s: float
    max_ejection_percent: int
    active_path: str
    active_interval_s: float
    active_default: bool  # the default probe (no activeCheck in the spec): any answer < 500
    rpm: int | None
    tpm: int | None
    client_rpm: int | None
    client_tpm: int | None
    tun: Tunables
    rng: random.Random

    @property
    def backends(self) -> Iterable[Backend]:
        for tier in self.tiers:
            yield from tier.backends

    # -- weights and eligibility -------------------------------------------------------------
    # Pure functions of the state and ``now``: the router, the status and the metrics call the
    # same ones, so what the status reports is what the router does at that instant.

    def ramp(self, backend: Backend, now: float) -> float:
        """The slow-start factor: 0.1 when the ramp starts, 1.0 once the window has passed."""
        since = backend.state.ramp_from
        window = self.tun.slow_start_s
        if since is None or window <= 0:
            return 1.0
        elapsed = now - since
        if elapsed >= window:
            return 1.0
        return 0.1 + 0.9 * (max(0.0, elapsed) / window)

    def available(self, backend: Backend, now: float) -> bool:
        """May receive traffic at ``now``: not ejected, checks passing, not cooling down."""
        st = backend.state
        return (
            st.ejected_until <= now
            and st.active_ok
            and st.cooldown_until <= now
            and backend.cfg.weight > 0
        )

    def effective_weight(self, backend: Backend, now: float) -> float:
        """The weight the router gives the backend at ``now`` (0 when it gets no traffic)."""
        if not self.available(backend, now):
            return 0.0
        return backend.cfg.weight * self.ramp(backend, now)

    def _eligible(self, backend: Backend, now: float, tried: set[Backend] | None) -> float:
        """The backend's effective weight if it may take this try, else 0."""
        if tried is not None and backend in tried:
            return 0.0
        if backend.state.in_flight >= backend.cfg.max_concurrency:
            return 0.0
        return self.effective_weight(backend, now)

    # -- picking -------------------------------------------------------------------------------

    def pick(self, tier: Tier, now: float, tried: set[Backend] | None) -> Backend | None:
        if self.strategy == WRR:
            return self._pick_swrr(tier, now, tried)
        return self._pick_p2c(tier, now, tried)

    def _pick_swrr(self, tier: Tier, now: float, tried: set[Backend] | None) -> Backend | None:
        # nginx smooth weighted round-robin: every eligible peer gains its effective weight,
        # the largest current weight wins and pays back the total. Over any window of
        # sum(weights) picks each peer is chosen exactly `weight` times, evenly interleaved.
        best = -1
        total = 0.0
        current = tier.current
        backends = tier.backends
        for i in range(len(backends)):
            w = self._eligible(backends[i], now, tried)
            if w <= 0:
                continue
            current[i] += w
            total += w
            if best < 0 or current[i] > current[best]:
                best = i
        if best < 0:
            return None
        current[best] -= total
        return backends[best]

    def _pick_p2c(self, tier: Tier, now: float, tried: set[Backend] | None) -> Backend | None:
        candidates: list[Backend] = []
        weights: list[float] = []
        for b in tier.backends:
            w = self._eligible(b, now, tried)
            if w > 0:
                candidates.append(b)
                weights.append(w)
        n = len(candidates)
        if n == 0:
            return None
        if n == 1:
            return candidates[0]
        # Weighted power of two choices: both candidates are drawn in proportion to weight
        # (the second without replacement), and the first wins ties. With equal load the split
        # is therefore exactly proportional to weight in expectation; under load the score
        # below moves traffic away from the busier (or slower) backend.
        rng = self.rng
        first = _weighted_index(rng, weights, sum(weights))
        w_first = weights[first]
        weights[first] = 0.0
        second = _weighted_index(rng, weights, sum(weights))
        weights[first] = w_first
        a, b = candidates[first], candidates[second]
        if self._score(b, weights[second]) < self._score(a, w_first):
            return b
        return a

    def _score(self, backend: Backend, weight: float) -> float:
        st = backend.state
        if self.strategy == LEAST_REQUEST:
            return st.in_flight / weight
        # Latency: expected wait = EWMA latency (per output token, failures penalised) scaled
        # by the queue we would join. An unmeasured backend scores 0 so it gets explored.
        ewma = st.ewma_s or 0.0
        return ewma * (st.in_flight + 1) / weight

    # -- outcomes ------------------------------------------------------------------------------

    def record_success(self, backend: Backend, latency_sample_s: float | None) -> None:
        st = backend.state
        st.answered = True
        st.consecutive_failures = 0
        st.error_rate *= 1.0 - self.tun.error_alpha
        if latency_sample_s is not None:
            prev = st.ewma_s
            a = self.tun.ewma_alpha
            st.ewma_s = latency_sample_s if prev is None else prev + a * (latency_sample_s - prev)

    def record_failure(self, backend: Backend, now: float) -> bool:
        """Any failed try but a throttle or the client's own 4xx: a connect error, an invalid
        URL, TLS, a protocol error, a timeout, a 5xx. Returns True when this one ejected it."""
        st = backend.state
        a = self.tun.error_alpha
        st.error_rate += a * (1.0 - st.error_rate)
        prev = st.ewma_s or 0.0
        # A failure counts as at least the penalty and at least twice the current estimate,
        # capped so a long outage cannot push the score beyond recovery.
        penalty = min(max(prev * 2.0, self.tun.failure_penalty_s), MAX_PENALTY_S)
        st.ewma_s = prev + self.tun.ewma_alpha * (penalty - prev)
        if st.ejected_until > now:
            return False  # a try that started before the ejection: already accounted for
        st.consecutive_failures += 1
        if st.consecutive_failures < self.consecutive_failures:
            return False
        tier = self._tier_of(backend)
        if tier is None or not self._may_eject(tier, now):
            return False
        if st.ejections and self.base_ejection_s > 0:
            # Forget one past ejection per quiet base_ejection since the previous one ended.
            quiet = now - st.ejected_until
            st.ejections = max(0, st.ejections - int(quiet // self.base_ejection_s))
        st.ejections += 1
        length = min(self.base_ejection_s * (2 ** (st.ejections - 1)), self.tun.max_ejection_s)
        st.ejected_until = now + length
        st.consecutive_failures = 0  # counted again from zero once the ejection ends
        st.ramp_from = st.ejected_until  # the ramp starts when the ejection ends, by the clock
        return True

    def record_throttle(self, backend: Backend, now: float, retry_after_s: float | None) -> None:
        """A 429: the backend is alive but asks us to back off; not a health failure."""
        st = backend.state
        st.answered = True
        st.error_rate += self.tun.error_alpha * (1.0 - st.error_rate)
        if retry_after_s is not None and retry_after_s > 0:
            st.cooldown_until = max(st.cooldown_until, now + retry_after_s)

    def _tier_of(self, backend: Backend) -> Tier | None:
        for tier in self.tiers:
            if backend in tier.backends:
                return tier
        return None

    def _may_eject(self, tier: Tier, now: float) -> bool:
        if self.max_ejection_percent <= 0:
            return False
        ejected = sum(1 for b in tier.backends if b.state.ejected_until > now)
        # At least one backend of a tier may always be ejected (otherwise a one-backend tier
        # could never hand its traffic to the next tier); beyond that, the configured share.
        limit = max(1, (len(tier.backends) * self.max_ejection_percent) // 100)
        return ejected + 1 <= limit

    def mark_active(self, backend: Backend, ok: bool, now: float, threshold: int) -> None:
        st = backend.state
        if ok:
            st.answered = True
            st.active_failures = 0
            if not st.active_ok:
                st.active_ok = True
                st.ramp_from = max(now, st.ramp_from or now)
            return
        st.active_failures += 1
        if st.active_failures >= threshold:
            st.active_ok = False

    def healthy(self, backend: Backend, now: float) -> bool:
        """May receive traffic as far as health goes: not ejected, active checks passing."""
        st = backend.state
        return st.active_ok and st.ejected_until <= now

    def health(self, backend: Backend, now: float) -> Health:
        """``ejected`` (passive, until ejected_until), ``unhealthy`` (active checks failing),
        ``unknown`` (has never answered: no passing check, no successful try) or ``healthy``.
        Only ``healthy`` counts towards a route's readiness; ``unknown`` still gets traffic."""
        st = backend.state
        if st.ejected_until > now:
            return "ejected"
        if not st.active_ok:
            return "unhealthy"
        if not st.answered:
            return "unknown"
        return "healthy"

    # -- insight -------------------------------------------------------------------------------

    def backend_status(self, backend: Backend, now: float) -> BackendStatus:
        st = backend.state
        health = self.health(backend, now)
        return BackendStatus(
            name=backend.cfg.name,
            healthy=health == "healthy",
            health=health,
            ejected_until=_rfc3339(st.ejected_until) if health == "ejected" else None,
            in_flight=st.in_flight,
            effective_weight=round(self.effective_weight(backend, now), 3),
            consecutive_failures=st.consecutive_failures,
            latency_ms_ewma=None if st.ewma_s is None else round(st.ewma_s * 1000, 3),
            error_rate=round(st.error_rate, 4),
        )

    def status(self, now: float) -> RouteStatus:
        """The live insight of this replica at ``now`` (``GET …/status``)."""
        return route_status(
            self.revision,
            self.generation,
            self.strategy,
            [self.backend_status(b, now) for b in self.backends],
        )


def route_status(
    revision: int, generation: int, strategy: str, backends: list[BackendStatus]
) -> RouteStatus:
    """Counts per health, and ``ready``: at least one backend has answered and is healthy."""
    counts = {h: sum(1 for b in backends if b.health == h) for h in HEALTH_STATES}
    return RouteStatus(
        revision=revision,
        generation=generation,
        strategy=strategy,
        backends=backends,
        healthy=counts["healthy"],
        unknown=counts["unknown"],
        ejected=counts["ejected"],
        unhealthy=counts["unhealthy"],
        total=len(backends),
        ready=counts["healthy"] > 0,
    )


def _rfc3339(mono: float) -> str:
    wall = datetime.fromtimestamp(monotonic_to_wall(mono), UTC)
    return wall.isoformat().replace("+00:00", "Z")


def _weighted_index(rng: random.Random, weights: list[float], total: float) -> int:
    x = rng.random() * total
    last = 0
    for i, w in enumerate(weights):
        if w <= 0:
            continue
        last = i
        x -= w
        if x < 0:
            return i
    return last


@dataclass(frozen=True, slots=True)
class RouteTable:
    """Immutable snapshot: model -> route, route key -> route. Swapped with one assignment."""

    by_model: dict[str, Route]
    by_key: dict[str, Route]
    revision: int
    models_body: bytes


def _join(base: str, path: str) -> URL:
    return URL(base.rstrip("/") + path, encoded=True)


StateKey = tuple[str, str, str]


def build_route(
    row: Any,
    settings: OrchestratorSettings,
    old_states: dict[StateKey, BackendState],
    new_states: dict[StateKey, BackendState],
) -> Route:
    spec = RouteSpec.model_validate(row.spec)
    key = f"{row.namespace}/{row.name}"
    per_try = parse_duration(spec.retry.per_try_timeout)
    active = spec.health.active_check
    by_priority: dict[int, list[Backend]] = {}
    for b in spec.backends:
        upstream = b.model or spec.model
        connect_s = parse_duration(b.timeouts.connect)
        total_s = parse_duration(b.timeouts.total)
        idle_s = parse_duration(b.timeouts.stream_idle)
        headers = {"Content-Type": "application/json", **b.headers}
        if b.api_key:
            headers["Authorization"] = f"Bearer {b.api_key}"
        cfg = BackendConfig(
            name=b.name,
            url=b.url,
            upstream_model=upstream,
            weight=b.weight,
            priority=b.priority,
            max_concurrency=b.max_concurrency or 1 << 62,
            connect_s=connect_s,
            first_byte_s=min(parse_duration(b.timeouts.first_byte), per_try),
            total_s=total_s,
            stream_idle_s=idle_s,
            headers=headers,
            endpoints={op: _join(b.url, path) for op, path in OPERATIONS.items()},
            health_url=_join(b.url, active.path if active else DEFAULT_CHECK_PATH),
            # sock_connect, not connect: waiting for a free pooled connection is not a
            # backend failure. A non-streaming try is bounded by perTryTimeout as a whole.
            plain_timeout=aiohttp.ClientTimeout(
                total=min(total_s, per_try), sock_connect=connect_s
            ),
            stream_timeout=aiohttp.ClientTimeout(
                total=total_s, sock_connect=connect_s, sock_read=idle_s
            ),
            price=(
                BackendPrice(
                    b.price.currency, b.price.input_per_million, b.price.output_per_million
                )
                if b.price
                else None
            ),
        )
        state_key = (key, b.name, b.url)
        state = old_states.get(state_key) or new_states.get(state_key) or BackendState()
        new_states[state_key] = state
        by_priority.setdefault(b.priority, []).append(Backend(cfg, state, key))
    tiers = [
        Tier(priority=p, backends=bs, current=[0.0] * len(bs))
        for p, bs in sorted(by_priority.items())
    ]
    limits = spec.rate_limits
    per_client = limits.per_client if limits else None
    return Route(
        key=key,
        namespace=row.namespace,
        name=row.name,
        model=spec.model,
        generation=int(row.generation),
        revision=int(row.revision),
        strategy=spec.strategy,
        tiers=tiers,
        fallbacks=tuple(spec.fallbacks),
        attempts=spec.retry.attempts,
        budget_percent=spec.retry.budget_percent,
        per_try_s=per_try,
        consecutive_failures=spec.health.consecutive_failures,
        base_ejection_s=parse_duration(spec.health.base_ejection),
        max_ejection_percent=spec.health.max_ejection_percent,
        active_path=active.path if active else DEFAULT_CHECK_PATH,
        active_interval_s=parse_duration(active.interval) if active else DEFAULT_CHECK_INTERVAL_S,
        active_default=active is None,
        rpm=limits.requests_per_minute if limits else None,
        tpm=limits.tokens_per_minute if limits else None,
        client_rpm=per_client.requests_per_minute if per_client else None,
        client_tpm=per_client.tokens_per_minute if per_client else None,
        tun=Tunables(
            slow_start_s=settings.slow_start_s,
            max_ejection_s=settings.max_ejection_s,
            failure_penalty_s=settings.failure_penalty_s,
            ewma_alpha=settings.latency_ewma_alpha,
            error_alpha=settings.error_rate_alpha,
        ),
        rng=random.Random(),
    )


def monotonic_to_wall(mono: float) -> float:
    return time.time() + (mono - time.monotonic())
