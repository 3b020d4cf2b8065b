//! Pull: manifest (through an index to the platform's manifest), config,
//! then every layer streamed download → digest → decompress → unpack, the
//! layers in parallel. The image record is written last, so a pull that
//! dies leaves no half image; its partial download is resumed next time.

use crate::digest::{Digest, DigestReader};
use crate::error::{Error, IoContext, Result};
use crate::manifest::{self, Descriptor, ImageConfig, Manifest, Parsed, Platform};
use crate::reference::Reference;
use crate::registry::Client;
use crate::store::{Image, ImageRecord, LayerRecord, LockGuard, Store, now_rfc3339, write_atomic};
use crate::unpack;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// What a pull reports as it goes, for progress bars or plain lines.
#[derive(Clone, Debug)]
pub enum PullEvent {
    /// The manifest was found: its digest as the registry names it (the
    /// index's, when there is one), and the layers to fetch.
    Resolved {
        digest: Digest,
        layers: Vec<Descriptor>,
    },
    Layer {
        index: usize,
        state: LayerState,
    },
}

#[derive(Clone, Debug)]
pub enum LayerState {
    AlreadyExists,
    Waiting,
    /// Compressed bytes fetched so far.
    Downloading {
        done: u64,
        total: u64,
    },
    /// Compressed bytes decompressed and unpacked so far (this runs a
    /// little behind the download, not after it).
    Extracting {
        done: u64,
        total: u64,
    },
    Complete,
}

/// Receives pull events (from several threads at once).
pub trait Progress: Sync {
    fn event(&self, event: PullEvent);
}

/// Ignores every event.
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _: PullEvent) {}
}

#[derive(Clone, Debug)]
pub struct PullOptions {
    /// The platform to choose from an index; the host's when `None`.
    pub platform: Option<Platform>,
    /// Layers fetched at once.
    pub parallel: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: None,
            parallel: 3,
        }
    }
}

#[derive(Debug)]
pub struct Pulled {
    pub image: Image,
    /// The digest the registry gave for the reference (index or manifest).
    pub digest: Digest,
    /// False when the store already had this image under this name.
    pub downloaded: bool,
}

/// Fetches a manifest, following an index to `platform`'s manifest.
/// Returns (top-level digest, index digest if any, manifest digest,
/// media type, manifest, manifest body).
struct Resolved {
    top: Digest,
    index: Option<(Digest, Vec<u8>)>,
    manifest_digest: Digest,
    media_type: String,
    manifest: Manifest,
    body: Vec<u8>,
}

fn resolve(
    client: &Client,
    r: &Reference,
    platform: &Platform,
    explicit: bool,
) -> Result<Resolved> {
    let what = r.to_string();
    let top = client.get_manifest(r, &r.manifest_reference())?;
    match manifest::parse(&what, Some(&top.media_type), &top.body)? {
        Parsed::Manifest(m) => Ok(Resolved {
            top: top.digest.clone(),
            index: None,
            manifest_digest: top.digest,
            media_type: top.media_type,
            manifest: *m,
            body: top.body,
        }),
        Parsed::Index(index) => {
            let chosen = index
                .manifests
                .iter()
                .find(|d| {
                    d.platform.as_ref().is_some_and(|p| platform.matches(p))
                        // Attestation manifests carry platform "unknown/unknown".
                        && d.annotations.as_ref().and_then(|a| a.get("vnd.docker.reference.type")).is_none()
                })
                .or_else(|| {
                    // An index without platforms (as some tools write for a
                    // single image) serves whoever asks, unless one was named.
                    (!explicit && index.manifests.len() == 1 && index.manifests[0].platform.is_none())
                        .then(|| &index.manifests[0])
                })
                .ok_or_else(|| {
                    let offered: Vec<String> = index
                        .manifests
                        .iter()
                        .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                        .collect();
                    Error::Invalid(format!(
                        "{what}: no image for platform {platform} in the index (it has: {}); choose one with --platform",
                        if offered.is_empty() { "none named".to_string() } else { offered.join(", ") }
                    ))
                })?;
            let m = client.get_manifest(r, &chosen.digest.to_string())?;
            let manifest = match manifest::parse(
                &chosen.digest.to_string(),
                Some(&m.media_type),
                &m.body,
            )? {
                Parsed::Manifest(m) => *m,
                Parsed::Index(_) => {
                    return Err(Error::Invalid(format!(
                        "{what}: index entry {} is itself an index; nested indexes are not supported",
                        chosen.digest
                    )));
                }
            };
            Ok(Resolved {
                top: top.digest.clone(),
                index: Some((top.digest, top.body)),
                manifest_digest: m.digest,
                media_type: m.media_type,
                manifest,
                body: m.body,
            })
        }
    }
}

/// Pulls `r` into `store`.
pub fn pull(
    store: &Store,
    client: &Client,
    r: &Reference,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<Pulled> {
    let platform = opts.platform.clone().unwrap_or_else(Platform::host);
    let resolved = resolve(client, r, &platform, opts.platform.is_some())?;
    let layers = resolved.manifest.layers.clone();
    progress.event(PullEvent::Resolved {
        digest: resolved.top.clone(),
        layers: layers.clone(),
    });
    for l in &layers {
        if manifest::Compression::from_media_type(&l.media_type).is_none() {
            return Err(Error::Invalid(format!(
                "{r}: layer {} has media type {:?}, which is not an image layer this store can unpack",
                l.digest, l.media_type
            )));
        }
    }
    let cfg_desc = &resolved.manifest.config;
    let config_bytes = if store.has_blob(&cfg_desc.digest) {
        store.read_blob(&cfg_desc.digest)?
    } else {
        let mut bytes = Vec::new();
        client
            .open_blob(r, &cfg_desc.digest, 0)?
            .take(64 << 20)
            .read_to_end(&mut bytes)
            .ctx(|| format!("fetch config {} of {r}", cfg_desc.digest))?;
        bytes
    };
    let actual = Digest::of(&config_bytes);
    if actual != cfg_desc.digest {
        return Err(Error::DigestMismatch {
            what: format!("config of {r}"),
            expected: cfg_desc.digest.clone(),
            actual,
        });
    }
    let config: ImageConfig = serde_json::from_slice(&config_bytes)
        .map_err(|e| Error::Invalid(format!("{r}: image config {}: {e}", cfg_desc.digest)))?;
    if opts.platform.is_some()
        && resolved.index.is_none()
        && !platform.matches(&Platform {
            architecture: config.architecture.clone(),
            os: config.os.clone(),
            variant: config.variant.clone(),
            os_version: None,
        })
    {
        return Err(Error::Invalid(format!(
            "{r} is an image for {}/{}, not for the requested platform {platform}",
            config.os, config.architecture
        )));
    }
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != layers.len() {
        return Err(Error::Invalid(format!(
            "{r}: the manifest lists {} layers but the config names {} diff ids",
            layers.len(),
            diff_ids.len()
        )));
    }
    let chain_ids = manifest::chain_ids(diff_ids);

    // Everything this pull will reference stays alive while it works.
    let mut leased: Vec<Digest> = vec![
        resolved.manifest_digest.clone(),
        cfg_desc.digest.clone(),
        resolved.top.clone(),
    ];
    leased.extend(layers.iter().map(|l| l.digest.clone()));
    leased.extend(chain_ids.iter().cloned());
    let _lease = store.lease(&leased)?;

    if r.tag.is_some()
        && r.digest.is_none()
        && let Ok(existing) = store.resolve(&r.to_string())
        && existing
            .record
            .repo_digests
            .contains(&format!("{}@{}", r.name(), resolved.top))
        && existing.id == cfg_desc.digest
        && chain_ids.iter().all(|c| store.layer_dir(c).exists())
    {
        for i in 0..layers.len() {
            progress.event(PullEvent::Layer {
                index: i,
                state: LayerState::AlreadyExists,
            });
        }
        return Ok(Pulled {
            image: existing,
            digest: resolved.top,
            downloaded: false,
        });
    }

    fetch_layers(
        store,
        Some((client, r)),
        &r.to_string(),
        &layers,
        diff_ids,
        opts.parallel,
        progress,
    )?;

    store.put_blob(&cfg_desc.digest, &config_bytes, &format!("config of {r}"))?;
    store.put_blob(
        &resolved.manifest_digest,
        &resolved.body,
        &format!("manifest of {r}"),
    )?;
    if let Some((d, body)) = &resolved.index {
        store.put_blob(d, body, &format!("index of {r}"))?;
    }
    let record = ImageRecord {
        manifest: resolved.manifest_digest.clone(),
        manifest_media_type: resolved.media_type.clone(),
        index: resolved.index.as_ref().map(|(d, _)| d.clone()),
        repo_digests: vec![format!("{}@{}", r.name(), resolved.top)],
        added: now_rfc3339(),
    };
    let tag = r.tag.as_ref().map(|_| r.clone());
    store.add_image(record, &cfg_desc.digest, tag.as_ref())?;
    let image = store.resolve(&cfg_desc.digest.to_string())?;
    Ok(Pulled {
        image,
        digest: resolved.top,
        downloaded: true,
    })
}

/// Makes sure every layer of an image is unpacked and its blob stored,
/// `parallel` at a time, then gives the new layers their names after one
/// flush to disk.
pub(crate) fn fetch_layers(
    store: &Store,
    remote: Option<(&Client, &Reference)>,
    what: &str,
    layers: &[Descriptor],
    diff_ids: &[Digest],
    parallel: usize,
    progress: &dyn Progress,
) -> Result<()> {
    let chain_ids = manifest::chain_ids(diff_ids);
    // Every layer's lock, taken up front in one global order and held
    // until the layers have their names: two pulls of images that share
    // layers then wait for each other instead of each holding what the
    // other needs. (A lock taken by each thread as it goes, in the image's
    // order, deadlocked.)
    let mut sorted: Vec<&Digest> = chain_ids.iter().collect();
    sorted.sort();
    sorted.dedup();
    let _locks = sorted
        .into_iter()
        .map(|c| store.lock_layer(c))
        .collect::<Result<Vec<LockGuard>>>()?;
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<Result<Fetched>>>> =
        Mutex::new((0..layers.len()).map(|_| None).collect());
    let failed = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..parallel.clamp(1, layers.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = {
                        let Ok(mut n) = next.lock() else { return };
                        let i = *n;
                        *n += 1;
                        i
                    };
                    if i >= layers.len() || failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let res = fetch_layer(
                        store,
                        remote,
                        what,
                        &layers[i],
                        &diff_ids[i],
                        &chain_ids[i],
                        i,
                        progress,
                    );
                    if res.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    if let Ok(mut all) = results.lock() {
                        all[i] = Some(res);
                    }
                }
            });
        }
    });
    let results = results
        .into_inner()
        .map_err(|_| Error::Invalid("a layer thread panicked".into()))?;
    let mut staged: Vec<Fetched> = Vec::new();
    let mut first_error = None;
    for r in results.into_iter().flatten() {
        match r {
            Ok(f) => staged.push(f),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        for f in staged {
            if let Some(dir) = f.staging {
                let _ = fs::remove_dir_all(dir);
            }
        }
        return Err(e);
    }
    if staged.iter().all(|f| f.staging.is_none()) {
        return Ok(());
    }
    // One flush of the layer files for the whole image, in place of an
    // fsync per file; only then do the layers get their real names.
    let layers_dir = store.root().join("layers");
    let dir = File::open(&layers_dir).ctx(|| format!("open {}", layers_dir.display()))?;
    nix::unistd::syncfs(&dir).map_err(|e| Error::Io {
        what: "sync the unpacked layers".to_string(),
        source: e.into(),
    })?;
    for f in &staged {
        if let Some(dir) = &f.staging {
            let dest = store.layer_dir(&f.chain_id);
            fs::rename(dir, &dest).ctx(|| format!("move layer {} into place", f.chain_id))?;
        }
    }
    dir.sync_all()
        .ctx(|| format!("sync {}", layers_dir.display()))
}

/// A layer done by one thread: the staging dir to rename into place (or
/// none if it was already there).
struct Fetched {
    chain_id: Digest,
    staging: Option<PathBuf>,
}

/// Appends what goes through it to the partial download; remembers
/// whether the network failed, so a failed pull keeps what it fetched
/// only when the content itself was not at fault.
struct Tee<'a, R> {
    inner: R,
    file: File,
    network_failed: &'a AtomicBool,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                self.network_failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
        };
        self.file.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Reports download (or extraction) progress every 256 KiB.
struct Counted<'a, R> {
    inner: R,
    done: u64,
    reported: u64,
    total: u64,
    index: usize,
    extracting: bool,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done - self.reported >= 256 << 10 || (n == 0 && self.done != self.reported) {
            self.reported = self.done;
            let (done, total) = (self.done, self.total);
            self.progress.event(PullEvent::Layer {
                index: self.index,
                state: if self.extracting {
                    LayerState::Extracting { done, total }
                } else {
                    LayerState::Downloading { done, total }
                },
            });
        }
        Ok(n)
    }
}

/// Chunks a pipeline stage runs ahead of the next (256 KiB each).
const READ_AHEAD_CHUNKS: usize = 16;
const CHUNK: u64 = 256 << 10;

/// One link of a layer's pipeline: chunks go forward, emptied buffers
/// come back for reuse (no allocation or zeroing per chunk).
fn link() -> (Pump, ReadAhead) {
    let (tx, rx) = std::sync::mpsc::sync_channel(READ_AHEAD_CHUNKS);
    let (back_tx, back_rx) = std::sync::mpsc::sync_channel(READ_AHEAD_CHUNKS + 1);
    (
        Pump { tx, back: back_rx },
        ReadAhead {
            rx,
            back: back_tx,
            chunk: Vec::new(),
            pos: 0,
        },
    )
}

/// The sending side of a [`link`].
struct Pump {
    tx: std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>,
    back: std::sync::mpsc::Receiver<Vec<u8>>,
}

impl Pump {
    /// Reads `source` to its end into the link and gives it back; on a
    /// read error, sends a copy on (so that the next stage stops) and
    /// returns it.
    fn run<R: Read>(self, mut source: R) -> io::Result<R> {
        loop {
            let mut chunk = self
                .back
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(256 << 10));
            chunk.clear();
            match source.by_ref().take(CHUNK).read_to_end(&mut chunk) {
                Ok(0) => return Ok(source),
                Ok(_) => {}
                Err(e) => {
                    let _ = self.tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                    return Err(e);
                }
            }
            if self.tx.send(Ok(chunk)).is_err() {
                // The next stage stopped (it failed); its error is the one
                // to report.
                return Ok(source);
            }
        }
    }
}

/// The receiving side of a [`link`].
struct ReadAhead {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    back: std::sync::mpsc::SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    let done = std::mem::replace(&mut self.chunk, chunk);
                    let _ = self.back.try_send(done);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Makes sure layer `chain_id` is unpacked and its blob stored: from the
/// blob if the store has it, else downloaded from `remote`.
#[allow(clippy::too_many_arguments)]
fn fetch_layer(
    store: &Store,
    remote: Option<(&Client, &Reference)>,
    r: &str,
    desc: &Descriptor,
    diff_id: &Digest,
    chain_id: &Digest,
    index: usize,
    progress: &dyn Progress,
) -> Result<Fetched> {
    // The caller holds the layer's lock.
    let have_layer = store.layer_dir(chain_id).exists();
    if have_layer && store.has_blob(&desc.digest) {
        progress.event(PullEvent::Layer {
            index,
            state: LayerState::AlreadyExists,
        });
        return Ok(Fetched {
            chain_id: chain_id.clone(),
            staging: None,
        });
    }
    let _blob_lock = store.lock_blob(&desc.digest)?;
    let staging = store.layer_staging_dir(chain_id);
    if staging.exists() {
        // Left by a pull that died; we hold the layer's lock, so it is ours.
        fs::remove_dir_all(&staging).ctx(|| format!("remove {}", staging.display()))?;
    }
    let partial = store.ingest_path(&desc.digest);
    let network_failed = AtomicBool::new(false);
    let res = (|| -> Result<()> {
        let diff = staging.join("diff");
        fs::create_dir_all(&diff).ctx(|| format!("create {}", diff.display()))?;
        let (source, from_blob): (Box<dyn Read + Send + '_>, bool) = if store.has_blob(&desc.digest)
        {
            let f = File::open(store.blob_path(&desc.digest))
                .ctx(|| format!("open blob {}", desc.digest))?;
            (Box::new(f), true)
        } else {
            let have = fs::metadata(&partial).map_or(0, |m| m.len());
            let have = if have > desc.size { 0 } else { have };
            let append = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&partial)
                .ctx(|| format!("open {}", partial.display()))?;
            append
                .set_len(have)
                .ctx(|| format!("truncate {}", partial.display()))?;
            let prefix = File::open(&partial)
                .ctx(|| format!("open {}", partial.display()))?
                .take(have);
            let rest: Box<dyn Read + Send> = if have < desc.size {
                let (client, r) = remote.ok_or_else(|| {
                    Error::Invalid(format!(
                        "layer {}: its blob is not in the store",
                        desc.digest
                    ))
                })?;
                Box::new(client.open_blob(r, &desc.digest, have)?)
            } else {
                Box::new(io::empty())
            };
            let tee = Tee {
                inner: rest,
                file: append,
                network_failed: &network_failed,
            };
            (Box::new(prefix.chain(tee)), false)
        };
        progress.event(PullEvent::Layer {
            index,
            state: LayerState::Downloading {
                done: 0,
                total: desc.size,
            },
        });
        let counted = Counted {
            inner: source,
            done: 0,
            reported: 0,
            total: desc.size,
            index,
            extracting: false,
            progress,
        };
        let compressed = DigestReader::new(counted);
        // Three threads in a pipeline: download, hash and partial file;
        // decompression; the unpack and the diff id. On a single big layer
        // the stages then run side by side (decompression is the slowest,
        // so it does nothing else).
        let (unpacked, fetched, decoded) = std::thread::scope(|s| {
            let (to_decompress, downloaded) = link();
            let download = s.spawn(move || to_decompress.run(compressed));
            let (to_unpack, decompressed) = link();
            let decompress = s.spawn(move || -> io::Result<()> {
                let consumed = Counted {
                    inner: downloaded,
                    done: 0,
                    reported: 0,
                    total: desc.size,
                    index,
                    extracting: true,
                    progress,
                };
                let mut buffered = BufReader::with_capacity(256 << 10, consumed);
                let kind = manifest::Compression::sniff(buffered.fill_buf()?);
                to_unpack
                    .run(unpack::decompressor(buffered, kind)?)
                    .map(drop)
            });
            let mut diff_reader = DigestReader::new(decompressed);
            // The unpack reads its stream to the end, so the digest covers
            // all of it.
            let unpacked = unpack::unpack(&mut diff_reader, &diff)
                .map(|stats| (stats, diff_reader.digest_so_far().0));
            // The readers are gone: a stage still running stops at its
            // next chunk.
            let panicked = || io::Error::other("a thread of the layer's pipeline panicked");
            let decoded = decompress.join().unwrap_or_else(|_| Err(panicked()));
            let fetched = download
                .join()
                .unwrap_or_else(|_| Err(panicked()))
                .map(DigestReader::digest_so_far);
            (unpacked, fetched, decoded)
        });
        // The first stage that failed says why: the network, then the
        // decompression, then the unpack.
        let (blob_actual, size) = fetched.ctx(|| format!("read layer {} of {r}", desc.digest))?;
        decoded.ctx(|| format!("decompress layer {} of {r}", desc.digest))?;
        let (stats, diff_actual) =
            unpacked.map_err(|e| Error::Invalid(format!("layer {} of {r}: {e}", desc.digest)))?;
        if blob_actual != desc.digest || size != desc.size {
            return Err(Error::DigestMismatch {
                what: format!("layer of {r} ({size} bytes, {} expected)", desc.size),
                expected: desc.digest.clone(),
                actual: blob_actual,
            });
        }
        if &diff_actual != diff_id {
            return Err(Error::DigestMismatch {
                what: format!(
                    "unpacked layer {} of {r} (its config's diff id)",
                    desc.digest
                ),
                expected: diff_id.clone(),
                actual: diff_actual,
            });
        }
        if !from_blob {
            store.commit_blob_file(&partial, &desc.digest)?;
        }
        let record = LayerRecord {
            chain_id: chain_id.clone(),
            diff_id: diff_id.clone(),
            blob: desc.digest.clone(),
            size: stats.bytes,
            entries: stats.entries,
        };
        let bytes =
            serde_json::to_vec_pretty(&record).map_err(|e| Error::Invalid(e.to_string()))?;
        write_atomic(&staging.join("layer.json"), &bytes)
    })();
    match res {
        Ok(()) => {
            progress.event(PullEvent::Layer {
                index,
                state: LayerState::Complete,
            });
            // A layer that was there already (only its blob was missing)
            // keeps its directory; the fresh copy goes.
            let staging = if have_layer {
                let _ = fs::remove_dir_all(&staging);
                None
            } else {
                Some(staging)
            };
            Ok(Fetched {
                chain_id: chain_id.clone(),
                staging,
            })
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            // Keep what was fetched for a resume only when the network,
            // not the content, failed.
            if !network_failed.load(Ordering::Relaxed) {
                let _ = fs::remove_file(&partial);
            }
            Err(e)
        }
    }
}
