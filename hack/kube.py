"""``make kube-up`` / ``make kube-down`` / ``make kube-status``: a real single-node cluster.

``up``: builds (or reuses) every image and its OCI archive (``hack/images.sh archive all``),
starts a detached *supervisor* (``supervise``) that owns the cluster's processes
(:class:`azora_devenv.node.LocalCluster`: etcd, kube-apiserver, controller-manager, scheduler,
containerd, kubelet, kube-proxy; CoreDNS as a pod), then ``helm upgrade --install --wait`` of
charts/azora into namespace ``azora`` (Pod Security ``restricted`` enforced), applies
``examples/`` and writes ``.local/kube/kube.env``. Run twice, it only re-imports changed images and
re-runs the (idempotent) Helm upgrade.

``down``: SIGTERM to the supervisor (it stops kubelet, the containers, containerd and the control
plane), then :func:`azora_devenv.node.cleanup` removes whatever is left by name: processes
naming the state dir, our cgroup, mounts under the state dir, the ``azkube0`` bridge, the new
``KUBE-*`` iptables chains, and the state dir itself.

``--cluster-only`` stops after the cluster (no Helm install): what tests/cluster starts.
Environment: AZORA_KUBE_DIR (state dir, default .local/kube), AZORA_IMAGE_TAG (default dev).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from azora_devenv.node import ClusterPreconditionError, LocalCluster, cleanup, restricted_namespace
from azora_devenv.procs import run
from azora_devenv.supervisor import DetachedSupervisor
from azora_devenv.tools import ToolNotFoundError, tool_path

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("AZORA_KUBE_DIR", ROOT / ".local" / "kube")).absolute()
SUPERVISOR = DetachedSupervisor(STATE)
ARCHIVES_FILE = STATE / "archives.txt"
ENV_FILE = STATE / "kube.env"
LOG_DIR = STATE / "logs"
CLUSTER_DIR = STATE / "cluster"
RELEASE = "azora"
NAMESPACE = "azora"

log = logging.getLogger("azora.kube")


def kube_env() -> dict[str, str]:
    env = dict(os.environ)
    env["KUBECONFIG"] = str(CLUSTER_DIR / "control-plane" / "kubeconfig")
    return env


def kubectl(*args: str, check: bool = True, timeout: float = 120) -> str:
    return run([tool_path("kubectl"), *args], env=kube_env(), check=check, timeout=timeout).stdout


def helm(*args: str, timeout: float = 600) -> str:
    return run([tool_path("helm"), *args], env=kube_env(), timeout=timeout).stdout


# -- images ------------------------------------------------------------------------------------


def build_archives() -> list[Path]:
    """Every image (services, operator, PostgreSQL, pause, CoreDNS, model backend) as archives."""
    result = subprocess.run(
        ["bash", str(ROOT / "hack" / "images.sh"), "archive", "all"],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if result.returncode != 0:
        raise SystemExit("hack/images.sh archive all failed (its output is above)")
    return [Path(line.split()[1]) for line in result.stdout.splitlines() if line.strip()]


def image_values() -> str:
    return subprocess.run(
        ["bash", str(ROOT / "hack" / "images.sh"), "values"],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    ).stdout


# -- the supervisor ----------------------------------------------------------------------------


def supervise() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    archives = []
    if ARCHIVES_FILE.exists():
        archives = [Path(p) for p in ARCHIVES_FILE.read_text().split()]
    cluster = LocalCluster(CLUSTER_DIR)

    def start() -> None:
        cluster.start(images=archives)
        cluster.wait_coredns()
        (STATE / "pids.json").write_text(json.dumps(cluster.pids, indent=1))

    return SUPERVISOR.serve(start, cluster.stop, log=log, interval=0.5)


def start_cluster(timeout: float) -> None:
    if SUPERVISOR.pid() is not None and SUPERVISOR.ready_file.exists():
        return
    if SUPERVISOR.pid() is None and CLUSTER_DIR.exists():
        # A crashed run: remove its leftovers first (by name, see azora_devenv.node.cleanup).
        cleanup(CLUSTER_DIR)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    proc = SUPERVISOR.launch(
        [sys.executable, __file__, "supervise"], LOG_DIR / "supervisor.log", ROOT
    )
    print(f"[kube] starting the cluster (logs in {LOG_DIR}) ...", flush=True)
    outcome = SUPERVISOR.wait_ready(proc, timeout)
    if outcome == "failed":
        message = SUPERVISOR.failure() or "see supervisor.log"
        stop_all()
        raise SystemExit(f"[kube] cluster start-up failed: {message.splitlines()[0]}")
    if outcome == "timeout":
        stop_all()
        raise SystemExit(f"[kube] cluster not ready after {timeout:.0f}s; see {LOG_DIR}")
    print(f"[kube] cluster ready in {time.monotonic() - started:.1f}s", flush=True)


def install() -> None:
    started = time.monotonic()
    values = STATE / "images-values.yaml"
    values.write_text(image_values())
    kubectl_apply_namespace()
    helm(
        "upgrade",
        "--install",
        RELEASE,
        str(ROOT / "charts" / "azora"),
        "--namespace",
        NAMESPACE,
        "-f",
        str(values),
        "-f",
        str(ROOT / "charts" / "azora" / "ci" / "local-cluster-values.yaml"),
        "--wait",
        "--timeout",
        "5m",
    )
    # The Kubernetes manifests of examples/ (it also holds compose files and data).
    manifests = sorted((ROOT / "examples").glob("*.yaml"))
    kubectl("apply", *(a for m in manifests for a in ("-f", str(m))))
    print(f"[kube] helm install + examples in {time.monotonic() - started:.1f}s", flush=True)


def kubectl_apply_namespace() -> None:
    ns = restricted_namespace(NAMESPACE)
    run([tool_path("kubectl"), "apply", "-f", "-"], env=kube_env(), input=json.dumps(ns))


def secret(name: str, key: str) -> str:
    raw = kubectl("-n", NAMESPACE, "get", "secret", name, "-o", f"jsonpath={{.data.{key}}}")
    return base64.b64decode(raw).decode()


def write_env() -> None:
    """``kube.env``: KUBECONFIG, tokens, and service URLs the host can reach (ClusterIPs)."""
    lines = [
        f"KUBECONFIG={CLUSTER_DIR / 'control-plane' / 'kubeconfig'}",
        f"AZORA_NAMESPACE={NAMESPACE}",
    ]
    services = json.loads(kubectl("-n", NAMESPACE, "get", "svc", "-o", "json"))["items"]
    for svc in services:
        component = svc["metadata"].get("labels", {}).get("app.kubernetes.io/component", "")
        ip = svc["spec"].get("clusterIP")
        ports = svc["spec"].get("ports") or []
        if not component or not ip or ip == "None" or not ports:
            continue
        key = component.upper().replace("-", "_")
        if component == "postgresql":
            continue
        lines.append(f"AZORA_{key}_URL=http://{ip}:{ports[0]['port']}")
    tokens = f"{RELEASE}-tokens"
    for key in ("admin-token", "service-token", "client-token"):
        try:
            value = secret(tokens, key)
        except Exception:  # a chart without that secret: leave it out
            continue
        lines.append(f"AZORA_{key.upper().replace('-', '_')}={value}")
    ENV_FILE.write_text("\n".join(lines) + "\n")
    ENV_FILE.chmod(0o600)


def cmd_up(cluster_only: bool, timeout: float) -> int:
    started = time.monotonic()
    try:
        for tool in ("kubectl", "helm", "kubelet", "kube-proxy", "coredns"):
            tool_path(tool)
    except ToolNotFoundError as err:
        print(f"[kube] {err}", file=sys.stderr)
        return 1
    STATE.mkdir(parents=True, exist_ok=True)
    archives = build_archives()
    ARCHIVES_FILE.write_text("\n".join(str(a) for a in archives) + "\n")
    try:
        start_cluster(timeout)
    except ClusterPreconditionError as err:
        print(f"[kube] {err}", file=sys.stderr)
        return 1
    # A second `up`: the cluster runs already; import any image that changed since.
    LocalCluster(CLUSTER_DIR).import_images(archives)
    if not cluster_only:
        install()
        write_env()
    print(f"[kube] up in {time.monotonic() - started:.1f}s; `source {ENV_FILE}`", flush=True)
    return 0


def stop_all() -> list[str]:
    SUPERVISOR.stop(grace=90)
    done = cleanup(CLUSTER_DIR)
    if STATE.exists():
        shutil.rmtree(STATE, ignore_errors=True)
    return done


def cmd_down() -> int:
    pid = SUPERVISOR.pid()
    done = stop_all()
    what = f"supervisor {pid} stopped" if pid else "no supervisor was running"
    print(f"[kube] {what}; leftovers removed: {len(done)}")
    for line in done:
        print(f"[kube]   {line}")
    return 0


def cmd_status() -> int:
    pid = SUPERVISOR.pid()
    if pid is None:
        print("not running")
        return 1
    print(f"supervisor pid {pid}")
    print(kubectl("get", "nodes,pods", "-A", "-o", "wide", check=False))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up")
    up.add_argument("--cluster-only", action="store_true")
    up.add_argument("--timeout", type=float, default=240.0)
    sub.add_parser("down")
    sub.add_parser("status")
    sub.add_parser("supervise")
    args = parser.parse_args()
    if args.cmd == "up":
        return cmd_up(args.cluster_only, args.timeout)
    if args.cmd == "down":
        return cmd_down()
    if args.cmd == "status":
        return cmd_status()
    return supervise()


if __name__ == "__main__":
    sys.exit(main())
