//! `hako-runtime`: a runc-compatible command line over the hako runtime.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

mod terminal;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use hako_runtime::container;
use hako_runtime::{CreateOptions, ExecOptions};
use hako_runtime::{config, state};

/// In the static musl build (scripts/build.sh): musl's own allocator is
/// slow on a config's parsing; mimalloc is as fast as glibc's.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "hako-runtime", version = VERSION, about = "Run OCI containers (runc-compatible)", long_about = None)]
struct Cli {
    /// Directory for container state (tmpfs recommended)
    #[arg(long, global = true, default_value = "/run/hako-runtime")]
    root: PathBuf,
    /// Also write errors and warnings to this file
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Format of --log: text or json
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Print the timing of each phase to stderr
    #[arg(long, global = true)]
    debug: bool,
    /// Manage cgroups through systemd (not available in this runtime)
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Accepted for compatibility; rootless mode is detected
    #[arg(long = "rootless", id = "global_rootless", num_args = 0..=1, default_missing_value = "auto")]
    rootless: Option<String>,
    /// Accepted for compatibility; checkpointing is not supported
    #[arg(long, global = true, hide = true)]
    criu: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\nspec: ", "1.2.0");

#[derive(Args, Clone)]
struct CreateArgs {
    /// Path to the bundle directory (holding config.json)
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Unix socket that receives the pty master of a terminal container
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Write the container's init pid to this file
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Use MS_MOVE and chroot instead of pivot_root
    #[arg(long)]
    no_pivot: bool,
    /// Keep the caller's session keyring
    #[arg(long)]
    no_new_keyring: bool,
    /// Pass N extra descriptors (3 .. 3+N-1) to the container
    #[arg(long, default_value_t = 0)]
    preserve_fds: u32,
    /// Container id
    id: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a container (it waits for `start`)
    Create(CreateArgs),
    /// Run the program of a created container
    Start { id: String },
    /// Create and start a container, wait for it and return its exit code
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return after starting, without waiting
        #[arg(short, long)]
        detach: bool,
        /// Keep the container after it exits
        #[arg(long)]
        keep: bool,
    },
    /// Print a container's state as JSON
    State { id: String },
    /// Send a signal to a container's init (or all its processes)
    Kill {
        #[arg(short, long)]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Remove a container and everything it holds
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// List containers
    List {
        #[arg(short, long, default_value = "table")]
        format: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// List a container's processes
    Ps {
        #[arg(short, long, default_value = "table")]
        format: String,
        id: String,
        /// Arguments for ps(1) (default -ef)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Run a new process in a running container
    Exec(Box<ExecArgs>),
    /// Freeze all processes of a container
    Pause { id: String },
    /// Thaw a paused container
    Resume { id: String },
    /// Change a container's resource limits
    Update(Box<UpdateArgs>),
    /// Print resource statistics of a container
    Events {
        #[arg(long)]
        stats: bool,
        #[arg(long, default_value = "5s")]
        interval: String,
        id: String,
    },
    /// Print what this runtime supports, as JSON
    Features,
    /// Write a template config.json
    Spec {
        #[arg(long)]
        rootless: bool,
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
}

#[derive(Args)]
struct ExecArgs {
    /// A JSON file with the process (as in config.json's "process")
    #[arg(short, long)]
    process: Option<PathBuf>,
    #[arg(short, long)]
    tty: bool,
    #[arg(long)]
    console_socket: Option<PathBuf>,
    #[arg(short, long)]
    detach: bool,
    #[arg(long)]
    pid_file: Option<PathBuf>,
    #[arg(long)]
    cwd: Option<PathBuf>,
    #[arg(short, long)]
    env: Vec<String>,
    /// uid[:gid]
    #[arg(short, long)]
    user: Option<String>,
    #[arg(short = 'g', long)]
    additional_gids: Vec<u32>,
    #[arg(short, long)]
    cap: Vec<String>,
    #[arg(long)]
    no_new_privs: bool,
    #[arg(long, default_value_t = 0)]
    preserve_fds: u32,
    #[arg(long)]
    apparmor: Option<String>,
    #[arg(long)]
    process_label: Option<String>,
    id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Args)]
struct UpdateArgs {
    /// A JSON file (or - for stdin) with linux.resources
    #[arg(short, long)]
    resources: Option<PathBuf>,
    #[arg(long, allow_hyphen_values = true)]
    memory: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    memory_reservation: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    memory_swap: Option<String>,
    #[arg(long)]
    cpu_shares: Option<u64>,
    #[arg(long, allow_hyphen_values = true)]
    cpu_quota: Option<i64>,
    #[arg(long)]
    cpu_period: Option<u64>,
    #[arg(long)]
    cpuset_cpus: Option<String>,
    #[arg(long)]
    cpuset_mems: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    #[arg(long)]
    blkio_weight: Option<u16>,
    id: String,
}

struct Log {
    file: Option<std::fs::File>,
    json: bool,
}

impl Log {
    fn write(&mut self, level: &str, msg: &str) {
        eprintln!(
            "{}: {msg}",
            if level == "error" {
                "hako-runtime"
            } else {
                level
            }
        );
        if let Some(f) = &mut self.file {
            let line = if self.json {
                serde_json::json!({"level": level, "msg": msg, "time": state::now_rfc3339()})
                    .to_string()
            } else {
                format!("{} {level}: {msg}", state::now_rfc3339())
            };
            let _ = writeln!(f, "{line}");
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    hako_runtime::trace::init(cli.debug);
    hako_runtime::trace::mark("arguments parsed");
    // A log that cannot be written is an error up front: the caller would
    // otherwise look in it for messages that never come.
    let file = match &cli.log {
        Some(p) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
        {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("hako-runtime: --log {}: cannot open it: {e}", p.display());
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    let mut log = Log {
        file,
        json: cli.log_format == "json",
    };
    match run(&cli, &mut log) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            log.write("error", &report(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes, each once: library errors already quote the
/// cause they wrap.
fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

fn create_options(root: &Path, a: &CreateArgs) -> CreateOptions {
    CreateOptions {
        root: root.to_path_buf(),
        id: a.id.clone(),
        bundle: a.bundle.clone(),
        console_socket: a.console_socket.clone(),
        pid_file: a.pid_file.clone(),
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
        preserve_fds: a.preserve_fds,
        proxy_terminal: false,
        start_in_process: false,
        // This command line does the create again after a re-execution.
        sealed_reexec: true,
    }
}

fn exit_code(code: i32) -> u8 {
    u8::try_from(code.clamp(0, 255)).unwrap_or(255)
}

fn run(cli: &Cli, log: &mut Log) -> Result<u8> {
    if cli.systemd_cgroup {
        bail!(
            "--systemd-cgroup: the systemd cgroup driver is not available in hako-runtime; drop the flag to use the cgroupfs driver"
        );
    }
    let root = &cli.root;
    match &cli.cmd {
        Cmd::Create(a) => {
            let created = hako_runtime::create::create(create_options(root, a))
                .with_context(|| format!("create container {:?}", a.id))?;
            for w in &created.warnings {
                log.write("warning", w);
            }
        }
        Cmd::Start { id } => {
            for w in
                container::start(root, id).with_context(|| format!("start container {id:?}"))?
            {
                log.write("warning", &w);
            }
        }
        Cmd::Run {
            create,
            detach,
            keep,
        } => {
            let signals = container::block_signals();
            let mut opts = create_options(root, create);
            opts.start_in_process = true;
            // A foreground run of a terminal container without a console
            // socket gets its terminal proxied here, as with other runtimes.
            opts.proxy_terminal = !detach;
            let id = create.id.clone();
            let mut created = hako_runtime::create::create(opts)
                .with_context(|| format!("create container {id:?}"))?;
            let master = created.terminal.take();
            for w in &created.warnings {
                log.write("warning", w);
            }
            match container::start_created(&mut created) {
                Ok(ws) => {
                    for w in ws {
                        log.write("warning", &w);
                    }
                }
                Err(e) => {
                    let _ = container::delete(root, &id, true);
                    return Err(e).with_context(|| format!("start container {id:?}"));
                }
            }
            if *detach {
                return Ok(0);
            }
            let code = match master {
                Some(m) => terminal::proxy(m, created.pid, &signals)?,
                None => container::wait_forwarding(created.pid, &signals)?,
            };
            hako_runtime::trace::mark("exited");
            if !keep {
                for w in container::delete(root, &id, true)
                    .with_context(|| format!("delete container {id:?}"))?
                {
                    log.write("warning", &w);
                }
            }
            hako_runtime::trace::mark("deleted");
            return Ok(exit_code(code));
        }
        Cmd::State { id } => {
            let s = container::state(root, id)?;
            println!("{}", serde_json::to_string_pretty(&s)?);
        }
        Cmd::Kill { all, id, signal } => {
            let sig = parse_signal(signal)?;
            container::kill_container(root, id, sig, *all)
                .with_context(|| format!("kill container {id:?}"))?;
        }
        Cmd::Delete { force, id } => {
            match container::delete(root, id, *force) {
                Ok(ws) => {
                    for w in ws {
                        log.write("warning", &w);
                    }
                }
                // `delete --force` of a container that is gone already is
                // what the caller wanted.
                Err(hako_runtime::Error::NotFound(_)) if *force => {}
                Err(e) => return Err(e).with_context(|| format!("delete container {id:?}")),
            }
        }
        Cmd::List { format, quiet } => list(root, format, *quiet)?,
        Cmd::Ps {
            format,
            id,
            ps_args,
        } => ps(root, id, format, ps_args)?,
        Cmd::Exec(a) => return exec(root, a),
        Cmd::Pause { id } => {
            container::pause(root, id).with_context(|| format!("pause container {id:?}"))?
        }
        Cmd::Resume { id } => {
            container::resume(root, id).with_context(|| format!("resume container {id:?}"))?
        }
        Cmd::Update(a) => {
            for w in update(root, a)? {
                log.write("warning", &w);
            }
        }
        Cmd::Events {
            stats,
            interval,
            id,
        } => events(root, id, *stats, interval)?,
        Cmd::Features => println!("{}", serde_json::to_string_pretty(&features())?),
        Cmd::Spec { rootless, bundle } => {
            let path = bundle.join("config.json");
            if path.exists() {
                bail!("{} exists already: remove it first", path.display());
            }
            let text = serde_json::to_string_pretty(&config::default_spec(*rootless))?;
            std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        }
    }
    Ok(0)
}

fn parse_signal(s: &str) -> Result<i32> {
    hako_runtime::parse_signal(s).map_err(anyhow::Error::msg)
}

fn list(root: &Path, format: &str, quiet: bool) -> Result<()> {
    let mut states = Vec::new();
    for id in container::list(root)? {
        match container::state(root, &id) {
            Ok(s) => states.push(s),
            Err(hako_runtime::Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if quiet {
        for s in &states {
            println!("{}", s.id);
        }
        return Ok(());
    }
    match format {
        "json" => println!("{}", serde_json::to_string(&states)?),
        "table" => {
            let mut rows = vec![
                ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
                    .map(String::from)
                    .to_vec(),
            ];
            for s in &states {
                rows.push(vec![
                    s.id.clone(),
                    s.pid.to_string(),
                    s.status.to_string(),
                    s.bundle.display().to_string(),
                    s.created.clone(),
                    "root".into(),
                ]);
            }
            print_table(&rows);
        }
        other => bail!("--format {other:?}: use table or json"),
    }
    Ok(())
}

fn print_table(rows: &[Vec<String>]) {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
}

fn ps(root: &Path, id: &str, format: &str, ps_args: &[String]) -> Result<()> {
    let pids = container::pids(root, id).with_context(|| format!("list processes of {id:?}"))?;
    match format {
        "json" => println!("{}", serde_json::to_string(&pids)?),
        "table" => {
            let args: Vec<String> = if ps_args.is_empty() {
                vec!["-ef".into()]
            } else {
                ps_args.to_vec()
            };
            let out = std::process::Command::new("ps")
                .args(&args)
                .output()
                .context("run ps")?;
            if !out.status.success() {
                bail!(
                    "ps {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or_default();
            let pid_col = header
                .split_whitespace()
                .position(|h| h == "PID")
                .context("ps output has no PID column")?;
            println!("{header}");
            for l in lines {
                if let Some(p) = l
                    .split_whitespace()
                    .nth(pid_col)
                    .and_then(|p| p.parse::<i32>().ok())
                    && pids.contains(&p)
                {
                    println!("{l}");
                }
            }
        }
        other => bail!("--format {other:?}: use table or json"),
    }
    Ok(())
}

fn exec(root: &Path, a: &ExecArgs) -> Result<u8> {
    let process: oci_spec::runtime::Process = if let Some(p) = &a.process {
        let text = std::fs::read(p).with_context(|| format!("read {}", p.display()))?;
        serde_json::from_slice(&text)
            .with_context(|| format!("{}: not a valid process", p.display()))?
    } else {
        if a.command.is_empty() {
            bail!("exec: name a command to run (or give --process FILE)");
        }
        // The container's own process is the template, as in runc.
        let loaded = container::load(root, &a.id)
            .with_context(|| format!("exec in container {:?}", a.id))?;
        let spec = loaded.state.spec()?;
        drop(loaded);
        let mut p = spec.process().clone().unwrap_or_default();
        p.set_args(Some(a.command.clone()));
        p.set_terminal(Some(a.tty));
        let mut env = p.env().clone().unwrap_or_default();
        for e in &a.env {
            let key = e.split('=').next().unwrap_or_default();
            env.retain(|x| x.split('=').next() != Some(key));
            env.push(e.clone());
        }
        p.set_env(Some(env));
        if let Some(c) = &a.cwd {
            p.set_cwd(c.clone());
        }
        if let Some(u) = &a.user {
            let (uid, gid) = u.split_once(':').unwrap_or((u, "0"));
            let mut user = p.user().clone();
            user.set_uid(
                uid.parse()
                    .with_context(|| format!("--user {u:?}: give uid[:gid] as numbers"))?,
            );
            user.set_gid(
                gid.parse()
                    .with_context(|| format!("--user {u:?}: give uid[:gid] as numbers"))?,
            );
            p.set_user(user);
        }
        if !a.additional_gids.is_empty() {
            let mut user = p.user().clone();
            user.set_additional_gids(Some(a.additional_gids.clone()));
            p.set_user(user);
        }
        if !a.cap.is_empty() {
            let mut caps = p.capabilities().clone().unwrap_or_default();
            for c in &a.cap {
                let cap: oci_spec::runtime::Capability =
                    serde_json::from_value(serde_json::Value::String(c.clone()))
                        .with_context(|| format!("--cap {c:?} is not a capability"))?;
                let with = |set: &Option<oci_spec::runtime::Capabilities>| {
                    let mut set = set.clone().unwrap_or_default();
                    set.insert(cap);
                    Some(set)
                };
                caps.set_bounding(with(caps.bounding()));
                caps.set_effective(with(caps.effective()));
                caps.set_permitted(with(caps.permitted()));
            }
            p.set_capabilities(Some(caps));
        }
        if a.no_new_privs {
            p.set_no_new_privileges(Some(true));
        }
        if let Some(x) = &a.apparmor {
            p.set_apparmor_profile(Some(x.clone()));
        }
        if let Some(x) = &a.process_label {
            p.set_selinux_label(Some(x.clone()));
        }
        p
    };
    let signals = container::block_signals();
    let terminal = process.terminal().unwrap_or(false);
    // A foreground exec with a terminal and no console socket proxies the
    // terminal itself.
    let mut own_console = None;
    let mut opts = ExecOptions {
        console_socket: a.console_socket.clone(),
        console_stream: None,
        pid_file: a.pid_file.clone(),
        preserve_fds: a.preserve_fds,
        sealed_reexec: true,
    };
    if terminal && a.console_socket.is_none() && !a.detach {
        let (mine, theirs) = UnixStream::pair().context("socketpair for the console")?;
        opts.console_stream = Some(theirs);
        own_console = Some(mine);
    }
    let pid = hako_runtime::exec::exec(root, &a.id, &process, opts)
        .with_context(|| format!("exec in container {:?}", a.id))?;
    if a.detach {
        return Ok(0);
    }
    let code = match &own_console {
        Some(s) => terminal::proxy(hako_runtime::receive_console(s)?, pid, &signals)?,
        None => container::wait_forwarding(pid, &signals)?,
    };
    Ok(exit_code(code))
}

fn parse_size(s: &str) -> Result<i64> {
    let s = s.trim();
    if s == "-1" {
        return Ok(-1);
    }
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = s[i..].to_ascii_lowercase();
            let m: i64 = match unit.trim_end_matches('b') {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                "t" => 1 << 40,
                _ => bail!("{s:?}: unknown size unit (use k, m, g or t)"),
            };
            (&s[..i], m)
        }
        None => (s, 1),
    };
    let n: i64 = num
        .trim()
        .parse()
        .with_context(|| format!("{s:?} is not a size"))?;
    Ok(n * mult)
}

fn update(root: &Path, a: &UpdateArgs) -> Result<Vec<String>> {
    use oci_spec::runtime::{LinuxPids, LinuxResources};
    let mut res: LinuxResources = match &a.resources {
        Some(p) => {
            let text = if p == Path::new("-") {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                s
            } else {
                std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?
            };
            serde_json::from_str(&text)
                .with_context(|| format!("{}: not valid linux.resources JSON", p.display()))?
        }
        None => LinuxResources::default(),
    };
    if a.memory.is_some() || a.memory_reservation.is_some() || a.memory_swap.is_some() {
        let mut m = (*res.memory()).unwrap_or_default();
        if let Some(v) = &a.memory {
            m.set_limit(Some(parse_size(v)?));
        }
        if let Some(v) = &a.memory_reservation {
            m.set_reservation(Some(parse_size(v)?));
        }
        if let Some(v) = &a.memory_swap {
            m.set_swap(Some(parse_size(v)?));
        }
        res.set_memory(Some(m));
    }
    if a.cpu_shares.is_some()
        || a.cpu_quota.is_some()
        || a.cpu_period.is_some()
        || a.cpuset_cpus.is_some()
        || a.cpuset_mems.is_some()
    {
        let mut c = res.cpu().clone().unwrap_or_default();
        if a.cpu_shares.is_some() {
            c.set_shares(a.cpu_shares);
        }
        if a.cpu_quota.is_some() {
            c.set_quota(a.cpu_quota);
        }
        if a.cpu_period.is_some() {
            c.set_period(a.cpu_period);
        }
        if a.cpuset_cpus.is_some() {
            c.set_cpus(a.cpuset_cpus.clone());
        }
        if a.cpuset_mems.is_some() {
            c.set_mems(a.cpuset_mems.clone());
        }
        res.set_cpu(Some(c));
    }
    if let Some(l) = a.pids_limit {
        let mut p = LinuxPids::default();
        p.set_limit(l);
        res.set_pids(Some(p));
    }
    if let Some(w) = a.blkio_weight {
        let mut b = res.block_io().clone().unwrap_or_default();
        b.set_weight(Some(w));
        res.set_block_io(Some(b));
    }
    container::update(root, &a.id, &res).with_context(|| format!("update container {:?}", a.id))
}

fn parse_interval(s: &str) -> Result<std::time::Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num
        .parse()
        .with_context(|| format!("--interval {s:?}: give a duration like 5s or 500ms"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        _ => bail!("--interval {s:?}: use s, ms or m"),
    };
    Ok(std::time::Duration::from_secs_f64(secs.max(0.01)))
}

fn events(root: &Path, id: &str, once: bool, interval: &str) -> Result<()> {
    let every = parse_interval(interval)?;
    loop {
        let (status, stats) =
            container::stats(root, id).with_context(|| format!("stats of container {id:?}"))?;
        println!(
            "{}",
            serde_json::json!({"type": "stats", "id": id, "data": stats})
        );
        std::io::stdout().flush()?;
        if once || status == state::Status::Stopped {
            return Ok(());
        }
        std::thread::sleep(every);
    }
}

fn features() -> serde_json::Value {
    let caps: Vec<String> = caps::runtime::thread_all_supported()
        .iter()
        .map(|c| c.to_string())
        .collect();
    let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .map(|s| s.trim() == "Y")
        .unwrap_or(false);
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.3.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": ["async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "idmap", "loud",
            "mand", "noatime", "nodev", "nodiratime", "noexec", "nomand", "norelatime", "nostrictatime", "nosuid",
            "nosymfollow", "private", "ratime", "rbind", "rdev", "rdiratime", "relatime", "remount", "rexec",
            "ridmap", "rnoatime", "rnodev", "rnodiratime", "rnoexec", "rnorelatime", "rnostrictatime", "rnosuid",
            "rnosymfollow", "ro", "rprivate", "rrelatime", "rro", "rrw", "rshared", "rslave", "rstrictatime",
            "rsuid", "rsymfollow", "runbindable", "rw", "shared", "silent", "slave", "strictatime", "suid",
            "sync", "unbindable"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": true},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
                "knownFlags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
                "supportedFlags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]
            },
            "apparmor": {"enabled": apparmor},
            "selinux": {"enabled": Path::new("/sys/fs/selinux/enforce").exists()},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": true}},
            "netDevices": {"enabled": true},
            "memoryPolicy": {
                "modes": ["MPOL_DEFAULT", "MPOL_BIND", "MPOL_INTERLEAVE", "MPOL_WEIGHTED_INTERLEAVE", "MPOL_PREFERRED",
                    "MPOL_PREFERRED_MANY", "MPOL_LOCAL"],
                "flags": ["MPOL_F_NUMA_BALANCING", "MPOL_F_RELATIVE_NODES", "MPOL_F_STATIC_NODES"]
            }
        }
    })
}
