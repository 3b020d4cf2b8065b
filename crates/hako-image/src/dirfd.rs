//! File operations relative to directory fds, never following a symlink
//! in the name they are given: the confinement the layer code builds on.
//!
//! Every function takes a parent directory fd and a single path component
//! (no `/`). The syscalls go through `rustix`; errors reach the callers as
//! `io::Error`s carrying the syscall's errno.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    AtFlags, FileType, Gid, Mode, OFlags, Stat, Timespec, Timestamps, Uid, XattrFlags,
};

/// A name as a C string; a NUL byte in it is an error.
pub(crate) fn cstr(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Mode bits exactly as given (rustix's `Mode::from_raw_mode` would drop
/// the file type bits; the kernel ignores what it does not use).
fn mode_bits(mode: u32) -> Mode {
    Mode::from_bits_retain(mode)
}

/// An owner for the `chown` family; `-1` leaves it unchanged, as in libc.
fn owner(uid: u32) -> Option<Uid> {
    (uid != u32::MAX).then(|| Uid::from_raw(uid))
}

fn group(gid: u32) -> Option<Gid> {
    (gid != u32::MAX).then(|| Gid::from_raw(gid))
}

/// Opens a directory the caller names by path (it is trusted) for reading.
pub(crate) fn open_root(path: &Path) -> io::Result<OwnedFd> {
    let p = cstr(path.as_os_str().as_bytes())?;
    Ok(rustix::fs::open(
        p.as_c_str(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn openat(parent: BorrowedFd, name: &CStr, flags: OFlags, mode: u32) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        parent,
        name,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        mode_bits(mode),
    )?)
}

/// A directory below `parent`, as an `O_PATH` fd to walk from; a symlink
/// is refused (`ENOTDIR` or `ELOOP`).
pub(crate) fn open_dir(parent: BorrowedFd, name: &CStr) -> io::Result<OwnedFd> {
    openat(parent, name, OFlags::PATH | OFlags::DIRECTORY, 0)
}

/// A directory below `parent`, opened for reading (listing, xattrs).
pub(crate) fn open_dir_read(parent: BorrowedFd, name: &CStr) -> io::Result<OwnedFd> {
    openat(parent, name, OFlags::RDONLY | OFlags::DIRECTORY, 0)
}

/// A new regular file; fails if the name exists (so never through a symlink).
pub(crate) fn create_file(parent: BorrowedFd, name: &CStr, mode: u32) -> io::Result<File> {
    openat(
        parent,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
        mode,
    )
    .map(File::from)
}

/// An existing regular file for reading, not through a symlink.
pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    let p = cstr(path.as_os_str().as_bytes())?;
    let fd = rustix::fs::open(
        p.as_c_str(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

pub(crate) fn mkdir(parent: BorrowedFd, name: &CStr, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::mkdirat(parent, name, mode_bits(mode))?)
}

pub(crate) fn symlink(target: &CStr, parent: BorrowedFd, name: &CStr) -> io::Result<()> {
    Ok(rustix::fs::symlinkat(target, parent, name)?)
}

/// A hard link; a symlink named by `old` is linked itself, not followed.
pub(crate) fn link(
    old_parent: BorrowedFd,
    old: &CStr,
    new_parent: BorrowedFd,
    new: &CStr,
) -> io::Result<()> {
    // No AT_SYMLINK_FOLLOW: the link is to `old` itself.
    Ok(rustix::fs::linkat(
        old_parent,
        old,
        new_parent,
        new,
        AtFlags::empty(),
    )?)
}

/// `mode` carries the file type (`S_IFCHR`, ...).
pub(crate) fn mknod(parent: BorrowedFd, name: &CStr, mode: u32, dev: u64) -> io::Result<()> {
    // rustix takes the type apart from the permission bits and ORs them
    // back together. A type of 0 means a regular file to mknod(2); any
    // other type rustix does not know becomes S_IFMT, which the kernel
    // refuses with EINVAL as it would the original bits.
    let kind = match mode & libc::S_IFMT {
        0 => FileType::RegularFile,
        bits => FileType::from_raw_mode(bits),
    };
    let perm = Mode::from_raw_mode(mode);
    Ok(rustix::fs::mknodat(parent, name, kind, perm, dev)?)
}

/// `lstat` of a name below `parent`.
pub(crate) fn lstat(parent: BorrowedFd, name: &CStr) -> io::Result<Stat> {
    Ok(rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

pub(crate) fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

pub(crate) fn unlink(parent: BorrowedFd, name: &CStr, dir: bool) -> io::Result<()> {
    let flags = if dir {
        AtFlags::REMOVEDIR
    } else {
        AtFlags::empty()
    };
    Ok(rustix::fs::unlinkat(parent, name, flags)?)
}

/// The path of `name` below the directory `fd`, through /proc: the fd
/// resolves to its directory, the last component is the name itself.
pub(crate) fn proc_path(fd: BorrowedFd, name: &[u8]) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    if !name.is_empty() {
        p.push(OsStr::from_bytes(name));
    }
    p
}

/// Removes `name` below `parent` whatever it is (a directory with all
/// it holds); no error if it is not there.
pub(crate) fn remove_all(parent: BorrowedFd, name: &CStr) -> io::Result<()> {
    let st = match lstat(parent, name) {
        Ok(st) => st,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if is_dir(&st) {
        // std's remove_dir_all never follows a symlink inside the tree; the
        // /proc path pins the parent to our fd.
        std::fs::remove_dir_all(proc_path(parent, name.to_bytes()))
    } else {
        unlink(parent, name, false)
    }
}

/// Removes everything inside the directory `dir`.
pub(crate) fn empty_dir(dir: BorrowedFd) -> io::Result<()> {
    for ent in std::fs::read_dir(proc_path(dir, b""))? {
        let ent = ent?;
        let name = cstr(ent.file_name().as_bytes())?;
        remove_all(dir, &name)?;
    }
    Ok(())
}

pub(crate) fn chown_at(parent: BorrowedFd, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    Ok(rustix::fs::chownat(
        parent,
        name,
        owner(uid),
        group(gid),
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// chmod of a name that is known not to be a symlink (it was just made).
pub(crate) fn chmod_at(parent: BorrowedFd, name: &CStr, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::chmodat(
        parent,
        name,
        mode_bits(mode),
        AtFlags::empty(),
    )?)
}

fn times(sec: i64, nsec: u32) -> Timestamps {
    let t = Timespec {
        tv_sec: sec,
        tv_nsec: nsec.into(),
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Sets atime and mtime of a name, not following a symlink.
pub(crate) fn utimes_at(parent: BorrowedFd, name: &CStr, sec: i64, nsec: u32) -> io::Result<()> {
    Ok(rustix::fs::utimensat(
        parent,
        name,
        &times(sec, nsec),
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

pub(crate) fn fchown(fd: BorrowedFd, uid: u32, gid: u32) -> io::Result<()> {
    Ok(rustix::fs::fchown(fd, owner(uid), group(gid))?)
}

pub(crate) fn fchmod(fd: BorrowedFd, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::fchmod(fd, mode_bits(mode))?)
}

/// Starts writing the file's dirty pages to disk without waiting, so that
/// the one `syncfs` at the end of a pull finds most of them written.
pub(crate) fn start_writeback(fd: BorrowedFd) -> io::Result<()> {
    // rustix (1.1) and nix (0.31) have no sync_file_range, hence libc.
    // SAFETY: a plain syscall on a valid fd; offset 0 and length 0 mean
    // the whole file.
    check(unsafe { libc::sync_file_range(fd.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) })
}

pub(crate) fn futimes(fd: BorrowedFd, sec: i64, nsec: u32) -> io::Result<()> {
    Ok(rustix::fs::futimens(fd, &times(sec, nsec))?)
}

pub(crate) fn fsetxattr(fd: BorrowedFd, key: &CStr, value: &[u8]) -> io::Result<()> {
    Ok(rustix::fs::fsetxattr(fd, key, value, XattrFlags::empty())?)
}

/// Sets an xattr on `name` below `parent` (a symlink itself, not its target).
pub(crate) fn setxattr_at(
    parent: BorrowedFd,
    name: &[u8],
    key: &CStr,
    value: &[u8],
) -> io::Result<()> {
    let p = cstr(proc_path(parent, name).as_os_str().as_bytes())?;
    Ok(rustix::fs::lsetxattr(
        p.as_c_str(),
        key,
        value,
        XattrFlags::empty(),
    )?)
}

pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
