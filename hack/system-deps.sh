#!/usr/bin/env bash
# Debian packages some tests need: promtool (prometheus), buildah, shellcheck, debootstrap;
# with --bench also what the benchmarks use (wrk). Installs only what is missing; a no-op when
# everything is present. Needs root (or sudo) to
# install; without either it says what to install and fails only in CI.
set -euo pipefail

need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
command -v buildah >/dev/null 2>&1 || need+=(buildah)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [[ "${1:-}" == "--bench" ]]; then
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
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
