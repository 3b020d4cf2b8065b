//! Files in and out of containers: `cp`, `diff`, `export` and `commit`.
//!
//! Every path inside a container is resolved inside its root
//! (`openat2` with `RESOLVE_IN_ROOT`), and trees are walked and written
//! through directory descriptors, never by host path: a symlink in the
//! container (`/x -> /etc`, `../../..`) resolves against the container's
//! root, so no copy reads or writes a file of the host through it. The
//! host side of a copy goes through the same code, confined beneath the
//! directory it extracts into, so that a tar's entries cannot climb out.

use crate::error::{Error, Result};
use crate::{Engine, Status, process_start};
use hako_image::Digest;
use hako_image::archive;
use hako_image::manifest;
use hako_image::reference::Reference;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// How many symlinks `-L` follows before it gives up, as the kernel does.
const MAX_LINKS: usize = 40;

fn sys(what: impl Into<String>) -> impl FnOnce(Errno) -> Error {
    let what = what.into();
    move |e| Error::io(what, e.into())
}

/// The components of a path, without empty ones and `.`; `..` is kept
/// (resolution clamps it at the root).
fn components(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

fn join(parts: &[&str]) -> String {
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

/// A directory whose paths resolve inside it: a container's root, or the
/// host directory a copy writes into.
pub struct Tree {
    root: OwnedFd,
    /// For messages: "the container" or a host path.
    label: String,
}

/// What a copy reads: `name` in the directory `parent`; `.` for the
/// directory itself.
struct Source {
    parent: OwnedFd,
    name: String,
    /// The name the copy gets (the last component of the path given).
    base: String,
    is_dir: bool,
    /// `DIR/.`: the directory's contents, not the directory.
    contents: bool,
}

/// Where a copy lands: the directory to extract into, and the name the
/// source takes there (`None`: the source's contents go in directly).
struct Destination {
    dir: Tree,
    name: Option<String>,
}

/// How `cp` treats owners and links.
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyOptions {
    /// `-a`: keep the source's uid and gid (else the copier's own).
    pub archive: bool,
    /// `-L`: follow a symlink named as the source.
    pub follow_link: bool,
}

/// One end of a `cp`.
pub enum CopyEnd<'a> {
    /// A path on the host (relative to the current directory).
    Host(&'a Path),
    /// A path in a container, by id or name.
    Container { container: &'a str, path: &'a str },
}

impl Tree {
    pub fn open(dir: &Path, label: &str) -> Result<Tree> {
        let root = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys(format!("open {}", dir.display())))?;
        Ok(Tree {
            root,
            label: label.to_string(),
        })
    }

    fn where_(&self, path: &str) -> String {
        format!("{} in {}", display_path(path), self.label)
    }

    /// Opens `path` resolved inside the tree.
    fn resolve(&self, path: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
        let rel = join(&components(path));
        rustix::fs::openat2(
            &self.root,
            rel.as_str(),
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// The directory `path` of this tree as a tree of its own.
    fn subtree(&self, path: &str) -> Result<Tree> {
        let root = self
            .resolve(path, OFlags::PATH | OFlags::DIRECTORY)
            .map_err(sys(format!("open {}", self.where_(path))))?;
        Ok(Tree {
            root,
            label: self.label.clone(),
        })
    }

    /// Splits `path` into its parent directory (opened) and last name.
    fn parent_of(&self, path: &str) -> Result<(OwnedFd, String)> {
        let comps = components(path);
        let (parent, name) = match comps.split_last() {
            None | Some((&"..", _)) => (path.to_string(), ".".to_string()),
            Some((last, rest)) => (join(rest), (*last).to_string()),
        };
        let fd = self
            .resolve(&parent, OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(sys(format!("open {}", self.where_(&parent))))?;
        Ok((fd, name))
    }

    /// Looks up the source of a copy; with `follow`, a symlink it names is
    /// followed (inside the tree).
    fn source(&self, path: &str, follow: bool) -> Result<Source> {
        let contents = path.ends_with("/.") || path == "." || components(path).is_empty();
        let base = components(path)
            .last()
            .filter(|c| **c != "..")
            .map(|c| (*c).to_string())
            .unwrap_or_default();
        let mut current = path.to_string();
        for _ in 0..MAX_LINKS {
            let (parent, name) = self.parent_of(&current)?;
            let st = rustix::fs::statat(&parent, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| match e {
                    Errno::NOENT => {
                        Error::NotFound(format!("could not find the file {}", self.where_(path)))
                    }
                    e => Error::io(format!("stat {}", self.where_(path)), e.into()),
                })?;
            let kind = FileType::from_raw_mode(st.st_mode);
            if kind == FileType::Symlink && follow {
                let target = rustix::fs::readlinkat(&parent, name.as_str(), Vec::new())
                    .map_err(sys(format!("read the link {}", self.where_(&current))))?;
                let target = target.to_string_lossy().into_owned();
                current = if target.starts_with('/') {
                    target
                } else {
                    let mut c = components(&current);
                    c.pop();
                    format!("{}/{target}", join(&c))
                };
                continue;
            }
            if path.ends_with('/') && kind != FileType::Directory {
                return Err(Error::Invalid(format!(
                    "{} is not a directory",
                    self.where_(path)
                )));
            }
            return Ok(Source {
                parent,
                name,
                base,
                is_dir: kind == FileType::Directory,
                contents: contents && kind == FileType::Directory,
            });
        }
        Err(Error::Invalid(format!(
            "too many levels of symbolic links at {}",
            self.where_(path)
        )))
    }

    /// Where a copy of `src` to `path` lands, by Docker's rules: into an
    /// existing directory under the source's name (or its contents for
    /// `SRC/.`); over an existing file; else as `path` itself, whose
    /// parent must exist.
    fn destination(&self, path: &str, src: &Source) -> Result<Destination> {
        let must_be_dir = path.ends_with('/') || path.ends_with("/.");
        match self.resolve(path, OFlags::PATH) {
            Ok(fd) => {
                let st =
                    rustix::fs::fstat(&fd).map_err(sys(format!("stat {}", self.where_(path))))?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    let name = if src.contents || src.base.is_empty() {
                        None
                    } else {
                        Some(src.base.clone())
                    };
                    return Ok(Destination {
                        dir: Tree {
                            root: fd,
                            label: self.label.clone(),
                        },
                        name,
                    });
                }
                if src.is_dir {
                    return Err(Error::Invalid(format!(
                        "cannot copy a directory to the file {}",
                        self.where_(path)
                    )));
                }
                if must_be_dir {
                    return Err(Error::Invalid(format!(
                        "{} is not a directory",
                        self.where_(path)
                    )));
                }
            }
            Err(Errno::NOENT) => {
                if must_be_dir && !src.is_dir {
                    return Err(Error::NotFound(format!(
                        "the destination directory {} does not exist",
                        self.where_(path)
                    )));
                }
            }
            Err(e) => return Err(Error::io(format!("open {}", self.where_(path)), e.into())),
        }
        let comps = components(path);
        let Some((last, rest)) = comps.split_last().filter(|(l, _)| **l != "..") else {
            return Err(Error::Invalid(format!(
                "{}: cannot copy there",
                self.where_(path)
            )));
        };
        let parent = join(rest);
        let dir = match self.subtree(&parent) {
            Ok(t) => t,
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!(
                    "the directory {} does not exist",
                    self.where_(&parent)
                )));
            }
            Err(e) => return Err(e),
        };
        Ok(Destination {
            dir,
            name: Some((*last).to_string()),
        })
    }

    /// Writes `src` as a tar to `out`, its top entry named `top` (`None`:
    /// only what the directory holds).
    fn archive(&self, src: &Source, top: Option<&str>, out: impl Write) -> Result<()> {
        let mut b = tar::Builder::new(out);
        b.follow_symlinks(false);
        match top {
            Some(name) => self.emit(&mut b, src.parent.as_fd(), &src.name, name)?,
            None => {
                let dir = rustix::fs::openat(
                    &src.parent,
                    src.name.as_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(sys(format!("open {}", self.where_(&src.name))))?;
                self.children(&mut b, &dir, "")?;
            }
        }
        b.into_inner()
            .and_then(|mut w| w.flush())
            .map_err(|e| Error::io("write the tar", e))
    }

    /// Writes everything in the directory `dir`, names under `prefix`.
    fn children<W: Write>(
        &self,
        b: &mut tar::Builder<W>,
        dir: &OwnedFd,
        prefix: &str,
    ) -> Result<()> {
        let mut names: Vec<Vec<u8>> = Vec::new();
        for entry in
            rustix::fs::Dir::read_from(dir).map_err(sys(format!("read {}", self.where_(prefix))))?
        {
            let entry = entry.map_err(sys(format!("read {}", self.where_(prefix))))?;
            let n = entry.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
            }
        }
        names.sort();
        for n in names {
            let name = String::from_utf8_lossy(&n).into_owned();
            let child = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            self.emit(b, dir.as_fd(), OsStr::from_bytes(&n), &child)?;
        }
        Ok(())
    }

    /// Writes the entry `name` of `dir` (and all below it) as `tarname`.
    fn emit<W: Write>(
        &self,
        b: &mut tar::Builder<W>,
        dir: BorrowedFd<'_>,
        name: impl rustix::path::Arg + Copy,
        tarname: &str,
    ) -> Result<()> {
        let err = |what: &str| sys(format!("{what} {}", self.where_(tarname)));
        let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Removed while we walked: as if it had not been there.
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(err("stat")(e)),
        };
        let mut h = tar::Header::new_gnu();
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(u64::from(st.st_uid));
        h.set_gid(u64::from(st.st_gid));
        h.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
        h.set_size(0);
        let io_err = |e: io::Error| Error::io(format!("write {} to the tar", tarname), e);
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let fd = rustix::fs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(err("open"))?;
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, format!("{tarname}/"), io::empty())
                    .map_err(io_err)?;
                self.children(b, &fd, tarname)?;
            }
            FileType::RegularFile => {
                let fd = rustix::fs::openat(
                    dir,
                    name,
                    OFlags::RDONLY
                        | OFlags::NOFOLLOW
                        | OFlags::NONBLOCK
                        | OFlags::NOCTTY
                        | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(err("open"))?;
                // The file as opened is what goes in: it may have been
                // swapped since the stat.
                let st = rustix::fs::fstat(&fd).map_err(err("stat"))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                    return Ok(());
                }
                let size = u64::try_from(st.st_size).unwrap_or(0);
                h.set_size(size);
                h.set_entry_type(tar::EntryType::Regular);
                // Exactly `size` bytes, padded if the file shrank meanwhile.
                let data = std::fs::File::from(fd)
                    .take(size)
                    .chain(io::repeat(0))
                    .take(size);
                b.append_data(&mut h, tarname, data).map_err(io_err)?;
            }
            FileType::Symlink => {
                let target =
                    rustix::fs::readlinkat(dir, name, Vec::new()).map_err(err("read the link"))?;
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, tarname, OsStr::from_bytes(target.to_bytes()))
                    .map_err(io_err)?;
            }
            kind @ (FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo) => {
                h.set_entry_type(match kind {
                    FileType::CharacterDevice => tar::EntryType::Char,
                    FileType::BlockDevice => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                });
                let dev = st.st_rdev;
                h.set_device_major(rustix::fs::major(dev)).map_err(io_err)?;
                h.set_device_minor(rustix::fs::minor(dev)).map_err(io_err)?;
                b.append_data(&mut h, tarname, io::empty())
                    .map_err(io_err)?;
            }
            // Sockets and the like do not go into a tar.
            _ => {}
        }
        Ok(())
    }

    /// Opens (making it and its parents if needed) the directory `comps`.
    fn make_dir(&self, comps: &[String]) -> Result<OwnedFd> {
        let path = comps.join("/");
        match self.resolve(&path, OFlags::RDONLY | OFlags::DIRECTORY) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(Error::io(format!("open {}", self.where_(&path)), e.into())),
        }
        let mut dir = self
            .resolve(".", OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(sys(format!("open {}", self.label)))?;
        for (i, c) in comps.iter().enumerate() {
            let sub = comps[..=i].join("/");
            match rustix::fs::mkdirat(&dir, c.as_str(), Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(Error::io(format!("create {}", self.where_(&sub)), e.into())),
            }
            // Resolved again from the root: what is there may be a link.
            dir = self
                .resolve(&sub, OFlags::RDONLY | OFlags::DIRECTORY)
                .map_err(sys(format!("open {}", self.where_(&sub))))?;
        }
        Ok(dir)
    }

    /// Unpacks a tar into the tree. Names with `..` are refused; links in
    /// it resolve inside the tree. With `keep_owner`, files get the uid and
    /// gid of the tar, else they belong to the caller.
    fn extract(&self, input: impl Read, keep_owner: bool) -> Result<()> {
        let mut a = tar::Archive::new(input);
        let mut dirs: Vec<(String, u64)> = Vec::new();
        let entries = a.entries().map_err(|e| Error::io("read the tar", e))?;
        for entry in entries {
            let mut e = entry.map_err(|e| Error::io("read the tar", e))?;
            let raw = e
                .path()
                .map_err(|e| Error::io("read the tar", e))?
                .into_owned();
            let mut comps: Vec<String> = Vec::new();
            for c in raw.components() {
                match c {
                    Component::Normal(s) => comps.push(s.to_string_lossy().into_owned()),
                    Component::CurDir | Component::RootDir => {}
                    Component::ParentDir | Component::Prefix(_) => {
                        return Err(Error::Invalid(format!(
                            "the tar entry {} leads out of the destination",
                            raw.display()
                        )));
                    }
                }
            }
            let Some(name) = comps.pop() else { continue };
            let path = if comps.is_empty() {
                name.clone()
            } else {
                format!("{}/{name}", comps.join("/"))
            };
            let h = e.header().clone();
            let kind = h.entry_type();
            if matches!(
                kind,
                tar::EntryType::XGlobalHeader
                    | tar::EntryType::XHeader
                    | tar::EntryType::GNULongName
                    | tar::EntryType::GNULongLink
            ) {
                continue;
            }
            let parent = self.make_dir(&comps)?;
            let mode = Mode::from_raw_mode(h.mode().unwrap_or(0o644) & 0o7777);
            let (uid, gid) = (
                h.uid().ok().and_then(|u| u32::try_from(u).ok()),
                h.gid().ok().and_then(|g| u32::try_from(g).ok()),
            );
            let owner = keep_owner.then(|| {
                (
                    uid.map(rustix::fs::Uid::from_raw),
                    gid.map(rustix::fs::Gid::from_raw),
                )
            });
            let mtime = Timespec {
                tv_sec: i64::try_from(h.mtime().unwrap_or(0)).unwrap_or(0),
                tv_nsec: 0,
            };
            let times = Timestamps {
                last_access: mtime,
                last_modification: mtime,
            };
            let err = |what: &str| sys(format!("{what} {}", self.where_(&path)));
            let existing = rustix::fs::statat(&parent, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                .ok()
                .map(|st| FileType::from_raw_mode(st.st_mode));
            if kind == tar::EntryType::Directory {
                match existing {
                    Some(FileType::Directory) => {}
                    Some(_) => {
                        rustix::fs::unlinkat(&parent, name.as_str(), AtFlags::empty())
                            .map_err(err("remove"))?;
                        rustix::fs::mkdirat(&parent, name.as_str(), mode).map_err(err("create"))?;
                    }
                    None => {
                        rustix::fs::mkdirat(&parent, name.as_str(), mode).map_err(err("create"))?
                    }
                }
                let fd = rustix::fs::openat(
                    &parent,
                    name.as_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(err("open"))?;
                rustix::fs::fchmod(&fd, mode).map_err(err("chmod"))?;
                if let Some((u, g)) = owner {
                    rustix::fs::fchown(&fd, u, g).map_err(err("chown"))?;
                }
                dirs.push((path, h.mtime().unwrap_or(0)));
                continue;
            }
            match existing {
                Some(FileType::Directory) => {
                    return Err(Error::Invalid(format!(
                        "cannot overwrite the directory {} with a non-directory",
                        self.where_(&path)
                    )));
                }
                Some(_) => rustix::fs::unlinkat(&parent, name.as_str(), AtFlags::empty())
                    .map_err(err("remove"))?,
                None => {}
            }
            match kind {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let fd = rustix::fs::openat(
                        &parent,
                        name.as_str(),
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o600),
                    )
                    .map_err(err("create"))?;
                    let mut f = std::fs::File::from(fd);
                    io::copy(&mut e, &mut f)
                        .map_err(|e| Error::io(format!("write {}", self.where_(&path)), e))?;
                    rustix::fs::fchmod(&f, mode).map_err(err("chmod"))?;
                    if let Some((u, g)) = owner {
                        rustix::fs::fchown(&f, u, g).map_err(err("chown"))?;
                        // chown clears set-id bits: put them back.
                        rustix::fs::fchmod(&f, mode).map_err(err("chmod"))?;
                    }
                    rustix::fs::futimens(&f, &times).map_err(err("set the times of"))?;
                }
                tar::EntryType::Symlink => {
                    let target = e
                        .link_name()
                        .map_err(|e| Error::io("read the tar", e))?
                        .ok_or_else(|| {
                            Error::Invalid(format!("the tar's symlink {path} has no target"))
                        })?
                        .into_owned();
                    rustix::fs::symlinkat(target.as_os_str(), &parent, name.as_str())
                        .map_err(err("create"))?;
                    if let Some((u, g)) = owner {
                        rustix::fs::chownat(
                            &parent,
                            name.as_str(),
                            u,
                            g,
                            AtFlags::SYMLINK_NOFOLLOW,
                        )
                        .map_err(err("chown"))?;
                    }
                    let _ = rustix::fs::utimensat(
                        &parent,
                        name.as_str(),
                        &times,
                        AtFlags::SYMLINK_NOFOLLOW,
                    );
                }
                tar::EntryType::Link => {
                    let target = e
                        .link_name()
                        .map_err(|e| Error::io("read the tar", e))?
                        .ok_or_else(|| {
                            Error::Invalid(format!("the tar's hard link {path} has no target"))
                        })?
                        .to_string_lossy()
                        .into_owned();
                    if components(&target).contains(&"..") {
                        return Err(Error::Invalid(format!(
                            "the tar's hard link {path} leads out of the destination"
                        )));
                    }
                    let old = self
                        .resolve(&target, OFlags::PATH | OFlags::NOFOLLOW)
                        .map_err(sys(format!("open {}", self.where_(&target))))?;
                    rustix::fs::linkat(&old, "", &parent, name.as_str(), AtFlags::EMPTY_PATH)
                        .map_err(err("link"))?;
                }
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                    let ft = match kind {
                        tar::EntryType::Char => FileType::CharacterDevice,
                        tar::EntryType::Block => FileType::BlockDevice,
                        _ => FileType::Fifo,
                    };
                    let dev = rustix::fs::makedev(
                        h.device_major().ok().flatten().unwrap_or(0),
                        h.device_minor().ok().flatten().unwrap_or(0),
                    );
                    rustix::fs::mknodat(&parent, name.as_str(), ft, mode, dev)
                        .map_err(err("create"))?;
                    if let Some((u, g)) = owner {
                        rustix::fs::chownat(
                            &parent,
                            name.as_str(),
                            u,
                            g,
                            AtFlags::SYMLINK_NOFOLLOW,
                        )
                        .map_err(err("chown"))?;
                    }
                }
                // Sparse files, sockets and vendor types are left out.
                _ => {}
            }
        }
        // Directory times last: what was written into them changed them.
        for (path, mtime) in dirs.iter().rev() {
            if let Ok(fd) =
                self.resolve(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW)
            {
                let t = Timespec {
                    tv_sec: i64::try_from(*mtime).unwrap_or(0),
                    tv_nsec: 0,
                };
                let _ = rustix::fs::futimens(
                    &fd,
                    &Timestamps {
                        last_access: t,
                        last_modification: t,
                    },
                );
            }
        }
        Ok(())
    }
}

fn display_path(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

/// A host path made absolute against the current directory.
fn host_path(p: &Path) -> Result<String> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io("find the current directory", e))?
            .join(p)
    };
    let mut s = abs.to_string_lossy().into_owned();
    // Trailing `/` and `/.` say "a directory": keep them.
    if p.as_os_str().as_bytes().ends_with(b"/") && !s.ends_with('/') {
        s.push('/');
    }
    Ok(s)
}

/// Streams `src` of `from` into `to` at `dst`: an archiving thread feeds
/// the extraction through a pipe.
fn copy_between(from: &Tree, src: &str, to: &Tree, dst: &str, opts: CopyOptions) -> Result<()> {
    let source = from.source(src, opts.follow_link)?;
    let dest = to.destination(dst, &source)?;
    let (reader, writer) = io::pipe().map_err(|e| Error::io("make a pipe", e))?;
    std::thread::scope(|s| {
        let t = s.spawn(|| from.archive(&source, dest.name.as_deref(), writer));
        let res = dest.dir.extract(reader, opts.archive);
        let sent = t
            .join()
            .unwrap_or_else(|_| Err(Error::Invalid("the copying thread panicked".into())));
        // The extraction's error says more; the archiver's may only be a
        // broken pipe because of it.
        res.and(sent)
    })
}

/// A change in a container's filesystem, as `diff` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// `A`, `C` or `D`.
    pub kind: char,
    pub path: String,
}

/// What `commit` makes of a container.
#[derive(Clone, Debug, Default)]
pub struct CommitOptions {
    pub message: Option<String>,
    pub author: Option<String>,
    /// Container config fields to set (`Cmd`, `Env`, …); `Env` entries are
    /// merged by name, other fields replaced.
    pub changes: Option<serde_json::Value>,
    /// Freeze a running container while its changes are read.
    pub pause: bool,
    pub names: Vec<Reference>,
}

/// The image config's `config` with `changes` applied.
fn apply_config_changes(
    base: Option<serde_json::Value>,
    changes: &serde_json::Value,
) -> serde_json::Value {
    let mut cfg = match base {
        Some(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let Some(changes) = changes.as_object() else {
        return serde_json::Value::Object(cfg);
    };
    for (k, v) in changes {
        if k == "Env" {
            let mut env: Vec<String> = cfg
                .get("Env")
                .and_then(|e| e.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            for new in v
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str())
            {
                let key = new.split('=').next().unwrap_or(new);
                match env.iter_mut().find(|e| e.split('=').next() == Some(key)) {
                    Some(old) => *old = new.to_string(),
                    None => env.push(new.to_string()),
                }
            }
            cfg.insert("Env".into(), serde_json::json!(env));
        } else if k == "Labels" || k == "ExposedPorts" {
            let entry = cfg
                .entry(k.clone())
                .or_insert_with(|| serde_json::json!({}));
            if !entry.is_object() {
                *entry = serde_json::json!({});
            }
            if let (Some(dst), Some(src)) = (entry.as_object_mut(), v.as_object()) {
                for (a, b) in src {
                    dst.insert(a.clone(), b.clone());
                }
            }
        } else {
            cfg.insert(k.clone(), v.clone());
        }
    }
    serde_json::Value::Object(cfg)
}

/// Unmounts a root filesystem mounted for one operation.
struct TempMount(PathBuf);

impl Drop for TempMount {
    fn drop(&mut self) {
        let _ = hako_image::snapshot::unmount(&self.0);
    }
}

impl Engine {
    /// Runs `f` on the container's root filesystem. A running container
    /// is seen as its processes see it (`/proc/PID/root`, with its
    /// mounts) when `live`; else its root filesystem, mounted for the
    /// length of `f` if it is stopped. The container's lock is held, so
    /// it cannot start or be cleaned up meanwhile. `write`: refused for a
    /// container with a read-only root filesystem, as Docker refuses it.
    fn with_rootfs<T>(
        &mut self,
        what: &str,
        live: bool,
        write: bool,
        f: impl FnOnce(&Tree) -> Result<T>,
    ) -> Result<T> {
        let c = self.get(what)?;
        let _lock = self.lock(&c.id)?;
        let c = self
            .db
            .get(&c.id)?
            .ok_or_else(|| Error::NotFound(format!("no such container: {what}")))?;
        if c.status == Status::Removing {
            return Err(Error::Conflict(format!(
                "container {} is being removed",
                c.name
            )));
        }
        if write && c.config.read_only {
            return Err(Error::Conflict(format!(
                "container {}: its root filesystem is marked read-only",
                c.name
            )));
        }
        let label = format!("container {}", c.name);
        if let Some(dir) = &c.config.rootfs {
            return f(&Tree::open(dir, &label)?);
        }
        let running =
            matches!(c.status, Status::Running | Status::Paused) && process_start(c.pid).is_some();
        if running && live {
            let tree = Tree::open(Path::new(&format!("/proc/{}/root", c.pid)), &label)?;
            // The pid may have been reused between the check and the open.
            if process_start(c.pid).is_some() {
                return f(&tree);
            }
        }
        let store = self.store()?;
        let snap = store.snapshot(&c.id)?;
        let merged = snap.merged_dir();
        let _mounted = if running {
            None
        } else {
            hako_image::snapshot::unmount(&merged)?;
            snap.mount(store, &merged)?;
            Some(TempMount(merged.clone()))
        };
        let tree = Tree::open(&merged, &label)?;
        if !running && live {
            // As its processes would see it: Docker's `cp` reaches a
            // stopped container's volumes and bind mounts too. They go
            // with the root filesystem's (detaching) unmount.
            self.mount_volumes(&c, &tree)?;
        }
        f(&tree)
    }

    /// Binds the container's volumes and bind mounts onto its mounted
    /// root filesystem, each mount point resolved inside it (a link in the
    /// image cannot send a mount onto the host). Tmpfs mounts have no
    /// content while it is stopped.
    fn mount_volumes(&self, c: &crate::Container, tree: &Tree) -> Result<()> {
        use nix::mount::{MsFlags, mount};
        let mut mounts: Vec<&crate::MountSpec> = c
            .config
            .mounts
            .iter()
            .filter(|m| m.kind != crate::MountKind::Tmpfs)
            .collect();
        // Outer mount points before the ones inside them.
        mounts.sort_by_key(|m| components(&m.target).len());
        for m in mounts {
            let source = match m.kind {
                crate::MountKind::Volume => self.volume_mountpoint(&m.source),
                _ => PathBuf::from(&m.source),
            };
            let is_dir = match std::fs::metadata(&source) {
                Ok(meta) => meta.is_dir(),
                // A volume not filled yet, a bind source gone: nothing to
                // show (start would make or refuse it).
                Err(_) => continue,
            };
            let comps: Vec<String> = components(&m.target)
                .into_iter()
                .map(String::from)
                .collect();
            let point = if is_dir {
                tree.make_dir(&comps)?
            } else {
                match tree.resolve(&m.target, OFlags::PATH) {
                    Ok(fd) => fd,
                    Err(_) => continue,
                }
            };
            let at = format!("/proc/self/fd/{}", point.as_raw_fd());
            mount(
                Some(&source),
                at.as_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| {
                Error::io(
                    format!("bind {} on {}", source.display(), tree.where_(&m.target)),
                    e.into(),
                )
            })?;
            if m.readonly {
                // The mount just made, reached through the same path.
                let top = tree
                    .resolve(&m.target, OFlags::PATH)
                    .map_err(sys(format!("open {}", tree.where_(&m.target))))?;
                let at = format!("/proc/self/fd/{}", top.as_raw_fd());
                mount(
                    None::<&str>,
                    at.as_str(),
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&str>,
                )
                .map_err(|e| {
                    Error::io(
                        format!("make {} read-only", tree.where_(&m.target)),
                        e.into(),
                    )
                })?;
            }
        }
        Ok(())
    }

    /// `cp`: between a container and the host, in either direction.
    pub fn copy(&mut self, from: CopyEnd<'_>, to: CopyEnd<'_>, opts: CopyOptions) -> Result<()> {
        match (from, to) {
            (CopyEnd::Container { container, path }, CopyEnd::Host(dst)) => {
                let dst = host_path(dst)?;
                let host = Tree::open(Path::new("/"), "the host")?;
                self.with_rootfs(container, true, false, |t| {
                    copy_between(t, path, &host, &dst, opts)
                })
            }
            (CopyEnd::Host(src), CopyEnd::Container { container, path }) => {
                let src = host_path(src)?;
                let host = Tree::open(Path::new("/"), "the host")?;
                self.with_rootfs(container, true, true, |t| {
                    copy_between(&host, &src, t, path, opts)
                })
            }
            _ => Err(Error::Invalid(
                "copying between containers or between host paths is not supported; one side must be CONTAINER:PATH".into(),
            )),
        }
    }

    /// `cp CONTAINER:SRC -`: `src` as a tar on `out`.
    pub fn copy_out(
        &mut self,
        container: &str,
        path: &str,
        opts: CopyOptions,
        out: impl Write,
    ) -> Result<()> {
        self.with_rootfs(container, true, false, |t| {
            let src = t.source(path, opts.follow_link)?;
            let top = (!src.contents && !src.base.is_empty()).then(|| src.base.clone());
            t.archive(&src, top.as_deref(), out)
        })
    }

    /// `cp - CONTAINER:DEST`: a tar unpacked into the directory `path`.
    pub fn copy_in(
        &mut self,
        container: &str,
        path: &str,
        opts: CopyOptions,
        input: impl Read,
    ) -> Result<()> {
        self.with_rootfs(container, true, true, |t| {
            let dir = match t.subtree(path) {
                Ok(d) => d,
                Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOTDIR) => {
                    return Err(Error::Invalid(format!(
                        "{}: the destination of a tar stream must be a directory",
                        t.where_(path)
                    )));
                }
                Err(e) => return Err(e),
            };
            dir.extract(input, opts.archive)
        })
    }

    /// `export`: the container's whole filesystem as a tar.
    pub fn export(&mut self, what: &str, out: impl Write) -> Result<()> {
        self.with_rootfs(what, false, false, |t| {
            let src = t.source("/", false)?;
            t.archive(&src, None, out)
        })
    }

    /// The container's changes as a layer tar, streamed into `sink`.
    fn with_diff<T: Send>(
        &mut self,
        what: &str,
        sink: impl FnOnce(io::PipeReader) -> Result<T> + Send,
    ) -> Result<(T, u64)> {
        let c = self.get(what)?;
        if c.config.rootfs.is_some() {
            return Err(Error::Invalid(format!(
                "container {} runs from a directory (--rootfs): it has no image to compare with",
                c.name
            )));
        }
        let store = self.store()?;
        let snap = store.snapshot(&c.id)?;
        let (reader, writer) = io::pipe().map_err(|e| Error::io("make a pipe", e))?;
        std::thread::scope(|s| {
            let t = s.spawn(|| snap.export_diff(store, writer));
            let res = sink(reader);
            let sent = t.join().unwrap_or_else(|_| {
                Err(hako_image::Error::Invalid(
                    "the diff thread panicked".into(),
                ))
            });
            match (res, sent) {
                (Ok(v), Ok(n)) => Ok((v, n)),
                (Err(e), _) => Err(e),
                (_, Err(e)) => Err(e.into()),
            }
        })
    }

    /// `diff`: what the container added (`A`), changed (`C`) and deleted
    /// (`D`) against its image, sorted by path.
    pub fn diff(&mut self, what: &str) -> Result<Vec<Change>> {
        let c = self.get(what)?;
        let store = self.store()?;
        let lowers: Vec<PathBuf> = match c.config.rootfs {
            Some(_) => Vec::new(),
            None => store
                .snapshot(&c.id)?
                .record
                .layers
                .iter()
                .rev()
                .map(|l| store.layer_dir(l).join("diff"))
                .collect(),
        };
        let (mut changes, _) = self.with_diff(what, |r| {
            let mut out = Vec::new();
            let mut a = tar::Archive::new(r);
            for e in a.entries().map_err(|e| Error::io("read the diff", e))? {
                let e = e.map_err(|e| Error::io("read the diff", e))?;
                let p = e.path().map_err(|e| Error::io("read the diff", e))?;
                let comps: Vec<String> = p
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                        _ => None,
                    })
                    .collect();
                let Some((name, dir)) = comps.split_last() else {
                    continue;
                };
                if name == ".wh..wh..opq" {
                    continue;
                }
                let dir = dir.join("/");
                if let Some(gone) = name.strip_prefix(".wh.") {
                    let path = if dir.is_empty() {
                        gone.to_string()
                    } else {
                        format!("{dir}/{gone}")
                    };
                    out.push(Change {
                        kind: 'D',
                        path: format!("/{path}"),
                    });
                    continue;
                }
                let path = comps.join("/");
                let kind = if in_lowers(&lowers, &comps) { 'C' } else { 'A' };
                let mut change = Change {
                    kind,
                    path: format!("/{path}"),
                };
                // A mount point the runtime made, still empty: not the
                // container's doing (Docker keeps these in an init layer).
                let empty = e.header().entry_type().is_dir() || e.size() == 0;
                if kind == 'A' && empty && MOUNT_POINTS.contains(&change.path.as_str()) {
                    change.kind = 'm';
                }
                out.push(change);
            }
            Ok(out)
        })?;
        hide_mount_points(&mut changes);
        changes.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(changes)
    }

    /// `commit`: a new image of the container's image and one layer of its
    /// changes. A running container is paused meanwhile with `pause`.
    pub fn commit(&mut self, what: &str, opts: CommitOptions) -> Result<Digest> {
        let c = self.get(what)?;
        if c.config.rootfs.is_some() || c.image_id.is_empty() {
            return Err(Error::Invalid(format!(
                "container {} runs from a directory (--rootfs), not an image: there is nothing to commit onto",
                c.name
            )));
        }
        let paused = opts.pause && c.status == Status::Running;
        if paused {
            self.pause(&c.id, true)?;
        }
        let res = self.commit_changes(&c, &opts);
        if paused {
            let resumed = self.pause(&c.id, false);
            if res.is_ok() {
                resumed?;
            }
        }
        res
    }

    fn commit_changes(&mut self, c: &crate::Container, opts: &CommitOptions) -> Result<Digest> {
        let store = self.store()?.clone();
        let image = store.resolve(&c.image_id)?;
        let lowers: Vec<PathBuf> = image
            .chain_ids()
            .iter()
            .rev()
            .map(|l| store.layer_dir(l).join("diff"))
            .collect();
        let (layer, _) = {
            let store = store.clone();
            self.with_diff(&c.id, move |r| {
                // The runtime's mount points are left out of the layer, as
                // Docker leaves its init layer out.
                let (pr, pw) = io::pipe().map_err(|e| Error::io("make a pipe", e))?;
                std::thread::scope(|s| {
                    let t = s.spawn(move || {
                        without_mount_points(r, pw, |name| {
                            MOUNT_POINTS.contains(&format!("/{name}").as_str())
                                && !in_lowers(
                                    &lowers,
                                    &components(name)
                                        .iter()
                                        .map(|c| c.to_string())
                                        .collect::<Vec<_>>(),
                                )
                        })
                    });
                    let res = archive::add_layer(&store, pr);
                    let filtered = t
                        .join()
                        .unwrap_or_else(|_| Err(io::Error::other("the filter thread panicked")));
                    let layer = res?;
                    filtered.map_err(|e| Error::io("read the container's changes", e))?;
                    Ok(layer)
                })
            })?
        };
        // Two zero blocks and nothing else: an empty tar.
        let empty = layer.size <= 1024;
        let now = crate::now();
        let mut config = image.config.clone();
        config.created = Some(now.clone());
        if let Some(a) = &opts.author {
            config.author = Some(a.clone());
        }
        // Docker keeps the message in the config too (`Comment` of inspect).
        match opts.message.as_ref().filter(|m| !m.is_empty()) {
            Some(m) => config.other.insert("comment".into(), serde_json::json!(m)),
            None => config.other.remove("comment"),
        };
        if let Some(ch) = &opts.changes {
            config.config = Some(apply_config_changes(config.config.take(), ch));
        }
        let mut history = serde_json::json!({
            "created": now,
            "created_by": shell_words(&c.command()),
        });
        if let Some(m) = opts.message.as_ref().filter(|m| !m.is_empty()) {
            history["comment"] = serde_json::json!(m);
        }
        if let Some(a) = &opts.author {
            history["author"] = serde_json::json!(a);
        }
        let manifest_type = if image.record.manifest_media_type == manifest::DOCKER_MANIFEST {
            manifest::DOCKER_MANIFEST
        } else {
            manifest::OCI_MANIFEST
        };
        let mut layers = image.manifest.layers.clone();
        if empty {
            history["empty_layer"] = serde_json::json!(true);
        } else {
            let mut layer = layer;
            if manifest_type == manifest::DOCKER_MANIFEST {
                layer.media_type = manifest::DOCKER_LAYER.to_string();
            }
            config.rootfs.diff_ids.push(layer.digest.clone());
            layers.push(layer);
        }
        config.history.push(history);
        let bytes = serde_json::to_vec(&config).map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(archive::add_local_image(
            &store,
            &bytes,
            &config,
            layers,
            manifest_type,
            &opts.names,
        )?)
    }
}

/// Where the runtime makes mount points in a container's root when the
/// image has none: `diff` does not list them while they are empty.
const MOUNT_POINTS: &[&str] = &[
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/hostname",
    "/proc",
    "/sys",
    "/dev",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
];

/// Drops the mount points marked `m` (a directory one only if nothing
/// else changed below it), and the directories listed as changed only
/// because they hold them.
fn hide_mount_points(changes: &mut Vec<Change>) {
    fn below(dir: &str, path: &str) -> bool {
        path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
    }
    let real: Vec<String> = changes
        .iter()
        .filter(|c| c.kind != 'm')
        .map(|c| c.path.clone())
        .collect();
    for c in changes.iter_mut().filter(|c| c.kind == 'm') {
        if real.iter().any(|r| below(&c.path, r)) {
            c.kind = 'A';
        }
    }
    let all = changes.clone();
    let holds_only_hidden = |dir: &str| {
        let mut hidden = false;
        for c in all.iter().filter(|c| below(dir, &c.path)) {
            if c.kind != 'm' {
                return false;
            }
            hidden = true;
        }
        hidden
    };
    changes.retain(|c| c.kind != 'm' && !(c.kind == 'C' && holds_only_hidden(&c.path)));
}

/// Copies a layer tar, leaving out empty regular files whose name
/// `skip` picks. Works on the raw blocks, so that everything else (PAX
/// records, xattrs, long names) goes through byte for byte.
fn without_mount_points(
    mut input: impl Read,
    mut out: impl Write,
    skip: impl Fn(&str) -> bool,
) -> io::Result<()> {
    // A directory entry (`etc/`) waits until what follows shows whether it
    // holds anything but skipped files: then it goes too (it is only in
    // the layer because they were made in it).
    let mut held: Option<(String, Vec<u8>, bool)> = None;
    fn octal(field: &[u8]) -> io::Result<u64> {
        if field.first().is_some_and(|b| b & 0x80 != 0) {
            // Base-256, for sizes beyond the octal field.
            let mut v: u64 = 0;
            for b in &field[1..] {
                v = (v << 8) | u64::from(*b);
            }
            return Ok(v);
        }
        let text: String = field
            .iter()
            .take_while(|b| **b != 0 && **b != b' ')
            .map(|b| char::from(*b))
            .collect();
        let text = text.trim();
        if text.is_empty() {
            return Ok(0);
        }
        u64::from_str_radix(text, 8).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "a tar header's size is not octal",
            )
        })
    }
    /// The `size` of PAX records, if they hold one.
    fn pax_size(data: &[u8]) -> Option<u64> {
        let text = String::from_utf8_lossy(data);
        text.lines()
            .filter_map(|l| l.split_once(' ').map(|(_, kv)| kv))
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "size")
            .and_then(|(_, v)| v.parse().ok())
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut pax: Option<u64> = None;
    let mut block = [0u8; 512];
    loop {
        match input.read_exact(&mut block) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                if let Some((_, bytes, false)) = held.take() {
                    out.write_all(&bytes)?;
                }
                out.write_all(&pending)?;
                return out.flush();
            }
            Err(e) => return Err(e),
        }
        if block.iter().all(|b| *b == 0) {
            // The end: the rest goes as it is.
            if let Some((_, bytes, false)) = held.take() {
                out.write_all(&bytes)?;
            }
            out.write_all(&pending)?;
            out.write_all(&block)?;
            io::copy(&mut input, &mut out)?;
            return out.flush();
        }
        let kind = block[156];
        let mut size = octal(&block[124..136])?;
        let padded = |n: u64| n.div_ceil(512) * 512;
        if matches!(kind, b'x' | b'g' | b'L' | b'K') {
            // An extension for the next entry: kept with it.
            if size > 1 << 20 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a tar extension header is too large",
                ));
            }
            let mut data = vec![0u8; usize::try_from(padded(size)).unwrap_or(0)];
            input.read_exact(&mut data)?;
            if kind == b'x' {
                let n = usize::try_from(size).unwrap_or(0).min(data.len());
                pax = pax_size(&data[..n]).or(pax);
            }
            pending.extend_from_slice(&block);
            pending.extend_from_slice(&data);
            continue;
        }
        if let Some(n) = pax.take() {
            size = n;
        }
        let name_of = |f: &[u8]| -> String {
            String::from_utf8_lossy(f.split(|b| *b == 0).next().unwrap_or(&[])).into_owned()
        };
        let name = name_of(&block[..100]);
        let prefix = name_of(&block[345..500]);
        let simple = pending.is_empty() && prefix.is_empty() && size == 0;
        let name = name.trim_start_matches("./").to_string();
        let drop = simple && matches!(kind, b'0' | 0) && skip(&name);
        if drop {
            if let Some(h) = held.as_mut().filter(|h| name.starts_with(&h.0)) {
                h.2 = true;
            }
            pending.clear();
            continue;
        }
        if let Some((dir, bytes, dropped)) = held.take()
            && (name.starts_with(&dir) || !dropped)
        {
            out.write_all(&bytes)?;
        }
        if simple && kind == b'5' && name == "etc/" {
            held = Some((name, block.to_vec(), false));
            continue;
        }
        out.write_all(&pending)?;
        out.write_all(&block)?;
        let n = io::copy(&mut (&mut input).take(padded(size)), &mut out)?;
        if n != padded(size) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the tar is truncated",
            ));
        }
        pending.clear();
    }
}

/// The command as one line, words with spaces quoted.
fn shell_words(cmd: &[String]) -> String {
    cmd.iter()
        .map(|w| {
            if w.is_empty() || w.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
                format!("{w:?}")
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `comps` is in the image: the layers (top first, in overlay
/// form) are searched until one has it, deletes it (a whiteout device) or
/// hides what is below it (an opaque directory above it).
fn in_lowers(lowers: &[PathBuf], comps: &[String]) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    for layer in lowers {
        let mut p = layer.clone();
        let mut hidden = false;
        for (i, c) in comps.iter().enumerate() {
            p.push(c);
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                break;
            };
            if md.file_type().is_char_device() && md.rdev() == 0 {
                return false;
            }
            if i + 1 == comps.len() {
                return true;
            }
            if !md.is_dir() {
                break;
            }
            let mut v = [0u8; 1];
            if rustix::fs::lgetxattr(&p, "trusted.overlay.opaque", &mut v[..]).is_ok_and(|n| n == 1)
                && v[0] == b'y'
            {
                hidden = true;
            }
        }
        if hidden {
            return false;
        }
    }
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn changes_merge_env_and_replace_cmd() {
        let base = serde_json::json!({"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"]});
        let ch = serde_json::json!({"Env": ["A=2", "B=3"], "Cmd": ["cat", "/x"]});
        let out = apply_config_changes(Some(base), &ch);
        assert_eq!(out["Env"], serde_json::json!(["PATH=/bin", "A=2", "B=3"]));
        assert_eq!(out["Cmd"], serde_json::json!(["cat", "/x"]));
    }

    #[test]
    fn mount_points_hidden() {
        let ch = |kind, path: &str| Change {
            kind,
            path: path.into(),
        };
        let mut v = vec![
            ch('C', "/etc"),
            ch('m', "/etc/hosts"),
            ch('C', "/tmp"),
            ch('A', "/tmp/x"),
            ch('m', "/dev"),
            ch('A', "/dev/mine"),
        ];
        hide_mount_points(&mut v);
        let got: Vec<String> = v.iter().map(|c| format!("{} {}", c.kind, c.path)).collect();
        assert_eq!(got, ["C /tmp", "A /tmp/x", "A /dev", "A /dev/mine"]);
    }

    #[test]
    fn mount_point_files_left_out_of_a_layer() {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8], kind: tar::EntryType| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, data).unwrap();
        };
        add("etc/", b"", tar::EntryType::Directory);
        add("etc/hosts", b"", tar::EntryType::Regular);
        add("etc/keep", b"kept\n", tar::EntryType::Regular);
        add(
            &format!("etc/{}", "l".repeat(150)),
            b"long\n",
            tar::EntryType::Regular,
        );
        add("etc/resolv.conf", b"not empty\n", tar::EntryType::Regular);
        let input = b.into_inner().unwrap();
        // Only mount points in etc/: etc/ goes too; tmp/ stays.
        let mut b2 = tar::Builder::new(Vec::new());
        for (name, kind) in [
            ("etc/", tar::EntryType::Directory),
            ("etc/hosts", tar::EntryType::Regular),
            ("tmp/", tar::EntryType::Directory),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(kind);
            h.set_size(0);
            h.set_mode(0o755);
            b2.append_data(&mut h, name, &b""[..]).unwrap();
        }
        let mut out2 = Vec::new();
        without_mount_points(&b2.into_inner().unwrap()[..], &mut out2, |n| {
            n == "etc/hosts"
        })
        .unwrap();
        let mut a2 = tar::Archive::new(&out2[..]);
        let names2: Vec<String> = a2
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names2, vec!["tmp/".to_string()]);
        let mut out = Vec::new();
        without_mount_points(&input[..], &mut out, |n| {
            n == "etc/hosts" || n == "etc/resolv.conf"
        })
        .unwrap();
        let mut a = tar::Archive::new(&out[..]);
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec![
                "etc/".to_string(),
                "etc/keep".into(),
                format!("etc/{}", "l".repeat(150)),
                "etc/resolv.conf".into()
            ]
        );
    }

    #[test]
    fn shell_words_quotes() {
        let v = vec!["sh".to_string(), "-c".into(), "echo hi".into()];
        assert_eq!(shell_words(&v), "sh -c \"echo hi\"");
    }
}
