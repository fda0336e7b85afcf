#!/usr/bin/env bash
# Debian packages some tests need: promtool (prometheus), buildah, shellcheck, debootstrap, and
# for the real single-node cluster (`make kube-up`, tests/cluster): containerd, runc, the CNI
# plugins (containernetworking-plugins), iptables, conntrack and a static libc (pause image);
# with --bench also what the benchmarks use (wrk); with --up only what `make up` runs besides the
# project's own builds (prometheus). Installs only what is missing; a no-op when
# everything is present. Needs root (or sudo) to
# install; without either it says what to install and fails only in CI.
set -euo pipefail

mode="${1:-}"
need=()
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
if [[ "$mode" != "--up" ]]; then
    command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
    command -v buildah >/dev/null 2>&1 || need+=(buildah)
    command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
    # podman runs the compose files in the tests (netavark + aardvark-dns: its network backend with
    # DNS, so compose services reach each other by name).
    command -v podman >/dev/null 2>&1 || need+=(podman)
    [[ -x /usr/lib/podman/netavark ]] || need+=(netavark)
    [[ -x /usr/lib/podman/aardvark-dns ]] || need+=(aardvark-dns)
    command -v containerd >/dev/null 2>&1 || need+=(containerd)
    command -v runc >/dev/null 2>&1 || need+=(runc)
    [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] ||
        need+=(containernetworking-plugins)
    command -v iptables >/dev/null 2>&1 || [[ -x /usr/sbin/iptables ]] || need+=(iptables)
    command -v conntrack >/dev/null 2>&1 || [[ -x /usr/sbin/conntrack ]] || need+=(conntrack)
    command -v gcc >/dev/null 2>&1 || need+=(gcc)
    [[ -e /usr/lib/x86_64-linux-gnu/libc.a || -e /usr/lib/aarch64-linux-gnu/libc.a ]] || need+=(libc6-dev)
fi
if [[ "$mode" == "--bench" ]]; then
    command -v wrk >/dev/null 2>&1 || need+=(wrk)
fi
if [[ ${#need[@]} -eq 0 ]]; then
    exit 0
fi
sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo_cmd=(sudo)
    else
        echo "[system-deps] missing: ${need[*]} (install them with apt-get)" >&2
        [[ "${CI:-}" == "true" ]] && exit 1
        exit 0
    fi
fi
echo "[system-deps] installing: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
"${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
