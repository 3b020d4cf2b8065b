#!/bin/sh
# hako VM stage-1 init (runs from the initramfs rootfs as PID 1).
# pivot_root(2) cannot be used while / is the initramfs rootfs, and container
# runtimes need it, so copy everything into a real tmpfs and switch_root there.
export PATH=/bin:/usr/bin:/sbin:/usr/sbin
mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
exec </dev/console >/dev/console 2>&1

fail() {
    echo "HAKO-VM stage1: $*"
    echo o >/proc/sysrq-trigger
    sleep 5
    exit 1 # -> kernel panic -> reboot -> qemu exits (-no-reboot)
}

mount -t tmpfs -o mode=0755,size=90% tmpfs /newroot || fail "cannot mount tmpfs on /newroot"
# /tmp and /run are separate tmpfs mounts; mount them before copying so a
# payload living under /tmp or /run ends up inside them (mount --move of
# /newroot by switch_root carries these submounts along).
mkdir -p /newroot/tmp /newroot/run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /newroot/tmp || fail "cannot mount /newroot/tmp"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /newroot/run || fail "cannot mount /newroot/run"

for e in /* /.[!.]*; do
    [ -e "$e" ] || [ -L "$e" ] || continue
    case "$e" in
        /proc|/sys|/dev|/newroot) mkdir -p "/newroot$e"; continue ;;
    esac
    if [ -d "$e" ] && [ ! -L "$e" ]; then
        mkdir -p "/newroot$e"
        cp -a "$e/." "/newroot$e/" || fail "copying $e failed (out of memory? try --mem)"
    else
        cp -a "$e" /newroot/ || fail "copying $e failed"
    fi
done
chmod 1777 /newroot/tmp
chmod 0755 /newroot/run /newroot

mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
# switch_root deletes the initramfs contents (freeing its memory), makes
# /newroot the new / and execs stage 2 as PID 1.
exec switch_root /newroot /hako/init2
