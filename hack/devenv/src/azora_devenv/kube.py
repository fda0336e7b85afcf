"""A local Kubernetes control plane: etcd + kube-apiserver as processes, no kubelet, no Docker.

``LocalControlPlane(work_dir)`` starts a single-member etcd and a kube-apiserver (RBAC
authorization, static admin token, service-account token signing so TokenRequest works) on
free 127.0.0.1 ports and writes an admin kubeconfig to ``work_dir/kubeconfig``.

There is no controller-manager: namespaces get no ``default`` ServiceAccount (the
``ServiceAccount`` admission plugin is disabled so pods can still be created), Deployments do
not roll out, and garbage collection does not run. CRDs, RBAC, TokenRequest, admission and CEL
validation all work, which is what the operator and the chart tests need.

Everything under ``work_dir`` (etcd data, keys, the admin token, the serving certificate) is
kept, so ``stop()`` then ``start()`` resumes the same cluster, possibly on new ports (the
kubeconfig is rewritten on every start).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .procs import CleanupGuard, ManagedProcess, ServerContext, free_port, run, wait_until
from .tools import tool_path

logger = logging.getLogger("azora_devenv")

ADMIN_USER = "azora-admin"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"


class ApiResponse:
    """Status, headers and body of a raw API-server request."""

    def __init__(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers = dict(headers)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def __repr__(self) -> str:
        return f"ApiResponse(status={self.status}, body={self.body[:200]!r})"


class LocalControlPlane(ServerContext):
    """etcd + kube-apiserver for development and tests.

    Attributes (valid after ``start()``): ``kubeconfig`` (Path), ``server`` (``https://…``),
    ``admin_token``, ``ca_file`` (the API server's self-signed serving bundle, usable as
    ``certificate-authority``), ``etcd_url``.
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        startup_timeout: float = 90.0,
        extra_apiserver_args: Sequence[str] = (),
        etcd_port: int | None = None,
        apiserver_port: int | None = None,
        address: str = "127.0.0.1",
        service_cluster_ip_range: str = SERVICE_CLUSTER_IP_RANGE,
        service_account_admission: bool = False,
    ) -> None:
        self.work_dir = Path(work_dir).absolute()
        # The API server's bind and advertise address (a real node's pods must reach it, so the
        # node launcher passes its bridge address; see azora_devenv.node).
        self.address = address
        self.service_cluster_ip_range = service_cluster_ip_range
        # With a real controller-manager (azora_devenv.node) pods get their ServiceAccount
        # tokens through the ServiceAccount admission plugin; without one it stays disabled.
        self.service_account_admission = service_account_admission
        self.startup_timeout = startup_timeout
        self.extra_apiserver_args = list(extra_apiserver_args)
        self._etcd_port_request = etcd_port
        self._apiserver_port_request = apiserver_port

        self.kubeconfig = self.work_dir / "kubeconfig"
        self.cert_dir = self.work_dir / "pki"
        self.ca_file = self.cert_dir / "apiserver.crt"
        self.log_dir = self.work_dir / "logs"
        self.etcd_data_dir = self.work_dir / "etcd"
        self.sa_key_file = self.work_dir / "sa.key"
        self.sa_pub_file = self.work_dir / "sa.pub"
        self.token_file = self.work_dir / "tokens.csv"

        self.etcd_port: int | None = None
        self.apiserver_port: int | None = None
        self.admin_token = ""
        self._etcd: ManagedProcess | None = None
        self._apiserver: ManagedProcess | None = None
        self._guard = CleanupGuard(self.stop)

    # -- public attributes -------------------------------------------------------------------

    @property
    def server(self) -> str:
        if self.apiserver_port is None:
            raise RuntimeError("control plane not started")
        return f"https://{self.address}:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        if self.etcd_port is None:
            raise RuntimeError("control plane not started")
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def pids(self) -> dict[str, int]:
        """Process ids of the running components, by name (``etcd``, ``kube-apiserver``)."""
        procs = (self._etcd, self._apiserver)
        return {p.name: p.pid for p in procs if p is not None and p.pid is not None}

    @property
    def running(self) -> bool:
        return all(p is not None and p.is_running() for p in (self._etcd, self._apiserver))

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start etcd and kube-apiserver; return once ``/readyz`` answers ok."""
        if self.running:
            return
        etcd_bin = tool_path("etcd")
        apiserver_bin = tool_path("kube-apiserver")
        tool_path("kubectl")  # fail early (with the "make tools" hint) rather than later
        self._guard.arm(handle_sigterm=False)
        started = time.monotonic()
        try:
            self._prepare_files()
            self._start_etcd(etcd_bin)
            self._start_apiserver(apiserver_bin)
            self._write_kubeconfig()
        except BaseException:
            self.stop()
            raise
        logger.info(
            "control plane ready at %s in %.1fs (kubeconfig %s)",
            self.server,
            time.monotonic() - started,
            self.kubeconfig,
        )

    def stop(self, timeout: float = 20.0) -> None:
        """Stop kube-apiserver, then etcd. Safe to call twice."""
        apiserver, self._apiserver = self._apiserver, None
        etcd, self._etcd = self._etcd, None
        if apiserver is not None:
            apiserver.stop(timeout)
        if etcd is not None:
            etcd.stop(timeout)
        self._guard.disarm()

    def _prepare_files(self) -> None:
        for path in (self.work_dir, self.cert_dir, self.log_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.etcd_data_dir.mkdir(mode=0o700, exist_ok=True)
        if not self.sa_key_file.exists():
            run(["openssl", "genrsa", "-out", self.sa_key_file, "2048"])
            self.sa_key_file.chmod(0o600)
        if not self.sa_pub_file.exists():
            run(["openssl", "rsa", "-in", self.sa_key_file, "-pubout", "-out", self.sa_pub_file])
        if self.token_file.exists():
            self.admin_token = self.token_file.read_text().split(",", 1)[0].strip()
        if not self.admin_token:
            self.admin_token = secrets.token_urlsafe(32)
            # token,user,uid,"group1,group2"
            self.token_file.write_text(
                f'{self.admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'
            )
            self.token_file.chmod(0o600)

    def _start_etcd(self, etcd_bin: Path) -> None:
        self.etcd_port = self._etcd_port_request or free_port()
        self._etcd = ManagedProcess(
            "etcd",
            [
                etcd_bin,
                "--name=azora",
                f"--data-dir={self.etcd_data_dir}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                # A single member never dials its peers: let the kernel pick the port; the
                # advertised peer URL below is only a name in the one-member cluster list.
                "--listen-peer-urls=http://127.0.0.1:0",
                "--initial-cluster=azora=http://localhost:2380",
                "--unsafe-no-fsync",
                "--quota-backend-bytes=4294967296",
                "--log-level=warn",
            ],
            log_path=self.log_dir / "etcd.log",
            cwd=self.work_dir,
        )
        self._etcd.start()
        wait_until(self._etcd_healthy, self.startup_timeout, interval=0.1, what="etcd /health")

    def _etcd_healthy(self) -> bool:
        assert self._etcd is not None
        self._etcd.check_alive()
        try:
            with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as resp:
                body = json.loads(resp.read())
        except (OSError, ValueError):
            return False
        return str(body.get("health")) == "true"

    def _start_apiserver(self, apiserver_bin: Path) -> None:
        self.apiserver_port = self._apiserver_port_request or free_port(self.address)
        self._apiserver = ManagedProcess(
            "kube-apiserver",
            [
                apiserver_bin,
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--secure-port={self.apiserver_port}",
                f"--cert-dir={self.cert_dir}",
                f"--service-cluster-ip-range={self.service_cluster_ip_range}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={self.sa_pub_file}",
                f"--service-account-signing-key-file={self.sa_key_file}",
                f"--token-auth-file={self.token_file}",
                "--allow-privileged=true",
                *(
                    []
                    if self.service_account_admission
                    else ["--disable-admission-plugins=ServiceAccount"]
                ),
                "--profiling=false",
                *self.extra_apiserver_args,
            ],
            log_path=self.log_dir / "kube-apiserver.log",
            cwd=self.work_dir,
            # If we die, etcd goes too and a SIGTERM-ed apiserver would spend a long time
            # retrying etcd during its graceful shutdown: nothing to save, so kill it.
            death_signal=signal.SIGKILL,
        )
        self._apiserver.start()
        wait_until(
            self._apiserver_ready,
            self.startup_timeout,
            interval=0.25,
            what="kube-apiserver /readyz",
        )

    def _apiserver_ready(self) -> bool:
        assert self._apiserver is not None
        self._apiserver.check_alive()
        try:
            return self.request("GET", "/readyz", verify=False, timeout=5).status == 200
        except OSError:
            return False

    def _write_kubeconfig(self) -> None:
        # JSON strings are valid YAML scalars: no YAML library needed.
        q = json.dumps
        text = f"""\
apiVersion: v1
kind: Config
clusters:
- name: azora-local
  cluster:
    server: {q(self.server)}
    certificate-authority: {q(str(self.ca_file))}
users:
- name: {ADMIN_USER}
  user:
    token: {q(self.admin_token)}
contexts:
- name: azora-local
  context:
    cluster: azora-local
    user: {ADMIN_USER}
    namespace: default
current-context: azora-local
"""
        tmp = self.kubeconfig.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o600)
        tmp.replace(self.kubeconfig)

    # -- clients -----------------------------------------------------------------------------

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for child processes: ``base`` (default ``os.environ``) + ``KUBECONFIG``."""
        env = dict(os.environ if base is None else base)
        env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = False,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this control plane (as the admin unless ``--token``)."""
        return run(
            [tool_path("kubectl"), *args],
            env=self.env(),
            input=input,
            check=check,
            timeout=timeout,
        )

    def ssl_context(self, *, verify: bool = True) -> ssl.SSLContext:
        """TLS context trusting the API server's self-signed certificate."""
        if not verify:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        return ssl.create_default_context(cafile=str(self.ca_file))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        content_type: str = "application/json",
        verify: bool = True,
        timeout: float = 30.0,
    ) -> ApiResponse:
        """A raw API request (admin token unless ``token`` is given); never raises on 4xx/5xx."""
        data: bytes | None = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.admin_token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        ctx = self.ssl_context(verify=verify)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
                return ApiResponse(resp.status, resp.read(), dict(resp.headers.items()))
        except urllib.error.HTTPError as err:
            with err:
                return ApiResponse(err.code, err.read(), dict(err.headers.items()))

    def __repr__(self) -> str:
        where = self.server if self.apiserver_port else "not started"
        return f"LocalControlPlane({str(self.work_dir)!r}, {where})"
