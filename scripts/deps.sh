#!/usr/bin/env bash
# Installs the Debian packages that building and testing hako need, the
# Rust standard library for the static musl target of hako-monitor and
# hako-runtime, and the libseccomp archive every binary links
# (.cargo/config.toml). --tests adds what the test suite drives: peers,
# podman, the VM for the cgroup v2 run.
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
if ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
    rustup target add x86_64-unknown-linux-musl
fi
# libseccomp for the static musl link (.cargo/config.toml): Debian's
# archive, built against glibc with _FORTIFY_SOURCE, calls glibc's
# __fprintf_chk in its export of a filter as text (seccomp_export_pfc),
# which musl lacks and hako never calls; the copy takes that reference as
# weak, so the link needs no such function.
native="$(cd "$(dirname "$0")/.." && pwd)/.cargo/native"
mkdir -p "$native"
objcopy --weaken-symbol=__fprintf_chk /usr/lib/x86_64-linux-gnu/libseccomp.a "$native/libseccomp.a.tmp"
mv "$native/libseccomp.a.tmp" "$native/libseccomp.a"
