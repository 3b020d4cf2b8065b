//! Reading and preparing a container's root filesystem from the host,
//! always resolved inside it: an image's symlinks (`/etc/passwd ->
//! /host/secret`, `WORKDIR` through a link to `/`) resolve against the
//! container's root, never the host's.

use crate::error::{Error, Result};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

fn open_root(rootfs: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(format!("open {}", rootfs.display()), e.into()))
}

fn open_in(root: &OwnedFd, path: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    rustix::fs::openat2(
        root,
        rel,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

/// A small file of the container (`/etc/passwd`), if it is there.
pub fn read_file(rootfs: &Path, path: &str) -> Result<Option<String>> {
    let root = open_root(rootfs)?;
    match open_in(&root, path, OFlags::RDONLY) {
        Ok(fd) => {
            let mut text = String::new();
            std::fs::File::from(fd)
                .take(16 << 20)
                .read_to_string(&mut text)
                .map_err(|e| Error::io(format!("read {path} in the container"), e))?;
            Ok(Some(text))
        }
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => Ok(None),
        Err(e) => Err(Error::io(format!("open {path} in the container"), e.into())),
    }
}

/// Makes the directory `path` (and its parents) in the container, as
/// Docker does for `WORKDIR` and mount points.
pub fn make_dirs(rootfs: &Path, path: &str) -> Result<()> {
    let root = open_root(rootfs)?;
    let mut prefix = String::new();
    for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if comp == ".." {
            return Err(Error::Invalid(format!("{path}: '..' is not allowed here")));
        }
        let parent = if prefix.is_empty() {
            "/".to_string()
        } else {
            prefix.clone()
        };
        prefix.push('/');
        prefix.push_str(comp);
        match open_in(&root, &prefix, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(_) => continue,
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => {
                return Err(Error::io(format!("{prefix} in the container"), e.into()));
            }
        }
        let dir = open_in(&root, &parent, OFlags::PATH | OFlags::DIRECTORY)
            .map_err(|e| Error::io(format!("{parent} in the container"), e.into()))?;
        match rustix::fs::mkdirat(&dir, comp, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => {
                return Err(Error::io(
                    format!("create {prefix} in the container"),
                    e.into(),
                ));
            }
        }
    }
    Ok(())
}

/// Makes the empty file `path` (and its parent directories) in the
/// container, unless something is there: the mount point of a file bind
/// mount.
pub fn make_file(rootfs: &Path, path: &str) -> Result<()> {
    let (parent, name) = path
        .trim_end_matches('/')
        .rsplit_once('/')
        .unwrap_or(("", path));
    if name.is_empty() || name == "." || name == ".." {
        return Err(Error::Invalid(format!("{path}: not a file name")));
    }
    make_dirs(rootfs, parent)?;
    let root = open_root(rootfs)?;
    let dir = open_in(
        &root,
        if parent.is_empty() { "/" } else { parent },
        OFlags::PATH | OFlags::DIRECTORY,
    )
    .map_err(|e| Error::io(format!("{parent} in the container"), e.into()))?;
    match rustix::fs::openat(
        &dir,
        name,
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    ) {
        Ok(_) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(Error::io(
            format!("create {path} in the container"),
            e.into(),
        )),
    }
}

/// The user a process runs as, resolved as Docker resolves `USER`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

/// Resolves `spec` (`name`, `uid`, `name:group`, `uid:gid`, empty for
/// root) through the container's `/etc/passwd` and `/etc/group`.
pub fn resolve_user(rootfs: &Path, spec: &str, group_add: &[String]) -> Result<User> {
    let passwd = read_file(rootfs, "/etc/passwd")?.unwrap_or_default();
    let groups = read_file(rootfs, "/etc/group")?.unwrap_or_default();
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7)
        .collect();
    let by_name = entries.iter().find(|f| f[0] == user_part);
    let numeric = user_part.parse::<u32>().ok();
    let entry = by_name.or_else(|| {
        numeric.and_then(|n| entries.iter().find(|f| f[2].parse::<u32>().ok() == Some(n)))
    });
    let (uid, mut gid, name, home) = match (entry, numeric) {
        (Some(f), _) => (
            f[2].parse::<u32>().map_err(|_| {
                Error::Invalid(format!("/etc/passwd in the image: bad uid for {}", f[0]))
            })?,
            f[3].parse::<u32>().unwrap_or(0),
            f[0].to_string(),
            f[5].to_string(),
        ),
        (None, Some(n)) => (n, 0, String::new(), "/".to_string()),
        (None, None) => {
            return Err(Error::Invalid(format!(
                "unable to find user {user_part}: no matching entries in passwd file"
            )));
        }
    };
    let group_entries: Vec<Vec<&str>> = groups
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    let find_group = |g: &str| -> Result<u32> {
        if let Some(f) = group_entries.iter().find(|f| f[0] == g) {
            return f[2]
                .parse()
                .map_err(|_| Error::Invalid(format!("/etc/group in the image: bad gid for {g}")));
        }
        g.parse().map_err(|_| {
            Error::Invalid(format!(
                "unable to find group {g}: no matching entries in group file"
            ))
        })
    };
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        gid = find_group(g)?;
    }
    let mut additional: Vec<u32> = Vec::new();
    if !name.is_empty() && group_part.is_none() {
        for f in &group_entries {
            if f.len() >= 4
                && f[3].split(',').any(|m| m == name)
                && let Ok(g) = f[2].parse::<u32>()
                && g != gid
                && !additional.contains(&g)
            {
                additional.push(g);
            }
        }
    }
    for g in group_add {
        let g = find_group(g)?;
        if !additional.contains(&g) {
            additional.push(g);
        }
    }
    Ok(User {
        uid,
        gid,
        additional_gids: additional,
        home: if home.is_empty() { "/".into() } else { home },
    })
}
