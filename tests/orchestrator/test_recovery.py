"""Ejection end and slow start follow the clock (issue #16), on an injected clock.

The router's time source is the ``now`` every routing call takes (production passes
``time.monotonic()``): here the tests pass their own instants, so nothing sleeps and every
figure is exact. Routes go through ``Gateway.install`` (the production swap that carries live
state across configuration changes), not through hand-built objects.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from azora_orchestrator.gateway import Gateway
from azora_orchestrator.routing import Backend, Route
from azora_orchestrator.settings import OrchestratorSettings

SLOW_START = 30.0
EJECTION = 10.0
T0 = 1000.0  # the injected clock's epoch (monotonic seconds)


class Installed:
    """One route installed in a real (not started) gateway; re-installing keeps live state."""

    def __init__(self) -> None:
        self.gateway = Gateway(OrchestratorSettings(slow_start_s=SLOW_START, max_ejection_s=300))
        self.revision = 0

    def install(self, weights: dict[str, int]) -> Route:
        self.revision += 1
        row = SimpleNamespace(
            namespace="unit",
            name="split",
            generation=self.revision,
            revision=self.revision,
            spec={
                "model": "m",
                "backends": [
                    {"name": n, "url": f"http://127.0.0.1:{9100 + i}/v1", "weight": w}
                    for i, (n, w) in enumerate(weights.items())
                ],
                "health": {
                    "consecutiveFailures": 3,
                    "baseEjection": f"{EJECTION:g}s",
                    "maxEjectionPercent": 50,
                },
            },
        )
        self.gateway.install([row])
        return self.gateway.table.by_key["unit/split"]


def _backend(route: Route, name: str) -> Backend:
    return next(b for b in route.backends if b.cfg.name == name)


def _eject(route: Route, backend: Backend, now: float) -> None:
    ejected = [route.record_failure(backend, now) for _ in range(route.consecutive_failures)]
    assert ejected == [False, False, True]


def _shares(route: Route, now: float, n: int) -> dict[str, float]:
    (tier,) = route.tiers
    counts: dict[str, int] = {}
    for _ in range(n):
        picked = route.pick(tier, now, None)
        assert picked is not None
        counts[picked.cfg.name] = counts.get(picked.cfg.name, 0) + 1
    return {name: c / n for name, c in counts.items()}


def _status(route: Route, name: str, now: float) -> dict[str, Any]:
    status = route.status(now)
    return next(b.model_dump() for b in status.backends if b.name == name)


@pytest.mark.parametrize("strategy", ["weighted-round-robin", "least-request"])
def test_ejection_ends_and_ramp_runs_by_the_clock(strategy: str) -> None:
    inst = Installed()
    route = inst.install({"a": 3, "b": 1})
    route.strategy = strategy
    a, b = _backend(route, "a"), _backend(route, "b")
    for x in (a, b):
        route.record_success(x, 0.01)  # both have answered: known, healthy
    _eject(route, b, T0)
    assert b.state.ejected_until == T0 + EJECTION

    # Ejected: no traffic, and the status says so with the same figures.
    assert _shares(route, T0 + 5, 400) == {"a": 1.0}
    st = _status(route, "b", T0 + 5)
    assert (st["health"], st["healthy"], st["effective_weight"]) == ("ejected", False, 0.0)
    assert st["ejected_until"] is not None
    assert route.status(T0 + 5).ready is True  # a still serves

    # Nobody looks at the route until well into the ramp: the ramp started when the ejection
    # ended (T0 + 10), not when the router next looks. Checked at several points of the
    # window, the share over N picks is what effective_weight (and the status) says.
    n = 4000 if strategy == "weighted-round-robin" else 20000
    tolerance = 0.004 if strategy == "weighted-round-robin" else 0.012
    end = T0 + EJECTION
    for elapsed in (0.0, 7.5, 15.0, 22.5, 29.9, SLOW_START, 300.0):
        now = end + elapsed
        factor = min(1.0, 0.1 + 0.9 * elapsed / SLOW_START)
        want_b = factor / (3 + factor)
        assert route.effective_weight(b, now) == pytest.approx(factor)
        st = _status(route, "b", now)
        assert st["health"] == "healthy"
        assert st["ejected_until"] is None
        assert st["effective_weight"] == round(route.effective_weight(b, now), 3)
        assert _status(route, "a", now)["effective_weight"] == 3.0
        share = _shares(route, now, n)
        assert share["b"] == pytest.approx(want_b, abs=tolerance), (elapsed, share)

    # The ramp did not restart because the router looked: later is still full weight.
    assert route.effective_weight(b, end + 301) == 1.0


def test_weight_zero_while_healing_then_3_to_1_splits_exactly() -> None:
    """Issue #16's measurement: ejected, weight 0 while it heals, 3:1 minutes later."""
    inst = Installed()
    route = inst.install({"a": 3, "b": 1})
    a, b = _backend(route, "a"), _backend(route, "b")
    for x in (a, b):
        route.record_success(x, 0.01)
    _eject(route, b, T0)
    route = inst.install({"a": 3, "b": 0})  # an operator sets it aside while it heals
    b = _backend(route, "b")
    assert b.state.ejected_until == T0 + EJECTION  # the live state survived the swap
    assert _shares(route, T0 + 60, 100) == {"a": 1.0}

    # Minutes later, back to 3:1. The ejection ended at T0 + 10 and its ramp long before now.
    back = T0 + 180
    route = inst.install({"a": 3, "b": 1})
    b = _backend(route, "b")
    st = _status(route, "b", back)
    assert (st["health"], st["effective_weight"]) == ("healthy", 1.0)
    # What the status reports is what the router does, from the first request on.
    share = _shares(route, back, 4000)
    assert share["a"] == pytest.approx(0.75, abs=0.002), share
    # And over the 30 s a ramp would have lasted (the old behaviour: 0.78-0.90), still 0.75.
    total = {"a": 0, "b": 0}
    (tier,) = route.tiers
    for i in range(4000):
        picked = route.pick(tier, back + i * (SLOW_START / 4000), None)
        assert picked is not None
        total[picked.cfg.name] += 1
    assert total["a"] / 4000 == pytest.approx(0.75, abs=0.002), total


def test_failures_during_an_ejection_do_not_count_and_the_count_restarts_after() -> None:
    inst = Installed()
    route = inst.install({"a": 3, "b": 1})
    b = _backend(route, "b")
    _eject(route, b, T0)
    # A try that started before the ejection fails inside it: not counted again.
    assert route.record_failure(b, T0 + 1) is False
    assert b.state.consecutive_failures == 0
    # After the ejection the count restarts from zero: three more failures eject it again,
    # twice as long (consecutive ejections back off).
    after = T0 + EJECTION + 1
    assert [route.record_failure(b, after) for _ in range(3)] == [False, False, True]
    assert b.state.ejected_until == after + 2 * EJECTION
    assert b.state.ramp_from == b.state.ejected_until


def test_a_quiet_period_forgets_past_ejections() -> None:
    inst = Installed()
    route = inst.install({"a": 3, "b": 1})
    b = _backend(route, "b")
    _eject(route, b, T0)
    _eject(route, b, T0 + 11)  # right after: 20 s
    assert b.state.ejected_until == T0 + 31
    # Ended at T0 + 31; 35 s of quiet forget three past ejections (one per baseEjection):
    # the next one is the base length again.
    _eject(route, b, T0 + 66)
    assert b.state.ejected_until == T0 + 66 + EJECTION


def test_active_recovery_ramps_from_the_passing_check() -> None:
    inst = Installed()
    route = inst.install({"a": 1, "b": 1})
    b = _backend(route, "b")
    assert route.health(b, T0) == "unknown"  # installed, never answered
    route.mark_active(b, True, T0, threshold=2)
    assert route.health(b, T0) == "healthy"
    route.mark_active(b, False, T0 + 10, threshold=2)
    assert route.health(b, T0 + 10) == "healthy"  # one failed check is not enough
    route.mark_active(b, False, T0 + 20, threshold=2)
    assert route.health(b, T0 + 20) == "unhealthy"
    assert route.effective_weight(b, T0 + 25) == 0.0
    route.mark_active(b, True, T0 + 30, threshold=2)
    assert route.effective_weight(b, T0 + 30) == pytest.approx(0.1)
    assert route.effective_weight(b, T0 + 45) == pytest.approx(0.55)
    assert route.effective_weight(b, T0 + 60) == 1.0
