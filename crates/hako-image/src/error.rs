//! The crate's error: each module's own errors, plus the store's.

use crate::digest::{Digest, DigestError};
use crate::manifest::{ManifestError, PlatformError};
use crate::reference::ReferenceError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error(transparent)]
    Unpack(#[from] crate::unpack::UnpackError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{what}: content does not match its digest: expected {expected}, got {actual}; nothing of it was kept"
    )]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("no such image: {0}")]
    ImageNotFound(String),
    #[error(
        "image reference {name:?} is ambiguous: it matches {count} images; give more of the id"
    )]
    Ambiguous { name: String, count: usize },
    #[error("{0}")]
    Invalid(String),
    #[error("the store at {root} is damaged: {what}")]
    Corrupt { root: String, what: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds what was being done to an io::Error.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            what: what(),
            source,
        })
    }
}
