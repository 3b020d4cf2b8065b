//! Operations on existing containers: state, start, kill, delete, pause,
//! resume, ps, update, stats, list; and waiting for a child while passing
//! signals on to it.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::{OFlag, open};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::channel::Msg;
use crate::create::Created;
use crate::error::{Context, Error, Result};
use crate::hooks;
use crate::state::{ContainerState, OciState, StateDir, Status};

/// A container loaded under its lock, which is held until this is dropped.
pub struct Loaded {
    pub dir: StateDir,
    pub state: ContainerState,
    pub status: Status,
    _lock: std::fs::File,
}

pub fn load(root: &Path, id: &str) -> Result<Loaded> {
    let dir = StateDir::new(root, id)?;
    let lock = dir.lock(id)?;
    let state = dir.load(id)?;
    let status = state.status(&dir);
    Ok(Loaded {
        dir,
        state,
        status,
        _lock: lock,
    })
}

fn wrong_state(id: &str, status: Status, action: &'static str, needed: &'static str) -> Error {
    Error::WrongState {
        id: id.into(),
        status: status.to_string(),
        action,
        needed,
    }
}

pub fn state(root: &Path, id: &str) -> Result<OciState> {
    let c = load(root, id)?;
    Ok(c.state.oci(c.status))
}

/// The poststart hooks; a failure is a warning, as the spec says.
fn poststart(state: &ContainerState, warnings: &mut Vec<String>) {
    let Some(list) = state.hooks.as_ref().and_then(|h| h.poststart().as_ref()) else {
        return;
    };
    let st = hooks::state_json(
        &state.id,
        Status::Running,
        state.pid,
        &state.bundle,
        &state.annotations,
    );
    for h in list {
        if let Err(e) = hooks::run("poststart", h, &st) {
            warnings.push(e.to_string());
        }
    }
}

/// `start`: lets the waiting init exec the container's program.
pub fn start(root: &Path, id: &str) -> Result<Vec<String>> {
    let c = load(root, id)?;
    if c.status != Status::Created {
        return Err(wrong_state(id, c.status, "start", "created"));
    }
    let fifo = open(
        &c.dir.fifo(),
        OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        if e == nix::errno::Errno::ENXIO {
            Error::Init(format!(
                "container {id:?} is not waiting to start (its init has exited)"
            ))
        } else {
            Error::Sys {
                context: format!("open {}", c.dir.fifo().display()),
                source: e,
            }
        }
    })?;
    nix::unistd::write(&fifo, b"0").context(|| "write the exec fifo".to_string())?;
    drop(fifo);
    let _ = std::fs::remove_file(c.dir.fifo());
    let mut warnings = Vec::new();
    poststart(&c.state, &mut warnings);
    Ok(warnings)
}

/// The in-process `start` of `run`: the init execs; an exec failure is
/// reported here.
pub fn start_created(created: &mut Created) -> Result<Vec<String>> {
    let chan = created.start()?;
    loop {
        match chan
            .recv()
            .context(|| "read from the container's init".to_string())?
        {
            None => break,
            Some(Msg::Error(text)) => return Err(Error::Init(text)),
            Some(_) => {}
        }
    }
    crate::trace::mark("program exec'd");
    let mut warnings = Vec::new();
    for h in &created.poststart {
        if let Err(e) = hooks::run("poststart", h, &created.running_state) {
            warnings.push(e.to_string());
        }
    }
    Ok(warnings)
}

pub fn kill_container(root: &Path, id: &str, signal: i32, all: bool) -> Result<()> {
    if !(1..=crate::SIGRTMAX).contains(&signal) {
        return Err(Error::Init(format!(
            "{signal} is not a signal: use 1 to {}",
            crate::SIGRTMAX
        )));
    }
    let c = load(root, id)?;
    if c.status == Status::Stopped && !all {
        return Err(wrong_state(
            id,
            c.status,
            "kill",
            "created, running or paused",
        ));
    }
    let paused = c.status == Status::Paused;
    if all && let Some(cg) = &c.state.cgroup {
        cg.signal_all(signal)?;
        if paused && signal == libc::SIGKILL {
            cg.thaw()?;
        }
        return Ok(());
    }
    if c.status == Status::Stopped {
        return Ok(());
    }
    // Realtime signals have no `Signal` of their own: the number goes as
    // it is.
    let name =
        Signal::try_from(signal).map_or_else(|_| format!("signal {signal}"), |s| s.to_string());
    crate::sys::send_signal(c.state.pid, signal)
        .context(|| format!("send {name} to the init (pid {})", c.state.pid))?;
    if paused
        && signal == libc::SIGKILL
        && let Some(cg) = &c.state.cgroup
    {
        cg.thaw()?;
    }
    Ok(())
}

/// `delete`: releases everything the container holds. Without `force` the
/// container must be stopped.
pub fn delete(root: &Path, id: &str, force: bool) -> Result<Vec<String>> {
    let c = match load(root, id) {
        Ok(c) => c,
        // A create killed before it wrote any state leaves a bare
        // directory, which --force clears.
        Err(Error::NotFound(_)) if force => {
            let dir = StateDir::new(root, id)?;
            let _lock = dir.lock(id)?;
            if dir.dir.join("state.json").exists() {
                return Err(Error::Init(format!(
                    "container {id:?} appeared while being deleted; try again"
                )));
            }
            dir.remove()?;
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    if c.status != Status::Stopped && !force {
        return Err(wrong_state(
            id,
            c.status,
            "delete",
            "stopped (or use --force)",
        ));
    }
    let mut warnings = Vec::new();
    // Devices moved in go back while their namespace still exists; once
    // it is gone the kernel has returned physical devices to the host and
    // removed virtual ones.
    if c.state.init_alive() {
        warnings.extend(crate::netdev::return_from(
            &c.state.net_devices,
            c.state.pid,
        ));
    }
    if let Some(cg) = &c.state.cgroup {
        // Processes outside a pid namespace outlive the init: all go.
        cg.signal_all(libc::SIGKILL)?;
        if cg.is_frozen().unwrap_or(false) {
            cg.thaw()?;
        }
    }
    if c.state.init_alive() {
        let _ = kill(Pid::from_raw(c.state.pid), Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.state.init_alive() && Instant::now() < deadline {
            // Reap it if it is this process's child; otherwise its parent
            // will, and a zombie counts as gone.
            let _ = waitpid(Pid::from_raw(c.state.pid), Some(WaitPidFlag::WNOHANG));
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    crate::trace::mark("delete: processes gone");
    if let Some(cg) = &c.state.cgroup {
        cg.destroy()?;
    }
    crate::trace::mark("delete: cgroup removed");
    // The hooks saved beside the config: no parse of the whole config.
    if let Some(list) = c.state.hooks.as_ref().and_then(|h| h.poststop().as_ref()) {
        let st = hooks::state_json(
            id,
            Status::Stopped,
            0,
            &c.state.bundle,
            &c.state.annotations,
        );
        for h in list {
            if let Err(e) = hooks::run("poststop", h, &st) {
                warnings.push(e.to_string());
            }
        }
    }
    c.dir.remove()?;
    Ok(warnings)
}

fn cgroup_of<'a>(c: &'a Loaded, id: &str) -> Result<&'a hako_cgroups::Cgroup> {
    c.state
        .cgroup
        .as_ref()
        .ok_or_else(|| Error::Init(format!("container {id:?} has no cgroup")))
}

pub fn pause(root: &Path, id: &str) -> Result<()> {
    let c = load(root, id)?;
    if !matches!(c.status, Status::Running | Status::Created) {
        return Err(wrong_state(id, c.status, "pause", "running or created"));
    }
    Ok(cgroup_of(&c, id)?.freeze()?)
}

pub fn resume(root: &Path, id: &str) -> Result<()> {
    let c = load(root, id)?;
    if c.status != Status::Paused {
        return Err(wrong_state(id, c.status, "resume", "paused"));
    }
    Ok(cgroup_of(&c, id)?.thaw()?)
}

pub fn pids(root: &Path, id: &str) -> Result<Vec<i32>> {
    let c = load(root, id)?;
    match &c.state.cgroup {
        Some(cg) => Ok(cg.pids()?),
        None => Ok(if c.status == Status::Stopped {
            vec![]
        } else {
            vec![c.state.pid]
        }),
    }
}

pub fn update(
    root: &Path,
    id: &str,
    resources: &oci_spec::runtime::LinuxResources,
) -> Result<Vec<String>> {
    let c = load(root, id)?;
    if c.status == Status::Stopped {
        return Err(wrong_state(
            id,
            c.status,
            "update",
            "created, running or paused",
        ));
    }
    Ok(cgroup_of(&c, id)?.apply(resources)?)
}

pub fn stats(root: &Path, id: &str) -> Result<(Status, hako_cgroups::Stats)> {
    let c = load(root, id)?;
    let stats = cgroup_of(&c, id)?.stats()?;
    Ok((c.status, stats))
}

/// Ids of the containers under `root`.
pub fn list(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).context(|| format!("read {}", root.display())),
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && e.path().join("state.json").exists() {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

// ---------------------------------------------------------------------------
// Waiting for a child while forwarding signals to it.

const FORWARDED: [Signal; 8] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
];

/// Blocks the signals `wait_forwarding` handles; call before the child
/// exists so that none is lost in between. (The child unblocks them.)
pub fn block_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in FORWARDED {
        set.add(s);
    }
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    set
}

/// The exit code as a shell reports it: the code, or 128 + the signal.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// The size of the terminal on `fd`, if it is one: rows, columns.
pub fn terminal_size(fd: std::os::fd::BorrowedFd<'_>) -> Option<(u16, u16)> {
    use std::os::fd::AsRawFd;
    // SAFETY: winsize is plain data; zeroed is a valid value.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize into the one we own.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Gives `pty` the size of this process's terminal (its stdin), when it
/// has one.
pub fn copy_terminal_size(pty: std::os::fd::BorrowedFd<'_>) {
    use std::os::fd::{AsFd, AsRawFd};
    if let Some((rows, cols)) = terminal_size(std::io::stdin().as_fd()) {
        let _ = crate::sys::set_window_size(pty.as_raw_fd(), rows, cols);
    }
}

/// Waits for `pid` to end, passing on the signals this process receives;
/// returns its exit code.
pub fn wait_forwarding(pid: i32, set: &SigSet) -> Result<i32> {
    wait_forwarding_to(pid, set, None)
}

/// [`wait_forwarding`] for a program on the pty `pty`: a SIGWINCH resizes
/// the pty to this process's terminal (the kernel then tells the program),
/// as `docker exec -t` follows the terminal.
pub fn wait_forwarding_to(
    pid: i32,
    set: &SigSet,
    pty: Option<std::os::fd::BorrowedFd<'_>>,
) -> Result<i32> {
    let child = Pid::from_raw(pid);
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(st) => {
                if let Some(code) = exit_code(st) {
                    return Ok(code);
                }
            }
            Err(nix::errno::Errno::ECHILD) => {
                return Err(Error::Init(format!(
                    "process {pid} is not a child of this runtime"
                )));
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context(|| format!("wait for {pid}")),
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) | Err(_) => {}
            Ok(Signal::SIGWINCH) if pty.is_some() => {
                if let Some(p) = pty {
                    copy_terminal_size(p);
                }
            }
            Ok(sig) => {
                let _ = kill(child, sig);
            }
        }
    }
}
