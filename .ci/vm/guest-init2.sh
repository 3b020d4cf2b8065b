#!/bin/sh
# hako VM stage-2 init (PID 1 on a tmpfs root after switch_root).
# Sets up a systemd-like pure cgroup v2 environment and runs the payload.
export PATH=/bin:/usr/bin:/sbin:/usr/sbin
export HOME=/root TERM=linux LANG=C.UTF-8
umask 022
. /hako/config

# (Debian's busybox has no 'mountpoint' applet)
ismnt() { grep -q "^[^ ]* $1 " /proc/mounts 2>/dev/null; }
ismnt /proc || mount -t proc -o nosuid,nodev,noexec proc /proc
ismnt /sys || mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
ismnt /dev || mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
exec </dev/console >/dev/console 2>&1

poweroff_now() {
    sync
    # give the UART a moment to drain the last lines before the machine is gone
    sleep 0.3
    poweroff -f
    echo o >/proc/sysrq-trigger
    sleep 10
    exit 1 # PID 1 exit -> panic -> reboot -> qemu exits (-no-reboot)
}

# ---- /dev
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5,nosuid,noexec devpts /dev/pts
rm -f /dev/ptmx && ln -s pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777,nosuid,nodev shm /dev/shm
mount -t mqueue -o nosuid,nodev,noexec mqueue /dev/mqueue 2>/dev/null || true
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
[ -e /dev/stdin ] || ln -s /proc/self/fd/0 /dev/stdin
[ -e /dev/stdout ] || ln -s /proc/self/fd/1 /dev/stdout
[ -e /dev/stderr ] || ln -s /proc/self/fd/2 /dev/stderr

# ---- /tmp, /run (normally already mounted by stage 1, with the payload inside)
ismnt /tmp || mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
ismnt /run || mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
chmod 1777 /tmp
mkdir -p /run/lock /var/tmp && chmod 1777 /var/tmp

# ---- other pseudo filesystems that container tooling tends to look at
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null || true
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true

# ---- cgroup v2 (pure: the kernel was booted with cgroup_no_v1=all)
mount -t cgroup2 -o nosuid,nodev,noexec,nsdelegate cgroup2 /sys/fs/cgroup 2>/dev/null ||
    mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup ||
    echo "HAKO-VM: WARNING: cannot mount cgroup2"
for c in $(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null); do
    echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null ||
        echo "HAKO-VM: WARNING: cannot enable cgroup controller $c"
done

# ---- kernel modules (resolved + ordered on the host)
if [ -s /hako/modules.list ]; then
    while read -r m; do
        [ -n "$m" ] || continue
        name=${m##*/}; name=${name%.ko}
        if grep -q "^$(echo "$name" | tr - _) " /proc/modules 2>/dev/null; then continue; fi
        insmod "$m" 2>/dev/null || echo "HAKO-VM: WARNING: insmod $m failed"
    done </hako/modules.list
fi

# ---- network + identity
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up 2>/dev/null || true
hostname "$(cat /etc/hostname 2>/dev/null || echo hako-vm)"

echo "HAKO-VM: kernel $(uname -r)"
echo "HAKO-VM: cgroup.controllers: $(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null)"
echo "HAKO-VM: cgroup.subtree_control: $(cat /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null)"
echo "HAKO-VM: modules: $(cut -d' ' -f1 /proc/modules 2>/dev/null | tr '\n' ' ')"
echo "HAKO-VM: uptime $(cut -d' ' -f1 /proc/uptime)s, $(grep MemTotal /proc/meminfo | tr -s ' ')"

# ---- payload
if cd "$HAKO_PAYLOAD"; then
    echo "===== HAKO-VM: payload start: $HAKO_PAYLOAD/run.sh ====="
    if [ "${HAKO_TTY:-0}" = 1 ] || ! mkfifo /run/hako-vm-out 2>/dev/null; then
        # run.sh writes straight to the console (a tty)
        ./run.sh </dev/null
        rc=$?
    else
        # run.sh's stdout/stderr is a pipe (as in CI), copied to the console
        cat /run/hako-vm-out &
        catpid=$!
        ./run.sh </dev/null >/run/hako-vm-out 2>&1
        rc=$?
        # processes left behind by run.sh may keep the pipe open: don't wait long
        i=0
        while kill -0 "$catpid" 2>/dev/null && [ $i -lt 30 ]; do sleep 0.1; i=$((i + 1)); done
        if kill -0 "$catpid" 2>/dev/null; then
            echo "HAKO-VM: note: processes left behind by run.sh still hold its output open"
            kill "$catpid" 2>/dev/null
        fi
    fi
    echo "===== HAKO-VM: payload end: exit status $rc ====="
else
    echo "HAKO-VM: payload directory $HAKO_PAYLOAD missing in the guest"
    rc=125
fi
echo "HAKO-VM-EXIT=$rc token=$HAKO_TOKEN"
poweroff_now
