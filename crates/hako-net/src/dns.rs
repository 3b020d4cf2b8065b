//! Name resolution for user networks: what the engine writes, and the
//! resolver (`hako-dns`) that serves it.
//!
//! One resolver runs per state directory (`dir`), in the host's network
//! namespace. It listens on UDP and TCP at every user network's `listen`
//! address (the gateway, port 53) and answers the names of the containers
//! on that network; everything else goes to the upstream resolvers.
//!
//! The directory holds:
//! - `networks/<name>.json`: one [`DnsNetwork`] per network, written
//!   atomically by [`write_network`]; the resolver watches this folder with
//!   inotify and rebinds or updates its records when a file changes;
//! - `upstream.json` (optional): a JSON list of socket addresses that
//!   replaces the `nameserver` lines of the host's `/etc/resolv.conf`;
//! - `lock`: taken by [`ensure_running`] so that concurrent callers start
//!   one resolver;
//! - `pid`: `<pid> <start time>`, locked by the running resolver for its
//!   lifetime (the start time, from `/proc/<pid>/stat`, tells a reused pid
//!   from ours);
//! - `ready`: which version (a hash of the file) of each network the
//!   resolver has applied, and the error if it could not (a bind that
//!   failed, a file that does not parse);
//! - `hako-dns.log`: the resolver's standard error (errors only).
//!
//! Answers, for a query that arrives on network N from address S:
//! - the requesting container is the one with a record in N whose address
//!   is S; names are looked up in N, then in every other network where that
//!   container has a record; an unknown requester sees N only;
//! - names match without regard to case or a trailing dot; `A` gets the
//!   address (TTL 600), any other type for a known name gets an empty
//!   NOERROR answer (NODATA); a `PTR` query for `d.c.b.a.in-addr.arpa`
//!   naming a container's address gets its first name;
//! - anything else is forwarded unchanged (but for the message id, which
//!   the resolver chooses so that clients cannot collide) to the first
//!   upstream, then the next after 2 s without an answer, and SERVFAIL when
//!   none answered. Over TCP, a query is forwarded over TCP. On an
//!   `internal` network nothing is forwarded: the answer is REFUSED, as a
//!   resolver answers a client it does not serve, so that the client does
//!   not wait for a timeout nor take the absence of a name for a fact;
//! - a message that is not a query is dropped; an opcode other than QUERY
//!   gets NOTIMP, a query without exactly one readable question FORMERR.
//!
//! With no upstream at all (no `upstream.json` and no `nameserver` line in
//! the host's resolv.conf), forwarded queries get SERVFAIL.
//!
//! The engine's part:
//! - whenever a user network's set of running containers (or their names
//!   and aliases) changes, and when the network is made: [`write_network`]
//!   with the records of its running containers, then [`ensure_running`]
//!   with the `hako-dns` binary. It returns once the resolver answers with
//!   the new records (a few tens of microseconds when nothing changed), or
//!   with [`Error::Network`] if the network's address could not be bound;
//! - when the network is removed: [`remove_network`] (the resolver exits
//!   with the last one);
//! - the folder is best kept under the run root: what it holds is derived
//!   from the engine's records, and written again by the first command
//!   after a reboot;
//! - the containers' resolv.conf names the gateway as their nameserver, and
//!   the host must let the bridges reach the gateway on port 53 (UDP, TCP).

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, socket,
    sockopt,
};
use serde::{Deserialize, Serialize};
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One container's names on one network.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DnsRecord {
    /// The container's id.
    pub container: String,
    /// Its name, its aliases and its short id.
    pub names: Vec<String>,
    pub ip: Ipv4Addr,
}

/// One user network, as the resolver serves it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DnsNetwork {
    pub name: String,
    /// Where the resolver listens for this network (the gateway, port 53).
    pub listen: SocketAddr,
    /// An internal network gets no answer from upstream (REFUSED).
    pub internal: bool,
    pub records: Vec<DnsRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("invalid network name {0:?}")]
    InvalidName(String),
    #[error("{context}: {source}")]
    Sys {
        context: &'static str,
        source: Errno,
    },
    #[error("the resolver could not serve network {network}: {message}")]
    Network { network: String, message: String },
    #[error("the resolver for {} did not start: {message}", dir.display())]
    Start { dir: PathBuf, message: String },
    #[error("the resolver for {} (pid {pid}) is still running", dir.display())]
    StillRunning { dir: PathBuf, pid: u32 },
}

const NETWORKS_DIR: &str = "networks";
const LOCK_FILE: &str = "lock";
const PID_FILE: &str = "pid";
const READY_FILE: &str = "ready";
const UPSTREAM_FILE: &str = "upstream.json";
const LOG_FILE: &str = "hako-dns.log";
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// What the resolver says on its standard output once it holds the
/// instance lock, or when another resolver holds it (the starter reads it
/// through a pipe).
const STARTED: &[u8] = b"started\n";
const BUSY: &[u8] = b"busy\n";

const TTL: u32 = 600;
/// How long an upstream has to answer before the next one is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the upstream list is looked at again (resolv.conf changes).
const UPSTREAM_RECHECK: Duration = Duration::from_secs(5);
const MAX_PENDING: usize = 1024;
/// Longer UDP queries are dropped (they would be kept while pending).
const MAX_QUERY: usize = 4096;
const MAX_TCP: usize = 16;
/// How often a network whose address was taken is tried again.
const BIND_RETRY: Duration = Duration::from_secs(1);
const TCP_IDLE: Duration = Duration::from_secs(10);
const TCP_STACK: usize = 128 * 1024;
const START_TIMEOUT: Duration = Duration::from_secs(5);
const EXIT_TIMEOUT: Duration = Duration::from_secs(2);
const LOG_LIMIT: u64 = 1 << 20;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sys(context: &'static str) -> impl FnOnce(Errno) -> Error {
    move |source| Error::Sys { context, source }
}

fn check_name(name: &str) -> Result<(), Error> {
    let bad =
        name.is_empty() || name.len() > 200 || name.starts_with('.') || name.contains(['/', '\0']);
    if bad {
        return Err(Error::InvalidName(name.to_string()));
    }
    Ok(())
}

fn network_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(NETWORKS_DIR).join(format!("{name}.json"))
}

/// Writes `path` through a temporary file in the same folder and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let parent = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(
        ".{file_name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

/// Writes `<dir>/networks/<name>.json` atomically, creating folders as needed.
pub fn write_network(dir: &Path, net: &DnsNetwork) -> Result<(), Error> {
    check_name(&net.name)?;
    let folder = dir.join(NETWORKS_DIR);
    fs::create_dir_all(&folder).map_err(io_err(&folder))?;
    let path = network_path(dir, &net.name);
    let bytes = serde_json::to_vec_pretty(net).map_err(|source| Error::Json {
        path: path.clone(),
        source,
    })?;
    write_atomic(&path, &bytes)
}

/// Reads `<dir>/networks/<name>.json` back; `None` if there is none.
pub fn read_network(dir: &Path, name: &str) -> Result<Option<DnsNetwork>, Error> {
    check_name(name)?;
    let path = network_path(dir, name);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| Error::Json { path, source })
}

/// Removes `<dir>/networks/<name>.json` (nothing if there is none). When no
/// network is left, waits (up to 2 s) until the resolver has exited.
pub fn remove_network(dir: &Path, name: &str) -> Result<(), Error> {
    check_name(name)?;
    let path = network_path(dir, name);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&path)(e)),
    }
    if !list_networks(dir)?.is_empty() {
        return Ok(());
    }
    let Some(instance) = running(dir) else {
        return Ok(());
    };
    let deadline = Instant::now() + EXIT_TIMEOUT;
    loop {
        std::thread::sleep(Duration::from_millis(2));
        if !instance.alive() || !list_networks(dir)?.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::StillRunning {
                dir: dir.to_path_buf(),
                pid: instance.pid,
            });
        }
    }
}

/// Sets the upstream resolvers for `dir` (`<dir>/upstream.json`); an empty
/// list removes the file, and the host's `/etc/resolv.conf` counts again.
pub fn write_upstream(dir: &Path, servers: &[SocketAddr]) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join(UPSTREAM_FILE);
    if servers.is_empty() {
        return match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&path)(e)),
            _ => Ok(()),
        };
    }
    let bytes = serde_json::to_vec(servers).map_err(|source| Error::Json {
        path: path.clone(),
        source,
    })?;
    write_atomic(&path, &bytes)
}

/// The pid of the resolver running for `dir`, if one is.
pub fn running_pid(dir: &Path) -> Option<u32> {
    running(dir).map(|i| i.pid)
}

/// Makes sure one resolver runs for `dir` and serves every network written
/// there: starts `bin <dir>` (detached) unless a live one is recorded, then
/// waits until it has applied the current network files (sockets bound,
/// records loaded). With no network file, nothing needs to run and nothing
/// is started. Concurrent callers are serialized on `<dir>/lock`.
pub fn ensure_running(dir: &Path, bin: &Path) -> Result<(), Error> {
    let dir = std::path::absolute(dir).map_err(io_err(dir))?;
    let folder = dir.join(NETWORKS_DIR);
    fs::create_dir_all(&folder).map_err(io_err(&folder))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock_file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    let _lock = lock(lock_file)?;

    let deadline = Instant::now() + START_TIMEOUT;
    let mut pause = Duration::from_micros(200);
    loop {
        let wanted = desired(&dir)?;
        if wanted.is_empty() {
            return Ok(());
        }
        match running(&dir) {
            None => {
                if spawn(&dir, bin, deadline)? == Spawned::Started {
                    continue;
                }
                // Another resolver holds the instance lock: one that is
                // on its way out. Start ours once it has gone.
            }
            Some(instance) => {
                if let Some(ready) = read_ready(&dir)
                    && ready.pid == instance.pid
                    && ready.start == instance.start
                {
                    // Every file applied in the version on disk: then
                    // (and only then) its outcome counts.
                    let applied: Option<Vec<_>> = wanted
                        .iter()
                        .map(|(name, hash)| {
                            ready
                                .networks
                                .get(name)
                                .filter(|a| a.hash == *hash)
                                .map(|a| (name, a))
                        })
                        .collect();
                    if let Some(applied) = applied {
                        if let Some((name, a)) = applied.iter().find(|(_, a)| a.error.is_some()) {
                            return Err(Error::Network {
                                network: (*name).clone(),
                                message: a.error.clone().unwrap_or_default(),
                            });
                        }
                        return Ok(());
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::Start {
                dir,
                message: "timed out waiting for the resolver to serve the networks".into(),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

fn lock(file: File) -> Result<Flock<File>, Error> {
    let mut file = file;
    loop {
        match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(l) => return Ok(l),
            Err((f, Errno::EINTR)) => file = f,
            Err((_, e)) => return Err(sys("locking the resolver's lock file")(e)),
        }
    }
}

/// The network files: name → hash of the content.
fn desired(dir: &Path) -> Result<BTreeMap<String, u64>, Error> {
    let mut out = BTreeMap::new();
    for (name, path) in list_networks(dir)? {
        match fs::read(&path) {
            Ok(bytes) => {
                out.insert(name, fnv(&bytes));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
    }
    Ok(out)
}

fn list_networks(dir: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let folder = dir.join(NETWORKS_DIR);
    let entries = match fs::read_dir(&folder) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&folder)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(&folder))?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if file_name.starts_with('.') {
            continue;
        }
        if let Some(name) = file_name.strip_suffix(".json")
            && !name.is_empty()
        {
            out.push((name.to_string(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// FNV-1a: tells one version of a network file from another.
fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[derive(Serialize, Deserialize, Default)]
struct Ready {
    pid: u32,
    start: u64,
    networks: BTreeMap<String, Applied>,
}

#[derive(Serialize, Deserialize)]
struct Applied {
    hash: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn read_ready(dir: &Path) -> Option<Ready> {
    let bytes = fs::read(dir.join(READY_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[derive(Clone, Copy)]
struct Instance {
    pid: u32,
    start: u64,
}

impl Instance {
    fn alive(&self) -> bool {
        matches!(proc_stat(self.pid), Some((state, start)) if start == self.start && !matches!(state, b'Z' | b'X' | b'x'))
    }
}

/// The resolver recorded in `<dir>/pid`, if it still runs.
fn running(dir: &Path) -> Option<Instance> {
    let text = fs::read_to_string(dir.join(PID_FILE)).ok()?;
    let mut words = text.split_ascii_whitespace();
    let instance = Instance {
        pid: words.next()?.parse().ok()?,
        start: words.next()?.parse().ok()?,
    };
    instance.alive().then_some(instance)
}

/// State and start time (clock ticks after boot) of a process.
fn proc_stat(pid: u32) -> Option<(u8, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    // The state is field 3; the start time is field 22.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

#[derive(PartialEq)]
enum Spawned {
    /// It holds the instance lock.
    Started,
    /// It found another resolver holding the lock, and left.
    Busy,
}

/// Starts `bin <dir>` in a session of its own, reparented away from the
/// caller, and waits for its word on the instance lock.
fn spawn(dir: &Path, bin: &Path, deadline: Instant) -> Result<Spawned, Error> {
    let (reader, writer) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("pipe2"))?;
    let log_path = dir.join(LOG_FILE);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io_err(&log_path))?;
    if log.metadata().map(|m| m.len() > LOG_LIMIT).unwrap_or(false) {
        let _ = log.set_len(0);
    }
    let mut cmd = Command::new(bin);
    cmd.arg(dir)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(log));
    let detach = || -> io::Result<()> {
        nix::unistd::setsid().map_err(io::Error::from)?;
        // SAFETY: this runs in the child between fork and exec, where only
        // async-signal-safe calls are allowed: fork and _exit are.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => Ok(()),
            // SAFETY: _exit ends the intermediate process at once, without
            // running anything of the parent's that the fork copied.
            Ok(nix::unistd::ForkResult::Parent { .. }) => unsafe { libc::_exit(0) },
            Err(e) => Err(io::Error::from(e)),
        }
    };
    // SAFETY: `detach` only calls setsid, fork and _exit (see above).
    unsafe {
        cmd.pre_exec(detach);
    }
    let spawned = cmd.spawn();
    // The write end of the pipe lives in `cmd`: close our copy so that the
    // read below sees the end when the resolver goes away.
    drop(cmd);
    let mut child = spawned.map_err(io_err(bin))?;
    // The intermediate process exits at once; the resolver is its child.
    let _ = child.wait();

    let mut reader = File::from(reader);
    let mut got = Vec::new();
    let mut buf = [0u8; 16];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout_of(left)) {
            Ok(0) => {
                return Err(Error::Start {
                    dir: dir.to_path_buf(),
                    message: "no word from the resolver".into(),
                });
            }
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(sys("poll")(e)),
        }
        match reader.read(&mut buf) {
            Ok(0) if got.starts_with(BUSY) => return Ok(Spawned::Busy),
            Ok(0) => {
                return Err(Error::Start {
                    dir: dir.to_path_buf(),
                    message: format!("it exited at once: {}", last_line(&log_path)),
                });
            }
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.starts_with(STARTED) {
                    return Ok(Spawned::Started);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(dir)(e)),
        }
    }
}

/// The last line of the resolver's log, to tell why it did not start.
fn last_line(log: &Path) -> String {
    let Ok(text) = fs::read(log) else {
        return String::new();
    };
    let tail = &text[text.len().saturating_sub(4096)..];
    String::from_utf8_lossy(tail)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string()
}

fn timeout_of(d: Duration) -> PollTimeout {
    // Round up: a deadline less than a millisecond away must not spin.
    let ms = d.as_micros().div_ceil(1000);
    PollTimeout::try_from(i32::try_from(ms).unwrap_or(i32::MAX)).unwrap_or(PollTimeout::MAX)
}

// ---------------------------------------------------------------------------
// The wire format: just what a forwarding resolver with a few local names
// needs.

mod wire {
    use std::net::Ipv4Addr;

    pub const HEADER: usize = 12;
    pub const QR: u16 = 0x8000;
    pub const OPCODE: u16 = 0x7800;
    pub const AA: u16 = 0x0400;
    pub const RD: u16 = 0x0100;
    pub const RA: u16 = 0x0080;
    pub const RCODE: u16 = 0x000f;

    pub const NOERROR: u16 = 0;
    pub const FORMERR: u16 = 1;
    pub const SERVFAIL: u16 = 2;
    pub const NOTIMP: u16 = 4;
    pub const REFUSED: u16 = 5;

    pub const TYPE_A: u16 = 1;
    pub const TYPE_PTR: u16 = 12;
    pub const TYPE_ANY: u16 = 255;
    pub const CLASS_IN: u16 = 1;
    pub const CLASS_ANY: u16 = 255;

    fn be16(m: &[u8], at: usize) -> Option<u16> {
        Some(u16::from_be_bytes([*m.get(at)?, *m.get(at + 1)?]))
    }

    #[derive(Clone, Copy, Debug)]
    pub struct Header {
        pub id: u16,
        pub flags: u16,
        pub qdcount: u16,
    }

    impl Header {
        pub fn parse(m: &[u8]) -> Option<Header> {
            if m.len() < HEADER {
                return None;
            }
            Some(Header {
                id: be16(m, 0)?,
                flags: be16(m, 2)?,
                qdcount: be16(m, 4)?,
            })
        }

        pub fn is_response(&self) -> bool {
            self.flags & QR != 0
        }

        pub fn opcode(&self) -> u16 {
            (self.flags & OPCODE) >> 11
        }
    }

    /// The first question of a message.
    #[derive(Debug)]
    pub struct Question {
        /// Lower case, dotted, without the final dot; `None` when a label
        /// holds a dot or a byte that is not printable ASCII (such a name
        /// matches nothing local).
        pub name: Option<String>,
        pub qtype: u16,
        pub qclass: u16,
        /// Where the question ends in the message.
        pub end: usize,
    }

    /// Reads the question at the start of a message. Compression is not
    /// accepted there (nothing precedes the first name to point at).
    pub fn question(m: &[u8]) -> Option<Question> {
        let mut at = HEADER;
        let mut name = String::new();
        let mut plain = true;
        let mut total = 0usize;
        loop {
            let len = usize::from(*m.get(at)?);
            at += 1;
            if len == 0 {
                break;
            }
            if len > 63 {
                return None;
            }
            let label = m.get(at..at + len)?;
            at += len;
            total += len + 1;
            if total > 255 {
                return None;
            }
            if !name.is_empty() {
                name.push('.');
            }
            for &b in label {
                if b == b'.' || !b.is_ascii_graphic() {
                    plain = false;
                } else {
                    name.push(char::from(b.to_ascii_lowercase()));
                }
            }
        }
        let qtype = be16(m, at)?;
        let qclass = be16(m, at + 2)?;
        Some(Question {
            name: plain.then_some(name),
            qtype,
            qclass,
            end: at + 4,
        })
    }

    /// Whether two messages carry the same question (`..end`), names
    /// compared without regard to case.
    pub fn same_question(a: &[u8], b: &[u8], end: usize) -> bool {
        match (a.get(HEADER..end), b.get(HEADER..end)) {
            (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
            _ => false,
        }
    }

    pub enum Answer<'a> {
        A(Ipv4Addr),
        Ptr(&'a str),
    }

    /// Appends `name` in wire form (labels, then the root); false if it
    /// cannot be written (an empty or overlong label, an overlong name).
    pub fn encode_name(name: &str, out: &mut Vec<u8>) -> bool {
        let start = out.len();
        for label in name.trim_end_matches('.').split('.') {
            let Ok(len) = u8::try_from(label.len()) else {
                out.truncate(start);
                return false;
            };
            if len == 0 || len > 63 {
                out.truncate(start);
                return false;
            }
            out.push(len);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        if out.len() - start > 255 {
            out.truncate(start);
            return false;
        }
        true
    }

    /// A reply to `query`: its id, opcode and RD, RA set, the question
    /// echoed when `question_end` is given, and at most one answer.
    pub fn reply(
        query: &[u8],
        id: u16,
        question_end: Option<usize>,
        rcode: u16,
        authoritative: bool,
        answer: Option<Answer>,
    ) -> Vec<u8> {
        let qflags = be16(query, 2).unwrap_or(0);
        let mut flags = QR | (qflags & (OPCODE | RD)) | RA | (rcode & RCODE);
        if authoritative {
            flags |= AA;
        }
        let question = question_end.and_then(|end| query.get(HEADER..end));
        let mut out = Vec::with_capacity(64 + question.map_or(0, <[u8]>::len));
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&u16::from(question.is_some()).to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        if let Some(q) = question {
            out.extend_from_slice(q);
        }
        let Some(answer) = answer.filter(|_| question.is_some()) else {
            return out;
        };
        let mark = out.len();
        // The owner: a pointer to the question's name at offset 12.
        out.extend_from_slice(&[0xc0, 0x0c]);
        match answer {
            Answer::A(ip) => {
                out.extend_from_slice(&TYPE_A.to_be_bytes());
                out.extend_from_slice(&CLASS_IN.to_be_bytes());
                out.extend_from_slice(&super::TTL.to_be_bytes());
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&ip.octets());
            }
            Answer::Ptr(name) => {
                out.extend_from_slice(&TYPE_PTR.to_be_bytes());
                out.extend_from_slice(&CLASS_IN.to_be_bytes());
                out.extend_from_slice(&super::TTL.to_be_bytes());
                let len_at = out.len();
                out.extend_from_slice(&[0, 0]);
                let encoded = encode_name(name, &mut out);
                let rdlen = u16::try_from(out.len() - len_at - 2).ok();
                match rdlen {
                    Some(n) if encoded => out[len_at..len_at + 2].copy_from_slice(&n.to_be_bytes()),
                    _ => {
                        out.truncate(mark);
                        return out;
                    }
                }
            }
        }
        // ANCOUNT = 1.
        out[7] = 1;
        out
    }
}

// ---------------------------------------------------------------------------
// The names a resolver knows, shared with the threads that serve TCP.

struct Zone {
    nets: Vec<ZoneNet>,
}

struct ZoneNet {
    /// The network file's name (the key the sockets are known by).
    name: String,
    internal: bool,
    records: Vec<ZoneRecord>,
}

struct ZoneRecord {
    container: String,
    /// Lower case, without a final dot, none empty.
    names: Vec<String>,
    /// The first name as written, without a final dot (for PTR).
    first: Option<String>,
    ip: Ipv4Addr,
}

#[derive(Debug, PartialEq)]
enum Local {
    A(Ipv4Addr),
    NoData,
    Ptr(String),
    Refused,
    Forward,
}

impl Zone {
    fn new<'a>(nets: impl Iterator<Item = (&'a str, &'a DnsNetwork)>) -> Zone {
        let nets = nets
            .map(|(name, net)| ZoneNet {
                name: name.to_string(),
                internal: net.internal,
                records: net
                    .records
                    .iter()
                    .map(|r| ZoneRecord {
                        container: r.container.clone(),
                        names: r
                            .names
                            .iter()
                            .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
                            .filter(|n| !n.is_empty())
                            .collect(),
                        first: r
                            .names
                            .iter()
                            .map(|n| n.trim_end_matches('.'))
                            .find(|n| !n.is_empty())
                            .map(str::to_string),
                        ip: r.ip,
                    })
                    .collect(),
            })
            .collect();
        Zone { nets }
    }

    fn resolve(&self, net: &str, src: IpAddr, q: &wire::Question) -> Local {
        let Some(home) = self.nets.iter().position(|n| n.name == net) else {
            return Local::Refused;
        };
        let mut search = vec![&self.nets[home]];
        if let IpAddr::V4(src) = src {
            let me: Vec<&str> = self.nets[home]
                .records
                .iter()
                .filter(|r| r.ip == src)
                .map(|r| r.container.as_str())
                .collect();
            if !me.is_empty() {
                for (i, n) in self.nets.iter().enumerate() {
                    if i != home && n.records.iter().any(|r| me.contains(&r.container.as_str())) {
                        search.push(n);
                    }
                }
            }
        }
        if let Some(name) = &q.name
            && matches!(q.qclass, wire::CLASS_IN | wire::CLASS_ANY)
        {
            if q.qtype == wire::TYPE_PTR
                && let Some(ip) = arpa(name)
            {
                for n in &search {
                    if let Some(r) = n.records.iter().find(|r| r.ip == ip) {
                        return r.first.clone().map_or(Local::NoData, Local::Ptr);
                    }
                }
            }
            for n in &search {
                if let Some(r) = n.records.iter().find(|r| r.names.iter().any(|x| x == name)) {
                    return match q.qtype {
                        wire::TYPE_A | wire::TYPE_ANY => Local::A(r.ip),
                        _ => Local::NoData,
                    };
                }
            }
        }
        if self.nets[home].internal {
            Local::Refused
        } else {
            Local::Forward
        }
    }
}

/// `d.c.b.a.in-addr.arpa` → a.b.c.d.
fn arpa(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_suffix(".in-addr.arpa")?;
    let mut parts = rest.split('.');
    let mut octets = [0u8; 4];
    for slot in octets.iter_mut().rev() {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = p.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

enum Outcome {
    Reply(Vec<u8>),
    Drop,
    /// Not ours: forward; the question ends there.
    Forward(usize),
}

/// What to do with a message that arrived on network `net` from `src`.
fn handle(zone: &Zone, net: &str, src: IpAddr, msg: &[u8]) -> Outcome {
    let Some(h) = wire::Header::parse(msg) else {
        return Outcome::Drop;
    };
    if h.is_response() {
        return Outcome::Drop;
    }
    if h.opcode() != 0 {
        return Outcome::Reply(wire::reply(msg, h.id, None, wire::NOTIMP, false, None));
    }
    let question = (h.qdcount == 1).then(|| wire::question(msg)).flatten();
    let Some(q) = question else {
        return Outcome::Reply(wire::reply(msg, h.id, None, wire::FORMERR, false, None));
    };
    let end = Some(q.end);
    let reply = match zone.resolve(net, src, &q) {
        Local::A(ip) => wire::reply(
            msg,
            h.id,
            end,
            wire::NOERROR,
            true,
            Some(wire::Answer::A(ip)),
        ),
        Local::NoData => wire::reply(msg, h.id, end, wire::NOERROR, true, None),
        Local::Ptr(name) => wire::reply(
            msg,
            h.id,
            end,
            wire::NOERROR,
            true,
            Some(wire::Answer::Ptr(&name)),
        ),
        Local::Refused => wire::reply(msg, h.id, end, wire::REFUSED, false, None),
        Local::Forward => return Outcome::Forward(q.end),
    };
    Outcome::Reply(reply)
}

// ---------------------------------------------------------------------------
// The resolver.

/// Runs the resolver for `dir` until no network is left (the body of
/// `hako-dns <dir>`). Returns at once if another resolver holds `dir`.
pub fn serve(dir: &Path) -> Result<(), Error> {
    let dir = std::path::absolute(dir).map_err(io_err(dir))?;
    let folder = dir.join(NETWORKS_DIR);
    fs::create_dir_all(&folder).map_err(io_err(&folder))?;
    let pid_path = dir.join(PID_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&pid_path)
        .map_err(io_err(&pid_path))?;
    let instance_lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, Errno::EWOULDBLOCK)) => {
            announce(BUSY);
            return Ok(());
        }
        Err((_, e)) => return Err(sys("locking the pid file")(e)),
    };
    let pid = std::process::id();
    let start = proc_stat(pid)
        .map(|(_, start)| start)
        .ok_or_else(|| Error::Start {
            dir: dir.clone(),
            message: "cannot read /proc/self/stat".into(),
        })?;
    instance_lock.set_len(0).map_err(io_err(&pid_path))?;
    instance_lock
        .write_all_at(format!("{pid} {start}\n").as_bytes(), 0)
        .map_err(io_err(&pid_path))?;
    let mut server = Server::new(dir, pid, start)?;
    announce(STARTED);
    let result = server.run();
    drop(instance_lock);
    result
}

/// Tells the starter (reading a pipe on our standard output) whether we
/// hold the instance lock, then points standard output at /dev/null.
fn announce(word: &[u8]) {
    let stdout = io::stdout();
    let is_pipe = nix::sys::stat::fstat(stdout.as_fd())
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFIFO)
        .unwrap_or(false);
    if !is_pipe {
        return;
    }
    let mut out = stdout.lock();
    let _ = out.write_all(word).and_then(|()| out.flush());
    if let Ok(null) = OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }
}

struct Net {
    name: String,
    /// The hash of the file last applied.
    hash: u64,
    config: Option<DnsNetwork>,
    error: Option<String>,
    /// Changes whenever the sockets are bound anew.
    serial: u64,
    udp: Option<UdpSocket>,
    tcp: Option<TcpListener>,
}

impl Net {
    /// A network whose sockets could not be bound.
    fn unbound(&self) -> bool {
        self.config.is_some() && self.udp.is_none()
    }
}

struct Pending {
    client: SocketAddr,
    client_id: u16,
    /// The serial of the network the query came in on.
    net: u64,
    /// The query as sent upstream (with our id).
    query: Vec<u8>,
    question_end: usize,
    /// The next upstream to try.
    next: usize,
    sent_to: SocketAddr,
    deadline: Instant,
    seq: u64,
}

#[derive(PartialEq)]
struct Stamp {
    custom: bool,
    ino: u64,
    mtime: i64,
    mtime_nsec: i64,
    len: u64,
}

struct Upstreams {
    /// As configured.
    configured: Vec<SocketAddr>,
    /// Without our own listening addresses (no loops).
    list: Vec<SocketAddr>,
    stamp: Option<Stamp>,
    checked: Option<Instant>,
}

impl Upstreams {
    /// Reads the upstream list again if its file changed (`force`: look
    /// now, else at most every few seconds).
    fn refresh(&mut self, dir: &Path, force: bool) {
        if !force && self.checked.is_some_and(|t| t.elapsed() < UPSTREAM_RECHECK) {
            return;
        }
        self.checked = Some(Instant::now());
        let custom_path = dir.join(UPSTREAM_FILE);
        let (path, custom) = match fs::metadata(&custom_path) {
            Ok(_) => (custom_path, true),
            Err(_) => (PathBuf::from(RESOLV_CONF), false),
        };
        let stamp = fs::metadata(&path).ok().map(|m| Stamp {
            custom,
            ino: m.ino(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            len: m.len(),
        });
        if stamp.is_some() && stamp == self.stamp {
            return;
        }
        let text = fs::read_to_string(&path).unwrap_or_default();
        if custom {
            match serde_json::from_str::<Vec<SocketAddr>>(&text) {
                Ok(list) => self.configured = list,
                Err(e) => {
                    eprintln!("hako-dns: {}: {e}", path.display());
                    return;
                }
            }
        } else {
            self.configured = resolv_conf_servers(&text);
        }
        self.stamp = stamp;
    }

    fn filter(&mut self, listening: &[SocketAddr]) {
        self.list = self
            .configured
            .iter()
            .filter(|a| !listening.contains(a))
            .copied()
            .collect();
    }
}

fn resolv_conf_servers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_ascii_whitespace();
            if words.next() != Some("nameserver") {
                return None;
            }
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// Message ids for forwarded queries: a keyed hash (SipHash, with the
/// process's random keys) of a counter.
struct Ids {
    keys: RandomState,
    counter: u64,
}

impl Ids {
    fn next(&mut self) -> u16 {
        self.counter += 1;
        let mut h = self.keys.build_hasher();
        h.write_u64(self.counter);
        let b = h.finish().to_le_bytes();
        u16::from_le_bytes([b[0], b[1]])
    }
}

#[derive(Clone, Copy)]
enum Token {
    Inotify,
    Upstream4,
    Upstream6,
    Udp(usize),
    Tcp(usize),
}

struct Server {
    dir: PathBuf,
    pid: u32,
    start: u64,
    inotify: Inotify,
    nets: Vec<Net>,
    serial: u64,
    zone: Arc<Zone>,
    upstreams: Upstreams,
    up4: Option<UdpSocket>,
    up6: Option<UdpSocket>,
    pending: HashMap<u16, Pending>,
    /// (deadline, id, seq) in the order the deadlines fall.
    order: VecDeque<(Instant, u16, u64)>,
    seq: u64,
    ids: Ids,
    tcp_active: Arc<AtomicUsize>,
    /// When to try again a bind that failed.
    retry_at: Option<Instant>,
    buf: Vec<u8>,
}

impl Server {
    fn new(dir: PathBuf, pid: u32, start: u64) -> Result<Server, Error> {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(sys("inotify_init"))?;
        let folder = dir.join(NETWORKS_DIR);
        inotify
            .add_watch(
                &folder,
                AddWatchFlags::IN_CLOSE_WRITE
                    | AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_MOVED_FROM
                    | AddWatchFlags::IN_DELETE
                    | AddWatchFlags::IN_DELETE_SELF
                    | AddWatchFlags::IN_MOVE_SELF
                    | AddWatchFlags::IN_ONLYDIR,
            )
            .map_err(sys("watching the networks folder"))?;
        inotify
            .add_watch(
                &dir,
                AddWatchFlags::IN_CLOSE_WRITE
                    | AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_MOVED_FROM
                    | AddWatchFlags::IN_DELETE
                    | AddWatchFlags::IN_ONLYDIR,
            )
            .map_err(sys("watching the state folder"))?;
        let mut upstreams = Upstreams {
            configured: Vec::new(),
            list: Vec::new(),
            stamp: None,
            checked: None,
        };
        upstreams.refresh(&dir, true);
        Ok(Server {
            dir,
            pid,
            start,
            inotify,
            nets: Vec::new(),
            serial: 0,
            zone: Arc::new(Zone { nets: Vec::new() }),
            upstreams,
            up4: None,
            up6: None,
            pending: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
            ids: Ids {
                keys: RandomState::new(),
                counter: 0,
            },
            tcp_active: Arc::new(AtomicUsize::new(0)),
            retry_at: None,
            buf: vec![0; 65535],
        })
    }

    fn run(&mut self) -> Result<(), Error> {
        let mut dirty = true;
        loop {
            if dirty {
                dirty = false;
                if !self.reload() {
                    return Ok(());
                }
            }
            let now = Instant::now();
            self.expire(now);
            let mut wait = self
                .order
                .front()
                .map(|&(deadline, _, _)| deadline.saturating_duration_since(now));
            if self.nets.iter().any(Net::unbound) {
                let at = *self.retry_at.get_or_insert(now + BIND_RETRY);
                if at <= now {
                    self.retry_at = None;
                    dirty = true;
                    continue;
                }
                wait = Some(wait.map_or(at - now, |w| w.min(at - now)));
            } else {
                self.retry_at = None;
            }
            let timeout = wait.map_or(PollTimeout::NONE, timeout_of);

            let mut tokens = Vec::with_capacity(3 + 2 * self.nets.len());
            let mut fds = Vec::with_capacity(tokens.capacity());
            fds.push(PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN));
            tokens.push(Token::Inotify);
            if let Some(s) = &self.up4 {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
                tokens.push(Token::Upstream4);
            }
            if let Some(s) = &self.up6 {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
                tokens.push(Token::Upstream6);
            }
            for (i, n) in self.nets.iter().enumerate() {
                if let Some(s) = &n.udp {
                    fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
                    tokens.push(Token::Udp(i));
                }
                if let Some(s) = &n.tcp {
                    fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
                    tokens.push(Token::Tcp(i));
                }
            }
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(sys("poll")(e)),
            }
            let ready: Vec<Token> = fds
                .iter()
                .zip(&tokens)
                .filter(|(fd, _)| fd.revents().is_some_and(|r| !r.is_empty()))
                .map(|(_, t)| *t)
                .collect();
            drop(fds);
            for token in ready {
                match token {
                    Token::Inotify => dirty |= self.drain_inotify(),
                    Token::Upstream4 => self.read_upstream(false),
                    Token::Upstream6 => self.read_upstream(true),
                    Token::Udp(i) => self.read_queries(i),
                    Token::Tcp(i) => self.accept(i),
                }
            }
        }
    }

    /// Reads the pending inotify events; true if the configuration may
    /// have changed.
    fn drain_inotify(&mut self) -> bool {
        let mut changed = false;
        loop {
            match self.inotify.read_events() {
                Ok(events) if !events.is_empty() => {
                    for ev in events {
                        let name = ev.name.as_deref().and_then(|n| n.to_str());
                        if name == Some(UPSTREAM_FILE) {
                            self.upstreams.refresh(&self.dir, true);
                            let listening = self.listening();
                            self.upstreams.filter(&listening);
                        }
                        let own = matches!(name, Some(n) if n.starts_with('.') || n == READY_FILE || n == PID_FILE || n == LOCK_FILE || n == LOG_FILE || n == UPSTREAM_FILE);
                        if !own {
                            changed = true;
                        }
                    }
                }
                Ok(_) => return changed,
                Err(Errno::EINTR) => {}
                Err(_) => return changed,
            }
        }
    }

    fn listening(&self) -> Vec<SocketAddr> {
        self.nets
            .iter()
            .filter_map(|n| n.config.as_ref().map(|c| c.listen))
            .collect()
    }

    /// Applies the network files; false when none is left.
    fn reload(&mut self) -> bool {
        let files = match list_networks(&self.dir) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("hako-dns: {e}");
                return !self.nets.is_empty();
            }
        };
        self.nets
            .retain(|n| files.iter().any(|(name, _)| *name == n.name));
        for (name, path) in files {
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    if e.kind() == io::ErrorKind::NotFound {
                        self.nets.retain(|n| n.name != name);
                    } else {
                        eprintln!("hako-dns: {}: {e}", path.display());
                    }
                    continue;
                }
            };
            let hash = fnv(&bytes);
            let index = match self.nets.iter().position(|n| n.name == name) {
                // The same version again: only a bind that failed is tried
                // again.
                Some(i) if self.nets[i].hash == hash && !self.nets[i].unbound() => continue,
                Some(i) => i,
                None => {
                    self.nets.push(Net {
                        name,
                        hash,
                        config: None,
                        error: None,
                        serial: 0,
                        udp: None,
                        tcp: None,
                    });
                    self.nets.len() - 1
                }
            };
            let parsed = serde_json::from_slice::<DnsNetwork>(&bytes)
                .map_err(|e| format!("{}: {e}", path.display()));
            self.apply(index, hash, parsed);
        }
        if self.nets.is_empty() {
            return false;
        }
        self.zone = Arc::new(Zone::new(
            self.nets
                .iter()
                .filter_map(|n| n.config.as_ref().map(|c| (n.name.as_str(), c))),
        ));
        let listening = self.listening();
        self.upstreams.filter(&listening);
        self.write_ready();
        true
    }

    fn apply(&mut self, index: usize, hash: u64, parsed: Result<DnsNetwork, String>) {
        let net = &mut self.nets[index];
        net.hash = hash;
        let config = match parsed {
            Ok(c) => c,
            Err(e) => {
                eprintln!("hako-dns: {e}");
                net.error = Some(e);
                return;
            }
        };
        let same_place = net.config.as_ref().map(|c| c.listen) == Some(config.listen);
        if !same_place || net.udp.is_none() || net.tcp.is_none() {
            // Close first: the new sockets may take the same address.
            net.udp = None;
            net.tcp = None;
            match bind_udp(config.listen).and_then(|u| Ok((u, bind_tcp(config.listen)?))) {
                Ok((udp, tcp)) => {
                    net.udp = Some(udp);
                    net.tcp = Some(tcp);
                    net.error = None;
                    self.serial += 1;
                    net.serial = self.serial;
                }
                Err(e) => {
                    let message = format!("binding {}: {e}", config.listen);
                    if net.error.as_ref() != Some(&message) {
                        eprintln!("hako-dns: network {}: {message}", net.name);
                    }
                    net.error = Some(message);
                }
            }
        } else {
            net.error = None;
        }
        net.config = Some(config);
    }

    fn write_ready(&self) {
        let ready = Ready {
            pid: self.pid,
            start: self.start,
            networks: self
                .nets
                .iter()
                .map(|n| {
                    (
                        n.name.clone(),
                        Applied {
                            hash: n.hash,
                            error: n.error.clone(),
                        },
                    )
                })
                .collect(),
        };
        let path = self.dir.join(READY_FILE);
        let written = serde_json::to_vec(&ready)
            .map_err(|source| Error::Json {
                path: path.clone(),
                source,
            })
            .and_then(|bytes| write_atomic(&path, &bytes));
        if let Err(e) = written {
            eprintln!("hako-dns: {e}");
        }
    }

    fn read_queries(&mut self, index: usize) {
        let mut buf = std::mem::take(&mut self.buf);
        for _ in 0..64 {
            let Some(sock) = self.nets.get(index).and_then(|n| n.udp.as_ref()) else {
                break;
            };
            let (len, src) = match sock.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if len > MAX_QUERY {
                continue;
            }
            let msg = &buf[..len];
            let net = &self.nets[index];
            match handle(&self.zone, &net.name, src.ip(), msg) {
                Outcome::Reply(reply) => {
                    let _ = sock.send_to(&reply, src);
                }
                Outcome::Drop => {}
                Outcome::Forward(end) => {
                    let serial = net.serial;
                    self.forward(serial, src, msg, end);
                }
            }
        }
        self.buf = buf;
    }

    fn net_socket(&self, serial: u64) -> Option<&UdpSocket> {
        self.nets
            .iter()
            .find(|n| n.serial == serial)
            .and_then(|n| n.udp.as_ref())
    }

    fn fail(&self, p: &Pending) {
        if let Some(sock) = self.net_socket(p.net) {
            let reply = wire::reply(
                &p.query,
                p.client_id,
                Some(p.question_end),
                wire::SERVFAIL,
                false,
                None,
            );
            let _ = sock.send_to(&reply, p.client);
        }
    }

    fn forward(&mut self, net: u64, client: SocketAddr, msg: &[u8], question_end: usize) {
        self.upstreams.refresh(&self.dir, false);
        let listening = self.listening();
        self.upstreams.filter(&listening);
        let client_id = u16::from_be_bytes([msg[0], msg[1]]);
        let mut id = self.ids.next();
        while self.pending.contains_key(&id) {
            id = self.ids.next();
        }
        let mut query = msg.to_vec();
        query[..2].copy_from_slice(&id.to_be_bytes());
        self.seq += 1;
        let mut p = Pending {
            client,
            client_id,
            net,
            query,
            question_end,
            next: 0,
            sent_to: client,
            deadline: Instant::now(),
            seq: self.seq,
        };
        if self.pending.len() >= MAX_PENDING || !self.send_upstream(&mut p) {
            self.fail(&p);
            return;
        }
        self.order.push_back((p.deadline, id, p.seq));
        self.pending.insert(id, p);
    }

    /// Sends the query to the next upstream that takes it; false when
    /// none is left.
    fn send_upstream(&mut self, p: &mut Pending) -> bool {
        while let Some(&to) = self.upstreams.list.get(p.next) {
            p.next += 1;
            let slot = if to.is_ipv4() {
                &mut self.up4
            } else {
                &mut self.up6
            };
            if slot.is_none() {
                let any: SocketAddr = if to.is_ipv4() {
                    (Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                match UdpSocket::bind(any).and_then(|s| s.set_nonblocking(true).map(|()| s)) {
                    Ok(s) => *slot = Some(s),
                    Err(e) => {
                        eprintln!("hako-dns: a socket for {to}: {e}");
                        continue;
                    }
                }
            }
            if let Some(sock) = slot.as_ref()
                && sock.send_to(&p.query, to).is_ok()
            {
                p.sent_to = to;
                p.deadline = Instant::now() + UPSTREAM_TIMEOUT;
                return true;
            }
        }
        false
    }

    /// Upstreams that did not answer in time: the next one, or SERVFAIL.
    fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, id, seq)) = self.order.front() {
            if deadline > now {
                break;
            }
            self.order.pop_front();
            if self.pending.get(&id).is_none_or(|p| p.seq != seq) {
                continue;
            }
            let Some(mut p) = self.pending.remove(&id) else {
                continue;
            };
            if self.send_upstream(&mut p) {
                self.seq += 1;
                p.seq = self.seq;
                self.order.push_back((p.deadline, id, p.seq));
                self.pending.insert(id, p);
            } else {
                self.fail(&p);
            }
        }
    }

    fn read_upstream(&mut self, v6: bool) {
        let mut buf = std::mem::take(&mut self.buf);
        for _ in 0..64 {
            let sock = if v6 { &self.up6 } else { &self.up4 };
            let Some(sock) = sock.as_ref() else { break };
            let (len, from) = match sock.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            self.relay(from, &buf[..len]);
        }
        self.buf = buf;
    }

    fn relay(&mut self, from: SocketAddr, resp: &[u8]) {
        let Some(h) = wire::Header::parse(resp) else {
            return;
        };
        let Some(p) = self.pending.get(&h.id) else {
            return;
        };
        if from != p.sent_to && !self.upstreams.list.contains(&from) {
            return;
        }
        let rcode = h.flags & wire::RCODE;
        let matches = if h.qdcount == 0 {
            rcode != wire::NOERROR
        } else {
            h.qdcount == 1 && wire::same_question(resp, &p.query, p.question_end)
        };
        if !h.is_response() || !matches {
            return;
        }
        let Some(p) = self.pending.remove(&h.id) else {
            return;
        };
        if let Some(sock) = self.net_socket(p.net) {
            let mut out = resp.to_vec();
            out[..2].copy_from_slice(&p.client_id.to_be_bytes());
            let _ = sock.send_to(&out, p.client);
        }
    }

    fn accept(&mut self, index: usize) {
        let Some(net) = self.nets.get(index) else {
            return;
        };
        let Some(listener) = net.tcp.as_ref() else {
            return;
        };
        loop {
            let (stream, peer) = match listener.accept() {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let active = self.tcp_active.fetch_add(1, Ordering::AcqRel);
            let slot = Slot(self.tcp_active.clone());
            if active >= MAX_TCP {
                continue;
            }
            let zone = self.zone.clone();
            let name = net.name.clone();
            let upstreams = self.upstreams.list.clone();
            let spawned = std::thread::Builder::new()
                .name("hako-dns-tcp".into())
                .stack_size(TCP_STACK)
                .spawn(move || {
                    let _slot = slot;
                    serve_tcp(stream, peer.ip(), &zone, &name, &upstreams);
                });
            if let Err(e) = spawned {
                eprintln!("hako-dns: a thread for a TCP client: {e}");
            }
        }
    }
}

/// One TCP client's place among the `MAX_TCP`.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn serve_tcp(
    mut stream: TcpStream,
    peer: IpAddr,
    zone: &Zone,
    net: &str,
    upstreams: &[SocketAddr],
) {
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(TCP_IDLE)).is_err()
        || stream.set_write_timeout(Some(TCP_IDLE)).is_err()
    {
        return;
    }
    let _ = stream.set_nodelay(true);
    while let Some(msg) = read_frame(&mut stream) {
        let reply = match handle(zone, net, peer, &msg) {
            Outcome::Reply(r) => r,
            Outcome::Drop => continue,
            Outcome::Forward(end) => forward_tcp(upstreams, &msg).unwrap_or_else(|| {
                let id = u16::from_be_bytes([msg[0], msg[1]]);
                wire::reply(&msg, id, Some(end), wire::SERVFAIL, false, None)
            }),
        };
        if write_frame(&mut stream, &reply).is_err() {
            return;
        }
    }
}

fn forward_tcp(upstreams: &[SocketAddr], msg: &[u8]) -> Option<Vec<u8>> {
    for to in upstreams {
        let Ok(mut conn) = TcpStream::connect_timeout(to, UPSTREAM_TIMEOUT) else {
            continue;
        };
        if conn.set_read_timeout(Some(UPSTREAM_TIMEOUT)).is_err()
            || conn.set_write_timeout(Some(UPSTREAM_TIMEOUT)).is_err()
            || write_frame(&mut conn, msg).is_err()
        {
            continue;
        }
        if let Some(reply) = read_frame(&mut conn)
            && reply.len() >= wire::HEADER
            && reply[..2] == msg[..2]
        {
            return Some(reply);
        }
    }
    None
}

fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).ok()?;
    let mut msg = vec![0; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut msg).ok()?;
    Some(msg)
}

fn write_frame(stream: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| io::Error::other("message too long"))?;
    let mut frame = Vec::with_capacity(msg.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(msg);
    stream.write_all(&frame)
}

fn new_socket(addr: SocketAddr, kind: SockType) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(
        family,
        kind,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    // The gateway address may appear on its bridge a moment later.
    setsockopt(&fd, sockopt::IpFreebind, &true)?;
    if kind == SockType::Stream {
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    Ok(fd)
}

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    Ok(UdpSocket::from(new_socket(addr, SockType::Datagram)?))
}

fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let fd = new_socket(addr, SockType::Stream)?;
    listen(&fd, Backlog::new(64)?)?;
    Ok(TcpListener::from(fd))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        assert!(wire::encode_name(name, &mut m));
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m
    }

    fn zone() -> Zone {
        let a = DnsNetwork {
            name: "a".into(),
            listen: "127.0.0.1:53".parse().unwrap(),
            internal: false,
            records: vec![
                DnsRecord {
                    container: "c1".into(),
                    names: vec!["Web.".into(), "alias".into()],
                    ip: Ipv4Addr::new(10, 0, 0, 2),
                },
                DnsRecord {
                    container: "c3".into(),
                    names: vec!["lonely".into()],
                    ip: Ipv4Addr::new(10, 0, 0, 3),
                },
            ],
        };
        let b = DnsNetwork {
            name: "b".into(),
            listen: "127.0.0.2:53".parse().unwrap(),
            internal: true,
            records: vec![
                DnsRecord {
                    container: "c1".into(),
                    names: vec!["web".into()],
                    ip: Ipv4Addr::new(10, 1, 0, 2),
                },
                DnsRecord {
                    container: "c2".into(),
                    names: vec!["db".into()],
                    ip: Ipv4Addr::new(10, 1, 0, 3),
                },
            ],
        };
        let nets = [a, b];
        Zone::new(nets.iter().map(|n| (n.name.as_str(), n)))
    }

    fn resolve(z: &Zone, net: &str, src: [u8; 4], name: &str, qtype: u16) -> Local {
        let m = query(name, qtype);
        let q = wire::question(&m).unwrap();
        z.resolve(net, IpAddr::from(src), &q)
    }

    #[test]
    fn lookups() {
        let z = zone();
        let a = Local::A(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(resolve(&z, "a", [9, 9, 9, 9], "WEB", 1), a);
        assert_eq!(resolve(&z, "a", [9, 9, 9, 9], "alias.", 1), a);
        assert_eq!(resolve(&z, "a", [9, 9, 9, 9], "web", 28), Local::NoData);
        assert_eq!(resolve(&z, "a", [9, 9, 9, 9], "db", 1), Local::Forward);
        // c1 is on both networks: it sees db.
        assert_eq!(
            resolve(&z, "a", [10, 0, 0, 2], "db", 1),
            Local::A(Ipv4Addr::new(10, 1, 0, 3))
        );
        // c3 is not.
        assert_eq!(resolve(&z, "a", [10, 0, 0, 3], "db", 1), Local::Forward);
        assert_eq!(
            resolve(&z, "b", [10, 1, 0, 3], "nothing", 1),
            Local::Refused
        );
        assert_eq!(
            resolve(&z, "a", [1, 1, 1, 1], "2.0.0.10.in-addr.arpa", 12),
            Local::Ptr("Web".into())
        );
        assert_eq!(
            resolve(&z, "a", [1, 1, 1, 1], "9.0.0.10.in-addr.arpa", 12),
            Local::Forward
        );
    }

    #[test]
    fn arpa_names() {
        assert_eq!(
            arpa("4.3.2.1.in-addr.arpa"),
            Some(Ipv4Addr::new(1, 2, 3, 4))
        );
        assert_eq!(arpa("3.2.1.in-addr.arpa"), None);
        assert_eq!(arpa("5.4.3.2.1.in-addr.arpa"), None);
        assert_eq!(arpa("+4.3.2.1.in-addr.arpa"), None);
        assert_eq!(arpa("256.3.2.1.in-addr.arpa"), None);
    }

    #[test]
    fn replies() {
        let m = query("web", 1);
        let end = wire::question(&m).unwrap().end;
        let r = wire::reply(
            &m,
            7,
            Some(end),
            0,
            true,
            Some(wire::Answer::A(Ipv4Addr::new(1, 2, 3, 4))),
        );
        assert_eq!(&r[..2], &[0, 7]);
        assert_eq!(u16::from_be_bytes([r[2], r[3]]), 0x8580);
        assert_eq!(&r[4..8], &[0, 1, 0, 1]);
        assert_eq!(&r[12..end], &m[12..end]);
        assert_eq!(&r[r.len() - 4..], &[1, 2, 3, 4]);
        let r = wire::reply(&m, 7, Some(end), 0, true, Some(wire::Answer::Ptr("a.b")));
        assert_eq!(&r[r.len() - 7..], &[0, 5, 1, b'a', 1, b'b', 0][..]);
        assert_eq!(r[7], 1);
        let too_long = "x".repeat(64);
        let r = wire::reply(
            &m,
            7,
            Some(end),
            0,
            true,
            Some(wire::Answer::Ptr(&too_long)),
        );
        assert_eq!(r.len(), end);
        assert_eq!(r[7], 0);
    }

    #[test]
    fn malformed_questions() {
        let z = zone();
        let src = IpAddr::from([1, 1, 1, 1]);
        assert!(matches!(handle(&z, "a", src, &[1, 2, 3]), Outcome::Drop));
        let mut m = query("web", 1);
        m[12] = 0xc0;
        assert!(matches!(handle(&z, "a", src, &m), Outcome::Reply(r) if r[3] & 0xf == 1));
        let mut m = query("web", 1);
        m.truncate(m.len() - 1);
        assert!(matches!(handle(&z, "a", src, &m), Outcome::Reply(r) if r[3] & 0xf == 1));
        let mut m = query("web", 1);
        m[2] |= 0x80;
        assert!(matches!(handle(&z, "a", src, &m), Outcome::Drop));
        let mut m = query("web", 1);
        m[2] = 0x28;
        assert!(matches!(handle(&z, "a", src, &m), Outcome::Reply(r) if r[3] & 0xf == 4));
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = usize::try_from(seed % 80).unwrap();
            let bytes: Vec<u8> = (0..len)
                .map(|i| (seed.rotate_left(u32::try_from(i % 64).unwrap()) & 0xff) as u8)
                .collect();
            let _ = handle(&z, "a", src, &bytes);
        }
    }

    #[test]
    fn resolv_conf() {
        let text = "# x\nnameserver 10.0.0.1\nnameserver ::1\nnameserver fe80::1%eth0\nsearch x\n";
        assert_eq!(
            resolv_conf_servers(text),
            vec!["10.0.0.1:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
    }
}
