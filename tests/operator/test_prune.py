"""The orphan sweep (``azora_operator.prune``): when a config no resource declares is removed,
what keeps it, and the real thing against the services and the API server."""

from __future__ import annotations

from typing import Any

import pytest

from azora_devenv import LocalControlPlane
from azora_operator.client import ServiceUnavailable
from azora_operator.kinds import KINDS, PRICING_RULE, Kind
from azora_operator.prune import NamespaceScope, OrphanSweep
from azora_operator.settings import OperatorSettings
from tests.operator.kube import (
    OperatorProcess,
    admin_request,
    apply_and_wait,
    stored,
    wait_for,
)
from tests.operator.objects import rule
from tests.support.services import ServiceProcess


class _Service:
    def __init__(self) -> None:
        self.held: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str]] = []
        self.down = False

    async def items(self, plural: str) -> list[dict[str, Any]]:
        if self.down:
            raise ServiceUnavailable("GET: timed out")
        return list(self.held)

    async def delete(self, plural: str, namespace: str, name: str) -> None:
        self.deleted.append((namespace, name))
        self.held = [i for i in self.held if (i["namespace"], i["name"]) != (namespace, name)]


class _Reconciler:
    def __init__(self, settings: OperatorSettings, service: _Service) -> None:
        self.settings = settings
        self.service = service

    def client(self, kind: Kind) -> _Service:
        return self.service


class _Sweep(OrphanSweep):
    """The sweep with Kubernetes' answer given (the real listing is tested end to end below)."""

    declared_now: set[tuple[str, str]] = set()

    async def declared(self, kind: Kind) -> set[tuple[str, str]]:
        return set(self.declared_now)


def _sweep(**settings: Any) -> tuple[_Sweep, _Service]:
    service = _Service()
    own = OperatorSettings(resync_interval=10, **settings)
    sweep = _Sweep(_Reconciler(own, service))  # type: ignore[arg-type]
    sweep.declared_now = set()
    return sweep, service


def _item(namespace: str, name: str, revision: int = 1) -> dict[str, Any]:
    return {"namespace": namespace, "name": name, "revision": revision, "generation": 1}


async def test_an_orphan_goes_after_two_sweeps_and_the_grace() -> None:
    sweep, service = _sweep()
    assert sweep.settings.orphan_grace() == 20  # two resync intervals
    service.held = [_item("a", "hand-made"), _item("a", "declared")]
    sweep.declared_now = {("a", "declared")}
    assert await sweep.sweep(now=0) == []  # first seen
    assert await sweep.sweep(now=10) == []  # seen again, but within the grace
    removed = await sweep.sweep(now=20)
    assert removed == [("PricingRule", "a", "hand-made")]
    # the same item is held by the one fake service for every kind: removed once
    assert service.deleted == [("a", "hand-made")]


async def test_a_gap_or_a_rewrite_starts_the_clock_again() -> None:
    sweep, service = _sweep()
    service.held = [_item("a", "x")]
    await sweep.sweep(now=0)
    service.down = True  # a failed listing: nothing counts as seen
    await sweep.sweep(now=10)
    service.down = False
    assert await sweep.sweep(now=20) == []  # a new suspect, not a second sighting
    service.held = [_item("a", "x", revision=2)]  # written again meanwhile
    assert await sweep.sweep(now=40) == []
    assert await sweep.sweep(now=59) == []
    assert await sweep.sweep(now=60) != []


async def test_a_resource_created_meanwhile_keeps_its_config() -> None:
    sweep, service = _sweep()
    service.held = [_item("a", "late")]
    await sweep.sweep(now=0)
    sweep.declared_now = {("a", "late")}
    assert await sweep.sweep(now=100) == []
    assert service.deleted == []


async def test_opt_outs_and_the_watched_namespaces() -> None:
    sweep, _ = _sweep(prune=False)
    assert sweep.kinds() == []
    sweep, _ = _sweep(prune_exclude=["azora-pricing"])
    assert {k.kind for k in sweep.kinds()} == {"AIModelRoute", "EnrollmentCohort"}
    sweep, _ = _sweep(prune_exclude=["AIModelRoute"])
    assert len(sweep.kinds()) == len(KINDS) - 1
    sweep, service = _sweep(namespaces=["team-*", "!team-x"], prune_grace=1)
    service.held = [_item("team-a", "o"), _item("team-x", "o"), _item("other", "o")]
    await sweep.sweep(now=0)
    removed = await sweep.sweep(now=5)
    assert {(ns, name) for _, ns, name in removed} == {("team-a", "o")}


def test_namespace_scope_follows_kopfs_patterns() -> None:
    assert NamespaceScope([]).cluster_wide
    assert NamespaceScope(["a", "b"]).exact == ["a", "b"]
    assert NamespaceScope(["team-*"]).exact is None
    scope = NamespaceScope(["team-*", "!team-x"])
    assert ("team-a" in scope, "team-x" in scope, "other" in scope) == (True, False, False)


@pytest.mark.e2e
def test_a_config_no_resource_declares_is_removed(
    kube: LocalControlPlane, services: dict[str, ServiceProcess], operator: OperatorProcess, ns: str
) -> None:
    # A declared rule, and a hidden one put straight into the admin API (the 100 % off).
    name, _ = apply_and_wait(kube, rule(ns))
    hidden = rule(ns)["spec"] | {"action": {"percentOff": "100"}}
    status, body = admin_request(
        services["pricing"].url,
        "PUT",
        f"/admin/v1/pricing-rules/{ns}/hidden",
        {"generation": 1, "uid": "", "spec": hidden},
    )
    assert status == 200, body
    # Grace: two resync intervals (1 s in these tests) and two sweeps.
    wait_for(lambda: stored(services, "PricingRule", ns, "hidden") is None, what="orphan pruned")
    assert stored(services, "PricingRule", ns, name) is not None
    assert "PricingRule " + ns + "/hidden removed from azora-pricing" in operator.log()
    pruned = f'azora_operator_reconciles_total{{kind="{PRICING_RULE.kind}",result="pruned"}}'
    assert any(line.startswith(pruned) for line in operator.metrics().splitlines())
