//! `create`: the runtime's side of making a container. One clone3 starts
//! the init straight in its namespaces (and, on cgroup v2, its cgroup);
//! the init is this process's child, so a `run` reaps its exit itself.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::signal::{Signal, kill};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{Linux, LinuxIdMapping};

use crate::channel::{self, Channel, Msg};
use crate::config::{self, BundleConfig};
use crate::error::{Context, Error, Result};
use crate::init::{InitContext, StartSignal};
use crate::state::{ContainerState, StateDir, Status, now_rfc3339};
use crate::{hooks, namespaces, seccomp, sys};

/// Options of `create` (and of `run`).
#[derive(Debug, Default)]
pub struct CreateOptions {
    pub root: PathBuf,
    pub id: String,
    pub bundle: PathBuf,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
    /// Without `console_socket`: return a terminal container's pty master
    /// in `Created::terminal` (a foreground `run` proxies it).
    pub proxy_terminal: bool,
    /// `run`: the init waits for `Created::start` instead of a fifo.
    pub start_in_process: bool,
    /// Re-execute this process from a sealed copy of its binary when the
    /// container could otherwise reach it (see `selfexe`). Only for a
    /// program whose command line does this create again.
    pub sealed_reexec: bool,
}

/// A created container.
pub struct Created {
    /// The init's pid; a child of this process.
    pub pid: i32,
    pub warnings: Vec<String>,
    /// With `proxy_terminal`: the container's pty master.
    pub terminal: Option<OwnedFd>,
    /// With `start_in_process`: the channel `start` speaks over.
    chan: Option<Channel>,
    /// The poststart hooks and the state they read, for an in-process
    /// start.
    pub(crate) poststart: Vec<oci_spec::runtime::Hook>,
    pub(crate) running_state: String,
}

impl Created {
    /// Lets the init exec the program (for `start_in_process`); the
    /// channel then closes on the exec or carries the exec's failure.
    pub fn start(&mut self) -> Result<Channel> {
        let chan = self
            .chan
            .take()
            .ok_or_else(|| Error::Init("the container was started already".into()))?;
        chan.send(&Msg::Start)
            .context(|| "tell the init to start".to_string())?;
        Ok(chan)
    }
}

/// Undoes a half-made container when create fails at any step.
struct Guard<'a> {
    dir: &'a StateDir,
    cgroup: Option<hako_cgroups::Cgroup>,
    child: Option<i32>,
    /// Devices moved into the init's network namespace: they go back to the
    /// host before the namespace dies (which would destroy virtual ones).
    net_devices: Vec<(String, String)>,
    /// Once the container's hooks have started, a failed create continues
    /// the lifecycle at delete, as the spec says: these poststop hooks
    /// run, with this state, after everything is released.
    poststop: Option<(Vec<oci_spec::runtime::Hook>, String)>,
    armed: bool,
}

impl Guard<'_> {
    /// The error for an init that failed during set-up: its own message, or
    /// what its exit says. The init is reaped.
    fn init_failed(&mut self, msg: Option<Msg>, cg: &hako_cgroups::Cgroup, linux: &Linux) -> Error {
        self.return_devices();
        let status = self
            .child
            .take()
            .and_then(|pid| waitpid(Pid::from_raw(pid), None).ok());
        match msg {
            Some(Msg::Error(text)) => Error::Init(text),
            _ => Error::Init(died_during_setup(status, cg, linux)),
        }
    }

    fn return_devices(&mut self) {
        if let Some(pid) = self.child {
            let _ = crate::netdev::return_from(&self.net_devices, pid);
        }
        self.net_devices.clear();
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.return_devices();
        if let Some(pid) = self.child {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.signal_all(libc::SIGKILL);
            let _ = cg.destroy();
        }
        let _ = self.dir.remove();
        if let Some((list, state)) = self.poststop.take() {
            for h in &list {
                // As at delete, a failing poststop hook is only a warning.
                if let Err(e) = hooks::run("poststop", h, &state) {
                    eprintln!("hako-runtime: warning: {e}");
                }
            }
        }
    }
}

pub fn create(opts: CreateOptions) -> Result<Created> {
    let dir = StateDir::new(&opts.root, &opts.id)?;
    let cfg = config::load(&opts.bundle)?;
    crate::trace::mark("config loaded");
    if opts.sealed_reexec
        && let Some(p) = cfg.spec.process()
        && crate::selfexe::needs_sealed_copy(p, &cfg.spec)
    {
        crate::selfexe::reexec_sealed()
            .context(|| "re-execute from a sealed copy of the runtime".to_string())?;
    }
    let terminal = cfg
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    if terminal && opts.console_socket.is_none() && !opts.proxy_terminal {
        return Err(cfg.invalid(
            "process.terminal",
            "a terminal needs --console-socket (or set terminal to false)",
        ));
    }
    let linux = cfg.spec.linux().clone().unwrap_or_default();
    let ns_list = linux.namespaces().clone().unwrap_or_default();
    let plan = namespaces::plan(&ns_list);
    if !plan.new_mount && cfg.spec.mounts().as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(cfg.invalid(
            "mounts",
            "mounts need a new mount namespace: add {\"type\": \"mount\"} to linux.namespaces",
        ));
    }
    let net_devices = net_devices(&cfg, &linux, &plan)?;
    dir.create(&opts.id)?;
    let lock = dir.lock(&opts.id)?;
    let mut guard = Guard {
        dir: &dir,
        cgroup: None,
        child: None,
        net_devices: Vec::new(),
        poststop: None,
        armed: true,
    };
    let mut warnings = cfg.warnings.clone();

    // The cgroup's place is known before any process exists; with a
    // cgroup2 tree (v2, hybrid) it is made now, so that the clone can
    // start the init in it.
    let mut cg = resolve_cgroup(&cfg, &linux, &opts.id)?;
    guard.cgroup = Some(cg.clone());
    let mut state = ContainerState {
        id: opts.id.clone(),
        pid: 0,
        pid_start: 0,
        bundle: cfg.bundle.clone(),
        rootfs: cfg.rootfs.clone(),
        created: now_rfc3339(),
        owner: nix::unistd::geteuid().as_raw(),
        annotations: cfg.spec.annotations().clone().unwrap_or_default(),
        cgroup: Some(cg.clone()),
        config: cfg.raw.clone(),
        hooks: cfg.spec.hooks().clone(),
        net_devices: net_devices.clone(),
    };
    // Saved before any cgroup directory exists, so that a `delete --force`
    // after a crash finds whatever was made.
    dir.save(&state)?;
    let cgroup_fd = if cg.v2.is_some() {
        cg.create()?;
        guard.cgroup = Some(cg.clone());
        cg.open_v2_dir().transpose()?
    } else {
        None
    };

    let filter = match linux.seccomp() {
        Some(s) => Some(seccomp::prepare(
            s,
            Some(&opts.root.join(".seccomp")),
            &mut warnings,
        )?),
        None => None,
    };
    let fifo = if opts.start_in_process {
        None
    } else {
        nix::unistd::mkfifo(&dir.fifo(), Mode::from_bits_truncate(0o600))
            .context(|| format!("mkfifo {}", dir.fifo().display()))?;
        Some(
            open(
                &dir.fifo(),
                OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .context(|| format!("open {}", dir.fifo().display()))?,
        )
    };
    // The child's descriptors sit above those the caller preserves.
    let min_fd = RawFd::try_from(3 + opts.preserve_fds).unwrap_or(RawFd::MAX);
    // A proxied terminal's master comes back over a socket pair of ours.
    let proxy = (terminal && opts.console_socket.is_none())
        .then(UnixStream::pair)
        .transpose()
        .context(|| "socketpair for the terminal".to_string())?;
    let console = if terminal {
        connect_console(
            proxy.as_ref().map(|(_, theirs)| theirs),
            opts.console_socket.as_deref(),
            min_fd,
        )?
    } else {
        None
    };
    let (parent_chan, child_chan) =
        channel::pair_above(min_fd).context(|| "socketpair".to_string())?;
    let fifo = fifo
        .map(|f| sys::move_above(f, min_fd))
        .transpose()
        .context(|| "move the fifo".to_string())?;
    let trampoline = crate::selfexe::Trampoline::new(min_fd)
        .context(|| "make the exec trampoline".to_string())?;
    let mut idmap_userns = Vec::new();
    for (i, m) in cfg.spec.mounts().iter().flatten().enumerate() {
        if crate::rootfs::parse_options(m.options().as_deref().unwrap_or_default()).idmap {
            let fd = crate::rootfs::idmap_userns(m)?;
            idmap_userns.push((
                i,
                sys::move_above(fd, min_fd).context(|| "move an idmap namespace".to_string())?,
            ));
        }
    }
    let time_offsets = time_offsets(&linux);

    let ctx = InitContext {
        cfg: &cfg,
        id: &opts.id,
        plan: &plan,
        chan: &child_chan,
        start: match &fifo {
            Some(f) => StartSignal::Fifo(f.as_raw_fd()),
            None => StartSignal::Channel,
        },
        console: console.as_ref().map(AsRawFd::as_raw_fd),
        cgroup: Some(&cg),
        in_cgroup_at_clone: cgroup_fd.is_some() && cg.v1.is_empty(),
        seccomp: filter.as_ref(),
        no_pivot: opts.no_pivot,
        no_new_keyring: opts.no_new_keyring,
        preserve_fds: opts.preserve_fds,
        trampoline: &trampoline,
        idmap_userns: &idmap_userns,
        has_runtime_hooks: !hooks::of(&cfg.spec, |h| h.prestart()).is_empty()
            || !hooks::of(&cfg.spec, |h| h.create_runtime()).is_empty(),
    };
    // Lingering zombie-free even when the init is forked by an
    // intermediate child (the slow path's pid namespace).
    if plan.child_new_pid {
        sys::set_child_subreaper().context(|| "become a subreaper".to_string())?;
    }
    crate::trace::mark("clone");
    let saved = namespaces::enter_for_clone(
        &plan.parent_joins,
        plan.new_time.then_some(time_offsets.as_str()),
    )?;
    let forked = sys::clone3(
        u64::from(plan.clone_flags.bits().cast_unsigned()),
        cgroup_fd.as_ref().map(AsRawFd::as_raw_fd),
    );
    let forked = match forked {
        Ok(sys::Forked::Child) => crate::init::main(&ctx),
        Ok(sys::Forked::Parent(pid)) => {
            namespaces::restore(saved)?;
            pid
        }
        Err(e) => {
            namespaces::restore(saved)?;
            return Err(Error::Sys {
                context: format!(
                    "clone the container's init (namespaces {:?})",
                    plan.clone_flags
                ),
                source: e,
            });
        }
    };
    let mut pid = forked;
    guard.child = Some(pid);
    drop(child_chan);
    drop(fifo);
    drop(console);

    if plan.new_user && !plan.child_new_user {
        write_id_maps(pid, &linux)?;
    }
    crate::trace::mark("cloned");
    parent_chan
        .send(&Msg::Go)
        .context(|| "signal the container's init".to_string())?;
    // While the init sets up its namespaces and mounts, the cgroup is made
    // (v1 only) and configured; the init then joins its v1 hierarchies
    // itself (see `join_self`: not a move from here, which can wait
    // milliseconds for an RCU grace period). The clone put it in the
    // cgroup2 tree.
    if cgroup_fd.is_none() {
        cg.create()?;
        guard.cgroup = Some(cg.clone());
    }
    match cg.apply(&resources(&linux)) {
        Ok(w) => warnings.extend(w),
        Err(e) => return Err(e.into()),
    }
    let v1_tasks = cg.open_v1_tasks()?;
    crate::trace::mark("cgroup ready");
    match parent_chan.send(&Msg::CgroupReady(v1_tasks)) {
        Ok(()) => {}
        // The init gave up meanwhile; its message says why.
        Err(Errno::EPIPE | Errno::ECONNRESET) => {
            return Err(guard.init_failed(parent_chan.recv().ok().flatten(), &cg, &linux));
        }
        // Not sent (too many hierarchies for one message, say): the init,
        // still waiting, goes with the guard.
        Err(e) => {
            return Err(e)
                .context(|| "pass the cgroup's tasks files to the container's init".into());
        }
    }

    // The final state, written while the init still sets up (commands
    // that read it wait for this create's lock anyway).
    state.cgroup = Some(cg.clone());
    save_pid(&dir, &mut state, pid)?;

    let annotations = cfg.spec.annotations().clone().unwrap_or_default();
    // Devices join the container before the hooks (which may configure
    // them) or, without hooks, once the init is set up.
    loop {
        let msg = parent_chan
            .recv()
            .context(|| "read from the container's init".to_string())?;
        match msg {
            Some(Msg::WriteMaps) => {
                write_id_maps(pid, &linux)?;
                parent_chan
                    .send(&Msg::MapsWritten)
                    .context(|| "signal the container's init".to_string())?;
            }
            Some(Msg::InitPid(init)) => {
                // The intermediate child exits; the init is adopted by this
                // (subreaper) process.
                let _ = waitpid(Pid::from_raw(pid), None);
                pid = init;
                guard.child = Some(pid);
                save_pid(&dir, &mut state, pid)?;
            }
            Some(Msg::RunHooks) => {
                move_devices(&mut guard, &net_devices, pid)?;
                let st =
                    hooks::state_json(&opts.id, Status::Creating, pid, &cfg.bundle, &annotations);
                guard.poststop = Some((
                    hooks::of(&cfg.spec, |h| h.poststop()),
                    hooks::state_json(&opts.id, Status::Stopped, pid, &cfg.bundle, &annotations),
                ));
                hooks::run_all("prestart", &hooks::of(&cfg.spec, |h| h.prestart()), &st)?;
                hooks::run_all(
                    "createRuntime",
                    &hooks::of(&cfg.spec, |h| h.create_runtime()),
                    &st,
                )?;
                parent_chan
                    .send(&Msg::HooksDone)
                    .context(|| "signal the container's init".to_string())?;
            }
            Some(Msg::SeccompFd(fd)) => {
                send_seccomp_listener(&cfg.spec, &cfg.bundle, &opts.id, pid, fd, &annotations)?;
            }
            Some(Msg::Warning(w)) => warnings.push(w),
            Some(Msg::Ready) => {
                move_devices(&mut guard, &net_devices, pid)?;
                crate::trace::mark("init ready");
                break;
            }
            msg @ (None | Some(Msg::Error(_))) => return Err(guard.init_failed(msg, &cg, &linux)),
            Some(other) => {
                return Err(Error::Init(format!(
                    "unexpected {other:?} from the container's init"
                )));
            }
        }
    }
    if let Some(p) = &opts.pid_file {
        write_pid_file(p, pid)?;
    }
    drop(lock);
    crate::trace::mark("created");
    guard.armed = false;
    // The init sent the master before it said it was ready.
    let terminal = match proxy {
        Some((mine, _)) => Some(
            channel::recv_fd(mine.as_raw_fd())
                .context(|| "receive the pty master".to_string())?
                .ok_or_else(|| Error::Init("the container sent no terminal".into()))?,
        ),
        None => None,
    };
    Ok(Created {
        pid,
        warnings,
        terminal,
        chan: opts.start_in_process.then_some(parent_chan),
        poststart: hooks::of(&cfg.spec, |h| h.poststart()),
        running_state: hooks::state_json(&opts.id, Status::Running, pid, &cfg.bundle, &annotations),
    })
}

fn save_pid(dir: &StateDir, state: &mut ContainerState, pid: i32) -> Result<()> {
    state.pid = pid;
    state.pid_start = sys::process_start_time(pid).unwrap_or(0);
    dir.save(state)
}

/// linux.netDevices as (host name, container name), checked.
fn net_devices(
    cfg: &BundleConfig,
    linux: &Linux,
    plan: &namespaces::Plan,
) -> Result<Vec<(String, String)>> {
    let Some(map) = linux.net_devices() else {
        return Ok(Vec::new());
    };
    let own_netns = plan.new_net
        || plan
            .parent_joins
            .iter()
            .chain(&plan.child_joins)
            .any(|(t, _)| *t == oci_spec::runtime::LinuxNamespaceType::Network)
        || plan
            .child_unshare
            .contains(nix::sched::CloneFlags::CLONE_NEWNET);
    if !map.is_empty() && !own_netns {
        return Err(cfg.invalid("linux.netDevices", "the container shares the runtime's network namespace: add {\"type\": \"network\"} to linux.namespaces"));
    }
    let valid = |n: &str| {
        !n.is_empty() && n.len() < 16 && !n.contains(['/', ' ', ':']) && n != "." && n != ".."
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for (host, dev) in map {
        let inside = dev.name().clone().unwrap_or_else(|| host.clone());
        if !valid(host) || !valid(&inside) {
            return Err(cfg.invalid(format!("linux.netDevices.{host}"), format!("{inside:?} is not a network device name (1 to 15 characters, no '/', ':' or spaces)")));
        }
        out.push((host.clone(), inside));
    }
    out.sort();
    Ok(out)
}

/// Moves the devices into the init's network namespace, once; the guard
/// knows them from then on.
fn move_devices(guard: &mut Guard, devices: &[(String, String)], pid: i32) -> Result<()> {
    if devices.is_empty() || !guard.net_devices.is_empty() {
        return Ok(());
    }
    crate::netdev::move_in(devices, pid)?;
    guard.net_devices = devices.to_vec();
    Ok(())
}

/// Why an init that said nothing died.
fn died_during_setup(
    status: Option<nix::sys::wait::WaitStatus>,
    cg: &hako_cgroups::Cgroup,
    linux: &Linux,
) -> String {
    use nix::sys::wait::WaitStatus;
    let how = match status {
        Some(WaitStatus::Exited(_, code)) => format!("exited with status {code}"),
        Some(WaitStatus::Signaled(_, sig, _)) => format!("was killed by {sig}"),
        _ => "went away".to_string(),
    };
    if cg.oom_kills() > 0 {
        let limit = linux
            .resources()
            .as_ref()
            .and_then(|r| r.memory().as_ref())
            .and_then(|m| m.limit());
        return format!(
            "the container's init {how} during set-up: the OOM killer ended it, so linux.resources.memory.limit ({}) is too low to start a process",
            limit.map_or("unset".to_string(), |l| l.to_string())
        );
    }
    format!("the container's init {how} during set-up without saying why")
}

/// The socket that receives a terminal's pty master: the caller's stream,
/// or a connection to `--console-socket`; at descriptor `min_fd` or above.
pub(crate) fn connect_console(
    stream: Option<&UnixStream>,
    socket: Option<&Path>,
    min_fd: RawFd,
) -> Result<Option<OwnedFd>> {
    let fd = match (stream, socket) {
        (Some(s), _) => OwnedFd::from(
            s.try_clone()
                .context(|| "duplicate the console stream".to_string())?,
        ),
        (None, Some(p)) => OwnedFd::from(
            UnixStream::connect(p)
                .context(|| format!("connect to the console socket {}", p.display()))?,
        ),
        (None, None) => return Ok(None),
    };
    Ok(Some(
        sys::move_above(fd, min_fd).context(|| "move the console socket".to_string())?,
    ))
}

/// Where the container's cgroup goes.
fn resolve_cgroup(cfg: &BundleConfig, linux: &Linux, id: &str) -> Result<hako_cgroups::Cgroup> {
    let h = hako_cgroups::Hierarchies::discover()?;
    let path = linux
        .cgroups_path()
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    hako_cgroups::Cgroup::resolve(&h, &path, id)
        .map_err(|e| cfg.invalid("linux.cgroupsPath", e.to_string()))
}

/// The resources to apply: the spec's, with the device rules every
/// container gets (the default nodes, ptys, and those of linux.devices)
/// after the spec's own.
fn resources(linux: &Linux) -> oci_spec::runtime::LinuxResources {
    let mut res = linux.resources().clone().unwrap_or_default();
    if res.devices().is_some() || !linux.devices().as_ref().is_none_or(Vec::is_empty) {
        res.set_devices(Some(device_rules(linux)));
    }
    res
}

fn device_rules(linux: &Linux) -> Vec<oci_spec::runtime::LinuxDeviceCgroup> {
    use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType as T};
    let rule = |typ: T, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(true);
        r.set_typ(Some(typ));
        r.set_major(major);
        r.set_minor(minor);
        r.set_access(Some(access.to_string()));
        r
    };
    let mut rules = linux
        .resources()
        .as_ref()
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    // null, zero, full, random, urandom, tty, console, ptmx and the ptys:
    // what the default /dev holds, as other runtimes allow.
    for (major, minor) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
    ] {
        rules.push(rule(T::C, Some(major), Some(minor), "rwm"));
    }
    rules.push(rule(T::C, Some(136), None, "rwm"));
    // Making nodes is allowed (with CAP_MKNOD); using them is what the
    // rules decide, as with other runtimes.
    rules.push(rule(T::C, None, None, "m"));
    rules.push(rule(T::B, None, None, "m"));
    for d in linux.devices().iter().flatten() {
        let typ = if d.typ() == T::U { T::C } else { d.typ() };
        rules.push(rule(typ, Some(d.major()), Some(d.minor()), "rwm"));
    }
    rules
}

fn time_offsets(linux: &Linux) -> String {
    let mut out = String::new();
    let mut clocks: Vec<_> = linux.time_offsets().iter().flatten().collect();
    clocks.sort_by(|a, b| a.0.cmp(b.0));
    for (clock, off) in clocks {
        out.push_str(&format!(
            "{clock} {} {}\n",
            off.secs().unwrap_or(0),
            off.nanosecs().unwrap_or(0)
        ));
    }
    out
}

fn format_map(maps: &Option<Vec<LinuxIdMapping>>) -> String {
    maps.iter()
        .flatten()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// Writes a user namespace's maps: directly as root, through the setuid
/// newuidmap/newgidmap helpers otherwise.
pub fn write_id_maps(pid: i32, linux: &Linux) -> Result<()> {
    let uid_map = format_map(linux.uid_mappings());
    let gid_map = format_map(linux.gid_mappings());
    let direct = |file: &str, map: &str| std::fs::write(format!("/proc/{pid}/{file}"), map);
    match direct("uid_map", &uid_map) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && !nix::unistd::geteuid().is_root() => {
            helper_map("newuidmap", pid, &uid_map)?;
            helper_map("newgidmap", pid, &gid_map)?;
            return Ok(());
        }
        Err(e) => {
            return Err(e).context(|| {
                format!("linux.uidMappings: write {uid_map:?} to /proc/{pid}/uid_map")
            });
        }
    }
    direct("gid_map", &gid_map)
        .context(|| format!("linux.gidMappings: write {gid_map:?} to /proc/{pid}/gid_map"))
}

fn helper_map(helper: &str, pid: i32, map: &str) -> Result<()> {
    let args: Vec<String> = std::iter::once(pid.to_string())
        .chain(map.split_whitespace().map(str::to_string))
        .collect();
    let out = std::process::Command::new(helper)
        .args(&args)
        .output()
        .context(|| {
            format!("run {helper} (install the uidmap package for rootless user namespaces)")
        })?;
    if !out.status.success() {
        return Err(Error::Init(format!(
            "{helper} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    std::fs::write(&tmp, pid.to_string())
        .context(|| format!("write pid file {}", tmp.display()))?;
    std::fs::rename(&tmp, path).context(|| format!("write pid file {}", path.display()))
}

/// Hands the seccomp listener to the agent at `listenerPath`, with the
/// container process state the spec defines.
pub fn send_seccomp_listener(
    spec: &oci_spec::runtime::Spec,
    bundle: &Path,
    id: &str,
    pid: i32,
    fd: OwnedFd,
    annotations: &HashMap<String, String>,
) -> Result<()> {
    let Some(sc) = spec.linux().as_ref().and_then(|l| l.seccomp().clone()) else {
        return Ok(());
    };
    let Some(path) = sc.listener_path() else {
        return Err(Error::Seccomp("linux.seccomp.listenerPath: SCMP_ACT_NOTIFY needs a listener path to send the notify descriptor to".into()));
    };
    let stream = UnixStream::connect(path)
        .context(|| format!("connect to the seccomp listener {}", path.display()))?;
    let msg = serde_json::json!({
        "ociVersion": crate::state::OCI_VERSION,
        "fds": ["seccompFd"],
        "pid": pid,
        "metadata": sc.listener_metadata().clone().unwrap_or_default(),
        "state": {
            "ociVersion": crate::state::OCI_VERSION, "id": id, "status": "creating", "pid": pid,
            "bundle": bundle, "annotations": annotations,
        },
    })
    .to_string();
    channel::send_with_fd(stream.as_raw_fd(), msg.as_bytes(), Some(fd.as_raw_fd()))
        .context(|| format!("send the seccomp descriptor to {}", path.display()))
}
