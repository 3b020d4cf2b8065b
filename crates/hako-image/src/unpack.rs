//! Layer unpack in overlayfs form, as containerd and podman store layers:
//! a whiteout `dir/.wh.NAME` becomes a character device 0/0 `dir/NAME`,
//! an opaque marker `dir/.wh..wh..opq` the xattr `trusted.overlay.opaque=y`
//! on `dir`.
//!
//! Images are untrusted. Every name is made relative to the layer's root,
//! a `..` in it is refused, and every file operation is relative to an fd
//! reached component by component with `O_NOFOLLOW`, so nothing is ever
//! written through a symlink, whatever the tar holds.
//!
//! Also here: applying an unpacked layer onto a plain directory (the copy
//! snapshotter) and, in `diff`, writing changes back out as a layer tar.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::dirfd;

pub use crate::diff::{export_diff, export_diff_between};

/// Files from this size on start their writeback as soon as they are
/// written (small ones go with the final flush).
const WRITEBACK_FROM: u64 = 256 << 10;

/// The xattr overlayfs reads to make a directory hide what lies below it.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

pub(crate) const WHITEOUT_PREFIX: &[u8] = b".wh.";
pub(crate) const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// What a layer held: entries made and bytes of file content written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The tar asks for something a layer may not do.
    #[error("entry {path:?}: refused: {reason}")]
    Refused { path: String, reason: String },
    /// Making one entry failed.
    #[error("entry {path:?}: {source}")]
    Entry {
        path: String,
        #[source]
        source: io::Error,
    },
    /// The stream ended before the tar's end-of-archive marker.
    #[error("the layer is truncated: its stream ended before the end of the tar")]
    Truncated,
    /// Reading or decompressing the stream failed, or the tar is corrupt.
    #[error("reading the layer: {0}")]
    Read(#[source] io::Error),
    /// A file operation outside of unpacking one entry.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

/// The decompressed stream of a layer blob.
pub fn decompressor<'a, R: Read + Send + 'a>(
    r: R,
    c: crate::Compression,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match c {
        crate::Compression::None => Box::new(r),
        crate::Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        crate::Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
    })
}

/// A name as components below the layer root: leading `/` and `./` and
/// every `.` dropped; a `..` refused.
pub(crate) fn normalize(name: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    let mut out = Vec::new();
    for c in name.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("the name climbs out of the layer with \"..\""),
            c if c.contains(&0) => return Err("the name holds a NUL byte"),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Notes whether the underlying reader reported end of stream.
struct Track<'a, R> {
    inner: R,
    eof: &'a Cell<bool>,
}

impl<R: Read> Read for Track<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof.set(true);
        }
        Ok(n)
    }
}

/// The open directories from the root down to the last entry's parent:
/// most entries share the previous one's parent, so most need no walk.
struct Walker {
    root: OwnedFd,
    stack: Vec<(Vec<u8>, OwnedFd)>,
}

/// Why a walk stopped.
enum WalkError {
    /// A component on the way is a symlink or not a directory.
    NotDir(Vec<u8>),
    /// A component is missing (and was not to be made).
    Missing(Vec<u8>),
    Io(io::Error),
}

fn step(parent: BorrowedFd, comp: &[u8], create: bool) -> Result<OwnedFd, WalkError> {
    let c = dirfd::cstr(comp).map_err(WalkError::Io)?;
    match dirfd::open_dir(parent, &c) {
        Ok(fd) => Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            if !create {
                return Err(WalkError::Missing(comp.to_vec()));
            }
            match dirfd::mkdir(parent, &c, 0o755) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(WalkError::Io(e)),
            }
            dirfd::open_dir(parent, &c).map_err(|e| classify(e, comp))
        }
        Err(e) => Err(classify(e, comp)),
    }
}

fn classify(e: io::Error, comp: &[u8]) -> WalkError {
    match e.raw_os_error() {
        Some(libc::ENOTDIR) | Some(libc::ELOOP) => WalkError::NotDir(comp.to_vec()),
        _ => WalkError::Io(e),
    }
}

impl Walker {
    /// The fd of the directory `comps`, made (0755) where missing.
    fn dir(&mut self, comps: &[&[u8]]) -> Result<BorrowedFd<'_>, WalkError> {
        walker_dir(&self.root, &mut self.stack, comps)
    }
}

fn walker_dir<'a>(
    root: &'a OwnedFd,
    stack: &'a mut Vec<(Vec<u8>, OwnedFd)>,
    comps: &[&[u8]],
) -> Result<BorrowedFd<'a>, WalkError> {
    let keep = stack
        .iter()
        .zip(comps)
        .take_while(|((have, _), want)| have.as_slice() == **want)
        .count();
    stack.truncate(keep);
    for comp in &comps[keep..] {
        let parent = match stack.last() {
            Some((_, fd)) => fd.as_fd(),
            None => root.as_fd(),
        };
        let fd = step(parent, comp, true)?;
        stack.push((comp.to_vec(), fd));
    }
    Ok(match stack.last() {
        Some((_, fd)) => fd.as_fd(),
        None => root.as_fd(),
    })
}

/// Walks from `root` to `comps` without making anything and without the cache.
fn walk(root: BorrowedFd, comps: &[&[u8]]) -> Result<Option<OwnedFd>, WalkError> {
    let mut cur: Option<OwnedFd> = None;
    for comp in comps {
        let parent = cur.as_ref().map_or(root, |f| f.as_fd());
        cur = Some(step(parent, comp, false)?);
    }
    Ok(cur)
}

/// Metadata from the tar header and its PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    mtime_nsec: u32,
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// A directory whose mode and mtime wait until all entries are in.
struct PendingDir {
    comps: Vec<Vec<u8>>,
    mode: u32,
    mtime: i64,
    mtime_nsec: u32,
}

struct Unpacker {
    walker: Walker,
    root_user: bool,
    dirs: Vec<PendingDir>,
    buf: Vec<u8>,
    stats: UnpackStats,
}

/// Unpacks one layer's tar stream (already decompressed) into the empty
/// directory `dest`, in overlayfs form. The stream is read to its end, so
/// a digest of it covers every byte.
pub fn unpack(tar: impl Read, dest: &Path) -> Result<UnpackStats, UnpackError> {
    let root = dirfd::open_root(dest).map_err(|source| UnpackError::Io {
        what: format!("open {}", dest.display()),
        source,
    })?;
    let mut u = Unpacker {
        walker: Walker {
            root,
            stack: Vec::new(),
        },
        root_user: dirfd::is_root(),
        dirs: Vec::new(),
        buf: vec![0; 1 << 20],
        stats: UnpackStats::default(),
    };
    let eof = Cell::new(false);
    let mut track = Track {
        inner: BufReader::with_capacity(1 << 20, tar),
        eof: &eof,
    };
    {
        let mut archive = tar::Archive::new(&mut track);
        let entries = archive.entries().map_err(|e| read_err(e, &eof))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| read_err(e, &eof))?;
            u.entry(&mut entry, &eof)?;
        }
    }
    // The archive ended on EOF rather than on its end-of-archive block.
    if eof.get() {
        return Err(UnpackError::Truncated);
    }
    // The rest (the second zero block, padding) still counts for digests.
    io::copy(&mut track, &mut io::sink()).map_err(|e| read_err(e, &eof))?;
    u.finish_dirs()?;
    Ok(u.stats)
}

/// A read error: the layer is truncated when its stream ended early.
fn read_err(e: io::Error, eof: &Cell<bool>) -> UnpackError {
    if eof.get() || e.kind() == io::ErrorKind::UnexpectedEof {
        UnpackError::Truncated
    } else {
        UnpackError::Read(e)
    }
}

fn entry_err(path: &[u8]) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Entry {
        path: show(path),
        source,
    }
}

fn refused(path: &[u8], reason: impl Into<String>) -> UnpackError {
    UnpackError::Refused {
        path: show(path),
        reason: reason.into(),
    }
}

fn walk_err(path: &[u8], e: WalkError) -> UnpackError {
    match e {
        WalkError::NotDir(c) => refused(
            path,
            format!(
                "{:?} on its way is a symlink or not a directory; nothing is written through it",
                show(&c)
            ),
        ),
        WalkError::Missing(c) => refused(path, format!("{:?} on its way does not exist", show(&c))),
        WalkError::Io(e) => entry_err(path)(e),
    }
}

/// Parses a PAX time, `SECONDS[.FRACTION]`.
fn pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = sec.parse().ok()?;
    let mut nsec = 0u32;
    let mut digits = 0;
    for b in frac.bytes().take(9) {
        if !b.is_ascii_digit() {
            return None;
        }
        nsec = nsec * 10 + u32::from(b - b'0');
        digits += 1;
    }
    for _ in digits..9 {
        nsec *= 10;
    }
    if sec < 0 && nsec > 0 {
        // -1.5 is 2 seconds back plus half a second.
        return Some((sec - 1, 1_000_000_000 - nsec));
    }
    Some((sec, nsec))
}

/// Whether failing to set this xattr is to be shrugged off.
fn xattr_optional(key: &CStr, e: &io::Error) -> bool {
    let k = key.to_bytes();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) => k.starts_with(b"security.") || k.starts_with(b"user."),
        Some(libc::EPERM) => k.starts_with(b"security.") || k.starts_with(b"user."),
        _ => false,
    }
}

impl Unpacker {
    fn entry<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        eof: &Cell<bool>,
    ) -> Result<(), UnpackError> {
        let kind = e.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let raw = e.path_bytes().into_owned();
        let comps = normalize(&raw).map_err(|r| refused(&raw, r))?;
        let meta = self.meta(e, &raw)?;

        let Some((name, parent)) = comps.split_last() else {
            // The layer's root itself ("./"): only a directory makes sense.
            if kind.is_dir() {
                return self.root_dir(&raw, meta);
            }
            return Err(refused(&raw, "a non-directory names the layer's root"));
        };
        let name: &[u8] = name;

        if let Some(rest) = name.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(&raw, parent, rest);
        }

        let cname = dirfd::cstr(name).map_err(entry_err(&raw))?;
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let size = e.size();
                let Unpacker {
                    walker,
                    root_user,
                    buf,
                    stats,
                    ..
                } = self;
                let pfd = walker.dir(parent).map_err(|w| walk_err(&raw, w))?;
                let file = make(pfd, &cname, false, || {
                    dirfd::create_file(pfd, &cname, 0o600)
                })
                .map_err(entry_err(&raw))?;
                let mut file = file.ok_or_else(|| refused(&raw, "unreachable"))?;
                let mut written = 0u64;
                while written < size {
                    let n = match e.read(buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                        Err(err) => return Err(read_err(err, eof)),
                    };
                    file.write_all(&buf[..n]).map_err(entry_err(&raw))?;
                    written += n as u64;
                }
                if written < size {
                    return Err(UnpackError::Truncated);
                }
                let fd = file.as_fd();
                if written >= WRITEBACK_FROM {
                    // Best effort: a filesystem without it just syncs later.
                    let _ = dirfd::start_writeback(fd);
                }
                if *root_user {
                    dirfd::fchown(fd, meta.uid, meta.gid).map_err(entry_err(&raw))?;
                }
                dirfd::fchmod(fd, meta.mode).map_err(entry_err(&raw))?;
                for (k, v) in &meta.xattrs {
                    match dirfd::fsetxattr(fd, k, v) {
                        Err(err) if !xattr_optional(k, &err) => return Err(entry_err(&raw)(err)),
                        _ => {}
                    }
                }
                dirfd::futimes(fd, meta.mtime, meta.mtime_nsec).map_err(entry_err(&raw))?;
                stats.entries += 1;
                stats.bytes += written;
                Ok(())
            }
            tar::EntryType::Directory => {
                let root_user = self.root_user;
                let pfd = self.walker.dir(parent).map_err(|w| walk_err(&raw, w))?;
                make(pfd, &cname, true, || dirfd::mkdir(pfd, &cname, 0o700))
                    .map_err(entry_err(&raw))?;
                finish_node(pfd, name, &cname, &meta, root_user, false).map_err(entry_err(&raw))?;
                self.dirs.push(PendingDir {
                    comps: comps.iter().map(|c| c.to_vec()).collect(),
                    mode: meta.mode,
                    mtime: meta.mtime,
                    mtime_nsec: meta.mtime_nsec,
                });
                self.stats.entries += 1;
                Ok(())
            }
            tar::EntryType::Symlink => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| refused(&raw, "a symlink without a target"))?;
                let target = dirfd::cstr(&target).map_err(entry_err(&raw))?;
                let root_user = self.root_user;
                let pfd = self.walker.dir(parent).map_err(|w| walk_err(&raw, w))?;
                make(pfd, &cname, false, || dirfd::symlink(&target, pfd, &cname))
                    .map_err(entry_err(&raw))?;
                finish_node(pfd, name, &cname, &meta, root_user, true).map_err(entry_err(&raw))?;
                self.stats.entries += 1;
                Ok(())
            }
            tar::EntryType::Link => self.hard_link(e, &raw, &comps),
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let kind_bits = match kind {
                    tar::EntryType::Char => libc::S_IFCHR,
                    tar::EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                if kind_bits != libc::S_IFIFO && !self.root_user {
                    return Ok(());
                }
                let h = e.header();
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                let dev = libc::makedev(major, minor);
                let root_user = self.root_user;
                let pfd = self.walker.dir(parent).map_err(|w| walk_err(&raw, w))?;
                make(pfd, &cname, false, || {
                    dirfd::mknod(pfd, &cname, kind_bits | 0o600, dev)
                })
                .map_err(entry_err(&raw))?;
                finish_node(pfd, name, &cname, &meta, root_user, false).map_err(entry_err(&raw))?;
                self.stats.entries += 1;
                Ok(())
            }
            other => Err(refused(
                &raw,
                format!("unsupported entry type {:?}", other.as_byte() as char),
            )),
        }
    }

    fn meta<R: Read>(&self, e: &mut tar::Entry<'_, R>, raw: &[u8]) -> Result<Meta, UnpackError> {
        let h = e.header();
        let old = h.as_old();
        // An empty numeric field is 0, as other readers have it.
        let num = |what: &str, field: &[u8], v: io::Result<u64>| match v {
            Ok(v) => Ok(v),
            Err(_) if field.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
            Err(err) => Err(refused(raw, format!("bad {what} in its header: {err}"))),
        };
        let mode = num("mode", &old.mode, h.mode().map(u64::from))?;
        let mode = u32::try_from(mode & 0o7777).unwrap_or(0);
        let uid = u32::try_from(num("uid", &old.uid, h.uid())?)
            .map_err(|_| refused(raw, "uid out of range"))?;
        let gid = u32::try_from(num("gid", &old.gid, h.gid())?)
            .map_err(|_| refused(raw, "gid out of range"))?;
        let mtime = num("mtime", &old.mtime, h.mtime())?;
        let mut mtime = (i64::try_from(mtime).unwrap_or(i64::MAX), 0u32);
        let mut xattrs = Vec::new();
        let bad_pax = |e: io::Error| refused(raw, format!("a malformed PAX record: {e}"));
        if let Some(exts) = e.pax_extensions().map_err(bad_pax)? {
            for ext in exts {
                let ext = ext.map_err(bad_pax)?;
                let key = ext.key_bytes();
                if let Some(x) = key.strip_prefix(b"SCHILY.xattr.") {
                    // overlayfs's own xattrs steer the mount: never from an image.
                    if x.starts_with(b"trusted.overlay.") {
                        continue;
                    }
                    let k = dirfd::cstr(x).map_err(entry_err(raw))?;
                    xattrs.push((k, ext.value_bytes().to_vec()));
                } else if key == b"mtime"
                    && let Some(t) = pax_time(ext.value_bytes())
                {
                    mtime = t;
                }
            }
        }
        Ok(Meta {
            mode,
            uid,
            gid,
            mtime: mtime.0,
            mtime_nsec: mtime.1,
            xattrs,
        })
    }

    fn root_dir(&mut self, raw: &[u8], meta: Meta) -> Result<(), UnpackError> {
        let fd = self.walker.root.as_fd();
        if self.root_user {
            dirfd::fchown(fd, meta.uid, meta.gid).map_err(entry_err(raw))?;
        }
        for (k, v) in &meta.xattrs {
            match dirfd::fsetxattr(fd, k, v) {
                Err(err) if !xattr_optional(k, &err) => return Err(entry_err(raw)(err)),
                _ => {}
            }
        }
        self.dirs.push(PendingDir {
            comps: Vec::new(),
            mode: meta.mode,
            mtime: meta.mtime,
            mtime_nsec: meta.mtime_nsec,
        });
        self.stats.entries += 1;
        Ok(())
    }

    fn whiteout(&mut self, raw: &[u8], parent: &[&[u8]], rest: &[u8]) -> Result<(), UnpackError> {
        if rest.starts_with(WHITEOUT_PREFIX) {
            if [WHITEOUT_PREFIX, rest].concat() != OPAQUE_MARKER {
                // Some other AUFS metadata: nothing for overlayfs.
                return Ok(());
            }
            let key = dirfd::cstr(OPAQUE_XATTR.as_bytes()).map_err(entry_err(raw))?;
            match parent.split_last() {
                None => {
                    dirfd::fsetxattr(self.walker.root.as_fd(), &key, b"y")
                        .map_err(entry_err(raw))?;
                }
                Some((dir, above)) => {
                    // Makes the directory if the layer had not.
                    self.walker.dir(parent).map_err(|w| walk_err(raw, w))?;
                    let pfd = self.walker.dir(above).map_err(|w| walk_err(raw, w))?;
                    dirfd::setxattr_at(pfd, dir, &key, b"y").map_err(entry_err(raw))?;
                }
            }
            self.stats.entries += 1;
            return Ok(());
        }
        if rest.is_empty() || rest == b"." || rest == b".." {
            return Err(refused(raw, "a whiteout of no name"));
        }
        let cname = dirfd::cstr(rest).map_err(entry_err(raw))?;
        let pfd = self.walker.dir(parent).map_err(|w| walk_err(raw, w))?;
        make(pfd, &cname, false, || {
            dirfd::mknod(pfd, &cname, libc::S_IFCHR, 0)
        })
        .map_err(entry_err(raw))?;
        self.stats.entries += 1;
        Ok(())
    }

    fn hard_link<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        raw: &[u8],
        comps: &[&[u8]],
    ) -> Result<(), UnpackError> {
        let target = e
            .link_name_bytes()
            .ok_or_else(|| refused(raw, "a hard link without a target"))?
            .into_owned();
        let tcomps = normalize(&target).map_err(|r| {
            refused(
                raw,
                format!("its hard link target {:?}: {r}", show(&target)),
            )
        })?;
        let Some((tname, tparent)) = tcomps.split_last() else {
            return Err(refused(raw, "a hard link to the layer's root"));
        };
        if tcomps == comps {
            return Ok(());
        }
        let not_in_layer = |why: String| {
            refused(
                raw,
                format!(
                    "its hard link target {:?} is not a file of this layer: {why}",
                    show(&target)
                ),
            )
        };
        let tfd = walk(self.walker.root.as_fd(), tparent).map_err(|w| match w {
            WalkError::NotDir(c) => not_in_layer(format!(
                "{:?} on its way is a symlink or not a directory",
                show(&c)
            )),
            WalkError::Missing(c) => not_in_layer(format!("{:?} does not exist", show(&c))),
            WalkError::Io(err) => entry_err(raw)(err),
        })?;
        let tpfd = tfd.as_ref().map_or(self.walker.root.as_fd(), |f| f.as_fd());
        let tcname = dirfd::cstr(tname).map_err(entry_err(raw))?;
        let tst = match dirfd::lstat(tpfd, &tcname) {
            Ok(st) => st,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(not_in_layer("it does not exist".into()));
            }
            Err(err) => return Err(entry_err(raw)(err)),
        };
        if dirfd::is_dir(&tst) {
            return Err(refused(raw, "a hard link to a directory"));
        }
        let Some((name, parent)) = comps.split_last() else {
            return Err(refused(raw, "a hard link names the layer's root"));
        };
        let cname = dirfd::cstr(name).map_err(entry_err(raw))?;
        let pfd = walker_dir(&self.walker.root, &mut self.walker.stack, parent)
            .map_err(|w| walk_err(raw, w))?;
        match dirfd::lstat(pfd, &cname) {
            Ok(st) if st.st_dev == tst.st_dev && st.st_ino == tst.st_ino => {}
            _ => {
                make(pfd, &cname, false, || {
                    dirfd::link(tpfd, &tcname, pfd, &cname)
                })
                .map_err(entry_err(raw))?;
            }
        }
        self.stats.entries += 1;
        Ok(())
    }

    /// Modes and mtimes of directories, now that nothing more goes in them.
    fn finish_dirs(&mut self) -> Result<(), UnpackError> {
        // Deepest first: a parent's mode (say 0500) must not stop the
        // walk to its children. The sort is stable, so a directory listed
        // twice still ends with its later entry.
        self.dirs.sort_by_key(|d| std::cmp::Reverse(d.comps.len()));
        let root = self.walker.root.as_fd();
        for d in &self.dirs {
            let path = d.comps.join(&b'/');
            let Some((name, parent)) = d.comps.split_last() else {
                dirfd::fchmod(root, d.mode).map_err(entry_err(b"./"))?;
                dirfd::futimes(root, d.mtime, d.mtime_nsec).map_err(entry_err(b"./"))?;
                continue;
            };
            let parent: Vec<&[u8]> = parent.iter().map(Vec::as_slice).collect();
            // A later entry may have replaced it or what leads to it.
            let pfd = match walk(root, &parent) {
                Ok(fd) => fd,
                Err(WalkError::Missing(_) | WalkError::NotDir(_)) => continue,
                Err(WalkError::Io(e)) => return Err(entry_err(&path)(e)),
            };
            let pfd = pfd.as_ref().map_or(root, |f| f.as_fd());
            let cname = dirfd::cstr(name).map_err(entry_err(&path))?;
            match dirfd::lstat(pfd, &cname) {
                Ok(st) if dirfd::is_dir(&st) => {}
                _ => continue,
            }
            dirfd::chmod_at(pfd, &cname, d.mode).map_err(entry_err(&path))?;
            dirfd::utimes_at(pfd, &cname, d.mtime, d.mtime_nsec).map_err(entry_err(&path))?;
        }
        Ok(())
    }
}

/// Runs `create` for `name`; if the name is taken, keeps a directory when
/// a directory is wanted and otherwise removes what is there and retries.
/// Returns what `create` returned (None if an existing dir was kept).
fn make<T>(
    pfd: BorrowedFd,
    name: &CStr,
    want_dir: bool,
    create: impl Fn() -> io::Result<T>,
) -> io::Result<Option<T>> {
    match create() {
        Ok(v) => return Ok(Some(v)),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(e),
    }
    if want_dir && dirfd::lstat(pfd, name).is_ok_and(|st| dirfd::is_dir(&st)) {
        return Ok(None);
    }
    dirfd::remove_all(pfd, name)?;
    create().map(Some)
}

/// Owner, mode (after the owner: chown clears setuid), xattrs and mtime of
/// a node just made; a directory's mode and mtime come at the end.
fn finish_node(
    pfd: BorrowedFd,
    name: &[u8],
    cname: &CStr,
    meta: &Meta,
    root_user: bool,
    symlink: bool,
) -> io::Result<()> {
    let dir = dirfd::lstat(pfd, cname).is_ok_and(|st| dirfd::is_dir(&st));
    if root_user {
        dirfd::chown_at(pfd, cname, meta.uid, meta.gid)?;
    }
    if !symlink && !dir {
        dirfd::chmod_at(pfd, cname, meta.mode)?;
    }
    for (k, v) in &meta.xattrs {
        match dirfd::setxattr_at(pfd, name, k, v) {
            Err(e) if !xattr_optional(k, &e) => return Err(e),
            _ => {}
        }
    }
    if !dir {
        dirfd::utimes_at(pfd, cname, meta.mtime, meta.mtime_nsec)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// apply_copy

struct Copier {
    root: OwnedFd,
    root_user: bool,
    /// (dev, ino) of a layer file with more links -> where its copy is.
    links: HashMap<(u64, u64), Vec<Vec<u8>>>,
    stats: UnpackStats,
}

fn io_err(what: impl FnOnce() -> String) -> impl FnOnce(io::Error) -> UnpackError {
    move |source| UnpackError::Io {
        what: what(),
        source,
    }
}

/// Applies an unpacked layer directory (overlayfs form) onto the plain
/// directory `target`: whiteouts delete, opaque directories are emptied
/// first, everything else is copied with its metadata. Nothing is written
/// through a symlink inside `target`.
pub fn apply_copy(layer: &Path, target: &Path) -> Result<UnpackStats, UnpackError> {
    let root = dirfd::open_root(target).map_err(io_err(|| format!("open {}", target.display())))?;
    let mut c = Copier {
        root,
        root_user: dirfd::is_root(),
        links: HashMap::new(),
        stats: UnpackStats::default(),
    };
    let mut rel = Vec::new();
    c.dir(layer, None, &mut rel)?;
    Ok(c.stats)
}

/// The xattrs of a path (not following a symlink), but overlayfs's own.
pub(crate) fn read_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(out),
        Err(e) => return Err(e),
    };
    for k in names {
        let kb = k.as_bytes();
        if kb.starts_with(b"trusted.overlay.") {
            continue;
        }
        if let Some(v) = xattr::get(path, &k)? {
            out.push((kb.to_vec(), v));
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn is_opaque(path: &Path) -> bool {
    matches!(xattr::get(path, OPAQUE_XATTR), Ok(Some(v)) if v == b"y")
}

impl Copier {
    /// Copies the contents of `src` into the target directory `rel` (whose
    /// fd is `dfd`, or the root).
    fn dir(
        &mut self,
        src: &Path,
        dfd: Option<&OwnedFd>,
        rel: &mut Vec<Vec<u8>>,
    ) -> Result<(), UnpackError> {
        let shown = |rel: &[Vec<u8>], name: &[u8]| {
            let mut p = rel.join(&b'/');
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(name);
            show(&p)
        };
        let list = fs::read_dir(src).map_err(io_err(|| format!("read {}", src.display())))?;
        for ent in list {
            let ent = ent.map_err(io_err(|| format!("read {}", src.display())))?;
            let name_os = ent.file_name();
            let name = name_os.as_bytes();
            let sp = src.join(&name_os);
            let shown_name = shown(rel, name);
            let what = || format!("apply {} as {:?}", sp.display(), shown_name);
            let md = fs::symlink_metadata(&sp).map_err(io_err(what))?;
            let cname = dirfd::cstr(name).map_err(io_err(what))?;
            let dfd_b = dfd.map_or(self.root.as_fd(), |f| f.as_fd());
            let ft = md.file_type();
            if ft.is_char_device() && md.rdev() == 0 {
                dirfd::remove_all(dfd_b, &cname).map_err(io_err(what))?;
                self.stats.entries += 1;
                continue;
            }
            if ft.is_dir() {
                let existing = dirfd::lstat(dfd_b, &cname);
                match existing {
                    Ok(st) if dirfd::is_dir(&st) => {
                        if is_opaque(&sp) {
                            let sub = dirfd::open_dir_read(dfd_b, &cname).map_err(io_err(what))?;
                            dirfd::empty_dir(sub.as_fd()).map_err(io_err(what))?;
                        }
                    }
                    Ok(_) => {
                        dirfd::remove_all(dfd_b, &cname).map_err(io_err(what))?;
                        dirfd::mkdir(dfd_b, &cname, 0o700).map_err(io_err(what))?;
                    }
                    Err(_) => dirfd::mkdir(dfd_b, &cname, 0o700).map_err(io_err(what))?,
                }
                let sub = dirfd::open_dir(dfd_b, &cname).map_err(io_err(what))?;
                rel.push(name.to_vec());
                self.dir(&sp, Some(&sub), rel)?;
                rel.pop();
                let dfd_b = dfd.map_or(self.root.as_fd(), |f| f.as_fd());
                self.meta_at(dfd_b, name, &cname, &sp, &md, false)
                    .map_err(io_err(what))?;
                self.stats.entries += 1;
                continue;
            }
            dirfd::remove_all(dfd_b, &cname).map_err(io_err(what))?;
            if ft.is_file() {
                let key = (md.dev(), md.ino());
                // Another name of a file already copied: link to that copy
                // (or copy again if that is no longer possible).
                if md.nlink() > 1
                    && let Some(first) = self.links.get(&key)
                    && self.link_to(first, dfd_b, &cname).is_ok()
                {
                    self.stats.entries += 1;
                    continue;
                }
                let mut from = dirfd::open_read(&sp).map_err(io_err(what))?;
                let mut to = dirfd::create_file(dfd_b, &cname, 0o600).map_err(io_err(what))?;
                let n = io::copy(&mut from, &mut to).map_err(io_err(what))?;
                let fd = to.as_fd();
                if self.root_user {
                    dirfd::fchown(fd, md.uid(), md.gid()).map_err(io_err(what))?;
                }
                dirfd::fchmod(fd, md.mode() & 0o7777).map_err(io_err(what))?;
                for (k, v) in read_xattrs(&sp).map_err(io_err(what))? {
                    let k = dirfd::cstr(&k).map_err(io_err(what))?;
                    match dirfd::fsetxattr(fd, &k, &v) {
                        Err(e) if !xattr_optional(&k, &e) => return Err(io_err(what)(e)),
                        _ => {}
                    }
                }
                dirfd::futimes(fd, md.mtime(), mtime_nsec(&md)).map_err(io_err(what))?;
                if md.nlink() > 1 {
                    let mut at = rel.clone();
                    at.push(name.to_vec());
                    self.links.insert(key, at);
                }
                self.stats.entries += 1;
                self.stats.bytes += n;
            } else if ft.is_symlink() {
                let t = fs::read_link(&sp).map_err(io_err(what))?;
                let t = dirfd::cstr(t.as_os_str().as_bytes()).map_err(io_err(what))?;
                dirfd::symlink(&t, dfd_b, &cname).map_err(io_err(what))?;
                self.meta_at(dfd_b, name, &cname, &sp, &md, true)
                    .map_err(io_err(what))?;
                self.stats.entries += 1;
            } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
                if !ft.is_fifo() && !self.root_user {
                    continue;
                }
                let kind = md.mode() & libc::S_IFMT;
                dirfd::mknod(dfd_b, &cname, kind | 0o600, md.rdev()).map_err(io_err(what))?;
                self.meta_at(dfd_b, name, &cname, &sp, &md, false)
                    .map_err(io_err(what))?;
                self.stats.entries += 1;
            }
            // Sockets are not layer content.
        }
        Ok(())
    }

    fn link_to(&self, first: &[Vec<u8>], dfd: BorrowedFd, cname: &CStr) -> io::Result<()> {
        let comps: Vec<&[u8]> = first.iter().map(Vec::as_slice).collect();
        let Some((fname, fparent)) = comps.split_last() else {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        };
        let root = self.root.as_fd();
        let fp = walk(root, fparent).map_err(|w| match w {
            WalkError::Io(e) => e,
            _ => io::Error::from_raw_os_error(libc::ENOENT),
        })?;
        let fpfd = fp.as_ref().map_or(root, |f| f.as_fd());
        let fcname = dirfd::cstr(fname)?;
        dirfd::link(fpfd, &fcname, dfd, cname)
    }

    fn meta_at(
        &self,
        dfd: BorrowedFd,
        name: &[u8],
        cname: &CStr,
        src: &Path,
        md: &fs::Metadata,
        symlink: bool,
    ) -> io::Result<()> {
        if self.root_user {
            dirfd::chown_at(dfd, cname, md.uid(), md.gid())?;
        }
        if !symlink {
            dirfd::chmod_at(dfd, cname, md.mode() & 0o7777)?;
        }
        for (k, v) in read_xattrs(src)? {
            let k = dirfd::cstr(&k)?;
            match dirfd::setxattr_at(dfd, name, &k, &v) {
                Err(e) if !xattr_optional(&k, &e) => return Err(e),
                _ => {}
            }
        }
        dirfd::utimes_at(dfd, cname, md.mtime(), mtime_nsec(md))
    }
}

pub(crate) fn mtime_nsec(md: &fs::Metadata) -> u32 {
    u32::try_from(md.mtime_nsec()).unwrap_or(0)
}
