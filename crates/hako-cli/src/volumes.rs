//! `hako volume create|ls|inspect|rm|prune`, with Docker's flags and
//! output.

use crate::{Ctx, format};
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use hako_engine::volumes::Volume;
use hako_engine::{Engine, MountKind, MountSpec};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Create a volume.
    #[command(
        after_help = "Examples:\n  hako volume create data\n  hako volume create --label app=web\n  hako run -v data:/data busybox ls /data"
    )]
    Create(CreateArgs),
    /// List volumes.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show details of volumes.
    Inspect(InspectArgs),
    /// Remove volumes (never one a container uses).
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove unused anonymous volumes (all unused ones with -a).
    Prune(PruneArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// Only "local".
    #[arg(short, long)]
    driver: Option<String>,
    /// KEY=VALUE.
    #[arg(long)]
    label: Vec<String>,
    /// Driver options (the local driver's mount options are not supported).
    #[arg(short, long = "opt")]
    opt: Vec<String>,
    /// A random 64-hex name when not given.
    name: Option<String>,
}

#[derive(Args)]
pub struct LsArgs {
    /// Only names.
    #[arg(short, long)]
    quiet: bool,
    /// dangling=true|false, name=…, label=KEY[=VALUE], driver=…
    #[arg(short, long)]
    filter: Vec<String>,
    #[arg(long)]
    format: Option<String>,
}

#[derive(Args)]
pub struct InspectArgs {
    #[arg(short, long)]
    format: Option<String>,
    #[arg(required = true)]
    volumes: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    /// No error for a volume that is not there (one in use is still kept).
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    volumes: Vec<String>,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Do not ask.
    #[arg(short, long)]
    force: bool,
    /// Named volumes too, not only anonymous ones.
    #[arg(short, long)]
    all: bool,
}

pub fn run(ctx: &Ctx, cmd: VolumeCommand) -> Result<i32> {
    match cmd {
        VolumeCommand::Create(a) => create(ctx, a),
        VolumeCommand::Ls(a) => ls(ctx, a),
        VolumeCommand::Inspect(a) => inspect(ctx, a),
        VolumeCommand::Rm(a) => rm(ctx, a),
        VolumeCommand::Prune(a) => prune(ctx, a),
    }
}

/// Docker's `volume inspect` object.
pub fn volume_json(v: &Volume) -> Value {
    json!({
        "CreatedAt": v.created,
        "Driver": v.driver,
        "Labels": v.labels,
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Options": {},
        "Scope": "local",
    })
}

/// A container's mount as `inspect` shows it under "Mounts".
pub fn mount_json(e: &Engine, m: &MountSpec) -> Value {
    match m.kind {
        MountKind::Volume => json!({
            "Type": "volume",
            "Name": m.source,
            "Source": e.volume_mountpoint(&m.source),
            "Destination": m.target,
            "Driver": "local",
            "Mode": "z",
            "RW": !m.readonly,
            "Propagation": "",
        }),
        MountKind::Bind => json!({
            "Type": "bind",
            "Source": m.source,
            "Destination": m.target,
            "Mode": "",
            "RW": !m.readonly,
            "Propagation": "rprivate",
        }),
        MountKind::Tmpfs => json!({
            "Type": "tmpfs",
            "Source": "",
            "Destination": m.target,
            "Mode": "",
            "RW": !m.readonly,
            "Propagation": "",
        }),
    }
}

fn create(ctx: &Ctx, a: CreateArgs) -> Result<i32> {
    if !a.opt.is_empty() {
        bail!("--opt: the local driver's options (type, device, o) are not supported");
    }
    let mut labels = BTreeMap::new();
    for l in &a.label {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let mut e = crate::containers::engine(ctx)?;
    let v = e.volume_create(a.name.as_deref(), a.driver.as_deref(), labels)?;
    println!("{}", v.name);
    Ok(0)
}

fn matches_filter(v: &Volume, used: bool, f: &str) -> Result<bool> {
    let (k, val) = f.split_once('=').unwrap_or((f, ""));
    Ok(match k {
        "dangling" => match val {
            "true" | "1" => !used,
            "false" | "0" => used,
            _ => bail!("--filter dangling={val}: use true or false"),
        },
        "name" => v.name.contains(val),
        "driver" => v.driver == val,
        "label" => match val.split_once('=') {
            Some((lk, lv)) => v.labels.get(lk).is_some_and(|x| x == lv),
            None => v.labels.contains_key(val),
        },
        _ => bail!("--filter {f}: use dangling=, name=, label= or driver="),
    })
}

fn ls(ctx: &Ctx, a: LsArgs) -> Result<i32> {
    let e = crate::containers::engine(ctx)?;
    let users = if a.filter.is_empty() {
        Default::default()
    } else {
        e.volume_users()?
    };
    let mut rows = Vec::new();
    for v in e.volume_list()? {
        let used = users.contains_key(&v.name);
        let mut keep = true;
        for f in &a.filter {
            keep &= matches_filter(&v, used, f)?;
        }
        if !keep {
            continue;
        }
        let labels = v
            .labels
            .iter()
            .map(|(k, x)| format!("{k}={x}"))
            .collect::<Vec<_>>()
            .join(",");
        rows.push(json!({
            "Name": v.name,
            "Driver": v.driver,
            "Mountpoint": v.mountpoint,
            "CreatedAt": v.created,
            "Labels": labels,
            "Scope": "local",
        }));
    }
    if a.quiet {
        for r in &rows {
            println!("{}", r["Name"].as_str().unwrap_or_default());
        }
        return Ok(0);
    }
    let column = |f: &str| match f {
        "Name" => "VOLUME NAME".to_string(),
        "CreatedAt" => "CREATED".to_string(),
        other => other.to_uppercase(),
    };
    format::print_rows(
        &rows,
        a.format.as_deref(),
        "table {{.Driver}}\t{{.Name}}",
        &column,
    )?;
    Ok(0)
}

/// `inspect` of a volume; `None` if there is no volume `name`.
pub fn inspect_volume(ctx: &Ctx, name: &str) -> Result<Option<Value>> {
    let e = crate::containers::engine(ctx)?;
    match e.volume_inspect(name) {
        Ok(v) => Ok(Some(volume_json(&v))),
        Err(hako_engine::Error::Volume(hako_engine::volumes::VolumeError::NotFound(_))) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

fn inspect(ctx: &Ctx, a: InspectArgs) -> Result<i32> {
    let e = crate::containers::engine(ctx)?;
    crate::containers::inspect_each(&a.volumes, a.format.as_deref(), |n| {
        e.volume_inspect(n).map(|v| volume_json(&v))
    })
}

fn rm(ctx: &Ctx, a: RmArgs) -> Result<i32> {
    let mut e = crate::containers::engine(ctx)?;
    // volume_remove knows what --force forgives.
    crate::containers::remove_each(&a.volumes, false, |n| e.volume_remove(n, a.force))
}

pub fn confirm(question: &str) -> Result<bool> {
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "Yes"))
}

fn prune(ctx: &Ctx, a: PruneArgs) -> Result<i32> {
    if !a.force {
        println!(
            "{}",
            if a.all {
                "WARNING! This will remove all local volumes not used by at least one container."
            } else {
                "WARNING! This will remove anonymous local volumes not used by at least one container."
            }
        );
        if !confirm("Are you sure you want to continue?")? {
            return Ok(0);
        }
    }
    let mut e = crate::containers::engine(ctx)?;
    let (removed, bytes) = e.volume_prune(a.all)?;
    if !removed.is_empty() {
        println!("Deleted Volumes:");
        for n in &removed {
            println!("{n}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", format::human_size(bytes));
    Ok(0)
}
