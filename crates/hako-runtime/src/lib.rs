//! hako-runtime: an OCI runtime for Linux.
//!
//! The library turns an OCI bundle into a container and drives it through
//! the lifecycle of the runtime-spec; the `hako-runtime` binary is a
//! runc-compatible command line over it.

mod channel;
pub mod config;
pub mod container;
pub mod create;
pub mod error;
pub mod exec;
pub mod hooks;
mod init;
mod namespaces;
mod netdev;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod selfexe;
pub mod state;
mod sys;

pub use create::{CreateOptions, Created};
pub use error::{Error, Result};
pub use exec::ExecOptions;

/// The first realtime signal as runc, Docker and glibc number it. The
/// kernel's start at 32 and the C library keeps the first few for itself
/// (glibc two, musl three): a name must mean the same signal whichever
/// library this is built with.
pub const SIGRTMIN: i32 = 34;
/// The last signal (the kernel's `_NSIG - 1`).
pub const SIGRTMAX: i32 = 64;

/// A signal by number (1 to SIGRTMAX), by name with or without `SIG`, or
/// a realtime signal as `RTMIN`, `RTMIN+n`, `RTMAX` or `RTMAX-n`; the error
/// says what is accepted.
pub fn parse_signal(s: &str) -> std::result::Result<i32, String> {
    let (min, max) = (SIGRTMIN, SIGRTMAX);
    let bad = || {
        format!(
            "{s:?} is not a signal: use a name like TERM, SIGKILL or RTMIN+3, or a number from 1 to {max}"
        )
    };
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=max).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let offset = |rest: &str| -> std::result::Result<i32, String> {
        rest.parse::<i32>()
            .ok()
            .filter(|n| (0..=max - min).contains(n))
            .ok_or_else(bad)
    };
    if let Some(rest) = name.strip_prefix("RTMIN") {
        let n = match rest.strip_prefix('+') {
            Some(r) => offset(r)?,
            None if rest.is_empty() => 0,
            None => return Err(bad()),
        };
        return Ok(min + n);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        let n = match rest.strip_prefix('-') {
            Some(r) => offset(r)?,
            None if rest.is_empty() => 0,
            None => return Err(bad()),
        };
        return Ok(max - n);
    }
    format!("SIG{name}")
        .parse::<nix::sys::signal::Signal>()
        .map(|sig| sig as i32)
        .map_err(|_| bad())
}

/// Receives the pty master that a container sends to a console socket.
pub fn receive_console(stream: &std::os::unix::net::UnixStream) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    channel::recv_fd(stream.as_raw_fd())
        .map_err(|e| Error::Sys {
            context: "receive the pty master".into(),
            source: e,
        })?
        .ok_or_else(|| Error::Init("the container sent no terminal".into()))
}

/// Timing of the phases of a command, printed to stderr when
/// `HAKO_RUNTIME_TRACE` is set: where the milliseconds of a `run` go. When
/// its value is an absolute path, every process (the monitor too, whose
/// stderr goes nowhere) appends its marks there instead, stamped with the
/// monotonic clock so that processes line up. With
/// `HAKO_RUNTIME_CRASH_AT=<phase>` the process SIGKILLs itself at that
/// phase, which is how the crash tests show that any moment of a create
/// can be cleaned up after.
/// Sets `lo` up in the calling thread's network namespace (what the
/// built-in runtime does in a new one; for callers that used another
/// runtime).
pub fn loopback_up() -> std::io::Result<()> {
    sys::loopback_up().map_err(std::io::Error::from)
}

pub mod trace {
    use std::io::Write;
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    struct Trace {
        start: Option<Instant>,
        file: Option<std::fs::File>,
        crash_at: Option<String>,
    }

    static TRACE: OnceLock<Trace> = OnceLock::new();

    /// Reads the variables (once); `debug` turns the timing on as well.
    pub fn init(debug: bool) {
        TRACE.get_or_init(|| {
            let var = std::env::var_os("HAKO_RUNTIME_TRACE");
            let file = var
                .as_ref()
                .filter(|v| v.as_encoded_bytes().starts_with(b"/"))
                .and_then(|p| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)
                        .ok()
                });
            Trace {
                start: (debug || var.is_some()).then(Instant::now),
                file,
                crash_at: std::env::var("HAKO_RUNTIME_CRASH_AT").ok(),
            }
        });
    }

    /// The descriptor the marks go to, which a container's init keeps
    /// while it closes the others.
    pub fn fd() -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        TRACE.get()?.file.as_ref().map(AsRawFd::as_raw_fd)
    }

    fn monotonic_ms() -> f64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec it is given.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        Duration::new(
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u32::try_from(ts.tv_nsec).unwrap_or(0),
        )
        .as_secs_f64()
            * 1000.0
    }

    pub fn mark(what: &str) {
        let Some(t) = TRACE.get() else { return };
        if let Some(start) = t.start {
            match &t.file {
                Some(f) => {
                    // One write per line: lines of processes do not mix.
                    let line = format!("{:.3} {} {what}\n", monotonic_ms(), std::process::id());
                    let _ = (&*f).write_all(line.as_bytes());
                }
                None => eprintln!(
                    "[{:>8.3} ms] {} {what}",
                    start.elapsed().as_secs_f64() * 1000.0,
                    std::process::id()
                ),
            }
        }
        if t.crash_at.as_deref() == Some(what) {
            // SAFETY: kill with plain integers, aimed at this process; the
            // init of a pid namespace ignores even that, and just ends.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
                libc::_exit(137)
            };
        }
    }
}
