// SCAFFOLD (not committed)
use std::io::Read;
#[derive(Clone, Debug, Default)]
pub struct RegistryConfig {
    pub insecure: Vec<String>,
    pub mirrors: std::collections::BTreeMap<String, Vec<String>>,
    pub auth: crate::auth::AuthStore,
    pub user_agent: Option<String>,
}
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("x")]
    X,
}
pub struct Client;
pub struct FetchedManifest {
    pub body: Vec<u8>,
    pub media_type: String,
    pub digest: crate::Digest,
}
pub struct BlobReader;
impl Read for BlobReader {
    fn read(&mut self, _b: &mut [u8]) -> std::io::Result<usize> {
        todo!()
    }
}
impl Client {
    pub fn new(_config: RegistryConfig) -> Client {
        todo!()
    }
    pub fn get_manifest(
        &self,
        _r: &crate::Reference,
        _reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        todo!()
    }
    pub fn open_blob(
        &self,
        _r: &crate::Reference,
        _digest: &crate::Digest,
        _offset: u64,
    ) -> Result<BlobReader, RegistryError> {
        todo!()
    }
    pub fn blob_exists(
        &self,
        _r: &crate::Reference,
        _digest: &crate::Digest,
    ) -> Result<Option<u64>, RegistryError> {
        todo!()
    }
    pub fn mount_blob(
        &self,
        _r: &crate::Reference,
        _digest: &crate::Digest,
        _from_repository: &str,
    ) -> Result<bool, RegistryError> {
        todo!()
    }
    pub fn push_blob(
        &self,
        _r: &crate::Reference,
        _digest: &crate::Digest,
        _size: u64,
        _open: &dyn Fn() -> std::io::Result<Box<dyn std::io::Read + Send>>,
        _chunk_size: Option<u64>,
    ) -> Result<(), RegistryError> {
        todo!()
    }
    pub fn put_manifest(
        &self,
        _r: &crate::Reference,
        _reference: &str,
        _media_type: &str,
        _body: &[u8],
    ) -> Result<crate::Digest, RegistryError> {
        todo!()
    }
    pub fn check_login(
        &self,
        _registry: &str,
        _creds: &crate::auth::Credentials,
    ) -> Result<(), RegistryError> {
        todo!()
    }
}
