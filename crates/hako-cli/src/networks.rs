//! `hako network create|ls|inspect|rm|prune|connect|disconnect`, with
//! Docker's flags and output.

use crate::{Ctx, format};
use anyhow::{Result, anyhow, bail};
use clap::{Args, Subcommand};
use hako_engine::Engine;
use hako_engine::networks::{NetworkOptions, NetworkRequest};
use hako_net::Network;
use serde_json::{Value, json};
use std::collections::BTreeMap;

#[derive(Subcommand)]
pub enum NetworkCommand {
    /// Create a user network: a bridge of its own, with name resolution.
    #[command(
        after_help = "Examples:\n  hako network create web\n  hako network create --subnet 10.99.0.0/24 --internal backend\n  hako run -d --network web --name api busybox httpd -f\n  hako run --rm --network web busybox wget -qO- http://api/"
    )]
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show details of networks.
    Inspect(InspectArgs),
    /// Remove networks (none a running container is on).
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove the user networks no container uses.
    Prune(PruneArgs),
    /// Connect a container to a network.
    Connect(ConnectArgs),
    /// Disconnect a container from a network.
    Disconnect(DisconnectArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// Only "bridge".
    #[arg(short, long)]
    driver: Option<String>,
    /// The IPv4 subnet in CIDR form (a free private /16 when not given).
    #[arg(long)]
    subnet: Option<String>,
    /// The gateway's address (the subnet's first when not given).
    #[arg(long)]
    gateway: Option<std::net::Ipv4Addr>,
    /// No way out of the network: no NAT, no forwarding, no outside names.
    #[arg(long)]
    internal: bool,
    /// KEY=VALUE.
    #[arg(long)]
    label: Vec<String>,
    name: String,
}

#[derive(Args)]
pub struct LsArgs {
    /// Only ids.
    #[arg(short, long)]
    quiet: bool,
    /// name=…, id=…, label=KEY[=VALUE], driver=…, type=custom|builtin
    #[arg(short, long)]
    filter: Vec<String>,
    #[arg(long)]
    format: Option<String>,
    #[arg(long = "no-trunc")]
    no_trunc: bool,
}

#[derive(Args)]
pub struct InspectArgs {
    #[arg(short, long)]
    format: Option<String>,
    #[arg(required = true)]
    networks: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    /// No error for a network that is not there.
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    networks: Vec<String>,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Do not ask.
    #[arg(short, long)]
    force: bool,
}

#[derive(Args)]
pub struct ConnectArgs {
    /// Another name for the container on this network.
    #[arg(long)]
    alias: Vec<String>,
    /// The container's IPv4 address on this network.
    #[arg(long)]
    ip: Option<std::net::Ipv4Addr>,
    network: String,
    container: String,
}

#[derive(Args)]
pub struct DisconnectArgs {
    /// Accepted for Docker's sake.
    #[arg(short, long)]
    force: bool,
    network: String,
    container: String,
}

pub fn run(ctx: &Ctx, cmd: NetworkCommand) -> Result<i32> {
    match cmd {
        NetworkCommand::Create(a) => create(ctx, a),
        NetworkCommand::Ls(a) => ls(ctx, a),
        NetworkCommand::Inspect(a) => inspect(ctx, a),
        NetworkCommand::Rm(a) => rm(ctx, a),
        NetworkCommand::Prune(a) => prune(ctx, a),
        NetworkCommand::Connect(a) => {
            let mut e = crate::containers::engine(ctx)?;
            e.network_connect(
                &a.container,
                NetworkRequest {
                    name: a.network,
                    aliases: a.alias,
                    ip: a.ip,
                    mac: None,
                },
            )?;
            Ok(0)
        }
        NetworkCommand::Disconnect(a) => {
            let _ = a.force;
            let mut e = crate::containers::engine(ctx)?;
            e.network_disconnect(&a.container, &a.network)?;
            Ok(0)
        }
    }
}

fn labels(list: &[String]) -> BTreeMap<String, String> {
    list.iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn create(ctx: &Ctx, a: CreateArgs) -> Result<i32> {
    if let Some(d) = a.driver.as_deref().filter(|d| *d != "bridge") {
        bail!("--driver {d}: only the bridge driver is available");
    }
    let subnet = a
        .subnet
        .as_deref()
        .map(|s| {
            s.parse::<ipnet::Ipv4Net>().map_err(|_| {
                anyhow!("--subnet {s}: write an IPv4 subnet in CIDR form, e.g. 10.99.0.0/24")
            })
        })
        .transpose()?;
    let mut e = crate::containers::engine(ctx)?;
    let net = e.network_create(
        &a.name,
        &NetworkOptions {
            subnet,
            gateway: a.gateway,
            internal: a.internal,
            labels: labels(&a.label),
        },
    )?;
    println!("{}", net.id);
    Ok(0)
}

fn driver_scope() -> (&'static str, &'static str) {
    ("bridge", "local")
}

/// Docker's `network inspect` object.
pub fn network_json(e: &Engine, n: &Network) -> Value {
    let mut containers = serde_json::Map::new();
    for a in e.network_attachments(n).unwrap_or_default() {
        let name = e.lookup(&a.container).map(|c| c.name).unwrap_or_default();
        containers.insert(
            a.container.clone(),
            json!({
                "Name": name,
                "MacAddress": a.endpoint.mac,
                "IPv4Address": format!("{}/{}", a.endpoint.ip, n.subnet.prefix_len()),
                "IPv6Address": "",
            }),
        );
    }
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": n.created,
        "Scope": driver_scope().1,
        "Driver": driver_scope().0,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": {}, "Config": [{"Subnet": n.subnet.to_string(), "Gateway": n.gateway.to_string()}]},
        "Internal": n.internal,
        "Attachable": false,
        "Containers": containers,
        "Options": {
            "com.docker.network.bridge.name": n.bridge,
            "com.docker.network.bridge.enable_icc": "true",
            "com.docker.network.bridge.enable_ip_masquerade": (!n.internal).to_string(),
            "hako.nftables.table": e.firewall_table(),
        },
        "Labels": n.labels,
    })
}

fn matches_filter(n: &Network, f: &str) -> Result<bool> {
    let (k, val) = f.split_once('=').unwrap_or((f, ""));
    Ok(match k {
        "name" => n.name.contains(val),
        "id" => n.id.starts_with(val),
        "driver" => val == "bridge",
        "type" => match val {
            "custom" => n.name != hako_engine::networks::DEFAULT_NETWORK,
            "builtin" => n.name == hako_engine::networks::DEFAULT_NETWORK,
            _ => bail!("--filter type={val}: use custom or builtin"),
        },
        "label" => match val.split_once('=') {
            Some((lk, lv)) => n.labels.get(lk).is_some_and(|x| x == lv),
            None => n.labels.contains_key(val),
        },
        _ => bail!("--filter {f}: use name=, id=, label=, driver= or type="),
    })
}

fn ls(ctx: &Ctx, a: LsArgs) -> Result<i32> {
    let mut e = crate::containers::engine(ctx)?;
    let mut rows = Vec::new();
    for n in e.networks()? {
        let mut keep = true;
        for f in &a.filter {
            keep &= matches_filter(&n, f)?;
        }
        if !keep {
            continue;
        }
        let id = if a.no_trunc {
            n.id.clone()
        } else {
            n.id[..12].to_string()
        };
        rows.push(json!({
            "ID": id,
            "Name": n.name,
            "Driver": driver_scope().0,
            "Scope": driver_scope().1,
            "Internal": n.internal,
            "CreatedAt": n.created,
            "Labels": n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        }));
    }
    if a.quiet {
        for r in &rows {
            println!("{}", r["ID"].as_str().unwrap_or_default());
        }
        return Ok(0);
    }
    let column = |f: &str| match f {
        "ID" => "NETWORK ID".to_string(),
        other => other.to_uppercase(),
    };
    format::print_rows(
        &rows,
        a.format.as_deref(),
        "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}",
        &column,
    )?;
    Ok(0)
}

/// `inspect` of a network; `None` if there is no network `name`.
pub fn inspect_network(ctx: &Ctx, name: &str) -> Result<Option<Value>> {
    let e = crate::containers::engine(ctx)?;
    match e.network(name) {
        Ok(n) => Ok(Some(network_json(&e, &n))),
        Err(hako_engine::Error::NotFound(_)) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

fn inspect(ctx: &Ctx, a: InspectArgs) -> Result<i32> {
    let e = crate::containers::engine(ctx)?;
    crate::containers::inspect_each(&a.networks, a.format.as_deref(), |n| {
        e.network(n).map(|net| network_json(&e, &net))
    })
}

fn rm(ctx: &Ctx, a: RmArgs) -> Result<i32> {
    let mut e = crate::containers::engine(ctx)?;
    crate::containers::remove_each(&a.networks, a.force, |n| e.network_remove(n).map(drop))
}

fn prune(ctx: &Ctx, a: PruneArgs) -> Result<i32> {
    if !a.force {
        println!(
            "WARNING! This will remove all custom networks not used by at least one container."
        );
        if !crate::volumes::confirm("Are you sure you want to continue?")? {
            return Ok(0);
        }
    }
    let mut e = crate::containers::engine(ctx)?;
    let removed = e.network_prune()?;
    if !removed.is_empty() {
        println!("Deleted Networks:");
        for n in &removed {
            println!("{n}");
        }
    }
    Ok(0)
}
