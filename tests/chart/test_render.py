"""helm lint and helm template: defaults, every ci/*.yaml, the schema, the security baseline."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import CHART, CI_VALUES, ROOT, by_kind, helm, one, render

SERVICES = ("enrollment", "ledger", "pricing", "orchestrator")
VALUE_SETS = [pytest.param((), id="defaults")] + [
    pytest.param((path,), id=path.stem) for path in CI_VALUES
]


def test_ci_values_files_exist() -> None:
    assert {p.name for p in CI_VALUES} >= {
        "external-database-values.yaml",
        "minimal-values.yaml",
        "production-values.yaml",
    }


@pytest.mark.parametrize("values", VALUE_SETS)
def test_lint_strict(values: tuple[Path, ...]) -> None:
    args = ["lint", "--strict", str(CHART)]
    for path in values:
        args += ["-f", str(path)]
    result = helm(*args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def _pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for obj in objects:
        if obj["kind"] in {"Deployment", "StatefulSet", "Job"}:
            specs.append(
                (f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"])
            )
    return specs


@pytest.mark.parametrize("values", VALUE_SETS)
def test_template_security_baseline(values: tuple[Path, ...]) -> None:
    objects = render(values=values)
    assert objects
    for name, spec in _pod_specs(objects):
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, name
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert "memory" in container["resources"]["limits"], name
            assert "requests" in container["resources"], name


@pytest.mark.parametrize("values", VALUE_SETS)
def test_template_probes_and_images(values: tuple[Path, ...]) -> None:
    objects = render(values=values)
    for dep in by_kind(objects, "Deployment"):
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        image = container["image"]
        assert ":" in image.rsplit("/", 1)[-1] or "@sha256:" in image, image


def test_default_install_renders_everything_expected() -> None:
    objects = render()
    for svc in SERVICES:
        dep = one(objects, "Deployment", f"azora-{svc}")
        assert dep["spec"]["replicas"] == 2
        one(objects, "Service", f"azora-{svc}")
        job = one(objects, "Job", f"azora-{svc}-migrate")
        annotations = job["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["migrate"]
    operator = one(objects, "Deployment", "azora-operator")
    assert operator["spec"]["strategy"]["type"] == "Recreate"
    assert operator["spec"]["template"]["spec"]["serviceAccountName"] == "azora-operator"
    # monitoring, HPA and PDB are off by default (NetworkPolicies are on: see below)
    for kind in (
        "ServiceMonitor",
        "PrometheusRule",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ):
        assert by_kind(objects, kind) == [], kind
    test_job = one(objects, "Job", "azora-test-readyz")
    assert test_job["metadata"]["annotations"]["helm.sh/hook"] == "test"
    args = test_job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert sorted(args[1:]) == sorted(
        [f"http://azora-{s}:8000/readyz" for s in SERVICES] + ["http://azora-operator:8080/readyz"]
    )


def _secret(objects: list[dict[str, Any]], name: str) -> dict[str, str]:
    data = one(objects, "Secret", name)["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def test_tokens_are_wired_consistently() -> None:
    objects = render()
    tokens = _secret(objects, "azora-tokens")
    assert all(len(tokens[k]) == 40 for k in ("admin-token", "service-token", "client-token"))
    assert len(set(tokens.values())) == 3
    scope = {
        "enrollment": "enrollment",
        "ledger": "ledger",
        "pricing": "pricing",
        "orchestrator": "ai",
    }
    for svc in SERVICES:
        env = _secret(objects, f"azora-{svc}-env")
        assert env["ADMIN_TOKEN"] == tokens["admin-token"]
        api_tokens = json.loads(env["API_TOKENS"])
        # The orchestrator's data plane (chat, completions, embeddings) needs ai:invoke.
        invoke = ["ai:invoke"] if svc == "orchestrator" else []
        assert api_tokens[tokens["client-token"]] == [
            f"{scope[svc]}:read",
            f"{scope[svc]}:write",
            *invoke,
        ]
        if svc in ("pricing", "ledger"):
            assert api_tokens[tokens["service-token"]] == [f"{svc}:read", f"{svc}:write"]
        else:
            assert tokens["service-token"] not in api_tokens
        assert env["DATABASE_URL"].startswith("postgresql://azora:")
        assert env["DATABASE_URL"].endswith(f"@azora-postgresql:5432/azora_{svc}")
    assert _secret(objects, "azora-enrollment-env")["SERVICE_TOKEN"] == tokens["service-token"]
    # the operator reads the same admin token, from a file
    operator = one(objects, "Deployment", "azora-operator")["spec"]["template"]["spec"]
    (volume,) = [v for v in operator["volumes"] if v["name"] == "admin-token"]
    assert volume["secret"]["secretName"] == "azora-tokens"
    assert volume["secret"]["items"] == [{"key": "admin-token", "path": "admin-token"}]


def test_secrets_and_dev_database_come_before_the_migrations() -> None:
    objects = render()

    def weight(obj: dict[str, Any]) -> int:
        return int(obj["metadata"]["annotations"]["helm.sh/hook-weight"])

    secrets = by_kind(objects, "Secret")
    assert secrets and all(
        "pre-install" in s["metadata"]["annotations"]["helm.sh/hook"] for s in secrets
    )
    postgres = one(objects, "StatefulSet", "azora-postgresql")
    jobs = [j for j in by_kind(objects, "Job") if j["metadata"]["name"].endswith("-migrate")]
    assert max(map(weight, secrets)) < weight(postgres) < min(map(weight, jobs))
    init = one(objects, "ConfigMap", "azora-postgresql-init")["data"]["01-databases.sql"]
    for svc in SERVICES:
        assert f"CREATE DATABASE azora_{svc} OWNER azora;" in init
    # The StatefulSet is governed by a headless Service; clients use the ClusterIP one.
    governing = one(objects, "Service", postgres["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    assert one(objects, "Service", "azora-postgresql")["spec"]["type"] == "ClusterIP"


def test_external_database_values() -> None:
    objects = render(values=[CHART / "ci" / "external-database-values.yaml"])
    assert by_kind(objects, "StatefulSet") == []
    env = {
        e["name"]: e
        for e in one(objects, "Deployment", "azora-ledger")["spec"]["template"]["spec"][
            "containers"
        ][0]["env"]
    }
    assert env["LEDGER_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "ledger-db-app",
        "key": "uri",
    }
    assert "DATABASE_URL" not in _secret(objects, "azora-ledger-env")
    assert _secret(objects, "azora-orchestrator-env")["DATABASE_URL"] == (
        "postgresql://orchestrator:s3cret@pg.databases.svc:5432/orchestrator"
    )


def test_a_service_without_any_database_fails_with_a_clear_message() -> None:
    result = helm("template", "azora", str(CHART), "--set", "postgresql.enabled=false", check=False)
    assert result.returncode != 0
    assert "services.enrollment.database: set url or existingSecret.name" in result.stderr


def test_production_values_switch_everything_on() -> None:
    objects = render(values=[CHART / "ci" / "production-values.yaml"])
    assert {h["metadata"]["name"] for h in by_kind(objects, "HorizontalPodAutoscaler")} == {
        "azora-enrollment",
        "azora-pricing",
        "azora-orchestrator",
    }
    # autoscaled Deployments leave replicas to the HPA
    assert "replicas" not in one(objects, "Deployment", "azora-pricing")["spec"]
    assert one(objects, "Deployment", "azora-ledger")["spec"]["replicas"] == 2
    ledger = one(objects, "Deployment", "azora-ledger")["spec"]["template"]["spec"]
    assert ledger["containers"][0]["image"] == (
        "registry.example.com/azora/azora-ledger@sha256:" + "0123456789abcdef" * 4
    )
    assert ledger["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert len(by_kind(objects, "PodDisruptionBudget")) == 3
    monitors = by_kind(objects, "ServiceMonitor")
    assert len(monitors) == 5
    for monitor in monitors:
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["spec"]["jobLabel"] == "azora.io/job"
        assert monitor["spec"]["endpoints"][0]["interval"] == "15s"
    for svc in by_kind(objects, "Service"):
        assert svc["metadata"]["labels"]["azora.io/job"].startswith("azora-")
    (rule,) = by_kind(objects, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert alerts and all(a["labels"]["team"] == "platform" for a in alerts)
    assert all(a["labels"]["severity"] in {"warning", "critical"} for a in alerts)
    dashboards = by_kind(objects, "ConfigMap")
    assert dashboards and all(
        d["metadata"]["labels"]["grafana_dashboard"] == "1"
        and d["metadata"]["annotations"] == {"grafana_folder": "Azora"}
        for d in dashboards
    )
    operator = one(objects, "Deployment", "azora-operator")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in operator["containers"][0]["env"]}
    assert json.loads(env["AZORA_OPERATOR_NAMESPACES"]) == ["azora-config", "team-a"]
    assert all(o["metadata"]["labels"]["team"] == "platform" for o in objects)


def test_network_policies_let_only_known_peers_in() -> None:
    objects = render(values=[CHART / "ci" / "production-values.yaml"])
    policies = {p["metadata"]["name"]: p for p in by_kind(objects, "NetworkPolicy")}
    assert set(policies) == {f"azora-{s}" for s in SERVICES} | {"azora-operator"}

    def peers(name: str) -> list[dict[str, Any]]:
        (rule,) = policies[name]["spec"]["ingress"]
        return list(rule["from"])

    def components(name: str) -> set[str]:
        return {
            p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for p in peers(name)
            if "podSelector" in p and "namespaceSelector" not in p
        }

    assert components("azora-ledger") == {"operator", "test", "enrollment"}
    assert components("azora-pricing") == {"operator", "test", "enrollment"}
    assert components("azora-orchestrator") == {"operator", "test"}
    assert {"namespaceSelector": {"matchLabels": {"azora.io/client": "true"}}} in peers(
        "azora-orchestrator"
    )
    # the operator serves only metrics and health: Prometheus only
    assert peers("azora-operator") == [
        {
            "namespaceSelector": {},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]


def test_minimal_values() -> None:
    objects = render(values=[CHART / "ci" / "minimal-values.yaml"])
    names = {o["metadata"]["name"] for o in by_kind(objects, "Deployment")}
    assert names == {"azora-enrollment", "azora-ledger", "azora-pricing", "azora-operator"}
    assert by_kind(objects, "Job") == []
    postgres = one(objects, "StatefulSet", "azora-postgresql")
    assert "volumeClaimTemplates" not in postgres["spec"]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("services.ledger.replicaCont=3", "additional properties 'replicaCont' not allowed"),
        ("monitoring.serviceMonitors.enabled=true", "'serviceMonitors' not allowed"),
        ("operatr.enabled=false", "additional properties 'operatr' not allowed"),
        ("services.pricing.replicaCount=two", "/services/pricing/replicaCount"),
        ("auth.adminToken=short", "/auth/adminToken"),
        ("monitoring.serviceMonitor.interval=often", "/monitoring/serviceMonitor/interval"),
    ],
)
def test_values_typos_and_bad_types_are_rejected(setting: str, message: str) -> None:
    result = helm("template", "azora", str(CHART), "--set", setting, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_values_yaml_documents_every_schema_key() -> None:
    # The defaults are valid against the schema and every top-level key is in both.
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    assert set(values) == set(schema["properties"]) - {"global"}


def test_clusterrole_rules_equal_the_operators_file() -> None:
    expected = yaml.safe_load((ROOT / "operator" / "deploy" / "clusterrole.yaml").read_text())
    rendered = one(render(), "ClusterRole", "azora-operator")
    assert rendered["rules"] == expected["rules"]


def test_release_name_does_not_change_job_labels() -> None:
    objects = render(release="prod")
    jobs = {
        s["metadata"]["labels"]["azora.io/job"]
        for s in by_kind(objects, "Service")
        if s["metadata"]["labels"]["app.kubernetes.io/component"] != "postgresql"
    }
    assert jobs == {f"azora-{s}" for s in SERVICES} | {"azora-operator"}
    assert one(objects, "Deployment", "prod-azora-ledger")


def test_network_policies_are_on_by_default_with_an_opt_out() -> None:
    objects = render()
    policies = {p["metadata"]["name"]: p for p in by_kind(objects, "NetworkPolicy")}
    assert set(policies) == {f"azora-{s}" for s in SERVICES} | {
        "azora-operator",
        "azora-postgresql",
    }
    # The operator's metrics: nobody without monitoring (the kubelet's probes are node
    # traffic, which NetworkPolicies never block); Prometheus' peers once it scrapes.
    assert policies["azora-operator"]["spec"]["ingress"] == []
    monitored = render(sets=["monitoring.serviceMonitor.enabled=true"])
    (rule,) = one(monitored, "NetworkPolicy", "azora-operator")["spec"]["ingress"]
    assert rule["from"] == [
        {
            "namespaceSelector": {},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]
    # The dev PostgreSQL: the services, their migrations and the scheduled ledger verify.
    (rule,) = policies["azora-postgresql"]["spec"]["ingress"]
    components = {
        p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in rule["from"]
    }
    assert components == set(SERVICES) | {f"{s}-migrate" for s in SERVICES} | {"ledger-verify"}
    assert by_kind(render(sets=["networkPolicy.enabled=false"]), "NetworkPolicy") == []


def _rbac(objects: list[dict[str, Any]]) -> dict[tuple[str, str | None], list[dict[str, Any]]]:
    kinds = ("ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding")
    return {
        (o["kind"], o["metadata"].get("namespace")): o.get("rules") or o.get("subjects") or []
        for o in objects
        if o["kind"] in kinds
    }


def test_watch_namespaces_render_a_role_per_namespace_and_a_minimal_clusterrole() -> None:
    rbac = _rbac(render(sets=["operator.watchNamespaces={team-a,team-b}"]))
    assert set(rbac) == {
        ("ClusterRole", None),
        ("ClusterRoleBinding", None),
        ("Role", "team-a"),
        ("Role", "team-b"),
        ("RoleBinding", "team-a"),
        ("RoleBinding", "team-b"),
    }
    # Cluster scope: only what Kopf lists and watches there; no Secret, no custom resource.
    assert rbac[("ClusterRole", None)] == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["list", "watch"],
        },
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    ]
    # Per namespace: the cluster-wide role's namespaced rules, nothing more.
    cluster_wide = yaml.safe_load((ROOT / "operator" / "deploy" / "clusterrole.yaml").read_text())
    namespaced = [r for r in cluster_wide["rules"] if r["apiGroups"] != ["apiextensions.k8s.io"]]
    assert rbac[("Role", "team-a")] == rbac[("Role", "team-b")] == namespaced
    assert rbac[("RoleBinding", "team-a")] == [
        {"kind": "ServiceAccount", "name": "azora-operator", "namespace": "azora"}
    ]


def test_namespace_patterns_need_cluster_wide_rbac() -> None:
    result = helm(
        "template", "azora", str(CHART), "--set", "operator.watchNamespaces={team-*}", check=False
    )
    assert result.returncode != 0
    assert "operator.rbac.namespaced=false" in result.stderr
    rbac = _rbac(
        render(sets=["operator.watchNamespaces={team-*}", "operator.rbac.namespaced=false"])
    )
    assert set(rbac) == {("ClusterRole", None), ("ClusterRoleBinding", None)}
    assert {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]} in (
        rbac[("ClusterRole", None)]
    )


def test_prune_settings_reach_the_operator() -> None:
    def env(*sets: str) -> dict[str, Any]:
        deployment = one(render(sets=sets), "Deployment", "azora-operator")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value") for e in container["env"]}

    defaults = env()
    assert defaults["AZORA_OPERATOR_PRUNE"] == "true"
    assert "AZORA_OPERATOR_PRUNE_EXCLUDE" not in defaults
    assert "AZORA_OPERATOR_PRUNE_GRACE" not in defaults
    custom = env(
        "operator.prune.enabled=false",
        "operator.prune.exclude={azora-pricing}",
        "operator.prune.grace=120",
    )
    assert custom["AZORA_OPERATOR_PRUNE"] == "false"
    assert json.loads(custom["AZORA_OPERATOR_PRUNE_EXCLUDE"]) == ["azora-pricing"]
    assert custom["AZORA_OPERATOR_PRUNE_GRACE"] == "120"


def test_the_test_job_does_not_outlive_an_uninstall_for_long() -> None:
    job = one(render(), "Job", "azora-test-readyz")
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
