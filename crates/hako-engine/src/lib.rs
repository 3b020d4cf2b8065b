//! hako-engine: containers without a daemon.
//!
//! State is a SQLite database shared by every `hako` process plus a file
//! lock per container. A running container has a monitor
//! (`hako-monitor`), which is its parent and outlives the command that
//! started it; the engine talks to it over its socket and reads the exit
//! it records. Any command that finds a container whose monitor is gone
//! repairs the record and releases what the container held.

pub mod boot;
pub mod db;
pub mod error;
pub mod files;
pub mod networks;
pub mod rootfs;
pub mod spec;
pub mod volumes;

use error::IoContext;
pub use error::{Error, Result};
use hako_image::snapshot::Snapshotter;
use hako_image::store::Store;
use hako_monitor::{ExitRecord, MonitorConfig, Ready};
pub use hako_monitor::{Request, RestartPolicy};
use hako_net::{Endpoint, Network};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Paused,
    Exited,
    Removing,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Exited => "exited",
            Status::Removing => "removing",
        }
    }

    pub fn parse(s: &str) -> Status {
        match s {
            "running" => Status::Running,
            "paused" => Status::Paused,
            "exited" => Status::Exited,
            "removing" => Status::Removing,
            _ => Status::Created,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    #[default]
    Bind,
    Volume,
    Tmpfs,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MountSpec {
    pub kind: MountKind,
    pub source: String,
    pub target: String,
    pub readonly: bool,
    #[serde(default)]
    pub options: Vec<String>,
    /// A volume made for this container (`-v /path`, an image `VOLUME`):
    /// `rm -v` and `--rm` remove it with the container.
    #[serde(default)]
    pub anonymous: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ulimit {
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

/// What a container was created with: the image's config merged with the
/// options of `create`/`run`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerConfig {
    pub name_hint: Option<String>,
    pub entrypoint: Vec<String>,
    /// `--entrypoint` was given (even empty): the image's Entrypoint and
    /// Cmd are not used.
    pub entrypoint_given: bool,
    pub cmd: Vec<String>,
    /// `-e` and `--env-file` (the image's are in `image_env`).
    pub env: Vec<String>,
    pub image_env: Vec<String>,
    pub workdir: String,
    pub user: String,
    pub tty: bool,
    pub interactive: bool,
    pub auto_remove: bool,
    pub restart: RestartPolicy,
    pub max_restarts: u32,
    pub hostname: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `none`, `host`, `container:ID`, or the first network's name.
    pub network: String,
    /// The networks it joins (for a network of its own).
    pub networks: Vec<networks::NetworkRequest>,
    /// Published ports (`-p`, and `-P`'s exposed ports).
    pub ports: Vec<hako_net::PortMapping>,
    /// `-P`: every port the image exposes, on free host ports.
    pub publish_all: bool,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<u32>,
    pub read_only: bool,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub mounts: Vec<MountSpec>,
    #[serde(flatten)]
    pub resources: Resources,
    pub ulimits: Vec<Ulimit>,
    pub no_new_privileges: bool,
    pub seccomp: SeccompChoice,
    pub sysctls: BTreeMap<String, String>,
    pub group_add: Vec<String>,
    pub add_hosts: Vec<String>,
    pub dns: Vec<String>,
    pub shm_size: Option<u64>,
    /// An external OCI runtime binary.
    pub runtime: Option<PathBuf>,
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// Run from this directory instead of an image (`--rootfs`).
    pub rootfs: Option<PathBuf>,
    /// An init (tini) as the container's first process (`--init`).
    pub init: bool,
    /// Host devices in the container (`--device`).
    pub devices: Vec<DeviceSpec>,
}

/// The limits `run` sets and `update` changes; `None`: none set (for
/// `update`: unchanged).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    pub memory: Option<i64>,
    pub memory_swap: Option<i64>,
    pub cpus: Option<f64>,
    pub cpu_shares: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub pids_limit: Option<i64>,
}

impl Resources {
    /// Takes every value `change` sets.
    pub fn merge(&mut self, change: &Resources) {
        fn take<T: Clone>(to: &mut Option<T>, from: &Option<T>) {
            if from.is_some() {
                to.clone_from(from);
            }
        }
        take(&mut self.memory, &change.memory);
        take(&mut self.memory_swap, &change.memory_swap);
        take(&mut self.cpus, &change.cpus);
        take(&mut self.cpu_shares, &change.cpu_shares);
        take(&mut self.cpuset_cpus, &change.cpuset_cpus);
        take(&mut self.pids_limit, &change.pids_limit);
    }
}

/// What `update` changes.
#[derive(Clone, Debug, Default)]
pub struct ResourceUpdate {
    pub resources: Resources,
    pub restart: Option<(RestartPolicy, u32)>,
}

/// `--security-opt seccomp=…`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeccompChoice {
    /// The default profile (none for `--privileged`).
    #[default]
    Default,
    Unconfined,
    /// A profile given as a file.
    Profile(serde_json::Value),
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DeviceSpec {
    pub host: String,
    pub container: String,
    /// `r`, `w`, `m` as the device cgroup spells them.
    pub permissions: String,
}

/// Where `--init` finds its init: a static tini, which runs in any image.
pub const INIT_BINARY: &str = "/usr/bin/tini-static";

/// A container as the database records it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub created: String,
    pub config: ContainerConfig,
    pub status: Status,
    pub pid: i32,
    pub monitor_pid: i32,
    pub monitor_start: u64,
    pub started_at: String,
    pub finished_at: String,
    pub exit_code: i32,
    pub restart_count: u32,
    pub error: String,
}

impl Container {
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }

    /// The program and its arguments.
    pub fn command(&self) -> Vec<String> {
        let mut v = self.config.entrypoint.clone();
        v.extend(self.config.cmd.iter().cloned());
        v
    }
}

/// A lock on one container, held for the length of an operation. An
/// operation inside another on the same container (a repair during a
/// start) shares the outer one's lock: a second `flock` of the file from
/// this process would wait for the first forever.
pub struct ContainerLock {
    /// `None` when an outer operation holds the lock.
    _file: Option<fs::File>,
    /// The set this lock is recorded in, and the container's id.
    held: Option<(HeldLocks, String)>,
}

type HeldLocks = std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>;

impl Drop for ContainerLock {
    fn drop(&mut self) {
        if let Some((set, id)) = &self.held {
            set.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        }
    }
}

/// How `start` hands over the container's streams.
pub struct Attached {
    pub stream: BufReader<UnixStream>,
    /// The monitor's directory, for resize and signal requests.
    pub run_dir: PathBuf,
}

impl Attached {
    /// Asks the monitor to pass `req` on (a resize, a signal).
    pub fn send(&self, req: &Request) -> std::io::Result<()> {
        hako_monitor::request(&self.run_dir, req).map(|_| ())
    }
}

/// For a container with a terminal (`tty`): the size of ours, so that its
/// program starts with the size it is seen at.
fn caller_terminal_size(tty: bool) -> Option<(u16, u16)> {
    tty.then(|| terminal_size(std::os::fd::AsFd::as_fd(&std::io::stdin())))
        .flatten()
}

pub use hako_runtime::container::terminal_size;

/// A monitor started and waiting for its go.
struct PendingMonitor {
    go: std::process::ChildStdin,
    out: std::process::ChildStdout,
}

pub struct Engine {
    pub root: PathBuf,
    pub runroot: PathBuf,
    db: db::Db,
    monitor_bin: PathBuf,
    /// The resolver of user networks' names.
    dns_bin: PathBuf,
    /// Where that resolver sends other names (empty: the host's
    /// resolv.conf servers).
    pub dns_upstream: Vec<std::net::SocketAddr>,
    /// The exit command the monitors run: `hako --root … container cleanup`.
    hako_bin: PathBuf,
    store: std::cell::OnceCell<Store>,
    /// Containers whose lock this engine holds.
    held_locks: HeldLocks,
    /// Set by a caller that starts the container it creates (`run`):
    /// `create` spawns its monitor early.
    pub start_soon: bool,
    /// The monitor spawned by `create` for the container of that id (and
    /// whether it runs sealed).
    prespawned: Option<(
        String,
        bool,
        std::thread::JoinHandle<Result<PendingMonitor>>,
    )>,
}

/// The start time of a process (clock ticks after boot), which tells a
/// live process from a later one that got the same pid.
pub fn process_start(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from
    // the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let state = rest.split(' ').next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    rest.split(' ').nth(19)?.parse().ok()
}

/// The pid of the process at the other end of a unix socket.
fn socket_peer_pid(s: &UnixStream) -> Option<i32> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    getsockopt(s, PeerCredentials).ok().map(|c| c.pid())
}

/// Blocks until the process `pid` (started at `start`) has exited; at
/// once if it is not there. Through a pidfd, so no polling.
pub fn wait_process_exit(pid: i32, start: u64) {
    if process_start(pid) != Some(start) {
        return;
    }
    // SAFETY: pidfd_open with a pid and no flags; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let Ok(fd) = i32::try_from(fd) else { return };
    if fd < 0 {
        return;
    }
    // SAFETY: the kernel just returned this descriptor to us.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // The pid may have been reused between the check and the open.
    if process_start(pid) != Some(start) {
        return;
    }
    let mut fds = [nix::poll::PollFd::new(
        std::os::fd::AsFd::as_fd(&fd),
        nix::poll::PollFlags::POLLIN,
    )];
    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(30_000u16));
}

fn random_id() -> Result<String> {
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .ctx(|| "read /dev/urandom".into())?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Docker-style `adjective_surname` names.
fn random_name(seed: &str) -> String {
    const ADJ: &[&str] = &[
        "brave", "calm", "clever", "eager", "fervent", "gentle", "happy", "keen", "lucid", "nifty",
        "quiet", "serene", "sharp", "swift", "tender", "vibrant", "wise", "zealous",
    ];
    const NAMES: &[&str] = &[
        "curie", "darwin", "euler", "fermi", "gauss", "hopper", "kepler", "lovelace", "noether",
        "pascal", "ritchie", "turing", "volta", "wozniak", "yalow", "zuse", "hamilton", "shannon",
    ];
    let n = u64::from_str_radix(&seed[..8], 16).unwrap_or(0);
    let a = ADJ[usize::try_from(n % ADJ.len() as u64).unwrap_or(0)];
    let b = NAMES[usize::try_from((n / 64) % NAMES.len() as u64).unwrap_or(0)];
    format!("{a}_{b}")
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Does `work` in a child process of its own, for what the caller need
/// not wait for; in this process when it cannot fork. The child outlives
/// a short-lived caller (init adopts it); a long-lived one reaps its
/// ended children at its next call.
pub(crate) fn detached(work: impl FnOnce()) {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    use nix::unistd::{ForkResult, fork};
    static CHILDREN: std::sync::Mutex<Vec<nix::unistd::Pid>> = std::sync::Mutex::new(Vec::new());
    let mut children = CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
    children.retain(|&pid| {
        matches!(
            waitpid(pid, Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::StillAlive)
        )
    });
    // The child starts in this command's process group, which a terminal
    // that hangs up (or a ^C) signals at once: it has all signals blocked
    // until it ignores those and has a session of its own.
    use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
    let mut mask = SigSet::empty();
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), Some(&mut mask));
    // SAFETY: the child only makes syscalls and allocates (glibc makes
    // malloc safe across fork); it ends with _exit, running no destructors
    // of the parent's objects.
    let forked = unsafe { fork() };
    if !matches!(forked, Ok(ForkResult::Child)) {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&mask), None);
    }
    match forked {
        Ok(ForkResult::Child) => {
            // SAFETY: plain syscalls on this process's own signal
            // dispositions and descriptors.
            unsafe {
                for sig in [
                    libc::SIGHUP,
                    libc::SIGINT,
                    libc::SIGQUIT,
                    libc::SIGTSTP,
                    libc::SIGTTIN,
                    libc::SIGTTOU,
                    libc::SIGPIPE,
                ] {
                    libc::signal(sig, libc::SIG_IGN);
                }
                libc::setsid();
                // Nothing of the parent's stays open here: not its locks,
                // not the pipes its caller reads to the end.
                libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null == 0 {
                    libc::dup2(0, 1);
                    libc::dup2(0, 2);
                }
            }
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
            work();
            // SAFETY: ends the child without unwinding into the parent's
            // state.
            unsafe { libc::_exit(0) }
        }
        Ok(ForkResult::Parent { child }) => children.push(child),
        Err(_) => work(),
    }
}

/// A container that may trace its processes (CAP_SYS_PTRACE) gets a
/// monitor run from a sealed copy of its binary.
fn needs_sealed_monitor(config: &ContainerConfig) -> Result<bool> {
    Ok(spec::capabilities(config)?
        .iter()
        .any(|cap| cap == "CAP_SYS_PTRACE"))
}

/// Starts the monitor in a process group of its own, waiting for its
/// config ([`Engine::monitor_go`]). It stays this process's child (no
/// double fork: a `hako` command is short-lived, and the monitor is
/// adopted by init when it ends); no one waits for it here.
fn start_monitor(monitor_bin: &Path, run_dir: &Path, sealed: bool) -> Result<PendingMonitor> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(monitor_bin);
    cmd.arg(run_dir);
    if sealed {
        cmd.arg("--sealed");
    }
    cmd.arg("--wait")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        // A process group of its own from the start, so no signal from
        // this command's terminal reaches it; and no pre_exec, so the
        // spawn is a vfork-like posix_spawn, not a copy of this process.
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("run {}", monitor_bin.display()), e))?;
    let go = child.stdin.take();
    let out = child.stdout.take();
    match (go, out) {
        (Some(go), Some(out)) => Ok(PendingMonitor { go, out }),
        _ => Err(Error::Invalid("the monitor's pipes are missing".into())),
    }
}

pub fn now() -> String {
    hako_runtime::state::now_rfc3339()
}

/// The number of a signal given as `KILL`, `SIGKILL`, `9` or `RTMIN+3`.
pub fn parse_signal(s: &str) -> Result<i32> {
    hako_runtime::parse_signal(s).map_err(Error::Invalid)
}

impl Engine {
    pub fn open(root: &Path, runroot: &Path, hako_bin: &Path) -> Result<Engine> {
        for d in [
            root.join("containers"),
            runroot.join("containers"),
            runroot.join("locks"),
        ] {
            fs::create_dir_all(&d).ctx(|| format!("create {}", d.display()))?;
        }
        let monitor_bin = std::env::var_os("HAKO_MONITOR")
            .map(PathBuf::from)
            .unwrap_or_else(|| hako_bin.with_file_name("hako-monitor"));
        Ok(Engine {
            root: root.to_path_buf(),
            runroot: runroot.to_path_buf(),
            db: db::Db::open(root)?,
            monitor_bin,
            dns_bin: std::env::var_os("HAKO_DNS")
                .map(PathBuf::from)
                .unwrap_or_else(|| hako_bin.with_file_name("hako-dns")),
            dns_upstream: Vec::new(),
            hako_bin: hako_bin.to_path_buf(),
            store: std::cell::OnceCell::new(),
            held_locks: HeldLocks::default(),
            start_soon: false,
            prespawned: None,
        })
    }

    /// The image store, opened once per engine (a `run` asks for it
    /// several times).
    pub fn store(&self) -> Result<&Store> {
        if let Some(s) = self.store.get() {
            return Ok(s);
        }
        let s = Store::open(&self.root)?;
        Ok(self.store.get_or_init(|| s))
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.runroot.join("containers").join(id)
    }

    /// The OCI runtime's state root for a container's runtime.
    pub fn runtime_root(&self, c: &Container) -> PathBuf {
        match &c.config.runtime {
            None => self.runroot.join("runtime"),
            Some(bin) => self.runroot.join("runtimes").join(
                bin.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "external".into()),
            ),
        }
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join(format!("{id}-json.log"))
    }

    pub fn lock(&self, id: &str) -> Result<ContainerLock> {
        let held = || self.held_locks.lock().unwrap_or_else(|e| e.into_inner());
        if held().contains(id) {
            return Ok(ContainerLock {
                _file: None,
                held: None,
            });
        }
        let file = self.run_lock(&format!("{id}.lock"))?;
        held().insert(id.to_string());
        Ok(ContainerLock {
            _file: Some(file),
            held: Some((self.held_locks.clone(), id.to_string())),
        })
    }

    /// An exclusive lock on `<runroot>/locks/NAME`, held while the file
    /// lives.
    pub(crate) fn run_lock(&self, name: &str) -> Result<fs::File> {
        let path = self.runroot.join("locks").join(name);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx(|| format!("open {}", path.display()))?;
        file.lock().ctx(|| format!("lock {}", path.display()))?;
        Ok(file)
    }

    pub fn lookup(&self, what: &str) -> Result<Container> {
        self.db.lookup(what)
    }

    /// Every container, each with its status brought up to date.
    pub fn list(&mut self) -> Result<Vec<Container>> {
        let all = self.db.all()?;
        let mut out = Vec::with_capacity(all.len());
        for c in all {
            match self.refresh(c) {
                Ok(Some(c)) => out.push(c),
                Ok(None) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// A container by id, name or prefix, with its status brought up to date.
    pub fn get(&mut self, what: &str) -> Result<Container> {
        let c = self.db.lookup(what)?;
        let id = c.id.clone();
        self.refresh(c)?
            .ok_or_else(|| Error::NotFound(format!("no such container: {id}")))
    }

    fn monitor_alive(c: &Container) -> bool {
        c.monitor_pid > 0 && process_start(c.monitor_pid) == Some(c.monitor_start)
    }

    /// Makes the record tell the truth: a running container whose monitor
    /// recorded an exit, or whose monitor is gone, is settled and its
    /// resources released. `None` when it was removed meanwhile (`--rm`).
    fn refresh(&mut self, c: Container) -> Result<Option<Container>> {
        if !matches!(
            c.status,
            Status::Running | Status::Paused | Status::Removing
        ) {
            return Ok(Some(c));
        }
        if c.status != Status::Removing {
            let exit = hako_monitor::read_exit(&self.container_dir(&c.id));
            let ended = exit.as_ref().is_some_and(|e| !e.restarting);
            if Self::monitor_alive(&c) && !ended {
                return Ok(Some(self.paused_or_running(c)));
            }
            if Self::monitor_alive(&c) {
                // Exited; its monitor is releasing it right now.
                return Ok(Some(Self::with_exit(c, exit.as_ref())));
            }
        }
        // The monitor is gone: finish its work.
        let id = c.id.clone();
        self.cleanup(&id, None)?;
        self.db.get(&id)
    }

    /// A live container's status: the built-in runtime's state file says
    /// whether it is paused (a read of a small file). An external runtime
    /// would cost a process per container per `ps`, so its record keeps
    /// what `pause` made it, and only a record that says paused is checked
    /// (a container paused behind hako's back shows as running).
    fn paused_or_running(&self, mut c: Container) -> Container {
        let root = self.runtime_root(&c);
        let paused = match &c.config.runtime {
            None => hako_runtime::container::state(&root, &c.id)
                .ok()
                .map(|st| st.status == hako_runtime::state::Status::Paused),
            Some(_) if c.status != Status::Paused => Some(false),
            Some(bin) => hako_monitor::external_state(bin, &root, &c.id)
                .ok()
                .map(|st| st.status == "paused"),
        };
        if let Some(paused) = paused {
            c.status = if paused {
                Status::Paused
            } else {
                Status::Running
            };
        }
        c
    }

    fn with_exit(mut c: Container, exit: Option<&ExitRecord>) -> Container {
        c.status = Status::Exited;
        match exit {
            Some(e) => {
                c.exit_code = e.exit_code;
                c.finished_at = e.finished_at.clone();
                c.restart_count = e.restarts;
                if let Some(err) = &e.error {
                    c.error = err.clone();
                }
            }
            None => {
                // No one saw the exit: Docker's code for "unknown".
                c.exit_code = 255;
                c.finished_at = now();
                c.error = "the container's monitor died; its exit status is unknown".into();
            }
        }
        c
    }

    /// Creates a container from an image (pulled already) or a root
    /// directory (`config.rootfs`).
    pub fn create(
        &mut self,
        image_name: &str,
        image: Option<&hako_image::store::Image>,
        mut config: ContainerConfig,
        name: Option<&str>,
    ) -> Result<Container> {
        let id = random_id()?;
        if self.start_soon {
            // The monitor's exec and start-up take longer than the rest of
            // create and start: begun now, it waits for its config when
            // start gets to it.
            let sealed = needs_sealed_monitor(&config)?;
            let (bin, dir) = (self.monitor_bin.clone(), self.run_dir(&id));
            let handle = std::thread::spawn(move || start_monitor(&bin, &dir, sealed));
            self.prespawned = Some((id.clone(), sealed, handle));
        }
        let name = match name {
            Some(n) => {
                let n = n.strip_prefix('/').unwrap_or(n);
                if !valid_name(n) {
                    return Err(Error::Invalid(format!(
                        "invalid container name {n:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                    )));
                }
                n.to_string()
            }
            None => format!("{}_{}", random_name(&id), &id[..4]),
        };
        config.name_hint = Some(name.clone());
        let mut image_id = String::new();
        let mut image_volumes = Vec::new();
        if let Some(img) = image {
            image_id = img.id.to_string();
            let ic = img.config.config.clone().unwrap_or_default();
            let strings = |v: &serde_json::Value| -> Vec<String> {
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            config.image_env = strings(&ic["Env"]);
            if let Some(v) = ic["Volumes"].as_object() {
                image_volumes.extend(v.keys().cloned());
            }
            let image_entrypoint = strings(&ic["Entrypoint"]);
            let image_cmd = strings(&ic["Cmd"]);
            // Docker: an --entrypoint drops the image's Cmd too.
            if !config.entrypoint_given {
                config.entrypoint = image_entrypoint;
                if config.cmd.is_empty() {
                    config.cmd = image_cmd;
                }
            }
            if config.workdir.is_empty() {
                config.workdir = ic["WorkingDir"].as_str().unwrap_or("").to_string();
            }
            if config.user.is_empty() {
                config.user = ic["User"].as_str().unwrap_or("").to_string();
            }
            if config.stop_signal.is_none() {
                config.stop_signal = ic["StopSignal"].as_str().map(String::from);
            }
            if let Some(labels) = ic["Labels"].as_object() {
                for (k, v) in labels {
                    if let Some(v) = v.as_str() {
                        config
                            .labels
                            .entry(k.clone())
                            .or_insert_with(|| v.to_string());
                    }
                }
            }
        }
        if config.entrypoint.is_empty() && config.cmd.is_empty() {
            return Err(Error::Invalid(
                "no command specified: the image has no Cmd or Entrypoint; give a command after the image name".into(),
            ));
        }
        self.plan_network(&mut config, image)?;
        spec::capabilities(&config)?;
        self.plan_volumes(&mut config.mounts, &image_volumes)?;
        let c = Container {
            id: id.clone(),
            name,
            image: image_name.to_string(),
            image_id,
            created: now(),
            config,
            status: Status::Created,
            pid: 0,
            monitor_pid: 0,
            monitor_start: 0,
            started_at: String::new(),
            finished_at: String::new(),
            exit_code: 0,
            restart_count: 0,
            error: String::new(),
        };
        // The record first: a name taken by a parallel create fails here,
        // before any work but the volumes. A crash after it leaves a record
        // that `rm` clears, whatever else was made. The volumes come just
        // before it, as the record's mounts are what mark them in use; their
        // locks keep a `volume rm` out until it is written.
        let volume_locks = self.ensure_volumes(&c.config.mounts)?;
        let inserted = self.db.insert(&c);
        drop(volume_locks);
        if let Err(e) = inserted {
            self.remove_anonymous_volumes(&c);
            return Err(e);
        }
        hako_runtime::trace::mark("engine: record inserted");
        let res = (|| -> Result<()> {
            let dir = self.container_dir(&id);
            fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
            if let Some(img) = image {
                let store = self.store()?;
                // A `--rm` container's snapshot goes with it, also after a
                // crash: its record need not reach the disk.
                let durable = !c.config.auto_remove;
                store
                    .create_snapshot_for(
                        &id,
                        &img.chain_ids(),
                        Some(&img.id),
                        Snapshotter::Overlay,
                        durable,
                    )
                    .or_else(|_| {
                        store.create_snapshot_for(
                            &id,
                            &img.chain_ids(),
                            Some(&img.id),
                            Snapshotter::Copy,
                            durable,
                        )
                    })?;
            }
            Ok(())
        })();
        if let Err(e) = res {
            let _ = self.remove_files(&c, None);
            let _ = self.db.delete(&id);
            self.remove_anonymous_volumes(&c);
            return Err(e);
        }
        Ok(c)
    }

    /// Settles `config`'s network: the mode, the networks it joins (the
    /// default `bridge` when none is named), and its published ports
    /// (`-P`: the image's exposed ports, each on a free host port).
    fn plan_network(
        &self,
        config: &mut ContainerConfig,
        image: Option<&hako_image::Image>,
    ) -> Result<()> {
        if config.network.is_empty() {
            config.network = networks::DEFAULT_NETWORK.into();
        }
        if let Some(other) = config.network.strip_prefix("container:") {
            let o = self.db.lookup(other)?;
            if o.config.network.starts_with("container:") {
                return Err(Error::Invalid(format!(
                    "container {} is itself in another container's network; join that one",
                    o.name
                )));
            }
            config.network = format!("container:{}", o.id);
        }
        let networked = networks::networked(&config.network);
        if !networked {
            if !config.networks.is_empty() || !config.ports.is_empty() || config.publish_all {
                let what = if config.ports.is_empty() && !config.publish_all {
                    "networks"
                } else {
                    "published ports"
                };
                return Err(Error::Invalid(format!(
                    "network mode {} takes no {what}; drop them or use a network",
                    config.network
                )));
            }
            return Ok(());
        }
        if config.networks.is_empty() {
            config.networks.push(networks::NetworkRequest {
                name: config.network.clone(),
                ..Default::default()
            });
        }
        config.network = config.networks[0].name.clone();
        for req in &mut config.networks {
            // Checked now, so that `run` fails before it makes anything;
            // recorded by name (a network made again later is found).
            let net = self.network(&req.name)?;
            req.name = net.name;
            if !net.dns && !req.aliases.is_empty() {
                return Err(Error::Invalid(format!(
                    "network-scoped aliases work on user networks only, not on {}",
                    req.name
                )));
            }
        }
        if config.publish_all
            && let Some(img) = image
        {
            let exposed = img
                .config
                .config
                .as_ref()
                .map(|c| c["ExposedPorts"].clone());
            if let Some(serde_json::Value::Object(ports)) = exposed {
                for key in ports.keys() {
                    let p = hako_net::PortMapping::parse(key)
                        .map_err(|e| Error::Invalid(e.to_string()))?;
                    if !config
                        .ports
                        .iter()
                        .any(|q| q.container_port == p.container_port && q.protocol == p.protocol)
                    {
                        config.ports.push(p);
                    }
                }
            }
        }
        for req in &config.networks {
            if let Some(mac) = &req.mac {
                hako_net::check_mac(mac).map_err(|e| Error::Invalid(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// The network namespace a container joins: its own (kept in a file),
    /// another container's, or none (a new empty one, or the host's).
    fn netns_of(&self, c: &Container) -> Result<Option<PathBuf>> {
        if let Some(other) = c.config.network.strip_prefix("container:") {
            let o = self
                .db
                .get(other)?
                .filter(|o| matches!(o.status, Status::Running | Status::Paused))
                .ok_or_else(|| {
                    Error::Conflict(format!(
                        "the container whose network {} joins is not running; start it first",
                        c.name
                    ))
                })?;
            let file = self.netns_path(&o.id);
            return Ok(Some(if hako_net::netns::exists(&file) {
                file
            } else {
                PathBuf::from(format!("/proc/{}/ns/net", o.pid))
            }));
        }
        Ok(networks::networked(&c.config.network).then(|| self.netns_path(&c.id)))
    }

    fn rootfs_path(&self, c: &Container) -> Result<PathBuf> {
        match &c.config.rootfs {
            Some(p) => Ok(p.clone()),
            None => Ok(self.store()?.snapshot(&c.id)?.merged_dir()),
        }
    }

    /// Mounts the root filesystem and writes the bundle; `endpoints` are
    /// the container's places on its networks (set up already).
    fn prepare(&self, c: &Container, endpoints: &[(Network, Endpoint)]) -> Result<PathBuf> {
        let dir = self.container_dir(&c.id);
        let rootfs = self.rootfs_path(c)?;
        if c.config.rootfs.is_none() {
            let store = self.store()?;
            let snap = store.snapshot(&c.id)?;
            hako_image::snapshot::unmount(&rootfs)?;
            // A container removed when it exits keeps nothing: its
            // overlay need not sync (its unmount then costs nothing).
            snap.mount_with(store, &rootfs, c.config.auto_remove)?;
        }
        let res = (|| -> Result<()> {
            let user = rootfs::resolve_user(&rootfs, &c.config.user, &c.config.group_add)?;
            let cwd = if c.config.workdir.is_empty() {
                "/".to_string()
            } else {
                c.config.workdir.clone()
            };
            if !cwd.starts_with('/') {
                return Err(Error::Invalid(format!(
                    "the working directory {cwd:?} is not absolute"
                )));
            }
            rootfs::make_dirs(&rootfs, &cwd)?;
            for m in &c.config.mounts {
                let file_source = m.kind == MountKind::Bind
                    && fs::metadata(&m.source).is_ok_and(|md| !md.is_dir());
                if file_source {
                    rootfs::make_file(&rootfs, &m.target)?;
                } else {
                    rootfs::make_dirs(&rootfs, &m.target)?;
                }
            }
            let hostname = c.config.hostname.clone().unwrap_or_else(|| {
                if c.config.network == "host" {
                    nix::unistd::gethostname()
                        .map(|h| h.to_string_lossy().into_owned())
                        .unwrap_or_else(|_| c.short_id().to_string())
                } else {
                    c.short_id().to_string()
                }
            });
            let host_net = c.config.network == "host";
            let netns = self.netns_of(c)?;
            if let Some(other) = c.config.network.strip_prefix("container:") {
                // Docker: a container in another's network namespace uses
                // its names and resolvers too.
                for name in ["hostname", "hosts", "resolv.conf"] {
                    let from = self.container_dir(other).join(name);
                    fs::copy(&from, dir.join(name)).ctx(|| format!("copy {}", from.display()))?;
                }
            } else {
                let own_ip = endpoints.first().map(|(_, ep)| ep.ip);
                // On a user network the resolver at the gateway answers.
                let resolver = endpoints
                    .iter()
                    .find(|(n, _)| n.dns)
                    .map(|(n, _)| n.gateway);
                let files = [
                    ("hostname", format!("{hostname}\n")),
                    (
                        "hosts",
                        spec::hosts_file(&hostname, &c.config.add_hosts, host_net, own_ip)?,
                    ),
                    (
                        "resolv.conf",
                        spec::resolv_conf(&c.config.dns, host_net, resolver)?,
                    ),
                ];
                for (name, text) in files {
                    fs::write(dir.join(name), text)
                        .ctx(|| format!("write {}", dir.join(name).display()))?;
                }
            }
            let env = spec::environment(&c.config.image_env, &c.config, &hostname, &user.home);
            let mut cfg = c.config.clone();
            cfg.hostname = Some(hostname);
            self.prepare_volumes(&rootfs, &mut cfg.mounts)?;
            let spec = spec::generate(
                &cfg,
                &c.id,
                &rootfs,
                &c.command(),
                env,
                &cwd,
                &user,
                &dir,
                netns.as_deref(),
            )?;
            let bytes = serde_json::to_vec(&spec).map_err(|e| Error::Invalid(e.to_string()))?;
            hako_monitor::write_atomic(&dir.join("config.json"), &bytes)
                .ctx(|| format!("write {}", dir.join("config.json").display()))
        })();
        if let Err(e) = res {
            if c.config.rootfs.is_none() {
                let _ = hako_image::snapshot::unmount(&rootfs);
            }
            return Err(e);
        }
        Ok(dir)
    }

    /// Starts a created or exited container: a new monitor creates it, and
    /// the program runs. With `attach`, the returned stream carries its
    /// output from the first byte (and takes stdin with `stdin`).
    pub fn start(
        &mut self,
        what: &str,
        attach: bool,
        stdin: bool,
    ) -> Result<(Container, Option<Attached>)> {
        self.start_with(what, attach, stdin, false)
    }

    /// `start`, where the attached caller (`cleanup`) releases the
    /// container itself once it has the exit code: call [`Engine::finish`].
    pub fn start_with(
        &mut self,
        what: &str,
        attach: bool,
        stdin: bool,
        cleanup: bool,
    ) -> Result<(Container, Option<Attached>)> {
        let found = self.db.lookup(what)?;
        // A monitor left by a `start` killed before it recorded it still
        // holds a created container; on its way out it would take the new
        // run's socket and runtime state with it. It goes first, and
        // before the lock: its last act, the cleanup, takes the lock.
        if !matches!(found.status, Status::Running | Status::Paused) {
            self.end_stray_monitor(&found);
        }
        let _lock = self.lock(&found.id)?;
        let Some(mut c) = self.refresh(self.db.lookup(&found.id)?)? else {
            return Err(Error::NotFound(format!("no such container: {what}")));
        };
        match c.status {
            Status::Running | Status::Paused => {
                return Err(Error::Conflict(format!(
                    "container {} is running already",
                    c.name
                )));
            }
            Status::Removing => {
                return Err(Error::Conflict(format!(
                    "container {} is being removed",
                    c.name
                )));
            }
            _ => {}
        }
        let run_dir = self.run_dir(&c.id);
        let _ = fs::remove_dir_all(&run_dir);
        fs::create_dir_all(&run_dir).ctx(|| format!("create {}", run_dir.display()))?;
        // The monitor starts now (or began in `create`), beside the
        // preparation below, and waits for its config (dropped unsent on
        // an error: it then just ends). The spawn waits for the monitor's
        // exec (it is a vfork): on a thread of its own, that wait is spent
        // on the preparation too.
        let (sealed, spawning) = match self.prespawned.take() {
            Some((id, sealed, handle)) if id == c.id => (sealed, handle),
            _ => {
                let sealed = needs_sealed_monitor(&c.config)?;
                let (bin, dir) = (self.monitor_bin.clone(), run_dir.clone());
                (
                    sealed,
                    std::thread::spawn(move || start_monitor(&bin, &dir, sealed)),
                )
            }
        };
        let prepared = self
            .network_up(&c)
            .and_then(|endpoints| self.prepare(&c, &endpoints));
        let pending = spawning
            .join()
            .unwrap_or_else(|_| Err(Error::Invalid("the monitor's spawn failed".into())));
        let (bundle, pending) = match (prepared, pending) {
            (Ok(b), Ok(p)) => (b, p),
            (Err(e), _) | (_, Err(e)) => {
                self.network_down(&c.id);
                if c.config.rootfs.is_none()
                    && let Ok(p) = self.rootfs_path(&c)
                {
                    let _ = hako_image::snapshot::unmount(&p);
                }
                let _ = fs::remove_dir_all(&run_dir);
                return Err(e);
            }
        };
        hako_runtime::trace::mark("engine: rootfs mounted, spec written");
        let runtime_root = self.runtime_root(&c);
        // A runtime state left by a crash would block the create.
        self.runtime_delete(&c);
        let mut exit_command = vec![
            self.hako_bin.display().to_string(),
            "--root".into(),
            self.root.display().to_string(),
            "--runroot".into(),
            self.runroot.display().to_string(),
            "container".into(),
            "cleanup".into(),
            "--from-monitor".into(),
        ];
        exit_command.push(c.id.clone());
        let mcfg = MonitorConfig {
            id: c.id.clone(),
            runtime_root,
            bundle: bundle.clone(),
            runtime: c.config.runtime.clone(),
            container_dir: bundle.clone(),
            log_path: self.log_path(&c.id),
            log_max_size: c.config.log_max_size,
            log_max_files: c.config.log_max_files,
            tty: c.config.tty,
            stdin: c.config.interactive,
            restart: c.config.restart.clone(),
            max_restarts: c.config.max_restarts,
            sealed,
            exit_command,
        };
        let bytes = serde_json::to_vec(&mcfg).map_err(|e| Error::Invalid(e.to_string()))?;
        if let Err(e) = fs::write(run_dir.join(hako_monitor::CONFIG_FILE), bytes) {
            self.release(&c);
            let _ = fs::remove_dir_all(&run_dir);
            return Err(Error::io(format!("write {}", run_dir.display()), e));
        }
        let ready = match self.monitor_go(pending) {
            Ok(r) => r,
            Err(e) => {
                self.release(&c);
                let _ = fs::remove_dir_all(&run_dir);
                return Err(e);
            }
        };
        hako_runtime::trace::mark("engine: monitor ready");
        if let Some(err) = ready.error {
            // The container was never made: release what `prepare` took,
            // and for `--rm` the container itself. (The monitor wrote its
            // exit record before it said so; the cleanup it runs next is
            // not for this record's run and does nothing.)
            let code = start_failure_code(&err);
            self.release(&c);
            let _ = fs::remove_dir_all(&run_dir);
            if c.config.auto_remove {
                self.remove_files(&c, None)?;
                self.db.delete(&c.id)?;
            } else {
                c.status = Status::Exited;
                c.exit_code = code;
                c.error = err.clone();
                c.finished_at = now();
                self.db.update(&c)?;
            }
            return Err(Error::Start { message: err, code });
        }
        c.status = Status::Running;
        c.pid = ready.pid;
        c.monitor_pid = ready.monitor_pid;
        c.monitor_start = process_start(ready.monitor_pid).unwrap_or(0);
        c.started_at = now();
        c.finished_at = String::new();
        c.exit_code = 0;
        c.error = String::new();
        self.db.update(&c)?;
        if c.config.network == "none" && c.config.runtime.is_some() {
            // The built-in runtime sets `lo` up in a new network namespace;
            // another may not.
            loopback_up(c.pid)?;
        }
        hako_runtime::trace::mark("engine: record updated, lo up");
        let req = Request {
            attach,
            stdin,
            start: true,
            stdin_once: stdin,
            cleanup: attach && cleanup,
            // The program starts with the caller's terminal size.
            resize: caller_terminal_size(c.config.tty && attach),
            ..Default::default()
        };
        let (reply, stream) = hako_monitor::request(&run_dir, &req)
            .map_err(|e| Error::io(format!("talk to the monitor of {}", c.name), e))?;
        hako_runtime::trace::mark("engine: started");
        if let Some(err) = reply.error {
            let code = start_failure_code(&err);
            return Err(Error::Start { message: err, code });
        }
        Ok((c, attach.then_some(Attached { stream, run_dir })))
    }

    /// Tells a waiting monitor its config is written; its report.
    fn monitor_go(&self, mut pending: PendingMonitor) -> Result<Ready> {
        use std::io::Write as _;
        let _ = pending.go.write_all(b"g");
        drop(pending.go);
        let mut line = String::new();
        let _ = BufReader::new(pending.out).read_line(&mut line);
        serde_json::from_str(&line).map_err(|_| {
            Error::Invalid(format!(
                "{} did not report (is it the monitor of this hako?)",
                self.monitor_bin.display()
            ))
        })
    }

    /// Unmounts the root filesystem (mounted by `prepare`).
    fn release(&self, c: &Container) {
        // (A container that left its last network while it ran keeps its
        // namespace file until now.)
        if networks::networked(&c.config.network) || self.netns_path(&c.id).exists() {
            self.network_down(&c.id);
        }
        if c.config.rootfs.is_none()
            && let Ok(p) = self.rootfs_path(c)
        {
            let _ = hako_image::snapshot::unmount(&p);
        }
    }

    fn runtime_delete(&self, c: &Container) {
        hako_monitor::delete_container(c.config.runtime.as_deref(), &self.runtime_root(c), &c.id);
    }

    fn runtime_kill(&self, c: &Container, signal: i32) -> Result<()> {
        let root = self.runtime_root(c);
        match &c.config.runtime {
            None => Ok(hako_runtime::container::kill_container(
                &root, &c.id, signal, false,
            )?),
            Some(bin) => {
                hako_monitor::run_external(bin, &root, "kill", [c.id.clone(), signal.to_string()])?;
                if signal == libc::SIGKILL && c.status == Status::Paused {
                    // A frozen v1 cgroup holds the killed init until it is
                    // thawed: runc thaws it, crun does not.
                    let _ = hako_monitor::run_external(bin, &root, "resume", [&c.id]);
                }
                Ok(())
            }
        }
    }

    /// Attaches to a running container: its output from now on, and its
    /// stdin with `stdin` (if it was created with `-i`).
    pub fn attach(&mut self, what: &str, stdin: bool) -> Result<(Container, Attached)> {
        let c = self.get(what)?;
        if !matches!(c.status, Status::Running | Status::Paused) {
            return Err(Error::Conflict(format!(
                "you cannot attach to a stopped container {}; start it first",
                c.name
            )));
        }
        let run_dir = self.run_dir(&c.id);
        let req = Request {
            attach: true,
            stdin: stdin && c.config.interactive,
            resize: caller_terminal_size(c.config.tty),
            ..Default::default()
        };
        let (reply, stream) = hako_monitor::request(&run_dir, &req)
            .map_err(|e| Error::io(format!("attach to {}", c.name), e))?;
        if let Some(err) = reply.error {
            return Err(Error::Conflict(err));
        }
        Ok((c, Attached { stream, run_dir }))
    }

    /// After an attached start with `cleanup`, when the exit code came:
    /// the root filesystem can go now, while the monitor still releases
    /// the runtime state (unless the restart policy may start it again).
    pub fn program_ended(&self, c: &Container) {
        if c.config.restart == RestartPolicy::No {
            self.release(c);
        }
    }

    /// After an attached start with `cleanup`, once the attach stream has
    /// ended: releases (and for `--rm` removes) the container.
    pub fn finish(&mut self, c: &Container) -> Result<()> {
        if c.config.restart != RestartPolicy::No {
            // The monitor may start it again: it keeps its resources, and
            // the monitor does its own cleanup when it is done.
            return Ok(());
        }
        // The monitor ended the attach stream once the runtime state was
        // gone (or died: then the runtime state goes here), and runs no
        // cleanup of its own: this command acts for it, without waiting
        // for the process to end. (The root filesystem went at the exit
        // code, [`Engine::program_ended`]; the cleanup makes sure.)
        // Taking a directory tree apart costs ~0.1 ms a directory on ext4
        // here, a millisecond or two for a small container: the
        // container's directories leave their names at once (and with them
        // the record), their content goes in the background.
        let mut trash = Vec::new();
        let res = self.cleanup_into(&c.id, Some(c.monitor_pid), Some(&mut trash));
        if !trash.is_empty() {
            detached(|| {
                for dir in &trash {
                    let _ = fs::remove_dir_all(dir);
                }
            });
        }
        res
    }

    /// Removes a directory of a container; given `trash`, only moves it
    /// out of its name (a `.trash-` sibling) and adds it there, for the
    /// background. A trash directory whose remover died goes with
    /// [`Engine::sweep_trash`].
    fn discard_dir(dir: &Path, trash: Option<&mut Vec<PathBuf>>) -> Result<()> {
        if !dir.exists() {
            return Ok(());
        }
        if let Some(trash) = trash
            && let Some(name) = dir.file_name()
        {
            let to = dir.with_file_name(format!(
                ".trash-{}-{}",
                name.to_string_lossy(),
                std::process::id()
            ));
            if fs::rename(dir, &to).is_ok() {
                trash.push(to);
                return Ok(());
            }
        }
        fs::remove_dir_all(dir).ctx(|| format!("remove {}", dir.display()))
    }

    /// Removes what removers in the background left when they were killed:
    /// containers' trash directories (the image store's garbage
    /// collection takes the snapshots').
    pub fn sweep_trash(&self) {
        for parent in [
            self.root.join("containers"),
            self.runroot.join("containers"),
        ] {
            let Ok(entries) = fs::read_dir(&parent) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(".trash-") {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
    }

    /// Releases what a container holds once its program has ended:
    /// runtime state, root filesystem mount, run directory; records the
    /// exit; removes it for `--rm`. Repeating it is harmless. The monitor
    /// runs it as its last act (`from_monitor`: its pid); any command runs
    /// it for a container whose monitor died.
    pub fn cleanup(&mut self, id: &str, from_monitor: Option<i32>) -> Result<()> {
        self.cleanup_into(id, from_monitor, None)
    }

    /// [`Engine::cleanup`]; with `trash`, a removed container's
    /// directories are only moved aside into it ([`Engine::discard_dir`]).
    fn cleanup_into(
        &mut self,
        id: &str,
        from_monitor: Option<i32>,
        mut trash: Option<&mut Vec<PathBuf>>,
    ) -> Result<()> {
        let _lock = self.lock(id)?;
        let Some(c) = self.db.get(id)? else {
            return Ok(());
        };
        if !matches!(
            c.status,
            Status::Running | Status::Paused | Status::Removing
        ) {
            return Ok(());
        }
        // A monitor's cleanup that comes after the container was started
        // again belongs to the earlier run: the new one is not its to end.
        if from_monitor.is_some_and(|pid| pid != c.monitor_pid) {
            return Ok(());
        }
        let from_monitor = from_monitor.is_some();
        if !from_monitor && Self::monitor_alive(&c) {
            return Ok(());
        }
        let removing = c.status == Status::Removing;
        let exit = hako_monitor::read_exit(&self.container_dir(id));
        let init_alive = c.pid > 0 && process_start(c.pid).is_some() && exit.is_none();
        if init_alive && !from_monitor && !removing {
            // The monitor died but the container lives on: it is running,
            // unmonitored; `stop`/`rm -f` can still end it.
            return Ok(());
        }
        let mut c = Self::with_exit(c, exit.as_ref());
        self.runtime_delete(&c);
        hako_runtime::trace::mark("engine: runtime state deleted");
        self.release(&c);
        hako_runtime::trace::mark("engine: rootfs unmounted");
        let _ = Self::discard_dir(&self.run_dir(id), trash.as_deref_mut());
        if c.config.auto_remove || removing {
            self.remove_files(&c, trash)?;
            hako_runtime::trace::mark("engine: files removed");
            self.db.delete(id)?;
            // Docker's `--rm` takes the anonymous volumes along.
            if c.config.auto_remove {
                self.remove_anonymous_volumes(&c);
            }
            return Ok(());
        }
        c.pid = 0;
        c.monitor_pid = 0;
        c.monitor_start = 0;
        self.db.update(&c)
    }

    /// Removes a container's files; what it held is released already
    /// ([`Engine::release`]).
    fn remove_files(&self, c: &Container, mut trash: Option<&mut Vec<PathBuf>>) -> Result<()> {
        if c.config.rootfs.is_none() {
            let store = self.store()?;
            match trash.as_deref_mut() {
                Some(trash) => trash.extend(store.retire_snapshot(&c.id)?),
                None => store.remove_snapshot(&c.id)?,
            }
        }
        Self::discard_dir(&self.container_dir(&c.id), trash.as_deref_mut())?;
        let _ = Self::discard_dir(&self.run_dir(&c.id), trash);
        Ok(())
    }

    /// Waits until the running container `c` has exited, at most `timeout`;
    /// its exit code when it did.
    fn wait_exit(&self, c: &Container, timeout: Option<Duration>) -> Option<i32> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let req = Request {
            attach: true,
            ..Default::default()
        };
        if let Ok((_, mut stream)) = hako_monitor::request(&self.run_dir(&c.id), &req) {
            if let Some(d) = deadline {
                let left = d
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                let _ = stream.get_ref().set_read_timeout(Some(left));
            }
            let mut buf = Vec::new();
            let mut code = None;
            loop {
                match hako_monitor::read_frame(&mut stream, &mut buf) {
                    Ok(Some(hako_monitor::EXIT)) if buf.len() == 4 => {
                        code = Some(i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => return None,
                }
            }
            if code.is_some() {
                return code;
            }
        }
        // No monitor to ask: watch the init instead.
        loop {
            let exit = hako_monitor::read_exit(&self.container_dir(&c.id));
            if let Some(e) = exit.filter(|e| !e.restarting) {
                return Some(e.exit_code);
            }
            if process_start(c.pid).is_none() && !Self::monitor_alive(c) {
                return Some(255);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `wait`: blocks until the container is not running; its exit code.
    pub fn wait(&mut self, what: &str) -> Result<i32> {
        let c = self.get(what)?;
        if matches!(c.status, Status::Running | Status::Paused)
            && let Some(code) = self.wait_exit(&c, None)
        {
            return Ok(code);
        }
        let id = c.id.clone();
        match self.get(&id) {
            Ok(c) => Ok(c.exit_code),
            // Removed on exit (--rm): the code was in the stream.
            Err(_) => Ok(c.exit_code),
        }
    }

    /// Tells the monitor no restart policy applies, then signals.
    fn signal_stop(&self, c: &Container, signal: i32) -> Result<()> {
        let req = Request {
            stop: true,
            ..Default::default()
        };
        let _ = hako_monitor::request(&self.run_dir(&c.id), &req);
        self.runtime_kill(c, signal)
    }

    /// `stop`: the stop signal, then SIGKILL after `timeout`.
    pub fn stop(&mut self, what: &str, timeout: Option<u32>) -> Result<Container> {
        let c = self.get(what)?;
        if !matches!(c.status, Status::Running | Status::Paused) {
            return Ok(c);
        }
        let signal = match &c.config.stop_signal {
            Some(s) => parse_signal(s)?,
            None => libc::SIGTERM,
        };
        let t = timeout.or(c.config.stop_timeout).unwrap_or(10);
        if c.status == Status::Paused {
            self.signal_stop(&c, libc::SIGKILL)?;
        } else {
            self.signal_stop(&c, signal)?;
        }
        if self
            .wait_exit(&c, Some(Duration::from_secs(u64::from(t))))
            .is_none()
        {
            self.runtime_kill(&c, libc::SIGKILL)?;
            self.wait_exit(&c, Some(Duration::from_secs(30)));
        }
        let id = c.id.clone();
        self.settle(&id);
        self.get(&id).or(Ok(c))
    }

    /// Waits (briefly) for the monitor's cleanup to land, so the next
    /// command sees the container stopped; does it here if the monitor
    /// is slow or gone.
    fn settle(&mut self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.db.get(id) {
                Ok(Some(c)) if matches!(c.status, Status::Running | Status::Paused) => {
                    if !Self::monitor_alive(&c) {
                        let _ = self.cleanup(id, None);
                        return;
                    }
                }
                _ => return,
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `kill`: a signal to the container's init.
    pub fn kill(&mut self, what: &str, signal: i32) -> Result<Container> {
        let c = self.get(what)?;
        if !matches!(c.status, Status::Running | Status::Paused) {
            return Err(Error::Conflict(format!(
                "container {} is not running",
                c.name
            )));
        }
        if signal == libc::SIGKILL || signal == libc::SIGTERM {
            self.signal_stop(&c, signal)?;
        } else {
            self.runtime_kill(&c, signal)?;
        }
        Ok(c)
    }

    /// `rm`: removes a stopped container (a running one with `force`).
    pub fn remove(&mut self, what: &str, force: bool) -> Result<Container> {
        self.remove_with_volumes(what, force, false)
    }

    /// `rm`, and with `volumes` (`rm -v`) the container's anonymous volumes.
    pub fn remove_with_volumes(
        &mut self,
        what: &str,
        force: bool,
        volumes: bool,
    ) -> Result<Container> {
        let c = self.get(what)?;
        if matches!(c.status, Status::Running | Status::Paused) {
            if !force {
                return Err(Error::Conflict(format!(
                    "you cannot remove a running container {}. Stop the container before attempting removal or force remove",
                    c.id
                )));
            }
            let _ = self.signal_stop(&c, libc::SIGKILL);
            self.wait_exit(&c, Some(Duration::from_secs(30)));
        }
        let _lock = self.lock(&c.id)?;
        let Some(mut c) = self.db.get(&c.id)? else {
            return Ok(c);
        };
        // Marked first: a crash from here on leaves a record that any
        // command finishes removing.
        c.status = Status::Removing;
        self.db.update(&c)?;
        self.end_stray_monitor(&c);
        self.runtime_delete(&c);
        self.release(&c);
        self.remove_files(&c, None)?;
        self.db.delete(&c.id)?;
        if volumes {
            self.remove_anonymous_volumes(&c);
        }
        Ok(c)
    }

    /// A monitor the record does not know of (a `start` killed between
    /// starting the monitor and recording it) still holds a created
    /// container: end that container and wait for the monitor, so that it
    /// touches nothing of what is being removed or started again.
    fn end_stray_monitor(&self, c: &Container) {
        let dir = self.run_dir(&c.id);
        if !dir.join(hako_monitor::ATTACH_SOCKET).exists() {
            return;
        }
        let req = Request {
            attach: true,
            stop: true,
            ..Default::default()
        };
        let Ok((_, mut stream)) = hako_monitor::request(&dir, &req) else {
            return;
        };
        let _ = self.runtime_kill(c, libc::SIGKILL);
        let _ = stream
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(10)));
        let mut buf = Vec::new();
        while let Ok(Some(_)) = hako_monitor::read_frame(&mut stream, &mut buf) {}
        // The stream ends before the monitor does: wait for its process.
        if let Some(pid) = socket_peer_pid(stream.get_ref())
            && let Some(start) = process_start(pid)
        {
            wait_process_exit(pid, start);
        }
    }

    pub fn rename(&mut self, what: &str, new_name: &str) -> Result<()> {
        let c = self.db.lookup(what)?;
        let n = new_name.strip_prefix('/').unwrap_or(new_name);
        if !valid_name(n) {
            return Err(Error::Invalid(format!("invalid container name {n:?}")));
        }
        let _lock = self.lock(&c.id)?;
        self.db.rename(&c.id, n)?;
        // Its name on user networks changes with it.
        self.rename_endpoints(&c.id, &c.name, n)
    }

    /// `pause`/`unpause` through the freezer (an external runtime's
    /// `pause`/`resume`).
    pub fn pause(&mut self, what: &str, pause: bool) -> Result<Container> {
        // Brought up to date first: settling a container whose monitor is
        // gone takes the lock itself.
        let id = self.get(what)?.id;
        // The lock keeps the record's status and the cgroup's in step.
        let lock = self.lock(&id)?;
        let Some(mut c) = self.db.get(&id)? else {
            return Err(Error::NotFound(format!("no such container: {what}")));
        };
        if matches!(c.status, Status::Running | Status::Paused) {
            c = self.paused_or_running(c);
        }
        let (needed, verb, action) = if pause {
            (Status::Running, "running", "pause")
        } else {
            (Status::Paused, "paused", "resume")
        };
        if c.status != needed {
            return Err(Error::Conflict(format!(
                "container {} is not {verb}",
                c.name
            )));
        }
        let root = self.runtime_root(&c);
        match &c.config.runtime {
            None if pause => hako_runtime::container::pause(&root, &c.id)?,
            None => hako_runtime::container::resume(&root, &c.id)?,
            Some(bin) => {
                hako_monitor::run_external(bin, &root, action, [&c.id])?;
                // The record is what `ps` reads for an external runtime.
                c.status = if pause {
                    Status::Paused
                } else {
                    Status::Running
                };
                self.db.update(&c)?;
            }
        }
        drop(lock);
        self.get(&id)
    }

    /// Resource use of a running container, from its cgroup.
    pub fn stats(&mut self, what: &str) -> Result<(Container, hako_cgroups::Stats)> {
        let c = self.get(what)?;
        if !matches!(c.status, Status::Running | Status::Paused) {
            return Err(Error::Conflict(format!(
                "container {} is not running",
                c.name
            )));
        }
        let stats = match &c.config.runtime {
            None => hako_runtime::container::stats(&self.runtime_root(&c), &c.id)?.1,
            Some(bin) => self.external_cgroup(&c, bin)?.stats()?,
        };
        Ok((c, stats))
    }

    /// `update`: new limits, applied to the running container's cgroup
    /// and kept for its next start.
    pub fn update(&mut self, what: &str, change: &ResourceUpdate) -> Result<Container> {
        let found = self.db.lookup(what)?;
        let _lock = self.lock(&found.id)?;
        let Some(mut c) = self.refresh(self.db.lookup(&found.id)?)? else {
            return Err(Error::NotFound(format!("no such container: {what}")));
        };
        c.config.resources.merge(&change.resources);
        if let Some((policy, max)) = &change.restart {
            if c.config.auto_remove && *policy != RestartPolicy::No {
                return Err(Error::Invalid(
                    "a container made with --rm cannot get a restart policy".into(),
                ));
            }
            c.config.restart = policy.clone();
            c.config.max_restarts = *max;
        }
        if matches!(c.status, Status::Running | Status::Paused) {
            let user = rootfs::User::default();
            let spec = spec::generate(
                &c.config,
                &c.id,
                Path::new("/"),
                &["true".into()],
                Vec::new(),
                "/",
                &user,
                Path::new("/"),
                None,
            )?;
            let mut wanted = spec["linux"]["resources"].clone();
            // The device rules stay as they are: rewriting them would
            // deny every device for a moment to the running container.
            if let Some(o) = wanted.as_object_mut() {
                o.remove("devices");
            }
            let resources: oci_spec::runtime::LinuxResources = serde_json::from_value(wanted)
                .map_err(|e| Error::Invalid(format!("resources: {e}")))?;
            match &c.config.runtime {
                None => {
                    hako_runtime::container::update(&self.runtime_root(&c), &c.id, &resources)?;
                }
                Some(bin) => self.external_update(&c, bin, &resources)?,
            }
        }
        self.db.update_config(&c)?;
        Ok(c)
    }

    /// The spec a running container was started with.
    pub fn spec_of(&self, c: &Container) -> Result<serde_json::Value> {
        let p = self.container_dir(&c.id).join("config.json");
        let bytes = fs::read(&p).ctx(|| format!("read {}", p.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt(format!("{}: {e}", p.display())))
    }

    /// Pids of the container's processes.
    pub fn pids(&mut self, what: &str) -> Result<Vec<i32>> {
        let c = self.get(what)?;
        if !matches!(c.status, Status::Running | Status::Paused) {
            return Err(Error::Conflict(format!(
                "container {} is not running",
                c.name
            )));
        }
        match &c.config.runtime {
            None => Ok(hako_runtime::container::pids(
                &self.runtime_root(&c),
                &c.id,
            )?),
            Some(bin) => Ok(self.external_cgroup(&c, bin)?.pids()?),
        }
    }

    /// The cgroup an external runtime put `c` in, read directly (runc's
    /// command line has no portable stats). It is resolved from the spec's
    /// `linux.cgroupsPath` as runc and crun resolve it: hako writes an
    /// absolute path, which both take from the root of every hierarchy
    /// (on a hybrid host, each v1 controller's and the cgroup2 tree's);
    /// a relative one they would take from their own cgroup, which may
    /// not be this process's. So the result is checked: the runtime's
    /// init must be in it.
    fn external_cgroup(&self, c: &Container, bin: &Path) -> Result<hako_cgroups::Cgroup> {
        let spec = self.spec_of(c)?;
        let path = spec["linux"]["cgroupsPath"].as_str().unwrap_or_default();
        let hierarchies = hako_cgroups::Hierarchies::discover()?;
        let cg = hako_cgroups::Cgroup::resolve(&hierarchies, path, &c.id)?;
        let init = hako_monitor::external_state(bin, &self.runtime_root(c), &c.id)?.pid;
        if init <= 0 || !cg.pids()?.contains(&init) {
            let actual = fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap_or_default();
            return Err(Error::Invalid(format!(
                "{} did not put container {} where its linux.cgroupsPath {path:?} says ({}): its init (pid {init}) is in {}",
                bin.display(),
                c.name,
                cg.path,
                actual.lines().collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(cg)
    }

    /// `BIN update --resources FILE ID`, with the file in the container's
    /// run directory (the container's lock is held: one at a time).
    fn external_update(
        &self,
        c: &Container,
        bin: &Path,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<()> {
        let file = self.run_dir(&c.id).join("resources.json");
        let bytes = serde_json::to_vec(resources).map_err(|e| Error::Invalid(e.to_string()))?;
        fs::write(&file, bytes).ctx(|| format!("write {}", file.display()))?;
        let res = hako_monitor::run_external(
            bin,
            &self.runtime_root(c),
            "update",
            [
                std::ffi::OsStr::new("--resources"),
                file.as_os_str(),
                std::ffi::OsStr::new(&c.id),
            ],
        );
        let _ = fs::remove_file(&file);
        res?;
        Ok(())
    }
}

/// Docker's exit code for a container that could not start: 127 when its
/// program is not there, 126 when it cannot be run, 125 otherwise.
fn start_failure_code(message: &str) -> i32 {
    let m = message.to_ascii_lowercase();
    if m.contains("not found") || m.contains("no such file") {
        127
    } else if m.contains("permission denied")
        || m.contains("exec format")
        || m.contains("not executable")
    {
        126
    } else {
        125
    }
}

/// Brings `lo` up in the network namespace of `pid`, from a thread of its
/// own (`setns` moves only the calling thread).
fn loopback_up(pid: i32) -> Result<()> {
    let path = format!("/proc/{pid}/ns/net");
    let ns = fs::File::open(&path).ctx(|| format!("open {path}"))?;
    std::thread::spawn(move || -> std::io::Result<()> {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
        hako_runtime::loopback_up()
    })
    .join()
    .map_err(|_| Error::Invalid("bring up lo: the thread panicked".into()))?
    .ctx(|| format!("bring up lo in the network namespace of {pid}"))
}
