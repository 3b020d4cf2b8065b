#!/usr/bin/env bash
# The test suite: every crate's tests on this host (real containers, in
# parallel, each with its own state root), then the runtime's tests again on
# a pure cgroup v2 kernel in a VM. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "test.sh: the tests make real containers: run as root" >&2; exit 1; }
bash scripts/deps.sh --tests
cargo test --workspace
bash scripts/vm-tests.sh
