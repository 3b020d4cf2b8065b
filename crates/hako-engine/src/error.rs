use std::path::Path;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("state database: {0}")]
    Db(String),
    #[error("state is damaged: {0}")]
    Corrupt(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] hako_image::error::Error),
    #[error(transparent)]
    Runtime(#[from] hako_runtime::Error),
    /// An external runtime (`--runtime`) failed: its binary and its words.
    #[error(transparent)]
    External(#[from] hako_monitor::ExternalError),
    #[error(transparent)]
    Cgroup(#[from] hako_cgroups::Error),
    #[error("network: {0}")]
    Network(String),
    #[error(transparent)]
    Volume(#[from] crate::volumes::VolumeError),
    /// The container could not start; Docker's exit codes: 126 when the
    /// program cannot be run, 127 when it is not there.
    #[error("{message}")]
    Start { message: String, code: i32 },
}

impl Error {
    pub fn db(path: &Path, e: rusqlite::Error) -> Error {
        Error::Db(format!("{}: {e}", path.display()))
    }

    pub fn sql(e: rusqlite::Error) -> Error {
        Error::Db(e.to_string())
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// `.ctx("what")` on I/O results.
pub trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(what(), e))
    }
}
