//! Thin wrappers over the syscalls that nix does not cover (clone3, openat2,
//! mount_setattr, close_range), each with its safety argument.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;

/// clone3's flag to start the child in a given cgroup (Linux 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// What clone3 returned to this process.
pub enum Forked {
    Parent(i32),
    Child,
}

/// Forks with namespace flags (and, on cgroup v2, straight into a cgroup).
/// Like fork(2): the child runs on a copy of this stack. The caller must be
/// single-threaded, which the runtime is.
pub fn clone3(flags: u64, cgroup_fd: Option<RawFd>) -> nix::Result<Forked> {
    let mut args = libc::clone_args {
        flags,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: 0,
    };
    if let Some(fd) = cgroup_fd {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = u64::try_from(fd).map_err(|_| Errno::EBADF)?;
    }
    // SAFETY: clone_args is fully initialised and its size is passed; with a
    // zero stack the kernel duplicates the address space as fork does, and the
    // runtime holds no other threads whose locks the child could inherit.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    match ret {
        -1 => Err(Errno::last()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(
            i32::try_from(pid).map_err(|_| Errno::EOVERFLOW)?,
        )),
    }
}

/// openat2(2) with RESOLVE_IN_ROOT: `path` is resolved as if `root` were `/`,
/// so neither `..` nor a symlink can lead outside it.
pub fn open_in_root(root: RawFd, path: &Path, flags: i32, mode: u32) -> nix::Result<OwnedFd> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let c = CString::new(rel.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: open_how is plain integers, for which all-zero is valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = u64::try_from(flags | libc::O_CLOEXEC).map_err(|_| Errno::EINVAL)?;
    how.mode = u64::from(mode);
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    loop {
        // SAFETY: `c` is a valid NUL-terminated string and `how` a valid
        // open_how whose size is passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root,
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            let fd = RawFd::try_from(fd).map_err(|_| Errno::EBADF)?;
            // SAFETY: the kernel just returned this descriptor to us.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        match Errno::last() {
            // openat2 asks for a retry when a rename raced the lookup.
            Errno::EAGAIN | Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// mount_setattr(2) on a mount (optionally its whole subtree).
pub fn mount_setattr(
    fd: RawFd,
    recursive: bool,
    set: u64,
    clear: u64,
    userns_fd: Option<RawFd>,
) -> nix::Result<()> {
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: userns_fd.map_or(0, |f| u64::try_from(f).unwrap_or(0)),
    };
    let mut flags = libc::AT_EMPTY_PATH as u32;
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    let empty = c"";
    // SAFETY: attr is a valid mount_attr whose size is passed; the path is an
    // empty NUL-terminated string used with AT_EMPTY_PATH.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            empty.as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if ret == 0 { Ok(()) } else { Err(Errno::last()) }
}

/// open_tree(2) with OPEN_TREE_CLONE: a detached copy of a mount (tree).
pub fn open_tree_clone(path: &Path, recursive: bool) -> nix::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    // SAFETY: `c` is a valid NUL-terminated path.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(Errno::last());
    }
    let fd = RawFd::try_from(fd).map_err(|_| Errno::EBADF)?;
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// move_mount(2) of a detached tree onto the target named by an fd.
pub fn move_mount_to_fd(from: RawFd, to: RawFd) -> nix::Result<()> {
    let empty = c"";
    // SAFETY: both paths are empty NUL-terminated strings used with the
    // EMPTY_PATH flags, so only the descriptors are used.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from,
            empty.as_ptr(),
            to,
            empty.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if ret == 0 { Ok(()) } else { Err(Errno::last()) }
}

/// The path through which a mount syscall reaches the object an O_PATH
/// descriptor holds, without walking the (container-controlled) path again.
pub fn fd_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Start time of a process in clock ticks since boot (field 22 of
/// /proc/PID/stat), used to tell a container's init from a reused pid.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

/// The state letter of a process (R, S, Z, ...).
pub fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// Sets this process non-dumpable: other processes (a container's, in
/// particular) can then no longer open /proc/PID/exe or /proc/PID/fd of it,
/// unless they have CAP_SYS_PTRACE over it (which `selfexe` deals with).
pub fn set_non_dumpable() -> nix::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if ret == 0 { Ok(()) } else { Err(Errno::last()) }
}

/// Sends signal number `sig` to `pid`; unlike nix's `Signal`, any number
/// the kernel has, realtime signals included.
pub fn send_signal(pid: i32, sig: i32) -> nix::Result<()> {
    // SAFETY: kill with integer arguments only.
    let ret = unsafe { libc::kill(pid, sig) };
    if ret == 0 { Ok(()) } else { Err(Errno::last()) }
}

pub fn set_no_new_privs() -> nix::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if ret == 0 { Ok(()) } else { Err(Errno::last()) }
}

pub fn set_keep_caps() -> nix::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    if ret == 0 { Ok(()) } else { Err(Errno::last()) }
}

/// ioprio_set(2) for this process.
pub fn set_io_priority(class: i32, priority: i32) -> nix::Result<()> {
    const IOPRIO_WHO_PROCESS: i32 = 1;
    let value = (class << 13) | priority;
    // SAFETY: ioprio_set takes integers only.
    let ret = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, value) };
    if ret == 0 { Ok(()) } else { Err(Errno::last()) }
}

/// Ends the process at once, without running destructors or atexit handlers
/// that belong to the parent's copy of the state.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// Restores what the runtime changed about signals for itself: the mask it
/// blocks for forwarding, and SIGPIPE, which Rust ignores. Ignored signals
/// survive exec, so the container would inherit them.
pub fn reset_signals() -> nix::Result<()> {
    use nix::sys::signal::{
        SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, sigaction, sigprocmask,
    };
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: installing the default disposition runs no code of ours.
    unsafe { sigaction(Signal::SIGPIPE, &dfl) }?;
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
}

/// Closes every descriptor from `first` up except those in `keep`, so that
/// nothing the runtime's caller left open reaches the container.
pub fn close_fds_except(first: u32, keep: &[RawFd]) -> nix::Result<()> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|f| u32::try_from(*f).ok())
        .filter(|f| *f >= first)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut from = first;
    for k in keep.into_iter().chain(std::iter::once(u32::MAX)) {
        if k > from {
            let to = if k == u32::MAX { u32::MAX } else { k - 1 };
            // SAFETY: close_range only closes descriptors.
            let ret = unsafe { libc::syscall(libc::SYS_close_range, from, to, 0) };
            if ret != 0 {
                return Err(Errno::last());
            }
        }
        from = k.saturating_add(1);
    }
    Ok(())
}

/// Sets `lo` up in the calling thread's network namespace.
pub fn loopback_up() -> nix::Result<()> {
    // SAFETY: a datagram socket for an interface ioctl; closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(Errno::last());
    }
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = libc::c_char::try_from(*b).unwrap_or(0);
    }
    // The request's type is the C library's (glibc: unsigned long, musl:
    // int); both numbers fit either.
    #[allow(clippy::unnecessary_cast, clippy::cast_possible_truncation)]
    let (get, set) = (
        libc::SIOCGIFFLAGS as libc::Ioctl,
        libc::SIOCSIFFLAGS as libc::Ioctl,
    );
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    let res = unsafe {
        if libc::ioctl(sock, get, &mut req) < 0 {
            -1
        } else {
            req.ifr_ifru.ifru_flags |= libc::c_short::try_from(libc::IFF_UP).unwrap_or(1);
            libc::ioctl(sock, set, &req)
        }
    };
    let err = Errno::last();
    // SAFETY: closing the socket made above.
    unsafe { libc::close(sock) };
    if res < 0 { Err(err) } else { Ok(()) }
}

pub fn set_domainname(name: &str) -> nix::Result<()> {
    // SAFETY: setdomainname reads `len` bytes from a valid buffer.
    let ret = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    if ret == 0 { Ok(()) } else { Err(Errno::last()) }
}

pub fn set_window_size(fd: RawFd, rows: u16, cols: u16) -> nix::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a valid winsize.
    let ret = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
    if ret == 0 { Ok(()) } else { Err(Errno::last()) }
}

pub fn set_controlling_terminal(fd: RawFd) -> nix::Result<()> {
    // SAFETY: TIOCSCTTY with an integer argument on a terminal descriptor.
    let ret = unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) };
    if ret == 0 { Ok(()) } else { Err(Errno::last()) }
}

pub fn dup2(from: RawFd, to: RawFd) -> nix::Result<()> {
    // SAFETY: dup2 only changes this process's descriptor table.
    let ret = unsafe { libc::dup2(from, to) };
    if ret < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// The same open file at descriptor `min` or above (close-on-exec).
pub fn move_above(fd: OwnedFd, min: RawFd) -> nix::Result<OwnedFd> {
    if fd.as_raw_fd() >= min {
        return Ok(fd);
    }
    let new = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(min))?;
    // SAFETY: fcntl just returned this new descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

pub fn set_child_subreaper() -> nix::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if ret == 0 { Ok(()) } else { Err(Errno::last()) }
}

/// Capability sets as the capget/capset syscalls see them (two 32-bit
/// words per set).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CapSets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

/// Sets all three sets in one capset, so that the kernel checks the new
/// sets against the old ones as a whole.
pub fn capset(sets: CapSets) -> nix::Result<()> {
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let lo = |v: u64| (v & 0xffff_ffff) as u32;
    let hi = |v: u64| (v >> 32) as u32;
    let data = [
        CapData {
            effective: lo(sets.effective),
            permitted: lo(sets.permitted),
            inheritable: lo(sets.inheritable),
        },
        CapData {
            effective: hi(sets.effective),
            permitted: hi(sets.permitted),
            inheritable: hi(sets.inheritable),
        },
    ];
    // SAFETY: a valid header and a two-element data array, as version 3
    // of the capability ABI expects.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if ret == 0 { Ok(()) } else { Err(Errno::last()) }
}

/// The highest capability number this kernel knows.
pub fn last_cap() -> u32 {
    static LAST: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *LAST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40)
    })
}

/// prctl(PR_CAPBSET_DROP) of one capability.
pub fn drop_bounding_cap(cap: u32) -> nix::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
    if ret == 0 { Ok(()) } else { Err(Errno::last()) }
}

pub fn clear_ambient() -> nix::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    if ret == 0 { Ok(()) } else { Err(Errno::last()) }
}

pub fn raise_ambient(cap: u32) -> nix::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_RAISE,
            libc::c_ulong::from(cap),
            0,
            0,
        )
    };
    if ret == 0 { Ok(()) } else { Err(Errno::last()) }
}
