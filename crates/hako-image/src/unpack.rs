// SCAFFOLD (not committed)
use std::io::{Read, Write};
use std::path::Path;
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("x")]
    X,
}
pub struct UnpackStats {
    pub entries: u64,
    pub bytes: u64,
}
pub fn decompressor<'a, R: Read + Send + 'a>(
    _r: R,
    _c: crate::Compression,
) -> std::io::Result<Box<dyn Read + Send + 'a>> {
    todo!()
}
pub fn unpack(_tar: impl Read, _dest: &Path) -> Result<UnpackStats, UnpackError> {
    todo!()
}
pub fn apply_copy(_layer: &Path, _target: &Path) -> Result<UnpackStats, UnpackError> {
    todo!()
}
pub fn export_diff(_upper: &Path, _out: impl Write) -> Result<u64, UnpackError> {
    todo!()
}
pub fn export_diff_between(
    _base: &Path,
    _changed: &Path,
    _out: impl Write,
) -> Result<u64, UnpackError> {
    todo!()
}
