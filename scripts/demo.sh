#!/usr/bin/env bash
# Sets up and runs the main job: builds hako-runtime and runs a container
# from a busybox bundle with it, as runc would. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo build --release -p hako-runtime
bin=$PWD/target/release/hako-runtime
bundle=$(mktemp -d /tmp/hako-demo.XXXXXX)
trap 'rm -rf "$bundle"' EXIT
mkdir -p "$bundle/rootfs/bin" "$bundle/rootfs/etc"
cp /bin/busybox "$bundle/rootfs/bin/busybox"
for applet in sh echo cat hostname id ls uname; do ln -s busybox "$bundle/rootfs/bin/$applet"; done
echo "root:x:0:0:root:/root:/bin/sh" >"$bundle/rootfs/etc/passwd"
"$bin" spec --bundle "$bundle"
# A non-interactive container: no terminal, and a command of our choosing.
jq '.process.terminal = false | .root.readonly = true
    | .process.args = ["sh", "-c", "echo hello from $(hostname); id; ls /sys/fs/cgroup | head -3"]' \
    "$bundle/config.json" >"$bundle/config.tmp" && mv "$bundle/config.tmp" "$bundle/config.json"
"$bin" --root /run/hako-runtime run --bundle "$bundle" "demo-$$"
