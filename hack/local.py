"""``make up`` / ``make down`` / ``make status``: the whole platform as local processes.

``up`` starts a detached *supervisor* (this file, ``supervise``) and waits until it reports
ready. The supervisor owns every child (PostgreSQL, etcd + kube-apiserver, the four services,
the operator, two model backends, Prometheus): they are tied to it with PDEATHSIG, so nothing
outlives it. ``down`` sends it SIGTERM; it stops the children in reverse order and exits.
State lives under ``.local/`` (``AZORA_LOCAL_DIR``): data survives ``down``/``up``; ports,
tokens and the port base are chosen once and recorded in ``state.json``, so ``status`` and
``down`` need only the same ``AZORA_LOCAL_DIR``, never ``AZORA_PORT_BASE`` again.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seed_catalog import seed as seed_catalog

from azora_devenv.kube import LocalControlPlane
from azora_devenv.postgres import LocalPostgres
from azora_devenv.procs import ManagedProcess, free_port, port_is_open
from azora_devenv.supervisor import DetachedSupervisor
from azora_devenv.tools import bin_dir

ROOT = Path(__file__).resolve().parent.parent
# AZORA_LOCAL_DIR and AZORA_PORT_BASE let a test (or a second checkout) run its own copy.
STATE = Path(os.environ.get("AZORA_LOCAL_DIR", ROOT / ".local")).absolute()
STATE_FILE = STATE / "state.json"
DEFAULT_PORT_BASE = 8100


def _port_base() -> int:
    """AZORA_PORT_BASE if given, else the one ``up`` recorded for this state dir, else 8100."""
    given = os.environ.get("AZORA_PORT_BASE")
    if given:
        return int(given)
    try:
        return int(json.loads(STATE_FILE.read_text())["port_base"])
    except (FileNotFoundError, KeyError, ValueError):
        return DEFAULT_PORT_BASE


PORT_BASE = _port_base()
ENV_FILE = STATE / "azora.env"
SUPERVISOR = DetachedSupervisor(STATE)
LOG_DIR = STATE / "logs"
BIN = Path(sys.executable).parent

log = logging.getLogger("azora.local")


@dataclass(frozen=True)
class Service:
    key: str
    script: str
    prefix: str
    port: int
    database: str


SERVICES = [
    Service("enrollment", "azora-enrollment", "ENROLLMENT_", PORT_BASE + 1, "azora_enrollment"),
    Service("ledger", "azora-ledger", "LEDGER_", PORT_BASE + 2, "azora_ledger"),
    Service("pricing", "azora-pricing", "PRICING_", PORT_BASE + 3, "azora_pricing"),
    Service(
        "orchestrator", "azora-orchestrator", "ORCHESTRATOR_", PORT_BASE + 4, "azora_orchestrator"
    ),
]
OPERATOR_PORT = PORT_BASE + 5
# Two instances of the local model backend (services/model-backend): the example AIModelRoute
# (examples/aimodelroute.yaml) routes to them weighted 3:1. The example names the default ports;
# examples_yaml() rewrites them when AZORA_PORT_BASE moves them.
MODEL_BACKENDS = {"model-a": PORT_BASE + 6, "model-b": PORT_BASE + 7}
EXAMPLE_MODEL_PORTS = {"model-a": 8106, "model-b": 8107}
# Debian's Prometheus (hack/system-deps.sh installs it for promtool), scraping everything above
# with the chart's alert rules loaded.
PROMETHEUS_PORT = PORT_BASE + 9
ALERT_RULES = ROOT / "charts" / "azora" / "files" / "prometheus" / "azora-alerts.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks"
CATALOG = ROOT / "examples" / "catalog" / "catalog.json"


def load_state() -> dict[str, Any]:
    if STATE_FILE.exists():
        state: dict[str, Any] = json.loads(STATE_FILE.read_text())
    else:
        state = {
            "pg_port": free_port(),
            "etcd_port": free_port(),
            "apiserver_port": free_port(),
            "admin_token": secrets.token_urlsafe(24),
            "api_token": secrets.token_urlsafe(24),
        }
    if state.get("port_base") != PORT_BASE:
        # Recorded so that `make status` / `make down` find this copy's ports without being
        # given AZORA_PORT_BASE again; a new AZORA_PORT_BASE on a later `up` replaces it.
        state["port_base"] = PORT_BASE
        STATE.mkdir(parents=True, exist_ok=True)
        STATE_FILE.write_text(json.dumps(state, indent=2))
        STATE_FILE.chmod(0o600)
    return state


def examples_yaml() -> str:
    """examples/*.yaml as one stream, the model backends' ports moved with AZORA_PORT_BASE."""
    text = "\n---\n".join(p.read_text() for p in sorted((ROOT / "examples").glob("*.yaml")))
    for key, port in MODEL_BACKENDS.items():
        text = text.replace(f"127.0.0.1:{EXAMPLE_MODEL_PORTS[key]}/", f"127.0.0.1:{port}/")
    return text


def service_url(svc: Service) -> str:
    return f"http://127.0.0.1:{svc.port}"


def prometheus_url() -> str:
    return f"http://127.0.0.1:{PROMETHEUS_PORT}"


def prometheus_config(rules: Path) -> dict[str, Any]:
    """Scrape jobs named as the chart's ServiceMonitors name them (``azora-<component>``), so
    the dashboards' and the alert rules' ``job`` selectors work unchanged; JSON is YAML."""
    jobs: dict[str, list[tuple[str, dict[str, str]]]] = {
        f"azora-{svc.key}": [(f"127.0.0.1:{svc.port}", {})] for svc in SERVICES
    }
    jobs["azora-operator"] = [(f"127.0.0.1:{OPERATOR_PORT}", {})]
    jobs["azora-model-backend"] = [
        (f"127.0.0.1:{port}", {"backend": key}) for key, port in MODEL_BACKENDS.items()
    ]
    return {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [
                    {"targets": [target], "labels": labels} for target, labels in targets
                ],
            }
            for job, targets in jobs.items()
        ],
    }


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# -- the supervisor ----------------------------------------------------------------------------


class Supervisor:
    def __init__(self, only: str | None) -> None:
        self.only = only
        self.state = load_state()
        self.pg: LocalPostgres | None = None
        self.cluster: LocalControlPlane | None = None
        self.children: dict[str, ManagedProcess] = {}

    def run(self) -> int:
        return SUPERVISOR.serve(self.start_all, self.stop_all, log=log, watch=self.watch)

    def start_all(self) -> None:
        s = self.state
        if self.only in (None, "cluster"):
            self.cluster = LocalControlPlane(
                STATE / "cluster", etcd_port=s["etcd_port"], apiserver_port=s["apiserver_port"]
            )
            self.cluster.start()
        if self.only == "cluster":
            self.write_env()
            return
        # They need nothing else and take seconds to load their models: start them first.
        for key, port in MODEL_BACKENDS.items():
            self.children[key] = self.model_backend_process(key, port)
            self.children[key].start()
        self.pg = LocalPostgres(STATE / "pg" / "data", port=s["pg_port"])
        self.pg.start()
        for svc in SERVICES:
            self.pg.create_database(svc.database)
        for svc in SERVICES:
            self.children[svc.key] = self.service_process(svc)
            self.children[svc.key].start()
        for svc in SERVICES:
            self.wait_ready(svc.key, service_url(svc) + "/readyz")
        for key, port in MODEL_BACKENDS.items():
            self.wait_ready(key, f"http://127.0.0.1:{port}/healthz", timeout=180.0)
        # The products and ledger categories the examples rely on (examples/catalog/catalog.json),
        # through the services' own APIs, before the example cohort asks for a price.
        for change in seed_catalog(
            pricing_url=service_url(SERVICES[2]),
            ledger_url=service_url(SERVICES[1]),
            token=s["api_token"],
            catalog=CATALOG,
        ):
            log.info("catalog: %s", change)
        self.write_env()
        assert self.cluster is not None
        crds = sorted((ROOT / "crds").glob("*.yaml"))
        if crds:
            self.cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
            self.cluster.kubectl(
                "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"
            )
        if (ROOT / "operator" / "src" / "azora_operator" / "cli.py").exists():
            self.children["operator"] = self.operator_process()
            self.children["operator"].start()
            self.wait_ready("operator", f"http://127.0.0.1:{OPERATOR_PORT}/healthz")
        if crds and any((ROOT / "examples").glob("*.yaml")):
            self.cluster.kubectl("apply", "-f", "-", input=examples_yaml())
        self.children["prometheus"] = self.prometheus_process()
        self.children["prometheus"].start()
        self.wait_ready("prometheus", f"{prometheus_url()}/-/ready")

    def service_env(self, svc: Service) -> dict[str, str]:
        assert self.pg is not None
        s = self.state
        p = svc.prefix
        env = {
            **os.environ,
            f"{p}DATABASE_URL": self.pg.url(svc.database),
            f"{p}PORT": str(svc.port),
            f"{p}ADMIN_TOKEN": s["admin_token"],
            f"{p}API_TOKENS": json.dumps({s["api_token"]: ["*"]}),
        }
        if svc.key == "enrollment":
            env[f"{p}PRICING_URL"] = service_url(SERVICES[2])
            env[f"{p}LEDGER_URL"] = service_url(SERVICES[1])
            env[f"{p}SERVICE_TOKEN"] = s["api_token"]
        return env

    def service_process(self, svc: Service) -> ManagedProcess:
        return ManagedProcess(
            svc.key,
            [BIN / svc.script, "serve", "--migrate"],
            log_path=LOG_DIR / f"{svc.key}.log",
            env=self.service_env(svc),
        )

    def model_backend_process(self, key: str, port: int) -> ManagedProcess:
        env = {
            **os.environ,
            "MODEL_BACKEND_INSTANCE_NAME": key,
            "MODEL_BACKEND_HOST": "127.0.0.1",
            "MODEL_BACKEND_PORT": str(port),
            # Two instances share the machine: one BLAS thread each instead of contending.
            "OPENBLAS_NUM_THREADS": "1",
        }
        return ManagedProcess(
            key, [BIN / "azora-model-backend", "serve"], log_path=LOG_DIR / f"{key}.log", env=env
        )

    def operator_process(self) -> ManagedProcess:
        assert self.cluster is not None
        s = self.state
        env = {
            **os.environ,
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "AZORA_OPERATOR_ENROLLMENT_URL": service_url(SERVICES[0]),
            "AZORA_OPERATOR_PRICING_URL": service_url(SERVICES[2]),
            "AZORA_OPERATOR_ORCHESTRATOR_URL": service_url(SERVICES[3]),
            "AZORA_OPERATOR_ADMIN_TOKEN": s["admin_token"],
            "AZORA_OPERATOR_PORT": str(OPERATOR_PORT),
        }
        return ManagedProcess(
            "operator",
            [BIN / "azora-operator", "run"],
            log_path=LOG_DIR / "operator.log",
            env=env,
        )

    def prometheus_process(self) -> ManagedProcess:
        prometheus = shutil.which("prometheus")
        if prometheus is None:
            raise FileNotFoundError(
                "prometheus not found: install Debian's `prometheus` package "
                "(`make system-deps` does)"
            )
        work = STATE / "prometheus"
        work.mkdir(parents=True, exist_ok=True)
        rules = work / "azora-alerts.yaml"
        # The chart's rule file is the one source; the chart puts its runbook base URL where
        # this puts the local runbooks.
        rules.write_text(ALERT_RULES.read_text().replace("RUNBOOK_BASE_URL", RUNBOOKS.as_uri()))
        config = work / "prometheus.yml"
        config.write_text(json.dumps(prometheus_config(rules), indent=2))
        return ManagedProcess(
            "prometheus",
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'data'}",
                "--storage.tsdb.retention.time=7d",
                f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}",
                "--web.enable-lifecycle",
            ],
            log_path=LOG_DIR / "prometheus.log",
        )

    def wait_ready(self, key: str, url: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.children[key].check_alive()
            if http_ok(url):
                log.info("%s ready", key)
                return
            time.sleep(0.2)
        raise TimeoutError(f"{key} not ready after {timeout}s: {self.children[key].log_tail()}")

    def watch(self) -> None:
        # A crashed service is restarted (its log keeps the reason); PostgreSQL and the
        # control plane are not: if they die, the supervisor stops everything.
        for key, proc in self.children.items():
            if not proc.is_running() and not SUPERVISOR.stopping:
                log.warning("%s exited with %s; restarting", key, proc.returncode)
                proc.start()

    def write_env(self) -> None:
        s = self.state
        lines = [
            "# Written by `make up`. Source it: `. .local/azora.env`",
            # The kubectl and helm `make tools` built (pinned versions, hack/build-tools.sh) first.
            f'export PATH="{bin_dir()}:$PATH"',
            f"export AZORA_LOCAL_DIR={STATE}",
            f"export AZORA_ADMIN_TOKEN={s['admin_token']}",
            f"export AZORA_API_TOKEN={s['api_token']}",
        ]
        if self.cluster is not None:
            lines.append(f"export KUBECONFIG={self.cluster.kubeconfig}")
        if self.pg is not None:
            lines.append(f"export AZORA_DATABASE_URL={self.pg.url('postgres')}")
            for svc in SERVICES:
                lines.append(f"export AZORA_{svc.key.upper()}_URL={service_url(svc)}")
            lines.append(f"export AZORA_OPERATOR_URL=http://127.0.0.1:{OPERATOR_PORT}")
            for key, port in MODEL_BACKENDS.items():
                name = key.upper().replace("-", "_")
                lines.append(f"export AZORA_{name}_URL=http://127.0.0.1:{port}/v1")
            lines.append(f"export AZORA_PROMETHEUS_URL={prometheus_url()}")
        ENV_FILE.write_text("\n".join(lines) + "\n")
        ENV_FILE.chmod(0o600)

    def stop_all(self) -> None:
        stop_order = ["prometheus", "operator", *[s.key for s in reversed(SERVICES)]]
        for key in [*stop_order, *MODEL_BACKENDS]:
            proc = self.children.pop(key, None)
            if proc is not None:
                proc.stop()
        if self.pg is not None:
            self.pg.stop()
        if self.cluster is not None:
            self.cluster.stop()
        for f in (SUPERVISOR.pid_file, SUPERVISOR.ready_file):
            f.unlink(missing_ok=True)


# -- the commands --------------------------------------------------------------------------------


def cmd_up(only: str | None, timeout: float) -> int:
    if SUPERVISOR.pid() is not None:
        print("already running; `make status` shows what runs, `make down` stops it")
        return 0
    ports = {svc.key: svc.port for svc in SERVICES} | MODEL_BACKENDS
    ports |= {"operator": OPERATOR_PORT, "prometheus": PROMETHEUS_PORT}
    for key, port in ports.items() if only is None else []:
        if port_is_open("127.0.0.1", port):
            print(f"port {port} ({key}) is taken by another process", file=sys.stderr)
            return 1
    STATE.mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    argv = [sys.executable, __file__, "supervise"] + (["--only", only] if only else [])
    proc = SUPERVISOR.launch(argv, LOG_DIR / "supervisor.log", ROOT)
    print(f"starting Azora (logs in {LOG_DIR}) ...", flush=True)
    outcome = SUPERVISOR.wait_ready(proc, timeout)
    if outcome != "ready":
        if outcome == "failed":
            why = SUPERVISOR.failure() or "see .local/logs/supervisor.log"
            print(f"start-up failed: {why}", file=sys.stderr)
        else:
            print(f"not ready after {timeout:.0f}s; see .local/logs/", file=sys.stderr)
        cmd_down()
        return 1
    print(f"Azora is up in {time.monotonic() - started:.1f}s.\n")
    summary(only)
    return 0


def summary(only: str | None) -> None:
    state = load_state()
    if only is None:
        for svc in SERVICES:
            url = service_url(svc)
            print(f"  {svc.key:<13} {url}   docs: {url}/docs")
        print(f"  {'operator':<13} http://127.0.0.1:{OPERATOR_PORT}/healthz")
        for key, port in MODEL_BACKENDS.items():
            print(f"  {key:<13} http://127.0.0.1:{port}/v1   (OpenAI-compatible, local models)")
        print(f"  {'prometheus':<13} {prometheus_url()}   (alerts: {prometheus_url()}/alerts)")
    print(f"  {'kube-apiserver':<13} https://127.0.0.1:{state['apiserver_port']}")
    env_file = ENV_FILE if STATE != ROOT / ".local" else Path(".local/azora.env")
    print(f"\n  . {env_file}    # PATH, KUBECONFIG, tokens, AZORA_*_URL")
    print("  kubectl get azora -A  # the platform's custom resources")
    if only is None:
        print("  make demo             # a guided tour of the running platform")


def cmd_down() -> int:
    if SUPERVISOR.stop(grace=60) is None:
        print(f"nothing running from {STATE}")
    else:
        print("stopped")
    return 0


def cmd_status() -> int:
    pid = SUPERVISOR.pid()
    if pid is None:
        print(f"Azora is not running from {STATE} (`make up` starts it)")
        return 0
    print(f"supervisor pid {pid}")
    for svc in SERVICES:
        ready = http_ok(service_url(svc) + "/readyz")
        print(f"  {svc.key:<13} {service_url(svc):<24} {'ready' if ready else 'NOT READY'}")
    op = http_ok(f"http://127.0.0.1:{OPERATOR_PORT}/healthz")
    print(
        f"  {'operator':<13} {'http://127.0.0.1:' + str(OPERATOR_PORT):<24} "
        f"{'ready' if op else 'NOT READY'}"
    )
    for key, port in MODEL_BACKENDS.items():
        url = f"http://127.0.0.1:{port}"
        print(f"  {key:<13} {url:<24} {'ready' if http_ok(url + '/healthz') else 'NOT READY'}")
    ready = http_ok(prometheus_url() + "/-/ready")
    print(f"  {'prometheus':<13} {prometheus_url():<24} {'ready' if ready else 'NOT READY'}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="hack/local.py")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up")
    up.add_argument("--only", choices=["cluster"], default=None)
    up.add_argument("--timeout", type=float, default=180.0)
    sup = sub.add_parser("supervise")
    sup.add_argument("--only", choices=["cluster"], default=None)
    sub.add_parser("down")
    sub.add_parser("status")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.command == "up":
        return cmd_up(args.only, args.timeout)
    if args.command == "supervise":
        return Supervisor(args.only).run()
    if args.command == "down":
        return cmd_down()
    return cmd_status()


if __name__ == "__main__":
    sys.exit(main())
