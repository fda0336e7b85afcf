"""A real single-node Kubernetes cluster on this machine, no Docker: ``LocalCluster``.

Pieces: etcd + kube-apiserver (:class:`~azora_devenv.kube.LocalControlPlane`),
kube-controller-manager (started after ``/readyz``; allocates the node's pod CIDR),
kube-scheduler, containerd (Debian's, with its own ``--config``), runc, the bridge CNI plugin,
kubelet, kube-proxy (iptables mode) and CoreDNS (a Deployment of the locally built image).

Everything it makes is inside ``work_dir`` or carries a name of its own, so that clean-up is
exact (``cleanup(work_dir)`` finds it all again from names, even after a crash):

- files: containerd's root/state/socket, the CNI config and IPAM data, kubelet's root dir and
  pod logs, the network namespaces (``netns_mounts_under_state_dir``), runc's state: all under
  ``work_dir``; nothing under ``/etc``, ``/var/lib`` or ``/run`` is touched;
- network: the bridge :data:`BRIDGE` with :data:`GATEWAY`; kube-proxy's ``KUBE-*`` chains (removed
  with ``kube-proxy --cleanup``) and the ``KUBE-*`` chains kubelet adds, only those that did not
  exist before; ``net.ipv4.ip_forward`` (restored);
- cgroups: pods live under :data:`CGROUP_ROOT` in every cgroup v1 hierarchy;
- processes: the daemons are children of the process that started them (PDEATHSIG); containerd's
  shims and the containers are found by their ``-address <work_dir>/…`` argument and by cgroup.

The walls of this sandbox and their fixes are in ``docs/deploy.md`` and
``../shared/design/KUBERNETES-NOTES.md``: ``restrict_oom_score_adj``, ``failCgroupV1: false``,
``cgroupfs``, ``failSwapOn: false``, controller-manager after ``/readyz``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .kube import LocalControlPlane
from .procs import CleanupGuard, ManagedProcess, ServerContext, free_port, run, wait_until
from .tools import tool_path

logger = logging.getLogger("azora_devenv")

#: Names of what the cluster creates outside ``work_dir`` (distinctive, so clean-up is exact).
BRIDGE = "azkube0"
CNI_NETWORK = "azkube"
CGROUP_ROOT = "azora-kube"
NODE_NAME = "azora-node"

CLUSTER_CIDR = "10.217.0.0/16"
NODE_CIDR = "10.217.0.0/24"  # the first /24 the controller-manager allocates
GATEWAY = "10.217.0.1"
SERVICE_CIDR = "10.218.0.0/16"
DNS_SERVICE_IP = "10.218.0.10"
CLUSTER_DOMAIN = "cluster.local"

CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
IMAGE_PREFIX = "localhost/azora"


class ClusterPreconditionError(RuntimeError):
    """Something the node needs is missing (privilege, kernel feature, package, tool)."""


def _which(name: str, *extra_dirs: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in (*extra_dirs, "/usr/sbin", "/sbin"):
        candidate = Path(d) / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _cni_bin_dir() -> str | None:
    for d in CNI_BIN_DIRS:
        if all(os.access(Path(d) / p, os.X_OK) for p in ("bridge", "host-local", "loopback")):
            return d
    return None


def _cgroup_v1_hierarchies() -> list[Path]:
    """Mount points of the cgroup v1 hierarchies (kubelet with cgroupfs uses each of them)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        fstype = right.split()[0] if right else ""
        if fstype == "cgroup" and len(fields) > 4:
            points.append(Path(fields[4]))
    return points


def preflight() -> None:
    """Raise :class:`ClusterPreconditionError` with one line naming the first missing piece."""
    if os.geteuid() != 0:
        raise ClusterPreconditionError(
            "a real node needs root (containerd, runc, bridge and iptables): run as root"
        )
    for tool in ("containerd", "runc", "ctr", "iptables", "ip", "conntrack"):
        if _which(tool) is None:
            raise ClusterPreconditionError(
                f"{tool} not found: run hack/system-deps.sh (Debian packages containerd, runc, "
                "iptables, iproute2, conntrack)"
            )
    if _cni_bin_dir() is None:
        raise ClusterPreconditionError(
            "CNI plugins (bridge, host-local, loopback) not found in /usr/lib/cni or /opt/cni/bin:"
            " run hack/system-deps.sh (containernetworking-plugins)"
        )
    for tool in ("kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "helm"):
        tool_path(tool)  # ToolNotFoundError says "run make tools ..."
    if not Path("/dev/kmsg").exists():
        raise ClusterPreconditionError("/dev/kmsg is missing: kubelet cannot run here")
    if not _cgroup_v1_hierarchies() and not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        raise ClusterPreconditionError("no cgroup filesystem mounted under /sys/fs/cgroup")
    probe = run(["iptables", "-w", "5", "-t", "nat", "-S", "POSTROUTING"], check=False, timeout=20)
    if probe.returncode != 0:
        raise ClusterPreconditionError(
            f"iptables does not work here (needs CAP_NET_ADMIN): {probe.stderr.strip()[:200]}"
        )


# -- clean-up from names only (used by stop() and by `make kube-down` after a crash) -----------


def _mounts_under(prefixes: Sequence[Path]) -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == str(p) or point.startswith(str(p) + "/") for p in prefixes):
            points.append(point)
    return points


def _pids_with_arg(needle: str) -> list[int]:
    """PIDs whose command line contains ``needle`` (our state dir), except ourselves."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle.encode() in cmdline:
            found.append(int(entry.name))
    return found


def _cgroup_dirs() -> list[Path]:
    dirs = []
    for hierarchy in _cgroup_v1_hierarchies():
        d = hierarchy / CGROUP_ROOT
        if d.is_dir():
            dirs.append(d)
    unified = Path("/sys/fs/cgroup") / CGROUP_ROOT
    if unified.is_dir() and unified not in dirs:
        dirs.append(unified)
    return dirs


def _cgroup_pids() -> set[int]:
    pids: set[int] = set()
    for top in _cgroup_dirs():
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def _kill(pids: Iterable[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _remove_cgroups() -> None:
    for top in _cgroup_dirs():
        # Deepest first: a cgroup can only be removed once its children are.
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def _iptables_chains() -> dict[str, set[str]]:
    chains: dict[str, set[str]] = {}
    for table in ("filter", "nat", "mangle"):
        out = run(["iptables", "-w", "5", "-t", table, "-S"], check=False, timeout=30).stdout
        chains[table] = {ln.split()[1] for ln in out.splitlines() if ln.startswith("-N ")}
    return chains


def _delete_chains(created: dict[str, list[str]]) -> None:
    """Remove the rules jumping to ``created`` chains, then flush and delete the chains."""
    for table, names in created.items():
        if not names:
            continue
        rules = run(["iptables", "-w", "5", "-t", table, "-S"], check=False, timeout=30).stdout
        for rule in rules.splitlines():
            parts = rule.split()
            if parts[:1] == ["-A"] and "-j" in parts and parts[parts.index("-j") + 1] in names:
                run(["iptables", "-w", "5", "-t", table, "-D", *parts[1:]], check=False)
        for name in names:
            run(["iptables", "-w", "5", "-t", table, "-F", name], check=False)
        for name in names:
            run(["iptables", "-w", "5", "-t", table, "-X", name], check=False)


def cleanup(work_dir: Path, *, remove_dir: bool = True) -> list[str]:
    """Undo everything a :class:`LocalCluster` in ``work_dir`` made; return what was removed.

    Safe to run at any time, also when nothing runs (then it removes nothing but the dir).
    """
    work_dir = Path(work_dir).absolute()
    done: list[str] = []
    state = _read_json(work_dir / "host-state.json")

    # 1. Processes: our daemons and containerd's shims name work_dir on their command line;
    #    the containers are in our cgroup. SIGKILL, repeat until none is left.
    for _ in range(50):
        pids = set(_pids_with_arg(str(work_dir))) | _cgroup_pids()
        if not pids:
            break
        done.append(f"killed pids {sorted(pids)}")
        _kill(pids)
        time.sleep(0.2)
    # 2. Mounts under work_dir (rootfs overlays, volumes, shm, network namespaces), deepest first.
    for point in sorted(_mounts_under([work_dir]), key=lambda p: -p.count("/")):
        if run(["umount", "-l", point], check=False).returncode == 0:
            done.append(f"umount {point}")
    # 3. Network: the bridge, kube-proxy's and kubelet's chains (only those that are new),
    #    ip_forward back to what it was.
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        run(["ip", "link", "delete", BRIDGE], check=False)
        done.append(f"bridge {BRIDGE}")
    before: dict[str, list[str]] = state.get("chains_before", {})
    if before:
        now = _iptables_chains()
        created = {
            t: sorted(
                c for c in names - set(before.get(t, [])) if c.startswith(("KUBE-", "AZKUBE-"))
            )
            for t, names in now.items()
        }
        if any(created.values()):
            _delete_chains(created)
            done.append(f"iptables chains {created}")
    forward = state.get("ip_forward")
    if forward is not None:
        Path("/proc/sys/net/ipv4/ip_forward").write_text(str(forward))
    # 4. cgroups, the libcni result cache entries of our network, then the state dir.
    _remove_cgroups()
    for cached in Path("/var/lib/cni/results").glob(f"{CNI_NETWORK}-*"):
        cached.unlink(missing_ok=True)
    if remove_dir and work_dir.exists():
        shutil.rmtree(work_dir, ignore_errors=True)
        done.append(f"rm -r {work_dir}")
    return done


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data


class LocalCluster(ServerContext):
    """Control plane + one real node, all under ``work_dir``.

    After ``start()``: ``kubeconfig``, ``server``, ``admin_token``, ``containerd_socket``,
    ``kubectl(...)``, ``ctr(...)``. ``import_images(archives)`` loads OCI archives into the
    node. ``stop()`` stops everything and calls :func:`cleanup` (``keep_state=True`` keeps the
    directory).
    """

    def __init__(self, work_dir: Path, *, startup_timeout: float = 120.0) -> None:
        self.work_dir = Path(work_dir).absolute()
        self.startup_timeout = startup_timeout
        self.log_dir = self.work_dir / "logs"
        self.pki_dir = self.work_dir / "pki"
        self.containerd_dir = self.work_dir / "containerd"
        self.containerd_socket = self.containerd_dir / "containerd.sock"
        self.cni_conf_dir = self.work_dir / "cni" / "net.d"
        self.kubelet_dir = self.work_dir / "kubelet"
        self.control_plane = LocalControlPlane(
            self.work_dir / "control-plane",
            startup_timeout=startup_timeout,
            address=GATEWAY,
            service_cluster_ip_range=SERVICE_CIDR,
            service_account_admission=True,
            extra_apiserver_args=[
                f"--kubelet-client-certificate={self.pki_dir / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={self.pki_dir / 'apiserver-kubelet-client.key'}",
                "--kubelet-preferred-address-types=InternalIP",
                "--endpoint-reconciler-type=lease",
            ],
        )
        self._procs: list[ManagedProcess] = []
        self._guard = CleanupGuard(self.stop)

    # -- attributes ----------------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    @property
    def server(self) -> str:
        return self.control_plane.server

    @property
    def admin_token(self) -> str:
        return self.control_plane.admin_token

    @property
    def pids(self) -> dict[str, int]:
        pids = dict(self.control_plane.pids)
        pids.update({p.name: p.pid for p in self._procs if p.pid is not None and p.is_running()})
        return pids

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, images: Sequence[Path] = ()) -> None:
        """Start every piece; import ``images`` (OCI archives) before the kubelet starts."""
        preflight()
        self._guard.arm(handle_sigterm=False)
        started = time.monotonic()
        try:
            self._prepare()
            self._start_network()
            self.control_plane.start()
            self._start_controllers()
            self._start_containerd()
            self.import_images(images)
            self._start_kubelet()
            self._start_kube_proxy()
            self._wait_node_ready()
            self._deploy_coredns()
        except BaseException:
            self.stop()
            raise
        logger.info("cluster ready in %.1fs (%s)", time.monotonic() - started, self.kubeconfig)

    def stop(self, timeout: float = 20.0, *, keep_state: bool = False) -> None:
        """Stop the node (kubelet, the containers, containerd), the control plane; clean up."""
        procs, self._procs = self._procs, []
        by_name = {p.name: p for p in procs}
        # kubelet first (it would restart containers), then the containers themselves (nothing
        # to save: SIGKILL through our cgroup), then the daemons.
        for name in ("kubelet", "kube-proxy"):
            if name in by_name:
                by_name[name].stop(5)
        _kill(_cgroup_pids())
        for proc in reversed(procs):
            proc.stop(5 if proc.name == "containerd" else timeout)
        self.control_plane.stop(timeout)
        if (self.work_dir / "host-state.json").exists():
            kube_proxy = None
            with contextlib.suppress(FileNotFoundError):
                kube_proxy = tool_path("kube-proxy")
            if kube_proxy is not None:
                run([kube_proxy, "--cleanup"], check=False, timeout=60)
            for line in cleanup(self.work_dir, remove_dir=not keep_state):
                logger.info("cleanup: %s", line)
        self._guard.disarm()

    # -- steps ---------------------------------------------------------------------------------

    def _prepare(self) -> None:
        for d in (self.work_dir, self.log_dir, self.pki_dir, self.containerd_dir, self.kubelet_dir):
            d.mkdir(parents=True, exist_ok=True)
        state_file = self.work_dir / "host-state.json"
        if not state_file.exists():
            # What the host looked like before: restored/compared by cleanup().
            state = {
                "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
                "chains_before": {t: sorted(c) for t, c in _iptables_chains().items()},
            }
            state_file.write_text(json.dumps(state, indent=1))
        self._make_kubelet_client_cert()

    def _make_kubelet_client_cert(self) -> None:
        """A CA for kubelet client auth and the API server's client certificate signed by it."""
        ca_key, ca_crt = self.pki_dir / "kubelet-ca.key", self.pki_dir / "kubelet-ca.crt"
        key = self.pki_dir / "apiserver-kubelet-client.key"
        crt = self.pki_dir / "apiserver-kubelet-client.crt"
        if crt.exists():
            return
        run(["openssl", "genrsa", "-out", ca_key, "2048"])
        run(
            [
                "openssl",
                "req",
                "-x509",
                "-new",
                "-key",
                ca_key,
                "-days",
                "3650",
                "-subj",
                "/CN=azora-kubelet-client-ca",
                "-out",
                ca_crt,
            ]
        )
        run(["openssl", "genrsa", "-out", key, "2048"])
        csr = self.pki_dir / "apiserver-kubelet-client.csr"
        run(
            [
                "openssl",
                "req",
                "-new",
                "-key",
                key,
                "-out",
                csr,
                "-subj",
                "/O=system:masters/CN=kube-apiserver-kubelet-client",
            ]
        )
        run(
            [
                "openssl",
                "x509",
                "-req",
                "-in",
                csr,
                "-CA",
                ca_crt,
                "-CAkey",
                ca_key,
                "-CAcreateserial",
                "-days",
                "3650",
                "-out",
                crt,
            ]
        )

    def _start_network(self) -> None:
        if not Path(f"/sys/class/net/{BRIDGE}").exists():
            result = run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=False)
            if result.returncode != 0:
                raise ClusterPreconditionError(
                    f"cannot create bridge {BRIDGE} (needs CAP_NET_ADMIN): {result.stderr.strip()}"
                )
        addrs = run(["ip", "-4", "addr", "show", "dev", BRIDGE]).stdout
        if f"{GATEWAY}/" not in addrs:
            run(["ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE])
        run(["ip", "link", "set", BRIDGE, "up"])
        try:
            Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
        except OSError as err:
            raise ClusterPreconditionError(f"cannot enable net.ipv4.ip_forward: {err}") from err
        bridge_nf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
        if not bridge_nf.exists():
            # Without br_netfilter, replies between pods on the bridge skip kube-proxy's NAT;
            # masqueradeAll (below) covers it.
            logger.warning("br_netfilter not loaded; relying on kube-proxy masqueradeAll")
        self.cni_conf_dir.mkdir(parents=True, exist_ok=True)
        conf = {
            "cniVersion": "0.4.0",
            "name": CNI_NETWORK,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": NODE_CIDR, "gateway": GATEWAY}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.work_dir / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
            ],
        }
        (self.cni_conf_dir / "10-azkube.conflist").write_text(json.dumps(conf, indent=1))

    def _kube_env(self) -> dict[str, str]:
        return self.control_plane.env()

    def _proc(self, name: str, argv: Sequence[str | os.PathLike[str]]) -> ManagedProcess:
        env = self._kube_env()
        # containerd and kubelet look for runc, iptables, mount helpers in the sbin dirs.
        env["PATH"] = f"{env.get('PATH', '/usr/bin:/bin')}:/usr/local/sbin:/usr/sbin:/sbin"
        proc = ManagedProcess(
            name,
            argv,
            log_path=self.log_dir / f"{name}.log",
            cwd=self.work_dir,
            env=env,
        )
        proc.start()
        self._procs.append(proc)
        return proc

    def _start_controllers(self) -> None:
        kcm_port, sched_port = free_port(), free_port()
        kubeconfig = self.kubeconfig
        self._proc(
            "kube-controller-manager",
            [
                tool_path("kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--cert-dir={self.work_dir / 'kcm-certs'}",
                "--leader-elect=false",
                "--allocate-node-cidrs=true",
                f"--cluster-cidr={CLUSTER_CIDR}",
                "--node-cidr-mask-size=24",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--service-account-private-key-file={self.control_plane.sa_key_file}",
                f"--root-ca-file={self.control_plane.ca_file}",
                "--use-service-account-credentials=true",
                "--controllers=*",
                "--cluster-name=azora-local",
                "--profiling=false",
            ],
        )
        self._proc(
            "kube-scheduler",
            [
                tool_path("kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={sched_port}",
                "--leader-elect=false",
                "--profiling=false",
            ],
        )

    def _start_containerd(self) -> None:
        cni_bin = _cni_bin_dir()
        sock = self.containerd_socket
        # TOML strings quoted as JSON strings (same escaping for our paths).
        q = json.dumps
        config = f"""\
version = 2
root = {q(str(self.containerd_dir / "root"))}
state = {q(str(self.containerd_dir / "state"))}
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = {q(str(sock))}

[ttrpc]
  address = {q(str(sock) + ".ttrpc")}

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = {q(str(self.containerd_dir / "opt"))}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE_PREFIX}/pause:dev"
  # This sandbox has no CAP_SYS_RESOURCE: asking for oom_score_adj -998 breaks every sandbox.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = {q(str(self.containerd_dir / "runc"))}

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {q(cni_bin)}
    conf_dir = {q(str(self.cni_conf_dir))}
    max_conf_num = 1
"""
        config_file = self.containerd_dir / "config.toml"
        config_file.write_text(config)
        containerd = _which("containerd")
        assert containerd is not None
        proc = self._proc(
            "containerd",
            [containerd, "--config", config_file, "--log-level", "warn"],
        )

        def up() -> bool:
            proc.check_alive()
            return sock.exists() and self.ctr("version", check=False, timeout=10).returncode == 0

        wait_until(up, 60, interval=0.2, what="containerd")

    def ctr(
        self, *args: str, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ctr`` against this node's containerd, namespace ``k8s.io``."""
        ctr = _which("ctr")
        assert ctr is not None
        return run(
            [ctr, "--address", str(self.containerd_socket), "-n", "k8s.io", *args],
            check=check,
            timeout=timeout,
        )

    def import_images(self, archives: Iterable[Path]) -> None:
        """Import OCI archives into containerd (skipping those whose digest is already there)."""
        for archive in archives:
            marker = self.containerd_dir / "imported" / Path(archive).name
            if marker.exists():
                continue
            started = time.monotonic()
            self.ctr("images", "import", "--no-unpack", str(archive), timeout=600)
            marker.parent.mkdir(exist_ok=True)
            marker.touch()
            logger.info("imported %s in %.1fs", archive, time.monotonic() - started)

    def _start_kubelet(self) -> None:
        for hierarchy in _cgroup_v1_hierarchies():
            # cgroupRoot must exist in every hierarchy; kubelet creates kubepods below it.
            with contextlib.suppress(OSError):
                (hierarchy / CGROUP_ROOT).mkdir(exist_ok=True)
        resolv = self.work_dir / "resolv.conf"
        resolv.write_text(f"nameserver {DNS_SERVICE_IP}\n")
        port, healthz = free_port(GATEWAY), free_port()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": GATEWAY,
            "port": port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.pki_dir / "kubelet-ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{CGROUP_ROOT}",
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "clusterDNS": [DNS_SERVICE_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": "",
            "podLogsDir": str(self.work_dir / "pod-logs"),
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            "maxPods": 110,
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "protectKernelDefaults": False,
            "makeIPTablesUtilChains": False,
            "localStorageCapacityIsolation": True,
            "shutdownGracePeriod": "0s",
            "serializeImagePulls": False,
        }
        config_file = self.kubelet_dir / "config.yaml"
        config_file.write_text(json.dumps(config, indent=1))  # JSON is YAML
        self._kubelet_healthz = healthz
        self._proc(
            "kubelet",
            [
                tool_path("kubelet"),
                f"--config={config_file}",
                f"--kubeconfig={self.kubeconfig}",
                f"--root-dir={self.kubelet_dir}",
                f"--cert-dir={self.kubelet_dir / 'pki'}",
                f"--node-ip={GATEWAY}",
                f"--hostname-override={NODE_NAME}",
                "--v=1",
            ],
        )

    def _start_kube_proxy(self) -> None:
        healthz, metrics = free_port(), free_port()
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clusterCIDR": CLUSTER_CIDR,
            "hostnameOverride": NODE_NAME,
            "bindAddress": "127.0.0.1",
            "healthzBindAddress": f"127.0.0.1:{healthz}",
            "metricsBindAddress": f"127.0.0.1:{metrics}",
            "clientConnection": {"kubeconfig": str(self.kubeconfig)},
            # NodePorts only on the bridge address: nothing exposed on the machine's interfaces,
            # and no route_localnet.
            "nodePortAddresses": [f"{GATEWAY}/32"],
            "iptables": {"masqueradeAll": True, "syncPeriod": "10s", "minSyncPeriod": "0s"},
            # Leave the host's conntrack sysctls alone.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        config_file = self.work_dir / "kube-proxy.yaml"
        config_file.write_text(json.dumps(config, indent=1))
        self._proc("kube-proxy", [tool_path("kube-proxy"), f"--config={config_file}", "--v=1"])

    def _wait_node_ready(self) -> None:
        def ready() -> bool:
            for p in self._procs:
                p.check_alive()
            out = self.kubectl(
                "get",
                "node",
                NODE_NAME,
                "-o",
                'jsonpath={.spec.podCIDR} {.status.conditions[?(@.type=="Ready")].status}',
            )
            return out.returncode == 0 and out.stdout.strip() == f"{NODE_CIDR} True"

        wait_until(ready, self.startup_timeout, interval=0.5, what=f"node {NODE_NAME} Ready")

    def _deploy_coredns(self) -> None:
        manifest = coredns_manifest()
        self.kubectl("apply", "-f", "-", input=manifest, check=True)

    def wait_coredns(self, timeout: float = 90.0) -> None:
        self.kubectl(
            "-n",
            "kube-system",
            "rollout",
            "status",
            "deployment/coredns",
            f"--timeout={int(timeout)}s",
            check=True,
            timeout=timeout + 10,
        )

    # -- clients -------------------------------------------------------------------------------

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = False, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        return self.control_plane.kubectl(*args, input=input, check=check, timeout=timeout)


def coredns_manifest() -> str:
    """CoreDNS as a Deployment + the ``kube-dns`` Service at :data:`DNS_SERVICE_IP`."""
    corefile = f"""\
.:1053 {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
}}
"""
    labels = {"k8s-app": "kube-dns"}
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "azora:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "azora:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "azora:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
            "data": {"Corefile": corefile},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "dnsPolicy": "Default",
                        "priorityClassName": "system-cluster-critical",
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [
                            {
                                "name": "coredns",
                                "image": f"{IMAGE_PREFIX}/coredns:dev",
                                "imagePullPolicy": "Never",
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "ports": [
                                    {"name": "dns", "containerPort": 1053, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": 1053, "protocol": "TCP"},
                                ],
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": 8181},
                                    "periodSeconds": 2,
                                },
                                "livenessProbe": {
                                    "httpGet": {"path": "/health", "port": 8080},
                                    "initialDelaySeconds": 10,
                                },
                                "resources": {
                                    "requests": {"cpu": "50m", "memory": "32Mi"},
                                    "limits": {"memory": "128Mi"},
                                },
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns"}],
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "clusterIP": DNS_SERVICE_IP,
                "selector": labels,
                "ports": [
                    {"name": "dns", "port": 53, "targetPort": 1053, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "targetPort": 1053, "protocol": "TCP"},
                ],
            },
        },
    ]
    return "\n---\n".join(json.dumps(d) for d in docs)


def restricted_namespace(name: str, *, warn: bool = False) -> dict[str, Any]:
    """A namespace where Pod Security enforces ``restricted`` (the chart's pods must pass it),
    as ``make kube-up`` and tests/cluster create the release's; ``warn``: also warn in kubectl's
    output."""
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    if warn:
        labels["pod-security.kubernetes.io/warn"] = "restricted"
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
