//! The runtime library's error type.

use std::path::PathBuf;

/// Everything the runtime library can fail with. Messages are lower-case and
/// say what failed on what, so that the binary can print them as they are.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {field}: {message}")]
    InvalidConfig {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error(
        "container id {0:?} is invalid: use 1-1024 characters of letters, digits, '_', '+', '-' and '.', not starting with '.'"
    )]
    InvalidId(String),
    #[error("container {0:?} already exists (delete it first, or pick another id)")]
    Exists(String),
    #[error("container {0:?} does not exist")]
    NotFound(String),
    #[error("container {id:?} is {status}: {action} needs it {needed}")]
    WrongState {
        id: String,
        status: String,
        action: &'static str,
        needed: &'static str,
    },
    #[error("{context}: {source}")]
    Sys { context: String, source: nix::Error },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] hako_cgroups::Error),
    #[error("seccomp: {0}")]
    Seccomp(String),
    #[error("{0}")]
    Init(String),
    #[error("{kind} hook {path}: {message}")]
    Hook {
        kind: String,
        path: PathBuf,
        message: String,
    },
    #[error("exec {program:?}: {message}")]
    Exec {
        program: String,
        message: String,
        not_found: bool,
    },
    #[error("state of container {id:?} is unreadable ({path}): {message}")]
    CorruptState {
        id: String,
        path: PathBuf,
        message: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Adds a description of the operation to a low-level error.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, nix::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Sys {
            context: what(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: what(),
            source,
        })
    }
}
