// SCAFFOLD (not committed)
use std::path::PathBuf;
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}
#[derive(Clone, Debug, Default)]
pub struct AuthStore;
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("x")]
    X,
}
impl AuthStore {
    pub fn from_env() -> AuthStore {
        todo!()
    }
    pub fn with_files(_hako_file: PathBuf, _docker_file: Option<PathBuf>) -> AuthStore {
        todo!()
    }
    pub fn get(&self, _registry: &str) -> Result<Option<Credentials>, AuthError> {
        todo!()
    }
    pub fn store(&self, _registry: &str, _creds: &Credentials) -> Result<(), AuthError> {
        todo!()
    }
    pub fn remove(&self, _registry: &str) -> Result<bool, AuthError> {
        todo!()
    }
}
