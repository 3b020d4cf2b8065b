#!/bin/sh
# Self-test payload for run-in-vm.sh: bash .ci/vm/run-in-vm.sh .ci/vm/selftest
# Checks the guest environment the hako runtime tests rely on; exits 0 if all pass.
pass=0 fail=0
check() { # check DESCRIPTION COMMAND...
    d=$1; shift
    if out=$("$@" 2>&1); then pass=$((pass + 1)); echo "ok   - $d"
    else fail=$((fail + 1)); echo "FAIL - $d"; [ -n "$out" ] && echo "$out" | sed 's/^/       /'; fi
}
check "pure cgroup v2 mounted at /sys/fs/cgroup" sh -c 'grep -q "^cgroup2 /sys/fs/cgroup cgroup2" /proc/mounts && ! grep -q " cgroup " /proc/mounts'
check "no cgroup v1 controllers usable" sh -c '! mount -t cgroup -o memory none /mnt 2>/dev/null'
check "memory, pids, cpu, io enabled in root subtree_control" sh -c 'for c in memory pids cpu io; do grep -qw $c /sys/fs/cgroup/cgroup.subtree_control || exit 1; done'
check "child cgroup with memory.max + pids.max" sh -c 'd=/sys/fs/cgroup/selftest; mkdir $d && echo 64M >$d/memory.max && echo 50 >$d/pids.max && [ "$(cat $d/memory.max)" = 67108864 ] && sh -c "echo \$\$ >$d/cgroup.procs; grep -qx 0::/selftest /proc/self/cgroup" && rmdir $d'
check "/bin/busybox present" test -x /bin/busybox
check "overlayfs available" grep -qw overlay /proc/filesystems
check "/dev/ptmx opens a pty" sh -c 'exec 3<>/dev/ptmx && ls /dev/pts | grep -qx 0'
check "/tmp is a 1777 tmpfs" sh -c 'grep -q "^tmpfs /tmp tmpfs" /proc/mounts && [ "$(stat -c %a /tmp)" = 1777 ]'
check "/dev/shm tmpfs and /run tmpfs" sh -c 'grep -q " /dev/shm tmpfs" /proc/mounts && grep -q " /run tmpfs" /proc/mounts'
check "loopback is up" sh -c 'ip addr show lo | grep -q 127.0.0.1'
check "user+mount+pid ns, overlay and pivot_root into a busybox rootfs" sh -c '
    R=/tmp/selftest-ctr; mkdir -p $R/lower/bin $R/upper $R/work $R/merged
    cp /bin/busybox $R/lower/bin/ && ln -sf busybox $R/lower/bin/sh
    /bin/busybox unshare -U -r -m -p -f sh -c "
        mount -t overlay overlay -o lowerdir=$R/lower,upperdir=$R/upper,workdir=$R/work $R/merged &&
        mkdir -p $R/merged/proc $R/merged/old && cd $R/merged && pivot_root . old &&
        /bin/busybox mount -t proc proc /proc && /bin/busybox umount -l /old &&
        /bin/sh -c \"test \\\$\\\$ = 1\""'
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
