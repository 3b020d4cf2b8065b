//! What the engine and a container's monitor share: the monitor's
//! configuration, the files it keeps, and the protocol of its socket.
//!
//! A monitor lives in its container's run directory (`<runroot>/containers/<id>/`):
//! - `monitor.json`: its configuration, written by the engine before it starts;
//! - `attach.sock`: the socket clients attach, start and resize through;
//! - and, in the persistent container directory, `exit.json`: the exit,
//!   written atomically when the container has ended.
//!
//! One connection carries one JSON request line; the monitor answers with
//! one JSON reply line and, for an attach, then sends the container's
//! output in Docker's multiplexed framing (an 8-byte header: stream, three
//! zero bytes, big-endian length) until the container has exited and its
//! output is drained, and reads the client's bytes as the container's
//! stdin. The connection closing is the exit notification.

use serde::{Deserialize, Serialize};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "monitor.json";
pub const ATTACH_SOCKET: &str = "attach.sock";
pub const EXIT_FILE: &str = "exit.json";

/// Stream numbers of the framing, as Docker numbers them.
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
/// The last frame of an attach: the exit code, four bytes big-endian.
pub const EXIT: u8 = 3;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    No,
    OnFailure,
    Always,
    UnlessStopped,
}

/// What the engine tells a monitor.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MonitorConfig {
    pub id: String,
    /// The OCI runtime's state root.
    pub runtime_root: PathBuf,
    pub bundle: PathBuf,
    /// An external runtime binary (runc contract); `None`: the built-in one.
    #[serde(default)]
    pub runtime: Option<PathBuf>,
    /// The persistent container directory (`exit.json` goes there).
    pub container_dir: PathBuf,
    /// The json-file log.
    pub log_path: PathBuf,
    /// Rotate the log when it passes this many bytes (0: never).
    #[serde(default)]
    pub log_max_size: u64,
    /// Rotated files kept besides the current one.
    #[serde(default)]
    pub log_max_files: u32,
    pub tty: bool,
    /// Keep the container's stdin open for attached clients (`-i`).
    pub stdin: bool,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// With `OnFailure`: at most this many restarts (0: no limit).
    #[serde(default)]
    pub max_restarts: u32,
    /// The container keeps CAP_SYS_PTRACE without a user namespace: the
    /// monitor, whose code the container's init runs until its exec, runs
    /// from a sealed copy of its binary, out of the container's reach.
    #[serde(default)]
    pub sealed: bool,
    /// Run once the container has ended for good (the engine's cleanup).
    #[serde(default)]
    pub exit_command: Vec<String>,
}

/// One request on the attach socket.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Request {
    /// Stream the output (and take stdin) on this connection.
    #[serde(default)]
    pub attach: bool,
    /// Send this connection's bytes to the container's stdin.
    #[serde(default)]
    pub stdin: bool,
    /// The container's stdin closes when this client's input ends (the
    /// client that ran it with `-i`, as Docker's StdinOnce); other
    /// clients come and go without closing it.
    #[serde(default)]
    pub stdin_once: bool,
    /// Let the created container run its program.
    #[serde(default)]
    pub start: bool,
    /// The user stops the container: no restart policy applies to this exit.
    #[serde(default)]
    pub stop: bool,
    /// This client releases the container after it gets the exit code
    /// (a foreground `run --rm`): the monitor then runs no exit command.
    #[serde(default)]
    pub cleanup: bool,
    /// A signal for the container's init (a foreground client proxies
    /// the signals it gets).
    #[serde(default)]
    pub signal: Option<i32>,
    /// New terminal size: rows, columns.
    #[serde(default)]
    pub resize: Option<(u16, u16)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    #[serde(default)]
    pub error: Option<String>,
    /// The container's init pid.
    #[serde(default)]
    pub pid: i32,
}

/// How the container ended, written atomically by the monitor.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExitRecord {
    pub exit_code: i32,
    pub started_at: String,
    pub finished_at: String,
    #[serde(default)]
    pub restarts: u32,
    /// Set when the program never ran (start failed).
    #[serde(default)]
    pub error: Option<String>,
    /// The restart policy starts it again (the monitor lives on).
    #[serde(default)]
    pub restarting: bool,
}

/// The first message of a new monitor on its sync pipe.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ready {
    #[serde(default)]
    pub error: Option<String>,
    pub pid: i32,
    pub monitor_pid: i32,
}

/// A path under `dir` that fits in a socket address: the directory is
/// reached through an open descriptor, whatever its length.
pub struct SocketPath {
    _dir: std::fs::File,
    pub path: PathBuf,
}

pub fn socket_path(dir: &Path) -> io::Result<SocketPath> {
    let d = std::fs::File::open(dir)?;
    let path = PathBuf::from(format!("/proc/self/fd/{}/{ATTACH_SOCKET}", d.as_raw_fd()));
    Ok(SocketPath { _dir: d, path })
}

/// Connects to the monitor in `dir` and sends `req`; returns the reply and
/// the connection (which, for an attach, goes on with the output).
pub fn request(dir: &Path, req: &Request) -> io::Result<(Reply, BufReader<UnixStream>)> {
    let p = socket_path(dir)?;
    let mut s = UnixStream::connect(&p.path)?;
    let mut line = serde_json::to_vec(req).map_err(io::Error::other)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut r = BufReader::new(s);
    let mut answer = String::new();
    r.read_line(&mut answer)?;
    if answer.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the monitor closed the connection",
        ));
    }
    let reply: Reply = serde_json::from_str(&answer).map_err(io::Error::other)?;
    Ok((reply, r))
}

/// Reads one frame of the multiplexed stream: `None` at the end.
pub fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<Option<u8>> {
    let mut header = [0u8; 8];
    match r.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    buf.resize(len, 0);
    r.read_exact(buf)?;
    Ok(Some(header[0]))
}

pub fn frame_header(stream: u8, len: usize) -> [u8; 8] {
    let l = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [stream, 0, 0, 0, l[0], l[1], l[2], l[3]]
}

pub fn read_exit(container_dir: &Path) -> Option<ExitRecord> {
    let bytes = std::fs::read(container_dir.join(EXIT_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes `bytes` to `path` so that a reader sees the old or the new file,
/// never a part: a temporary file, renamed. Without fsync: these files
/// (exit records, generated specs) are worth less than the milliseconds a
/// sync costs on every run; after a power loss a lost exit record reads
/// as an unknown exit.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// An external OCI runtime's command line (runc's contract):
/// `BIN --root ROOT …`, with stdin closed.
pub fn external_runtime(bin: &Path, root: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(bin);
    c.arg("--root").arg(root).stdin(std::process::Stdio::null());
    c
}

/// Removes a container's runtime state (killing what is left of it),
/// through the built-in runtime or an external one; done or not there,
/// it is gone after.
pub fn delete_container(runtime: Option<&Path>, root: &Path, id: &str) {
    match runtime {
        None => {
            let _ = hako_runtime::container::delete(root, id, true);
        }
        Some(bin) => {
            let _ = external_runtime(bin, root)
                .args(["delete", "--force", id])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}
