#!/usr/bin/env bash
# Runs the runtime's and the cgroup crate's tests on a pure cgroup v2 host:
# Debian's 6.1 kernel booted under QEMU with cgroup_no_v1=all (see
# .ci/vm/run-in-vm.sh). This machine is hybrid, so without this the v2
# paths (clone into a cgroup, eBPF device filters, cgroup2 mounts in a
# cgroup namespace) would go unproven.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -q -p hako-runtime --bin hako-runtime
mapfile -t tests < <(cargo test -q -p hako-runtime -p hako-cgroups --no-run --message-format=json 2>/dev/null |
    jq -r 'select(.reason == "compiler-artifact" and .profile.test == true and .executable != null) | .executable')
((${#tests[@]})) || { echo "vm-tests: no test executables were built" >&2; exit 1; }

payload=$(mktemp -d /tmp/hako-vm-payload.XXXXXX)
trap 'rm -rf "$payload"' EXIT
cp target/debug/hako-runtime "$payload/hako-runtime"
mkdir "$payload/tests"
for t in "${tests[@]}"; do
    objcopy --strip-debug "$t" "$payload/tests/$(basename "$t")"
done
# iproute2's ip for the tests that make veth pairs (busybox's cannot).
echo /usr/sbin/ip >"$payload/extra-files.txt"
cat >"$payload/run.sh" <<'RUN'
#!/bin/sh
# In the guest: every test executable but podman's and containerd's (neither is there).
export HAKO_RUNTIME_BIN="$PWD/hako-runtime"
echo "cgroup layout: $(stat -f -c %T /sys/fs/cgroup)"
failed=""
for t in tests/*; do
    case "$t" in tests/podman-* | tests/containerd-*) continue ;; esac
    echo "=== $t"
    "./$t" --test-threads=2 || failed="$failed $t"
done
if [ -n "$failed" ]; then echo "FAILED:$failed"; exit 1; fi
echo "all test executables passed on cgroup v2"
RUN
chmod +x "$payload/run.sh"
bash .ci/vm/run-in-vm.sh "$payload" --mem 3072 --timeout 1200
