//! File operations relative to directory fds, never following a symlink
//! in the name they are given: the confinement the layer code builds on.
//!
//! Every function takes a parent directory fd and a single path component
//! (no `/`). Each `unsafe` block wraps exactly one syscall.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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

fn check_fd(ret: libc::c_int) -> io::Result<OwnedFd> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall just returned this fd, so it is open and nobody
    // else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(ret) })
}

/// Opens a directory the caller names by path (it is trusted) for reading.
pub(crate) fn open_root(path: &Path) -> io::Result<OwnedFd> {
    let p = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: a plain syscall on a valid C string.
    let fd = unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    check_fd(fd)
}

fn openat(parent: BorrowedFd, name: &CStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: a plain syscall on a valid fd and C string.
    let fd = unsafe {
        libc::openat(
            parent.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    check_fd(fd)
}

/// A directory below `parent`, as an `O_PATH` fd to walk from; a symlink
/// is refused (`ENOTDIR` or `ELOOP`).
pub(crate) fn open_dir(parent: BorrowedFd, name: &CStr) -> io::Result<OwnedFd> {
    openat(parent, name, libc::O_PATH | libc::O_DIRECTORY, 0)
}

/// A directory below `parent`, opened for reading (listing, xattrs).
pub(crate) fn open_dir_read(parent: BorrowedFd, name: &CStr) -> io::Result<OwnedFd> {
    openat(parent, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

/// A new regular file; fails if the name exists (so never through a symlink).
pub(crate) fn create_file(parent: BorrowedFd, name: &CStr, mode: u32) -> io::Result<File> {
    openat(
        parent,
        name,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
        mode,
    )
    .map(File::from)
}

/// An existing regular file for reading, not through a symlink.
pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    let p = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: a plain syscall on a valid C string.
    let fd = unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    check_fd(fd).map(File::from)
}

pub(crate) fn mkdir(parent: BorrowedFd, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: a plain syscall on a valid fd and C string.
    check(unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) })
}

pub(crate) fn symlink(target: &CStr, parent: BorrowedFd, name: &CStr) -> io::Result<()> {
    // SAFETY: a plain syscall on a valid fd and C strings.
    check(unsafe { libc::symlinkat(target.as_ptr(), parent.as_raw_fd(), name.as_ptr()) })
}

/// A hard link; a symlink named by `old` is linked itself, not followed.
pub(crate) fn link(
    old_parent: BorrowedFd,
    old: &CStr,
    new_parent: BorrowedFd,
    new: &CStr,
) -> io::Result<()> {
    // SAFETY: a plain syscall on valid fds and C strings.
    check(unsafe {
        libc::linkat(
            old_parent.as_raw_fd(),
            old.as_ptr(),
            new_parent.as_raw_fd(),
            new.as_ptr(),
            0,
        )
    })
}

/// `mode` carries the file type (`S_IFCHR`, ...).
pub(crate) fn mknod(parent: BorrowedFd, name: &CStr, mode: u32, dev: u64) -> io::Result<()> {
    // SAFETY: a plain syscall on a valid fd and C string.
    check(unsafe {
        libc::mknodat(
            parent.as_raw_fd(),
            name.as_ptr(),
            mode as libc::mode_t,
            dev as libc::dev_t,
        )
    })
}

/// `lstat` of a name below `parent`.
pub(crate) fn lstat(parent: BorrowedFd, name: &CStr) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: a plain syscall on a valid fd, C string and out buffer.
    check(unsafe {
        libc::fstatat(
            parent.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded, so it filled the buffer (which was zeroed
    // before anyway).
    Ok(unsafe { st.assume_init() })
}

pub(crate) fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub(crate) fn unlink(parent: BorrowedFd, name: &CStr, dir: bool) -> io::Result<()> {
    let flags = if dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: a plain syscall on a valid fd and C string.
    check(unsafe { libc::unlinkat(parent.as_raw_fd(), name.as_ptr(), flags) })
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
    // SAFETY: a plain syscall on a valid fd and C string.
    check(unsafe {
        libc::fchownat(
            parent.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// chmod of a name that is known not to be a symlink (it was just made).
pub(crate) fn chmod_at(parent: BorrowedFd, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: a plain syscall on a valid fd and C string.
    check(unsafe { libc::fchmodat(parent.as_raw_fd(), name.as_ptr(), mode as libc::mode_t, 0) })
}

fn times(sec: i64, nsec: u32) -> [libc::timespec; 2] {
    let t = libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: libc::c_long::from(nsec),
    };
    [t, t]
}

/// Sets atime and mtime of a name, not following a symlink.
pub(crate) fn utimes_at(parent: BorrowedFd, name: &CStr, sec: i64, nsec: u32) -> io::Result<()> {
    let ts = times(sec, nsec);
    // SAFETY: a plain syscall on a valid fd, C string and two timespecs.
    check(unsafe {
        libc::utimensat(
            parent.as_raw_fd(),
            name.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

pub(crate) fn fchown(fd: BorrowedFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: a plain syscall on a valid fd.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })
}

pub(crate) fn fchmod(fd: BorrowedFd, mode: u32) -> io::Result<()> {
    // SAFETY: a plain syscall on a valid fd.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) })
}

/// Starts writing the file's dirty pages to disk without waiting, so that
/// the one `syncfs` at the end of a pull finds most of them written.
pub(crate) fn start_writeback(fd: BorrowedFd) -> io::Result<()> {
    // SAFETY: a plain syscall on a valid fd; offset 0 and length 0 mean
    // the whole file.
    check(unsafe { libc::sync_file_range(fd.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) })
}

pub(crate) fn futimes(fd: BorrowedFd, sec: i64, nsec: u32) -> io::Result<()> {
    let ts = times(sec, nsec);
    // SAFETY: a plain syscall on a valid fd and two timespecs.
    check(unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) })
}

pub(crate) fn fsetxattr(fd: BorrowedFd, key: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: a plain syscall on a valid fd, C string and byte buffer.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Sets an xattr on `name` below `parent` (a symlink itself, not its target).
pub(crate) fn setxattr_at(
    parent: BorrowedFd,
    name: &[u8],
    key: &CStr,
    value: &[u8],
) -> io::Result<()> {
    let p = cstr(proc_path(parent, name).as_os_str().as_bytes())?;
    // SAFETY: a plain syscall on valid C strings and a byte buffer.
    check(unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
