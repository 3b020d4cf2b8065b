//! hako-monitor: one small process per running container.
//!
//! It creates the container through the runtime library, so the
//! container's init is its own child and the exit is never lost; holds the
//! container's stdio (pipes, or the pty master); writes the json-file log;
//! serves attach, start and resize on a socket; forwards signals; records
//! the exit atomically; applies the restart policy; and at the end execs
//! the engine's exit command, which releases the container's resources.
//! It runs on its own (a new session; adopted by init when the `hako`
//! command that started it ends), so it keeps working when that command
//! exits or is killed.
//!
//! No async runtime and no threads: one `poll` loop.

#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: allocator::MonitorAllocator = allocator::MonitorAllocator;

/// The allocator of the static musl build (scripts/build.sh). Setting a
/// container up (parsing its config above all) allocates much, which
/// mimalloc does as fast as glibc's allocator and musl's own three times
/// slower. The lean monitor a running container keeps allocates little and
/// must stay small, which musl's allocator is (tens of kilobytes, where
/// mimalloc's arena takes hundreds). A process keeps one of them
/// throughout: the lean re-execution says which in its environment, read
/// at the first allocation.
/// glibc's allocator, the one of the glibc build: only the memory to give
/// back.
#[cfg(target_env = "gnu")]
mod allocator {
    /// Gives the heap's free memory back to the kernel.
    pub fn give_back() {
        // SAFETY: malloc_trim only releases free heap memory.
        unsafe { libc::malloc_trim(0) };
    }
}

#[cfg(target_env = "musl")]
mod allocator {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicU8, Ordering};

    /// Set for the lean re-execution (and taken out of its environment).
    const LEAN_ENV: &std::ffi::CStr = c"HAKO_MONITOR_LEAN";

    /// The variable's name, for `Command::env` and `env::remove_var`.
    pub fn lean_env() -> &'static std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(LEAN_ENV.to_bytes())
    }
    const UNDECIDED: u8 = 0;
    const MIMALLOC: u8 = 1;
    const MUSL: u8 = 2;
    static CHOICE: AtomicU8 = AtomicU8::new(UNDECIDED);

    unsafe extern "C" {
        /// mimalloc's own: returns the free memory of its heap to the
        /// kernel (`force`: now, not after its usual delay).
        fn mi_collect(force: bool);
    }

    fn musl() -> bool {
        match CHOICE.load(Ordering::Relaxed) {
            MIMALLOC => false,
            MUSL => true,
            _ => {
                // SAFETY: getenv reads the environment (musl's allocates
                // nothing); the name is a NUL-terminated literal.
                let lean = unsafe { !libc::getenv(LEAN_ENV.as_ptr()).is_null() };
                CHOICE.store(if lean { MUSL } else { MIMALLOC }, Ordering::Relaxed);
                lean
            }
        }
    }

    /// Gives the heap's free memory back to the kernel (musl's allocator
    /// does so by itself).
    pub fn give_back() {
        if !musl() {
            // SAFETY: mi_collect only releases free memory of mimalloc's heap.
            unsafe { mi_collect(true) };
        }
    }

    /// The allocator this process chose.
    fn chosen() -> &'static dyn GlobalAlloc {
        if musl() { &System } else { &mimalloc::MiMalloc }
    }

    pub struct MonitorAllocator;

    // SAFETY: every call goes to the one allocator the process chose at
    // its first allocation (the one that made any block it is given), with
    // the caller's contract passed on.
    unsafe impl GlobalAlloc for MonitorAllocator {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller's contract, passed on.
            unsafe { chosen().alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller's contract, passed on.
            unsafe { chosen().alloc_zeroed(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: the caller's contract, passed on.
            unsafe { chosen().dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: the caller's contract, passed on.
            unsafe { chosen().realloc(ptr, layout, new_size) }
        }
    }
}

use hako_monitor::{
    ATTACH_SOCKET, CONFIG_FILE, EXIT, EXIT_FILE, ExitRecord, MonitorConfig, Ready, Reply, Request,
    RestartPolicy, STDERR, STDOUT, frame_header, write_atomic,
};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Docker splits log lines longer than this into several entries.
const MAX_LOG_LINE: usize = 16 * 1024;
/// How long a created container waits for its start before the monitor
/// gives up (the engine that made it died).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// After the init exits, output still in the pipes is read for this long
/// at most (a process outside the container might hold a pipe open).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// A container still running after this long with nothing happening gets
/// a lean monitor: the monitor re-executes itself with only what its loop
/// needs (see [`Monitor::go_lean`]).
const LEAN_AFTER: Duration = Duration::from_secs(1);
const HANDOFF_FLAG: &str = "--handoff";

/// What a monitor hands to its lean re-execution: the descriptors it keeps
/// (numbers, inherited across the exec) and the state of the run.
#[derive(serde::Serialize, serde::Deserialize)]
struct Handoff {
    pid: i32,
    out: Option<RawFd>,
    err: Option<RawFd>,
    stdin: Option<RawFd>,
    listener: RawFd,
    clients: Vec<(RawFd, bool, bool, bool)>,
    started_at: String,
    /// Milliseconds the program has run, for the restart back-off.
    ran_ms: u64,
    restarts: u32,
    stop_requested: bool,
    /// Unfinished log lines of stdout and stderr.
    partial: [Vec<u8>; 2],
}

/// The lean monitor: takes over the run its predecessor handed over, and
/// never returns.
fn resume(dir: &Path, handoff: &str) -> ! {
    // Executed through /proc/self/exe, the process would be named "exe".
    let _ = nix::sys::prctl::set_name(c"hako-monitor");
    // The allocator's choice is made; what this monitor starts (a restart's
    // runtime, the exit command) does not inherit it.
    #[cfg(target_env = "musl")]
    // SAFETY: the monitor has one thread: nothing reads the environment
    // meanwhile.
    unsafe {
        std::env::remove_var(allocator::lean_env())
    };
    let code = match Monitor::resume(dir, handoff) {
        Ok((mut m, run)) => {
            // Starting a process maps much of the C library and of this
            // binary that the loop never needs.
            shed_setup_memory();
            let mut no_sync = None;
            if let Err(e) = m.run_from(&mut no_sync, Some(run)) {
                m.final_error(&e);
            }
            m.exit_command()
        }
        Err(_) => 1,
    };
    std::process::exit(code)
}

/// Arguments: re-execute from a sealed copy first; wait for the engine's
/// go on stdin before reading the config.
const SEALED_FLAG: &str = "--sealed";
const WAIT_FLAG: &str = "--wait";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[2] == HANDOFF_FLAG {
        resume(Path::new(&args[1]), &args[3]);
    }
    // HAKO_RUNTIME_TRACE shows the create's phases here too.
    hako_runtime::trace::init(false);
    let flags = args.get(2..).unwrap_or_default();
    if args.len() < 2 || flags.iter().any(|f| f != SEALED_FLAG && f != WAIT_FLAG) {
        eprintln!(
            "usage: hako-monitor RUNDIR [{SEALED_FLAG}] [{WAIT_FLAG}]\nhako-monitor is started by hako; it is not run by hand"
        );
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[1]);
    let sealed = flags.iter().any(|f| f == SEALED_FLAG)
        || fs::read(dir.join(CONFIG_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<MonitorConfig>(&b).ok())
            .is_some_and(|c| c.sealed);
    if sealed && let Err(e) = hako_runtime::selfexe::reexec_sealed() {
        let mut out = Some(File::from(
            nix::unistd::dup(io::stdout()).unwrap_or_else(|_| std::process::exit(1)),
        ));
        report(
            &mut out,
            Err(format!("run the monitor from a sealed copy: {e}")),
        );
        std::process::exit(1);
    }
    // The engine reads our stdout until it closes: the ready message. Keep
    // it aside, since 0, 1 and 2 become the container's during create.
    let sync = match nix::unistd::dup(io::stdout()) {
        Ok(fd) => File::from(fd),
        Err(e) => {
            eprintln!("hako-monitor: dup stdout: {e}");
            std::process::exit(1);
        }
    };
    set_cloexec(sync.as_raw_fd());
    // Started early, beside the engine's own preparation (exec and start-up
    // then cost the `run` nothing): the config is there once the engine
    // says so on stdin. Its end of the pipe closed unsaid means it gave up.
    if flags.iter().any(|f| f == WAIT_FLAG) {
        let mut go = [0u8; 1];
        if !matches!(io::stdin().read(&mut go), Ok(1)) || go[0] != b'g' {
            std::process::exit(0);
        }
    }
    // Our own session where we can have one (the engine starts us as the
    // leader of a process group of our own, which keeps the terminal's
    // signals away already, and a group leader cannot start a session).
    let _ = nix::unistd::setsid();
    null_stdio();
    let mut sync = Some(sync);
    let code = match Monitor::new(&dir) {
        Ok(mut m) => {
            let res = m.run(&mut sync);
            if let Err(e) = &res {
                // The record first: once told, the engine may remove the
                // container's directory.
                m.final_error(e);
                report(&mut sync, Err(e.clone()));
            }
            m.exit_command()
        }
        Err(e) => {
            report(&mut sync, Err(e));
            1
        }
    };
    std::process::exit(code);
}

/// The signals the monitor takes through its signalfd: its children's
/// exits, and those it forwards to the container.
fn monitored_signals() -> SigSet {
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        mask.add(s);
    }
    mask
}

fn set_cloexec(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own; no memory is involved.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
}

/// 0, 1 and 2 on /dev/null, so that no write of ours reaches a terminal or
/// a pipe someone waits on.
fn null_stdio() {
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors; no memory involved.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

fn report(sync: &mut Option<File>, res: Result<(i32, i32), String>) {
    if let Some(mut f) = sync.take() {
        let ready = match res {
            Ok((pid, monitor_pid)) => Ready {
                error: None,
                pid,
                monitor_pid,
            },
            Err(e) => Ready {
                error: Some(e),
                pid: 0,
                monitor_pid: i32::try_from(std::process::id()).unwrap_or(0),
            },
        };
        if let Ok(mut line) = serde_json::to_vec(&ready) {
            line.push(b'\n');
            let _ = f.write_all(&line);
        }
    }
}

/// The json-file log, as Docker writes it: one JSON object per line of
/// output, rotated by size.
struct Log {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: u32,
    /// An unfinished line per stream.
    partial: [Vec<u8>; 2],
}

impl Log {
    fn open(path: &Path, max_size: u64, max_files: u32) -> io::Result<Log> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Log {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
            max_files,
            partial: [Vec::new(), Vec::new()],
        })
    }

    fn write(&mut self, stream: u8, mut data: &[u8]) {
        let i = usize::from(stream == STDERR);
        while let Some(n) = data.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut self.partial[i]);
            line.extend_from_slice(&data[..=n]);
            self.entry(stream, &line);
            data = &data[n + 1..];
        }
        self.partial[i].extend_from_slice(data);
        if self.partial[i].len() >= MAX_LOG_LINE {
            let line = std::mem::take(&mut self.partial[i]);
            self.entry(stream, &line);
        }
    }

    fn flush(&mut self) {
        for (i, stream) in [(0, STDOUT), (1, STDERR)] {
            if !self.partial[i].is_empty() {
                let line = std::mem::take(&mut self.partial[i]);
                self.entry(stream, &line);
            }
        }
    }

    fn entry(&mut self, stream: u8, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let entry = serde_json::json!({
            "log": text,
            "stream": if stream == STDERR { "stderr" } else { "stdout" },
            "time": hako_runtime::state::now_rfc3339(),
        });
        let mut bytes = entry.to_string().into_bytes();
        bytes.push(b'\n');
        if self.max_size > 0 && self.size > 0 && self.size + bytes.len() as u64 > self.max_size {
            self.rotate();
        }
        if self.file.write_all(&bytes).is_ok() {
            self.size += bytes.len() as u64;
        }
    }

    /// `log` → `log.1` → `log.2` …; the oldest beyond `max_files` goes.
    fn rotate(&mut self) {
        let name = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.max_files == 0 {
            let _ = self.file.set_len(0);
            self.size = 0;
            return;
        }
        for n in (1..self.max_files).rev() {
            let _ = fs::rename(name(n), name(n + 1));
        }
        let _ = fs::rename(&self.path, name(1));
        if let Ok(f) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            self.file = f;
            self.size = 0;
        }
    }
}

struct Client {
    stream: UnixStream,
    /// Its bytes go to the container's stdin (until it shuts its side).
    stdin: bool,
    /// It releases the container itself once it has the exit code.
    cleans_up: bool,
    /// Its end of input is the end of the container's stdin.
    stdin_once: bool,
}

/// One run of the container (a restart makes a new one).
struct Run {
    pid: i32,
    created: Option<hako_runtime::Created>,
    /// Output: stdout and stderr pipes, or the pty master (in `out`).
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    /// Where client input goes: the stdin pipe, or the pty master.
    stdin: Option<OwnedFd>,
    started_at: String,
    started: Option<Instant>,
    status: Option<i32>,
    exited_at: Option<Instant>,
}

struct Monitor {
    cfg: MonitorConfig,
    dir: PathBuf,
    log: Log,
    listener: UnixListener,
    signals: SignalFd,
    clients: Vec<Client>,
    stop_requested: bool,
    restarts: u32,
    created_at: Instant,
    last: Option<ExitRecord>,
    /// This process holds only what the loop needs (or tried to get there).
    lean: bool,
    /// Memory was shed while the created container waited for its start.
    shed: bool,
    /// The attach socket is gone ([`Monitor::remove_socket`]).
    socket_removed: bool,
}

impl Monitor {
    fn new(dir: &Path) -> Result<Monitor, String> {
        let bytes = fs::read(dir.join(CONFIG_FILE))
            .map_err(|e| format!("read {}: {e}", dir.join(CONFIG_FILE).display()))?;
        let cfg: MonitorConfig = serde_json::from_slice(&bytes)
            .map_err(|e| format!("parse {}: {e}", dir.join(CONFIG_FILE).display()))?;
        // Orphans of the container's processes (and an external runtime's
        // init) become our children, so they are reaped here.
        let _ = nix::sys::prctl::set_child_subreaper(true);
        let log = Log::open(&cfg.log_path, cfg.log_max_size, cfg.log_max_files)
            .map_err(|e| format!("open log {}: {e}", cfg.log_path.display()))?;
        let mask = monitored_signals();
        mask.thread_block()
            .map_err(|e| format!("block signals: {e}"))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(|e| format!("signalfd: {e}"))?;
        let sock =
            hako_monitor::socket_path(dir).map_err(|e| format!("open {}: {e}", dir.display()))?;
        let _ = fs::remove_file(dir.join(ATTACH_SOCKET));
        let listener = UnixListener::bind(&sock.path)
            .map_err(|e| format!("listen on {}: {e}", dir.join(ATTACH_SOCKET).display()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("listen: {e}"))?;
        let _ = fs::remove_file(cfg.container_dir.join(EXIT_FILE));
        Ok(Monitor {
            cfg,
            dir: dir.to_path_buf(),
            log,
            listener,
            signals,
            clients: Vec::new(),
            stop_requested: false,
            restarts: 0,
            created_at: Instant::now(),
            last: None,
            lean: false,
            shed: false,
            socket_removed: false,
        })
    }

    /// The lean monitor's state from its predecessor's handoff.
    fn resume(dir: &Path, handoff: &str) -> Result<(Monitor, Run), String> {
        let h: Handoff = serde_json::from_str(handoff).map_err(|e| format!("handoff: {e}"))?;
        let bytes = fs::read(dir.join(CONFIG_FILE)).map_err(|e| e.to_string())?;
        let cfg: MonitorConfig = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        let mut log = Log::open(&cfg.log_path, cfg.log_max_size, cfg.log_max_files)
            .map_err(|e| e.to_string())?;
        log.partial = h.partial;
        let signals = SignalFd::with_flags(
            &monitored_signals(),
            SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
        )
        .map_err(|e| format!("signalfd: {e}"))?;
        let own = |fd: RawFd| -> OwnedFd {
            set_cloexec(fd);
            // SAFETY: a descriptor the predecessor handed over by number;
            // nothing else in this process holds it.
            unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
        };
        let listener = UnixListener::from(own(h.listener));
        let clients = h
            .clients
            .iter()
            .map(|&(fd, stdin, cleans_up, stdin_once)| Client {
                stream: UnixStream::from(own(fd)),
                stdin,
                cleans_up,
                stdin_once,
            })
            .collect();
        let run = Run {
            pid: h.pid,
            created: None,
            out: h.out.map(own),
            err: h.err.map(own),
            stdin: h.stdin.map(own),
            started_at: h.started_at,
            started: Instant::now().checked_sub(Duration::from_millis(h.ran_ms)),
            status: None,
            exited_at: None,
        };
        let m = Monitor {
            cfg,
            dir: dir.to_path_buf(),
            log,
            listener,
            signals,
            clients,
            stop_requested: h.stop_requested,
            restarts: h.restarts,
            created_at: Instant::now(),
            last: None,
            lean: true,
            shed: true,
            socket_removed: false,
        };
        Ok((m, run))
    }

    /// Re-executes this monitor with only what its loop needs: creating
    /// the container touched most of the runtime library and left its heap
    /// and stack behind, which a process that may idle for months should
    /// not keep. The descriptors and the run's state go across the exec;
    /// the container (our child) stays our child. Returns only if the exec
    /// failed (the monitor then goes on as it is).
    fn go_lean(&mut self, run: &mut Run) {
        self.lean = true;
        let keep = |fd: RawFd| -> RawFd {
            // SAFETY: clears close-on-exec on a descriptor we own.
            unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
            fd
        };
        let handoff = Handoff {
            pid: run.pid,
            out: run.out.as_ref().map(|f| keep(f.as_raw_fd())),
            err: run.err.as_ref().map(|f| keep(f.as_raw_fd())),
            stdin: run.stdin.as_ref().map(|f| keep(f.as_raw_fd())),
            listener: keep(self.listener.as_raw_fd()),
            clients: self
                .clients
                .iter()
                .map(|c| {
                    (
                        keep(c.stream.as_raw_fd()),
                        c.stdin,
                        c.cleans_up,
                        c.stdin_once,
                    )
                })
                .collect(),
            started_at: run.started_at.clone(),
            ran_ms: run
                .started
                .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(0))
                .unwrap_or(0),
            restarts: self.restarts,
            stop_requested: self.stop_requested,
            partial: [self.log.partial[0].clone(), self.log.partial[1].clone()],
        };
        let Ok(json) = serde_json::to_string(&handoff) else {
            return;
        };
        use std::os::unix::process::CommandExt;
        // The signal mask (SIGCHLD and the forwarded signals blocked) and
        // any pending signal survive the exec; the new signalfd reads them.
        let mut lean = std::process::Command::new("/proc/self/exe");
        #[cfg(target_env = "musl")]
        lean.env(allocator::lean_env(), "1");
        let _ = lean
            .arg0("hako-monitor")
            .arg(&self.dir)
            .arg(HANDOFF_FLAG)
            .arg(json)
            .exec();
        // Still here: the exec failed; the descriptors stay ours.
        for fd in [
            handoff.out,
            handoff.err,
            handoff.stdin,
            Some(handoff.listener),
        ]
        .into_iter()
        .flatten()
        .chain(handoff.clients.iter().map(|c| c.0))
        {
            set_cloexec(fd);
        }
    }

    fn run(&mut self, sync: &mut Option<File>) -> Result<(), String> {
        self.run_from(sync, None)
    }

    /// The monitor's life: create (unless `resumed` carries a running
    /// run), serve until the exit, record it, and restart as the policy
    /// says.
    fn run_from(
        &mut self,
        sync: &mut Option<File>,
        mut resumed: Option<Run>,
    ) -> Result<(), String> {
        let mut backoff = Duration::from_millis(100);
        loop {
            if let Some(mut run) = resumed.take() {
                let code = self.serve(&mut run)?;
                if self.end_of_run(&mut run, code, &mut backoff)? {
                    return Ok(());
                }
                continue;
            }
            let mut run = self.create()?;
            if sync.is_some() {
                let me = i32::try_from(std::process::id()).unwrap_or(0);
                report(sync, Ok((run.pid, me)));
            } else {
                // A restart: no one asks for it, so start at once.
                self.start(&mut run)?;
            }
            let code = self.serve(&mut run)?;
            if self.end_of_run(&mut run, code, &mut backoff)? {
                return Ok(());
            }
        }
    }

    /// Records the end of a run and waits out the restart delay; true when
    /// the monitor's work is done.
    fn end_of_run(
        &mut self,
        run: &mut Run,
        code: i32,
        backoff: &mut Duration,
    ) -> Result<bool, String> {
        {
            let ran_for = run.started.map(|t| t.elapsed()).unwrap_or_default();
            let restart = run.started.is_some()
                && !self.stop_requested
                && match self.cfg.restart {
                    RestartPolicy::No => false,
                    RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
                    RestartPolicy::OnFailure => {
                        code != 0
                            && (self.cfg.max_restarts == 0 || self.restarts < self.cfg.max_restarts)
                    }
                };
            let record = ExitRecord {
                exit_code: code,
                started_at: run.started_at.clone(),
                finished_at: hako_runtime::state::now_rfc3339(),
                restarts: self.restarts,
                error: if run.started.is_none() {
                    Some("the container was never started".into())
                } else {
                    None
                },
                restarting: restart,
            };
            // Each end of a run ends the attached clients' streams with the
            // exit code: `wait` and a foreground `run` learn it even when
            // `--rm` removes the record right after. Sent before the
            // runtime state goes, so the client's wait is shorter. The
            // client that finishes the job learns it before the record is
            // written (it reads the record only when its stream has
            // ended); the others after, so that what they do next finds
            // the container exited.
            let header = frame_header(EXIT, 4);
            let tell = |c: &Client| {
                send_all(&c.stream, &header) && send_all(&c.stream, &code.to_be_bytes())
            };
            let (mut takers, others): (Vec<Client>, Vec<Client>) = self
                .clients
                .drain(..)
                .partition(|c| c.cleans_up && !restart);
            takers.retain(|c| tell(c));
            self.write_exit(&record);
            self.last = Some(record);
            for c in &others {
                tell(c);
            }
            drop(others);
            self.delete_container();
            if !takers.is_empty() {
                // A foreground client has the exit and finishes the job
                // (or, if it dies, the next command does): no exec here.
                // Its stream ends once the runtime state is gone and this
                // monitor will touch nothing more (the socket goes first),
                // so it need not wait for this process to end.
                self.cfg.exit_command.clear();
                self.remove_socket();
            }
            drop(takers);
            if !restart {
                return Ok(true);
            }
            // As Docker: the delay doubles, and resets after a run of ten
            // seconds or more.
            if ran_for >= Duration::from_secs(10) {
                *backoff = Duration::from_millis(100);
            }
            if !self.pause(*backoff) {
                return Ok(true);
            }
            *backoff = (*backoff * 2).min(Duration::from_secs(60));
            self.restarts += 1;
            // The next create touches the runtime library again.
            self.lean = false;
            Ok(false)
        }
    }

    /// The runtime's state of the ended run goes, so a restart can create
    /// the container again under its id.
    /// Removes the attach socket, once: after that, the run directory may
    /// belong to a later start.
    fn remove_socket(&mut self) {
        if !self.socket_removed {
            let _ = fs::remove_file(self.dir.join(ATTACH_SOCKET));
            self.socket_removed = true;
        }
    }

    fn delete_container(&self) {
        hako_monitor::delete_container(
            self.cfg.runtime.as_deref(),
            &self.cfg.runtime_root,
            &self.cfg.id,
        );
    }

    fn write_exit(&self, record: &ExitRecord) {
        if let Ok(bytes) = serde_json::to_vec(record) {
            let _ = write_atomic(&self.cfg.container_dir.join(EXIT_FILE), &bytes);
        }
    }

    fn final_error(&mut self, e: &str) {
        let record = ExitRecord {
            exit_code: 125,
            started_at: String::new(),
            finished_at: hako_runtime::state::now_rfc3339(),
            restarts: self.restarts,
            error: Some(e.to_string()),
            restarting: false,
        };
        self.write_exit(&record);
    }

    /// Waits out a restart delay while still answering requests; false if
    /// a stop came in meanwhile.
    fn pause(&mut self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until && !self.stop_requested {
            let left = until.saturating_duration_since(Instant::now());
            let ms = u16::try_from(left.as_millis().min(1000)).unwrap_or(1000);
            let mut fds = [
                PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
            ];
            let _ = poll(&mut fds, PollTimeout::from(ms));
            self.drain_signals(None);
            self.accept(None);
        }
        !self.stop_requested
    }

    /// Creates the container; its init waits for `start`.
    fn create(&mut self) -> Result<Run, String> {
        let null = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| format!("open /dev/null: {e}"))?;
        let mut run = Run {
            pid: 0,
            created: None,
            out: None,
            err: None,
            stdin: None,
            started_at: String::new(),
            started: None,
            status: None,
            exited_at: None,
        };
        // The container's stdio: the init inherits 0, 1 and 2 at create.
        let mut child_ends: Vec<OwnedFd> = Vec::new();
        if !self.cfg.tty {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            let stdin_r = if self.cfg.stdin {
                let (r, w) = pipe()?;
                run.stdin = Some(w);
                r
            } else {
                null.try_clone().map_err(|e| e.to_string())?.into()
            };
            dup_onto(&stdin_r, 0)?;
            dup_onto(&out_w, 1)?;
            dup_onto(&err_w, 2)?;
            run.out = Some(out_r);
            run.err = Some(err_r);
            child_ends.extend([stdin_r, out_w, err_w]);
        }
        // The init's pid, its pty master with a terminal, and the built-in
        // runtime's handle for the start.
        let res = match &self.cfg.runtime {
            None => hako_runtime::create::create(hako_runtime::CreateOptions {
                root: self.cfg.runtime_root.clone(),
                id: self.cfg.id.clone(),
                bundle: self.cfg.bundle.clone(),
                proxy_terminal: self.cfg.tty,
                start_in_process: true,
                ..Default::default()
            })
            .map(|mut c| (c.pid, c.terminal.take(), Some(c)))
            .map_err(|e| e.to_string()),
            Some(bin) => {
                external_create(bin, &self.cfg, &self.dir).map(|(pid, pty)| (pid, pty, None))
            }
        };
        null_stdio();
        drop(child_ends);
        let (pid, terminal, created) = res?;
        if let Some(master) = terminal {
            let input = master.try_clone().map_err(|e| format!("dup pty: {e}"))?;
            set_nonblocking(&master);
            run.out = Some(master);
            run.stdin = Some(input);
        }
        for fd in [&run.out, &run.err].into_iter().flatten() {
            set_nonblocking(fd);
        }
        run.pid = pid;
        run.created = created;
        // Memory is shed later, off the path of `run`: when a created
        // container waits for its start (`serve`), or when the monitor
        // goes lean after the start.
        Ok(run)
    }

    fn start(&mut self, run: &mut Run) -> Result<(), String> {
        if run.started.is_some() {
            return Err("the container is running already".into());
        }
        match (&self.cfg.runtime, run.created.as_mut()) {
            (None, Some(created)) => {
                hako_runtime::container::start_created(created).map_err(|e| e.to_string())?;
            }
            (Some(bin), _) => {
                hako_monitor::run_external(bin, &self.cfg.runtime_root, "start", [&self.cfg.id])
                    .map_err(|e| e.to_string())?;
            }
            (None, None) => return Err("the container cannot be started".into()),
        }
        run.created = None;
        run.started = Some(Instant::now());
        run.started_at = hako_runtime::state::now_rfc3339();
        Ok(())
    }

    /// The poll loop of one run; returns the exit code.
    fn serve(&mut self, run: &mut Run) -> Result<i32, String> {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if let Some(status) = run.status {
                let drained = run.out.is_none() && run.err.is_none();
                let late = run.exited_at.is_some_and(|t| t.elapsed() >= DRAIN_TIMEOUT);
                if drained || late {
                    self.log.flush();
                    return Ok(status);
                }
            }
            if run.started.is_none()
                && self.created_at.elapsed() >= START_TIMEOUT
                && self.restarts == 0
            {
                let _ = nix::sys::signal::kill(Pid::from_raw(run.pid), Signal::SIGKILL);
                let _ = waitpid(Pid::from_raw(run.pid), None);
                self.log.flush();
                return Ok(125);
            }
            let mut fds: Vec<PollFd> = Vec::with_capacity(4 + self.clients.len());
            fds.push(PollFd::new(self.signals.as_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
            let none = PollFlags::empty();
            let out_fd: Option<BorrowedFd<'_>> = run.out.as_ref().map(|f| f.as_fd());
            let err_fd: Option<BorrowedFd<'_>> = run.err.as_ref().map(|f| f.as_fd());
            // A slot per source, so the indices stay fixed.
            fds.push(PollFd::new(
                out_fd.unwrap_or(self.signals.as_fd()),
                if out_fd.is_some() {
                    PollFlags::POLLIN
                } else {
                    none
                },
            ));
            fds.push(PollFd::new(
                err_fd.unwrap_or(self.signals.as_fd()),
                if err_fd.is_some() {
                    PollFlags::POLLIN
                } else {
                    none
                },
            ));
            // Only clients that feed stdin are polled; the others are seen
            // gone when a write to them fails.
            let polled: Vec<usize> = (0..self.clients.len())
                .filter(|&i| self.clients[i].stdin)
                .collect();
            for &i in &polled {
                fds.push(PollFd::new(
                    self.clients[i].stream.as_fd(),
                    PollFlags::POLLIN,
                ));
            }
            let lean_due = !self.lean && run.started.is_some() && run.status.is_none();
            let timeout = if run.status.is_some() || run.started.is_none() {
                PollTimeout::from(100u16)
            } else if lean_due {
                PollTimeout::from(u16::try_from(LEAN_AFTER.as_millis()).unwrap_or(1000))
            } else {
                PollTimeout::NONE
            };
            match poll(&mut fds, timeout) {
                Ok(0) if lean_due => {
                    drop(fds);
                    self.go_lean(run);
                    continue;
                }
                Ok(0) if run.started.is_none() && !self.lean && !self.shed => {
                    // Created, and no start came at once (`create`): what
                    // create touched goes while it waits.
                    shed_setup_memory();
                    self.shed = true;
                }
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(format!("poll: {e}")),
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            if ready[0] {
                self.drain_signals(Some(run));
            }
            if ready[1] {
                self.accept(Some(run));
            }
            if ready[2] {
                self.pump(run, STDOUT, &mut buf);
            }
            if ready[3] {
                self.pump(run, STDERR, &mut buf);
            }
            for (slot, &i) in polled.iter().enumerate() {
                if ready.get(4 + slot).copied().unwrap_or(false) {
                    self.client_input(i, run, &mut buf);
                }
            }
        }
    }

    /// Reads output from one source, logs it and sends it to the clients.
    fn pump(&mut self, run: &mut Run, stream: u8, buf: &mut [u8]) {
        let slot = if stream == STDOUT {
            &mut run.out
        } else {
            &mut run.err
        };
        let Some(fd) = slot.as_ref() else { return };
        match nix::unistd::read(fd, buf) {
            Ok(0) | Err(nix::errno::Errno::EIO) => *slot = None,
            Ok(n) => {
                let data = &buf[..n];
                self.log.write(stream, data);
                let header = frame_header(stream, n);
                self.clients
                    .retain(|c| send_all(&c.stream, &header) && send_all(&c.stream, data));
            }
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
            Err(_) => *slot = None,
        }
    }

    fn client_input(&mut self, i: usize, run: &mut Run, buf: &mut [u8]) {
        let c = &mut self.clients[i];
        match c.stream.read(buf) {
            Ok(0) | Err(_) => {
                // The client's input ended: if it ran the container with
                // `-i`, so does the container's stdin (a terminal stays).
                // Other clients just detach. The client still gets the
                // output, and is no longer polled.
                if !self.cfg.tty && c.stdin_once {
                    run.stdin = None;
                }
                c.stdin = false;
            }
            Ok(n) => {
                if let Some(w) = run.stdin.as_ref() {
                    let _ = write_all_fd(w, &buf[..n]);
                }
            }
        }
    }

    fn drain_signals(&mut self, mut run: Option<&mut Run>) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            let signo = i32::try_from(info.ssi_signo).unwrap_or(0);
            if signo == libc::SIGCHLD {
                self.reap(run.as_deref_mut());
            } else if signo == libc::SIGWINCH {
                // Ours, not the container's.
            } else if let Some(r) = run.as_deref()
                && r.status.is_none()
                && r.pid > 0
            {
                // SAFETY: kill with plain integers, aimed at our own child.
                unsafe { libc::kill(r.pid, signo) };
            }
        }
    }

    fn reap(&mut self, mut run: Option<&mut Run>) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    let code = match status {
                        WaitStatus::Exited(_, c) => Some(c),
                        WaitStatus::Signaled(_, s, _) => Some(128 + s as i32),
                        _ => None,
                    };
                    if let (Some(r), Some(code)) = (run.as_deref_mut(), code)
                        && status.pid() == Some(Pid::from_raw(r.pid))
                    {
                        r.status = Some(code);
                        r.exited_at = Some(Instant::now());
                    }
                }
            }
        }
    }

    fn accept(&mut self, mut run: Option<&mut Run>) {
        while let Ok((stream, _)) = self.listener.accept() {
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let Some(req) = read_request(&stream) else {
                continue;
            };
            let _ = stream.set_read_timeout(None);
            // A client that reads nothing must not stall the container.
            let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
            let mut reply = Reply {
                error: None,
                pid: run.as_deref().map(|r| r.pid).unwrap_or(0),
            };
            if req.stop {
                self.stop_requested = true;
            }
            if let (Some(sig), Some(r)) = (req.signal, run.as_deref())
                && r.status.is_none()
                && r.pid > 0
            {
                // SAFETY: kill with plain integers, aimed at our own child.
                unsafe { libc::kill(r.pid, sig) };
            }
            if let (Some((rows, cols)), Some(r)) = (req.resize, run.as_deref())
                && let Some(master) = r.stdin.as_ref().filter(|_| self.cfg.tty)
            {
                let ws = libc::winsize {
                    ws_row: rows,
                    ws_col: cols,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                // SAFETY: TIOCSWINSZ reads a winsize we own from a
                // valid pointer.
                unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
            }
            let attach = req.attach && run.as_deref().is_some_and(|r| r.status.is_none());
            if req.start {
                match run.as_deref_mut() {
                    Some(r) => {
                        if let Err(e) = self.start(r) {
                            reply.error = Some(e);
                        }
                    }
                    None => reply.error = Some("the container is restarting".into()),
                }
            }
            let mut s = stream;
            let Ok(mut line) = serde_json::to_vec(&reply) else {
                continue;
            };
            line.push(b'\n');
            if s.write_all(&line).is_err() || !attach || reply.error.is_some() {
                continue;
            }
            self.clients.push(Client {
                stream: s,
                stdin: req.stdin && run.as_deref().is_some_and(|r| r.stdin.is_some()),
                cleans_up: req.cleanup,
                stdin_once: req.stdin_once,
            });
        }
    }

    /// The engine's cleanup, in place of this process (same pid, so no
    /// moment passes where nothing holds the container).
    fn exit_command(&mut self) -> i32 {
        self.remove_socket();
        let Some((prog, args)) = self.cfg.exit_command.split_first() else {
            return self.last.as_ref().map(|r| r.exit_code).unwrap_or(0);
        };
        let _ = SigSet::all().thread_unblock();
        use std::os::unix::process::CommandExt;
        let e = std::process::Command::new(prog).args(args).exec();
        let _ = writeln!(io::stderr(), "hako-monitor: exec {prog}: {e}");
        1
    }
}

/// Gives back the memory that setting up the container touched and the
/// monitor's loop will not use: pages of its binary and libraries mapped
/// by create (most of the runtime library, plus the kernel's fault-around)
/// and the deep part of the stack. Called once the container is created;
/// what the loop needs faults back in as it runs. With one monitor per
/// container, this is most of what each costs.
fn shed_setup_memory() {
    // What create allocated is free now: back to the kernel.
    allocator::give_back();
    let Ok(smaps) = fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut vma: Option<(usize, usize, bool)> = None;
    let drop_range = |v: Option<(usize, usize, bool)>, anonymous_kb: u64| {
        if let Some((start, end, file)) = v
            && file
            && anonymous_kb == 0
        {
            // SAFETY: a file mapping without private (copied-on-write)
            // pages: every page is the file's, re-read unchanged on
            // the next access, so dropping them loses nothing.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    };
    let mut stack: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        if let Some(kb) = line.strip_prefix("Anonymous:") {
            let kb = kb.trim().trim_end_matches("kB").trim().parse().unwrap_or(1);
            drop_range(vma.take(), kb);
            continue;
        }
        let mut f = line.split_whitespace();
        let Some(range) = f.next() else { continue };
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        else {
            continue;
        };
        let path = f.nth(4).unwrap_or("");
        if path == "[stack]" {
            stack = Some((start, end));
        }
        vma = Some((start, end, path.starts_with('/')));
    }
    // The stack below the current frame is free: nothing lives there (no
    // signal handler runs on it; signals come through a signalfd).
    if let Some((low, _)) = stack {
        let marker = 0u8;
        let sp = std::ptr::addr_of!(marker) as usize;
        let below = (sp & !4095).saturating_sub(4 * 4096);
        if below > low {
            // SAFETY: the range lies wholly below the deepest live frame
            // (with a 16 KiB margin) and inside the stack mapping.
            unsafe { libc::madvise(low as *mut libc::c_void, below - low, libc::MADV_DONTNEED) };
        }
    }
}

fn read_request(mut s: &UnixStream) -> Option<Request> {
    let mut line = Vec::with_capacity(128);
    let mut byte = [0u8; 1];
    while line.len() < 4096 {
        match s.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => return serde_json::from_slice(&line).ok(),
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
    }
    None
}

/// Create through an external OCI runtime binary (runc's command line).
/// The init ends up our child: we are a subreaper, and the runtime's
/// create exits once the init waits for start. With a terminal, the
/// runtime sends the pty master to a console socket in our directory;
/// returned beside the init's pid.
fn external_create(
    bin: &Path,
    cfg: &MonitorConfig,
    dir: &Path,
) -> Result<(i32, Option<OwnedFd>), String> {
    let pid_file = dir.join("init.pid");
    let log = dir.join("runtime.log");
    let console = if cfg.tty {
        Some(hako_monitor::ConsoleSocket::bind(dir).map_err(|e| {
            format!(
                "make the console socket in {} for {}: {e}",
                dir.display(),
                bin.display()
            )
        })?)
    } else {
        None
    };
    // The container's stdio is ours (0, 1, 2) at this point: not null.
    let mut cmd = hako_monitor::external_runtime_logged(bin, &cfg.runtime_root, &log);
    cmd.stdin(std::process::Stdio::inherit())
        .arg("create")
        .arg("--bundle")
        .arg(&cfg.bundle)
        .arg("--pid-file")
        .arg(&pid_file);
    if let Some(c) = &console {
        cmd.arg("--console-socket").arg(c.path());
    }
    let status = cmd
        .arg(&cfg.id)
        .status()
        .map_err(|e| hako_monitor::ExternalError::spawn(bin, "create", &e).to_string())?;
    if !status.success() {
        let said = hako_monitor::runtime_log_errors(&log);
        return Err(hako_monitor::ExternalError::failed(bin, "create", status, &said).to_string());
    }
    let text =
        fs::read_to_string(&pid_file).map_err(|e| format!("read {}: {e}", pid_file.display()))?;
    let pid = text
        .trim()
        .parse()
        .map_err(|_| format!("{} create wrote no pid", bin.display()))?;
    let master = match &console {
        Some(c) => match c.receive(bin, "create") {
            Ok(m) => Some(m),
            Err(e) => {
                // Created but unusable: the init must not stay behind.
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                return Err(e.to_string());
            }
        },
        None => None,
    };
    Ok((pid, master))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

fn dup_onto(fd: &OwnedFd, target: RawFd) -> Result<(), String> {
    // SAFETY: dup2 onto a standard descriptor; the result is not CLOEXEC,
    // which is the point: the container's init inherits it.
    if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
        return Err(format!("dup2: {}", io::Error::last_os_error()));
    }
    Ok(())
}

fn set_nonblocking(fd: &OwnedFd) {
    // SAFETY: fcntl flag changes on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

fn write_all_fd(fd: &OwnedFd, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends without SIGPIPE; false when the client is gone (or too slow).
fn send_all(s: &UnixStream, mut data: &[u8]) -> bool {
    use nix::sys::socket::{MsgFlags, send};
    while !data.is_empty() {
        match send(s.as_raw_fd(), data, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
    true
}
