"""Helpers for the operator tests: the control plane, the operator as a process, polling."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from azora_devenv import LocalControlPlane, ManagedProcess, free_port
from tests.support.services import ADMIN_TOKEN, ServiceProcess, venv_script

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
EXAMPLES = ROOT / "examples"
CLUSTERROLE = ROOT / "operator" / "deploy" / "clusterrole.yaml"
OPERATOR_NS = "azora-system"
OPERATOR_SA = "azora-operator"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}"
GROUP_PATH = "/apis/azora.io/v1alpha1"

T = TypeVar("T")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def kubectl_ok(kube: LocalControlPlane, *args: str, input: str | None = None) -> str:
    result = kube.kubectl(*args, input=input)
    assert result.returncode == 0, f"kubectl {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


def apply(kube: LocalControlPlane, obj: dict[str, Any] | list[dict[str, Any]]) -> None:
    docs = obj if isinstance(obj, list) else [obj]
    kubectl_ok(kube, "apply", "-f", "-", input=yaml.safe_dump_all(docs))


def wait_for(
    probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll until ``probe`` returns something truthy; the timeout only bounds a hang."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what or probe}; last={last!r}")


# Each kind's admin plural and the test service that owns it.
ADMIN = {
    "PricingRule": "pricing-rules",
    "AIModelRoute": "routes",
    "EnrollmentCohort": "cohorts",
    "PricingPolicy": "pricing-policies",
}
SERVICE = {
    "PricingRule": "pricing",
    "PricingPolicy": "pricing",
    "AIModelRoute": "orchestrator",
    "EnrollmentCohort": "enrollment",
}


def plural_of(kind: str) -> str:
    return {
        "PricingRule": "pricingrules",
        "AIModelRoute": "aimodelroutes",
        "EnrollmentCohort": "enrollmentcohorts",
        "PricingPolicy": "pricingpolicies",
    }[kind]


def get_obj(kube: LocalControlPlane, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    resp = kube.request("GET", f"{GROUP_PATH}/namespaces/{namespace}/{plural_of(kind)}/{name}")
    if resp.status == 404:
        return None
    assert resp.status == 200, resp
    obj: dict[str, Any] = resp.json()
    return obj


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def wait_condition(
    kube: LocalControlPlane,
    kind: str,
    namespace: str,
    name: str,
    *,
    status: str,
    reason: str | None = None,
    generation: int | None = None,
    timeout: float = 30.0,
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = get_obj(kube, kind, namespace, name)
        ready = condition(obj, "Ready")
        if obj is None or ready is None or ready["status"] != status:
            return None
        if reason is not None and ready["reason"] != reason:
            return None
        want = generation or obj["metadata"]["generation"]
        if obj["status"].get("observedGeneration") != want:
            return None
        return obj

    return wait_for(probe, timeout, what=f"{kind} {namespace}/{name} Ready={status} {reason}")


def apply_and_wait(
    kube: LocalControlPlane, obj: dict[str, Any], *, status: str = "True", reason: str | None = None
) -> tuple[str, dict[str, Any]]:
    """Apply one object and wait for its Ready condition: its name, and the object by then."""
    apply(kube, obj)
    name, ns = str(obj["metadata"]["name"]), str(obj["metadata"]["namespace"])
    return name, wait_condition(kube, obj["kind"], ns, name, status=status, reason=reason)


def printer_columns(
    kube: LocalControlPlane, resource: str, namespace: str, name: str
) -> dict[str, str]:
    """The columns ``kubectl get`` shows (server-side Table), by header name."""
    out = kubectl_ok(kube, "get", resource, name, "-n", namespace)
    header, row = out.splitlines()[:2]
    # Columns are separated by 3+ spaces in kubectl's table printer; split by header offsets.
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    names = header.split()
    values = {}
    for idx, col in enumerate(names):
        start = starts[idx]
        end = starts[idx + 1] if idx + 1 < len(starts) else len(row)
        values[col] = row[start:end].strip()
    return values


def admin_request(
    base_url: str, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, Any] | None]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base_url + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {ADMIN_TOKEN}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, json.loads(raw) if raw else None


def stored(
    services: dict[str, ServiceProcess], kind: str, ns: str, name: str
) -> dict[str, Any] | None:
    """What the owning service holds for one resource (its admin list), or ``None``."""
    status, body = admin_request(services[SERVICE[kind]].url, "GET", f"/admin/v1/{ADMIN[kind]}")
    assert status == 200, body
    assert body is not None
    for item in body["items"]:
        if item["namespace"] == ns and item["name"] == name:
            return dict(item)
    return None


def event_reasons(kube: LocalControlPlane, ns: str, name: str) -> list[str]:
    out = kubectl_ok(
        kube,
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        f"involvedObject.name={name}",
        "-o",
        "json",
    )
    return [e["reason"] for e in json.loads(out)["items"]]


def sa_kubeconfig(kube: LocalControlPlane, path: Path) -> Path:
    """A kubeconfig for the operator's ServiceAccount (bound only to the shipped ClusterRole)."""
    token = kubectl_ok(
        kube, "create", "token", OPERATOR_SA, "-n", OPERATOR_NS, "--duration=24h"
    ).strip()
    q = json.dumps
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {{server: {q(kube.server)}, certificate-authority: {q(str(kube.ca_file))}}}
users:
- name: operator
  user: {{token: {q(token)}}}
contexts:
- name: operator
  context: {{cluster: local, user: operator}}
current-context: operator
"""
    )
    path.chmod(0o600)
    return path


class OperatorProcess:
    """``azora-operator run`` as a real process with the ServiceAccount's kubeconfig."""

    def __init__(
        self, kubeconfig: Path, urls: dict[str, str], work_dir: Path, **settings: str
    ) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AZORA_OPERATOR_")}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        env.update(
            {
                "KUBECONFIG": str(kubeconfig),
                "AZORA_OPERATOR_PRICING_URL": urls["pricing"],
                "AZORA_OPERATOR_ORCHESTRATOR_URL": urls["orchestrator"],
                "AZORA_OPERATOR_ENROLLMENT_URL": urls["enrollment"],
                "AZORA_OPERATOR_ADMIN_TOKEN": ADMIN_TOKEN,
                "AZORA_OPERATOR_PORT": str(self.port),
                "AZORA_OPERATOR_RESYNC_INTERVAL": "1",
                "AZORA_OPERATOR_RESYNC_INITIAL_DELAY": "0.5",
                "AZORA_OPERATOR_BACKOFF_BASE": "0.2",
                "AZORA_OPERATOR_BACKOFF_MAX": "1",
                "AZORA_OPERATOR_REQUEST_TIMEOUT": "2",
                "AZORA_OPERATOR_LOG_LEVEL": "DEBUG",
                "AZORA_OPERATOR_LOG_JSON": "false",
            }
        )
        env.update({f"AZORA_OPERATOR_{k.upper()}": v for k, v in settings.items()})
        self.process = ManagedProcess(
            f"azora-operator:{self.port}",
            [venv_script("azora-operator"), "run"],
            log_path=work_dir / f"operator-{self.port}.log",
            env=env,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace")

    def start(self) -> OperatorProcess:
        self.process.start()

        def ready() -> bool:
            self.process.check_alive()
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as resp:
                    return bool(resp.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        wait_for(ready, 60, what="operator /readyz")
        return self

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        """SIGKILL: no cleanup, like a crashed pod."""
        if self.process.pid is not None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as resp:
            return str(resp.read().decode())
