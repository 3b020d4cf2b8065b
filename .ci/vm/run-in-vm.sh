#!/usr/bin/env bash
# run-in-vm.sh — boot Debian's bookworm kernel (6.1 LTS) under QEMU/TCG with a
# pure cgroup v2 hierarchy (cgroup_no_v1=all) and run a payload inside it.
#
# Usage:
#   bash .ci/vm/run-in-vm.sh PAYLOAD_DIR [--mem MiB] [--timeout SECONDS] [--smp N]
#
# PAYLOAD_DIR must contain an executable run.sh. The directory is copied into
# the guest at the same absolute (physical) path as on the host; run.sh runs
# there as root with cwd = PAYLOAD_DIR and stdin = /dev/null. Every ELF file in
# PAYLOAD_DIR gets its shared libraries (ldd, incl. the dynamic loader) copied
# into the guest at their host paths. PAYLOAD_DIR/extra-files.txt may list
# further absolute host paths (files or directories; '#' comments allowed) to
# copy, with libraries for the ELF files among them. Script interpreters named
# in '#!' lines of payload files (e.g. /bin/bash) are copied too when the guest
# would not otherwise have them. PAYLOAD_DIR/modules.txt may list extra kernel
# modules (names) to load in the guest.
#
# The guest has /bin/busybox (Debian busybox-static) plus applet symlinks.
#
# Exit status: run.sh's exit status; 124 if the timeout expired; 125 if the VM
# failed (boot failure, kernel panic, no exit marker) or the harness failed.
#
# Environment:
#   HAKO_VM_CACHE       cache dir (default $HOME/.cache/hako-vm) for the kernel
#   HAKO_VM_KERNEL_PKG  concrete kernel package (default: what linux-image-amd64
#                       depends on, resolved once and then cached)
#   HAKO_VM_REFRESH=1   re-resolve and re-download the kernel package
#   HAKO_VM_MODULES     modules to load (default "overlay veth bridge")
#   HAKO_VM_APPEND      extra kernel command line arguments
#   HAKO_VM_ACCEL       QEMU accelerator (default tcg; nested KVM hangs here)
#   HAKO_VM_KEEP=1      keep the work dir (initramfs, console log) for debugging
#   HAKO_VM_TTY=1       give run.sh the console tty as stdout/stderr (default:
#                       a pipe, as in CI, so programs do not emit colours)
set -euo pipefail
shopt -s nullglob

SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EXIT_VM_FAIL=125
EXIT_TIMEOUT=124

log() { printf '[run-in-vm] %s\n' "$*" >&2; }
die() { printf '[run-in-vm] ERROR: %s\n' "$*" >&2; exit "$EXIT_VM_FAIL"; }

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
    exit 2
}

# ---------------------------------------------------------------- arguments
MEM=2048
TIMEOUT=600
SMP=2
PAYLOAD=""
while (($#)); do
    case "$1" in
        --mem) MEM=${2:?--mem needs a value}; shift 2 ;;
        --mem=*) MEM=${1#*=}; shift ;;
        --timeout) TIMEOUT=${2:?--timeout needs a value}; shift 2 ;;
        --timeout=*) TIMEOUT=${1#*=}; shift ;;
        --smp) SMP=${2:?--smp needs a value}; shift 2 ;;
        --smp=*) SMP=${1#*=}; shift ;;
        -h|--help) usage ;;
        -*) log "unknown option: $1"; usage ;;
        *) [[ -z $PAYLOAD ]] || { log "only one PAYLOAD_DIR allowed"; usage; }
           PAYLOAD=$1; shift ;;
    esac
done
[[ -n $PAYLOAD ]] || usage
[[ $MEM =~ ^[0-9]+$ ]] || die "--mem must be an integer (MiB)"
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die "--timeout must be an integer (seconds)"
[[ $SMP =~ ^[0-9]+$ ]] || die "--smp must be an integer"
[[ -d $PAYLOAD ]] || die "PAYLOAD_DIR '$PAYLOAD' is not a directory"
PAYLOAD_LOGICAL=$(cd "$PAYLOAD" && pwd -L)
PAYLOAD_PHYS=$(cd "$PAYLOAD" && pwd -P)
[[ -f $PAYLOAD_PHYS/run.sh ]] || die "$PAYLOAD_PHYS/run.sh does not exist"
[[ -x $PAYLOAD_PHYS/run.sh ]] || log "warning: run.sh is not executable on the host; making the guest copy executable"
case "$PAYLOAD_PHYS/" in
    /|/proc/*|/sys/*|/dev/*|/hako/*|/newroot/*)
        die "PAYLOAD_DIR may not live under / itself, /proc, /sys, /dev, /hako or /newroot (got $PAYLOAD_PHYS)" ;;
esac

T_START=$(date +%s.%N)

# ---------------------------------------------------------------- host tools
SUDO=()
if ((EUID != 0)); then
    command -v sudo >/dev/null || die "not root and no sudo: cannot install packages / create device nodes"
    SUDO=(sudo)
fi

APT_UPDATED=0
apt_install() {
    log "installing with apt: $*"
    export DEBIAN_FRONTEND=noninteractive
    if ! "${SUDO[@]}" apt-get install -y --no-install-recommends "$@" >&2; then
        ((APT_UPDATED)) && return 1
        "${SUDO[@]}" apt-get update >&2 && APT_UPDATED=1
        "${SUDO[@]}" apt-get install -y --no-install-recommends "$@" >&2
    fi
}

need_pkgs=()
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
command -v cpio >/dev/null || need_pkgs+=(cpio)
[[ -x /bin/busybox ]] || need_pkgs+=(busybox-static)
command -v ldd >/dev/null || need_pkgs+=(libc-bin)
command -v dpkg-deb >/dev/null || need_pkgs+=(dpkg)
if ((${#need_pkgs[@]})); then
    apt_install "${need_pkgs[@]}" || die "apt-get install ${need_pkgs[*]} failed"
fi
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 still missing"
# Debian's busybox (dynamic, package 'busybox') would also work, but we want the
# static one: tests copy /bin/busybox into container rootfs as-is.
bb_help=$(/bin/busybox --help 2>&1 || true)
if [[ $bb_help != *BusyBox* ]]; then
    die "/bin/busybox does not look like busybox"
fi
if ldd /bin/busybox >/dev/null 2>&1; then
    log "warning: /bin/busybox is dynamically linked (install busybox-static); its libraries will be copied"
fi

# ---------------------------------------------------------------- kernel cache
CACHE=${HAKO_VM_CACHE:-$HOME/.cache/hako-vm}
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9

kernel_resolve_pkg() {
    if [[ -n ${HAKO_VM_KERNEL_PKG:-} ]]; then
        echo "$HAKO_VM_KERNEL_PKG"; return
    fi
    local pkg
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
          awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-amd64$/ {print $2; exit}')
    if [[ -z $pkg ]]; then
        log "linux-image-amd64 not known to apt-cache; running apt-get update"
        "${SUDO[@]}" apt-get update >&2 || true
        APT_UPDATED=1
        pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
              awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-amd64$/ {print $2; exit}')
    fi
    [[ -n $pkg ]] || die "cannot resolve the kernel package linux-image-amd64 depends on"
    echo "$pkg"
}

kernel_fetch() { # $1 = package name -> extracts into $CACHE/kernels/$1
    local pkg=$1 dest="$CACHE/kernels/$1" tmp deb
    tmp=$(mktemp -d "$CACHE/.dl.XXXXXX")
    log "downloading $pkg (once; cached in $dest)"
    # apt-get download as root warns that _apt cannot write here; harmless.
    if ! (cd "$tmp" && apt-get -o APT::Sandbox::User=root download "$pkg" >&2); then
        if ((APT_UPDATED == 0)); then
            "${SUDO[@]}" apt-get update >&2 || true
            APT_UPDATED=1
        fi
        (cd "$tmp" && apt-get -o APT::Sandbox::User=root download "$pkg" >&2) || { rm -rf "$tmp"; die "apt-get download $pkg failed"; }
    fi
    deb=("$tmp"/*.deb)
    ((${#deb[@]} == 1)) || { rm -rf "$tmp"; die "expected one .deb after apt-get download"; }
    mkdir "$tmp/x"
    dpkg-deb -x "${deb[0]}" "$tmp/x"
    rm -f "${deb[0]}"
    # index: normalised module name -> path relative to the extracted tree
    local kver
    kver=$(find "$tmp/x/lib/modules" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | head -1)
    [[ -n $kver && -f $tmp/x/boot/vmlinuz-$kver ]] || { rm -rf "$tmp"; die "no vmlinuz in $pkg"; }
    (cd "$tmp/x" && find "lib/modules/$kver" -name '*.ko*' -type f |
        awk '{ n=$0; sub(/.*\//, "", n); sub(/\.ko(\.(xz|zst|gz))?$/, "", n); gsub(/-/, "_", n); print n, $0 }' |
        sort > hako-modules.idx)
    { [[ -f $tmp/x/lib/modules/$kver/modules.builtin ]] &&
        awk '{ n=$0; sub(/.*\//, "", n); sub(/\.ko$/, "", n); gsub(/-/, "_", n); print n }' \
            "$tmp/x/lib/modules/$kver/modules.builtin"; } | sort -u > "$tmp/x/hako-builtin.idx" || true
    echo "$kver" > "$tmp/x/hako-kver"
    mkdir -p "$CACHE/kernels"
    rm -rf "$dest"
    mv "$tmp/x" "$dest"
    rm -rf "$tmp"
}

KPKG=""
if [[ -n ${HAKO_VM_KERNEL_PKG:-} ]]; then
    KPKG=$HAKO_VM_KERNEL_PKG
elif [[ ${HAKO_VM_REFRESH:-0} != 1 && -f $CACHE/current ]]; then
    KPKG=$(<"$CACHE/current")
fi
if [[ -z $KPKG || ${HAKO_VM_REFRESH:-0} == 1 ]]; then
    KPKG=$(kernel_resolve_pkg)
fi
KDIR="$CACHE/kernels/$KPKG"
if [[ ${HAKO_VM_REFRESH:-0} == 1 || ! -f $KDIR/hako-kver ]]; then
    kernel_fetch "$KPKG"
fi
echo "$KPKG" > "$CACHE/current"
KVER=$(<"$KDIR/hako-kver")
VMLINUZ="$KDIR/boot/vmlinuz-$KVER"
[[ -f $VMLINUZ ]] || die "cached kernel is broken ($VMLINUZ missing); rerun with HAKO_VM_REFRESH=1"
flock -u 9

# ---------------------------------------------------------------- staging
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hako-vm.XXXXXX")
QEMU_PID=""
TAIL_PID=""
# shellcheck disable=SC2317  # invoked via trap
cleanup() {
    local rc=$?
    if [[ -n $QEMU_PID ]] && kill -0 "$QEMU_PID" 2>/dev/null; then
        log "interrupted: stopping qemu (pid $QEMU_PID)"
        kill -TERM "$QEMU_PID" 2>/dev/null || true
        sleep 1
        kill -KILL "$QEMU_PID" 2>/dev/null || true
    fi
    if [[ -n $TAIL_PID ]] && kill -0 "$TAIL_PID" 2>/dev/null; then
        kill "$TAIL_PID" 2>/dev/null || true
    fi
    if [[ ${HAKO_VM_KEEP:-0} == 1 ]]; then
        log "work dir kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

STAGE="$WORK/root"
mkdir -p "$STAGE"
declare -A STAGED=()

# Lexically normalise an absolute path (no symlink resolution).
norm() { realpath -ms -- "$1"; }

# Mirror directory $1 (absolute host path) into the staging tree, recreating
# symlinked components as symlinks (e.g. /lib -> usr/lib on merged-/usr hosts).
# All writes go to the *physical* path so we never follow a staged symlink
# (an absolute one would point back into the host).
stage_dir() {
    local d=$1
    [[ $d == / || -n ${STAGED["d:$d"]:-} ]] && return 0
    STAGED["d:$d"]=1
    local parent; parent=$(dirname -- "$d")
    stage_dir "$parent"
    local pphys; pphys=$(realpath -m -- "$parent")
    local dest; dest="$STAGE${pphys%/}/$(basename -- "$d")"
    if [[ -L $d ]]; then
        local t; t=$(readlink -- "$d")
        [[ -L $dest || -e $dest ]] || ln -s -- "$t" "$dest"
        [[ $t == /* ]] || t="$parent/$t"
        stage_dir "$(norm "$t")"
    else
        [[ -L $dest ]] && rm -f -- "$dest"
        mkdir -p -- "$dest"
    fi
}

# Copy host path $1 (file, symlink chain, or directory) into the staging tree.
stage_path() {
    local p; p=$(norm "$1")
    [[ -n ${STAGED["p:$p"]:-} ]] && return 0
    STAGED["p:$p"]=1
    [[ -e $p || -L $p ]] || { log "warning: $p does not exist on the host; skipped"; return 0; }
    local parent; parent=$(dirname -- "$p")
    stage_dir "$parent"
    local pphys; pphys=$(realpath -m -- "$parent")
    local dest; dest="$STAGE${pphys%/}/$(basename -- "$p")"
    if [[ -L $p ]]; then
        local t; t=$(readlink -- "$p")
        rm -rf -- "$dest"
        ln -s -- "$t" "$dest"
        [[ $t == /* ]] || t="$parent/$t"
        stage_path "$t"
    elif [[ -d $p ]]; then
        stage_dir "$p"
        cp -a -- "$p/." "$dest/"
    else
        rm -rf -- "$dest"
        cp -p -- "$p" "$dest"
    fi
}

is_elf() { # builtin-only check of the ELF magic
    local magic=""
    LC_ALL=C IFS= read -r -d '' -n 4 magic <"$1" 2>/dev/null || true
    [[ $magic == $'\x7fELF' ]]
}

# Stage the shared libraries (and the dynamic loader) of ELF file $1.
stage_libs() {
    local f=$1 out lib
    out=$(ldd -- "$f" 2>/dev/null) || return 0   # static, or not for this arch
    while read -r lib; do
        [[ -n $lib ]] && stage_path "$lib"
    done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3; next } $1 ~ /^\// { print $1 }' <<<"$out")
    if grep -q 'not found' <<<"$out"; then
        log "warning: $f has unresolved libraries:"
        grep 'not found' <<<"$out" >&2 || true
    fi
}

# Stage an interpreter named in a '#!' line unless the guest already has it.
stage_shebang() {
    local f=$1 line interp arg
    [[ -x $f || $f == "$PAYLOAD_PHYS/run.sh" ]] || return 0
    IFS= read -r line <"$f" 2>/dev/null || true
    [[ $line == '#!'* ]] || return 0
    read -r interp arg _ <<<"${line#\#!}"
    [[ -n $interp ]] || return 0
    if [[ $(basename -- "$interp") == env && -n ${arg:-} && $arg != -* ]]; then
        interp=$(command -v -- "$arg" 2>/dev/null || true)
        [[ -n $interp ]] || return 0
        # guest PATH lookup: fine if busybox provides it at any PATH entry
        local d
        for d in /bin /usr/bin /sbin /usr/sbin; do
            [[ -e $STAGE$(realpath -m "$d")/$arg || -L $STAGE$(realpath -m "$d")/$arg ]] && return 0
        done
    fi
    local phys; phys="$STAGE$(realpath -m -- "$(dirname -- "$interp")")/$(basename -- "$interp")"
    [[ -e $phys || -L $phys ]] && return 0
    [[ -e $interp ]] || { log "warning: interpreter $interp of $f not found on host"; return 0; }
    log "staging interpreter $interp (from $f)"
    stage_path "$interp"
    is_elf "$(realpath "$interp")" && stage_libs "$(realpath "$interp")"
    return 0
}

scan_tree() { # stage libs + interpreters for everything under host dir/file $1
    local f
    while IFS= read -r -d '' f; do
        if is_elf "$f"; then stage_libs "$f"; else stage_shebang "$f"; fi
    done < <(find "$1" -type f -print0)
}

log "building initramfs (kernel $KVER)"

# Base directories (mirroring the host's merged-/usr symlinks where present).
for d in /bin /sbin /lib /lib64 /usr/bin /usr/sbin /usr/lib /etc /root /var /tmp /run; do
    if [[ -e $d || -L $d ]]; then stage_dir "$d"; else mkdir -p "$STAGE$d"; fi
done
mkdir -p "$STAGE"/{proc,sys,dev,newroot,hako,mnt}
mkdir -p "$STAGE$(realpath -m /var)/tmp"

# busybox + applet symlinks (existing entries are never overwritten)
stage_path /bin/busybox
stage_libs "$(realpath /bin/busybox)"
BB_GUEST=/bin/busybox
declare -A DIRPHYS=()
while read -r applet; do
    [[ -n $applet ]] || continue
    ap="/$applet"
    adir=${ap%/*}; adir=${adir:-/}
    if [[ -z ${DIRPHYS[$adir]:-} ]]; then
        DIRPHYS[$adir]=$(realpath -m -- "$adir")
        mkdir -p "$STAGE${DIRPHYS[$adir]}"
    fi
    dest="$STAGE${DIRPHYS[$adir]%/}/${ap##*/}"
    [[ -e $dest || -L $dest ]] || ln -s "$BB_GUEST" "$dest"
done < <(/bin/busybox --list-full)
# make sure the usual names exist even if the list lacks a location
for a in sh mount umount switch_root insmod modprobe poweroff hostname ip; do
    dest="$STAGE$(realpath -m /bin)/$a"
    if ! [[ -e $dest || -L $dest || -e $STAGE$(realpath -m /sbin)/$a || -L $STAGE$(realpath -m /sbin)/$a ]]; then
        ln -s "$BB_GUEST" "$dest"
    fi
done

# /etc basics
ETC="$STAGE$(realpath -m /etc)"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$ETC/passwd"
printf 'root:x:0:\ntty:x:5:\nnogroup:x:65534:\n' >"$ETC/group"
echo hako-vm >"$ETC/hostname"
printf '127.0.0.1\tlocalhost hako-vm\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$ETC/hosts"
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files\n' >"$ETC/nsswitch.conf"
ln -sf /proc/self/mounts "$ETC/mtab"
[[ -f /etc/ld.so.cache ]] && cp -p /etc/ld.so.cache "$ETC/ld.so.cache"

# caller-requested extra host files
if [[ -f $PAYLOAD_PHYS/extra-files.txt ]]; then
    while IFS= read -r line || [[ -n $line ]]; do
        line=${line%%#*}
        line=$(sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' <<<"$line")
        [[ -n $line ]] || continue
        [[ $line == /* ]] || die "extra-files.txt: '$line' is not an absolute path"
        [[ -e $line ]] || die "extra-files.txt: '$line' does not exist on the host"
        # an explicitly requested file replaces a busybox applet link
        p=$(norm "$line")
        pd="$STAGE$(realpath -m -- "$(dirname -- "$p")")/$(basename -- "$p")"
        [[ -L $pd && $(readlink -- "$pd") == "$BB_GUEST" ]] && rm -f -- "$pd"
        stage_path "$line"
        scan_tree "$(realpath "$line")"
    done <"$PAYLOAD_PHYS/extra-files.txt"
fi

# payload at the same absolute path (logical path's symlinks mirrored too)
stage_dir "$PAYLOAD_LOGICAL"
stage_dir "$PAYLOAD_PHYS"
cp -a -- "$PAYLOAD_PHYS/." "$STAGE$PAYLOAD_PHYS/"
chmod +x "$STAGE$PAYLOAD_PHYS/run.sh"
scan_tree "$PAYLOAD_PHYS"

# kernel modules: resolve dependencies on the host, insmod in order in the guest
MODULES=${HAKO_VM_MODULES-overlay veth bridge}
if [[ -f $PAYLOAD_PHYS/modules.txt ]]; then
    MODULES+=" $(sed -e 's/#.*//' "$PAYLOAD_PHYS/modules.txt" | tr '\n' ' ')"
fi
declare -A MOD_DONE=()
: >"$STAGE/hako/modules.list"
mod_path() { awk -v n="$1" '$1 == n { print $2; exit }' "$KDIR/hako-modules.idx"; }
mod_deps() { # module file -> comma separated deps from .modinfo
    local f="$KDIR/$1"
    case "$f" in
        *.xz) xz -dc -- "$f" ;; *.zst) zstd -dcq -- "$f" ;; *.gz) gzip -dc -- "$f" ;; *) cat -- "$f" ;;
    esac | tr '\0' '\n' | grep -a -m1 '^depends=' | cut -d= -f2 || true
}
add_module() {
    local n=${1//-/_} rel deps d
    [[ -n ${MOD_DONE[$n]:-} ]] && return 0
    MOD_DONE[$n]=1
    if grep -qx -- "$n" "$KDIR/hako-builtin.idx" 2>/dev/null; then return 0; fi
    rel=$(mod_path "$n")
    [[ -n $rel ]] || { log "warning: kernel module '$n' not found in $KPKG; skipped"; return 0; }
    deps=$(mod_deps "$rel")
    for d in ${deps//,/ }; do add_module "$d"; done
    local out; out="$STAGE$(realpath -m "/${rel%.ko*}.ko")"
    mkdir -p "$(dirname -- "$out")"
    case "$rel" in
        *.xz) xz -dc -- "$KDIR/$rel" >"$out" ;;
        *.zst) zstd -dcq -- "$KDIR/$rel" >"$out" ;;
        *.gz) gzip -dc -- "$KDIR/$rel" >"$out" ;;
        *) cp -- "$KDIR/$rel" "$out" ;;
    esac
    echo "/${rel%.ko*}.ko" >>"$STAGE/hako/modules.list"
}
for m in $MODULES; do add_module "$m"; done

# guest init scripts + config
TOKEN=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
{
    printf 'HAKO_PAYLOAD=%q\n' "$PAYLOAD_PHYS"
    printf 'HAKO_TOKEN=%q\n' "$TOKEN"
    printf 'HAKO_TTY=%q\n' "${HAKO_VM_TTY:-0}"
} >"$STAGE/hako/config"
cp "$SELF_DIR/guest-init.sh" "$STAGE/init"
cp "$SELF_DIR/guest-init2.sh" "$STAGE/hako/init2"
chmod 0755 "$STAGE/init" "$STAGE/hako/init2"
# The kernel opens /dev/console for init's stdio before /init runs.
"${SUDO[@]}" mknod -m 600 "$STAGE/dev/console" c 5 1 2>/dev/null || true
"${SUDO[@]}" mknod -m 666 "$STAGE/dev/null" c 1 3 2>/dev/null || true

INITRD="$WORK/initrd.cpio"
(cd "$STAGE" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) >"$INITRD"
log "initramfs: $(du -h "$INITRD" | cut -f1) uncompressed, payload $PAYLOAD_PHYS"

# ---------------------------------------------------------------- boot
CONLOG="$WORK/console.log"
ERRLOG="$WORK/qemu.stderr"
: >"$CONLOG"
ACCEL=${HAKO_VM_ACCEL:-tcg}
CPU_OPTS=(-cpu max)
[[ $ACCEL == kvm ]] && CPU_OPTS=(-cpu host)
APPEND="console=ttyS0 cgroup_no_v1=all panic=-1 oops=panic quiet loglevel=4 rdinit=/init"
APPEND+=" random.trust_cpu=on 8250.nr_uarts=1 ${HAKO_VM_APPEND:-}"
# shellcheck disable=SC2054  # commas are part of QEMU option values
QEMU_CMD=(qemu-system-x86_64
    -accel "$ACCEL" "${CPU_OPTS[@]}" -m "$MEM" -smp "$SMP"
    -nographic -no-reboot -nic none -vga none -no-user-config
    -fw_cfg name=etc/sercon-port,string=0
    -kernel "$VMLINUZ" -initrd "$INITRD" -append "$APPEND")

T_BOOT=$(date +%s.%N)
"${QEMU_CMD[@]}" </dev/null >"$CONLOG" 2>"$ERRLOG" &
QEMU_PID=$!
log "started qemu (pid $QEMU_PID, accel $ACCEL, ${MEM} MiB, ${SMP} vCPUs, timeout ${TIMEOUT}s)"

# Stream the console (without CRs) to stdout; note when the payload starts.
START_MARK="===== HAKO-VM: payload start"
(
    tail -n +1 -F --pid="$QEMU_PID" "$CONLOG" 2>/dev/null |
    while IFS= read -r line || [[ -n $line ]]; do
        line=${line//$'\r'/}
        printf '%s\n' "$line"
        if [[ $line == "$START_MARK"* && ! -e $WORK/t_payload ]]; then
            date +%s.%N >"$WORK/t_payload"
        fi
    done
) &
TAIL_PID=$!

TIMED_OUT=0
deadline=$((SECONDS + TIMEOUT))
while kill -0 "$QEMU_PID" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
        TIMED_OUT=1
        log "timeout after ${TIMEOUT}s: killing qemu (pid $QEMU_PID)"
        kill -TERM "$QEMU_PID" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$QEMU_PID" 2>/dev/null || true
        break
    fi
    sleep 0.2
done
QEMU_RC=0
wait "$QEMU_PID" || QEMU_RC=$?
QEMU_PID=""
# tail exits on its own once qemu is gone (after a final read)
for _ in $(seq 50); do kill -0 "$TAIL_PID" 2>/dev/null || break; sleep 0.1; done
kill "$TAIL_PID" 2>/dev/null || true
wait "$TAIL_PID" 2>/dev/null || true
TAIL_PID=""
T_END=$(date +%s.%N)

# ---------------------------------------------------------------- verdict
fmt() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
timing="total $(fmt "$T_START" "$T_END")s, qemu $(fmt "$T_BOOT" "$T_END")s"
if [[ -f $WORK/t_payload ]]; then
    timing+=", boot-to-payload $(fmt "$T_BOOT" "$(<"$WORK/t_payload")")s"
fi

show_qemu_stderr() {
    # (the sercon-port fw_cfg warning is expected noise)
    local err
    err=$(grep -v 'externally provided fw_cfg item names' "$ERRLOG" || true)
    if [[ -n $err ]]; then
        log "qemu stderr:"
        sed 's/^/    /' <<<"$err" >&2
    fi
}

EXIT_CODE=$(tr -d '\r' <"$CONLOG" | sed -n "s/^HAKO-VM-EXIT=\([0-9]\{1,3\}\) token=$TOKEN\$/\1/p" | tail -1)
if ((TIMED_OUT)); then
    log "FAILED: VM did not finish within ${TIMEOUT}s ($timing)"
    show_qemu_stderr
    exit "$EXIT_TIMEOUT"
fi
if [[ -n $EXIT_CODE ]]; then
    log "payload exited with status $EXIT_CODE ($timing)"
    exit "$EXIT_CODE"
fi
if grep -q 'Kernel panic' "$CONLOG"; then
    log "FAILED: guest kernel panicked ($timing)"
elif ! grep -q "$START_MARK" "$CONLOG"; then
    log "FAILED: VM did not boot to the payload (qemu exit status $QEMU_RC; $timing)"
else
    log "FAILED: VM stopped without reporting an exit status (qemu exit status $QEMU_RC; $timing)"
fi
show_qemu_stderr
exit "$EXIT_VM_FAIL"
