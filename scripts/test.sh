#!/usr/bin/env bash
# The test suite: every crate's tests on this host (real containers, in
# parallel, each with its own state root); the engine's container tests and
# the runtime's again with the release (static musl) monitor and runtime;
# then the runtime's tests on a pure cgroup v2 kernel in a VM. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "test.sh: the tests make real containers: run as root" >&2; exit 1; }
bash scripts/deps.sh --tests
cargo test --workspace
# Again with the helpers as they ship (scripts/build.sh): the static musl
# monitor under the engine's container tests, the static musl runtime
# under the runtime's.
bash scripts/build.sh
HAKO_MONITOR=$PWD/target/bin/hako-monitor cargo test -p hako-cli --test containers
HAKO_RUNTIME_BIN=$PWD/target/bin/hako-runtime cargo test -p hako-runtime --tests
bash scripts/vm-tests.sh
