#!/usr/bin/env bash
# Installs the Debian packages that building and testing hako need.
# --tests adds what the test suite drives: peers, podman, the VM for the
# cgroup v2 run.
set -euo pipefail
pkgs=(busybox-static libseccomp-dev pkg-config gcc binutils jq tini libnftables1)
if [[ ${1:-} == --tests ]]; then
    pkgs+=(runc crun podman containerd qemu-system-x86 cpio docker-registry skopeo apache2-utils debootstrap openssl nftables iproute2 python3)
fi
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
