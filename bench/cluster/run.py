"""bench/cluster: the real single-node cluster of `make kube-up` (hack/kube.py), from warm caches.

Measures, on a fresh cluster in its own state dir (``.local/kube-bench``; none may be running):

- ``hack/kube.py up`` split in: images (``hack/images.sh archive all``, cached: only checks),
  cluster start (control plane + node + image import + CoreDNS ready), ``helm install --wait``
  of charts/azora + examples applied; and the total "kube-up to all pods Ready";
- memory: RSS of each pod (the ``memory.usage_in_bytes - cache`` of its cgroup, i.e. the
  ``total_rss`` of memory.stat), and of the cluster's own processes (etcd, kube-apiserver,
  controller-manager, scheduler, containerd + shims, kubelet, kube-proxy), from /proc;
- ``hack/kube.py down`` time.

Writes bench/results/cluster-<date>.{json,md}. Cold build times of the tools and images are not
re-measured here (they need empty caches); the figures of the last cold run are quoted in
bench/cluster/README.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
STATE = ROOT / ".local" / "kube-bench"
KUBE_PY = ROOT / "hack" / "kube.py"
CGROUP = Path("/sys/fs/cgroup/memory/azora-kube")


def run(*argv: str, env: dict[str, str] | None = None) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, env=env, cwd=ROOT)
    return time.monotonic() - started


def mib(n: int) -> float:
    return round(n / 1048576, 1)


def rss_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def pod_rss(kubeconfig: Path) -> dict[str, float]:
    """RSS per pod (namespace/name), from each pod cgroup's memory.stat total_rss."""
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    by_uid = {
        p.metadata.uid.replace("-", "_"): f"{p.metadata.namespace}/{p.metadata.name}"
        for p in api.list_pod_for_all_namespaces().items
        if p.status.phase == "Running"
    }
    out: dict[str, float] = {}
    for stat in CGROUP.rglob("memory.stat"):
        name = stat.parent.name  # pod<uid>
        uid = name.removeprefix("pod").replace("-", "_")
        if not name.startswith("pod") or uid not in by_uid:
            continue
        fields = dict(line.split() for line in stat.read_text().splitlines())
        out[by_uid[uid]] = mib(int(fields["total_rss"]))
    return dict(sorted(out.items()))


def cluster_rss(state: Path) -> dict[str, float]:
    pids: dict[str, int] = json.loads((state / "pids.json").read_text())
    out = {name: mib(rss_of(pid)) for name, pid in pids.items()}
    shims = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in cmd and str(state).encode() in cmd:
            shims += rss_of(int(entry.name))
    out["containerd-shims"] = mib(shims)
    return out


def main() -> int:
    if (ROOT / ".local" / "kube" / "supervisor.pid").exists():
        print("a `make kube-up` cluster is running: `make kube-down` first", file=sys.stderr)
        return 1
    env = {**os.environ, "AZORA_KUBE_DIR": str(STATE)}
    py = sys.executable
    try:
        # Warm the image cache first (not counted: a warm cache is the premise).
        run("bash", str(ROOT / "hack" / "images.sh"), "archive", "all")
        t_images = run("bash", str(ROOT / "hack" / "images.sh"), "archive", "all")
        t_cluster = run(py, str(KUBE_PY), "up", "--cluster-only", env=env)
        t_total = run(py, str(KUBE_PY), "up", env=env)  # install + examples (cluster running)
        kubeconfig = STATE / "cluster" / "control-plane" / "kubeconfig"
        time.sleep(20)  # idle
        pods = pod_rss(kubeconfig)
        procs = cluster_rss(STATE)
    finally:
        t_down = run(py, str(KUBE_PY), "down", env=env)
    result: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} CPUs",
        "seconds": {
            "images_check": round(t_images, 1),
            "cluster_ready": round(t_cluster, 1),
            "helm_install_and_examples": round(t_total, 1),
            "kube_up_to_all_pods_ready": round(t_images + t_cluster + t_total, 1),
            "kube_down": round(t_down, 1),
        },
        "rss_mib": {
            "pods": pods,
            "pods_total": round(sum(pods.values()), 1),
            "cluster_processes": procs,
            "cluster_total": round(sum(procs.values()), 1),
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"cluster-{result['date']}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
