//! Networks: their records, the default `bridge`, and what a container
//! takes on them (a network namespace, a veth and an address per network,
//! published ports, names for the resolver) and gives back.
//!
//! The records live in the state database: `networks`, `endpoints` (one
//! row per container and network while the container's network is up:
//! the address assignment; the UNIQUE key makes a double assignment
//! impossible) and `published` (a container's host ports, while they are
//! in the firewall). Every release is driven by those rows, so it can be
//! repeated after a crash at any step.

use crate::error::{Error, IoContext, Result};
use crate::{Container, Engine};
use hako_net::{Endpoint, Firewall, Netlink, Network, PortMapping};
use ipnet::Ipv4Net;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS networks (
    name TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS endpoints (
    container TEXT NOT NULL,
    network TEXT NOT NULL,
    ip TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (container, network),
    UNIQUE (network, ip)
);
CREATE TABLE IF NOT EXISTS published (
    container TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
";

/// The network containers join when no other is named, as in Docker.
pub const DEFAULT_NETWORK: &str = "bridge";

/// A network a container asks to join (`--network`, `network connect`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkRequest {
    pub name: String,
    pub aliases: Vec<String>,
    pub ip: Option<Ipv4Addr>,
    pub mac: Option<String>,
}

/// `network create`'s options.
#[derive(Clone, Debug, Default)]
pub struct NetworkOptions {
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub internal: bool,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A container's place on a network, with its name (for `inspect`).
#[derive(Clone, Debug)]
pub struct Attachment {
    pub container: String,
    pub endpoint: Endpoint,
}

fn net_err(e: hako_net::Error) -> Error {
    match e {
        hako_net::Error::PortInUse(m) => Error::Conflict(m),
        hako_net::Error::Invalid(m) => Error::Invalid(m),
        e => Error::Network(e.to_string()),
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Invalid(e.to_string()))
}

fn from_json<T: for<'a> Deserialize<'a>>(what: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::Corrupt(format!("{what}: {e}")))
}

/// The first column of the rows of `sql` (one text parameter at most).
fn column(conn: &rusqlite::Connection, sql: &str, param: Option<&str>) -> Result<Vec<String>> {
    let mut st = conn.prepare(sql).map_err(Error::sql)?;
    let params: Vec<&str> = param.into_iter().collect();
    st.query_map(rusqlite::params_from_iter(params), |r| r.get(0))
        .map_err(Error::sql)?
        .collect::<rusqlite::Result<_>>()
        .map_err(Error::sql)
}

/// Whether a container with network mode `mode` has networks of its own
/// (not `none`, `host` or another container's).
pub fn networked(mode: &str) -> bool {
    !matches!(mode, "none" | "host") && !mode.starts_with("container:")
}

impl Engine {
    /// A tag that keeps this state root's host objects (bridges, the
    /// firewall table) apart from another root's on the same host; none
    /// for the default root, whose names are the plain ones.
    fn net_tag(&self) -> Option<String> {
        if self.root == std::path::Path::new("/var/lib/hako") {
            return None;
        }
        let h = hako_net::name_hash(&[self.root.as_os_str().as_encoded_bytes()]);
        Some(format!("{:08x}", h & 0xffff_ffff))
    }

    /// hako's nftables table for this root.
    pub fn firewall_table(&self) -> String {
        match self.net_tag() {
            None => "hako".into(),
            Some(t) => format!("hako-{t}"),
        }
    }

    fn bridge_name(&self, name: &str, id: &str) -> String {
        match (name, self.net_tag()) {
            (DEFAULT_NETWORK, None) => "hako0".into(),
            (DEFAULT_NETWORK, Some(t)) => format!("hk{t}0"),
            _ => format!("hkbr-{}", &id[..10]),
        }
    }

    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.runroot.join("netns").join(id)
    }

    fn dns_dir(&self) -> PathBuf {
        self.runroot.join("dns")
    }

    fn network_lock(&self) -> Result<fs::File> {
        self.run_lock("network.lock")
    }

    fn network_row(&self, name: &str) -> Result<Option<Network>> {
        let conn = self.db.conn();
        let data: Option<String> = conn
            .query_row(
                "SELECT data FROM networks WHERE name = ?1 OR id = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()
            .map_err(Error::sql)?;
        if let Some(d) = data {
            return Ok(Some(from_json(&format!("network {name}"), &d)?));
        }
        // A unique id prefix, as for containers.
        if name.len() >= 3 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            let rows = column(
                conn,
                "SELECT data FROM networks WHERE id LIKE ?1 || '%'",
                Some(name),
            )?;
            if rows.len() == 1 {
                return Ok(Some(from_json(&format!("network {name}"), &rows[0])?));
            }
        }
        Ok(None)
    }

    /// All networks, the default `bridge` among them.
    pub fn networks(&mut self) -> Result<Vec<Network>> {
        self.network(DEFAULT_NETWORK)?;
        self.networks_raw()
    }

    /// The network `name` (or id); the default `bridge` is made on first
    /// use.
    pub fn network(&self, name: &str) -> Result<Network> {
        if let Some(n) = self.network_row(name)? {
            return Ok(n);
        }
        if name == DEFAULT_NETWORK {
            let _lock = self.network_lock()?;
            if let Some(n) = self.network_row(name)? {
                return Ok(n);
            }
            return self.insert_network(name, &NetworkOptions::default(), false);
        }
        Err(Error::NotFound(format!(
            "network {name} not found (see `hako network ls`, or make it with `hako network create {name}`)"
        )))
    }

    /// Chooses the subnet and records the network (under the network lock).
    fn insert_network(&self, name: &str, opts: &NetworkOptions, dns: bool) -> Result<Network> {
        // Other state roots on this host choose subnets too: the choice,
        // and the bridge whose route then claims it, are made under a
        // lock of the whole host.
        let _host = hako_net::HostLock::acquire("hako-net-subnets").map_err(net_err)?;
        let taken: Vec<Ipv4Net> = self.networks_raw()?.into_iter().map(|n| n.subnet).collect();
        let routes = Netlink::open()
            .and_then(|mut n| n.routes())
            .map_err(net_err)?;
        let overlaps =
            |a: &Ipv4Net, b: &Ipv4Net| a.contains(&b.network()) || b.contains(&a.network());
        let subnet = match opts.subnet {
            Some(s) => {
                if let Some(t) = taken.iter().find(|t| overlaps(t, &s)) {
                    return Err(Error::Conflict(format!(
                        "subnet {s} overlaps the subnet {t} of another network"
                    )));
                }
                if let Some(r) = routes
                    .iter()
                    .find(|r| r.destination.prefix_len() > 0 && overlaps(&r.destination, &s))
                {
                    return Err(Error::Conflict(format!(
                        "subnet {s} overlaps the route to {} of this host; choose another",
                        r.destination
                    )));
                }
                s.trunc()
            }
            None => hako_net::choose_subnet(&routes, &taken).map_err(net_err)?,
        };
        if subnet.prefix_len() > 30 {
            return Err(Error::Invalid(format!(
                "subnet {subnet} is too small for containers (use /30 or wider)"
            )));
        }
        let gateway = match opts.gateway {
            Some(g) if !subnet.contains(&g) => {
                return Err(Error::Invalid(format!(
                    "gateway {g} is not in the subnet {subnet}"
                )));
            }
            Some(g) => g,
            None => subnet
                .hosts()
                .next()
                .ok_or_else(|| Error::Invalid(format!("subnet {subnet} has no hosts")))?,
        };
        let id = crate::random_id()?;
        let net = Network {
            name: name.to_string(),
            bridge: self.bridge_name(name, &id),
            id,
            subnet,
            gateway,
            internal: opts.internal,
            dns,
            mtu: 0,
            labels: opts.labels.clone(),
            created: crate::now(),
        };
        self.db
            .conn()
            .execute(
                "INSERT INTO networks (name, id, data) VALUES (?1, ?2, ?3)",
                params![net.name, net.id, to_json(&net)?],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Error::Conflict(format!("network {name} exists already"))
                }
                e => Error::sql(e),
            })?;
        let made = Firewall::open(&self.firewall_table())
            .and_then(|mut fw| {
                let mut nl = Netlink::open()?;
                hako_net::ensure_network(&mut fw, &mut nl, &net)
            })
            .map_err(net_err);
        if let Err(e) = made {
            let _ = self
                .db
                .conn()
                .execute("DELETE FROM networks WHERE name = ?1", [&net.name]);
            return Err(e);
        }
        Ok(net)
    }

    fn networks_raw(&self) -> Result<Vec<Network>> {
        column(
            self.db.conn(),
            "SELECT data FROM networks ORDER BY name",
            None,
        )?
        .iter()
        .map(|d| from_json("network", d))
        .collect()
    }

    /// `network create`: a user network, whose containers resolve each
    /// other by name. Its bridge is made at once.
    pub fn network_create(&mut self, name: &str, opts: &NetworkOptions) -> Result<Network> {
        if matches!(name, DEFAULT_NETWORK | "host" | "none") || name.starts_with("container:") {
            return Err(Error::Conflict(format!(
                "{name} is a predefined network; choose another name"
            )));
        }
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            || !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        {
            return Err(Error::Invalid(format!(
                "invalid network name {name:?}: use letters, digits, '_', '.' and '-'"
            )));
        }
        let net = {
            let _lock = self.network_lock()?;
            if self.network_row(name)?.is_some() {
                return Err(Error::Conflict(format!("network {name} exists already")));
            }
            self.insert_network(name, opts, true)?
        };
        Ok(net)
    }

    /// The containers on a network now.
    pub fn network_attachments(&self, net: &Network) -> Result<Vec<Attachment>> {
        let mut st = self
            .db
            .conn()
            .prepare("SELECT container, data FROM endpoints WHERE network = ?1 ORDER BY ip")
            .map_err(Error::sql)?;
        let rows: Vec<(String, String)> = st
            .query_map([&net.name], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(Error::sql)?
            .collect::<rusqlite::Result<_>>()
            .map_err(Error::sql)?;
        rows.into_iter()
            .map(|(container, d)| {
                Ok(Attachment {
                    container,
                    endpoint: from_json("endpoint", &d)?,
                })
            })
            .collect()
    }

    /// A container's endpoints (while its network is up).
    pub fn endpoints(&self, id: &str) -> Result<Vec<Endpoint>> {
        column(
            self.db.conn(),
            "SELECT data FROM endpoints WHERE container = ?1 ORDER BY rowid",
            Some(id),
        )?
        .iter()
        .map(|d| from_json("endpoint", d))
        .collect()
    }

    /// A container's published ports (while its network is up).
    pub fn published_ports(&self, id: &str) -> Result<Vec<PortMapping>> {
        let data: Option<String> = self
            .db
            .conn()
            .query_row(
                "SELECT data FROM published WHERE container = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()
            .map_err(Error::sql)?;
        data.map(|d| from_json("published ports", &d))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// `network rm`: refused while containers are on it.
    pub fn network_remove(&mut self, name: &str) -> Result<Network> {
        if matches!(name, "host" | "none") {
            return Err(Error::Conflict(format!(
                "{name} is a predefined network and cannot be removed"
            )));
        }
        let net = self
            .network_row(name)?
            .ok_or_else(|| Error::NotFound(format!("network {name} not found")))?;
        if net.name == DEFAULT_NETWORK {
            return Err(Error::Conflict(
                "bridge is a predefined network and cannot be removed".into(),
            ));
        }
        let _lock = self.network_lock()?;
        let users: Vec<String> = self
            .network_attachments(&net)?
            .into_iter()
            .map(|a| a.container)
            .collect();
        if !users.is_empty() {
            let names: Vec<String> = users
                .iter()
                .map(|id| {
                    self.db
                        .get(id)
                        .ok()
                        .flatten()
                        .map(|c| c.name)
                        .unwrap_or_else(|| id[..12.min(id.len())].to_string())
                })
                .collect();
            return Err(Error::Conflict(format!(
                "network {} has active endpoints ({}); stop or disconnect them first",
                net.name,
                names.join(", ")
            )));
        }
        let mut fw = Firewall::open(&self.firewall_table()).map_err(net_err)?;
        let mut nl = Netlink::open().map_err(net_err)?;
        hako_net::remove_network(&mut fw, &mut nl, &net).map_err(net_err)?;
        let _ = hako_net::dns::remove_network(&self.dns_dir(), &net.name);
        self.db
            .conn()
            .execute("DELETE FROM networks WHERE name = ?1", [&net.name])
            .map_err(Error::sql)?;
        Ok(net)
    }

    /// `network prune`: removes user networks no container is on or asks for.
    pub fn network_prune(&mut self) -> Result<Vec<String>> {
        let wanted: std::collections::BTreeSet<String> = self
            .db
            .all()?
            .into_iter()
            .flat_map(|c| c.config.networks.into_iter().map(|r| r.name))
            .collect();
        let mut removed = Vec::new();
        for net in self.networks_raw()? {
            if net.name == DEFAULT_NETWORK || wanted.contains(&net.name) || wanted.contains(&net.id)
            {
                continue;
            }
            if self.network_remove(&net.name).is_ok() {
                removed.push(net.name);
            }
        }
        Ok(removed)
    }

    /// Removes every network with its host side, the default bridge's
    /// too, and hako's firewall table (`system reset`). No container may
    /// be on any.
    pub fn network_reset(&mut self) -> Result<()> {
        for net in self.networks_raw()? {
            if net.name != DEFAULT_NETWORK {
                self.network_remove(&net.name)?;
            }
        }
        let _lock = self.network_lock()?;
        if let Some(b) = self.network_row(DEFAULT_NETWORK)? {
            if !self.network_attachments(&b)?.is_empty() {
                return Err(Error::Conflict(
                    "containers are still on the bridge network; remove them first".into(),
                ));
            }
            let mut nl = Netlink::open().map_err(net_err)?;
            nl.delete_link(&b.bridge).map_err(net_err)?;
            self.db
                .conn()
                .execute("DELETE FROM networks WHERE name = ?1", [DEFAULT_NETWORK])
                .map_err(Error::sql)?;
        }
        // Without libnftables no table was ever made.
        if let Ok(mut fw) = Firewall::open(&self.firewall_table()) {
            fw.delete_table();
        }

        Ok(())
    }

    /// Makes the host's side of every network `c` asks for and records its
    /// addresses. Under the network lock, so addresses are handed out one
    /// at a time.
    fn assign_addresses(&self, c: &Container) -> Result<Vec<(Network, Endpoint)>> {
        let _lock = self.network_lock()?;
        let mut fw = Firewall::open(&self.firewall_table()).map_err(net_err)?;
        let mut nl = Netlink::open().map_err(net_err)?;
        c.config
            .networks
            .iter()
            .enumerate()
            .map(|(i, req)| self.assign_address(&mut fw, &mut nl, c, req, i))
            .collect()
    }

    /// One network's part of [`Engine::assign_addresses`]: the `index`th
    /// interface of `c`.
    fn assign_address(
        &self,
        fw: &mut Firewall,
        nl: &mut Netlink,
        c: &Container,
        req: &NetworkRequest,
        index: usize,
    ) -> Result<(Network, Endpoint)> {
        // Not `network()`: the caller holds the network lock, which that
        // takes to make the default network (made at create already).
        let net = self.network_row(&req.name)?.ok_or_else(|| {
            Error::NotFound(format!(
                "network {} not found (see `hako network ls`)",
                req.name
            ))
        })?;
        hako_net::ensure_network(fw, nl, &net).map_err(net_err)?;
        let used: Vec<Ipv4Addr> = column(
            self.db.conn(),
            "SELECT ip FROM endpoints WHERE network = ?1",
            Some(&net.name),
        )?
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
        let ip = hako_net::allocate_ip(&net, &used, req.ip).map_err(net_err)?;
        let mac = match &req.mac {
            Some(m) => {
                hako_net::check_mac(m).map_err(net_err)?;
                m.clone()
            }
            None => hako_net::mac_for(ip),
        };
        let mut aliases = req.aliases.clone();
        if net.dns {
            aliases.push(c.name.clone());
            aliases.push(c.short_id().to_string());
            if let Some(h) = &c.config.hostname {
                aliases.push(h.clone());
            }
        }
        let ep = Endpoint {
            network: net.name.clone(),
            ip,
            mac,
            ifname: format!("eth{index}"),
            host_veth: hako_net::veth_name(&c.id, &net.id),
            aliases,
        };
        self.db
            .conn()
            .execute(
                "INSERT INTO endpoints (container, network, ip, data) VALUES (?1, ?2, ?3, ?4)",
                params![c.id, net.name, ip.to_string(), to_json(&ep)?],
            )
            .map_err(Error::sql)?;
        Ok((net, ep))
    }

    /// `network connect`: `c` joins `network` (at once when it runs, else
    /// at its next start).
    pub fn network_connect(&mut self, what: &str, req: NetworkRequest) -> Result<()> {
        let found = self.db.lookup(what)?;
        let _lock = self.lock(&found.id)?;
        let mut c = self.get(&found.id)?;
        if !networked(&c.config.network) && c.config.network != "none" {
            return Err(Error::Invalid(format!(
                "container {} uses network mode {}; it cannot join networks",
                c.name, c.config.network
            )));
        }
        let net = self.network(&req.name)?;
        if c.config.networks.iter().any(|r| r.name == net.name) {
            return Err(Error::Conflict(format!(
                "container {} is on network {} already",
                c.name, net.name
            )));
        }
        if !net.dns && !req.aliases.is_empty() {
            return Err(Error::Invalid(format!(
                "network-scoped aliases work on user networks only, not on {}",
                net.name
            )));
        }
        let req = NetworkRequest {
            name: net.name.clone(),
            ..req
        };
        let running = matches!(c.status, crate::Status::Running | crate::Status::Paused);
        if running && !networked(&c.config.network) {
            return Err(Error::Conflict(format!(
                "container {} runs without a network of its own (--network none); stop it first",
                c.name
            )));
        }
        c.config.networks.push(req.clone());
        c.config.network = c.config.networks[0].name.clone();
        if running {
            let index = self.endpoints(&c.id)?.len();
            let (net, ep) = {
                let _nlock = self.network_lock()?;
                let mut fw = Firewall::open(&self.firewall_table()).map_err(net_err)?;
                let mut nl = Netlink::open().map_err(net_err)?;
                self.assign_address(&mut fw, &mut nl, &c, &req, index)?
            };
            let ns = self.netns_path(&c.id);
            let plugged = (|| -> Result<()> {
                let mut host = Netlink::open().map_err(net_err)?;
                let mut inside = Netlink::open_in(&ns).map_err(net_err)?;
                hako_net::attach(&mut host, &mut inside, &ns, &net, &ep, index == 0)
                    .map_err(net_err)?;
                self.update_names(std::iter::once(&net))
            })();
            if let Err(e) = plugged {
                self.release_endpoint(&c.id, &ep);
                return Err(e);
            }
        }
        self.db.update_config(&c)
    }

    /// `network disconnect`: `c` leaves `network`.
    pub fn network_disconnect(&mut self, what: &str, network: &str) -> Result<()> {
        let found = self.db.lookup(what)?;
        let _lock = self.lock(&found.id)?;
        let mut c = self.get(&found.id)?;
        let net = self.network(network)?;
        let Some(pos) = c.config.networks.iter().position(|r| r.name == net.name) else {
            return Err(Error::NotFound(format!(
                "container {} is not on network {}",
                c.name, net.name
            )));
        };
        c.config.networks.remove(pos);
        c.config.network = match c.config.networks.first() {
            Some(r) => r.name.clone(),
            // Docker keeps a container that left its last network with
            // none; hako says so.
            None => "none".into(),
        };
        if let Some(ep) = self
            .endpoints(&c.id)?
            .into_iter()
            .find(|ep| ep.network == net.name)
        {
            self.release_endpoint(&c.id, &ep);
        }
        self.db.update_config(&c)
    }

    /// After a rename: the container's endpoints answer to the new name.
    pub(crate) fn rename_endpoints(&self, id: &str, old: &str, new: &str) -> Result<()> {
        let mut nets = Vec::new();
        for mut ep in self.endpoints(id)? {
            let mut changed = false;
            for a in ep.aliases.iter_mut().filter(|a| *a == old) {
                *a = new.to_string();
                changed = true;
            }
            if changed {
                self.db
                    .conn()
                    .execute(
                        "UPDATE endpoints SET data = ?3 WHERE container = ?1 AND network = ?2",
                        params![id, ep.network, to_json(&ep)?],
                    )
                    .map_err(Error::sql)?;
                if let Some(net) = self.network_row(&ep.network)? {
                    nets.push(net);
                }
            }
        }
        self.update_names(nets.iter())
    }

    /// Unplugs one endpoint of a running container and frees its address.
    fn release_endpoint(&self, id: &str, ep: &Endpoint) {
        if let Ok(mut host) = Netlink::open() {
            let _ = hako_net::detach(&mut host, ep);
        }
        let _ = self.db.conn().execute(
            "DELETE FROM endpoints WHERE container = ?1 AND network = ?2",
            params![id, ep.network],
        );
        if let Ok(Some(net)) = self.network_row(&ep.network) {
            let _ = self.update_names(std::iter::once(&net));
        }
    }

    /// Sets up the network of `c` before it starts: its namespace (kept in
    /// a file, so a restart rejoins it), a veth and an address on each of
    /// its networks, its published ports, its names.
    pub(crate) fn network_up(&self, c: &Container) -> Result<Vec<(Network, Endpoint)>> {
        if !networked(&c.config.network) {
            return Ok(Vec::new());
        }
        // Whatever a crash left is released first.
        self.network_down(&c.id);
        let res = (|| -> Result<Vec<(Network, Endpoint)>> {
            let eps = self.assign_addresses(c)?;
            hako_runtime::trace::mark("engine: addresses assigned");
            let ns = self.netns_path(&c.id);
            let mut inside = hako_net::netns::create(&ns).map_err(net_err)?;
            let mut host = Netlink::open().map_err(net_err)?;
            for (i, (net, ep)) in eps.iter().enumerate() {
                hako_net::attach(&mut host, &mut inside, &ns, net, ep, i == 0).map_err(net_err)?;
            }
            hako_runtime::trace::mark("engine: veths plugged");
            if let Some((_, first)) = eps.first()
                && !c.config.ports.is_empty()
            {
                self.publish(c, first.ip)?;
                hako_runtime::trace::mark("engine: ports published");
            }
            self.update_names(eps.iter().map(|(n, _)| n))?;
            Ok(eps)
        })();
        if res.is_err() {
            self.network_down(&c.id);
        }
        res
    }

    /// Takes out of the firewall the given host ports where they lead to
    /// an address no other container holds (left by a container gone a
    /// moment ago).
    fn take_stale_ports(&self, table: &str, id: &str, wanted: &[PortMapping]) -> Result<()> {
        let live: std::collections::HashSet<Ipv4Addr> = column(
            self.db.conn(),
            "SELECT ip FROM endpoints WHERE container != ?1",
            Some(id),
        )?
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
        let mut fw = Firewall::open(table).map_err(net_err)?;
        let stale: Vec<PortMapping> = fw
            .published()
            .map_err(net_err)?
            .into_iter()
            .filter(|(p, target)| {
                !live.contains(target)
                    && wanted.iter().any(|w| {
                        w.protocol == p.protocol
                            && w.host_ip.filter(|i| !i.is_unspecified()) == p.host_ip
                            && (w.host_port..w.host_port + w.count()).contains(&p.host_port)
                    })
            })
            .map(|(p, _)| p)
            .collect();
        hako_net::firewall::remove_ports(table, &stale);
        Ok(())
    }

    fn publish(&self, c: &Container, ip: Ipv4Addr) -> Result<()> {
        let mut ports = c.config.ports.clone();
        for p in ports.iter_mut().filter(|p| p.host_port == 0) {
            p.host_port = free_port(p)?;
        }
        // The record first: a release after a crash then finds them.
        self.db
            .conn()
            .execute(
                "INSERT OR REPLACE INTO published (container, data) VALUES (?1, ?2)",
                params![c.id, to_json(&ports)?],
            )
            .map_err(Error::sql)?;
        let table = self.firewall_table();
        let mut added = hako_net::firewall::add_ports(&table, ip, &ports);
        if matches!(added, Err(hako_net::Error::PortInUse(_))) {
            self.take_stale_ports(&table, &c.id, &ports)?;
            added = hako_net::firewall::add_ports(&table, ip, &ports);
        }
        if let Err(e) = added {
            // Nothing of this container's was added: the row must not
            // lead a release to another container's ports.
            let _ = self
                .db
                .conn()
                .execute("DELETE FROM published WHERE container = ?1", [&c.id]);
            return Err(match e {
                hako_net::Error::PortInUse(_) => Error::Conflict(format!(
                    "cannot publish {} for container {}: a host port is in use by another container",
                    ports
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    c.name
                )),
                e => net_err(e),
            });
        }
        Ok(())
    }

    /// Writes the resolver's records of `nets` (user networks) and makes
    /// sure it runs while any has containers.
    fn update_names<'a>(&self, nets: impl Iterator<Item = &'a Network>) -> Result<()> {
        let dir = self.dns_dir();
        let mut any = false;
        for net in nets.filter(|n| n.dns) {
            let atts = self.network_attachments(net)?;
            if atts.is_empty() {
                let _ = hako_net::dns::remove_network(&dir, &net.name);
                continue;
            }
            let records = atts
                .into_iter()
                .map(|a| hako_net::dns::DnsRecord {
                    container: a.container,
                    names: a.endpoint.aliases,
                    ip: a.endpoint.ip,
                })
                .collect();
            hako_net::dns::write_network(
                &dir,
                &hako_net::dns::DnsNetwork {
                    name: net.name.clone(),
                    listen: SocketAddr::new(IpAddr::V4(net.gateway), 53),
                    internal: net.internal,
                    records,
                },
            )
            .map_err(|e| Error::Network(e.to_string()))?;
            any = true;
        }
        if any {
            if !self.dns_upstream.is_empty() {
                hako_net::dns::write_upstream(&dir, &self.dns_upstream)
                    .map_err(|e| Error::Network(e.to_string()))?;
            }
            hako_net::dns::ensure_running(&dir, &self.dns_bin)
                .map_err(|e| Error::Network(e.to_string()))?;
        }
        Ok(())
    }

    /// Releases what [`Engine::network_up`] took, as far as it got:
    /// published ports, veths, addresses, names, the namespace. Repeating
    /// it is harmless.
    pub(crate) fn network_down(&self, id: &str) {
        let ports = self.published_ports(id).unwrap_or_default();
        if !ports.is_empty() {
            // Taking elements out of an nftables map makes the kernel
            // wait for an RCU grace period (~10 ms here) when the socket
            // closes, so a child of this process does it in the
            // background. Should it die first, the next publish of those
            // host ports finds them leading nowhere and takes them out.
            release_in_background(&self.firewall_table(), &ports);
            let _ = self
                .db
                .conn()
                .execute("DELETE FROM published WHERE container = ?1", [id]);
        }
        hako_runtime::trace::mark("engine: ports released");
        let eps = self.endpoints(id).unwrap_or_default();
        if !eps.is_empty() {
            // The veths go with the namespace below: the kernel unplugs
            // them in the background (deleting each here would wait for
            // it, ~10 ms a veth). Unless a container that joined this
            // namespace still holds it: then they go now, before their
            // addresses can be handed out again.
            let joined = format!("container:{id}");
            let pinned = self.db.all().unwrap_or_default().iter().any(|o| {
                o.config.network == joined
                    && matches!(o.status, crate::Status::Running | crate::Status::Paused)
            });
            if pinned && let Ok(mut host) = Netlink::open() {
                for ep in &eps {
                    let _ = hako_net::detach(&mut host, ep);
                }
            }
            let _ = self
                .db
                .conn()
                .execute("DELETE FROM endpoints WHERE container = ?1", [id]);
            let nets: Vec<Network> = eps
                .iter()
                .filter_map(|ep| self.network_row(&ep.network).ok().flatten())
                .collect();
            let _ = self.update_names(nets.iter());
        }
        hako_runtime::trace::mark("engine: addresses released");
        hako_net::netns::remove(&self.netns_path(id));
        hako_runtime::trace::mark("engine: network namespace removed");
    }
}

/// A host port that nothing listens on now, from the kernel's ephemeral
/// range (the firewall then refuses it if a container has it already).
fn free_port(p: &PortMapping) -> Result<u16> {
    let ip = p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let port = match p.protocol {
        hako_net::Protocol::Tcp => std::net::TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port()),
        hako_net::Protocol::Udp => std::net::UdpSocket::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port()),
    };
    port.ctx(|| format!("find a free host port on {ip}"))
}

/// Takes `ports` out of the firewall table `table` in a detached child,
/// which then bears the kernel's wait.
fn release_in_background(table: &str, ports: &[PortMapping]) {
    crate::detached(|| hako_net::firewall::remove_ports(table, ports));
}
