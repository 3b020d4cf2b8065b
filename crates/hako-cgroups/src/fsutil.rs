//! The few file operations cgroupfs needs, with errors that name the file.

use std::os::fd::OwnedFd;
use std::path::Path;

use crate::{Error, Result};

pub fn read_trim(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// One write(2) of the whole value, as cgroupfs expects; no create, no
/// truncate dance.
pub fn write_file(path: &Path, value: &str) -> Result<()> {
    use std::io::Write;
    let err = |source| Error::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(err)?;
    f.write_all(value.as_bytes()).map_err(err)
}

pub fn open_dir(path: &Path) -> Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
}
