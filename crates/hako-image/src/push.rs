//! Push: the layers the registry lacks (mounted from another repository
//! of the same registry when the image came from there), the config, then
//! the manifest under the tag.

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::reference::Reference;
use crate::registry::Client;
use crate::store::{Image, Store};
use std::fs::File;
use std::io::Read;

#[derive(Clone, Debug)]
pub enum PushEvent {
    Preparing { digests: Vec<Digest> },
    Exists { digest: Digest },
    Mounted { digest: Digest, from: String },
    Pushed { digest: Digest, size: u64 },
}

#[derive(Clone, Debug, Default)]
pub struct PushOptions {
    /// Upload in chunks of this size instead of one request.
    pub chunk_size: Option<u64>,
}

#[derive(Debug)]
pub struct Pushed {
    pub digest: Digest,
    pub size: u64,
}

/// Pushes `image` as `target`.
pub fn push(
    store: &Store,
    client: &Client,
    image: &Image,
    target: &Reference,
    opts: &PushOptions,
    progress: &dyn Fn(PushEvent),
) -> Result<Pushed> {
    let mut blobs: Vec<(Digest, u64)> = image
        .manifest
        .layers
        .iter()
        .map(|l| (l.digest.clone(), l.size))
        .collect();
    blobs.push((
        image.manifest.config.digest.clone(),
        image.manifest.config.size,
    ));
    progress(PushEvent::Preparing {
        digests: blobs.iter().map(|(d, _)| d.clone()).collect(),
    });
    // Repositories of the same registry that already hold this image.
    let sources: Vec<String> = image
        .record
        .repo_digests
        .iter()
        .filter_map(|rd| rd.split_once('@').map(|(name, _)| name.to_string()))
        .filter_map(|name| name.parse::<Reference>().ok())
        .filter(|r| r.registry == target.registry && r.repository != target.repository)
        .map(|r| r.repository)
        .collect();
    for (digest, size) in &blobs {
        let path = store.blob_path(digest);
        if !path.exists() {
            return Err(Error::Invalid(format!(
                "blob {digest} of image {} is not in the store; pull the image again before pushing it",
                image.id.short()
            )));
        }
        if client.blob_in_registry(target, digest)?.is_some() {
            progress(PushEvent::Exists {
                digest: digest.clone(),
            });
            continue;
        }
        let mut mounted = false;
        for from in &sources {
            if client.mount_blob(target, digest, from)? {
                progress(PushEvent::Mounted {
                    digest: digest.clone(),
                    from: from.clone(),
                });
                mounted = true;
                break;
            }
        }
        if mounted {
            continue;
        }
        let open = || -> std::io::Result<Box<dyn Read + Send>> { Ok(Box::new(File::open(&path)?)) };
        client.push_blob(target, digest, *size, &open, opts.chunk_size)?;
        progress(PushEvent::Pushed {
            digest: digest.clone(),
            size: *size,
        });
    }
    let body = store.read_blob(&image.record.manifest)?;
    let reference = target.manifest_reference();
    let digest =
        client.put_manifest(target, &reference, &image.record.manifest_media_type, &body)?;
    if digest != image.record.manifest {
        return Err(Error::DigestMismatch {
            what: format!("manifest pushed to {target}"),
            expected: image.record.manifest.clone(),
            actual: digest,
        });
    }
    store.add_repo_digest(&image.id, format!("{}@{digest}", target.name()))?;
    let size = std::fs::metadata(store.blob_path(&digest))
        .ctx(|| format!("stat manifest {digest}"))?
        .len();
    Ok(Pushed { digest, size })
}
