//! hako-cgroups: a container's cgroup on cgroup v1, v2 and the hybrid
//! layout (v1 controllers plus a cgroup2 tree beside them).
//!
//! Every controller is looked up where the host has it: a v1 hierarchy when
//! one is mounted for it, the cgroup2 tree otherwise. So one code path
//! serves all three layouts, and on a hybrid host a controller that no v1
//! hierarchy holds (hugetlb, typically) is still usable through cgroup2.

mod devices;
mod fsutil;
pub mod hierarchy;
mod resources;
mod stats;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use devices::{DeviceRule, DeviceType, Devices};
pub use hierarchy::{Hierarchies, Layout};
pub use stats::Stats;

use fsutil::{read_trim, write_file};

/// What can go wrong with a cgroup. Messages say what failed on what.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no cgroup filesystem is mounted: mount cgroup2 on /sys/fs/cgroup (or the v1 hierarchies)"
    )]
    NoCgroupFs,
    #[error("cgroupsPath {path:?}: {message}")]
    BadPath { path: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: std::io::Error,
    },
    #[error("linux.resources.{field}: {message}")]
    Resource { field: String, message: String },
    #[error("device filter: {0}")]
    Bpf(String),
    #[error("cgroup {path} is still in use after {waited:?}: {message}")]
    Busy {
        path: PathBuf,
        waited: Duration,
        message: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// A container's directory in one v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Dir {
    pub controllers: Vec<String>,
    /// The hierarchy's mountpoint, whose last component names it inside a
    /// container (`/sys/fs/cgroup/<name>`).
    pub mountpoint: PathBuf,
    pub dir: PathBuf,
}

/// A container's directory in the cgroup2 tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V2Dir {
    pub mountpoint: PathBuf,
    pub dir: PathBuf,
}

impl V2Dir {
    /// The controllers enabled for this cgroup (its `cgroup.controllers`).
    pub fn controllers(&self) -> Vec<String> {
        read_trim(&self.dir.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }
}

/// Where a controller lives for this cgroup.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Place<'a> {
    V1(&'a Path),
    V2(&'a Path),
}

/// One container's cgroup across all hierarchies. Serializable, so the
/// runtime keeps it in its state and later commands need no rediscovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    /// The cgroup path inside each hierarchy (absolute, as resolved).
    pub path: String,
    pub layout: Layout,
    pub v1: Vec<V1Dir>,
    pub v2: Option<V2Dir>,
    /// Directories `create` made, parents first; `destroy` removes them.
    #[serde(default)]
    pub created: Vec<PathBuf>,
}

/// Moves the calling thread into the cgroups whose `tasks` files these are
/// (from [`Cgroup::open_v1_tasks`]); in a single-threaded process, that is
/// the whole process.
///
/// Why not the pid into `cgroup.procs`, from the outside: moving a process
/// takes the cgroup core's global threadgroup lock for writing, and the
/// first such move after an idle spell waits for an RCU grace period
/// (5–15 ms on an idle host, most of a container's start). A thread that
/// moves itself, by writing "0" to `tasks`, is spared that lock.
pub fn join_self(tasks: &[OwnedFd]) -> std::result::Result<(), JoinError> {
    use std::os::fd::AsRawFd;
    for fd in tasks {
        loop {
            match nix::unistd::write(fd, b"0") {
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => {}
                Err(errno) => {
                    // Which file, as the process sees it: what to look at.
                    let tasks = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                        .unwrap_or_default();
                    return Err(JoinError { tasks, errno });
                }
            }
        }
    }
    Ok(())
}

/// A [`join_self`] the kernel refused.
#[derive(Debug, thiserror::Error)]
#[error("join the cgroup: write 0 to {}: {errno}", tasks.display())]
pub struct JoinError {
    /// The `tasks` file written to.
    pub tasks: PathBuf,
    pub errno: nix::errno::Errno,
}

/// How long `destroy` waits for the kernel to let go of a cgroup whose
/// processes have been killed.
const REMOVE_PATIENCE: Duration = Duration::from_secs(5);

/// How long freezing or thawing may take.
const FREEZE_PATIENCE: Duration = Duration::from_secs(10);

impl Cgroup {
    /// Resolves a `linux.cgroupsPath`: absolute paths are taken from the
    /// root of each hierarchy, relative ones (and, when `path` is empty,
    /// `default_name`) from this process's own cgroup, as other runtimes do.
    pub fn resolve(h: &Hierarchies, path: &str, default_name: &str) -> Result<Cgroup> {
        let given = if path.is_empty() { default_name } else { path };
        if given.contains(':') {
            return Err(Error::BadPath {
                path: given.into(),
                message: "looks like a systemd slice:prefix:name path; use the systemd cgroup driver for it, or give a plain path such as /hako/ID".into(),
            });
        }
        if Path::new(given)
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(Error::BadPath {
                path: given.into(),
                message: "must not contain '..'".into(),
            });
        }
        let absolute = given.starts_with('/');
        let inner = |own: &str| -> String {
            let joined = if absolute {
                given.to_string()
            } else {
                format!("{}/{}", own.trim_end_matches('/'), given)
            };
            normalize(&joined)
        };
        let v1: Vec<V1Dir> =
            h.v1.iter()
                .map(|m| V1Dir {
                    controllers: m.controllers.clone(),
                    mountpoint: m.mountpoint.clone(),
                    dir: hierarchy::dir_in(&m.mountpoint, &m.root, &inner(&m.own)),
                })
                .collect();
        let v2 = h.v2.as_ref().map(|m| V2Dir {
            mountpoint: m.mountpoint.clone(),
            dir: hierarchy::dir_in(&m.mountpoint, &m.root, &inner(&m.own)),
        });
        let display = inner(h.v2.as_ref().map_or("/", |m| m.own.as_str()));
        let cg = Cgroup {
            path: display,
            layout: h.layout(),
            v1,
            v2,
            created: Vec::new(),
        };
        if cg.all_dirs().iter().any(|d| cg.is_hierarchy_root(d)) {
            return Err(Error::BadPath {
                path: given.into(),
                message: "names the root of a hierarchy; a container needs a cgroup of its own"
                    .into(),
            });
        }
        Ok(cg)
    }

    fn is_hierarchy_root(&self, dir: &Path) -> bool {
        self.v1.iter().any(|d| d.mountpoint == dir)
            || self.v2.as_ref().is_some_and(|d| d.mountpoint == dir)
    }

    /// Every directory of this cgroup, v1 hierarchies first.
    pub fn all_dirs(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self.v1.iter().map(|d| d.dir.clone()).collect();
        if let Some(v2) = &self.v2 {
            out.push(v2.dir.clone());
        }
        out
    }

    pub(crate) fn place(&self, controller: &str) -> Option<Place<'_>> {
        if let Some(d) = self
            .v1
            .iter()
            .find(|d| d.controllers.iter().any(|c| c == controller))
        {
            return Some(Place::V1(&d.dir));
        }
        let v2 = self.v2.as_ref()?;
        // Devices (an eBPF program) and the freezer (cgroup.freeze) are part
        // of cgroup2's core rather than listed controllers.
        let core = matches!(controller, "devices" | "freezer");
        if core || v2.controllers().iter().any(|c| c == controller) {
            Some(Place::V2(&v2.dir))
        } else {
            None
        }
    }

    /// Makes the directories. On a pure v2 host every available controller
    /// is enabled on the way down, as other runtimes do; on a hybrid host
    /// the cgroup2 tree serves mainly to track processes, and a controller
    /// is enabled there only when a resource needs it (see
    /// `enable_v2_controller`). A new v1 cpuset is seeded with its parent's
    /// cpus and mems, without which it could hold no process.
    /// On failure, what it made is removed again.
    pub fn create(&mut self) -> Result<()> {
        let made = self.created.len();
        let result = self.make_dirs();
        if result.is_err() {
            for dir in self.created.drain(made..).rev() {
                let _ = std::fs::remove_dir(dir);
            }
        }
        result
    }

    fn make_dirs(&mut self) -> Result<()> {
        for d in self.v1.clone() {
            let cpuset = d.controllers.iter().any(|c| c == "cpuset");
            self.mkdir_chain(&d.mountpoint, &d.dir, |parent, dir| {
                if cpuset {
                    for f in ["cpuset.cpus", "cpuset.mems"] {
                        let v = read_trim(&parent.join(f))?;
                        write_file(&dir.join(f), &v)?;
                    }
                }
                Ok(())
            })?;
        }
        if let Some(v2) = self.v2.clone() {
            let all = self.layout == Layout::V2;
            self.mkdir_chain(&v2.mountpoint, &v2.dir, |parent, _| {
                if all {
                    enable_controllers(parent, None);
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Enables a cgroup2 controller from the hierarchy's root down to this
    /// cgroup; true when the cgroup then has it.
    pub(crate) fn enable_v2_controller(&self, controller: &str) -> bool {
        let Some(v2) = &self.v2 else { return false };
        let Ok(rel) = v2.dir.strip_prefix(&v2.mountpoint) else {
            return false;
        };
        let mut parent = v2.mountpoint.clone();
        for comp in rel.components() {
            enable_controllers(&parent, Some(controller));
            parent.push(comp);
        }
        v2.controllers().iter().any(|c| c == controller)
    }

    /// `mkdir -p` from a hierarchy root down to `dir`, recording what it
    /// made; `init(parent, new)` runs on each new directory.
    fn mkdir_chain(
        &mut self,
        root: &Path,
        dir: &Path,
        init: impl Fn(&Path, &Path) -> Result<()>,
    ) -> Result<()> {
        let rel = dir.strip_prefix(root).map_err(|_| Error::BadPath {
            path: dir.display().to_string(),
            message: format!("is not below {}", root.display()),
        })?;
        let mut cur = root.to_path_buf();
        for comp in rel.components() {
            let parent = cur.clone();
            cur.push(comp);
            match std::fs::create_dir(&cur) {
                Ok(()) => {
                    self.created.push(cur.clone());
                    init(&parent, &cur)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // The v2 controllers must be on in every ancestor even
                    // when the ancestors exist already.
                    if self.v2.as_ref().is_some_and(|v| v.mountpoint == root) {
                        init(&parent, &cur)?;
                    }
                }
                Err(source) => return Err(Error::Io { path: cur, source }),
            }
        }
        Ok(())
    }

    /// The cgroup2 directory, opened for `clone3(CLONE_INTO_CGROUP)`.
    pub fn open_v2_dir(&self) -> Option<Result<OwnedFd>> {
        let v2 = self.v2.as_ref()?;
        Some(fsutil::open_dir(&v2.dir))
    }

    /// The `tasks` file of each v1 hierarchy's directory, opened for
    /// writing: how a process joins the cgroup itself ([`join_self`]).
    /// The kernel checks the credentials of the opener, so a process that
    /// may no longer open them (in a user namespace, say) can still use
    /// these.
    pub fn open_v1_tasks(&self) -> Result<Vec<OwnedFd>> {
        use std::os::unix::fs::OpenOptionsExt;
        self.v1
            .iter()
            .map(|d| {
                let path = d.dir.join("tasks");
                std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(&path)
                    .map(OwnedFd::from)
                    .map_err(|source| Error::Io { path, source })
            })
            .collect()
    }

    /// Moves a process into the cgroup in every hierarchy, from outside
    /// (which may wait for an RCU grace period: a container's processes
    /// join with [`join_self`] and a clone into the cgroup2 tree instead).
    pub fn add_task(&self, pid: i32) -> Result<()> {
        let pid = pid.to_string();
        for d in &self.v1 {
            write_file(&d.dir.join("cgroup.procs"), &pid)?;
        }
        if let Some(v2) = &self.v2 {
            write_file(&v2.dir.join("cgroup.procs"), &pid)?;
        }
        Ok(())
    }

    /// Applies `linux.resources`, devices included. Returns warnings for
    /// settings the kernel no longer honours.
    pub fn apply(&self, res: &oci_spec::runtime::LinuxResources) -> Result<Vec<String>> {
        resources::apply(self, res)
    }

    /// Whether the cgroup is frozen (paused).
    pub fn is_frozen(&self) -> Result<bool> {
        match self.place("freezer") {
            Some(Place::V1(dir)) => Ok(read_trim(&dir.join("freezer.state"))? != "THAWED"),
            Some(Place::V2(dir)) => Ok(read_trim(&dir.join("cgroup.freeze"))? == "1"),
            None => Ok(false),
        }
    }

    pub fn freeze(&self) -> Result<()> {
        self.set_frozen(true)
    }

    pub fn thaw(&self) -> Result<()> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        match self.place("freezer") {
            Some(Place::V1(dir)) => {
                let want = if frozen { "FROZEN" } else { "THAWED" };
                let file = dir.join("freezer.state");
                // Freezing can stall on a task in an uninterruptible sleep;
                // writing again retries it.
                wait_until(dir, &format!("freezer.state to read {want}"), || {
                    write_file(&file, want)?;
                    Ok(read_trim(&file)? == want)
                })
            }
            Some(Place::V2(dir)) => {
                write_file(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
                let want = if frozen { "frozen 1" } else { "frozen 0" };
                wait_until(dir, &format!("cgroup.events to show {want:?}"), || {
                    Ok(read_trim(&dir.join("cgroup.events"))?
                        .lines()
                        .any(|l| l == want))
                })
            }
            None => Err(Error::Resource {
                field: "freezer".into(),
                message: "no freezer: mount the v1 freezer hierarchy or use cgroup v2".into(),
            }),
        }
    }

    /// Every process in the cgroup and its descendants.
    pub fn pids(&self) -> Result<Vec<i32>> {
        // The tree that counts: the one holding the pids controller, else
        // any, all of them hold the same processes.
        let dir = match self.place("pids") {
            Some(Place::V1(d) | Place::V2(d)) => d.to_path_buf(),
            None => match self.all_dirs().into_iter().next() {
                Some(d) => d,
                None => return Ok(Vec::new()),
            },
        };
        let mut out = Vec::new();
        collect_pids(&dir, &mut out)?;
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Sends `signal` to every process in the cgroup. SIGKILL goes through
    /// `cgroup.kill` where the kernel has it, which no fork can outrun;
    /// otherwise the cgroup is frozen while the signal is sent.
    pub fn signal_all(&self, signal: i32) -> Result<()> {
        if signal == libc::SIGKILL
            && let Some(v2) = &self.v2
        {
            let kill = v2.dir.join("cgroup.kill");
            if kill.exists() && write_file(&kill, "1").is_ok() {
                return Ok(());
            }
        }
        // A cgroup that a crashed create never made holds no process.
        if !self.all_dirs().iter().any(|d| d.exists()) {
            return Ok(());
        }
        let freezable = matches!(self.place("freezer"), Some(Place::V1(d) | Place::V2(d)) if d.exists())
            && signal != libc::SIGSTOP;
        let was_frozen = freezable && self.is_frozen().unwrap_or(false);
        if freezable && !was_frozen {
            self.freeze()?;
        }
        let result = self.pids().map(|pids| {
            for pid in pids {
                // SAFETY: kill with plain integers; a pid that exited
                // meanwhile only yields ESRCH.
                unsafe { libc::kill(pid, signal) };
            }
        });
        if freezable && !was_frozen {
            self.thaw()?;
        }
        result
    }

    /// Removes the cgroup (and any sub-cgroups the container made) in every
    /// hierarchy, then the parent directories `create` made if they are
    /// empty. The processes must be gone or going.
    pub fn destroy(&self) -> Result<()> {
        for dir in self.all_dirs() {
            remove_tree(&dir)?;
        }
        for dir in self.created.iter().rev() {
            // Shared parents may hold other containers' cgroups still.
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }

    /// How many processes the OOM killer has killed in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let key = |dir: &Path, file: &str| {
            read_trim(&dir.join(file))
                .unwrap_or_default()
                .lines()
                .find_map(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|v| v.trim().parse().ok())
                })
                .unwrap_or(0)
        };
        match self.place("memory") {
            Some(Place::V1(dir)) => key(dir, "memory.oom_control"),
            Some(Place::V2(dir)) => key(dir, "memory.events"),
            None => 0,
        }
    }

    /// Statistics for `events --stats`.
    pub fn stats(&self) -> Result<Stats> {
        stats::collect(self)
    }

    /// The directories to show inside a container at `/sys/fs/cgroup/NAME`
    /// on a v1 or hybrid host, as (NAME, host directory).
    pub fn v1_mount_sources(&self) -> Vec<(String, PathBuf)> {
        let mut out: Vec<(String, PathBuf)> = self
            .v1
            .iter()
            .filter_map(|d| {
                Some((
                    d.mountpoint.file_name()?.to_string_lossy().into_owned(),
                    d.dir.clone(),
                ))
            })
            .collect();
        if let (Layout::Hybrid, Some(v2)) = (self.layout, &self.v2)
            && let Some(name) = v2.mountpoint.file_name()
        {
            out.push((name.to_string_lossy().into_owned(), v2.dir.clone()));
        }
        out
    }
}

/// Polls `done` every millisecond for up to ten seconds.
fn wait_until(dir: &Path, what: &str, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    while !done()? {
        if start.elapsed() > FREEZE_PATIENCE {
            return Err(Error::Busy {
                path: dir.to_path_buf(),
                waited: start.elapsed(),
                message: format!("waited for {what}"),
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Turns on every controller the parent offers for its children (or just
/// `only`); a controller that cannot be enabled (a parent with processes
/// of its own, say) is left off, and a resource that needs it reports so.
fn enable_controllers(parent: &Path, only: Option<&str>) {
    let available = read_trim(&parent.join("cgroup.controllers")).unwrap_or_default();
    let enabled = read_trim(&parent.join("cgroup.subtree_control")).unwrap_or_default();
    let missing: Vec<String> = available
        .split_whitespace()
        .filter(|c| only.is_none_or(|o| o == *c))
        .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return;
    }
    let file = parent.join("cgroup.subtree_control");
    if write_file(&file, &missing.join(" ")).is_err() {
        for m in missing {
            let _ = write_file(&file, &m);
        }
    }
}

fn collect_pids(dir: &Path, out: &mut Vec<i32>) -> Result<()> {
    let procs = match std::fs::read_to_string(dir.join("cgroup.procs")) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Io {
                path: dir.join("cgroup.procs"),
                source,
            });
        }
    };
    out.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    for sub in subdirs(dir) {
        collect_pids(&sub, out)?;
    }
    Ok(())
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// rmdir of a cgroup and its sub-cgroups, deepest first. A cgroup whose
/// last process is still exiting answers EBUSY for a moment: retry.
fn remove_tree(dir: &Path) -> Result<()> {
    for sub in subdirs(dir) {
        remove_tree(&sub)?;
    }
    let start = Instant::now();
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e)
                if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < REMOVE_PATIENCE =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                let left = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                return Err(Error::Busy {
                    path: dir.to_path_buf(),
                    waited: start.elapsed(),
                    message: format!(
                        "processes still in it: {}",
                        left.split_whitespace().collect::<Vec<_>>().join(" ")
                    ),
                });
            }
            Err(source) => {
                return Err(Error::Io {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
    }
}

/// Collapses `//`, `.` and a trailing `/` in an absolute cgroup path.
fn normalize(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn hybrid() -> Hierarchies {
        Hierarchies::parse(
            "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
             35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
            "4:memory:/jobs/x\n1:cpu:/\n0::/\n",
        )
    }

    #[test]
    fn resolves_absolute_relative_and_default_paths() {
        let h = hybrid();
        let cg = Cgroup::resolve(&h, "/hako/c1", "x").unwrap();
        assert_eq!(cg.v1[1].dir, Path::new("/sys/fs/cgroup/memory/hako/c1"));
        assert_eq!(
            cg.v2.as_ref().unwrap().dir,
            Path::new("/sys/fs/cgroup/unified/hako/c1")
        );
        let cg = Cgroup::resolve(&h, "sub/c2", "x").unwrap();
        assert_eq!(
            cg.v1[1].dir,
            Path::new("/sys/fs/cgroup/memory/jobs/x/sub/c2")
        );
        assert_eq!(cg.v1[0].dir, Path::new("/sys/fs/cgroup/cpu/sub/c2"));
        let cg = Cgroup::resolve(&h, "", "c3").unwrap();
        assert_eq!(cg.v1[1].dir, Path::new("/sys/fs/cgroup/memory/jobs/x/c3"));
        assert_eq!(cg.layout, Layout::Hybrid);
    }

    #[test]
    fn refuses_bad_paths() {
        let h = hybrid();
        for bad in ["/", "/a/../../b", "system.slice:hako:c1"] {
            assert!(Cgroup::resolve(&h, bad, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn places_controllers_where_the_host_has_them() {
        let h = hybrid();
        let cg = Cgroup::resolve(&h, "/c", "x").unwrap();
        assert!(matches!(cg.place("memory"), Some(Place::V1(_))));
        assert!(matches!(cg.place("freezer"), Some(Place::V2(_))));
        assert!(cg.place("pids").is_none());
    }
}
