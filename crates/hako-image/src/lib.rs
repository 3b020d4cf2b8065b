//! hako-image: OCI images. References, registries (the OCI distribution
//! API), a content-addressed store, pull and push, layer unpack into
//! overlayfs form, snapshots for containers, and save/load archives.
//!
//! Nothing here depends on the runtime: a tool that only pulls can use it.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod archive;
pub mod auth;
mod diff;
pub mod digest;
mod dirfd;
pub mod error;
pub mod manifest;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod store;
pub mod unpack;

pub use digest::Digest;
pub use error::{Error, Result};
pub use manifest::{Compression, Descriptor, ImageConfig, Index, Manifest, Platform};
pub use reference::Reference;
pub use registry::{Client, RegistryConfig, RegistryError};
pub use store::{Image, Store};
