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
    dir: std::fs::File,
    name: &'static str,
    pub path: PathBuf,
}

impl SocketPath {
    /// The same socket as another process reaches it (an external
    /// runtime's `--console-socket`): through this process's descriptor,
    /// as `/proc/self` would name the other process.
    pub fn for_other_process(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}/{}",
            std::process::id(),
            self.dir.as_raw_fd(),
            self.name
        ))
    }
}

pub fn socket_path(dir: &Path) -> io::Result<SocketPath> {
    socket_path_named(dir, ATTACH_SOCKET)
}

/// [`socket_path`] for a socket named `name` in `dir`.
pub fn socket_path_named(dir: &Path, name: &'static str) -> io::Result<SocketPath> {
    let d = std::fs::File::open(dir)?;
    let path = PathBuf::from(format!("/proc/self/fd/{}/{name}", d.as_raw_fd()));
    Ok(SocketPath { dir: d, name, path })
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

/// [`external_runtime`] with the runtime's own messages also in `log`, as
/// JSON lines (`--log FILE --log-format json`, which runc and crun both
/// take). For `create` and `exec`, whose stderr the container's process
/// shares: there, stderr cannot tell the runtime's words from the
/// program's, nor its failure from the program's exit code.
pub fn external_runtime_logged(bin: &Path, root: &Path, log: &Path) -> std::process::Command {
    let _ = std::fs::remove_file(log);
    let mut c = external_runtime(bin, root);
    c.arg("--log").arg(log).arg("--log-format").arg("json");
    c
}

/// The error messages of a runtime's JSON log ([`external_runtime_logged`]),
/// in order, joined by "; " (lines that are not JSON as they are).
pub fn runtime_log_errors(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut said = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => {
                if matches!(v["level"].as_str(), Some("error" | "fatal" | "panic"))
                    && let Some(msg) = v["msg"].as_str()
                {
                    said.push(msg.to_string());
                }
            }
            Err(_) => said.push(line.to_string()),
        }
    }
    said.join("; ")
}

/// A command of an external runtime that failed: which binary, what it was
/// asked to do, and what it said.
#[derive(Debug, Clone)]
pub struct ExternalError {
    pub bin: PathBuf,
    pub action: String,
    pub message: String,
}

impl std::fmt::Display for ExternalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.bin.display(),
            self.action,
            self.message
        )
    }
}

impl std::error::Error for ExternalError {}

impl ExternalError {
    pub fn new(bin: &Path, action: &str, message: impl Into<String>) -> ExternalError {
        ExternalError {
            bin: bin.to_path_buf(),
            action: action.to_string(),
            message: message.into(),
        }
    }

    /// The runtime binary could not be started at all.
    pub fn spawn(bin: &Path, action: &str, e: &io::Error) -> ExternalError {
        ExternalError::new(
            bin,
            action,
            format!("cannot run it: {e} (is it installed? --runtime takes runc, crun or a path)"),
        )
    }

    /// It ran and failed: its exit status and what it wrote on stderr.
    pub fn failed(
        bin: &Path,
        action: &str,
        status: std::process::ExitStatus,
        said: &str,
    ) -> ExternalError {
        let said = said.trim();
        let message = if said.is_empty() {
            format!("failed ({status}) and said nothing")
        } else {
            format!("failed ({status}): {said}")
        };
        ExternalError::new(bin, action, message)
    }
}

/// Runs `BIN --root ROOT ACTION ARGS…` to its end; its stdout, or an
/// error that names the binary and carries its stderr.
pub fn run_external<I, A>(
    bin: &Path,
    root: &Path,
    action: &str,
    args: I,
) -> Result<Vec<u8>, ExternalError>
where
    I: IntoIterator<Item = A>,
    A: AsRef<std::ffi::OsStr>,
{
    let out = external_runtime(bin, root)
        .arg(action)
        .args(args)
        .output()
        .map_err(|e| ExternalError::spawn(bin, action, &e))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(ExternalError::failed(
            bin,
            action,
            out.status,
            &String::from_utf8_lossy(&out.stderr),
        ))
    }
}

/// What `BIN state ID` says of a container (the fields hako reads).
#[derive(Clone, Debug, Deserialize)]
pub struct ExternalState {
    /// `created`, `running`, `paused` or `stopped`.
    pub status: String,
    #[serde(default)]
    pub pid: i32,
}

pub fn external_state(bin: &Path, root: &Path, id: &str) -> Result<ExternalState, ExternalError> {
    let out = run_external(bin, root, "state", [id])?;
    serde_json::from_slice(&out).map_err(|e| {
        ExternalError::new(
            bin,
            "state",
            format!(
                "printed no state JSON ({e}): {}",
                String::from_utf8_lossy(&out).trim()
            ),
        )
    })
}

/// The console socket's name in the directory it is made in.
pub const CONSOLE_SOCKET: &str = "console.sock";

/// The socket an external runtime hands a container's pty master to
/// (runc's `--console-socket`: it connects once and sends one message with
/// the descriptor in SCM_RIGHTS). The runtime's `create` and `exec
/// --detach` send it before they exit, and the message waits in the
/// socket, so it is taken once the runtime has ended: no thread, no loop.
/// The socket file goes when this is dropped.
pub struct ConsoleSocket {
    listener: std::os::unix::net::UnixListener,
    at: SocketPath,
}

impl ConsoleSocket {
    /// Listens on [`CONSOLE_SOCKET`] in `dir` (one left by a crash is
    /// replaced).
    pub fn bind(dir: &Path) -> io::Result<ConsoleSocket> {
        let at = socket_path_named(dir, CONSOLE_SOCKET)?;
        let _ = std::fs::remove_file(&at.path);
        let listener = std::os::unix::net::UnixListener::bind(&at.path)?;
        listener.set_nonblocking(true)?;
        Ok(ConsoleSocket { listener, at })
    }

    /// The path to give the runtime (short, whatever `dir`'s length).
    pub fn path(&self) -> PathBuf {
        self.at.for_other_process()
    }

    /// The pty master the runtime `bin` sent; call once it has ended.
    pub fn receive(&self, bin: &Path, action: &str) -> Result<std::os::fd::OwnedFd, ExternalError> {
        let fail = |m: String| ExternalError::new(bin, action, m);
        let (stream, _) = self.listener.accept().map_err(|e| {
            fail(format!(
                "sent no terminal to its console socket {} ({e})",
                self.path().display()
            ))
        })?;
        stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_read_timeout(Some(std::time::Duration::from_secs(5))))
            .map_err(|e| fail(format!("console socket: {e}")))?;
        hako_runtime::receive_console(&stream).map_err(|e| fail(e.to_string()))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.at.path);
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in runtime: a shell script that prints `stdout`, says
    /// `stderr` and exits with `code`.
    fn fake_runtime(dir: &Path, stdout: &str, stderr: &str, code: i32) -> PathBuf {
        let bin = dir.join("fake-runtime");
        let script =
            format!("#!/bin/sh\nprintf '%s' '{stdout}'\nprintf '%s' '{stderr}' >&2\nexit {code}\n");
        std::fs::write(&bin, script).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        bin
    }

    #[test]
    fn the_error_messages_of_runc_and_crun_logs() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("runtime.log");
        std::fs::write(
            &log,
            concat!(
                r#"{"level":"warning","msg":"a warning","time":"2026-01-01T00:00:00Z"}"#,
                "\n",
                r#"{"level":"error","msg":"exec failed: exec: \"nope\": executable file not found in $PATH","time":"2026-01-01T00:00:00Z"}"#,
                "\n",
                r#"{"msg":"open executable: Permission denied","level":"error","time":"2026-01-01T00:00:00.1Z"}"#,
                "\n",
                "not json at all\n",
            ),
        )
        .unwrap();
        assert_eq!(
            runtime_log_errors(&log),
            "exec failed: exec: \"nope\": executable file not found in $PATH; open executable: Permission denied; not json at all"
        );
        assert_eq!(runtime_log_errors(&dir.path().join("missing")), "");
    }

    #[test]
    fn a_failed_runtime_command_names_the_binary_and_shows_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let bin = fake_runtime(dir.path(), "", "container not running", 1);
        let e = run_external(&bin, dir.path(), "pause", ["c1"]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("{} pause: failed (", bin.display())),
            "{text}"
        );
        assert!(text.ends_with("): container not running"), "{text}");
        let e = run_external(
            &dir.path().join("no-such-runtime"),
            dir.path(),
            "kill",
            ["c1"],
        )
        .unwrap_err();
        assert!(e.to_string().contains("cannot run it"), "{e}");
    }

    #[test]
    fn the_state_of_an_external_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let bin = fake_runtime(
            dir.path(),
            r#"{"ociVersion":"1.0.2","id":"c1","pid":42,"status":"paused"}"#,
            "",
            0,
        );
        let st = external_state(&bin, dir.path(), "c1").unwrap();
        assert_eq!((st.status.as_str(), st.pid), ("paused", 42));
        let bin = fake_runtime(dir.path(), "garbage", "", 0);
        let e = external_state(&bin, dir.path(), "c1").unwrap_err();
        assert!(e.to_string().contains("printed no state JSON"), "{e}");
    }

    /// The socket lives in a directory too deep for a socket address, and
    /// the path the runtime gets still reaches it; the descriptor sent in
    /// SCM_RIGHTS comes out.
    #[test]
    fn a_console_socket_in_a_deep_directory_receives_the_master() {
        let top = tempfile::tempdir().unwrap();
        let deep = top.path().join("d".repeat(100)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let socket = ConsoleSocket::bind(&deep).unwrap();
        assert!(deep.join(CONSOLE_SOCKET).exists());
        let path = socket.path();
        assert!(path.as_os_str().len() < 100, "{}", path.display());
        let client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let (sent_r, _sent_w) = nix::unistd::pipe().unwrap();
        let fds = [sent_r.as_raw_fd()];
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
        let iov = [io::IoSlice::new(b"/dev/ptmx")];
        nix::sys::socket::sendmsg::<()>(
            client.as_raw_fd(),
            &iov,
            &cmsg,
            nix::sys::socket::MsgFlags::empty(),
            None,
        )
        .unwrap();
        let got = socket.receive(Path::new("fake"), "create").unwrap();
        let same = |a: std::os::fd::BorrowedFd<'_>, b: std::os::fd::BorrowedFd<'_>| {
            let (x, y) = (
                nix::sys::stat::fstat(a).unwrap(),
                nix::sys::stat::fstat(b).unwrap(),
            );
            (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino)
        };
        assert!(same(got.as_fd(), sent_r.as_fd()));
        // Nothing sent: the error names the runtime.
        let e = socket.receive(Path::new("fake"), "create").unwrap_err();
        assert!(
            e.to_string().starts_with("fake create: sent no terminal"),
            "{e}"
        );
        drop(socket);
        assert!(!deep.join(CONSOLE_SOCKET).exists(), "the socket file stays");
    }
}
