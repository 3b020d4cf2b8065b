//! The container's init before it becomes the container's program: the
//! child the runtime cloned, running on a copy of the runtime's memory in
//! the container's namespaces. It never re-executes the runtime; it sets up
//! the root filesystem and the process, reports back over the sync channel,
//! waits for `start`, and execs the program.

use std::convert::Infallible;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Process, Spec};

use crate::channel::{Channel, Msg};
use crate::config::BundleConfig;
use crate::error::{Context, Error, Result};
use crate::namespaces::Plan;
use crate::state::Status;
use crate::{hooks, namespaces, process, rootfs, seccomp, sys};

/// How the init learns that it may exec.
pub enum StartSignal {
    /// `create` then a separate `start`, which writes to this fifo.
    Fifo(RawFd),
    /// `run`: the runtime sends `Msg::Start` over the channel.
    Channel,
}

/// Everything the init needs, in its copy of the runtime's memory.
pub struct InitContext<'a> {
    pub cfg: &'a BundleConfig,
    pub id: &'a str,
    pub plan: &'a Plan,
    pub chan: &'a Channel,
    pub start: StartSignal,
    pub console: Option<RawFd>,
    pub cgroup: Option<&'a hako_cgroups::Cgroup>,
    /// The clone put the init into its cgroup (cgroup v2); otherwise the
    /// runtime moves it there while the init sets up its mounts.
    pub in_cgroup_at_clone: bool,
    pub seccomp: Option<&'a seccomp::Filter>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
    pub has_runtime_hooks: bool,
    pub trampoline: &'a crate::selfexe::Trampoline,
    pub idmap_userns: &'a [(usize, std::os::fd::OwnedFd)],
}

/// Runs the init; never returns. A failure goes to the runtime as a
/// message (and to stderr, if the runtime is gone).
pub fn main(ctx: &InitContext) -> ! {
    let err = match run(ctx) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    report_and_exit(ctx.chan, &err)
}

pub fn report_and_exit(chan: &Channel, err: &Error) -> ! {
    let msg = err.to_string();
    if chan.send(&Msg::Error(msg.clone())).is_err() {
        eprintln!("hako-runtime: {msg}");
    }
    let code = match err {
        Error::Exec {
            not_found: true, ..
        } => 127,
        Error::Exec { .. } => 126,
        _ => 1,
    };
    sys::exit_now(code)
}

/// What every process the runtime starts in a container does first: no
/// /proc access for the container until the exec, a clean signal state,
/// and only the descriptors it is meant to have.
pub fn first_steps(keep: &[RawFd], preserve_fds: u32) -> Result<()> {
    sys::set_non_dumpable().context(|| "set non-dumpable".to_string())?;
    // The runtime blocks the signals it forwards, and Rust ignores SIGPIPE;
    // neither may reach the container's program.
    sys::reset_signals().context(|| "reset signal handling".to_string())?;
    sys::close_fds_except(3 + preserve_fds, keep)
        .context(|| "close inherited descriptors".to_string())
}

/// Waits for the runtime's next message. When the runtime has closed its
/// end it has either failed, and reports that itself, or been killed: the
/// init then leaves without a word of its own to add.
pub(crate) fn wait_for(chan: &Channel, what: &str) -> Result<Msg> {
    match chan
        .recv()
        .context(|| format!("wait for the runtime ({what})"))?
    {
        Some(msg) => Ok(msg),
        None => sys::exit_now(1),
    }
}

/// Waits for the runtime's message for `what`; any other is an error.
pub(crate) fn expect(chan: &Channel, what: &str, wanted: impl Fn(&Msg) -> bool) -> Result<()> {
    match wait_for(chan, what)? {
        m if wanted(&m) => Ok(()),
        other => Err(unexpected(&other, what)),
    }
}

fn run(ctx: &InitContext) -> Result<Infallible> {
    let mut keep = vec![ctx.chan.raw()];
    if let StartSignal::Fifo(fd) = ctx.start {
        keep.push(fd);
    }
    keep.extend(ctx.console);
    keep.push(ctx.trampoline.raw());
    keep.extend(ctx.idmap_userns.iter().map(|(_, fd)| fd.as_raw_fd()));
    keep.extend(crate::trace::fd());
    first_steps(&keep, ctx.preserve_fds)?;
    expect(ctx.chan, "set-up", |m| matches!(m, Msg::Go))?;
    let spec = &ctx.cfg.spec;
    let plan = ctx.plan;
    let mut cgroup = CgroupWait {
        chan: ctx.chan,
        ready: false,
    };
    if !plan.child_joins.is_empty()
        || plan.child_new_user
        || plan.child_new_pid
        || !plan.child_unshare.is_empty()
    {
        namespaces::child_setup(plan, &mut cgroup)?;
    } else if plan.in_userns {
        namespaces::become_root()?;
    }
    // The cgroup namespace is made with the init in its cgroup, so that the
    // cgroup is the namespace's root: at once when the clone put it there,
    // else once the runtime has moved it (the mounts, which do not need the
    // namespace on v1, go on meanwhile).
    if ctx.in_cgroup_at_clone {
        make_cgroupns(plan)?;
    }
    crate::trace::mark("init: namespaces");
    set_names(spec, plan)?;
    // A network namespace of its own starts with `lo` down; up, as crun
    // does it (a container with no network still talks to itself).
    if plan.new_net {
        let _ = sys::loopback_up();
    }
    // The pid the hooks see is the init's pid in the runtime's namespace,
    // which the host's /proc (still mounted here) tells.
    let host_pid: i32 = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0);
    let annotations = spec.annotations().clone().unwrap_or_default();
    let state =
        |status: Status| hooks::state_json(ctx.id, status, host_pid, &ctx.cfg.bundle, &annotations);

    if plan.new_mount {
        let rctx = rootfs::RootfsContext {
            spec,
            rootfs: &ctx.cfg.rootfs,
            bundle: &ctx.cfg.bundle,
            in_userns: plan.in_userns,
            new_netns: plan.new_net,
            new_cgroupns: plan.new_cgroup,
            cgroup: ctx.cgroup,
            idmap_userns: ctx.idmap_userns,
        };
        rootfs::prepare(&rctx, &mut || cgroup.wait())?;
    }
    crate::trace::mark("init: mounts");
    cgroup.wait()?;
    if !ctx.in_cgroup_at_clone {
        make_cgroupns(plan)?;
    }
    if ctx.has_runtime_hooks {
        ctx.chan
            .send(&Msg::RunHooks)
            .context(|| "ask for the prestart hooks".to_string())?;
        expect(ctx.chan, "the prestart hooks", |m| {
            matches!(m, Msg::HooksDone)
        })?;
    }
    hooks::run_all(
        "createContainer",
        &hooks::of(spec, |h| h.create_container()),
        &state(Status::Creating),
    )?;
    if plan.new_mount {
        rootfs::pivot(&ctx.cfg.rootfs, ctx.no_pivot)?;
    } else {
        rootfs::chroot_only(&ctx.cfg.rootfs)?;
    }
    // Before /proc/sys turns read-only with the other read-only paths.
    if let Some(sysctl) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) {
        let mut keys: Vec<&String> = sysctl.keys().collect();
        keys.sort();
        for k in keys {
            let v = &sysctl[k];
            let path = format!("/proc/sys/{}", k.replace('.', "/"));
            std::fs::write(&path, v)
                .context(|| format!("linux.sysctl.{k}: write {v:?} to {path}"))?;
        }
    }
    if plan.new_mount {
        rootfs::finish(spec)?;
    }
    crate::trace::mark("init: root finished");
    let process = spec.process().clone().unwrap_or_default();
    if let Some(console) = ctx.console {
        setup_console(console, &process)?;
    }
    if !ctx.no_new_keyring {
        // A fresh session keyring keeps the host's keys out of reach. A
        // kernel without keyrings has nothing to leak, so errors are moot.
        // SAFETY: keyctl with integer arguments and a null name.
        unsafe { libc::syscall(libc::SYS_keyctl, libc::KEYCTL_JOIN_SESSION_KEYRING, 0) };
    }
    let program = prepare_process(&process, spec, plan.in_userns, ctx.chan, ctx.seccomp)?;
    crate::trace::mark("init: process prepared");
    ctx.chan
        .send(&Msg::Ready)
        .context(|| "report ready".to_string())?;
    match ctx.start {
        StartSignal::Fifo(fd) => wait_readable(fd)?,
        StartSignal::Channel => expect(ctx.chan, "start", |m| matches!(m, Msg::Start))?,
    }
    hooks::run_all(
        "startContainer",
        &hooks::of(spec, |h| h.start_container()),
        &state(Status::Created),
    )?;
    Err(process::exec(
        ctx.trampoline,
        &program,
        process.args().as_deref().unwrap_or_default(),
        &env_with_home(&process),
    ))
}

fn make_cgroupns(plan: &Plan) -> Result<()> {
    if plan.new_cgroup {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
            .context(|| "make the cgroup namespace".to_string())?;
    }
    Ok(())
}

/// The runtime's word that the cgroup is ready, which may arrive while the
/// init waits for something else: the init joins it then.
pub struct CgroupWait<'a> {
    pub chan: &'a Channel,
    pub ready: bool,
}

impl CgroupWait<'_> {
    /// The runtime's next message for `what`, or `None` for a
    /// `CgroupReady`, which this handles: it joins the cgroup.
    fn next(&mut self, what: &str) -> Result<Option<Msg>> {
        match wait_for(self.chan, what)? {
            Msg::CgroupReady(tasks) => {
                hako_cgroups::join_self(&tasks).map_err(|e| Error::Init(e.to_string()))?;
                crate::trace::mark("init: cgroup joined");
                self.ready = true;
                Ok(None)
            }
            m => Ok(Some(m)),
        }
    }

    /// Waits for the runtime's message for `what`, joining the cgroup
    /// when a `CgroupReady` comes first.
    pub fn expect(&mut self, what: &str, wanted: impl Fn(&Msg) -> bool) -> Result<()> {
        loop {
            match self.next(what)? {
                None => {}
                Some(m) if wanted(&m) => return Ok(()),
                Some(other) => return Err(unexpected(&other, what)),
            }
        }
    }

    /// Returns once this process is in its cgroup.
    pub fn wait(&mut self) -> Result<()> {
        while !self.ready {
            if let Some(other) = self.next("the cgroup")? {
                return Err(unexpected(&other, "the cgroup"));
            }
        }
        Ok(())
    }
}

fn unexpected(msg: &Msg, what: &str) -> Error {
    Error::Init(format!(
        "unexpected {msg:?} from the runtime while waiting for {what}"
    ))
}

fn set_names(spec: &Spec, plan: &Plan) -> Result<()> {
    let in_own_uts = plan.new_uts
        || plan
            .child_joins
            .iter()
            .chain(&plan.parent_joins)
            .any(|(t, _)| *t == oci_spec::runtime::LinuxNamespaceType::Uts);
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        if !in_own_uts {
            return Err(Error::Init("hostname: setting it needs a uts namespace: add {\"type\": \"uts\"} to linux.namespaces".into()));
        }
        nix::unistd::sethostname(h).context(|| format!("hostname: set {h:?}"))?;
    }
    if let Some(d) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        if !in_own_uts {
            return Err(Error::Init("domainname: setting it needs a uts namespace: add {\"type\": \"uts\"} to linux.namespaces".into()));
        }
        sys::set_domainname(d).context(|| format!("domainname: set {d:?}"))?;
    }
    Ok(())
}

fn wait_readable(fd: RawFd) -> Result<()> {
    // SAFETY: the fifo descriptor stays open for the life of this process.
    let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut fds = [nix::poll::PollFd::new(bfd, nix::poll::PollFlags::POLLIN)];
    loop {
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => {
                r.context(|| "wait on the exec fifo".to_string())?;
                return Ok(());
            }
        }
    }
}

/// The common tail of init and exec: limits, labels, cwd, seccomp, user and
/// capabilities, in the order the kernel needs them. Returns the program
/// to exec, resolved in the container.
pub fn prepare_process(
    process: &Process,
    spec: &Spec,
    in_userns: bool,
    chan: &Channel,
    filter: Option<&seccomp::Filter>,
) -> Result<PathBuf> {
    process::set_rlimits(process)?;
    process::set_oom_score_adj(process)?;
    process::set_scheduler(process)?;
    process::set_io_priority(process)?;
    if let Some(p) = spec.linux().as_ref().and_then(|l| l.personality().as_ref()) {
        process::set_personality(p)?;
    }
    if let Some(p) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.memory_policy().as_ref())
    {
        process::set_memory_policy(p)?;
    }
    process::set_lsm_labels(process)?;
    process::enter_cwd(process.cwd())?;
    let program = program_of(process)?;
    let nnp = process.no_new_privileges().unwrap_or(false);
    if nnp {
        sys::set_no_new_privs().context(|| "set no_new_privs".to_string())?;
    }
    let mut warnings = Vec::new();
    let mut listener = None;
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it
    // while the process still has it; with it, as late as possible.
    if let (Some(f), false) = (filter, nnp) {
        listener = seccomp::load(f, &mut warnings)?;
    }
    process::drop_bounding(process.capabilities().as_ref())?;
    process::set_user_and_caps(process, in_userns, &mut warnings)?;
    if let (Some(f), true) = (filter, nnp) {
        listener = seccomp::load(f, &mut warnings)?;
    }
    for w in warnings {
        // The runtime logs them where its caller looks.
        let _ = chan.send(&Msg::Warning(w));
    }
    if let Some(fd) = listener {
        chan.send(&Msg::SeccompFd(fd))
            .context(|| "pass the seccomp listener to the runtime".to_string())?;
    }
    Ok(program)
}

fn program_of(process: &Process) -> Result<PathBuf> {
    let args = process.args().as_deref().unwrap_or_default();
    let arg0 = args
        .first()
        .ok_or_else(|| Error::Init("process.args is empty".into()))?;
    process::find_program(arg0, process.env().as_deref().unwrap_or_default())
}

/// The process environment, with HOME from the container's /etc/passwd when
/// the config does not set it (as other runtimes do).
pub fn env_with_home(process: &Process) -> Vec<String> {
    let mut env = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let uid = process.user().uid();
        let home = std::fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|p| {
                p.lines().find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid))
                        .then(|| f[5].to_string())
                })
            })
            .unwrap_or_else(|| "/".to_string());
        env.push(format!("HOME={home}"));
    }
    env
}

/// Makes a pty inside the container, makes its slave the process's stdio
/// and controlling terminal, and sends the master to the console socket.
pub fn setup_console(console: RawFd, process: &Process) -> Result<()> {
    use nix::fcntl::{OFlag, open};
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
    use nix::sys::stat::Mode;
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .context(|| "open /dev/ptmx in the container".to_string())?;
    grantpt(&master).context(|| "grantpt".to_string())?;
    unlockpt(&master).context(|| "unlockpt".to_string())?;
    let name = ptsname_r(&master).context(|| "ptsname".to_string())?;
    if let Some(size) = process.console_size() {
        sys::set_window_size(
            master.as_raw_fd(),
            u16::try_from(size.height()).unwrap_or(u16::MAX),
            u16::try_from(size.width()).unwrap_or(u16::MAX),
        )
        .context(|| "process.consoleSize: set the window size".to_string())?;
    }
    nix::unistd::setsid().context(|| "setsid".to_string())?;
    let slave = open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context(|| format!("open {name}"))?;
    sys::set_controlling_terminal(slave.as_raw_fd())
        .context(|| "make the pty the controlling terminal".to_string())?;
    if Path::new("/dev").is_dir() {
        rootfs::bind_console(&name)?;
    }
    for target in 0..3 {
        sys::dup2(slave.as_raw_fd(), target).context(|| "put the pty on stdio".to_string())?;
    }
    crate::channel::send_with_fd(console, name.as_bytes(), Some(master.as_raw_fd()))
        .context(|| "send the pty to the console socket".to_string())
}
