//! Images in and out of tar archives: `save` and `load` in the
//! docker-archive format (`manifest.json`, one uncompressed tar per layer,
//! as `docker save` and `podman save` write it) and the oci-archive format
//! (an OCI image layout in a tar), and `import` of a root filesystem tar.

use crate::digest::{Digest, DigestWriter};
use crate::error::{Error, IoContext, Result};
use crate::manifest::{self, Descriptor, ImageConfig, Manifest, Parsed, RootFs};
use crate::pull::{NoProgress, fetch_layers};
use crate::reference::Reference;
use crate::store::{Image, ImageRecord, Store, now_rfc3339, temp_name};
use crate::unpack;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    Docker,
    Oci,
}

impl std::str::FromStr for ArchiveFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<ArchiveFormat> {
        match s {
            "docker-archive" | "docker" => Ok(ArchiveFormat::Docker),
            "oci-archive" | "oci" => Ok(ArchiveFormat::Oci),
            other => Err(Error::Invalid(format!(
                "archive format {other:?}: use docker-archive or oci-archive"
            ))),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// One image to save, with the names to give it in the archive.
pub struct SaveItem {
    pub image: Image,
    pub names: Vec<Reference>,
}

/// The name Docker writes for a tag: `busybox:latest`, `host:5000/app:v1`.
fn familiar(r: &Reference) -> String {
    format!(
        "{}:{}",
        r.familiar_name(),
        r.tag.as_deref().unwrap_or("latest")
    )
}

fn add_file(
    builder: &mut tar::Builder<impl Write>,
    path: &str,
    size: u64,
    data: impl Read,
) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mtime(0);
    builder
        .append_data(&mut h, path, data)
        .ctx(|| format!("write {path} into the archive"))
}

fn add_dir(builder: &mut tar::Builder<impl Write>, path: &str) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(0);
    h.set_mode(0o755);
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mtime(0);
    builder
        .append_data(&mut h, path, io::empty())
        .ctx(|| format!("write {path} into the archive"))
}

/// Writes `items` to `out` as one archive.
pub fn save(
    store: &Store,
    items: &[SaveItem],
    format: ArchiveFormat,
    out: impl Write,
) -> Result<()> {
    let mut b = tar::Builder::new(out);
    match format {
        ArchiveFormat::Docker => save_docker(store, items, &mut b)?,
        ArchiveFormat::Oci => save_oci(store, items, &mut b)?,
    }
    b.into_inner()
        .and_then(|mut w| w.flush())
        .ctx(|| "finish the archive".to_string())
}

fn save_docker(store: &Store, items: &[SaveItem], b: &mut tar::Builder<impl Write>) -> Result<()> {
    let mut entries = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut written: std::collections::HashSet<Digest> = Default::default();
    for item in items {
        let img = &item.image;
        let config = store.read_blob(&img.id)?;
        let config_name = format!("{}.json", img.id.hex());
        if written.insert(img.id.clone()) {
            add_file(b, &config_name, config.len() as u64, &config[..])?;
        }
        let mut layer_names = Vec::new();
        for (desc, diff_id) in img.manifest.layers.iter().zip(&img.config.rootfs.diff_ids) {
            let name = format!("{}.tar", diff_id.hex());
            if written.insert(diff_id.clone()) {
                // The archive holds layers uncompressed; their size must be
                // known before the data, so they go through a temp file.
                let tmp = store.root().join("ingest").join(temp_name("save"));
                let res = (|| -> Result<()> {
                    let blob = File::open(store.blob_path(&desc.digest)).ctx(|| {
                        format!(
                            "open layer {} of {}: pull the image again",
                            desc.digest,
                            img.id.short()
                        )
                    })?;
                    let mut head = BufReader::new(blob);
                    let kind =
                        manifest::Compression::sniff(head.fill_buf().ctx(|| "read layer".into())?);
                    let mut decoded = unpack::decompressor(head, kind)
                        .ctx(|| format!("layer {}", desc.digest))?;
                    let mut w = DigestWriter::new(
                        File::create(&tmp).ctx(|| format!("create {}", tmp.display()))?,
                    );
                    io::copy(&mut decoded, &mut w)
                        .ctx(|| format!("decompress layer {}", desc.digest))?;
                    let (_, actual, size) = w.finish();
                    if &actual != diff_id {
                        return Err(Error::DigestMismatch {
                            what: format!("layer {} of image {}", desc.digest, img.id.short()),
                            expected: diff_id.clone(),
                            actual,
                        });
                    }
                    let f = File::open(&tmp).ctx(|| format!("open {}", tmp.display()))?;
                    add_file(b, &name, size, f)
                })();
                let _ = fs::remove_file(&tmp);
                res?;
            }
            layer_names.push(name);
        }
        let tags: Vec<String> = item.names.iter().map(familiar).collect();
        for n in &item.names {
            if let Some(top) = img.config.rootfs.diff_ids.last() {
                repositories.entry(n.familiar_name()).or_default().insert(
                    n.tag.clone().unwrap_or_else(|| "latest".into()),
                    top.hex().to_string(),
                );
            }
        }
        entries.push(DockerManifestEntry {
            config: config_name,
            repo_tags: (!tags.is_empty()).then_some(tags),
            layers: layer_names,
        });
    }
    let manifest = serde_json::to_vec(&entries).map_err(|e| Error::Invalid(e.to_string()))?;
    add_file(b, "manifest.json", manifest.len() as u64, &manifest[..])?;
    let repos = serde_json::to_vec(&repositories).map_err(|e| Error::Invalid(e.to_string()))?;
    add_file(b, "repositories", repos.len() as u64, &repos[..])
}

fn save_oci(store: &Store, items: &[SaveItem], b: &mut tar::Builder<impl Write>) -> Result<()> {
    add_file(
        b,
        "oci-layout",
        30,
        &br#"{"imageLayoutVersion":"1.0.0"}"#[..],
    )?;
    add_dir(b, "blobs/")?;
    add_dir(b, "blobs/sha256/")?;
    let mut written: std::collections::HashSet<Digest> = Default::default();
    let mut put = |b: &mut tar::Builder<_>, d: &Digest| -> Result<()> {
        if !written.insert(d.clone()) {
            return Ok(());
        }
        let path = store.blob_path(d);
        let f = File::open(&path).ctx(|| format!("open blob {d}: pull the image again"))?;
        let size = f.metadata().ctx(|| format!("stat blob {d}"))?.len();
        add_file(b, &format!("blobs/sha256/{}", d.hex()), size, f)
    };
    let mut manifests = Vec::new();
    for item in items {
        let img = &item.image;
        for l in &img.manifest.layers {
            put(b, &l.digest)?;
        }
        put(b, &img.id)?;
        put(b, &img.record.manifest)?;
        let size = fs::metadata(store.blob_path(&img.record.manifest))
            .ctx(|| format!("stat manifest {}", img.record.manifest))?
            .len();
        let desc = |annotations: Option<BTreeMap<String, String>>| Descriptor {
            media_type: img.record.manifest_media_type.clone(),
            digest: img.record.manifest.clone(),
            size,
            platform: None,
            annotations,
            urls: None,
        };
        if item.names.is_empty() {
            manifests.push(desc(None));
        }
        for n in &item.names {
            manifests.push(desc(Some(BTreeMap::from([
                ("io.containerd.image.name".to_string(), n.to_string()),
                (
                    "org.opencontainers.image.ref.name".to_string(),
                    n.tag.clone().unwrap_or_else(|| "latest".into()),
                ),
            ]))));
        }
    }
    let index = manifest::Index {
        schema_version: 2,
        media_type: Some(manifest::OCI_INDEX.to_string()),
        manifests,
        annotations: None,
    };
    let body = serde_json::to_vec(&index).map_err(|e| Error::Invalid(e.to_string()))?;
    add_file(b, "index.json", body.len() as u64, &body[..])
}

/// Where each file of an archive lies in it, so that entries can be read
/// in any order (docker archives put manifest.json last).
struct ArchiveIndex {
    file: File,
    entries: HashMap<String, (u64, u64)>,
}

impl ArchiveIndex {
    fn scan(mut file: File) -> Result<ArchiveIndex> {
        let mut entries = HashMap::new();
        {
            let mut a = tar::Archive::new(&mut file);
            for e in a.entries().ctx(|| "read the archive".to_string())? {
                let e =
                    e.ctx(|| "read the archive: it is truncated or not a tar file".to_string())?;
                if e.header().entry_type() != tar::EntryType::Regular {
                    continue;
                }
                let path = e.path().ctx(|| "read the archive".to_string())?;
                let name = path.to_string_lossy().trim_start_matches("./").to_string();
                entries.insert(name, (e.raw_file_position(), e.size()));
            }
        }
        Ok(ArchiveIndex { file, entries })
    }

    fn open(&self, name: &str) -> Result<io::Take<File>> {
        let (pos, size) = *self
            .entries
            .get(name.trim_start_matches("./"))
            .ok_or_else(|| Error::Invalid(format!("the archive has no {name}")))?;
        let mut f = self
            .file
            .try_clone()
            .ctx(|| "read the archive".to_string())?;
        f.seek(SeekFrom::Start(pos))
            .ctx(|| format!("read {name} in the archive"))?;
        Ok(f.take(size))
    }

    fn read(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.open(name)?
            .take(limit)
            .read_to_end(&mut out)
            .ctx(|| format!("read {name} in the archive"))?;
        Ok(out)
    }
}

/// What `load` brought in: each image id with the names it got.
#[derive(Debug)]
pub struct Loaded {
    pub images: Vec<(Digest, Vec<Reference>)>,
}

/// Loads every image of a docker-archive or oci-archive. `input` is
/// copied to a temp file first unless it is a seekable file.
pub fn load(store: &Store, input: &Path) -> Result<Loaded> {
    let file = File::open(input).ctx(|| format!("open {}", input.display()))?;
    load_file(store, file)
}

/// Loads from a stream (stdin): spooled into the store's ingest dir.
pub fn load_stream(store: &Store, mut input: impl Read) -> Result<Loaded> {
    let tmp = store.root().join("ingest").join(temp_name("load"));
    let res = (|| {
        let mut f = File::create(&tmp).ctx(|| format!("create {}", tmp.display()))?;
        io::copy(&mut input, &mut f).ctx(|| "read the archive".to_string())?;
        let f = File::open(&tmp).ctx(|| format!("open {}", tmp.display()))?;
        load_file(store, f)
    })();
    let _ = fs::remove_file(&tmp);
    res
}

fn load_file(store: &Store, file: File) -> Result<Loaded> {
    // A compressed archive (docker save | gzip) is unpacked to a temp file.
    let mut head = [0u8; 4];
    let mut probe = file.try_clone().ctx(|| "read the archive".to_string())?;
    let n = probe
        .read(&mut head)
        .ctx(|| "read the archive".to_string())?;
    probe
        .seek(SeekFrom::Start(0))
        .ctx(|| "read the archive".to_string())?;
    let kind = manifest::Compression::sniff(&head[..n]);
    if kind != manifest::Compression::None {
        let tmp = store.root().join("ingest").join(temp_name("load"));
        let res = (|| {
            let mut out = File::create(&tmp).ctx(|| format!("create {}", tmp.display()))?;
            let mut d =
                unpack::decompressor(probe, kind).ctx(|| "decompress the archive".to_string())?;
            io::copy(&mut d, &mut out).ctx(|| "decompress the archive".to_string())?;
            let f = File::open(&tmp).ctx(|| format!("open {}", tmp.display()))?;
            load_index(store, ArchiveIndex::scan(f)?)
        })();
        let _ = fs::remove_file(&tmp);
        return res;
    }
    load_index(store, ArchiveIndex::scan(file)?)
}

fn load_index(store: &Store, archive: ArchiveIndex) -> Result<Loaded> {
    if archive.entries.contains_key("index.json") && archive.entries.contains_key("oci-layout") {
        load_oci(store, &archive)
    } else if archive.entries.contains_key("manifest.json") {
        load_docker(store, &archive)
    } else {
        Err(Error::Invalid(
            "the archive is neither a docker-archive (no manifest.json) nor an oci-archive (no index.json and oci-layout)".into(),
        ))
    }
}

/// Copies an archive entry into the store as a blob, checking its digest.
fn import_blob(
    store: &Store,
    archive: &ArchiveIndex,
    name: &str,
    expected: Option<&Digest>,
) -> Result<(Digest, u64)> {
    let tmp = store.root().join("ingest").join(temp_name("blob"));
    let res = (|| {
        let mut w =
            DigestWriter::new(File::create(&tmp).ctx(|| format!("create {}", tmp.display()))?);
        io::copy(&mut archive.open(name)?, &mut w)
            .ctx(|| format!("copy {name} from the archive"))?;
        let (_, digest, size) = w.finish();
        if let Some(e) = expected
            && e != &digest
        {
            return Err(Error::DigestMismatch {
                what: format!("{name} in the archive"),
                expected: e.clone(),
                actual: digest,
            });
        }
        if store.has_blob(&digest) {
            let _ = fs::remove_file(&tmp);
        } else {
            store.commit_blob_file(&tmp, &digest)?;
        }
        Ok((digest, size))
    })();
    let _ = fs::remove_file(&tmp);
    res
}

fn load_docker(store: &Store, archive: &ArchiveIndex) -> Result<Loaded> {
    let entries: Vec<DockerManifestEntry> =
        serde_json::from_slice(&archive.read("manifest.json", 16 << 20)?)
            .map_err(|e| Error::Invalid(format!("manifest.json in the archive: {e}")))?;
    let mut out = Loaded { images: Vec::new() };
    for entry in entries {
        let config_bytes = archive.read(&entry.config, 64 << 20)?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| Error::Invalid(format!("{} in the archive: {e}", entry.config)))?;
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(Error::Invalid(format!(
                "{} names {} layers but manifest.json lists {}",
                entry.config,
                config.rootfs.diff_ids.len(),
                entry.layers.len()
            )));
        }
        let mut layers = Vec::new();
        for (name, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
            // Layers are usually plain tars (their digest is the diff id),
            // but some tools write them compressed.
            let mut head = [0u8; 4];
            let n = archive
                .open(name)?
                .read(&mut head)
                .ctx(|| format!("read {name}"))?;
            let kind = manifest::Compression::sniff(&head[..n]);
            let expected = (kind == manifest::Compression::None).then_some(diff_id);
            let (digest, size) = import_blob(store, archive, name, expected)?;
            layers.push(Descriptor {
                media_type: match kind {
                    manifest::Compression::None => manifest::DOCKER_LAYER,
                    manifest::Compression::Gzip => manifest::DOCKER_LAYER_GZIP,
                    manifest::Compression::Zstd => manifest::OCI_LAYER_ZSTD,
                }
                .to_string(),
                digest,
                size,
                platform: None,
                annotations: None,
                urls: None,
            });
        }
        let names: Vec<Reference> = entry
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| t.parse::<Reference>())
            .collect::<std::result::Result<_, _>>()?;
        let id = add_local_image(
            store,
            &config_bytes,
            &config,
            layers,
            manifest::DOCKER_MANIFEST,
            &names,
        )?;
        out.images.push((id, names));
    }
    Ok(out)
}

fn load_oci(store: &Store, archive: &ArchiveIndex) -> Result<Loaded> {
    let index: manifest::Index = serde_json::from_slice(&archive.read("index.json", 16 << 20)?)
        .map_err(|e| Error::Invalid(format!("index.json in the archive: {e}")))?;
    let blob_name = |d: &Digest| format!("blobs/sha256/{}", d.hex());
    let mut out = Loaded { images: Vec::new() };
    for desc in &index.manifests {
        let body = archive.read(&blob_name(&desc.digest), 16 << 20)?;
        if Digest::of(&body) != desc.digest {
            return Err(Error::DigestMismatch {
                what: "a manifest in the archive".into(),
                expected: desc.digest.clone(),
                actual: Digest::of(&body),
            });
        }
        let (manifest_desc, manifest, body) =
            match manifest::parse(&desc.digest.to_string(), Some(&desc.media_type), &body)? {
                Parsed::Manifest(m) => (desc.clone(), *m, body),
                Parsed::Index(inner) => {
                    // A multi-platform image: load the host's manifest.
                    let host = manifest::Platform::host();
                    let d = inner
                        .manifests
                        .iter()
                        .find(|d| d.platform.as_ref().is_some_and(|p| host.matches(p)))
                        .ok_or_else(|| {
                            Error::Invalid(format!(
                                "the archive's index {} has no image for {host}",
                                desc.digest
                            ))
                        })?;
                    let b = archive.read(&blob_name(&d.digest), 16 << 20)?;
                    match manifest::parse(&d.digest.to_string(), Some(&d.media_type), &b)? {
                        Parsed::Manifest(m) => (d.clone(), *m, b),
                        Parsed::Index(_) => {
                            return Err(Error::Invalid("nested indexes are not supported".into()));
                        }
                    }
                }
            };
        if Digest::of(&body) != manifest_desc.digest {
            return Err(Error::DigestMismatch {
                what: "a manifest in the archive".into(),
                expected: manifest_desc.digest.clone(),
                actual: Digest::of(&body),
            });
        }
        let config_bytes = archive.read(&blob_name(&manifest.config.digest), 64 << 20)?;
        if Digest::of(&config_bytes) != manifest.config.digest {
            return Err(Error::DigestMismatch {
                what: "an image config in the archive".into(),
                expected: manifest.config.digest.clone(),
                actual: Digest::of(&config_bytes),
            });
        }
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| Error::Invalid(format!("image config {}: {e}", manifest.config.digest)))?;
        for l in &manifest.layers {
            if !store.has_blob(&l.digest) {
                import_blob(store, archive, &blob_name(&l.digest), Some(&l.digest))?;
            }
        }
        store.put_blob(&manifest.config.digest, &config_bytes, "image config")?;
        store.put_blob(&manifest_desc.digest, &body, "manifest")?;
        fetch_layers(
            store,
            None,
            "archive",
            &manifest.layers,
            &config.rootfs.diff_ids,
            3,
            &NoProgress,
        )?;
        let annotations = desc.annotations.clone().unwrap_or_default();
        let name = annotations
            .get("io.containerd.image.name")
            .or_else(|| annotations.get("org.opencontainers.image.ref.name"))
            .and_then(|n| {
                // A bare tag names no image; a full reference does.
                (n.contains(':') || n.contains('/')).then(|| n.parse::<Reference>().ok())?
            });
        let record = ImageRecord {
            manifest: manifest_desc.digest.clone(),
            manifest_media_type: manifest_desc.media_type.clone(),
            index: None,
            repo_digests: Vec::new(),
            added: now_rfc3339(),
        };
        store.add_image(record, &manifest.config.digest, name.as_ref())?;
        out.images
            .push((manifest.config.digest.clone(), name.into_iter().collect()));
    }
    Ok(out)
}

/// Records an image made here (loaded, imported, committed): its config
/// and layer blobs must be in the store; unpacks its layers and writes a
/// manifest of `manifest_type` for it.
pub fn add_local_image(
    store: &Store,
    config_bytes: &[u8],
    config: &ImageConfig,
    layers: Vec<Descriptor>,
    manifest_type: &str,
    names: &[Reference],
) -> Result<Digest> {
    let config_digest = Digest::of(config_bytes);
    let config_type = if manifest_type == manifest::DOCKER_MANIFEST {
        manifest::DOCKER_CONFIG
    } else {
        manifest::OCI_CONFIG
    };
    let m = Manifest {
        schema_version: 2,
        media_type: Some(manifest_type.to_string()),
        config: Descriptor {
            media_type: config_type.to_string(),
            digest: config_digest.clone(),
            size: config_bytes.len() as u64,
            platform: None,
            annotations: None,
            urls: None,
        },
        layers,
        annotations: None,
    };
    let body = serde_json::to_vec(&m).map_err(|e| Error::Invalid(e.to_string()))?;
    let manifest_digest = Digest::of(&body);
    let mut leased = vec![config_digest.clone(), manifest_digest.clone()];
    leased.extend(m.layers.iter().map(|l| l.digest.clone()));
    leased.extend(manifest::chain_ids(&config.rootfs.diff_ids));
    let _lease = store.lease(&leased)?;
    store.put_blob(&config_digest, config_bytes, "image config")?;
    store.put_blob(&manifest_digest, &body, "manifest")?;
    fetch_layers(
        store,
        None,
        "image",
        &m.layers,
        &config.rootfs.diff_ids,
        3,
        &NoProgress,
    )?;
    let record = ImageRecord {
        manifest: manifest_digest,
        manifest_media_type: manifest_type.to_string(),
        index: None,
        repo_digests: Vec::new(),
        added: now_rfc3339(),
    };
    store.add_image(record, &config_digest, names.first())?;
    for n in names.iter().skip(1) {
        store.tag(&config_digest, n)?;
    }
    Ok(config_digest)
}

/// Stores a layer tar (compressed or not) as an uncompressed layer blob.
/// Returns its descriptor; its digest is also its diff id.
pub fn add_layer(store: &Store, input: impl Read + Send) -> Result<Descriptor> {
    let tmp: PathBuf = store.root().join("ingest").join(temp_name("layer"));
    let res = (|| {
        let mut head = BufReader::with_capacity(256 << 10, input);
        let kind =
            manifest::Compression::sniff(head.fill_buf().ctx(|| "read the layer".to_string())?);
        let mut decoded = unpack::decompressor(head, kind).ctx(|| "read the layer".to_string())?;
        let mut w =
            DigestWriter::new(File::create(&tmp).ctx(|| format!("create {}", tmp.display()))?);
        io::copy(&mut decoded, &mut w).ctx(|| "read the layer".to_string())?;
        let (_, digest, size) = w.finish();
        if store.has_blob(&digest) {
            let _ = fs::remove_file(&tmp);
        } else {
            store.commit_blob_file(&tmp, &digest)?;
        }
        Ok(Descriptor {
            media_type: manifest::OCI_LAYER.to_string(),
            digest,
            size,
            platform: None,
            annotations: None,
            urls: None,
        })
    })();
    let _ = fs::remove_file(&tmp);
    res
}

/// `import`: a root filesystem tar becomes a one-layer image.
pub fn import(
    store: &Store,
    input: impl Read + Send,
    names: &[Reference],
    changes: Option<serde_json::Value>,
) -> Result<Digest> {
    let layer = add_layer(store, input)?;
    let platform = manifest::Platform::host();
    let now = now_rfc3339();
    let config = ImageConfig {
        created: Some(now.clone()),
        architecture: platform.architecture,
        os: platform.os,
        variant: platform.variant,
        config: changes,
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![layer.digest.clone()],
        },
        history: vec![
            serde_json::json!({"created": now, "created_by": "hako import", "comment": "Imported from tarball"}),
        ],
        ..Default::default()
    };
    let bytes = serde_json::to_vec(&config).map_err(|e| Error::Invalid(e.to_string()))?;
    add_local_image(
        store,
        &bytes,
        &config,
        vec![layer],
        manifest::OCI_MANIFEST,
        names,
    )
}
