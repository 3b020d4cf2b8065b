//! hako: the command line, with Docker's verbs, flags and output.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod config;
mod containers;
mod files;
mod format;
mod images;
mod networks;
mod progress;
mod volumes;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "hako",
    version,
    about = "Containers and images, daemonless and fast",
    disable_help_subcommand = true,
    after_help = "Examples:\n  hako pull busybox\n  hako images\n  hako save -o busybox.tar busybox\n  hako --root /tmp/store pull 127.0.0.1:5000/app:v1"
)]
struct Cli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: Command,
}

/// The options every command takes.
#[derive(Args)]
struct Globals {
    /// Where images, layers and containers are kept.
    #[arg(
        long,
        global = true,
        default_value = "/var/lib/hako",
        env = "HAKO_ROOT"
    )]
    root: PathBuf,
    /// Where running state is kept (locks, sockets).
    #[arg(long, global = true, default_value = "/run/hako", env = "HAKO_RUNROOT")]
    runroot: PathBuf,
}

/// `hako run` alone: clap builds every command's arguments before it
/// parses, and for the command whose speed counts most, that is most of
/// hako's start-up (~0.5 ms). `--help` and any error go to the full parser.
#[derive(Parser)]
#[command(name = "hako", disable_help_flag = true, disable_version_flag = true)]
struct RunCli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: RunOnly,
}

#[derive(Subcommand)]
enum RunOnly {
    Run(containers::CreateArgs),
}

/// Whether the command line is a `run` (after the global options) without
/// `--help`.
fn is_plain_run(args: &[std::ffi::OsString]) -> bool {
    let mut rest = args.iter().skip(1);
    while let Some(a) = rest.next() {
        match a.to_str() {
            Some("--root" | "--runroot") => {
                rest.next();
            }
            Some(x) if x.starts_with("--root=") || x.starts_with("--runroot=") => {}
            Some("run") => return !args.iter().any(|a| a == "--help"),
            _ => return false,
        }
    }
    false
}

fn parse() -> Cli {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if is_plain_run(&args)
        && let Ok(RunCli {
            globals,
            command: RunOnly::Run(a),
        }) = RunCli::try_parse_from(&args)
    {
        return Cli {
            globals,
            command: Command::Run(a),
        };
    }
    Cli::parse_from(args)
}

#[derive(Subcommand)]
enum Command {
    /// Download an image from a registry.
    #[command(
        after_help = "Examples:\n  hako pull busybox\n  hako pull --platform linux/arm64 debian:bookworm\n  hako pull 127.0.0.1:5000/app@sha256:..."
    )]
    Pull(images::PullArgs),
    /// Upload an image to a registry.
    #[command(
        after_help = "Examples:\n  hako push 127.0.0.1:5000/app:v1\n  hako push busybox 127.0.0.1:5000/tools/busybox:1"
    )]
    Push(images::PushArgs),
    /// List images.
    #[command(
        alias = "list",
        after_help = "Examples:\n  hako images\n  hako images -q\n  hako images --format '{{.Repository}}:{{.Tag}}'"
    )]
    Images(images::ImagesArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Give an image another name.
    #[command(after_help = "Example:\n  hako tag busybox 127.0.0.1:5000/busybox:1")]
    Tag(images::TagArgs),
    /// Remove images.
    #[command(after_help = "Examples:\n  hako rmi busybox\n  hako rmi -f 3f57d9401f8d")]
    Rmi(images::RmiArgs),
    /// Write images to a tar archive.
    #[command(
        after_help = "Examples:\n  hako save -o busybox.tar busybox\n  hako save --format oci-archive -o app.tar app:v1 app:v2"
    )]
    Save(images::SaveArgs),
    /// Read images from a tar archive.
    #[command(after_help = "Examples:\n  hako load -i busybox.tar\n  hako load < busybox.tar")]
    Load(images::LoadArgs),
    /// Make an image from a root filesystem tarball.
    #[command(
        after_help = "Examples:\n  hako import rootfs.tar myimage:v1\n  tar -C rootfs -c . | hako import - myimage"
    )]
    Import(images::ImportArgs),
    /// Show details of containers or images.
    Inspect(images::InspectArgs),
    /// Create and start a container.
    #[command(
        after_help = "Examples:\n  hako run --rm busybox echo hello\n  hako run -d --name web --restart always busybox httpd -f\n  hako run -it busybox sh\n  hako run --rm --rootfs ./rootfs /bin/sh -c 'echo from a directory'"
    )]
    Run(containers::CreateArgs),
    /// Create a container without starting it.
    #[command(after_help = "Example:\n  hako create --name app busybox sleep 60 && hako start app")]
    Create(containers::CreateArgs),
    /// Start containers.
    Start(containers::StartArgs),
    /// Stop containers (the stop signal, then SIGKILL after -t seconds).
    Stop(containers::StopArgs),
    /// Restart containers.
    Restart(containers::StopArgs),
    /// Send a signal to containers.
    #[command(after_help = "Example:\n  hako kill -s HUP web")]
    Kill(containers::KillArgs),
    /// Remove containers.
    #[command(after_help = "Examples:\n  hako rm app\n  hako rm -f $(hako ps -aq)")]
    Rm(containers::RmArgs),
    /// List containers.
    #[command(
        after_help = "Examples:\n  hako ps -a\n  hako ps --filter status=exited -q\n  hako ps --format '{{.ID}} {{.Names}}'"
    )]
    Ps(containers::PsArgs),
    /// Show a container's output.
    #[command(after_help = "Examples:\n  hako logs web\n  hako logs -f --tail 10 web")]
    Logs(containers::LogsArgs),
    /// Wait for containers to stop; print their exit codes.
    Wait(containers::WaitArgs),
    /// Run a command in a running container.
    #[command(after_help = "Examples:\n  hako exec web ls /\n  hako exec -it web sh")]
    Exec(containers::ExecArgs),
    /// Live resource use of containers.
    #[command(after_help = "Examples:\n  hako stats\n  hako stats --no-stream web")]
    Stats(containers::StatsArgs),
    /// Change the resource limits of containers.
    #[command(after_help = "Example:\n  hako update --memory 256m --cpus 0.5 web")]
    Update(containers::UpdateArgs),
    /// Attach to a running container's output (and stdin).
    #[command(after_help = "Example:\n  hako attach web   (detach with ctrl-p ctrl-q)")]
    Attach(containers::AttachArgs),
    /// Rename a container.
    Rename(containers::RenameArgs),
    /// Pause the processes of containers.
    Pause(containers::PauseArgs),
    /// Resume paused containers.
    Unpause(containers::PauseArgs),
    /// Show the processes of a container.
    Top(containers::TopArgs),
    /// Show a container's published ports.
    Port(PortArgs),
    /// Copy files between a container and the host.
    #[command(
        after_help = "Examples:\n  hako cp web:/etc/hosts .\n  hako cp ./site/. web:/var/www/\n  hako cp web:/var/log - | tar -t"
    )]
    Cp(files::CpArgs),
    /// Show what a container changed in its filesystem (A, C, D).
    Diff(files::DiffArgs),
    /// Write a container's filesystem as a tar.
    #[command(after_help = "Example:\n  hako export -o web.tar web")]
    Export(files::ExportArgs),
    /// Make an image of a container's changes.
    #[command(
        after_help = "Example:\n  hako commit -m 'add config' -c 'CMD [\"httpd\", \"-f\"]' web app:v2"
    )]
    Commit(files::CommitArgs),
    /// Manage containers.
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  source <(hako completion bash)\n  hako completion zsh > \"${fpath[1]}/_hako\"\n  hako completion fish > ~/.config/fish/completions/hako.fish"
    )]
    Completion { shell: clap_complete::Shell },
    /// Log in to a registry.
    #[command(
        after_help = "Examples:\n  hako login -u alice 127.0.0.1:5000\n  echo \"$TOKEN\" | hako login -u alice --password-stdin registry.example"
    )]
    Login(images::LoginArgs),
    /// Log out of a registry.
    Logout(images::LogoutArgs),
    /// System information.
    #[command(subcommand)]
    System(SystemCommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volumes::VolumeCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(networks::NetworkCommand),
}

#[derive(Subcommand)]
enum ImageCommand {
    /// List images.
    #[command(alias = "list")]
    Ls(images::ImagesArgs),
    /// Show details of images.
    Inspect(images::InspectArgs),
    Pull(images::PullArgs),
    Push(images::PushArgs),
    Tag(images::TagArgs),
    /// Remove images.
    #[command(alias = "remove")]
    Rm(images::RmiArgs),
    /// Remove unused images.
    Prune(images::PruneArgs),
    Save(images::SaveArgs),
    Load(images::LoadArgs),
    Import(images::ImportArgs),
}

#[derive(Subcommand)]
enum ContainerCommand {
    Run(containers::CreateArgs),
    Create(containers::CreateArgs),
    Start(containers::StartArgs),
    Stop(containers::StopArgs),
    Restart(containers::StopArgs),
    Kill(containers::KillArgs),
    #[command(alias = "remove")]
    Rm(containers::RmArgs),
    #[command(alias = "list", alias = "ps")]
    Ls(containers::PsArgs),
    Logs(containers::LogsArgs),
    Wait(containers::WaitArgs),
    Exec(containers::ExecArgs),
    Inspect(containers::InspectArgs),
    Attach(containers::AttachArgs),
    Stats(containers::StatsArgs),
    Update(containers::UpdateArgs),
    Rename(containers::RenameArgs),
    Pause(containers::PauseArgs),
    Unpause(containers::PauseArgs),
    Top(containers::TopArgs),
    Port(PortArgs),
    /// Remove every stopped container.
    Prune(containers::PruneArgs),
    Cp(files::CpArgs),
    Diff(files::DiffArgs),
    Export(files::ExportArgs),
    Commit(files::CommitArgs),
    /// Release what an ended container holds (run by its monitor).
    #[command(hide = true)]
    Cleanup(containers::CleanupArgs),
}

#[derive(Args)]
pub struct PortArgs {
    container: String,
    /// Only this container port: PORT[/tcp|udp].
    port: Option<String>,
}

#[derive(Subcommand)]
enum SystemCommand {
    /// Show disk use.
    Df(DfArgs),
    /// Remove every container, network, volume and image of this store,
    /// and what they hold on the host (bridges, firewall table).
    Reset {
        /// Do not ask.
        #[arg(short, long)]
        force: bool,
    },
    /// Apply the restart policies after a boot: containers the boot ended
    /// are settled, `always` ones (and `unless-stopped`/`on-failure` ones
    /// the boot stopped) start again. The first command after a boot does
    /// this anyway; contrib/systemd/hako-restart.service runs it at boot.
    Boot,
}

#[derive(Args)]
pub struct DfArgs {
    #[arg(long)]
    format: Option<String>,
}

/// What every command needs: the store roots and the configuration.
pub struct Ctx {
    pub root: PathBuf,
    pub runroot: PathBuf,
}

fn run(cli: Cli) -> Result<i32> {
    let ctx = Ctx {
        root: cli.globals.root,
        runroot: cli.globals.runroot,
    };
    match cli.command {
        Command::Pull(a) | Command::Image(ImageCommand::Pull(a)) => images::pull(&ctx, a),
        Command::Push(a) | Command::Image(ImageCommand::Push(a)) => images::push(&ctx, a),
        Command::Images(a) | Command::Image(ImageCommand::Ls(a)) => images::list(&ctx, a),
        Command::Tag(a) | Command::Image(ImageCommand::Tag(a)) => images::tag(&ctx, a),
        Command::Rmi(a) | Command::Image(ImageCommand::Rm(a)) => images::rmi(&ctx, a),
        Command::Image(ImageCommand::Prune(a)) => images::prune(&ctx, a),
        Command::Save(a) | Command::Image(ImageCommand::Save(a)) => images::save(&ctx, a),
        Command::Load(a) | Command::Image(ImageCommand::Load(a)) => images::load(&ctx, a),
        Command::Import(a) | Command::Image(ImageCommand::Import(a)) => images::import(&ctx, a),
        Command::Inspect(a) => images::inspect_any(&ctx, a),
        Command::Image(ImageCommand::Inspect(a)) => images::inspect(&ctx, a),
        Command::Run(a) | Command::Container(ContainerCommand::Run(a)) => containers::run(&ctx, a),
        Command::Create(a) | Command::Container(ContainerCommand::Create(a)) => {
            containers::create(&ctx, a)
        }
        Command::Start(a) | Command::Container(ContainerCommand::Start(a)) => {
            containers::start(&ctx, a)
        }
        Command::Stop(a) | Command::Container(ContainerCommand::Stop(a)) => {
            containers::stop(&ctx, a)
        }
        Command::Restart(a) | Command::Container(ContainerCommand::Restart(a)) => {
            containers::restart(&ctx, a)
        }
        Command::Kill(a) | Command::Container(ContainerCommand::Kill(a)) => {
            containers::kill(&ctx, a)
        }
        Command::Rm(a) | Command::Container(ContainerCommand::Rm(a)) => containers::rm(&ctx, a),
        Command::Ps(a) | Command::Container(ContainerCommand::Ls(a)) => containers::ps(&ctx, a),
        Command::Logs(a) | Command::Container(ContainerCommand::Logs(a)) => {
            containers::logs(&ctx, a)
        }
        Command::Wait(a) | Command::Container(ContainerCommand::Wait(a)) => {
            containers::wait(&ctx, a)
        }
        Command::Exec(a) | Command::Container(ContainerCommand::Exec(a)) => {
            containers::exec(&ctx, a)
        }
        Command::Container(ContainerCommand::Inspect(a)) => containers::inspect(&ctx, a),
        Command::Attach(a) | Command::Container(ContainerCommand::Attach(a)) => {
            containers::attach(&ctx, a)
        }
        Command::Stats(a) | Command::Container(ContainerCommand::Stats(a)) => {
            containers::stats(&ctx, a)
        }
        Command::Update(a) | Command::Container(ContainerCommand::Update(a)) => {
            containers::update(&ctx, a)
        }
        Command::Rename(a) | Command::Container(ContainerCommand::Rename(a)) => {
            containers::rename(&ctx, a)
        }
        Command::Pause(a) | Command::Container(ContainerCommand::Pause(a)) => {
            containers::pause(&ctx, a, true)
        }
        Command::Unpause(a) | Command::Container(ContainerCommand::Unpause(a)) => {
            containers::pause(&ctx, a, false)
        }
        Command::Top(a) | Command::Container(ContainerCommand::Top(a)) => containers::top(&ctx, a),
        Command::Port(a) | Command::Container(ContainerCommand::Port(a)) => {
            containers::port(&ctx, &a.container, a.port.as_deref())
        }
        Command::Container(ContainerCommand::Prune(a)) => containers::prune(&ctx, a),
        Command::Completion { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "hako", &mut script);
            // A closed pipe (`| head`) is the reader's choice, not an error.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            Ok(0)
        }
        Command::Cp(a) | Command::Container(ContainerCommand::Cp(a)) => files::cp(&ctx, a),
        Command::Diff(a) | Command::Container(ContainerCommand::Diff(a)) => files::diff(&ctx, a),
        Command::Export(a) | Command::Container(ContainerCommand::Export(a)) => {
            files::export(&ctx, a)
        }
        Command::Commit(a) | Command::Container(ContainerCommand::Commit(a)) => {
            files::commit(&ctx, a)
        }
        Command::Container(ContainerCommand::Cleanup(a)) => containers::cleanup(&ctx, a),
        Command::Login(a) => images::login(&ctx, a),
        Command::Logout(a) => images::logout(&ctx, a),
        Command::System(SystemCommand::Df(a)) => images::df(&ctx, a.format.as_deref()),
        Command::System(SystemCommand::Reset { force }) => containers::reset(&ctx, force),
        Command::System(SystemCommand::Boot) => containers::boot(&ctx),
        Command::Volume(c) => volumes::run(&ctx, c),
        Command::Network(c) => networks::run(&ctx, c),
    }
}

/// The error and its causes on one line, each cause once: library errors
/// often name their source in their own message already.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// Docker's exit code for a failure of the command itself: 125 for the
/// container verbs (so it is told from the container's own codes), 1 for
/// the others.
fn failure_code(cmd: &Command) -> i32 {
    match cmd {
        Command::Run(_) | Command::Create(_) | Command::Start(_) | Command::Exec(_) => 125,
        Command::Container(
            ContainerCommand::Run(_)
            | ContainerCommand::Create(_)
            | ContainerCommand::Start(_)
            | ContainerCommand::Exec(_),
        ) => 125,
        _ => 1,
    }
}

fn main() {
    hako_runtime::trace::init(false);
    let cli = parse();
    hako_runtime::trace::mark("cli: parsed");
    let failure = failure_code(&cli.command);
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {}", error_text(&e));
            match e.downcast_ref::<containers::ExitError>() {
                Some(x) => x.code,
                None => failure,
            }
        }
    };
    std::process::exit(code);
}
