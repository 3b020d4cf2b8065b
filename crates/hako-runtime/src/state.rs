//! Runtime state on disk: one directory per container under `--root`,
//! holding `state.json` (written atomically), the exec fifo and a lock.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Context, Error, Result};
use crate::sys;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Stopped,
    Paused,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
            Status::Paused => "paused",
        })
    }
}

/// What the runtime remembers of a container between invocations.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    pub pid: i32,
    /// /proc start time of `pid`, so that a reused pid is not mistaken for
    /// the container's init.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: u32,
    pub annotations: HashMap<String, String>,
    pub cgroup: Option<hako_cgroups::Cgroup>,
    /// The configuration the container was created with: `exec` and the
    /// hooks use it even if the bundle changed since.
    pub config: Box<RawValue>,
    /// The config's hooks, at hand for start and delete without parsing
    /// the whole config.
    #[serde(default)]
    pub hooks: Option<oci_spec::runtime::Hooks>,
    /// linux.netDevices as (name on the host, name in the container), to
    /// move back on delete.
    #[serde(default)]
    pub net_devices: Vec<(String, String)>,
}

/// The state JSON of the runtime-spec (and runc's extra fields).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    pub oci_version: String,
    pub id: String,
    pub status: Status,
    pub pid: i32,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

pub const OCI_VERSION: &str = "1.2.0";

pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_string()))
    }
}

pub struct StateDir {
    pub dir: PathBuf,
}

impl StateDir {
    pub fn new(root: &Path, id: &str) -> Result<StateDir> {
        validate_id(id)?;
        Ok(StateDir { dir: root.join(id) })
    }

    pub fn fifo(&self) -> PathBuf {
        self.dir.join("exec.fifo")
    }

    fn file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Makes the directory; fails if the container exists already.
    pub fn create(&self, id: &str) -> Result<()> {
        if let Some(root) = self.dir.parent() {
            std::fs::create_dir_all(root)
                .context(|| format!("create state root {}", root.display()))?;
        }
        match std::fs::create_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Error::Exists(id.to_string()))
            }
            Err(e) => Err(e).context(|| format!("create {}", self.dir.display())),
        }
    }

    /// An exclusive lock on the container for the rest of this command.
    pub fn lock(&self, id: &str) -> Result<File> {
        let f = File::open(&self.dir).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(id.to_string())
            } else {
                Error::Io {
                    context: format!("open {}", self.dir.display()),
                    source: e,
                }
            }
        })?;
        f.lock()
            .context(|| format!("lock {}", self.dir.display()))?;
        Ok(f)
    }

    pub fn save(&self, s: &ContainerState) -> Result<()> {
        let tmp = self.dir.join(".state.json.tmp");
        let data = serde_json::to_vec(s).map_err(|e| Error::Init(format!("encode state: {e}")))?;
        let mut f = File::create(&tmp).context(|| format!("write {}", tmp.display()))?;
        f.write_all(&data)
            .context(|| format!("write {}", tmp.display()))?;
        // The rename makes the write atomic for readers and for a runtime
        // killed mid-way. No fsync: runtime state describes processes,
        // which do not outlive the machine, so it only has to outlive this
        // process, and an fsync on a disk-backed root costs milliseconds.
        std::fs::rename(&tmp, self.file()).context(|| format!("rename {}", tmp.display()))
    }

    pub fn load(&self, id: &str) -> Result<ContainerState> {
        let data = std::fs::read(self.file()).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(id.to_string())
            } else {
                Error::Io {
                    context: format!("read {}", self.file().display()),
                    source: e,
                }
            }
        })?;
        serde_json::from_slice(&data).map_err(|e| Error::CorruptState {
            id: id.to_string(),
            path: self.file(),
            message: format!("{e} (remove the directory to forget the container)"),
        })
    }

    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).context(|| format!("remove {}", self.dir.display())),
        }
    }
}

impl ContainerState {
    /// The configuration, typed.
    pub fn spec(&self) -> Result<oci_spec::runtime::Spec> {
        serde_json::from_str(self.config.get()).map_err(|e| Error::CorruptState {
            id: self.id.clone(),
            path: PathBuf::from("state.json"),
            message: format!("config: {e}"),
        })
    }

    /// Whether the recorded init process still exists (and is not a zombie).
    pub fn init_alive(&self) -> bool {
        self.pid > 0
            && sys::process_start_time(self.pid) == Some(self.pid_start)
            && !matches!(sys::process_state(self.pid), Some('Z') | Some('X') | None)
    }

    pub fn status(&self, dir: &StateDir) -> Status {
        // Read under the container's lock: a pid of 0 means that the create
        // which wrote it died before finishing.
        if !self.init_alive() {
            return Status::Stopped;
        }
        if dir.fifo().exists() {
            return Status::Created;
        }
        if let Some(cg) = &self.cgroup
            && cg.is_frozen().unwrap_or(false)
        {
            return Status::Paused;
        }
        Status::Running
    }

    pub fn oci(&self, status: Status) -> OciState {
        OciState {
            oci_version: OCI_VERSION.to_string(),
            id: self.id.clone(),
            status,
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            owner: String::new(),
            annotations: self.annotations.clone(),
        }
    }
}

/// RFC 3339 time in UTC with nanoseconds, as runc prints `created`.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "abc-1.2_3+x", "x".repeat(1024).as_str()] {
            validate_id(ok).unwrap();
        }
        for bad in ["", ".x", "a/b", "..", "a b", &"x".repeat(1025)] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_000), (2024, 10, 4));
        assert!(now_rfc3339().ends_with('Z'));
    }
}
