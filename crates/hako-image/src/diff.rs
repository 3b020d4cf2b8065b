//! Changes as a layer tar: from an overlayfs upper directory, or between
//! two plain trees. Deterministic: entries in byte order of their names,
//! depth first, a directory before what it holds; no atime or ctime.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::dirfd;
use crate::unpack::{UnpackError, is_opaque, mtime_nsec, read_xattrs};

/// Counts what goes through.
struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Largest value of an octal field of `width` bytes (with its NUL).
fn octal_max(width: u32) -> u64 {
    (1u64 << (3 * (width - 1))) - 1
}

/// One PAX record, `LEN KEY=VALUE\n`, LEN counting itself.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    loop {
        let next = base + len.to_string().len();
        if next == len {
            break;
        }
        len = next;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Puts `name` in the ustar name (and prefix) fields; false if it does not fit.
fn set_ustar_name(h: &mut tar::Header, name: &[u8]) -> bool {
    let Some(u) = h.as_ustar_mut() else {
        return false;
    };
    if name.len() <= u.name.len() {
        u.name[..name.len()].copy_from_slice(name);
        return true;
    }
    // Split at a '/' so the prefix takes at most 155 bytes and the name at
    // most 100 (and at least one).
    for (i, b) in name.iter().enumerate() {
        if *b != b'/' || i > u.prefix.len() {
            continue;
        }
        let rest = &name[i + 1..];
        if rest.len() <= u.name.len() && !rest.is_empty() && i > 0 {
            u.prefix[..i].copy_from_slice(&name[..i]);
            u.name[..rest.len()].copy_from_slice(rest);
            return true;
        }
    }
    let n = u.name.len();
    u.name.copy_from_slice(&name[..n]);
    false
}

/// What one tar entry needs.
struct Item<'a> {
    name: &'a [u8],
    kind: tar::EntryType,
    link: Option<&'a [u8]>,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    size: u64,
    dev: Option<(u64, u64)>,
    xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

struct Out<W: Write> {
    b: tar::Builder<Counting<W>>,
    /// (dev, ino) of a file already written -> its name in the tar.
    links: HashMap<(u64, u64), Vec<u8>>,
}

fn ioe(path: &Path) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io {
        what: format!("export {}", path.display()),
        source,
    }
}

fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut r = rel.to_vec();
    if !r.is_empty() {
        r.push(b'/');
    }
    r.extend_from_slice(name);
    r
}

/// A directory's entries, sorted by name.
fn listing(dir: &Path) -> io::Result<Vec<(Vec<u8>, PathBuf, fs::Metadata)>> {
    let mut v = Vec::new();
    for ent in fs::read_dir(dir)? {
        let ent = ent?;
        let p = ent.path();
        let md = fs::symlink_metadata(&p)?;
        v.push((ent.file_name().as_bytes().to_vec(), p, md));
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

fn is_whiteout(md: &fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

impl<W: Write> Out<W> {
    fn new(w: W) -> Self {
        Out {
            b: tar::Builder::new(Counting { inner: w, n: 0 }),
            links: HashMap::new(),
        }
    }

    fn finish(self) -> io::Result<u64> {
        let mut c = self.b.into_inner()?;
        c.flush()?;
        Ok(c.n)
    }

    fn write(&mut self, it: &Item, data: impl Read) -> io::Result<()> {
        let mut pax = Vec::new();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(it.kind);
        h.set_mode(it.mode & 0o7777);
        if !set_ustar_name(&mut h, it.name) {
            pax_record(&mut pax, b"path", it.name);
        }
        if let Some(link) = it.link {
            let old = h.as_old_mut();
            if link.len() <= old.linkname.len() {
                old.linkname[..link.len()].copy_from_slice(link);
            } else {
                pax_record(&mut pax, b"linkpath", link);
            }
        }
        for (key, id) in [(&b"uid"[..], it.uid), (b"gid", it.gid)] {
            let v = if id > octal_max(8) {
                pax_record(&mut pax, key, id.to_string().as_bytes());
                0
            } else {
                id
            };
            if key == b"uid" {
                h.set_uid(v);
            } else {
                h.set_gid(v);
            }
        }
        match u64::try_from(it.mtime) {
            Ok(t) if t <= octal_max(12) => h.set_mtime(t),
            _ => {
                pax_record(&mut pax, b"mtime", it.mtime.to_string().as_bytes());
                h.set_mtime(0);
            }
        }
        if it.size > octal_max(12) {
            pax_record(&mut pax, b"size", it.size.to_string().as_bytes());
        }
        h.set_size(it.size);
        if let Some((major, minor)) = it.dev {
            for (v, set_major) in [(major, true), (minor, false)] {
                let v = u32::try_from(v)
                    .ok()
                    .filter(|v| u64::from(*v) <= octal_max(8))
                    .ok_or_else(|| io::Error::other("device number too large for a tar"))?;
                if set_major {
                    h.set_device_major(v)?;
                } else {
                    h.set_device_minor(v)?;
                }
            }
        }
        for (k, v) in it.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax_record(&mut pax, &key, v);
        }
        if !pax.is_empty() {
            let mut ph = tar::Header::new_ustar();
            ph.set_entry_type(tar::EntryType::XHeader);
            set_ustar_name(&mut ph, b"PaxHeader");
            ph.set_mode(0o644);
            ph.set_size(pax.len() as u64);
            ph.set_mtime(0);
            ph.set_cksum();
            self.b.append(&ph, pax.as_slice())?;
        }
        h.set_cksum();
        // Exactly `size` bytes, whatever happens to the file meanwhile.
        let mut data = data.take(it.size).chain(io::repeat(0)).take(it.size);
        self.b.append(&h, &mut data)
    }

    /// An entry for the file at `path`, named `rel` in the tar.
    fn node(&mut self, rel: &[u8], path: &Path, md: &fs::Metadata) -> Result<(), UnpackError> {
        let ft = md.file_type();
        if ft.is_socket() {
            return Ok(());
        }
        let mut it = Item {
            name: rel,
            kind: tar::EntryType::Regular,
            link: None,
            mode: md.mode(),
            uid: u64::from(md.uid()),
            gid: u64::from(md.gid()),
            mtime: md.mtime(),
            size: 0,
            dev: None,
            xattrs: &[],
        };
        if !ft.is_dir() && md.nlink() > 1 {
            let key = (md.dev(), md.ino());
            if let Some(first) = self.links.get(&key).cloned() {
                it.kind = tar::EntryType::Link;
                it.link = Some(&first);
                return self.write(&it, io::empty()).map_err(ioe(path));
            }
            self.links.insert(key, rel.to_vec());
        }
        let xattrs = read_xattrs(path).map_err(ioe(path))?;
        it.xattrs = &xattrs;
        if ft.is_dir() {
            let mut name = rel.to_vec();
            name.push(b'/');
            it.name = &name;
            it.kind = tar::EntryType::Directory;
            self.write(&it, io::empty()).map_err(ioe(path))
        } else if ft.is_file() {
            it.size = md.len();
            let f = dirfd::open_read(path).map_err(ioe(path))?;
            self.write(&it, f).map_err(ioe(path))
        } else if ft.is_symlink() {
            let t = fs::read_link(path).map_err(ioe(path))?;
            it.kind = tar::EntryType::Symlink;
            it.link = Some(t.as_os_str().as_bytes());
            self.write(&it, io::empty()).map_err(ioe(path))
        } else {
            it.kind = if ft.is_fifo() {
                tar::EntryType::Fifo
            } else if ft.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            };
            if !ft.is_fifo() {
                let rdev = md.rdev();
                it.dev = Some((u64::from(libc::major(rdev)), u64::from(libc::minor(rdev))));
            }
            self.write(&it, io::empty()).map_err(ioe(path))
        }
    }

    /// An empty regular file `rel/NAME`, for a whiteout or the opaque marker.
    fn marker(
        &mut self,
        rel: &[u8],
        name: &[u8],
        mtime: i64,
        path: &Path,
    ) -> Result<(), UnpackError> {
        let name = join(rel, name);
        let it = Item {
            name: &name,
            kind: tar::EntryType::Regular,
            link: None,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime,
            size: 0,
            dev: None,
            xattrs: &[],
        };
        self.write(&it, io::empty()).map_err(ioe(path))
    }

    fn whiteout(
        &mut self,
        rel: &[u8],
        name: &[u8],
        mtime: i64,
        path: &Path,
    ) -> Result<(), UnpackError> {
        let mut wh = crate::unpack::WHITEOUT_PREFIX.to_vec();
        wh.extend_from_slice(name);
        self.marker(rel, &wh, mtime, path)
    }

    /// An overlayfs upper directory's contents.
    fn upper(&mut self, dir: &Path, rel: &[u8]) -> Result<(), UnpackError> {
        for (name, path, md) in listing(dir).map_err(ioe(dir))? {
            if is_whiteout(&md) {
                self.whiteout(rel, &name, md.mtime(), &path)?;
                continue;
            }
            let r = join(rel, &name);
            self.node(&r, &path, &md)?;
            if md.is_dir() {
                if is_opaque(&path) {
                    self.marker(&r, crate::unpack::OPAQUE_MARKER, md.mtime(), &path)?;
                }
                self.upper(&path, &r)?;
            }
        }
        Ok(())
    }

    /// A whole tree: the entry and, for a directory, all below it.
    fn tree(&mut self, rel: &[u8], path: &Path, md: &fs::Metadata) -> Result<(), UnpackError> {
        self.node(rel, path, md)?;
        if md.is_dir() {
            for (name, p, m) in listing(path).map_err(ioe(path))? {
                self.tree(&join(rel, &name), &p, &m)?;
            }
        }
        Ok(())
    }
}

/// The changes in an overlayfs upper directory as a layer tar, with OCI
/// whiteouts: a character device 0/0 becomes `.wh.NAME`, an opaque
/// directory gains `DIR/.wh..wh..opq`. Returns the bytes written.
pub fn export_diff(upper: &Path, out: impl Write) -> Result<u64, UnpackError> {
    let mut o = Out::new(out);
    o.upper(upper, b"")?;
    o.finish().map_err(ioe(upper))
}

/// A directory of `changed` whose entry waits until something below it
/// (or it itself) has to go in the tar.
struct Pending {
    rel: Vec<u8>,
    path: PathBuf,
    md: fs::Metadata,
    written: bool,
}

struct Between<W: Write> {
    out: Out<W>,
    pending: Vec<Pending>,
}

fn same_meta(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.mode() == b.mode()
        && a.uid() == b.uid()
        && a.gid() == b.gid()
        && a.mtime() == b.mtime()
        && mtime_nsec(a) == mtime_nsec(b)
}

/// Whether the entry at `b` (in `changed`) differs from `a` (in `base`).
fn differs(ap: &Path, a: &fs::Metadata, bp: &Path, b: &fs::Metadata) -> io::Result<bool> {
    if !same_meta(a, b) {
        return Ok(true);
    }
    if !a.is_dir() && (a.len() != b.len() || a.rdev() != b.rdev()) {
        return Ok(true);
    }
    if a.file_type().is_symlink() && fs::read_link(ap)? != fs::read_link(bp)? {
        return Ok(true);
    }
    Ok(read_xattrs(ap)? != read_xattrs(bp)?)
}

impl<W: Write> Between<W> {
    fn flush(&mut self) -> Result<(), UnpackError> {
        for p in self.pending.iter_mut().filter(|p| !p.written) {
            self.out.node(&p.rel, &p.path, &p.md)?;
            p.written = true;
        }
        Ok(())
    }

    fn dir(&mut self, base: &Path, changed: &Path, rel: &[u8]) -> Result<(), UnpackError> {
        let b = listing(base).map_err(ioe(base))?;
        let c = listing(changed).map_err(ioe(changed))?;
        let (mut i, mut j) = (0, 0);
        while i < b.len() || j < c.len() {
            let order = match (b.get(i), c.get(j)) {
                (Some(x), Some(y)) => x.0.cmp(&y.0),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    let (name, path, md) = &b[i];
                    self.flush()?;
                    self.out.whiteout(rel, name, md.mtime(), path)?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    let (name, path, md) = &c[j];
                    self.flush()?;
                    self.out.tree(&join(rel, name), path, md)?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let (name, bpath, bmd) = &b[i];
                    let (_, cpath, cmd) = &c[j];
                    let r = join(rel, name);
                    let same_type = bmd.file_type() == cmd.file_type();
                    if cmd.is_dir() && same_type {
                        let changed_dir = differs(bpath, bmd, cpath, cmd).map_err(ioe(cpath))?;
                        self.pending.push(Pending {
                            rel: r.clone(),
                            path: cpath.clone(),
                            md: cmd.clone(),
                            written: false,
                        });
                        if changed_dir {
                            self.flush()?;
                        }
                        self.dir(bpath, cpath, &r)?;
                        self.pending.pop();
                    } else if !same_type || differs(bpath, bmd, cpath, cmd).map_err(ioe(cpath))? {
                        self.flush()?;
                        self.out.tree(&r, cpath, cmd)?;
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }
}

/// The changes from the tree `base` to the tree `changed` as a layer tar:
/// what is new or differs (with the directories above it), and a
/// `.wh.NAME` for each top of what was removed. Returns the bytes written.
pub fn export_diff_between(
    base: &Path,
    changed: &Path,
    out: impl Write,
) -> Result<u64, UnpackError> {
    let mut bt = Between {
        out: Out::new(out),
        pending: Vec::new(),
    };
    bt.dir(base, changed, b"")?;
    bt.out.finish().map_err(ioe(changed))
}
