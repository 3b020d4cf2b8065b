//! The container verbs: `run`, `create`, `start`, `stop`, `kill`, `rm`,
//! `ps`, `logs`, `wait`, `inspect`, `exec`, … with Docker's flags, output
//! and exit codes (125 when hako fails, 126/127 when the command cannot be
//! run or found, else the container's own).

use crate::{Ctx, format};
use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use hako_engine::{
    Container, ContainerConfig, Engine, MountKind, MountSpec, RestartPolicy, Status, Ulimit,
};
use serde_json::{Value, json};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

/// An error with the exit code Docker gives it.
#[derive(Debug)]
pub struct ExitError {
    pub code: i32,
    pub message: String,
}

impl std::fmt::Display for ExitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExitError {}

pub(crate) fn engine(ctx: &Ctx) -> Result<Engine> {
    let mut e = engine_as_is(ctx)?;
    // The first command after a boot applies the restart policies.
    if let Some(report) = e
        .after_boot()
        .context("restart containers after the boot")?
    {
        for (name, err) in report.failed {
            eprintln!("hako: warning: container {name} was not restarted after the boot: {err:#}");
        }
    }
    Ok(e)
}

/// The engine, without the after-boot work (`system boot` reports it).
pub(crate) fn engine_as_is(ctx: &Ctx) -> Result<Engine> {
    let exe = std::env::current_exe().context("find the hako binary")?;
    let mut e = Engine::open(&ctx.root, &ctx.runroot, &exe).with_context(|| {
        format!(
            "open the container state at {} and {}",
            ctx.root.display(),
            ctx.runroot.display()
        )
    })?;
    let cfg = crate::config::Config::load()?;
    e.dns_upstream = cfg.network.dns_upstream;
    Ok(e)
}

#[derive(Args, Clone, Default)]
#[command(disable_help_flag = true)]
pub struct CreateArgs {
    /// Print help (-h is --hostname, as in Docker).
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Run in the background and print the container id.
    #[arg(short, long)]
    detach: bool,
    /// Keep stdin open.
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a terminal.
    #[arg(short, long)]
    tty: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to take it from here).
    #[arg(short, long = "env")]
    env: Vec<String>,
    #[arg(long = "env-file")]
    env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// USER[:GROUP], by name or number.
    #[arg(short, long)]
    user: Option<String>,
    #[arg(long)]
    entrypoint: Option<String>,
    /// Bind mount or volume: SRC:DEST[:ro|rw|z|Z].
    #[arg(short, long = "volume")]
    volume: Vec<String>,
    /// type=bind|tmpfs,source=…,target=…[,readonly]
    #[arg(long)]
    mount: Vec<String>,
    /// A tmpfs: DEST[:OPTIONS].
    #[arg(long)]
    tmpfs: Vec<String>,
    #[arg(long = "read-only")]
    read_only: bool,
    /// no, on-failure[:N], always or unless-stopped.
    #[arg(long, default_value = "no")]
    restart: String,
    #[command(flatten)]
    resources: ResourceArgs,
    /// NAME=SOFT[:HARD].
    #[arg(long)]
    ulimit: Vec<String>,
    #[arg(long = "cap-add")]
    cap_add: Vec<String>,
    #[arg(long = "cap-drop")]
    cap_drop: Vec<String>,
    #[arg(long)]
    privileged: bool,
    /// seccomp=unconfined|PROFILE, no-new-privileges, label=disable.
    #[arg(long = "security-opt")]
    security_opt: Vec<String>,
    #[arg(long = "group-add")]
    group_add: Vec<String>,
    #[arg(short = 'h', long)]
    hostname: Option<String>,
    /// HOST:IP.
    #[arg(long = "add-host")]
    add_host: Vec<String>,
    #[arg(long)]
    dns: Vec<String>,
    /// KEY=VALUE.
    #[arg(short, long)]
    label: Vec<String>,
    /// missing (default), always or never.
    #[arg(long, default_value = "missing")]
    pull: String,
    #[arg(long)]
    platform: Option<String>,
    #[arg(long = "stop-signal")]
    stop_signal: Option<String>,
    #[arg(long = "stop-timeout")]
    stop_timeout: Option<u32>,
    #[arg(long = "shm-size")]
    shm_size: Option<String>,
    #[arg(long)]
    sysctl: Vec<String>,
    /// bridge (the default), none, host, container:NAME|ID, or a network
    /// made with `hako network create` (repeat it to join several).
    #[arg(long, alias = "net")]
    network: Vec<String>,
    /// Another name for the container on its (first) user network.
    #[arg(long = "network-alias", alias = "net-alias")]
    network_alias: Vec<String>,
    /// The container's IPv4 address on its first network.
    #[arg(long)]
    ip: Option<std::net::Ipv4Addr>,
    /// The container's MAC address on its first network.
    #[arg(long = "mac-address")]
    mac_address: Option<String>,
    /// Publish a port: [IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp] (ranges:
    /// 8000-8009:80-89; no host port: a free one).
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// Publish every port the image exposes (and --expose) on free host ports.
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// A port to expose (published with -P): PORT[/tcp|udp].
    #[arg(long)]
    expose: Vec<String>,
    /// runc, crun, or the path of any OCI runtime binary.
    #[arg(long)]
    runtime: Option<String>,
    /// max-size=SIZE, max-file=N.
    #[arg(long = "log-opt")]
    log_opt: Vec<String>,
    /// Run from this root directory instead of an image.
    #[arg(long)]
    rootfs: bool,
    /// Pass the signals hako gets on to the container (without -t).
    #[arg(long = "sig-proxy", default_value_t = true, action = clap::ArgAction::Set)]
    sig_proxy: bool,
    /// Keys that detach from the container, leaving it running.
    #[arg(long = "detach-keys", default_value = "ctrl-p,ctrl-q")]
    detach_keys: String,
    /// Run an init as the container's first process (reaps zombies,
    /// passes signals on).
    #[arg(long)]
    init: bool,
    /// A host device in the container: HOST[:CONTAINER[:PERMISSIONS]].
    #[arg(long)]
    device: Vec<String>,
    /// The image (or, with --rootfs, the directory).
    image: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// `64m`, `1g`, `512k`, `100` (bytes).
pub fn parse_bytes(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow!("invalid size {s:?}: write a number with k, m or g"))?;
    // A user's decimal size in bytes.
    #[allow(clippy::cast_possible_truncation)]
    Ok((n * mult as f64) as i64)
}

fn runtime_path(name: &str) -> Result<PathBuf> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("runtime {name:?} not found in PATH; give its full path")
}

fn parse_mount_flag(s: &str) -> Result<MountSpec> {
    let mut m = MountSpec::default();
    let mut kind = "volume";
    for part in s.split(',') {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        match k {
            "type" => kind = if v.is_empty() { "volume" } else { v },
            "source" | "src" => m.source = v.to_string(),
            "target" | "destination" | "dst" => m.target = v.to_string(),
            "readonly" | "ro" => m.readonly = v.is_empty() || v == "true" || v == "1",
            "volume-nocopy" if v.is_empty() || v == "true" || v == "1" => {
                m.options.push("nocopy".into());
            }
            "volume-nocopy" => {}
            "tmpfs-size" => m.options.push(format!("size={}", parse_bytes(v)?)),
            "tmpfs-mode" => m.options.push(format!("mode={v}")),
            "bind-propagation" | "consistency" => {}
            _ => bail!("--mount {s:?}: unknown option {k:?}"),
        }
    }
    m.kind = match kind {
        "bind" => MountKind::Bind,
        "tmpfs" => MountKind::Tmpfs,
        // No source: an anonymous volume.
        "volume" => MountKind::Volume,
        other => bail!("--mount {s:?}: unknown type {other:?}"),
    };
    if m.target.is_empty() {
        bail!("--mount {s:?}: target= is required");
    }
    if m.kind == MountKind::Bind && m.source.is_empty() {
        bail!("--mount {s:?}: source= is required for a bind mount");
    }
    if m.kind != MountKind::Volume && m.options.iter().any(|o| o == "nocopy") {
        bail!("--mount {s:?}: volume-nocopy is for type=volume");
    }
    Ok(m)
}

/// `-v`: `/host:/dest[:opts]` binds, `name:/dest[:opts]` a named volume
/// (made on first use), `/dest[:opts]` an anonymous volume.
fn parse_volume(s: &str) -> Result<MountSpec> {
    const MODES: &[&str] = &[
        "ro", "rw", "z", "Z", "nocopy", "private", "rprivate", "shared", "rshared", "slave",
        "rslave",
    ];
    let parts: Vec<&str> = s.split(':').collect();
    let (source, target, opts) = match parts.as_slice() {
        [t] => ("", *t, ""),
        // `/dest:ro` is an anonymous volume with options, as Docker reads it.
        [t, o] if o.split(',').all(|o| MODES.contains(&o)) => ("", *t, *o),
        [s, t] => (*s, *t, ""),
        [s, t, o] => (*s, *t, *o),
        _ => bail!("-v {s:?}: write SOURCE:DEST[:OPTIONS]"),
    };
    if !target.starts_with('/') {
        bail!("-v {s}: the destination {target:?} must be an absolute path");
    }
    // A volume name starts with a letter or digit: `./dir` is a bind of a
    // relative host path (Docker's CLI makes it absolute too).
    let source = if source.starts_with('.') {
        std::env::current_dir()
            .context("find the current directory")?
            .join(source)
            .to_string_lossy()
            .into_owned()
    } else {
        source.to_string()
    };
    let kind = if source.starts_with('/') {
        MountKind::Bind
    } else {
        MountKind::Volume
    };
    let mut m = MountSpec {
        kind,
        source: source.clone(),
        target: target.to_string(),
        ..Default::default()
    };
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => m.readonly = true,
            "nocopy" if kind == MountKind::Volume => m.options.push("nocopy".into()),
            "rw" | "z" | "Z" | "private" | "rprivate" | "shared" | "rshared" | "slave"
            | "rslave" => {}
            _ => bail!("-v {s}: unknown option {o:?}"),
        }
    }
    if kind == MountKind::Bind && !std::path::Path::new(&source).exists() {
        // Docker makes a missing bind source as a directory.
        std::fs::create_dir_all(&source).with_context(|| format!("create {source}"))?;
    }
    Ok(m)
}

/// `no`, `on-failure[:N]`, `always`, `unless-stopped`.
fn parse_restart(s: &str) -> Result<(RestartPolicy, u32)> {
    let (policy, max) = match s.split_once(':') {
        Some(("on-failure", n)) => (
            "on-failure",
            n.parse::<u32>()
                .map_err(|_| anyhow!("--restart on-failure:{n}: the count must be a number"))?,
        ),
        Some((p, _)) => bail!("--restart {p}: only on-failure takes a count"),
        None => (s, 0),
    };
    let policy = match policy {
        "no" | "" => RestartPolicy::No,
        "on-failure" => RestartPolicy::OnFailure,
        "always" => RestartPolicy::Always,
        "unless-stopped" => RestartPolicy::UnlessStopped,
        other => bail!("--restart {other}: use no, on-failure[:N], always or unless-stopped"),
    };
    Ok((policy, max))
}

fn read_env_file(p: &PathBuf) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(expand_env)
        .collect())
}

/// `KEY` alone takes the value from this process's environment.
fn expand_env(e: &str) -> String {
    if e.contains('=') {
        e.to_string()
    } else {
        format!("{e}={}", std::env::var(e).unwrap_or_default())
    }
}

fn build_config(a: &CreateArgs) -> Result<ContainerConfig> {
    let mut c = ContainerConfig {
        cmd: a.command.clone(),
        tty: a.tty,
        interactive: a.interactive,
        auto_remove: a.rm,
        hostname: a.hostname.clone(),
        publish_all: a.publish_all,
        stop_signal: a.stop_signal.clone(),
        stop_timeout: a.stop_timeout,
        read_only: a.read_only,
        privileged: a.privileged,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        group_add: a.group_add.clone(),
        add_hosts: a.add_host.clone(),
        dns: a.dns.clone(),
        workdir: a.workdir.clone().unwrap_or_default(),
        user: a.user.clone().unwrap_or_default(),
        ..Default::default()
    };
    if let Some(s) = &a.stop_signal {
        hako_engine::parse_signal(s)?;
    }
    for f in &a.env_file {
        c.env.extend(read_env_file(f)?);
    }
    c.env.extend(a.env.iter().map(|e| expand_env(e)));
    if let Some(ep) = &a.entrypoint {
        c.entrypoint_given = true;
        if !ep.is_empty() {
            c.entrypoint = vec![ep.clone()];
        }
    }
    for l in &a.label {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        c.labels.insert(k.to_string(), v.to_string());
    }
    for v in &a.volume {
        c.mounts.push(parse_volume(v)?);
    }
    for m in &a.mount {
        c.mounts.push(parse_mount_flag(m)?);
    }
    for t in &a.tmpfs {
        let (target, opts) = t.split_once(':').unwrap_or((t, ""));
        c.mounts.push(MountSpec {
            kind: MountKind::Tmpfs,
            target: target.to_string(),
            options: opts
                .split(',')
                .filter(|o| !o.is_empty())
                .map(String::from)
                .collect(),
            ..Default::default()
        });
    }
    (c.restart, c.max_restarts) = parse_restart(&a.restart)?;
    if a.rm && c.restart != RestartPolicy::No {
        bail!("--restart and --rm conflict: a removed container cannot restart");
    }
    c.resources = a.resources.resources()?;
    c.shm_size = a
        .shm_size
        .as_deref()
        .map(parse_bytes)
        .transpose()?
        .map(|b| u64::try_from(b).unwrap_or(0));
    for u in &a.ulimit {
        let (name, vals) = u
            .split_once('=')
            .ok_or_else(|| anyhow!("--ulimit {u}: write NAME=SOFT[:HARD]"))?;
        let (soft, hard) = vals.split_once(':').unwrap_or((vals, vals));
        let num = |v: &str| -> Result<u64> {
            if v == "-1" || v == "unlimited" {
                return Ok(u64::MAX);
            }
            v.parse()
                .map_err(|_| anyhow!("--ulimit {u}: {v} is not a number"))
        };
        c.ulimits.push(Ulimit {
            name: name.to_string(),
            soft: num(soft)?,
            hard: num(hard)?,
        });
    }
    for s in &a.sysctl {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| anyhow!("--sysctl {s}: write KEY=VALUE"))?;
        c.sysctls.insert(k.to_string(), v.to_string());
    }
    for o in &a.security_opt {
        let (k, v) = o.split_once(['=', ':']).unwrap_or((o, ""));
        match k {
            "no-new-privileges" => c.no_new_privileges = v.is_empty() || v == "true",
            "label" => {}
            "seccomp" if v == "unconfined" => c.seccomp = hako_engine::SeccompChoice::Unconfined,
            "seccomp" => {
                let text = std::fs::read_to_string(v)
                    .with_context(|| format!("--security-opt seccomp={v}: read the profile"))?;
                c.seccomp = hako_engine::SeccompChoice::Profile(
                    serde_json::from_str(&text)
                        .with_context(|| format!("--security-opt seccomp={v}: not JSON"))?,
                );
            }
            "apparmor" => {}
            _ => bail!("--security-opt {o}: use seccomp=…, no-new-privileges or label=…"),
        }
    }
    for o in &a.log_opt {
        match o.split_once('=') {
            Some(("max-size", v)) => {
                c.log_max_size = u64::try_from(parse_bytes(v)?).unwrap_or(0);
            }
            Some(("max-file", v)) => {
                let n: u32 = v
                    .parse()
                    .map_err(|_| anyhow!("--log-opt max-file={v}: not a number"))?;
                c.log_max_files = n.saturating_sub(1);
            }
            _ => bail!("--log-opt {o}: use max-size=SIZE or max-file=N"),
        }
    }
    c.init = a.init;
    for d in &a.device {
        let parts: Vec<&str> = d.split(':').collect();
        let (host, container, perms) = match parts.as_slice() {
            [h] => (*h, *h, "rwm"),
            [h, c] if c.chars().all(|x| "rwm".contains(x)) && !c.starts_with('/') => (*h, *h, *c),
            [h, c] => (*h, *c, "rwm"),
            [h, c, p] => (*h, *c, *p),
            _ => bail!("--device {d}: write HOST[:CONTAINER[:PERMISSIONS]]"),
        };
        if !perms.chars().all(|x| "rwm".contains(x)) {
            bail!("--device {d}: permissions are letters of rwm");
        }
        c.devices.push(hako_engine::DeviceSpec {
            host: host.to_string(),
            container: container.to_string(),
            permissions: perms.to_string(),
        });
    }
    if let Some(r) = &a.runtime {
        c.runtime = Some(runtime_path(r)?);
    }
    if a.rootfs {
        let p = std::fs::canonicalize(&a.image)
            .with_context(|| format!("--rootfs {}: no such directory", a.image))?;
        c.rootfs = Some(p);
    }
    network_config(a, &mut c)?;
    Ok(c)
}

/// `--network` and its companions, `-p`, `-P` and `--expose`.
fn network_config(a: &CreateArgs, c: &mut ContainerConfig) -> Result<()> {
    let special = |n: &str| matches!(n, "none" | "host") || n.starts_with("container:");
    match a.network.as_slice() {
        [] => {}
        [one] if special(one) => c.network = one.clone(),
        many => {
            if let Some(s) = many.iter().find(|n| special(n)) {
                bail!("--network {s} cannot be combined with other networks");
            }
            for (i, name) in many.iter().enumerate() {
                let first = i == 0;
                c.networks.push(hako_engine::networks::NetworkRequest {
                    name: name.clone(),
                    aliases: if first {
                        a.network_alias.clone()
                    } else {
                        Vec::new()
                    },
                    ip: a.ip.filter(|_| first),
                    mac: a.mac_address.clone().filter(|_| first),
                });
            }
        }
    }
    if c.networks.is_empty()
        && (!a.network_alias.is_empty() || a.ip.is_some() || a.mac_address.is_some())
    {
        if special(&c.network) {
            bail!(
                "--network-alias, --ip and --mac-address need a network of the container's own, not {}",
                c.network
            );
        }
        c.networks.push(hako_engine::networks::NetworkRequest {
            name: hako_engine::networks::DEFAULT_NETWORK.into(),
            aliases: a.network_alias.clone(),
            ip: a.ip,
            mac: a.mac_address.clone(),
        });
    }
    for p in &a.publish {
        c.ports
            .push(hako_net::PortMapping::parse(p).map_err(|e| anyhow!("--publish: {e}"))?);
    }
    if a.publish_all {
        for e in &a.expose {
            let p = hako_net::PortMapping::parse(e).map_err(|e| anyhow!("--expose: {e}"))?;
            if p.host_port != 0 || p.host_ip.is_some() {
                bail!("--expose {e}: give a container port only, e.g. 80/tcp");
            }
            c.ports.push(p);
        }
    }
    Ok(())
}

/// Resolves the image, pulling it as `--pull` says.
fn image_for(ctx: &Ctx, e: &Engine, a: &CreateArgs) -> Result<Option<hako_image::store::Image>> {
    if a.rootfs {
        return Ok(None);
    }
    let store = e
        .store()
        .with_context(|| format!("open the image store at {}", ctx.root.display()))?;
    let local = store.resolve(&a.image);
    match (a.pull.as_str(), local) {
        ("never", Ok(img)) | ("missing", Ok(img)) => return Ok(Some(img)),
        ("never", Err(e)) => return Err(e.into()),
        ("missing", Err(_)) => {
            eprintln!("Unable to find image '{}' locally", a.image);
        }
        ("always", _) => {}
        (p, _) => bail!("--pull {p}: use always, missing or never"),
    }
    crate::images::pull_quiet(ctx, &a.image, a.platform.as_deref())?;
    Ok(Some(store.resolve(&a.image)?))
}

fn foreground(a: &CreateArgs) -> Result<Foreground> {
    Ok(Foreground {
        stdin: a.interactive,
        tty: a.tty,
        sig_proxy: a.sig_proxy,
        detach_keys: parse_detach_keys(&a.detach_keys)?,
    })
}

fn create_container(ctx: &Ctx, a: &CreateArgs, start: bool) -> Result<(Engine, Container)> {
    let cfg = build_config(a)?;
    let mut e = engine(ctx)?;
    e.start_soon = start;
    hako_runtime::trace::mark("run: engine open");
    let img = image_for(ctx, &e, a)?;
    hako_runtime::trace::mark("run: image resolved");
    let c = e.create(&a.image, img.as_ref(), cfg, a.name.as_deref())?;
    Ok((e, c))
}

pub fn create(ctx: &Ctx, a: CreateArgs) -> Result<i32> {
    let (_, c) = create_container(ctx, &a, false)?;
    println!("{}", c.id);
    Ok(0)
}

fn start_error(e: hako_engine::Error) -> anyhow::Error {
    match e {
        hako_engine::Error::Start { message, code } => {
            anyhow::Error::new(ExitError { code, message })
        }
        e => e.into(),
    }
}

pub fn run(ctx: &Ctx, a: CreateArgs) -> Result<i32> {
    let (mut e, c) = create_container(ctx, &a, true)?;
    if a.detach {
        e.start(&c.id, false, false).map_err(start_error)?;
        println!("{}", c.id);
        return Ok(0);
    }
    // This command releases the container when it has the exit code, so
    // `run --rm` returns once the container is gone, as Docker's does.
    let (c, attached) = e
        .start_with(&c.id, true, a.interactive, true)
        .map_err(start_error)?;
    let attached = attached.ok_or_else(|| anyhow!("no stream from the monitor"))?;
    // Once the exit is known, the root filesystem goes while the monitor
    // still releases the runtime state (the stream ends after that).
    let code = match stream(attached, &foreground(&a)?, &mut || e.program_ended(&c))? {
        Ended::Exit(code) => code,
        Ended::Detached => 0,
    };
    hako_runtime::trace::mark("run: exit code received");
    e.finish(&c)?;
    hako_runtime::trace::mark("run: released");
    Ok(code)
}

/// How a foreground client behaves: Docker's `--sig-proxy` and
/// `--detach-keys`.
#[derive(Clone)]
pub struct Foreground {
    pub stdin: bool,
    pub tty: bool,
    pub sig_proxy: bool,
    pub detach_keys: Vec<u8>,
}

/// `ctrl-p,ctrl-q` → the bytes those keys send.
pub fn parse_detach_keys(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for key in s.split(',').filter(|k| !k.is_empty()) {
        let byte = match key.strip_prefix("ctrl-") {
            Some(c) if c.len() == 1 => {
                let ch = c.as_bytes()[0].to_ascii_uppercase();
                match ch {
                    b'@'..=b'_' => ch - b'@',
                    _ => bail!("--detach-keys {s}: ctrl-{c} is not a control key"),
                }
            }
            Some(_) => bail!("--detach-keys {s}: write keys as ctrl-X or single characters"),
            None if key.len() == 1 => key.as_bytes()[0],
            None => bail!("--detach-keys {s}: {key:?} is not a key"),
        };
        out.push(byte);
    }
    Ok(out)
}

/// What ended an attach.
enum Ended {
    Exit(i32),
    Detached,
}

static DETACHED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Copies the container's output here (and our stdin there) until it
/// exits or the user detaches; the exit code (0 on a detach).
fn stream_output(attached: hako_engine::Attached, fg: &Foreground) -> Result<i32> {
    match stream(attached, fg, &mut || {})? {
        Ended::Exit(code) => Ok(code),
        Ended::Detached => Ok(0),
    }
}

/// [`stream_output`]; `on_exit` runs when the exit code comes (the stream
/// goes on until the monitor ends it).
fn stream(
    attached: hako_engine::Attached,
    fg: &Foreground,
    on_exit: &mut dyn FnMut(),
) -> Result<Ended> {
    let hako_engine::Attached {
        mut stream,
        run_dir,
    } = attached;
    let on_terminal = std::io::stdin().is_terminal();
    // Signals: SIGWINCH resizes the container's terminal; without a
    // terminal the others go to the container (`--sig-proxy`). Blocked
    // here before any thread starts, taken by one thread with sigwait.
    let mut set = nix::sys::signal::SigSet::empty();
    if fg.tty && on_terminal {
        set.add(nix::sys::signal::Signal::SIGWINCH);
    }
    if fg.sig_proxy && !fg.tty {
        use nix::sys::signal::Signal::*;
        for s in [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2] {
            set.add(s);
        }
    }
    if set.iter().next().is_some() {
        set.thread_block().context("block signals")?;
        let dir = run_dir.clone();
        std::thread::spawn(move || {
            while let Ok(sig) = set.wait() {
                let req = if sig == nix::sys::signal::Signal::SIGWINCH {
                    hako_engine::Request {
                        resize: hako_engine::terminal_size(std::os::fd::AsFd::as_fd(
                            &std::io::stdin(),
                        )),
                        ..Default::default()
                    }
                } else {
                    hako_engine::Request {
                        signal: Some(sig as i32),
                        ..Default::default()
                    }
                };
                let _ = hako_monitor::request(&dir, &req);
            }
        });
    }
    let raw = if fg.tty && on_terminal {
        Some(RawTerminal::enable()?)
    } else {
        None
    };
    if fg.stdin {
        let mut w = stream
            .get_ref()
            .try_clone()
            .context("clone the attach socket")?;
        let keys = fg.detach_keys.clone();
        std::thread::spawn(move || {
            let _ = copy_stdin(&mut w, &keys);
            let _ = w.shutdown(std::net::Shutdown::Write);
        });
    }
    let mut buf = Vec::new();
    let mut code = None;
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    loop {
        match hako_monitor::read_frame(&mut stream, &mut buf) {
            Ok(Some(hako_monitor::STDOUT)) => {
                let mut o = stdout.lock();
                o.write_all(&buf)?;
                o.flush()?;
            }
            Ok(Some(hako_monitor::STDERR)) => {
                let mut o = stderr.lock();
                o.write_all(&buf)?;
            }
            Ok(Some(hako_monitor::EXIT)) if buf.len() == 4 => {
                code = Some(i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
                on_exit();
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) if DETACHED.load(std::sync::atomic::Ordering::SeqCst) => break,
            Err(e) => return Err(e).context("read from the container"),
        }
    }
    drop(raw);
    if DETACHED.load(std::sync::atomic::Ordering::SeqCst) && code.is_none() {
        return Ok(Ended::Detached);
    }
    code.map(Ended::Exit)
        .ok_or_else(|| anyhow!("the container's monitor ended without an exit status"))
}

/// Our stdin to the container, watching for the detach keys: when they
/// come, the attach ends and the container runs on.
fn copy_stdin(w: &mut std::os::unix::net::UnixStream, keys: &[u8]) -> std::io::Result<()> {
    let mut input = std::io::stdin().lock();
    let mut buf = [0u8; 4096];
    let mut matched = 0usize;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let mut out = Vec::with_capacity(n + matched);
        for &b in &buf[..n] {
            if !keys.is_empty() && b == keys[matched] {
                matched += 1;
                if matched == keys.len() {
                    w.write_all(&out)?;
                    DETACHED.store(true, std::sync::atomic::Ordering::SeqCst);
                    let _ = w.shutdown(std::net::Shutdown::Both);
                    return Ok(());
                }
                continue;
            }
            // Not the sequence after all: what was held back goes too.
            out.extend_from_slice(&keys[..matched]);
            matched = 0;
            if !keys.is_empty() && b == keys[0] {
                matched = 1;
                continue;
            }
            out.push(b);
        }
        w.write_all(&out)?;
    }
}

/// The terminal in raw mode for the length of an attach.
struct RawTerminal {
    saved: nix::sys::termios::Termios,
}

impl RawTerminal {
    fn enable() -> Result<RawTerminal> {
        use nix::sys::termios;
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).context("read the terminal's mode")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw).context("set raw mode")?;
        Ok(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}

#[derive(Args)]
pub struct StartArgs {
    /// Attach to the output and wait for the exit.
    #[arg(short, long)]
    attach: bool,
    #[arg(short, long)]
    interactive: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn start(ctx: &Ctx, a: StartArgs) -> Result<i32> {
    let mut e = engine(ctx)?;
    if a.attach {
        if a.containers.len() != 1 {
            bail!("you cannot start and attach multiple containers at once");
        }
        let (c, att) = e
            .start(&a.containers[0], true, a.interactive)
            .map_err(start_error)?;
        let att = att.ok_or_else(|| anyhow!("no stream from the monitor"))?;
        return stream_output(
            att,
            &Foreground {
                stdin: a.interactive,
                tty: c.config.tty,
                sig_proxy: true,
                detach_keys: parse_detach_keys("ctrl-p,ctrl-q")?,
            },
        );
    }
    let mut failed = false;
    for name in &a.containers {
        match e.start(name, false, false) {
            Ok(_) => println!("{name}"),
            Err(err) => {
                eprintln!("Error: {err}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

#[derive(Args)]
pub struct StopArgs {
    /// Seconds to wait before killing.
    #[arg(short, long)]
    time: Option<u32>,
    #[arg(required = true)]
    containers: Vec<String>,
}

fn each(names: &[String], mut f: impl FnMut(&str) -> Result<()>) -> Result<i32> {
    let mut failed = false;
    for n in names {
        match f(n) {
            Ok(()) => println!("{n}"),
            Err(e) => {
                eprintln!("Error: {}", crate::error_text(&e));
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

pub fn stop(ctx: &Ctx, a: StopArgs) -> Result<i32> {
    let mut e = engine(ctx)?;
    each(&a.containers, |n| {
        e.stop(n, a.time)?;
        Ok(())
    })
}

pub fn restart(ctx: &Ctx, a: StopArgs) -> Result<i32> {
    let mut e = engine(ctx)?;
    each(&a.containers, |n| {
        e.stop(n, a.time)?;
        e.start(n, false, false).map_err(start_error)?;
        Ok(())
    })
}

#[derive(Args)]
pub struct KillArgs {
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn kill(ctx: &Ctx, a: KillArgs) -> Result<i32> {
    let sig = hako_engine::parse_signal(&a.signal)?;
    let mut e = engine(ctx)?;
    each(&a.containers, |n| {
        e.kill(n, sig)?;
        Ok(())
    })
}

#[derive(Args)]
pub struct RmArgs {
    /// Kill a running container first.
    #[arg(short, long)]
    force: bool,
    /// Remove its anonymous volumes too.
    #[arg(short, long)]
    volumes: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn rm(ctx: &Ctx, a: RmArgs) -> Result<i32> {
    let mut e = engine(ctx)?;
    remove_each(&a.containers, a.force, |n| {
        e.remove_with_volumes(n, a.force, a.volumes).map(drop)
    })
}

/// Removes each of `names` with `remove`, printing each name removed, as
/// Docker does; with `force`, one that is not there is no error. Exit code
/// 1 when any failed.
pub(crate) fn remove_each(
    names: &[String],
    force: bool,
    mut remove: impl FnMut(&str) -> hako_engine::Result<()>,
) -> Result<i32> {
    let mut failed = false;
    for n in names {
        match remove(n) {
            Ok(()) => println!("{n}"),
            Err(hako_engine::Error::NotFound(_)) if force => {}
            Err(err) => {
                eprintln!("Error: {err}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// `inspect` of each of `names` through `get`: the found ones printed
/// (with `format`), an error line for each other; exit code 1 if any.
pub(crate) fn inspect_each(
    names: &[String],
    format: Option<&str>,
    mut get: impl FnMut(&str) -> hako_engine::Result<Value>,
) -> Result<i32> {
    let mut out = Vec::new();
    let mut code = 0;
    for n in names {
        match get(n) {
            Ok(v) => out.push(v),
            Err(err) => {
                eprintln!("Error: {err}");
                code = 1;
            }
        }
    }
    if !out.is_empty() || format.is_none() {
        print_inspect(&out, format)?;
    }
    Ok(code)
}

#[derive(Args)]
pub struct PruneArgs {
    #[arg(short, long)]
    force: bool,
}

pub fn prune(ctx: &Ctx, _a: PruneArgs) -> Result<i32> {
    let mut e = engine(ctx)?;
    let mut removed = Vec::new();
    for c in e.list()? {
        if matches!(c.status, Status::Exited | Status::Created) && e.remove(&c.id, false).is_ok() {
            removed.push(c.id);
        }
    }
    // What removers killed in the background left.
    e.sweep_trash();
    if !removed.is_empty() {
        println!("Deleted Containers:");
        for id in &removed {
            println!("{id}");
        }
        println!();
    }
    println!("Total reclaimed space: 0B");
    Ok(0)
}

#[derive(Args)]
pub struct CleanupArgs {
    /// Run by the container's monitor as it ends.
    #[arg(long = "from-monitor")]
    from_monitor: bool,
    id: String,
}

pub fn cleanup(ctx: &Ctx, a: CleanupArgs) -> Result<i32> {
    let mut e = engine(ctx)?;
    let monitor = if a.from_monitor {
        // The monitor execs this in its own place: this pid is its pid.
        Some(i32::try_from(std::process::id()).unwrap_or(0))
    } else {
        None
    };
    e.cleanup(&a.id, monitor)?;
    Ok(0)
}

#[derive(Args)]
pub struct PsArgs {
    /// Show all containers (running only by default).
    #[arg(short, long)]
    all: bool,
    /// Only ids.
    #[arg(short, long)]
    quiet: bool,
    /// The last N created.
    #[arg(short = 'n', long = "last")]
    last: Option<usize>,
    /// The latest created.
    #[arg(short = 'l', long)]
    latest: bool,
    /// name=…, id=…, status=…, label=KEY[=VALUE], ancestor=…, exited=…, network=…
    #[arg(short, long)]
    filter: Vec<String>,
    #[arg(long)]
    format: Option<String>,
    #[arg(long = "no-trunc")]
    no_trunc: bool,
}

fn status_text(c: &Container) -> String {
    let since = |t: &str| {
        hako_image::store::parse_rfc3339(t)
            .map(|s| format::human_duration(format::now_secs() - s))
            .unwrap_or_default()
    };
    match c.status {
        Status::Created => "Created".into(),
        Status::Running => format!("Up {}", since(&c.started_at)),
        Status::Paused => format!("Up {} (Paused)", since(&c.started_at)),
        Status::Exited => format!("Exited ({}) {} ago", c.exit_code, since(&c.finished_at)),
        Status::Removing => "Removal In Progress".into(),
    }
}

/// A container's published ports as `ps` shows them.
fn ports_text(e: &Engine, c: &Container) -> String {
    e.published_ports(&c.id)
        .unwrap_or_default()
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn ps_row(c: &Container, no_trunc: bool, ports: String) -> Value {
    let mut command = c.command().join(" ");
    if !no_trunc && command.chars().count() > 20 {
        command = format!("{}…", command.chars().take(19).collect::<String>());
    }
    let created = hako_image::store::parse_rfc3339(&c.created)
        .map(|s| format!("{} ago", format::human_duration(format::now_secs() - s)))
        .unwrap_or_default();
    let labels = c
        .config
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    json!({
        "ID": if no_trunc { c.id.clone() } else { c.short_id().to_string() },
        "Image": c.image,
        "Command": format!("\"{command}\""),
        "CreatedAt": c.created,
        "RunningFor": created,
        "Status": status_text(c),
        "State": c.status.as_str(),
        "Ports": ports,
        "Names": c.name,
        "Labels": labels,
        "Mounts": c.config.mounts.iter().map(|m| m.target.clone()).collect::<Vec<_>>().join(","),
        "Networks": if c.config.networks.is_empty() {
            c.config.network.clone()
        } else {
            c.config.networks.iter().map(|n| n.name.clone()).collect::<Vec<_>>().join(",")
        },
        "Size": "",
    })
}

fn matches_filter(c: &Container, f: &str) -> Result<bool> {
    let (k, v) = f
        .split_once('=')
        .ok_or_else(|| anyhow!("--filter {f}: write KEY=VALUE"))?;
    Ok(match k {
        "name" => c.name.contains(v),
        "id" => c.id.starts_with(v),
        "status" => c.status.as_str() == v,
        "ancestor" => c.image == v || c.image_id.contains(v),
        "exited" => c.status == Status::Exited && v.parse::<i32>().ok() == Some(c.exit_code),
        "label" => match v.split_once('=') {
            Some((lk, lv)) => c.config.labels.get(lk).is_some_and(|x| x == lv),
            None => c.config.labels.contains_key(v),
        },
        "network" => c.config.network == v || c.config.networks.iter().any(|n| n.name == v),
        _ => bail!("--filter {k}: use name, id, status, ancestor, exited, label or network"),
    })
}

pub fn ps(ctx: &Ctx, a: PsArgs) -> Result<i32> {
    let mut e = engine(ctx)?;
    let mut list = e.list()?;
    let limit = if a.latest { Some(1) } else { a.last };
    let all = a.all || limit.is_some() || a.filter.iter().any(|f| f.starts_with("status="));
    if !all {
        list.retain(|c| matches!(c.status, Status::Running | Status::Paused));
    }
    for f in &a.filter {
        let mut keep = Vec::new();
        for c in list {
            if matches_filter(&c, f)? {
                keep.push(c);
            }
        }
        list = keep;
    }
    if let Some(n) = limit {
        list.truncate(n);
    }
    if a.quiet {
        for c in &list {
            println!("{}", if a.no_trunc { &c.id } else { c.short_id() });
        }
        return Ok(0);
    }
    let rows: Vec<Value> = list
        .iter()
        .map(|c| ps_row(c, a.no_trunc, ports_text(&e, c)))
        .collect();
    let default = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";
    format::print_rows(&rows, a.format.as_deref(), default, &|f| match f {
        "ID" => "CONTAINER ID".into(),
        "RunningFor" => "CREATED".into(),
        "Names" => "NAMES".into(),
        "CreatedAt" => "CREATED AT".into(),
        other => other.to_ascii_uppercase(),
    })?;
    Ok(0)
}

#[derive(Args)]
pub struct LogsArgs {
    /// Follow the output until the container exits.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines ("all" for every line).
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show timestamps.
    #[arg(short, long)]
    timestamps: bool,
    /// Only lines since this time (RFC 3339, or seconds since the epoch, or 10m).
    #[arg(long)]
    since: Option<String>,
    #[arg(long)]
    until: Option<String>,
    container: String,
}

fn parse_time(s: &str) -> Result<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let unit = |suffix: char, secs: i64| -> Option<i64> {
        s.strip_suffix(suffix)
            .and_then(|n| n.parse::<i64>().ok())
            .map(|n| format::now_secs() - n * secs)
    };
    if let Some(t) = unit('s', 1)
        .or_else(|| unit('m', 60))
        .or_else(|| unit('h', 3600))
    {
        return Ok(t);
    }
    hako_image::store::parse_rfc3339(s)
        .ok_or_else(|| anyhow!("{s:?} is not a time: give RFC 3339, seconds, or 10m / 2h"))
}

pub fn logs(ctx: &Ctx, a: LogsArgs) -> Result<i32> {
    let mut e = engine(ctx)?;
    let c = e.get(&a.container)?;
    let path = e.log_path(&c.id);
    let since = a.since.as_deref().map(parse_time).transpose()?;
    let until = a.until.as_deref().map(parse_time).transpose()?;
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err).with_context(|| format!("open {}", path.display())),
    };
    let mut text = String::new();
    file.read_to_string(&mut text)
        .with_context(|| format!("read {}", path.display()))?;
    let mut lines: Vec<&str> = text.lines().collect();
    if a.tail != "all" {
        let n: usize = a
            .tail
            .parse()
            .map_err(|_| anyhow!("--tail {}: give a number or \"all\"", a.tail))?;
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let print = |line: &str| -> Result<()> {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return Ok(());
        };
        let time = v["time"].as_str().unwrap_or("");
        let t = hako_image::store::parse_rfc3339(time).unwrap_or(0);
        if since.is_some_and(|s| t < s) || until.is_some_and(|u| t > u) {
            return Ok(());
        }
        let msg = v["log"].as_str().unwrap_or("");
        let out = if a.timestamps {
            format!("{time} {msg}")
        } else {
            msg.to_string()
        };
        if v["stream"] == "stderr" {
            let mut o = std::io::stderr().lock();
            o.write_all(out.as_bytes())?;
        } else {
            let mut o = std::io::stdout().lock();
            o.write_all(out.as_bytes())?;
            o.flush()?;
        }
        Ok(())
    };
    for l in &lines {
        print(l)?;
    }
    if !a.follow {
        return Ok(0);
    }
    // Follow: read what is appended until the container is not running.
    let mut offset = text.len() as u64;
    let mut pending = String::new();
    loop {
        let running = matches!(
            e.get(&c.id).map(|c| c.status),
            Ok(Status::Running | Status::Paused)
        );
        use std::io::{Seek, SeekFrom};
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(_) => break,
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < offset {
            offset = 0; // rotated
        }
        f.seek(SeekFrom::Start(offset))?;
        let mut more = String::new();
        f.read_to_string(&mut more)?;
        offset += more.len() as u64;
        pending.push_str(&more);
        while let Some(n) = pending.find('\n') {
            let line: String = pending.drain(..=n).collect();
            print(line.trim_end())?;
        }
        if !running {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(0)
}

#[derive(Args)]
pub struct WaitArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn wait(ctx: &Ctx, a: WaitArgs) -> Result<i32> {
    let mut e = engine(ctx)?;
    for n in &a.containers {
        let code = e.wait(n)?;
        println!("{code}");
    }
    Ok(0)
}

pub fn inspect_json(e: &Engine, c: &Container) -> Value {
    let spec = e.spec_of(c).ok();
    let running = matches!(c.status, Status::Running | Status::Paused);
    let cmd = c.command();
    json!({
        "Id": c.id,
        "Created": c.created,
        "Path": cmd.first().cloned().unwrap_or_default(),
        "Args": cmd.iter().skip(1).cloned().collect::<Vec<_>>(),
        "State": {
            "Status": c.status.as_str(),
            "Running": running,
            "Paused": c.status == Status::Paused,
            "Restarting": false,
            "OOMKilled": false,
            "Dead": false,
            "Pid": if running { c.pid } else { 0 },
            "ExitCode": c.exit_code,
            "Error": c.error,
            "StartedAt": if c.started_at.is_empty() { "0001-01-01T00:00:00Z".to_string() } else { c.started_at.clone() },
            "FinishedAt": if c.finished_at.is_empty() { "0001-01-01T00:00:00Z".to_string() } else { c.finished_at.clone() },
        },
        "Image": c.image_id,
        "ResolvConfPath": e.container_dir(&c.id).join("resolv.conf"),
        "HostnamePath": e.container_dir(&c.id).join("hostname"),
        "HostsPath": e.container_dir(&c.id).join("hosts"),
        "LogPath": e.log_path(&c.id),
        "Name": format!("/{}", c.name),
        "RestartCount": c.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "HostConfig": {
            "AutoRemove": c.config.auto_remove,
            "NetworkMode": c.config.network,
            "Privileged": c.config.privileged,
            "ReadonlyRootfs": c.config.read_only,
            "CapAdd": c.config.cap_add,
            "CapDrop": c.config.cap_drop,
            "Memory": c.config.resources.memory.unwrap_or(0),
            "NanoCpus": c.config.resources.cpus.map(|x| (x * 1e9).round()).unwrap_or(0.0),
            "CpuShares": c.config.resources.cpu_shares.unwrap_or(0),
            "PidsLimit": c.config.resources.pids_limit,
            "RestartPolicy": {"Name": match c.config.restart {
                RestartPolicy::No => "no",
                RestartPolicy::OnFailure => "on-failure",
                RestartPolicy::Always => "always",
                RestartPolicy::UnlessStopped => "unless-stopped",
            }, "MaximumRetryCount": c.config.max_restarts},
            "Runtime": c.config.runtime.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "hako".into()),
        },
        "Mounts": c.config.mounts.iter().map(|m| crate::volumes::mount_json(e, m)).collect::<Vec<_>>(),
        "Config": {
            "Hostname": spec.as_ref().and_then(|s| s["hostname"].as_str().map(String::from)).unwrap_or_else(|| c.short_id().to_string()),
            "User": c.config.user,
            "Tty": c.config.tty,
            "OpenStdin": c.config.interactive,
            "Env": spec.as_ref().map(|s| s["process"]["env"].clone()).unwrap_or_else(|| json!(c.config.env)),
            "Cmd": c.config.cmd,
            "Image": c.image,
            "WorkingDir": c.config.workdir,
            "Entrypoint": if c.config.entrypoint.is_empty() { Value::Null } else { json!(c.config.entrypoint) },
            "Labels": c.config.labels,
            "StopSignal": c.config.stop_signal,
        },
        "NetworkSettings": network_settings(e, c),
    })
}

/// `inspect`'s NetworkSettings, as Docker shows them: each network with
/// the container's address on it, and the published ports.
fn network_settings(e: &Engine, c: &Container) -> Value {
    let endpoints = e.endpoints(&c.id).unwrap_or_default();
    let mut networks = serde_json::Map::new();
    for ep in &endpoints {
        let net = e.network(&ep.network).ok();
        networks.insert(
            ep.network.clone(),
            json!({
                "NetworkID": net.as_ref().map(|n| n.id.clone()).unwrap_or_default(),
                "IPAddress": ep.ip.to_string(),
                "IPPrefixLen": net.as_ref().map(|n| n.subnet.prefix_len()).unwrap_or(0),
                "Gateway": net.as_ref().map(|n| n.gateway.to_string()).unwrap_or_default(),
                "MacAddress": ep.mac,
                "Aliases": ep.aliases,
            }),
        );
    }
    let mut ports = serde_json::Map::new();
    for p in e.published_ports(&c.id).unwrap_or_default() {
        for i in 0..p.count() {
            let key = format!("{}/{}", p.container_port + i, proto_name(p.protocol));
            let binding = json!({
                "HostIp": p.host_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED).to_string(),
                "HostPort": (p.host_port + i).to_string(),
            });
            match ports.get_mut(&key).and_then(Value::as_array_mut) {
                Some(list) => list.push(binding),
                None => {
                    ports.insert(key, json!([binding]));
                }
            }
        }
    }
    let first = endpoints.first();
    json!({
        "Networks": networks,
        "Ports": ports,
        "IPAddress": first.map(|ep| ep.ip.to_string()).unwrap_or_default(),
        "MacAddress": first.map(|ep| ep.mac.clone()).unwrap_or_default(),
        "SandboxKey": if endpoints.is_empty() { String::new() } else { e.netns_path(&c.id).display().to_string() },
    })
}

fn proto_name(p: hako_net::Protocol) -> &'static str {
    match p {
        hako_net::Protocol::Tcp => "tcp",
        hako_net::Protocol::Udp => "udp",
    }
}

/// `inspect` of containers; `None` if `name` is not a container.
pub fn inspect_container(ctx: &Ctx, name: &str) -> Result<Option<Value>> {
    let mut e = engine(ctx)?;
    match e.get(name) {
        Ok(c) => Ok(Some(inspect_json(&e, &c))),
        Err(hako_engine::Error::NotFound(_)) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

#[derive(Args)]
pub struct InspectArgs {
    #[arg(short, long)]
    format: Option<String>,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn inspect(ctx: &Ctx, a: InspectArgs) -> Result<i32> {
    let mut e = engine(ctx)?;
    let mut out = Vec::new();
    for n in &a.containers {
        let c = e.get(n)?;
        out.push(inspect_json(&e, &c));
    }
    print_inspect(&out, a.format.as_deref())
}

pub fn print_inspect(out: &[Value], format: Option<&str>) -> Result<i32> {
    match format {
        Some(f) => {
            let t = format::Template::parse(f)?;
            for v in out {
                println!("{}", t.render(v)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&out)?),
    }
    Ok(0)
}

#[derive(Args)]
pub struct RenameArgs {
    container: String,
    new_name: String,
}

pub fn rename(ctx: &Ctx, a: RenameArgs) -> Result<i32> {
    engine(ctx)?.rename(&a.container, &a.new_name)?;
    Ok(0)
}

#[derive(Args)]
pub struct PauseArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn pause(ctx: &Ctx, a: PauseArgs, pause: bool) -> Result<i32> {
    let mut e = engine(ctx)?;
    each(&a.containers, |n| {
        e.pause(n, pause)?;
        Ok(())
    })
}

#[derive(Args)]
pub struct TopArgs {
    container: String,
}

pub fn top(ctx: &Ctx, a: TopArgs) -> Result<i32> {
    let mut e = engine(ctx)?;
    let pids = e.pids(&a.container)?;
    let mut lines = vec!["PID\tUSER\tTIME\tCOMMAND".to_string()];
    for p in pids {
        let cmd = std::fs::read(format!("/proc/{p}/cmdline"))
            .map(|b| {
                b.split(|&x| x == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let uid = std::fs::read_to_string(format!("/proc/{p}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(String::from))
            })
            .unwrap_or_default();
        lines.push(format!("{p}\t{uid}\t-\t{cmd}"));
    }
    print!("{}", format::align(&lines));
    Ok(0)
}

#[derive(Args)]
pub struct ExecArgs {
    #[arg(short, long)]
    interactive: bool,
    #[arg(short, long)]
    tty: bool,
    /// Run in the background.
    #[arg(short, long)]
    detach: bool,
    #[arg(short, long = "env")]
    env: Vec<String>,
    #[arg(short, long)]
    user: Option<String>,
    #[arg(short, long)]
    workdir: Option<String>,
    #[arg(long)]
    privileged: bool,
    container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

pub fn exec(ctx: &Ctx, a: ExecArgs) -> Result<i32> {
    let mut e = engine(ctx)?;
    let c = e.get(&a.container)?;
    if c.status != Status::Running {
        return Err(ExitError {
            code: 126,
            message: format!("container {} is not running", c.name),
        }
        .into());
    }
    let process = exec_process(&e, &c, &a)?;
    match &c.config.runtime {
        None => exec_builtin(&e, &c, &process, &a),
        Some(bin) => exec_external(&e, &c, bin, &process, &a),
    }
}

/// The exec's process: the container's own, with the command and the
/// flags of `exec` (one for every runtime).
fn exec_process(e: &Engine, c: &Container, a: &ExecArgs) -> Result<oci_spec::runtime::Process> {
    let spec = e.spec_of(c)?;
    let mut process = spec["process"].clone();
    process["args"] = json!(a.command);
    process["terminal"] = json!(a.tty);
    // The terminal has the caller's size from the start (a resize after
    // the start would come after a quick program is done).
    if let Some((rows, cols)) = a
        .tty
        .then(|| hako_engine::terminal_size(std::os::fd::AsFd::as_fd(&std::io::stdin())))
        .flatten()
    {
        process["consoleSize"] = json!({"height": rows, "width": cols});
    }
    if let Some(w) = &a.workdir {
        process["cwd"] = json!(w);
    }
    let mut env: Vec<String> = serde_json::from_value(process["env"].clone()).unwrap_or_default();
    for kv in a.env.iter().map(|x| expand_env(x)) {
        let key = kv.split('=').next().unwrap_or("").to_string();
        env.retain(|x| x.split('=').next() != Some(key.as_str()));
        env.push(kv);
    }
    process["env"] = json!(env);
    if let Some(u) = &a.user {
        let rootfs = spec["root"]["path"].as_str().unwrap_or("/").to_string();
        let user = hako_engine::rootfs::resolve_user(std::path::Path::new(&rootfs), u, &[])?;
        process["user"] =
            json!({"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids});
    }
    if a.privileged {
        let all = hako_engine::spec::capabilities(&ContainerConfig {
            privileged: true,
            ..Default::default()
        })?;
        process["capabilities"] = json!({"bounding": all, "effective": all, "permitted": all});
    }
    serde_json::from_value(process).context("the exec process")
}

/// Docker's exit code when the runtime could not run the exec's program:
/// 127 when it is not there, 126 when it cannot be invoked (or anything
/// else went wrong).
fn exec_failure_code(message: &str) -> i32 {
    let m = message.to_ascii_lowercase();
    if m.contains("not found") || m.contains("no such file") {
        127
    } else {
        126
    }
}

/// Points `fds` (of 0, 1 and 2) at /dev/null: the exec's program
/// inherits them.
fn stdio_to_null(fds: std::ops::Range<i32>) -> Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in fds {
        // SAFETY: dup2 onto the standard descriptors; no memory involved.
        unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) };
    }
    Ok(())
}

fn exec_builtin(
    e: &Engine,
    c: &Container,
    process: &oci_spec::runtime::Process,
    a: &ExecArgs,
) -> Result<i32> {
    let root = e.runtime_root(c);
    let (console, mut ours) = if a.tty {
        let (x, y) = std::os::unix::net::UnixStream::pair().context("socketpair")?;
        (Some(x), Some(y))
    } else {
        (None, None)
    };
    if a.detach {
        // Detached: no stdio from here.
        stdio_to_null(0..3)?;
    } else if !a.interactive {
        // As Docker: without -i the program reads no input of ours.
        stdio_to_null(0..1)?;
    }
    let pid = hako_runtime::exec::exec(
        &root,
        &c.id,
        process,
        hako_runtime::ExecOptions {
            console_socket: None,
            console_stream: console,
            pid_file: None,
            preserve_fds: 0,
            // A container that keeps CAP_SYS_PTRACE could reach this
            // binary through the exec'd process: run it from a sealed copy.
            sealed_reexec: true,
        },
    )
    .map_err(|err| {
        let text = err.to_string();
        anyhow::Error::new(ExitError {
            code: exec_failure_code(&text),
            message: text,
        })
    })?;
    if a.detach {
        return Ok(0);
    }
    let pty = match ours.take() {
        Some(s) => Some(proxy_pty(
            hako_runtime::receive_console(&s)?,
            a.interactive,
        )?),
        None => None,
    };
    let set = hako_runtime::container::block_signals();
    wait_on_pty(pid, &set, pty)
}

/// A directory of its own for one exec's files (its process, the
/// runtime's log, the pid file, the console socket), in the container's
/// run directory: parallel execs do not meet, and whatever a killed exec
/// leaves goes with the run directory.
struct ExecDir(PathBuf);

impl ExecDir {
    fn make(run_dir: &std::path::Path) -> Result<ExecDir> {
        let dir = run_dir.join(format!("exec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(ExecDir(dir))
    }
}

impl Drop for ExecDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `exec` through an external runtime (runc's command line): `BIN exec
/// --detach --process FILE --pid-file P [--tty --console-socket S] ID`.
/// Always `--detach`, so that the runtime's exit status says whether the
/// program started, never how it ended, and its errors come from its log.
/// Unless `-d`, this process is a subreaper: the program, orphaned when
/// the runtime exits, becomes its child, and is then waited for, given
/// signals and (with `-t`) its pty proxied as with the built-in runtime.
fn exec_external(
    e: &Engine,
    c: &Container,
    bin: &std::path::Path,
    process: &oci_spec::runtime::Process,
    a: &ExecArgs,
) -> Result<i32> {
    use std::process::Stdio;
    let dir = ExecDir::make(&e.run_dir(&c.id))?;
    let process_file = dir.0.join("process.json");
    std::fs::write(&process_file, serde_json::to_vec(process)?)
        .with_context(|| format!("write {}", process_file.display()))?;
    let (log, pid_file) = (dir.0.join("runtime.log"), dir.0.join("exec.pid"));
    let console = if a.tty {
        Some(
            hako_monitor::ConsoleSocket::bind(&dir.0)
                .with_context(|| format!("make a console socket in {}", dir.0.display()))?,
        )
    } else {
        None
    };
    let mut cmd = hako_monitor::external_runtime_logged(bin, &e.runtime_root(c), &log);
    cmd.args(["exec", "--detach", "--process"])
        .arg(&process_file)
        .arg("--pid-file")
        .arg(&pid_file);
    if let Some(s) = &console {
        cmd.arg("--tty").arg("--console-socket").arg(s.path());
    }
    cmd.arg(&c.id);
    // Without a terminal the runtime hands its own stdio to the program.
    if a.detach {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    } else if a.interactive {
        cmd.stdin(Stdio::inherit());
    }
    let signals = if a.detach {
        None
    } else {
        nix::sys::prctl::set_child_subreaper(true)
            .context("become a subreaper to wait for the exec's program")?;
        // Blocked before the program exists, so that none is lost.
        Some(hako_runtime::container::block_signals())
    };
    let status = cmd
        .status()
        .map_err(|err| hako_monitor::ExternalError::spawn(bin, "exec", &err))?;
    if !status.success() {
        let said = hako_monitor::runtime_log_errors(&log);
        let err = hako_monitor::ExternalError::failed(bin, "exec", status, &said);
        return Err(ExitError {
            code: exec_failure_code(&said),
            message: err.to_string(),
        }
        .into());
    }
    let Some(set) = signals else {
        return Ok(0);
    };
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .with_context(|| {
            format!(
                "{} exec wrote no pid to {}",
                bin.display(),
                pid_file.display()
            )
        })?;
    let pty = match &console {
        Some(s) => match s.receive(bin, "exec") {
            Ok(master) => Some(proxy_pty(master, a.interactive)?),
            Err(err) => {
                // Its terminal is lost: the program must not run on unseen.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                return Err(err.into());
            }
        },
        None => None,
    };
    wait_on_pty(pid, &set, pty)
}

/// Copies between our terminal and the exec's pty until the pty closes;
/// the thread that copies the output is returned.
/// Copies between our stdio and the program's pty `master`, which gets
/// our terminal's size; returns the output copy and a handle on the pty
/// for later resizes.
fn proxy_pty(
    master: std::os::fd::OwnedFd,
    interactive: bool,
) -> Result<(std::thread::JoinHandle<()>, std::os::fd::OwnedFd)> {
    hako_runtime::container::copy_terminal_size(std::os::fd::AsFd::as_fd(&master));
    let resize = master.try_clone().context("dup the pty")?;
    let raw = if std::io::stdin().is_terminal() {
        Some(RawTerminal::enable()?)
    } else {
        None
    };
    let mut out = std::fs::File::from(master);
    if interactive {
        let mut w = out.try_clone()?;
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut w);
        });
    }
    let copy = std::thread::spawn(move || {
        let _ = std::io::copy(&mut out, &mut std::io::stdout());
        drop(raw);
    });
    Ok((copy, resize))
}

/// Waits for the exec'd `pid`, passing signals on (a resize to its pty,
/// if it has one), then lets the pty's last output out; its exit code.
fn wait_on_pty(
    pid: i32,
    set: &nix::sys::signal::SigSet,
    pty: Option<(std::thread::JoinHandle<()>, std::os::fd::OwnedFd)>,
) -> Result<i32> {
    let code = hako_runtime::container::wait_forwarding_to(
        pid,
        set,
        pty.as_ref()
            .map(|(_, resize)| std::os::fd::AsFd::as_fd(resize)),
    )?;
    finish_pty(pty);
    Ok(code)
}

/// After the program's exit, lets the output still in its pty reach our
/// stdout (and the terminal be restored): the copy ends when the pty
/// does. Bounded: a process left in the background may hold the pty.
fn finish_pty(pty: Option<(std::thread::JoinHandle<()>, std::os::fd::OwnedFd)>) {
    let Some((copy, resize)) = pty else { return };
    // Our handle must not keep the pty open: the copy ends when it closes.
    drop(resize);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !copy.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    if copy.is_finished() {
        let _ = copy.join();
    }
}

/// `port CONTAINER [PORT[/PROTO]]`: `80/tcp -> 0.0.0.0:8080` per port.
pub fn port(ctx: &Ctx, name: &str, which: Option<&str>) -> Result<i32> {
    let mut e = engine(ctx)?;
    let c = e.get(name)?;
    let wanted = which
        .map(|w| {
            let (port, proto) = w.split_once('/').unwrap_or((w, "tcp"));
            port.parse::<u16>()
                .map(|p| (p, proto.to_string()))
                .map_err(|_| anyhow!("{w}: write PORT or PORT/PROTO, e.g. 80/tcp"))
        })
        .transpose()?;
    let mut found = false;
    for p in e.published_ports(&c.id)? {
        for i in 0..p.count() {
            let (cport, proto) = (p.container_port + i, proto_name(p.protocol));
            let host = format!(
                "{}:{}",
                p.host_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
                p.host_port + i
            );
            match &wanted {
                Some((w, wp)) if *w == cport && wp == proto => {
                    println!("{host}");
                    found = true;
                }
                Some(_) => {}
                None => println!("{cport}/{proto} -> {host}"),
            }
        }
    }
    if let (Some(w), false) = (which, found) {
        bail!("no public port {w} published for {}", c.name);
    }
    Ok(0)
}

#[derive(Args)]
pub struct AttachArgs {
    /// Do not attach stdin.
    #[arg(long = "no-stdin")]
    no_stdin: bool,
    #[arg(long = "sig-proxy", default_value_t = true, action = clap::ArgAction::Set)]
    sig_proxy: bool,
    #[arg(long = "detach-keys", default_value = "ctrl-p,ctrl-q")]
    detach_keys: String,
    container: String,
}

/// `attach`: the container's output from now on, our stdin to it, until
/// it exits (its exit code) or the detach keys.
pub fn attach(ctx: &Ctx, a: AttachArgs) -> Result<i32> {
    let mut e = engine(ctx)?;
    let (c, att) = e.attach(&a.container, !a.no_stdin)?;
    let fg = Foreground {
        stdin: !a.no_stdin && c.config.interactive,
        tty: c.config.tty,
        sig_proxy: a.sig_proxy,
        detach_keys: parse_detach_keys(&a.detach_keys)?,
    };
    stream_output(att, &fg)
}

/// The limit flags of `run`, `create` and `update`.
#[derive(Args, Clone, Default)]
pub struct ResourceArgs {
    /// Memory limit (e.g. 64m, 1g).
    #[arg(short, long)]
    memory: Option<String>,
    #[arg(long = "memory-swap")]
    memory_swap: Option<String>,
    #[arg(long)]
    cpus: Option<f64>,
    #[arg(short = 'c', long = "cpu-shares")]
    cpu_shares: Option<u64>,
    #[arg(long = "cpuset-cpus")]
    cpuset_cpus: Option<String>,
    #[arg(long = "pids-limit")]
    pids_limit: Option<i64>,
}

impl ResourceArgs {
    fn resources(&self) -> Result<hako_engine::Resources> {
        Ok(hako_engine::Resources {
            memory: self.memory.as_deref().map(parse_bytes).transpose()?,
            memory_swap: match self.memory_swap.as_deref() {
                Some("-1") => Some(-1),
                Some(s) => Some(parse_bytes(s)?),
                None => None,
            },
            cpus: self.cpus,
            cpu_shares: self.cpu_shares,
            cpuset_cpus: self.cpuset_cpus.clone(),
            pids_limit: self.pids_limit,
        })
    }
}

#[derive(Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    resources: ResourceArgs,
    /// Takes effect at the container's next start.
    #[arg(long)]
    restart: Option<String>,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn update(ctx: &Ctx, a: UpdateArgs) -> Result<i32> {
    let change = hako_engine::ResourceUpdate {
        resources: a.resources.resources()?,
        restart: a.restart.as_deref().map(parse_restart).transpose()?,
    };
    let mut e = engine(ctx)?;
    each(&a.containers, |n| {
        e.update(n, &change)?;
        Ok(())
    })
}

#[derive(Args)]
pub struct StatsArgs {
    /// Print one table and exit.
    #[arg(long = "no-stream")]
    no_stream: bool,
    /// All containers (running ones by default).
    #[arg(short, long)]
    all: bool,
    #[arg(long)]
    format: Option<String>,
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    containers: Vec<String>,
}

/// One sample of a container's use.
struct Sample {
    cpu_ns: u64,
    at: std::time::Instant,
}

fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Sizes as Docker's stats prints them: binary units.
fn human_binary(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    #[allow(clippy::cast_precision_loss)]
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.2}{}", UNITS[i])
    }
}

pub fn stats(ctx: &Ctx, a: StatsArgs) -> Result<i32> {
    let mut e = engine(ctx)?;
    let names: Vec<String> = if a.containers.is_empty() {
        e.list()?
            .into_iter()
            .filter(|c| a.all || matches!(c.status, Status::Running | Status::Paused))
            .map(|c| c.id)
            .collect()
    } else {
        a.containers.clone()
    };
    let mut last: std::collections::HashMap<String, Sample> = std::collections::HashMap::new();
    // CPU use needs two samples: a first one now, the table after a moment.
    for n in &names {
        if let Ok((c, st)) = e.stats(n) {
            last.insert(
                c.id,
                Sample {
                    cpu_ns: st.cpu.usage.total,
                    at: std::time::Instant::now(),
                },
            );
        }
    }
    let host_mem = host_memory();
    let tty = std::io::stdout().is_terminal();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let mut rows = Vec::new();
        for n in &names {
            let (c, st) = match e.stats(n) {
                Ok(x) => x,
                Err(err) if !a.containers.is_empty() => return Err(err.into()),
                Err(_) => continue,
            };
            let now = Sample {
                cpu_ns: st.cpu.usage.total,
                at: std::time::Instant::now(),
            };
            #[allow(clippy::cast_precision_loss)]
            let cpu = last.get(&c.id).map_or(0.0, |p| {
                let wall = now.at.duration_since(p.at).as_nanos() as f64;
                if wall > 0.0 {
                    now.cpu_ns.saturating_sub(p.cpu_ns) as f64 / wall * 100.0
                } else {
                    0.0
                }
            });
            last.insert(c.id.clone(), now);
            // As Docker: the page cache that could be dropped is not use.
            let inactive = st
                .memory
                .raw
                .get("total_inactive_file")
                .or_else(|| st.memory.raw.get("inactive_file"))
                .copied()
                .unwrap_or(0);
            let used = st.memory.usage.usage.saturating_sub(inactive);
            let limit = match st.memory.usage.limit {
                0 => host_mem,
                l if l > host_mem && host_mem > 0 => host_mem,
                l => l,
            };
            #[allow(clippy::cast_precision_loss)]
            let mem_pct = if limit > 0 {
                used as f64 / limit as f64 * 100.0
            } else {
                0.0
            };
            let (mut read, mut write) = (0u64, 0u64);
            for b in &st.blkio.io_service_bytes_recursive {
                match b.op.to_ascii_lowercase().as_str() {
                    "read" => read += b.value,
                    "write" => write += b.value,
                    _ => {}
                }
            }
            rows.push(json!({
                "ID": if a.no_trunc { c.id.clone() } else { c.short_id().to_string() },
                "Container": if a.no_trunc { c.id.clone() } else { c.short_id().to_string() },
                "Name": c.name,
                "CPUPerc": format!("{cpu:.2}%"),
                "MemUsage": format!("{} / {}", human_binary(used), human_binary(limit)),
                "MemPerc": format!("{mem_pct:.2}%"),
                "NetIO": "0B / 0B",
                "BlockIO": format!("{} / {}", format::human_size(read), format::human_size(write)),
                "PIDs": st.pids.current.to_string(),
            }));
        }
        if tty && !a.no_stream {
            print!("\x1b[2J\x1b[H");
        }
        let default = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";
        format::print_rows(&rows, a.format.as_deref(), default, &|f| match f {
            "ID" | "Container" => "CONTAINER ID".into(),
            "CPUPerc" => "CPU %".into(),
            "MemUsage" => "MEM USAGE / LIMIT".into(),
            "MemPerc" => "MEM %".into(),
            "NetIO" => "NET I/O".into(),
            "BlockIO" => "BLOCK I/O".into(),
            other => other.to_ascii_uppercase(),
        })?;
        if a.no_stream {
            return Ok(0);
        }
        std::io::stdout().flush()?;
    }
}

/// `system reset`: everything of this store goes, containers first.
pub fn reset(ctx: &Ctx, force: bool) -> Result<i32> {
    if !force {
        println!(
            "WARNING! This will remove all containers, networks, volumes and images of {}.",
            ctx.root.display()
        );
        if !crate::volumes::confirm("Are you sure you want to continue?")? {
            return Ok(0);
        }
    }
    // Not `engine`: nothing is restarted only to be removed.
    let mut e = engine_as_is(ctx)?;
    for c in e.list()? {
        e.remove_with_volumes(&c.id, true, true)
            .with_context(|| format!("remove container {}", c.name))?;
    }
    e.sweep_trash();
    e.network_reset()?;
    e.volume_prune(true)?;
    let store = e.store()?;
    for img in store.images()? {
        store.remove_image(&img.id)?;
    }
    store.collect_garbage()?;
    Ok(0)
}

/// `system boot`: the after-boot work at once (the `hako-restart` unit
/// runs it at boot), and what it did.
pub fn boot(ctx: &Ctx) -> Result<i32> {
    let mut e = engine_as_is(ctx)?;
    let Some(report) = e.after_boot()? else {
        println!("nothing to do: this boot was handled already");
        return Ok(0);
    };
    for name in &report.restarted {
        println!("restarted {name}");
    }
    for (name, err) in &report.failed {
        eprintln!("hako: container {name} was not restarted: {err:#}");
    }
    Ok(if report.failed.is_empty() { 0 } else { 125 })
}
