//! hako: the command line, with Docker's verbs, flags and output.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod config;
mod format;
mod images;
mod progress;

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
    #[command(subcommand)]
    command: Command,
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
    /// Show details of images.
    Inspect(images::InspectArgs),
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
enum SystemCommand {
    /// Show disk use.
    Df(DfArgs),
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
        root: cli.root,
        runroot: cli.runroot,
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
        Command::Inspect(a) | Command::Image(ImageCommand::Inspect(a)) => images::inspect(&ctx, a),
        Command::Login(a) => images::login(&ctx, a),
        Command::Logout(a) => images::logout(&ctx, a),
        Command::System(SystemCommand::Df(a)) => images::df(&ctx, a.format.as_deref()),
    }
}

/// The error and its causes on one line, each cause once: library errors
/// often name their source in their own message already.
fn error_text(e: &anyhow::Error) -> String {
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

fn main() {
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {}", error_text(&e));
            1
        }
    };
    std::process::exit(code);
}
