//! Volumes, as Docker's `local` driver keeps them: a record in the state
//! database and a directory `<root>/volumes/<name>/_data` that containers
//! bind-mount. A volume is made on first use (`-v NAME:/path`), or
//! anonymous (`-v /path`, an image's `VOLUME`) with a random name.
//!
//! The first time a volume is mounted, if it is empty, what the image has
//! at the mount path is copied into it ("copy-up"), resolved inside the
//! container's root and never following a symlink out of it.
//!
//! Locking: a file lock per volume (`<runroot>/locks/volume-<name>.lock`)
//! is held while a volume is made, copied into, or removed, and by
//! `create` until the container's record (which marks the volume in use)
//! is written. Order: container lock, then volume locks.

use crate::error::{IoContext, Result};
use crate::{Container, Engine, MountKind, MountSpec};
use rusqlite::{Connection, OptionalExtension, params};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The label Docker (23+) puts on anonymous volumes.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT NOT NULL UNIQUE,
    driver TEXT NOT NULL DEFAULT 'local',
    mountpoint TEXT NOT NULL,
    created TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    anonymous INTEGER NOT NULL DEFAULT 0,
    initialized INTEGER NOT NULL DEFAULT 0
);
";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("no such volume: {0}")]
    NotFound(String),
    #[error(
        "remove {name}: volume is in use by container {container} ({id}); remove the container first"
    )]
    InUse {
        name: String,
        container: String,
        id: String,
    },
    #[error(
        "{0:?} includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed"
    )]
    InvalidName(String),
    #[error("invalid mount path {0:?}: a volume's mount path must be absolute")]
    RelativeTarget(String),
    #[error("volume driver {0:?}: only \"local\" is available")]
    Driver(String),
    #[error("copy {path} of the image into volume {name}: {source}")]
    CopyUp {
        name: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A volume as the database records it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    pub driver: String,
    pub mountpoint: PathBuf,
    pub created: String,
    pub labels: BTreeMap<String, String>,
    pub anonymous: bool,
    /// It was mounted once: the image's content is not copied into it
    /// again, even if it is empty (as podman; Docker re-checks emptiness).
    pub initialized: bool,
}

const COLUMNS: &str = "name, driver, mountpoint, created, labels, anonymous, initialized";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Volume> {
    let labels: String = r.get(4)?;
    let mountpoint: String = r.get(2)?;
    Ok(Volume {
        name: r.get(0)?,
        driver: r.get(1)?,
        mountpoint: PathBuf::from(mountpoint),
        created: r.get(3)?,
        // A damaged labels column should not hide the volume.
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        anonymous: r.get::<_, i64>(5)? != 0,
        initialized: r.get::<_, i64>(6)? != 0,
    })
}

fn get(conn: &Connection, name: &str) -> Result<Option<Volume>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM volumes WHERE name = ?1"),
        [name],
        row,
    )
    .optional()
    .map_err(crate::Error::sql)
}

/// Docker's rule for local volume names (two characters at least).
pub fn valid_name(name: &str) -> bool {
    name.len() >= 2 && crate::valid_name(name)
}

/// `/a/./b/` → `/a/b`: mount targets compare as Docker cleans them.
fn clean_path(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// Held while a volume is made, filled or removed.
pub struct VolumeLock {
    _file: fs::File,
}

impl Engine {
    pub fn volumes_dir(&self) -> PathBuf {
        self.root.join("volumes")
    }

    /// Where a volume's data lives (whether or not it exists).
    pub fn volume_mountpoint(&self, name: &str) -> PathBuf {
        self.volumes_dir().join(name).join("_data")
    }

    pub fn volume_lock(&self, name: &str) -> Result<VolumeLock> {
        // The name is a path component of the lock and the data: checked
        // before either is touched.
        if !valid_name(name) {
            return Err(VolumeError::InvalidName(name.to_string()).into());
        }
        Ok(VolumeLock {
            _file: self.run_lock(&format!("volume-{name}.lock"))?,
        })
    }

    /// `volume create`: a new volume, or the one of that name (Docker
    /// returns an existing volume of the same name unchanged).
    pub fn volume_create(
        &mut self,
        name: Option<&str>,
        driver: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Volume> {
        if let Some(d) = driver.filter(|d| *d != "local") {
            return Err(VolumeError::Driver(d.to_string()).into());
        }
        let name = match name {
            Some(n) => n.to_string(),
            None => crate::random_id()?,
        };
        let _lock = self.volume_lock(&name)?;
        self.ensure_volume(&name, false, labels)
    }

    /// The volume `name`, made if it is not there. The caller holds its lock.
    fn ensure_volume(
        &self,
        name: &str,
        anonymous: bool,
        mut labels: BTreeMap<String, String>,
    ) -> Result<Volume> {
        if !valid_name(name) {
            return Err(VolumeError::InvalidName(name.to_string()).into());
        }
        if let Some(v) = get(self.db.conn(), name)? {
            return Ok(v);
        }
        if anonymous {
            labels.insert(ANONYMOUS_LABEL.into(), String::new());
        }
        let v = Volume {
            name: name.to_string(),
            driver: "local".into(),
            mountpoint: self.volume_mountpoint(name),
            created: crate::now(),
            labels,
            anonymous,
            initialized: false,
        };
        let dir = self.volumes_dir().join(name);
        // A directory without a record is what a crashed `volume rm` left:
        // its data is not this new volume's.
        if fs::symlink_metadata(&dir).is_ok() {
            fs::remove_dir_all(&dir).ctx(|| format!("remove stale {}", dir.display()))?;
        }
        self.make_volume_dir(&dir)?;
        let labels_json =
            serde_json::to_string(&v.labels).map_err(|e| crate::Error::Corrupt(e.to_string()))?;
        // The record last: a volume that is listed has its directory.
        self.db
            .conn()
            .execute(
                &format!("INSERT INTO volumes ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)"),
                params![
                    v.name,
                    v.driver,
                    v.mountpoint.to_string_lossy(),
                    v.created,
                    labels_json,
                    i64::from(anonymous),
                ],
            )
            .map_err(crate::Error::sql)?;
        Ok(v)
    }

    fn make_volume_dir(&self, dir: &Path) -> Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let top = self.volumes_dir();
        if !top.exists() {
            // Like Docker's: others may pass through, not list the volumes.
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o701)
                .create(&top)
                .ctx(|| format!("create {}", top.display()))?;
        }
        // The volume's own directory is closed to other host users: a
        // container may put setuid binaries in its data.
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .ctx(|| format!("create {}", dir.display()))?;
        let data = dir.join("_data");
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&data)
            .ctx(|| format!("create {}", data.display()))?;
        // The umask must not decide the data root's mode.
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755))
            .ctx(|| format!("chmod {}", data.display()))
    }

    /// Every volume, by name.
    pub fn volume_list(&self) -> Result<Vec<Volume>> {
        let mut stmt = self
            .db
            .conn()
            .prepare(&format!("SELECT {COLUMNS} FROM volumes ORDER BY name"))
            .map_err(crate::Error::sql)?;
        stmt.query_map([], row)
            .map_err(crate::Error::sql)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(crate::Error::sql)
    }

    pub fn volume_inspect(&self, name: &str) -> Result<Volume> {
        get(self.db.conn(), name)?.ok_or_else(|| VolumeError::NotFound(name.to_string()).into())
    }

    /// The containers (any state) that mount each volume: name → (id, name).
    pub fn volume_users(&self) -> Result<HashMap<String, Vec<(String, String)>>> {
        let mut users: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for c in self.db.all()? {
            for m in c
                .config
                .mounts
                .iter()
                .filter(|m| m.kind == MountKind::Volume)
            {
                let list = users.entry(m.source.clone()).or_default();
                if !list.iter().any(|(id, _)| *id == c.id) {
                    list.push((c.id.clone(), c.name.clone()));
                }
            }
        }
        Ok(users)
    }

    /// `volume rm`: refused while any container, running or not, uses
    /// it (with `force` too, as Docker). `force` ignores a missing volume.
    pub fn volume_remove(&mut self, name: &str, force: bool) -> Result<()> {
        if !valid_name(name) {
            return if force {
                Ok(())
            } else {
                Err(VolumeError::NotFound(name.to_string()).into())
            };
        }
        let _lock = self.volume_lock(name)?;
        if get(self.db.conn(), name)?.is_none() {
            if force {
                return Ok(());
            }
            return Err(VolumeError::NotFound(name.to_string()).into());
        }
        if let Some((id, cname)) = self
            .volume_users()?
            .remove(name)
            .and_then(|v| v.into_iter().next())
        {
            return Err(VolumeError::InUse {
                name: name.to_string(),
                container: cname,
                id: id[..12.min(id.len())].to_string(),
            }
            .into());
        }
        self.delete_volume(name)
    }

    /// Deletes record and data; the caller holds the lock and checked use.
    fn delete_volume(&self, name: &str) -> Result<()> {
        self.db
            .conn()
            .execute("DELETE FROM volumes WHERE name = ?1", [name])
            .map_err(crate::Error::sql)?;
        let dir = self.volumes_dir().join(name);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(crate::Error::io(format!("remove {}", dir.display()), e)),
        }
    }

    /// `volume prune`: removes the volumes no container uses, anonymous
    /// ones only unless `all` (Docker 23+). Their names and the bytes
    /// freed.
    pub fn volume_prune(&mut self, all: bool) -> Result<(Vec<String>, u64)> {
        let mut removed = Vec::new();
        let mut bytes = 0;
        for v in self.volume_list()? {
            if !all && !v.anonymous {
                continue;
            }
            let _lock = self.volume_lock(&v.name)?;
            // Checked under the lock: a `create` may have just taken it.
            if self.volume_users()?.contains_key(&v.name) {
                continue;
            }
            if get(self.db.conn(), &v.name)?.is_none() {
                continue;
            }
            let size = dir_size(&v.mountpoint);
            self.delete_volume(&v.name)?;
            bytes += size;
            removed.push(v.name);
        }
        // Directories without a record, left by a `volume rm` that crashed
        // between the two steps. The lock orders this after a create that
        // has made the directory but not yet the record.
        let known: std::collections::HashSet<String> =
            self.volume_list()?.into_iter().map(|v| v.name).collect();
        if let Ok(rd) = fs::read_dir(self.volumes_dir()) {
            for name in rd
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
            {
                if known.contains(&name) || !valid_name(&name) {
                    continue;
                }
                let _lock = self.volume_lock(&name)?;
                if get(self.db.conn(), &name)?.is_none() {
                    let dir = self.volumes_dir().join(&name);
                    bytes += dir_size(&dir);
                    fs::remove_dir_all(&dir).ctx(|| format!("remove {}", dir.display()))?;
                }
            }
        }
        Ok((removed, bytes))
    }

    /// At `create`: names the anonymous volumes, adds one for each image
    /// `VOLUME` no mount covers, and checks names and targets.
    pub(crate) fn plan_volumes(
        &self,
        mounts: &mut Vec<MountSpec>,
        image_volumes: &[String],
    ) -> Result<()> {
        for path in image_volumes {
            let target = clean_path(path);
            if !mounts.iter().any(|m| clean_path(&m.target) == target) {
                mounts.push(MountSpec {
                    kind: MountKind::Volume,
                    target,
                    anonymous: true,
                    ..Default::default()
                });
            }
        }
        let mut seen = std::collections::HashSet::new();
        for m in mounts.iter() {
            if !seen.insert(clean_path(&m.target)) {
                return Err(crate::Error::Invalid(format!(
                    "duplicate mount point: {}",
                    m.target
                )));
            }
        }
        for m in mounts.iter_mut().filter(|m| m.kind == MountKind::Volume) {
            if !m.target.starts_with('/') {
                return Err(VolumeError::RelativeTarget(m.target.clone()).into());
            }
            if m.source.is_empty() {
                m.source = crate::random_id()?;
                m.anonymous = true;
            } else if !valid_name(&m.source) {
                return Err(VolumeError::InvalidName(m.source.clone()).into());
            }
        }
        Ok(())
    }

    /// At `create`: makes the container's volumes that are not there
    /// yet. The locks returned are to be held until the container's
    /// record is written, so no `volume rm` removes one in between.
    pub(crate) fn ensure_volumes(&self, mounts: &[MountSpec]) -> Result<Vec<VolumeLock>> {
        let mut names: Vec<(&str, bool)> = mounts
            .iter()
            .filter(|m| m.kind == MountKind::Volume)
            .map(|m| (m.source.as_str(), m.anonymous))
            .collect();
        names.sort();
        // One lock per volume: a second flock of the same file from this
        // process would wait on the first.
        names.dedup_by(|a, b| a.0 == b.0);
        let mut locks = Vec::with_capacity(names.len());
        for (name, anonymous) in names {
            locks.push(self.volume_lock(name)?);
            self.ensure_volume(name, anonymous, BTreeMap::new())?;
        }
        Ok(locks)
    }

    /// Removes the anonymous volumes made for `c` when the container is
    /// gone (`rm -v`, `--rm`); named ones stay, and so does one another
    /// container uses meanwhile.
    pub(crate) fn remove_anonymous_volumes(&self, c: &Container) {
        for m in c
            .config
            .mounts
            .iter()
            .filter(|m| m.kind == MountKind::Volume)
        {
            if !m.anonymous {
                continue;
            }
            let Ok(_lock) = self.volume_lock(&m.source) else {
                continue;
            };
            let in_use = self
                .volume_users()
                .map(|u| {
                    u.get(&m.source)
                        .is_some_and(|l| l.iter().any(|(id, _)| *id != c.id))
                })
                .unwrap_or(true);
            if !in_use {
                let _ = self.delete_volume(&m.source);
            }
        }
    }

    /// At start, with the root filesystem mounted: the container's volume
    /// mounts pointed at their data, each volume made if it went missing
    /// and, on its first mount, filled from the image (unless `nocopy`).
    pub(crate) fn prepare_volumes(&self, rootfs: &Path, mounts: &mut [MountSpec]) -> Result<()> {
        for m in mounts.iter_mut().filter(|m| m.kind == MountKind::Volume) {
            let _lock = self.volume_lock(&m.source)?;
            let v = self.ensure_volume(&m.source, m.anonymous, BTreeMap::new())?;
            if !v.initialized {
                if !m.options.iter().any(|o| o == "nocopy")
                    && let Err(source) = copy_up(rootfs, &m.target, &v.mountpoint)
                {
                    // It was empty: a half copy would pass for data next time.
                    empty_dir(&v.mountpoint);
                    return Err(VolumeError::CopyUp {
                        name: v.name.clone(),
                        path: m.target.clone(),
                        source,
                    }
                    .into());
                }
                self.db
                    .conn()
                    .execute(
                        "UPDATE volumes SET initialized = 1 WHERE name = ?1",
                        [&v.name],
                    )
                    .map_err(crate::Error::sql)?;
            }
            m.source = v.mountpoint.to_string_lossy().into_owned();
        }
        Ok(())
    }
}

/// Removes what `dir` holds, as far as it can.
fn empty_dir(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let _ = match e.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(&p),
                _ => fs::remove_file(&p),
            };
        }
    }
}

/// Bytes a directory tree holds (not following symlinks); 0 when unreadable.
pub fn dir_size(p: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(p) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| dir_size(&e.path())).sum())
        .unwrap_or(0)
}

fn io(e: rustix::io::Errno) -> std::io::Error {
    e.into()
}

/// Copies what the image has at `target` into the empty volume `data`,
/// as Docker does on a volume's first mount: the tree with its modes,
/// owners, times, symlinks (as links), hard links, devices and fifos.
/// `target` is resolved inside `rootfs` (a link there points into the
/// container's tree, never the host's), and each entry below it is opened
/// without following links. Nothing happens if the volume is not empty or
/// the image has no directory there.
pub fn copy_up(rootfs: &Path, target: &str, data: &Path) -> std::io::Result<()> {
    let dst = rustix::fs::open(
        data,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io)?;
    if fs::read_dir(data)?.next().is_some() {
        return Ok(());
    }
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io)?;
    let rel = target.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    let src = match rustix::fs::openat2(
        &root,
        rel,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        // Nothing there, or not a directory: nothing to copy (Docker too).
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    let mut links = HashMap::new();
    copy_dir(&src, &dst, &dst, "", &mut links)?;
    // The volume's root takes the owner and mode of the image's directory.
    let st = rustix::fs::fstat(&src).map_err(io)?;
    set_owner_mode_times(&dst, &st, true)?;
    copy_xattrs(&src, &dst)
}

/// Extended attributes (file capabilities, ACLs, `user.*`) of `src` onto
/// `dst`; after the chown, which drops `security.capability`. Those the
/// volume's filesystem does not take are left out, as Docker does.
fn copy_xattrs(src: impl AsFd, dst: impl AsFd) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let size = match rustix::fs::flistxattr_query(&src) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    if size == 0 {
        return Ok(());
    }
    let mut names = vec![0u8; size];
    let n = rustix::fs::flistxattr(&src, &mut names[..]).map_err(io)?;
    for name in names[..n.min(size)].split(|b| *b == 0) {
        // Overlay's own attributes describe layers, not the file.
        if name.is_empty() || name.starts_with(b"trusted.overlay.") {
            continue;
        }
        let name = std::ffi::OsStr::from_bytes(name);
        let len = rustix::fs::fgetxattr_query(&src, name).map_err(io)?;
        let mut value = vec![0u8; len];
        let len = rustix::fs::fgetxattr(&src, name, &mut value[..]).map_err(io)?;
        match rustix::fs::fsetxattr(
            &dst,
            name,
            &value[..len.min(value.len())],
            rustix::fs::XattrFlags::empty(),
        ) {
            Ok(()) | Err(rustix::io::Errno::NOTSUP | rustix::io::Errno::PERM) => {}
            Err(e) => return Err(io(e)),
        }
    }
    Ok(())
}

fn set_owner_mode_times(fd: &OwnedFd, st: &rustix::fs::Stat, times: bool) -> std::io::Result<()> {
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
    )
    .map_err(io)?;
    // After the chown, which clears setuid bits.
    rustix::fs::fchmod(fd, Mode::from_raw_mode(st.st_mode & 0o7777)).map_err(io)?;
    if times {
        rustix::fs::futimens(fd, &timestamps(st)).map_err(io)?;
    }
    Ok(())
}

fn timestamps(st: &rustix::fs::Stat) -> rustix::fs::Timestamps {
    let ts = |sec: i64, nsec: u64| rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: i64::try_from(nsec).unwrap_or(0),
    };
    #[allow(clippy::useless_conversion)]
    rustix::fs::Timestamps {
        last_access: ts(i64::from(st.st_atime), u64::from(st.st_atime_nsec)),
        last_modification: ts(i64::from(st.st_mtime), u64::from(st.st_mtime_nsec)),
    }
}

/// Copies the entries of `src` into `dst`; `rel` is `dst`'s path below
/// the volume root `top` (for hard links), `links` maps a source inode
/// to the first copy's path.
fn copy_dir(
    src: &OwnedFd,
    dst: &OwnedFd,
    top: &OwnedFd,
    rel: &str,
    links: &mut HashMap<(u64, u64), String>,
) -> std::io::Result<()> {
    let mut dir = rustix::fs::Dir::read_from(src).map_err(io)?;
    while let Some(entry) = dir.read() {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_owned();
        let bytes = name.as_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        let st = rustix::fs::statat(src, &name, AtFlags::SYMLINK_NOFOLLOW).map_err(io)?;
        let path = format!(
            "{rel}{}{}",
            if rel.is_empty() { "" } else { "/" },
            String::from_utf8_lossy(bytes)
        );
        let ftype = rustix::fs::FileType::from_raw_mode(st.st_mode);
        let perm = Mode::from_raw_mode(st.st_mode & 0o7777);
        match ftype {
            rustix::fs::FileType::Directory => {
                rustix::fs::mkdirat(dst, &name, Mode::from_raw_mode(0o700)).map_err(io)?;
                let s = rustix::fs::openat(
                    src,
                    &name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io)?;
                let d = rustix::fs::openat(
                    dst,
                    &name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io)?;
                copy_dir(&s, &d, top, &path, links)?;
                set_owner_mode_times(&d, &st, true)?;
                copy_xattrs(&s, &d)?;
            }
            rustix::fs::FileType::RegularFile => {
                #[allow(clippy::useless_conversion)]
                let key = (u64::from(st.st_dev), u64::from(st.st_ino));
                #[allow(clippy::useless_conversion)]
                let nlink = u64::from(st.st_nlink);
                if nlink > 1
                    && let Some(first) = links.get(&key)
                {
                    link_beneath(top, first, dst, &name)?;
                    continue;
                }
                let s = rustix::fs::openat(
                    src,
                    &name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io)?;
                let d = rustix::fs::openat(
                    dst,
                    &name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(io)?;
                let mut sf = fs::File::from(s);
                let mut df = fs::File::from(d);
                std::io::copy(&mut sf, &mut df)?;
                let d = OwnedFd::from(df);
                set_owner_mode_times(&d, &st, true)?;
                copy_xattrs(&sf, &d)?;
                if nlink > 1 {
                    links.insert(key, path);
                }
            }
            rustix::fs::FileType::Symlink => {
                let target = rustix::fs::readlinkat(src, &name, Vec::new()).map_err(io)?;
                rustix::fs::symlinkat(target.as_c_str(), dst, &name).map_err(io)?;
                rustix::fs::chownat(
                    dst,
                    &name,
                    Some(rustix::fs::Uid::from_raw(st.st_uid)),
                    Some(rustix::fs::Gid::from_raw(st.st_gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(io)?;
                rustix::fs::utimensat(dst, &name, &timestamps(&st), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(io)?;
            }
            rustix::fs::FileType::Fifo
            | rustix::fs::FileType::CharacterDevice
            | rustix::fs::FileType::BlockDevice => {
                #[allow(clippy::useless_conversion)]
                let dev = u64::from(st.st_rdev);
                rustix::fs::mknodat(dst, &name, ftype, perm, dev).map_err(io)?;
                rustix::fs::chownat(
                    dst,
                    &name,
                    Some(rustix::fs::Uid::from_raw(st.st_uid)),
                    Some(rustix::fs::Gid::from_raw(st.st_gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(io)?;
                rustix::fs::chmodat(dst, &name, perm, AtFlags::empty()).map_err(io)?;
            }
            // Sockets belong to a process that is not there.
            _ => {}
        }
    }
    Ok(())
}

/// A hard link `dst/name` to `first` (a path below `top` that this copy
/// made), resolved with no symlinks and without leaving `top`.
fn link_beneath(
    top: &OwnedFd,
    first: &str,
    dst: &OwnedFd,
    name: &std::ffi::CStr,
) -> std::io::Result<()> {
    let (parent, last) = first.rsplit_once('/').unwrap_or(("", first));
    let parent_fd: OwnedFd;
    let parent_ref: BorrowedFd<'_> = if parent.is_empty() {
        top.as_fd()
    } else {
        parent_fd = rustix::fs::openat2(
            top,
            parent,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(io)?;
        parent_fd.as_fd()
    };
    rustix::fs::linkat(parent_ref, last, dst, name, AtFlags::empty()).map_err(io)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("data"));
        assert!(valid_name("my-vol_1.x"));
        assert!(!valid_name("a"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(""));
    }

    fn tree() -> (tempfile::TempDir, PathBuf) {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("rootfs");
        fs::create_dir_all(root.join("d/sub")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/only-in-the-image"), "x").unwrap();
        fs::write(root.join("d/file"), "file\n").unwrap();
        fs::set_permissions(root.join("d/file"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::hard_link(root.join("d/file"), root.join("d/sub/hard")).unwrap();
        fs::write(root.join("d/sub/x"), "x\n").unwrap();
        symlink("/etc/passwd", root.join("d/link")).unwrap();
        symlink("/etc", root.join("l")).unwrap();
        symlink("../../../../../etc", root.join("l2")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("d/fifo"),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        (t, root)
    }

    fn volume(t: &tempfile::TempDir, name: &str) -> PathBuf {
        let d = t.path().join(name);
        fs::create_dir(&d).unwrap();
        d
    }

    #[test]
    fn copy_up_keeps_links_modes_and_hard_links() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
        let (t, root) = tree();
        let xattr = rustix::fs::setxattr(
            root.join("d/file"),
            "user.hako",
            b"v",
            rustix::fs::XattrFlags::empty(),
        )
        .is_ok();
        let v = volume(&t, "v");
        copy_up(&root, "/d", &v).unwrap();
        assert_eq!(fs::read_to_string(v.join("file")).unwrap(), "file\n");
        let m = fs::metadata(v.join("file")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o640);
        assert_eq!(m.ino(), fs::metadata(v.join("sub/hard")).unwrap().ino());
        assert_eq!(
            fs::read_link(v.join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert!(
            fs::symlink_metadata(v.join("fifo"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        if xattr {
            let mut buf = [0u8; 8];
            let n = rustix::fs::getxattr(v.join("file"), "user.hako", &mut buf[..]).unwrap();
            assert_eq!(&buf[..n], b"v");
        }
        // Not empty any more: a second copy does nothing.
        fs::remove_file(v.join("file")).unwrap();
        copy_up(&root, "/d", &v).unwrap();
        assert!(!v.join("file").exists());
    }

    #[test]
    fn copy_up_resolves_inside_the_root() {
        let (t, root) = tree();
        for (n, path) in [("a", "/l"), ("b", "/l2"), ("c", "/../../l")] {
            let v = volume(&t, n);
            copy_up(&root, path, &v).unwrap();
            let names: Vec<String> = fs::read_dir(&v)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(names, ["only-in-the-image"], "{path}");
        }
        let v = volume(&t, "none");
        copy_up(&root, "/missing", &v).unwrap();
        copy_up(&root, "/d/file", &v).unwrap();
        assert_eq!(fs::read_dir(&v).unwrap().count(), 0);
    }

    #[test]
    fn clean() {
        assert_eq!(clean_path("/data/"), "/data");
        assert_eq!(clean_path("//a/./b"), "/a/b");
        assert_eq!(clean_path("/"), "/");
    }
}
