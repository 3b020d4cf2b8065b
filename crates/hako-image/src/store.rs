//! The content store under `--root`: verified blobs by digest, unpacked
//! layers by chain id, the image records and tags, and the garbage
//! collector.
//!
//! Layout:
//! - `blobs/sha256/<hex>`: content whose digest was checked before it
//!   became visible (written to a temp file, fsynced, renamed in).
//! - `ingest/<hex>.partial`: downloads in progress, kept for resuming.
//! - `layers/<chain hex>/{diff/,layer.json}`: a layer in overlayfs form,
//!   unpacked under `layers/.tmp-<chain hex>` and renamed in when whole.
//! - `images.json`: image records and tags, replaced atomically under
//!   `locks/images.lock`.
//! - `leases/`: one file per operation in progress naming the content it
//!   is about to reference; the collector keeps leased content alive.

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::manifest::{self, ImageConfig, Manifest, Parsed};
use crate::reference::Reference;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What the store keeps about one image, keyed by its id (the digest of
/// its config, as Docker names images).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The platform manifest the image was made from.
    pub manifest: Digest,
    pub manifest_media_type: String,
    /// The index (manifest list) it was chosen from, when pulled through one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Digest>,
    /// `name@digest` under which registries know it.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// When it entered this store (RFC 3339).
    pub added: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Db {
    #[serde(default)]
    images: BTreeMap<String, ImageRecord>,
    /// Full reference with tag (`docker.io/library/busybox:latest`) → image id hex.
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

/// An image in the store, with its manifest and config read.
#[derive(Clone, Debug)]
pub struct Image {
    pub id: Digest,
    pub record: ImageRecord,
    /// Tags that point at it, sorted.
    pub tags: Vec<Reference>,
    pub manifest: Manifest,
    pub config: ImageConfig,
}

impl Image {
    /// The chain ids of its layers, bottom first.
    pub fn chain_ids(&self) -> Vec<Digest> {
        manifest::chain_ids(&self.config.rootfs.diff_ids)
    }
}

/// What one unpacked layer records beside its `diff/`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerRecord {
    pub chain_id: Digest,
    pub diff_id: Digest,
    /// The compressed blob it was unpacked from.
    pub blob: Digest,
    /// Bytes of file content in the layer.
    pub size: u64,
    pub entries: u64,
}

/// A held lock file; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
}

/// Content an operation in progress is about to reference. The collector
/// keeps it alive while the lease's lock is held.
#[derive(Debug)]
pub struct Lease {
    path: PathBuf,
    _file: File,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// What a garbage collection removed.
#[derive(Debug, Default)]
pub struct Collected {
    pub blobs: u64,
    pub layers: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A file name no other writer in this or another process uses.
pub(crate) fn temp_name(prefix: &str) -> String {
    format!(
        ".tmp-{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes `bytes` to `path` so that readers see the old or the new file,
/// never a part, also after a crash: temp file, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(temp_name("w"));
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.ctx(|| format!("write {}", path.display()))
}

/// Now as RFC 3339 in UTC.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(i64::try_from(secs).unwrap_or(0))
}

/// Seconds since the epoch as RFC 3339 in UTC.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses the RFC 3339 times images carry (`2024-01-02T03:04:05.123Z`,
/// offsets allowed) into seconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let num = |r: &str| r.parse::<i64>().ok();
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let mut d = date.split('-');
    let (y, m, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    let (clock, offset) = match time.find(['Z', 'z', '+', '-']) {
        Some(i) => time.split_at(i),
        None => (time, ""),
    };
    let mut c = clock.split(':');
    let (hh, mm) = (num(c.next()?)?, num(c.next()?)?);
    let ss = num(c.next()?.split('.').next()?)?;
    let off = match offset.chars().next() {
        Some(sign @ ('+' | '-')) => {
            let (oh, om) = offset[1..].split_once(':')?;
            let o = num(oh)? * 3600 + num(om)? * 60;
            if sign == '+' { o } else { -o }
        }
        _ => 0,
    };
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss - off)
}

impl Store {
    /// Opens (making if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Store> {
        for d in [
            "blobs/sha256",
            "ingest",
            "layers",
            "leases",
            "locks",
            "snapshots",
        ] {
            let p = root.join(d);
            fs::create_dir_all(&p).ctx(|| format!("create {}", p.display()))?;
        }
        // Unpacked layers keep their setuid binaries and device nodes:
        // only root may reach them (a host user must not run an image's
        // setuid-root file or open its devices).
        for d in ["layers", "snapshots"] {
            let p = root.join(d);
            fs::set_permissions(&p, fs::Permissions::from_mode(0o700))
                .ctx(|| format!("restrict {} to root", p.display()))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).exists()
    }

    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        fs::read(self.blob_path(d)).ctx(|| format!("read blob {d}"))
    }

    pub fn ingest_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("ingest")
            .join(format!("{}.partial", d.hex()))
    }

    pub fn layer_dir(&self, chain_id: &Digest) -> PathBuf {
        self.root.join("layers").join(chain_id.hex())
    }

    /// Where a layer is unpacked before it is renamed into place; one
    /// name per layer, so whoever holds the layer's lock owns it.
    pub fn layer_staging_dir(&self, chain_id: &Digest) -> PathBuf {
        self.root
            .join("layers")
            .join(format!(".tmp-{}", chain_id.hex()))
    }

    pub fn layer_record(&self, chain_id: &Digest) -> Option<LayerRecord> {
        let bytes = fs::read(self.layer_dir(chain_id).join("layer.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// Takes the named lock (under `locks/`), waiting for it.
    pub fn lock(&self, name: &str, exclusive: bool) -> Result<LockGuard> {
        let path = self.root.join("locks").join(format!("{name}.lock"));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx(|| format!("open lock {}", path.display()))?;
        if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        }
        .ctx(|| format!("lock {}", path.display()))?;
        Ok(LockGuard { _file: file })
    }

    /// The lock that serialises the download and unpack of one layer.
    pub fn lock_layer(&self, chain_id: &Digest) -> Result<LockGuard> {
        self.lock(&format!("layer-{}", chain_id.hex()), true)
    }

    /// Leases `digests` (blobs and chain ids alike) for the caller's
    /// lifetime of the returned guard.
    pub fn lease(&self, digests: &[Digest]) -> Result<Lease> {
        // Shared against the collector: a lease written while it scans
        // would be missed.
        let _gc = self.lock("gc", false)?;
        let path = self.root.join("leases").join(format!(
            "{}-{}.json",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let mut file = File::create(&path).ctx(|| format!("create lease {}", path.display()))?;
        file.lock()
            .ctx(|| format!("lock lease {}", path.display()))?;
        let body = serde_json::to_vec(digests).map_err(|e| Error::Invalid(e.to_string()))?;
        file.write_all(&body)
            .ctx(|| format!("write lease {}", path.display()))?;
        Ok(Lease { path, _file: file })
    }

    /// Stores `bytes` as a blob after checking them against `expected`.
    pub fn put_blob(&self, expected: &Digest, bytes: &[u8], what: &str) -> Result<()> {
        let actual = Digest::of(bytes);
        if &actual != expected {
            return Err(Error::DigestMismatch {
                what: what.to_string(),
                expected: expected.clone(),
                actual,
            });
        }
        if self.has_blob(expected) {
            return Ok(());
        }
        write_atomic(&self.blob_path(expected), bytes)
    }

    /// Moves a verified file into the store as a blob (fsynced first).
    pub fn commit_blob_file(&self, file: &Path, digest: &Digest) -> Result<()> {
        File::open(file)
            .and_then(|f| f.sync_all())
            .ctx(|| format!("sync {}", file.display()))?;
        let dest = self.blob_path(digest);
        fs::rename(file, &dest).ctx(|| format!("move {} into the store", file.display()))?;
        Ok(())
    }

    fn db_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    fn read_db(&self) -> Result<Db> {
        match fs::read(self.db_path()) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                root: self.root.display().to_string(),
                what: format!("images.json: {e}"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Db::default()),
            Err(e) => Err(Error::Io {
                what: format!("read {}", self.db_path().display()),
                source: e,
            }),
        }
    }

    /// Changes the image records under their lock; `f`'s result is
    /// returned once the new records are durable.
    fn update_db<T>(&self, f: impl FnOnce(&mut Db) -> Result<T>) -> Result<T> {
        let _lock = self.lock("images", true)?;
        let mut db = self.read_db()?;
        let out = f(&mut db)?;
        let bytes = serde_json::to_vec_pretty(&db).map_err(|e| Error::Invalid(e.to_string()))?;
        write_atomic(&self.db_path(), &bytes)?;
        Ok(out)
    }

    /// Records an image whose blobs and layers are all in the store, and
    /// points `tag` (if any) at it. Returns the image id.
    pub fn add_image(
        &self,
        record: ImageRecord,
        config_digest: &Digest,
        tag: Option<&Reference>,
    ) -> Result<()> {
        self.update_db(|db| {
            let id = config_digest.hex().to_string();
            let mut record = record;
            if let Some(old) = db.images.get(&id) {
                for rd in &old.repo_digests {
                    if !record.repo_digests.contains(rd) {
                        record.repo_digests.push(rd.clone());
                    }
                }
                record.added.clone_from(&old.added);
            }
            db.images.insert(id.clone(), record);
            if let Some(t) = tag {
                db.tags.insert(
                    t.with_tag(t.tag.as_deref().unwrap_or("latest")).to_string(),
                    id,
                );
            }
            Ok(())
        })
    }

    /// Records that a registry knows the image as `name@digest`.
    pub fn add_repo_digest(&self, id: &Digest, repo_digest: String) -> Result<()> {
        self.update_db(|db| {
            let rec = db
                .images
                .get_mut(id.hex())
                .ok_or_else(|| Error::ImageNotFound(id.to_string()))?;
            if !rec.repo_digests.contains(&repo_digest) {
                rec.repo_digests.push(repo_digest);
            }
            Ok(())
        })
    }

    /// Points `tag` at the image `id`.
    pub fn tag(&self, id: &Digest, tag: &Reference) -> Result<()> {
        self.update_db(|db| {
            if !db.images.contains_key(id.hex()) {
                return Err(Error::ImageNotFound(id.to_string()));
            }
            let t = tag.with_tag(tag.tag.as_deref().unwrap_or("latest"));
            db.tags.insert(t.to_string(), id.hex().to_string());
            Ok(())
        })
    }

    /// Removes a tag; returns the image id it pointed at.
    pub fn untag(&self, tag: &Reference) -> Result<Option<Digest>> {
        self.update_db(|db| {
            let key = tag
                .with_tag(tag.tag.as_deref().unwrap_or("latest"))
                .to_string();
            db.tags
                .remove(&key)
                .map(|id| Digest::from_hex(&id).map_err(Error::from))
                .transpose()
        })
    }

    /// Forgets an image record (its tags too). Content goes at the next
    /// collection.
    pub fn remove_image(&self, id: &Digest) -> Result<Vec<Reference>> {
        self.update_db(|db| {
            db.images.remove(id.hex());
            let mut gone = Vec::new();
            db.tags.retain(|t, i| {
                if i == id.hex() {
                    if let Ok(r) = t.parse() {
                        gone.push(r);
                    }
                    false
                } else {
                    true
                }
            });
            Ok(gone)
        })
    }

    /// Every image, newest first.
    pub fn images(&self) -> Result<Vec<Image>> {
        let db = self.read_db()?;
        let mut out = Vec::new();
        for (id, record) in &db.images {
            out.push(self.load_image(&db, id, record)?);
        }
        out.sort_by(|a, b| {
            b.config
                .created
                .cmp(&a.config.created)
                .then(a.id.cmp(&b.id))
        });
        Ok(out)
    }

    fn load_image(&self, db: &Db, id: &str, record: &ImageRecord) -> Result<Image> {
        let digest = Digest::from_hex(id)?;
        let corrupt = |what: String| Error::Corrupt {
            root: self.root.display().to_string(),
            what,
        };
        let body = self
            .read_blob(&record.manifest)
            .map_err(|e| corrupt(format!("image {id}: manifest: {e}")))?;
        let manifest = match manifest::parse(
            &record.manifest.to_string(),
            Some(&record.manifest_media_type),
            &body,
        )? {
            Parsed::Manifest(m) => *m,
            Parsed::Index(_) => return Err(corrupt(format!("image {id}: manifest is an index"))),
        };
        let config_bytes = self
            .read_blob(&digest)
            .map_err(|e| corrupt(format!("image {id}: config: {e}")))?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| corrupt(format!("image {id}: config: {e}")))?;
        let mut tags: Vec<Reference> = db
            .tags
            .iter()
            .filter(|(_, i)| *i == id)
            .filter_map(|(t, _)| t.parse().ok())
            .collect();
        tags.sort_by_key(|t: &Reference| t.to_string());
        Ok(Image {
            id: digest,
            record: record.clone(),
            tags,
            manifest,
            config,
        })
    }

    /// Finds an image by tag (`busybox`, `host/app:v1`), `name@digest`, or
    /// id (`sha256:<hex>` or a unique prefix of the hex, as Docker does).
    pub fn resolve(&self, name: &str) -> Result<Image> {
        let db = self.read_db()?;
        let by_id = |hex: &str| -> Result<Option<Image>> {
            if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(None);
            }
            let hits: Vec<_> = db
                .images
                .iter()
                .filter(|(i, _)| i.starts_with(hex))
                .collect();
            match hits.len() {
                0 => Ok(None),
                1 => Ok(Some(self.load_image(&db, hits[0].0, hits[0].1)?)),
                count => Err(Error::Ambiguous {
                    name: name.to_string(),
                    count,
                }),
            }
        };
        if let Some(hex) = name.strip_prefix("sha256:") {
            return by_id(hex)?.ok_or_else(|| Error::ImageNotFound(name.to_string()));
        }
        if let Ok(r) = name.parse::<Reference>() {
            if let Some(d) = &r.digest {
                let want = format!("{}@{d}", r.name());
                if let Some((id, rec)) = db
                    .images
                    .iter()
                    .find(|(_, rec)| rec.repo_digests.contains(&want) || &rec.manifest == d)
                {
                    return self.load_image(&db, id, rec);
                }
            } else if let Some(id) = db.tags.get(&r.to_string())
                && let Some(rec) = db.images.get(id)
            {
                return self.load_image(&db, id, rec);
            }
        }
        // Docker takes a bare hex string as an id prefix only when no tag
        // of that name exists (checked above).
        if name.len() >= 4
            && let Some(img) = by_id(name)?
        {
            return Ok(img);
        }
        Err(Error::ImageNotFound(name.to_string()))
    }

    /// Chain ids that snapshots hold on to (read from each snapshot's record).
    fn snapshot_layers(&self) -> Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        let dir = self.snapshots_dir();
        let entries = fs::read_dir(&dir).ctx(|| format!("read {}", dir.display()))?;
        for e in entries.flatten() {
            if let Ok(bytes) = fs::read(e.path().join("snapshot.json"))
                && let Ok(rec) = serde_json::from_slice::<crate::snapshot::SnapshotRecord>(&bytes)
            {
                out.extend(rec.layers.iter().map(|d| d.hex().to_string()));
            } else if e.file_name().to_string_lossy().starts_with(".tmp-") {
                continue;
            }
        }
        Ok(out)
    }

    /// Every digest the image records and live leases reach.
    fn live_set(&self, db: &Db) -> Result<BTreeSet<String>> {
        let mut live = BTreeSet::new();
        for (id, rec) in &db.images {
            live.insert(id.clone());
            live.insert(rec.manifest.hex().to_string());
            if let Some(i) = &rec.index {
                live.insert(i.hex().to_string());
            }
            if let Ok(img) = self.load_image(db, id, rec) {
                for l in &img.manifest.layers {
                    live.insert(l.digest.hex().to_string());
                }
                for c in img.chain_ids() {
                    live.insert(c.hex().to_string());
                }
            }
        }
        live.extend(self.snapshot_layers()?);
        let dir = self.root.join("leases");
        for e in fs::read_dir(&dir)
            .ctx(|| format!("read {}", dir.display()))?
            .flatten()
        {
            let path = e.path();
            let Ok(file) = File::open(&path) else {
                continue;
            };
            match file.try_lock() {
                // Nobody holds it: its operation died; the lease is stale.
                Ok(()) => {
                    let _ = fs::remove_file(&path);
                }
                Err(_) => {
                    if let Ok(bytes) = fs::read(&path)
                        && let Ok(ds) = serde_json::from_slice::<Vec<Digest>>(&bytes)
                    {
                        live.extend(ds.iter().map(|d| d.hex().to_string()));
                    }
                }
            }
        }
        Ok(live)
    }

    /// Removes blobs and layers that no image, snapshot or lease reaches,
    /// and the leftovers of operations that died part-way.
    pub fn collect_garbage(&self) -> Result<Collected> {
        let _gc = self.lock("gc", true)?;
        let db = self.read_db()?;
        let live = self.live_set(&db)?;
        let mut out = Collected::default();
        let blobs = self.root.join("blobs/sha256");
        for e in fs::read_dir(&blobs)
            .ctx(|| format!("read {}", blobs.display()))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if live.contains(&name) {
                continue;
            }
            let size = e.metadata().map_or(0, |m| m.len());
            if fs::remove_file(e.path()).is_ok() {
                out.blobs += 1;
                out.bytes += size;
            }
        }
        let layers = self.root.join("layers");
        for e in fs::read_dir(&layers)
            .ctx(|| format!("read {}", layers.display()))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let hex = name.strip_prefix(".tmp-").unwrap_or(&name);
            let staging = name.starts_with(".tmp-") || name.starts_with(".trash-");
            if !staging && live.contains(hex) {
                continue;
            }
            // A staging dir is someone's work while its layer lock is held.
            if name.starts_with(".tmp-")
                && let Ok(d) = Digest::from_hex(hex)
                && self.layer_is_busy(&d)
            {
                continue;
            }
            let size = if staging {
                0
            } else {
                Digest::from_hex(hex)
                    .ok()
                    .and_then(|d| self.layer_record(&d))
                    .map_or(0, |r| r.size)
            };
            // Renamed first, so that a crash mid-removal never leaves a
            // half layer under its real name.
            let trash = layers.join(format!(".trash-{hex}"));
            let target = if name.starts_with(".trash-") {
                e.path()
            } else if fs::rename(e.path(), &trash).is_ok() {
                trash
            } else {
                continue;
            };
            if fs::remove_dir_all(&target).is_ok() && !staging {
                out.layers += 1;
                out.bytes += size;
            }
        }
        // Snapshots retired by a process that died before it removed them.
        let snapshots = self.snapshots_dir();
        if let Ok(entries) = fs::read_dir(&snapshots) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(".trash") {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let ingest = self.root.join("ingest");
        for e in fs::read_dir(&ingest)
            .ctx(|| format!("read {}", ingest.display()))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(hex) = name.strip_suffix(".partial")
                && let Ok(d) = Digest::from_hex(hex)
                && !self.blob_is_busy(&d)
            {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(out)
    }

    fn busy(&self, name: &str) -> bool {
        let path = self.root.join("locks").join(format!("{name}.lock"));
        match File::open(path) {
            Ok(f) => f.try_lock().is_err(),
            Err(_) => false,
        }
    }

    pub(crate) fn layer_is_busy(&self, chain_id: &Digest) -> bool {
        self.busy(&format!("layer-{}", chain_id.hex()))
    }

    /// The lock that serialises the download of one blob.
    pub fn lock_blob(&self, d: &Digest) -> Result<LockGuard> {
        self.lock(&format!("blob-{}", d.hex()), true)
    }

    pub(crate) fn blob_is_busy(&self, d: &Digest) -> bool {
        self.busy(&format!("blob-{}", d.hex()))
    }

    /// Disk use: (bytes in blobs, bytes of unpacked layer content).
    pub fn disk_usage(&self) -> Result<(u64, u64)> {
        let mut blobs = 0;
        let dir = self.root.join("blobs/sha256");
        for e in fs::read_dir(&dir)
            .ctx(|| format!("read {}", dir.display()))?
            .flatten()
        {
            blobs += e.metadata().map_or(0, |m| m.len());
        }
        let mut layers = 0;
        let dir = self.root.join("layers");
        for e in fs::read_dir(&dir)
            .ctx(|| format!("read {}", dir.display()))?
            .flatten()
        {
            if let Ok(d) = Digest::from_hex(&e.file_name().to_string_lossy())
                && let Some(r) = self.layer_record(&d)
            {
                layers += r.size;
            }
        }
        Ok((blobs, layers))
    }

    /// The unpacked size of an image: its layers' content.
    pub fn image_size(&self, img: &Image) -> u64 {
        img.chain_ids()
            .iter()
            .filter_map(|c| self.layer_record(c))
            .map(|r| r.size)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(
            parse_rfc3339("2000-02-29T01:00:00.5+01:00"),
            Some(951_782_400)
        );
        assert_eq!(
            parse_rfc3339("2024-05-06T07:08:09.123456789Z"),
            Some(1_714_979_289)
        );
        for s in [0, 86_399, 1_700_000_000, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&rfc3339(s)), Some(s));
        }
    }
}
