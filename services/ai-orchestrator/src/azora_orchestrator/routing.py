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
from typing import Any

import aiohttp
from yarl import URL

from azora_orchestrator.cost import BackendPrice
from azora_orchestrator.schemas import RouteSpec, parse_duration
from azora_orchestrator.settings import OrchestratorSettings

OPERATIONS = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}

# Upper bound of the latency EWMA fed by failures (seconds per output token).
MAX_PENALTY_S = 60.0

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
    health_url: URL | None
    plain_timeout: aiohttp.ClientTimeout
    stream_timeout: aiohttp.ClientTimeout
    price: BackendPrice | None = None  # cost.py; None: the backend costs nothing


class BackendState:
    """Live state of one backend; survives route swaps (same route key, name and URL)."""

    __slots__ = (
        "active_failures",
        "active_ok",
        "consecutive_failures",
        "cooldown_until",
        "ejected",
        "ejected_until",
        "ejections",
        "error_rate",
        "ewma_s",
        "in_flight",
        "recovering_since",
    )

    def __init__(self) -> None:
        self.in_flight = 0
        self.consecutive_failures = 0
        self.ejections = 0  # consecutive ejections; grows the next ejection's length
        self.ejected = False
        self.ejected_until = 0.0  # monotonic
        self.cooldown_until = 0.0  # monotonic; set by Retry-After on a 429/503
        self.active_ok = True
        self.active_failures = 0
        self.recovering_since: float | None = None  # monotonic start of the slow-start ramp
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
    active_path: str | None
    active_interval_s: float
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

    def effective_weight(self, backend: Backend, now: float) -> float:
        st = backend.state
        weight = float(backend.cfg.weight)
        since = st.recovering_since
        if since is not None:
            window = self.tun.slow_start_s
            elapsed = now - since
            if window <= 0 or elapsed >= window:
                st.recovering_since = None
            else:
                # Slow start: 10% at return, full weight after the window.
                weight *= 0.1 + 0.9 * (elapsed / window)
        return weight

    def available(self, backend: Backend, now: float) -> bool:
        st = backend.state
        if st.ejected:
            if st.ejected_until > now:
                return False
            st.ejected = False
            st.consecutive_failures = 0
            st.recovering_since = now
        return st.active_ok and st.cooldown_until <= now and backend.cfg.weight > 0

    def _eligible(self, backend: Backend, now: float, tried: set[Backend] | None) -> bool:
        if tried is not None and backend in tried:
            return False
        if not self.available(backend, now):
            return False
        return backend.state.in_flight < backend.cfg.max_concurrency

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
            b = backends[i]
            if not self._eligible(b, now, tried):
                continue
            w = self.effective_weight(b, now)
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
            if self._eligible(b, now, tried):
                w = self.effective_weight(b, now)
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
        st.consecutive_failures = 0
        st.error_rate *= 1.0 - self.tun.error_alpha
        if latency_sample_s is not None:
            prev = st.ewma_s
            a = self.tun.ewma_alpha
            st.ewma_s = latency_sample_s if prev is None else prev + a * (latency_sample_s - prev)

    def record_failure(self, backend: Backend, now: float) -> bool:
        """A connect error, timeout or 5xx. Returns True when this failure ejected it."""
        st = backend.state
        a = self.tun.error_alpha
        st.error_rate += a * (1.0 - st.error_rate)
        prev = st.ewma_s or 0.0
        # A failure counts as at least the penalty and at least twice the current estimate,
        # capped so a long outage cannot push the score beyond recovery.
        penalty = min(max(prev * 2.0, self.tun.failure_penalty_s), MAX_PENALTY_S)
        st.ewma_s = prev + self.tun.ewma_alpha * (penalty - prev)
        st.consecutive_failures += 1
        if st.ejected or st.consecutive_failures < self.consecutive_failures:
            return False
        tier = self._tier_of(backend)
        if tier is None or not self._may_eject(tier, now):
            return False
        st.ejections += 1
        length = min(self.base_ejection_s * (2 ** (st.ejections - 1)), self.tun.max_ejection_s)
        st.ejected = True
        st.ejected_until = now + length
        st.recovering_since = None
        return True

    def record_throttle(self, backend: Backend, now: float, retry_after_s: float | None) -> None:
        """A 429: the backend is alive but asks us to back off; not a health failure."""
        st = backend.state
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
        ejected = sum(1 for b in tier.backends if b.state.ejected and b.state.ejected_until > now)
        # At least one backend of a tier may always be ejected (otherwise a one-backend tier
        # could never hand its traffic to the next tier); beyond that, the configured share.
        limit = max(1, (len(tier.backends) * self.max_ejection_percent) // 100)
        return ejected + 1 <= limit

    def mark_active(self, backend: Backend, ok: bool, now: float, threshold: int) -> None:
        st = backend.state
        if ok:
            st.active_failures = 0
            if not st.active_ok:
                st.active_ok = True
                st.recovering_since = now
            return
        st.active_failures += 1
        if st.active_failures >= threshold:
            st.active_ok = False

    def healthy(self, backend: Backend, now: float) -> bool:
        st = backend.state
        return st.active_ok and not (st.ejected and st.ejected_until > now)

    def ejection_decay(self, backend: Backend, now: float) -> None:
        """Forget one past ejection after a full slow-start window without a new one."""
        st = backend.state
        if st.ejections and not st.ejected and now - st.ejected_until > self.base_ejection_s:
            st.ejections -= 1
            st.ejected_until = now  # the next decay needs another quiet window


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
            health_url=(
                _join(b.url, spec.health.active_check.path) if spec.health.active_check else None
            ),
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
        active_path=spec.health.active_check.path if spec.health.active_check else None,
        active_interval_s=(
            parse_duration(spec.health.active_check.interval) if spec.health.active_check else 0
        ),
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
