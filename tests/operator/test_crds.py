"""The CRDs against a real API server: examples valid, CEL rejections with their messages,
descriptions everywhere (kubectl explain), short names, the azora category, printer columns."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from azora_devenv import LocalControlPlane
from tests.operator.kube import CRDS, EXAMPLES, kubectl_ok, unique

KINDS = ("PricingRule", "AIModelRoute", "EnrollmentCohort", "PricingPolicy")


def _crds() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in sorted(CRDS.glob("*.yaml"))]


def _walk(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, sub in (schema.get("properties") or {}).items():
        child = f"{path}.{name}"
        yield child, sub
        yield from _walk(sub, child)
        if isinstance(sub.get("items"), dict):
            yield from _walk(sub["items"], child + "[]")


def test_one_file_per_kind_with_the_shared_conventions() -> None:
    crds = _crds()
    assert sorted(c["spec"]["names"]["kind"] for c in crds) == sorted(KINDS)
    for crd in crds:
        spec = crd["spec"]
        assert spec["group"] == "azora.io"
        assert spec["scope"] == "Namespaced"
        assert "azora" in spec["names"]["categories"]
        assert spec["names"]["shortNames"]
        (version,) = spec["versions"]
        assert version["name"] == "v1alpha1"
        assert version["subresources"] == {"status": {}}
        columns = [c["name"] for c in version["additionalPrinterColumns"]]
        assert columns[0] == "Ready"
        assert columns[-1] == "Age"


def test_every_field_has_a_description() -> None:
    missing = []
    for crd in _crds():
        root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, sub in _walk(root, crd["spec"]["names"]["kind"]):
            if path.endswith(".metadata"):
                continue
            if not sub.get("description"):
                missing.append(path)
    assert missing == []


def test_status_declares_the_fields_the_operator_writes() -> None:
    # Undeclared status fields are pruned by the API server: the operator's writes must fit.
    for crd in _crds():
        status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        props = status["properties"]
        for field in ("conditions", "observedGeneration", "appliedRevision", "lastSyncTime"):
            assert field in props, (crd["metadata"]["name"], field)
        cond = props["conditions"]["items"]["properties"]
        assert set(cond) == {
            "type",
            "status",
            "reason",
            "message",
            "lastTransitionTime",
            "observedGeneration",
        }


def test_examples_are_accepted_and_defaults_applied(kube: LocalControlPlane) -> None:
    ns = unique("crd-examples")
    kubectl_ok(kube, "create", "namespace", ns)
    for path in sorted(EXAMPLES.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        for doc in docs:
            doc["metadata"]["namespace"] = ns
        # server-side dry run: validated and defaulted, not stored (no operator involved)
        out = kubectl_ok(
            kube,
            "apply",
            "--dry-run=server",
            "-o",
            "yaml",
            "-f",
            "-",
            input=yaml.safe_dump_all(docs),
        )
        assert "azora.io/v1alpha1" in out
    out = kubectl_ok(
        kube,
        "create",
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        "-",
        input=yaml.safe_dump(
            {
                "apiVersion": "azora.io/v1alpha1",
                "kind": "AIModelRoute",
                "metadata": {"name": "defaults", "namespace": ns},
                "spec": {"model": "m", "backends": [{"name": "a", "url": "http://a:1/v1"}]},
            }
        ),
    )
    obj = yaml.safe_load(out)
    assert obj["spec"]["strategy"] == "weighted-round-robin"
    assert obj["spec"]["backends"][0]["weight"] == 1
    assert obj["spec"]["backends"][0]["priority"] == 0


def _rule(action: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "azora.io/v1alpha1",
        "kind": "PricingRule",
        "metadata": {"name": unique("r")},
        "spec": {"action": action, **spec},
    }


def _curve(*points: tuple[str, str], **bounds: str) -> dict[str, Any]:
    """A demandCurve action from (fill, multiplier) points, with floor/ceiling if given."""
    return {"demandCurve": {"points": [{"fill": f, "multiplier": m} for f, m in points], **bounds}}


def _route(backends: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "azora.io/v1alpha1",
        "kind": "AIModelRoute",
        "metadata": {"name": unique("rt")},
        "spec": {"model": "m", "backends": backends, **spec},
    }


def _cohort(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "azora.io/v1alpha1",
        "kind": "EnrollmentCohort",
        "metadata": {"name": unique("c")},
        "spec": {"course": "c", "title": "t", **spec},
    }


B = {"url": "http://b:8000/v1"}

REJECTIONS = [
    pytest.param(
        _route([{**B, "name": "a", "weight": 0}]),
        "at least one backend must have a weight greater than 0",
        id="route-no-weight",
    ),
    pytest.param(
        _route([{**B, "name": "a"}, {**B, "name": "a"}]),
        "backend names must be unique within the route",
        id="route-duplicate-backend",
    ),
    pytest.param(
        _route([{**B, "name": "a"}], fallbacks=["m"]),
        "a route cannot list its own model as a fallback",
        id="route-self-fallback",
    ),
    pytest.param(
        _cohort(opensAt="2030-01-02T00:00:00Z", closesAt="2030-01-01T00:00:00Z"),
        "closesAt must be after opensAt",
        id="cohort-window",
    ),
    pytest.param(
        _cohort(waitlist={"enabled": True, "priorityRules": [{"segment": "a", "priority": 1}]}),
        "waitlist.priorityRules require waitlist.ordering priority",
        id="cohort-priority-rules",
    ),
    pytest.param(
        _rule({"percentOff": "10", "multiplier": "1.1"}),
        "action must set exactly one of percentOff, amountOff, fixedPrice, multiplier, demandCurve",
        id="rule-two-actions",
    ),
    pytest.param(
        _rule({}),
        "action must set exactly one of percentOff, amountOff, fixedPrice, multiplier, demandCurve",
        id="rule-no-action",
    ),
    pytest.param(
        _rule({"percentOff": "0"}),
        "percentOff must be greater than 0 and at most 100",
        id="rule-percent-zero",
    ),
    pytest.param(
        _rule({"percentOff": "100.5"}),
        "percentOff must be greater than 0 and at most 100",
        id="rule-percent-over",
    ),
    pytest.param(
        _rule({"percentOff": "abc"}),
        "should match '^[0-9]+(\\.[0-9]+)?$'",
        id="rule-percent-not-decimal",
    ),
    pytest.param(
        _rule(_curve(("0.5", "1.1"), floor="1.5", ceiling="1.2")),
        "demandCurve.floor must not exceed demandCurve.ceiling",
        id="rule-curve-floor",
    ),
    pytest.param(
        _rule(_curve(("1.5", "1"))),
        "demandCurve fill must be between 0 and 1",
        id="rule-curve-fill",
    ),
    pytest.param(
        _rule(
            {"percentOff": "5"},
            schedule={"validFrom": "2030-01-02T00:00:00Z", "validUntil": "2030-01-01T00:00:00Z"},
        ),
        "schedule.validUntil must be after schedule.validFrom",
        id="rule-schedule",
    ),
    pytest.param(
        _rule({"percentOff": "5"}, target={"minQuantity": 5, "maxQuantity": 2}),
        "target.minQuantity must not exceed target.maxQuantity",
        id="rule-quantities",
    ),
    pytest.param(
        _rule({"amountOff": {"amount": 5, "currency": "eur"}}),
        "should match '^[A-Z]{3}$'",
        id="rule-currency",
    ),
    # Bounds the services enforce, stated where kubectl apply reports them.
    pytest.param(
        _cohort(refundWindow="99999999999999999999h"),
        "spec.refundWindow: Invalid value",
        id="cohort-refund-window-overflow",
    ),
    pytest.param(
        _cohort(refundWindow="9000h"),
        "refundWindow must be at most 8760h",
        id="cohort-refund-window-long",
    ),
    pytest.param(
        _cohort(waitlist={"enabled": True, "mode": "offer", "claimWindow": "30s"}),
        "waitlist.claimWindow must be between 1m and 720h",
        id="cohort-claim-window-short",
    ),
    pytest.param(
        _cohort(capacity=2**31),
        "spec.capacity: Invalid value",
        id="cohort-capacity-int32",
    ),
    pytest.param(
        _cohort(
            waitlist={
                "enabled": True,
                "ordering": "priority",
                "priorityRules": [
                    {"segment": "a", "priority": 1},
                    {"segment": "a", "priority": 2},
                ],
            }
        ),
        "Duplicate value",
        id="cohort-priority-segment-twice",
    ),
    pytest.param(
        _cohort(eligibility={"prerequisites": ["ns/a", "ns/a"]}),
        "Duplicate value",
        id="cohort-prerequisite-twice",
    ),
    pytest.param(
        _route([{**B, "name": "a", "timeouts": {"total": "99999h"}}]),
        "timeouts.total must be greater than 0 and at most 1h",
        id="route-timeout-long",
    ),
    pytest.param(
        _route([{**B, "name": "a", "timeouts": {"connect": "0s"}}]),
        "timeouts.connect must be greater than 0 and at most 1h",
        id="route-timeout-zero",
    ),
    pytest.param(
        _route([{**B, "name": "a"}], retry={"perTryTimeout": "2h"}),
        "retry.perTryTimeout must be greater than 0 and at most 1h",
        id="route-per-try-long",
    ),
    pytest.param(
        _route([{"name": "a", "url": "http://b:99999/v1"}]),
        "backend url port must be between 1 and 65535",
        id="route-url-port",
    ),
    pytest.param(
        _route([{**B, "name": "a", "headers": {"AUTHORIZATION": "Bearer x"}}]),
        "backend headers must not carry credentials",
        id="route-authorization-header",
    ),
    pytest.param(
        _rule(_curve(("0.8", "1.5"), ("0.2", "1.1"))),
        "demandCurve points must be in strictly increasing fill order",
        id="rule-curve-unsorted",
    ),
    pytest.param(
        _rule(_curve(("0.5", "1.5"), ("0.50", "1.1"))),
        "demandCurve points must be in strictly increasing fill order",
        id="rule-curve-repeated-fill",
    ),
    pytest.param(
        _rule({"percentOff": "5"}, target={"maxQuantity": 2**31}),
        "spec.target.maxQuantity: Invalid value",
        id="rule-quantity-int32",
    ),
]


@pytest.mark.parametrize(("obj", "message"), REJECTIONS)
def test_invalid_specs_are_rejected_with_the_rule_message(
    kube: LocalControlPlane, obj: dict[str, Any], message: str
) -> None:
    obj["metadata"]["namespace"] = "default"
    result = kube.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(obj))
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    # a conversion error means a CEL rule ran on a value the pattern already refused
    assert "type conversion error" not in result.stderr


def test_kubectl_explain_teaches_the_api(kube: LocalControlPlane) -> None:
    out = kubectl_ok(kube, "explain", "aimodelroute.spec.backends.apiKeySecretRef")
    assert "never appears in status, events or logs" in " ".join(out.split())
    out = kubectl_ok(kube, "explain", "enrollmentcohort.spec.capacity")
    assert "0 means closed" in " ".join(out.split())
    out = kubectl_ok(kube, "explain", "pricingrule.spec.action.percentOff")
    assert "at most 100" in out


def test_short_names_and_the_azora_category(kube: LocalControlPlane) -> None:
    ns = unique("crd-names")
    kubectl_ok(kube, "create", "namespace", ns)
    kubectl_ok(
        kube,
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        input=yaml.safe_dump({**_cohort(), "metadata": {"name": "c1"}}),
    )
    out = kubectl_ok(kube, "get", "azora", "-n", ns)
    assert "enrollmentcohort.azora.io/c1" in out
    for short in ("cohort", "prule", "airoute"):
        assert kube.kubectl("get", short, "-n", ns).returncode == 0
    headers = kubectl_ok(kube, "get", "cohort", "c1", "-n", ns).splitlines()[0].split()
    assert headers == ["NAME", "READY", "ENROLLED", "WAITLIST", "OPEN", "AGE"]
