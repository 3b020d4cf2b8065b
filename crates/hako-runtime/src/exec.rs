//! `exec`: a new process in a running container, entering the init's
//! namespaces and cgroup.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::sched::setns;
use nix::sys::signal::{Signal, kill};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType as Ns, Process};

use crate::channel::{self, Msg};
use crate::container;
use crate::error::{Context, Error, Result};
use crate::state::Status;
use crate::{init, namespaces, seccomp, sys};

pub struct ExecOptions {
    pub console_socket: Option<PathBuf>,
    /// Instead of `console_socket`: a connected socket that receives the
    /// pty master (a foreground exec that proxies the terminal itself).
    pub console_stream: Option<UnixStream>,
    pub pid_file: Option<PathBuf>,
    pub preserve_fds: u32,
    /// Re-execute this process from a sealed copy of its binary when the
    /// process could otherwise reach it (see `selfexe`). Only for a
    /// program whose command line does this exec again.
    pub sealed_reexec: bool,
}

/// Starts `process` in the container; returns its pid (a child of this
/// process) once it has exec'd.
pub fn exec(root: &Path, id: &str, process: &Process, opts: ExecOptions) -> Result<i32> {
    let c = container::load(root, id)?;
    if !matches!(c.status, Status::Running | Status::Created) {
        return Err(Error::WrongState {
            id: id.into(),
            status: c.status.to_string(),
            action: "exec",
            needed: "created or running",
        });
    }
    let spec = c.state.spec()?;
    if opts.sealed_reexec && crate::selfexe::needs_sealed_copy(process, &spec) {
        // The state lock's descriptor is close-on-exec: the lock goes
        // with the exec, and the new process takes it again.
        crate::selfexe::reexec_sealed()
            .context(|| "re-execute from a sealed copy of the runtime".to_string())?;
    }
    let terminal = process.terminal().unwrap_or(false);
    let init_pid = c.state.pid;
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    let mut join: Vec<(Ns, OwnedFd)> = Vec::new();
    let mut pid_ns = None;
    for n in &namespaces {
        let path = format!("/proc/{init_pid}/ns/{}", namespaces::name(n.typ()));
        let fd = open(
            path.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .context(|| format!("open {path}"))?;
        match n.typ() {
            Ns::Pid => pid_ns = Some(fd),
            t => join.push((t, fd)),
        }
    }
    // The descriptors name the init's namespaces only if the pid still
    // belongs to the init.
    if !c.state.init_alive() {
        return Err(Error::WrongState {
            id: id.into(),
            status: "stopped".into(),
            action: "exec",
            needed: "created or running",
        });
    }
    join.sort_by_key(|(t, _)| namespaces::join_order(*t));
    let in_userns = join.iter().any(|(t, _)| *t == Ns::User);
    let mut warnings = Vec::new();
    let filter = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(s) => Some(seccomp::prepare(
            s,
            Some(&root.join(".seccomp")),
            &mut warnings,
        )?),
        None => None,
    };
    for w in &warnings {
        eprintln!("hako-runtime: warning: {w}");
    }
    let min_fd = RawFd::try_from(3 + opts.preserve_fds).unwrap_or(RawFd::MAX);
    let console = if terminal {
        let fd = crate::create::connect_console(
            opts.console_stream.as_ref(),
            opts.console_socket.as_deref(),
            min_fd,
        )?;
        Some(fd.ok_or_else(|| Error::Init("exec with a terminal needs --console-socket".into()))?)
    } else {
        None
    };
    let trampoline = crate::selfexe::Trampoline::new(min_fd)
        .context(|| "make the exec trampoline".to_string())?;
    let (parent_chan, child_chan) =
        channel::pair_above(min_fd).context(|| "socketpair".to_string())?;
    let join: Vec<(Ns, OwnedFd)> = join
        .into_iter()
        .map(|(t, f)| sys::move_above(f, min_fd).map(|f| (t, f)))
        .collect::<nix::Result<_>>()
        .context(|| "move namespace descriptors".to_string())?;
    // Only this process's children enter it; this process's own pid
    // namespace for children comes back after the clone (a caller that
    // goes on, such as `hako exec` proxying a terminal, could not start a
    // thread otherwise).
    let own_pid_ns = match &pid_ns {
        Some(_) => Some(
            open(
                "/proc/self/ns/pid",
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .context(|| "open /proc/self/ns/pid".to_string())?,
        ),
        None => None,
    };
    if let Some(fd) = &pid_ns {
        setns(fd.as_fd(), namespaces::flag(Ns::Pid))
            .context(|| "enter the container's pid namespace".to_string())?;
    }
    let affinity = process.exec_cpu_affinity().clone().unwrap_or_default();
    // The initial CPUs are this process's (and so the child's) before the
    // child joins the cgroup; the final ones the child's after.
    if let Some(list) = affinity.initial().as_deref().filter(|l| !l.is_empty()) {
        crate::process::set_cpu_affinity("process.execCPUAffinity.initial", list)?;
    }
    let cg = c.state.cgroup.clone();
    let cgroup_fd = match cg.as_ref().and_then(|c| c.open_v2_dir()) {
        Some(r) => Some(r?),
        None => None,
    };
    // The child joins the v1 hierarchies itself (see `join_self`); the
    // clone puts it in the cgroup2 tree.
    let v1_tasks: Vec<OwnedFd> = match &cg {
        Some(cg) => cg
            .open_v1_tasks()?
            .into_iter()
            .map(|f| sys::move_above(f, min_fd))
            .collect::<nix::Result<_>>()
            .context(|| "move the cgroup descriptors".to_string())?,
        None => Vec::new(),
    };
    let forked = sys::clone3(0, cgroup_fd.as_ref().map(AsRawFd::as_raw_fd));
    if !matches!(forked, Ok(sys::Forked::Child))
        && let Some(own) = &own_pid_ns
    {
        setns(own.as_fd(), namespaces::flag(Ns::Pid))
            .context(|| "return to this process's pid namespace".to_string())?;
    }
    let forked = forked.context(|| "clone the exec process".to_string())?;
    let child = match forked {
        sys::Forked::Child => {
            let mut keep: Vec<RawFd> = vec![child_chan.raw()];
            keep.extend(console.as_ref().map(AsRawFd::as_raw_fd));
            keep.extend(join.iter().map(|(_, f)| f.as_raw_fd()));
            keep.push(trampoline.raw());
            keep.extend(v1_tasks.iter().map(AsRawFd::as_raw_fd));
            let result = (|| -> Result<std::convert::Infallible> {
                init::first_steps(&keep, opts.preserve_fds)?;
                init::expect(&child_chan, "set-up", |m| matches!(m, Msg::Go))?;
                hako_cgroups::join_self(&v1_tasks)
                    .map_err(|e| Error::Init(format!("exec: {e}")))?;
                for (t, f) in &join {
                    setns(f.as_fd(), namespaces::flag(*t)).context(|| {
                        format!("enter the container's {} namespace", namespaces::name(*t))
                    })?;
                }
                if in_userns {
                    namespaces::become_root()?;
                }
                if let Some(list) = affinity
                    .cpu_affinity_final()
                    .as_deref()
                    .filter(|l| !l.is_empty())
                {
                    crate::process::set_cpu_affinity("process.execCPUAffinity.final", list)?;
                }
                if let Some(con) = &console {
                    init::setup_console(con.as_raw_fd(), process)?;
                }
                let program =
                    init::prepare_process(process, &spec, in_userns, &child_chan, filter.as_ref())?;
                Err(crate::process::exec(
                    &trampoline,
                    &program,
                    process.args().as_deref().unwrap_or_default(),
                    &init::env_with_home(process),
                ))
            })();
            match result {
                Ok(never) => match never {},
                Err(e) => init::report_and_exit(&child_chan, &e),
            }
        }
        sys::Forked::Parent(pid) => pid,
    };
    drop(child_chan);
    drop(console);
    drop(join);
    drop(v1_tasks);
    let fail = |e: Error| {
        let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(child), None);
        e
    };
    parent_chan
        .send(&Msg::Go)
        .context(|| "signal the exec process".to_string())
        .map_err(fail)?;
    // Success is the socket closing on exec; a failure arrives as a message.
    loop {
        match parent_chan
            .recv()
            .context(|| "read from the exec process".to_string())
            .map_err(fail)?
        {
            None => break,
            Some(Msg::Error(text)) => {
                let _ = waitpid(Pid::from_raw(child), None);
                return Err(Error::Init(text));
            }
            Some(Msg::Warning(w)) => eprintln!("hako-runtime: warning: {w}"),
            Some(Msg::SeccompFd(fd)) => {
                // The agent hears of exec'd processes as of the init.
                crate::create::send_seccomp_listener(
                    &spec,
                    &c.state.bundle,
                    id,
                    child,
                    fd,
                    &c.state.annotations,
                )
                .map_err(fail)?;
            }
            Some(other) => {
                return Err(fail(Error::Init(format!(
                    "unexpected {other:?} from the exec process"
                ))));
            }
        }
    }
    if let Some(p) = &opts.pid_file {
        crate::create::write_pid_file(p, child)?;
    }
    Ok(child)
}
