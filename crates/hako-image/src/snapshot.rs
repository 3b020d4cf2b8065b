//! Snapshots: a container's root filesystem made from an image's layers.
//! With overlayfs the layers stay shared (lower dirs) and each snapshot
//! has its own upper and work dir; where overlayfs cannot be used the
//! layers are copied into a private tree instead.
//!
//! `snapshots/<name>/` holds `snapshot.json`, `upper/` and `work/` (or
//! `fs/` for a copy) and `merged/`, the default mount point.

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::store::{Store, now_rfc3339, temp_name, write_atomic};
use crate::unpack;
use nix::mount::{MntFlags, MsFlags};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Snapshotter {
    Overlay,
    Copy,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub snapshotter: Snapshotter,
    /// Chain ids, bottom layer first.
    pub layers: Vec<Digest>,
    /// The image it was made from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Digest>,
    pub created: String,
}

#[derive(Clone, Debug)]
pub struct Snapshot {
    pub name: String,
    pub dir: PathBuf,
    pub record: SnapshotRecord,
}

/// Overlayfs takes its options as one page; beyond that many lower dirs
/// the option string would not fit.
const MAX_OPTIONS: usize = 4000;

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn mount_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    volatile: bool,
) -> Result<()> {
    let lowerdir = lowers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let mut options = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    // The exported diff reads the upper dir as plain whiteouts and opaque
    // dirs: redirects and metadata-only copies (a host's defaults may turn
    // them on) would be exported wrong. Pinned where the kernel knows them.
    for feature in ["redirect_dir", "metacopy"] {
        if Path::new("/sys/module/overlay/parameters")
            .join(feature)
            .exists()
        {
            options.push_str(&format!(",{feature}=off"));
        }
    }
    if volatile {
        // A volatile overlay never syncs its upper dir (not on fsync, not
        // at unmount, which otherwise costs a millisecond or more). After
        // a crash the kernel refuses to mount it again until its marker
        // goes: the caller's data there is disposable by its own choice.
        let _ = fs::remove_dir_all(work.join("work").join("incompat"));
        let _ = fs::remove_dir_all(work.join("incompat"));
        let mut with = options.clone();
        with.push_str(",volatile");
        let done = nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(with.as_str()),
        );
        // A kernel without the option (before 5.10) says EINVAL: mount
        // it the durable way.
        if done.is_ok() {
            return Ok(());
        }
    }
    if options.len() > MAX_OPTIONS {
        return Err(Error::Invalid(format!(
            "{} layers are more than an overlay mount can name ({} bytes of options, at most {MAX_OPTIONS}); squash the image",
            lowers.len(),
            options.len()
        )));
    }
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| Error::Io {
        what: format!("mount overlay on {}", target.display()),
        source: e.into(),
    })
}

/// Unmounts `target` if something is mounted there.
pub fn unmount(target: &Path) -> Result<()> {
    match nix::mount::umount2(target, MntFlags::empty()) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
        // Busy: someone still has it open; detach so it goes when they do.
        Err(nix::errno::Errno::EBUSY) => {
            nix::mount::umount2(target, MntFlags::MNT_DETACH).map_err(|e| Error::Io {
                what: format!("unmount {}", target.display()),
                source: e.into(),
            })
        }
        Err(e) => Err(Error::Io {
            what: format!("unmount {}", target.display()),
            source: e.into(),
        }),
    }
}

/// Whether overlayfs works for upper dirs under `dir` (not on every
/// filesystem: an overlay cannot have its upper dir on another overlay,
/// for one). Probed once per process.
pub fn detect(dir: &Path) -> Snapshotter {
    static FOUND: OnceLock<Snapshotter> = OnceLock::new();
    *FOUND.get_or_init(|| {
        let probe = dir.join(temp_name("probe"));
        let ok = (|| -> Result<()> {
            for d in ["lower", "upper", "work", "merged"] {
                fs::create_dir_all(probe.join(d)).ctx(|| "probe".into())?;
            }
            mount_overlay(
                &[probe.join("lower")],
                &probe.join("upper"),
                &probe.join("work"),
                &probe.join("merged"),
                false,
            )?;
            unmount(&probe.join("merged"))
        })()
        .is_ok();
        let _ = fs::remove_dir_all(&probe);
        if ok {
            Snapshotter::Overlay
        } else {
            Snapshotter::Copy
        }
    })
}

impl Store {
    fn snapshot_dir(&self, name: &str) -> Result<PathBuf> {
        if !valid_name(name) {
            return Err(Error::Invalid(format!(
                "snapshot name {name:?}: use letters, digits, '_', '-' and '.', not starting with '.'"
            )));
        }
        Ok(self.snapshots_dir().join(name))
    }

    /// Makes a snapshot of `layers` (chain ids, bottom first, all in the
    /// store). With `Snapshotter::Copy` the layers are applied into a
    /// private tree now.
    pub fn create_snapshot(
        &self,
        name: &str,
        layers: &[Digest],
        image: Option<&Digest>,
        snapshotter: Snapshotter,
    ) -> Result<Snapshot> {
        self.create_snapshot_for(name, layers, image, snapshotter, true)
    }

    /// [`Store::create_snapshot`]; without `durable` its record is not
    /// synced to disk (for a snapshot that is removed with its user, and
    /// after a crash: a container run with `--rm`). Still made aside and
    /// renamed in, so no one sees half of it.
    pub fn create_snapshot_for(
        &self,
        name: &str,
        layers: &[Digest],
        image: Option<&Digest>,
        snapshotter: Snapshotter,
        durable: bool,
    ) -> Result<Snapshot> {
        let dir = self.snapshot_dir(name)?;
        if dir.exists() {
            return Err(Error::Invalid(format!("snapshot {name} already exists")));
        }
        // The layers must not be collected between this check and the
        // record that keeps them.
        let _lease = self.lease(layers)?;
        for l in layers {
            if !self.layer_dir(l).exists() {
                return Err(Error::Invalid(format!(
                    "snapshot {name}: layer {l} is not in the store; pull the image again"
                )));
            }
        }
        // Built aside and renamed in, so a crash leaves no half snapshot
        // under its name; the collector's view of layers comes from the
        // record, written last.
        let staging = self.snapshots_dir().join(temp_name(name));
        let res = (|| -> Result<()> {
            fs::create_dir_all(staging.join("merged")).ctx(|| format!("create snapshot {name}"))?;
            match snapshotter {
                Snapshotter::Overlay => {
                    for d in ["upper", "work"] {
                        fs::create_dir(staging.join(d))
                            .ctx(|| format!("create snapshot {name}"))?;
                    }
                }
                Snapshotter::Copy => {
                    let fs_dir = staging.join("fs");
                    fs::create_dir(&fs_dir).ctx(|| format!("create snapshot {name}"))?;
                    for l in layers {
                        unpack::apply_copy(&self.layer_dir(l).join("diff"), &fs_dir)
                            .map_err(|e| Error::Invalid(format!("snapshot {name}: {e}")))?;
                    }
                }
            }
            let record = SnapshotRecord {
                snapshotter,
                layers: layers.to_vec(),
                image: image.cloned(),
                created: now_rfc3339(),
            };
            let bytes =
                serde_json::to_vec_pretty(&record).map_err(|e| Error::Invalid(e.to_string()))?;
            if durable {
                write_atomic(&staging.join("snapshot.json"), &bytes)?;
            } else {
                fs::write(staging.join("snapshot.json"), &bytes)
                    .ctx(|| format!("create snapshot {name}"))?;
            }
            fs::rename(&staging, &dir).ctx(|| format!("create snapshot {name}"))
        })();
        if let Err(e) = res {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        self.snapshot(name)
    }

    pub fn snapshot(&self, name: &str) -> Result<Snapshot> {
        let dir = self.snapshot_dir(name)?;
        let bytes = fs::read(dir.join("snapshot.json")).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Invalid(format!("no such snapshot: {name}")),
            _ => Error::Io {
                what: format!("read snapshot {name}"),
                source: e,
            },
        })?;
        let record = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            root: self.root().display().to_string(),
            what: format!("snapshot {name}: {e}"),
        })?;
        Ok(Snapshot {
            name: name.to_string(),
            dir,
            record,
        })
    }

    /// Every snapshot's name.
    pub fn snapshots(&self) -> Result<Vec<String>> {
        let dir = self.snapshots_dir();
        let mut out: Vec<String> = fs::read_dir(&dir)
            .ctx(|| format!("read {}", dir.display()))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| valid_name(n))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Unmounts (at its own mount point) and removes a snapshot; a
    /// missing one is not an error, so that cleanup can be repeated.
    pub fn remove_snapshot(&self, name: &str) -> Result<()> {
        if let Some(trash) = self.retire_snapshot(name)? {
            fs::remove_dir_all(&trash).ctx(|| format!("remove snapshot {name}"))?;
        }
        Ok(())
    }

    /// Unmounts a snapshot and moves it out of its name, to a trash
    /// directory the caller removes (or [`Store::collect_garbage`] does,
    /// should the caller die first); `None` when there is no such
    /// snapshot.
    pub fn retire_snapshot(&self, name: &str) -> Result<Option<PathBuf>> {
        let dir = self.snapshot_dir(name)?;
        if !dir.exists() {
            return Ok(None);
        }
        unmount(&dir.join("merged"))?;
        let trash = self
            .snapshots_dir()
            .join(format!(".trash{}", temp_name(name)));
        fs::rename(&dir, &trash).ctx(|| format!("remove snapshot {name}"))?;
        Ok(Some(trash))
    }
}

impl Snapshot {
    /// The default mount point, `snapshots/<name>/merged`.
    pub fn merged_dir(&self) -> PathBuf {
        self.dir.join("merged")
    }

    /// Where the snapshot's own changes live.
    pub fn upper_dir(&self) -> PathBuf {
        match self.record.snapshotter {
            Snapshotter::Overlay => self.dir.join("upper"),
            Snapshotter::Copy => self.dir.join("fs"),
        }
    }

    /// Mounts the snapshot's tree on `target` (an overlay, or a bind
    /// mount of the private copy).
    pub fn mount(&self, store: &Store, target: &Path) -> Result<()> {
        self.mount_with(store, target, false)
    }

    /// [`Snapshot::mount`]; with `volatile`, an overlay whose changes are
    /// not meant to outlive a crash (a container removed when it exits):
    /// writes are never synced, which makes unmounting it cheap.
    pub fn mount_with(&self, store: &Store, target: &Path, volatile: bool) -> Result<()> {
        match self.record.snapshotter {
            Snapshotter::Overlay => {
                let mut lowers: Vec<PathBuf> = self
                    .record
                    .layers
                    .iter()
                    .rev()
                    .map(|l| store.layer_dir(l).join("diff"))
                    .collect();
                if lowers.is_empty() {
                    // Overlayfs needs a lower dir; an empty image has none.
                    let empty = self.dir.join("empty");
                    fs::create_dir_all(&empty).ctx(|| format!("create {}", empty.display()))?;
                    lowers.push(empty);
                }
                mount_overlay(
                    &lowers,
                    &self.dir.join("upper"),
                    &self.dir.join("work"),
                    target,
                    volatile,
                )
            }
            Snapshotter::Copy => nix::mount::mount(
                Some(&self.dir.join("fs")),
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| Error::Io {
                what: format!(
                    "bind {} on {}",
                    self.dir.join("fs").display(),
                    target.display()
                ),
                source: e.into(),
            }),
        }
    }

    /// The snapshot's changes against its layers as an uncompressed OCI
    /// layer tar (for `commit`, `diff` and `build`). Returns the number of
    /// entries written.
    pub fn export_diff(&self, store: &Store, out: impl Write) -> Result<u64> {
        let err = |e: unpack::UnpackError| Error::Invalid(format!("snapshot {}: {e}", self.name));
        match self.record.snapshotter {
            Snapshotter::Overlay => unpack::export_diff(&self.dir.join("upper"), out).map_err(err),
            Snapshotter::Copy => {
                let base = self.dir.join(temp_name("base"));
                fs::create_dir(&base).ctx(|| format!("create {}", base.display()))?;
                let res = (|| {
                    for l in &self.record.layers {
                        unpack::apply_copy(&store.layer_dir(l).join("diff"), &base).map_err(err)?;
                    }
                    unpack::export_diff_between(&base, &self.dir.join("fs"), out).map_err(err)
                })();
                let _ = fs::remove_dir_all(&base);
                res
            }
        }
    }
}
