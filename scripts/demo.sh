#!/usr/bin/env bash
# Sets up and runs the main job on a fresh machine, with no registry: builds
# hako, makes a busybox image from Debian's busybox-static, and runs
# containers from it (foreground with --rm, then one in the background with
# logs, exec and stop); then the same busybox as a plain OCI bundle through
# hako-runtime, as runc would run it. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
bin=$PWD/target/bin
work=$(mktemp -d /tmp/hako-demo.XXXXXX)
hako=("$bin/hako" --root "$work/root" --runroot "$work/run")
cleanup() {
    # Everything of the demo's store goes, its default network's bridge,
    # nftables table and resolver too, before the store's directory.
    "${hako[@]}" system reset --force >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/rootfs/bin" "$work/rootfs/etc"
cp /bin/busybox "$work/rootfs/bin/busybox"
for applet in sh echo cat hostname id ls uname sleep; do ln -s busybox "$work/rootfs/bin/$applet"; done
echo "root:x:0:0:root:/root:/bin/sh" >"$work/rootfs/etc/passwd"
echo "root:x:0:" >"$work/rootfs/etc/group"
tar -C "$work/rootfs" -c . | "${hako[@]}" import - demo/busybox:1
"${hako[@]}" images
"${hako[@]}" run --rm demo/busybox:1 sh -c 'echo hello from $(hostname); id'
"${hako[@]}" run -d --name demo-web demo/busybox:1 sh -c 'echo serving; trap "echo bye; exit 0" TERM; while true; do sleep 1; done'
"${hako[@]}" ps
"${hako[@]}" exec demo-web uname -r
"${hako[@]}" stop demo-web
"${hako[@]}" logs demo-web
"${hako[@]}" ps -a
"${hako[@]}" rm demo-web
# The runtime alone, with an OCI bundle.
bundle=$work/bundle
mkdir -p "$bundle" && cp -a "$work/rootfs" "$bundle/rootfs"
"$bin/hako-runtime" spec --bundle "$bundle"
jq '.process.terminal = false | .root.readonly = true
    | .process.args = ["sh", "-c", "echo hello from the runtime: $(hostname)"]' \
    "$bundle/config.json" >"$bundle/config.tmp" && mv "$bundle/config.tmp" "$bundle/config.json"
"$bin/hako-runtime" --root "$work/runtime" run --bundle "$bundle" "demo-$$"
