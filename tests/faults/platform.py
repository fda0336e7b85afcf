"""The whole platform as processes for the fault suite, every one startable, killable and
restartable by itself on a fixed port: PostgreSQL, etcd + kube-apiserver, the four services,
the operator, two model backends (tests/support/openai_stub.py). ``stop_all`` stops whatever
was started, by PID, whatever state a failed test left it in.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from azora_devenv import LocalControlPlane, LocalPostgres, ManagedProcess, free_port
from tests.support.openai_stub import StubBackend
from tests.support.services import ADMIN_TOKEN, API_TOKEN, ServiceProcess, venv_script

ROOT = Path(__file__).resolve().parents[2]
GROUP_PATH = "/apis/azora.io/v1alpha1"
KINDS = {
    # kind: (API plural, owning service, admin plural)
    "PricingRule": ("pricingrules", "pricing", "pricing-rules"),
    "PricingPolicy": ("pricingpolicies", "pricing", "pricing-policies"),
    "AIModelRoute": ("aimodelroutes", "orchestrator", "routes"),
    "EnrollmentCohort": ("enrollmentcohorts", "enrollment", "cohorts"),
}
DATABASES = {s: f"azora_faults_{s}" for s in ("enrollment", "ledger", "pricing", "orchestrator")}
# The example route names these two ports for the local model backends (hack/local.py).
EXAMPLE_BACKEND_PORTS = {"model-a": 8106, "model-b": 8107}


def http_json(
    method: str, url: str, body: Any = None, *, token: str = API_TOKEN, timeout: float = 5.0
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw) if raw else None
        except ValueError:
            return err.code, raw.decode(errors="replace")


def examples(backend_ports: dict[str, int]) -> list[dict[str, Any]]:
    """examples/*.yaml as objects, the route's backends moved to the stubs' ports and its
    limits raised (the suite's one client would otherwise meet the per-client rate limit, and
    a 30 s ejection would make the backend fault the whole run)."""
    docs: list[dict[str, Any]] = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        text = path.read_text()
        for key, port in EXAMPLE_BACKEND_PORTS.items():
            text = text.replace(f"127.0.0.1:{port}/", f"127.0.0.1:{backend_ports[key]}/")
        docs += [d for d in yaml.safe_load_all(text) if d]
    for doc in docs:
        if doc["kind"] == "AIModelRoute":
            spec = doc["spec"]
            spec.pop("rateLimits", None)
            health = spec.setdefault("health", {})
            health["baseEjection"] = "3s"
            health.setdefault("activeCheck", {})["interval"] = "1s"
    return docs


class Platform:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.pg = LocalPostgres(work / "pg" / "data", port=free_port(), fast=True)
        self.cp = LocalControlPlane(
            work / "cluster", etcd_port=free_port(), apiserver_port=free_port()
        )
        self.stubs = {
            "model-a": StubBackend("model-a", work),
            "model-b": StubBackend("model-b", work),
        }
        self.services: dict[str, ServiceProcess] = {}
        self.operator_port = free_port()
        self.operator: ManagedProcess | None = None

    # -- start / stop ------------------------------------------------------------------------

    def start(self) -> None:
        for stub in self.stubs.values():
            stub.start()
        self.pg.start()
        for db in DATABASES.values():
            self.pg.create_database(db)
        ports = {name: free_port() for name in DATABASES}
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        for name in ("ledger", "pricing", "orchestrator", "enrollment"):
            env = {}
            if name == "enrollment":
                env = {
                    "ENROLLMENT_PRICING_URL": urls["pricing"],
                    "ENROLLMENT_LEDGER_URL": urls["ledger"],
                    "ENROLLMENT_SERVICE_TOKEN": API_TOKEN,
                }
            self.services[name] = ServiceProcess(
                name, self.pg.url(DATABASES[name]), self.work, port=ports[name], env=env
            )
        for proc in self.services.values():
            proc.process.start()
        for proc in self.services.values():
            proc.wait_ready(90)
        self.cp.start()
        self.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        self.start_operator()

    def operator_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AZORA_OPERATOR_")}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        env.update(
            {
                "KUBECONFIG": str(self.cp.kubeconfig),
                "AZORA_OPERATOR_PRICING_URL": self.services["pricing"].url,
                "AZORA_OPERATOR_ORCHESTRATOR_URL": self.services["orchestrator"].url,
                "AZORA_OPERATOR_ENROLLMENT_URL": self.services["enrollment"].url,
                "AZORA_OPERATOR_ADMIN_TOKEN": ADMIN_TOKEN,
                "AZORA_OPERATOR_PORT": str(self.operator_port),
                # Drift repair every 5 s and retries capped at 2 s: recovery times below are
                # measured with these, not with the 30 s / 60 s defaults.
                "AZORA_OPERATOR_RESYNC_INTERVAL": "5",
                "AZORA_OPERATOR_RESYNC_INITIAL_DELAY": "1",
                "AZORA_OPERATOR_BACKOFF_BASE": "0.2",
                "AZORA_OPERATOR_BACKOFF_MAX": "2",
                "AZORA_OPERATOR_REQUEST_TIMEOUT": "3",
                "AZORA_OPERATOR_LOG_JSON": "false",
            }
        )
        return env

    def start_operator(self) -> None:
        self.operator = ManagedProcess(
            "azora-operator",
            [venv_script("azora-operator"), "run"],
            log_path=self.work / "operator.log",
            env=self.operator_env(),
        )
        self.operator.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.operator.check_alive()
            try:
                url = f"http://127.0.0.1:{self.operator_port}/readyz"
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"operator not ready:\n{self.operator.log_tail()}")

    def stop_all(self) -> None:
        # Each stop on its own: one that fails must not leave the others running.
        stops = [lambda: self.operator.stop() if self.operator else None]
        stops += [proc.stop for proc in self.services.values()]
        stops += [stub.stop for stub in self.stubs.values()]
        stops += [self.pg.stop, self.cp.stop]
        for stop in stops:
            with contextlib.suppress(Exception):
                stop()

    # -- faults ------------------------------------------------------------------------------

    @staticmethod
    def kill9(proc: ManagedProcess) -> None:
        """SIGKILL to the whole process group, as a crashed pod (no cleanup of any kind)."""
        pid = proc.pid
        assert pid is not None and proc.is_running(), f"{proc.name} is not running"
        os.killpg(pid, signal.SIGKILL)
        proc.wait(10)

    def kill_service(self, name: str) -> None:
        self.kill9(self.services[name].process)

    def restart_service(self, name: str) -> None:
        self.services[name].process.start()
        self.services[name].wait_ready(90)

    # -- control plane -----------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None) -> str:
        result = self.cp.kubectl(*args, input=input)
        assert result.returncode == 0, f"kubectl {' '.join(args)}:\n{result.stderr}"
        return result.stdout

    def apply(self, docs: list[dict[str, Any]]) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))

    def get_cr(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        plural = KINDS[kind][0]
        resp = self.cp.request(
            "GET", f"{GROUP_PATH}/namespaces/{namespace}/{plural}/{name}", timeout=5
        )
        if resp.status != 200:
            return None
        obj: dict[str, Any] = resp.json()
        return obj

    def stored(self, kind: str) -> dict[tuple[str, str], dict[str, Any]]:
        """What the owning service holds (its admin GET), by (namespace, name)."""
        _, service, admin_plural = KINDS[kind]
        status, body = http_json(
            "GET", f"{self.services[service].url}/admin/v1/{admin_plural}", token=ADMIN_TOKEN
        )
        assert status == 200, body
        return {(i["namespace"], i["name"]): i for i in body["items"]}

    def not_converged(self, docs: list[dict[str, Any]]) -> list[str]:
        """What keeps ``docs`` from being Ready at their generation with the spec live."""
        problems: list[str] = []
        stored = {kind: self.stored(kind) for kind in {d["kind"] for d in docs}}
        for doc in docs:
            kind, meta = doc["kind"], doc["metadata"]
            ns, name = meta.get("namespace", "default"), meta["name"]
            obj = self.get_cr(kind, ns, name)
            if obj is None:
                problems.append(f"{kind} {ns}/{name}: not found")
                continue
            generation = obj["metadata"]["generation"]
            status = obj.get("status") or {}
            ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
            if not ready or ready[0].get("status") != "True":
                problems.append(f"{kind} {ns}/{name}: Ready={ready[0] if ready else None}")
            if status.get("observedGeneration") != generation:
                problems.append(
                    f"{kind} {ns}/{name}: observedGeneration {status.get('observedGeneration')}"
                    f" != generation {generation}"
                )
            live = stored[kind].get((ns, name))
            if live is None:
                problems.append(f"{kind} {ns}/{name}: absent from the service")
            elif live.get("generation") != generation or not _spec_live(doc["spec"], live):
                problems.append(
                    f"{kind} {ns}/{name}: service holds generation {live.get('generation')}"
                    f" (want {generation}) or another spec"
                )
        return problems


def _spec_live(declared: dict[str, Any], stored: dict[str, Any]) -> bool:
    """Every scalar the resource declares at the top of its spec is what the service stores
    (the stored spec may add defaults; durations may be normalised, so only plain values)."""
    spec = stored.get("spec") or {}
    for key, value in declared.items():
        if (
            (
                isinstance(value, (int, bool))
                or (isinstance(value, str) and not re.fullmatch(r"[0-9.]+[smhd]", value))
            )
            and key in spec
            and spec[key] != value
        ):
            return False
    return True
