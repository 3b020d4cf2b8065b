//! hako-net: container networking without helper processes on the hot
//! path. Network namespaces, bridges, veths, addresses and routes go
//! through netlink in this process; NAT and published ports through
//! libnftables in this process, in hako's own table; names through one
//! small resolver (`hako-dns`) per state root.
//!
//! This crate keeps no state of its own: the engine stores networks and
//! address assignments and hands them in.

pub mod dns;
pub mod firewall;
pub mod netlink;
pub mod netns;
mod nfnl;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::Path;

pub use firewall::Firewall;
pub use netlink::Netlink;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("nftables: {0}")]
    Firewall(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    PortInUse(String),
    #[error("{0}")]
    Exhausted(String),
}

impl Error {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A lock shared by every process on this host (in this network
/// namespace), whatever its state root: an abstract unix socket name, held
/// while bound and let go by the kernel when its holder ends, even by
/// SIGKILL. No file, so no path to agree on.
pub struct HostLock {
    _socket: std::os::unix::net::UnixListener,
}

impl HostLock {
    /// Waits until `name` is free and takes it.
    pub fn acquire(name: &str) -> Result<HostLock> {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)
            .map_err(|e| Error::io(format!("lock {name}"), e))?;
        loop {
            match std::os::unix::net::UnixListener::bind_addr(&addr) {
                Ok(socket) => return Ok(HostLock { _socket: socket }),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => return Err(Error::io(format!("lock {name}"), e)),
            }
        }
    }
}

/// A network: a bridge with a subnet, the gateway on the bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    pub id: String,
    /// The bridge device.
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// No way out of the network: no NAT, no forwarding, no upstream DNS.
    #[serde(default)]
    pub internal: bool,
    /// Containers resolve each other's names (user networks).
    #[serde(default)]
    pub dns: bool,
    #[serde(default)]
    pub mtu: u32,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub created: String,
}

/// A container's place on one network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    /// The interface inside the container (`eth0`, `eth1`, …).
    pub ifname: String,
    /// The host's end of the veth pair.
    pub host_veth: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A published port (or range of ports): `[IP:][HOST:]CONTAINER[/PROTO]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// The host address it is published on; none for all.
    pub host_ip: Option<Ipv4Addr>,
    /// The first host port; 0 until a free one is chosen.
    pub host_port: u16,
    pub container_port: u16,
    /// How many consecutive ports (1 for a single port).
    #[serde(default = "one")]
    pub range: u16,
    pub protocol: Protocol,
}

fn one() -> u16 {
    1
}

impl PortMapping {
    pub fn count(&self) -> u16 {
        self.range.max(1)
    }

    /// Parses Docker's `-p` syntax.
    pub fn parse(s: &str) -> Result<PortMapping> {
        let bad = |why: &str| {
            Error::Invalid(format!(
                "invalid port mapping {s:?}: {why} (use [IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp], e.g. 8080:80)"
            ))
        };
        let (rest, protocol) = match s.rsplit_once('/') {
            Some((r, "tcp")) => (r, Protocol::Tcp),
            Some((r, "udp")) => (r, Protocol::Udp),
            Some((_, p)) => return Err(bad(&format!("unknown protocol {p:?}"))),
            None => (s, Protocol::Tcp),
        };
        let parts: Vec<&str> = rest.rsplitn(3, ':').collect();
        let (ip, host, container) = match parts.as_slice() {
            [c] => (None, None, *c),
            [c, h] => (None, Some(*h), *c),
            [c, h, ip] => (Some(*ip), Some(*h), *c),
            _ => return Err(bad("too many parts")),
        };
        let range = |r: &str| -> Result<(u16, u16)> {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            let a: u16 = a.parse().map_err(|_| bad(&format!("bad port {a:?}")))?;
            let b: u16 = b.parse().map_err(|_| bad(&format!("bad port {b:?}")))?;
            if a == 0 || b < a {
                return Err(bad(&format!("bad port range {r:?}")));
            }
            Ok((a, b - a + 1))
        };
        let (container_port, count) = range(container)?;
        let (host_port, host_count) = match host {
            None | Some("") => (0, count),
            Some(h) => range(h)?,
        };
        if host_port != 0 && host_count != count {
            return Err(bad("the host and container ranges differ in length"));
        }
        if host_port == 0 && count > 1 {
            return Err(bad("a range of container ports needs a host range"));
        }
        let host_ip = match ip.map(|i| i.trim_start_matches('[').trim_end_matches(']')) {
            None | Some("") => None,
            Some(i) => Some(
                i.parse::<Ipv4Addr>()
                    .map_err(|_| bad(&format!("{i:?} is not an IPv4 address")))?,
            ),
        };
        Ok(PortMapping {
            host_ip,
            host_port,
            container_port,
            range: count,
            protocol,
        })
    }
}

impl std::fmt::Display for PortMapping {
    /// Docker's form: `0.0.0.0:8080->80/tcp`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let p = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        if self.count() > 1 {
            write!(
                f,
                "{ip}:{}-{}->{}-{}/{p}",
                self.host_port,
                self.host_port + self.count() - 1,
                self.container_port,
                self.container_port + self.count() - 1
            )
        } else {
            write!(f, "{ip}:{}->{}/{p}", self.host_port, self.container_port)
        }
    }
}

/// The subnets hako tries for a new network, in order: none may overlap
/// a route the host has or a network hako made.
pub fn choose_subnet(routes: &[netlink::Route], taken: &[Ipv4Net]) -> Result<Ipv4Net> {
    let overlaps = |a: &Ipv4Net, b: &Ipv4Net| a.contains(&b.network()) || b.contains(&a.network());
    let candidates = (88u8..=255)
        .map(|b| Ipv4Net::new(Ipv4Addr::new(10, b, 0, 0), 16))
        .chain((17u8..=31).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16)))
        .filter_map(|n| n.ok());
    for c in candidates {
        let clash = routes
            .iter()
            .filter(|r| r.destination.prefix_len() > 0)
            .any(|r| overlaps(&r.destination, &c))
            || taken.iter().any(|t| overlaps(t, &c));
        if !clash {
            return Ok(c);
        }
    }
    Err(Error::Exhausted(
        "no free private subnet is left for a new network; give one with --subnet".into(),
    ))
}

/// An address for a container on `net`: `requested` when it is free, else
/// the lowest free one. `used` are the addresses held on that network.
pub fn allocate_ip(
    net: &Network,
    used: &[Ipv4Addr],
    requested: Option<Ipv4Addr>,
) -> Result<Ipv4Addr> {
    let free = |ip: &Ipv4Addr| {
        *ip != net.gateway
            && *ip != net.subnet.network()
            && *ip != net.subnet.broadcast()
            && !used.contains(ip)
    };
    if let Some(ip) = requested {
        if !net.subnet.contains(&ip) {
            return Err(Error::Invalid(format!(
                "address {ip} is not in the subnet {} of network {}",
                net.subnet, net.name
            )));
        }
        if !free(&ip) {
            return Err(Error::Invalid(format!(
                "address {ip} is in use on network {}",
                net.name
            )));
        }
        return Ok(ip);
    }
    net.subnet.hosts().find(free).ok_or_else(|| {
        Error::Exhausted(format!(
            "network {} has no free address left ({} are in use)",
            net.name,
            used.len()
        ))
    })
}

/// A locally administered MAC from the address, as Docker makes them.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(Error::Invalid(format!("invalid MAC address {s:?}")));
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16)
            .map_err(|_| Error::Invalid(format!("invalid MAC address {s:?}")))?;
    }
    if mac[0] & 1 == 1 {
        return Err(Error::Invalid(format!(
            "invalid MAC address {s:?}: it is a multicast address"
        )));
    }
    Ok(mac)
}

/// Checks a user-given MAC address.
pub fn check_mac(s: &str) -> Result<()> {
    parse_mac(s).map(drop)
}

/// A short, stable hash (FNV-1a) of `parts`, for names of host objects
/// (devices, tables) that must be unique and fit the kernel's limits.
pub fn name_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        let sep: &[u8] = if i == 0 { &[] } else { &[0] };
        for b in sep.iter().chain(part.iter()) {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The name of the host's end of a container's veth on a network.
pub fn veth_name(container_id: &str, network_id: &str) -> String {
    let h = name_hash(&[container_id.as_bytes(), network_id.as_bytes()]);
    format!("veth{:010x}", h & 0xff_ffff_ffff)
}

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(path, value).map_err(|e| Error::io(format!("write {path}"), e))
}

/// Makes the host's side of `net`: its firewall rules, then its bridge
/// with the gateway address, up (in that order, so that a bridge that
/// exists means the rest is there too). Repeating it is harmless.
pub fn ensure_network(fw: &mut Firewall, nl: &mut Netlink, net: &Network) -> Result<()> {
    if nl.link_index(&net.bridge)?.is_some() {
        return Ok(());
    }
    let made = make_network(fw, nl, net);
    if made.is_err() {
        // Nothing half made stays: the rules, the bridge.
        let _ = remove_network(fw, nl, net);
    }
    made
}

fn make_network(fw: &mut Firewall, nl: &mut Netlink, net: &Network) -> Result<()> {
    fw.ensure_table()?;
    fw.add_network(&net.bridge, net.subnet, net.internal)?;
    if !net.internal {
        write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
    }
    match nl.create_bridge(&net.bridge, net.mtu) {
        Err(Error::Netlink { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {}
        r => r?,
    }
    let index = nl
        .link_index(&net.bridge)?
        .ok_or_else(|| Error::Invalid(format!("bridge {} vanished", net.bridge)))?;
    nl.add_address(index, net.gateway, net.subnet.prefix_len())?;
    // Published ports reached on 127.0.0.1 are routed into the bridge.
    write_sysctl(
        &format!("/proc/sys/net/ipv4/conf/{}/route_localnet", net.bridge),
        "1",
    )?;
    nl.set_up(index)
}

/// Removes the host's side of `net`.
pub fn remove_network(fw: &mut Firewall, nl: &mut Netlink, net: &Network) -> Result<()> {
    nl.delete_link(&net.bridge)?;
    fw.remove_network(&net.bridge, net.subnet)
}

/// Plugs the namespace at `netns` (reached by `inside`) into `net`: a veth
/// pair into the bridge, the address, and with `default_route` the route
/// out through the gateway.
pub fn attach(
    host: &mut Netlink,
    inside: &mut Netlink,
    netns: &Path,
    net: &Network,
    ep: &Endpoint,
    default_route: bool,
) -> Result<()> {
    let bridge = host.link_index(&net.bridge)?.ok_or_else(|| {
        Error::Invalid(format!(
            "the bridge {} of network {} is missing",
            net.bridge, net.name
        ))
    })?;
    let ns = std::fs::File::open(netns)
        .map_err(|e| Error::io(format!("open {}", netns.display()), e))?;
    let create = |host: &mut Netlink| {
        host.create_veth(
            &ep.host_veth,
            &ep.ifname,
            ns.as_fd(),
            parse_mac(&ep.mac)?,
            net.mtu,
            bridge,
        )
    };
    match create(host) {
        // A namespace removed a moment ago may still hold this name: the
        // kernel takes its devices down in the background.
        Err(Error::Netlink { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {
            host.delete_link(&ep.host_veth)?;
            create(host)?;
        }
        r => r?,
    }
    let index = inside
        .link_index(&ep.ifname)?
        .ok_or_else(|| Error::Invalid(format!("{} did not arrive in the container", ep.ifname)))?;
    inside.add_address(index, ep.ip, net.subnet.prefix_len())?;
    inside.set_up(index)?;
    if default_route {
        inside.add_default_route(net.gateway)?;
    }
    Ok(())
}

/// Unplugs an endpoint: its veth pair goes (the container's end too).
/// (A container's whole network goes faster with its namespace:
/// [`netns::remove`] takes every veth along, in the background.)
pub fn detach(host: &mut Netlink, ep: &Endpoint) -> Result<()> {
    host.delete_link(&ep.host_veth)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn host_lock_is_exclusive_and_let_go() {
        let name = format!("hako-test-lock-{}", std::process::id());
        let held = HostLock::acquire(&name).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let n = name.clone();
        let waiter = std::thread::spawn(move || {
            let _l = HostLock::acquire(&n).unwrap();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(100))
                .is_err()
        );
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        waiter.join().unwrap();
    }

    #[test]
    fn parses_port_mappings() {
        let p = PortMapping::parse("8080:80").unwrap();
        assert_eq!((p.host_port, p.container_port, p.count()), (8080, 80, 1));
        assert_eq!(p.to_string(), "0.0.0.0:8080->80/tcp");
        let p = PortMapping::parse("127.0.0.1:53:53/udp").unwrap();
        assert_eq!(p.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(p.protocol, Protocol::Udp);
        let p = PortMapping::parse("80").unwrap();
        assert_eq!((p.host_port, p.container_port), (0, 80));
        let p = PortMapping::parse("127.0.0.1::80").unwrap();
        assert_eq!((p.host_ip, p.host_port), (Some(Ipv4Addr::LOCALHOST), 0));
        let p = PortMapping::parse("8000-8009:80-89").unwrap();
        assert_eq!(p.count(), 10);
        assert_eq!(p.to_string(), "0.0.0.0:8000-8009->80-89/tcp");
        for bad in [
            "x",
            "8000-8009:80",
            "80/sctp",
            "1.2.3:80:80",
            "0",
            "9-8:9-8",
            "80-81",
        ] {
            assert!(PortMapping::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subnets_avoid_routes_and_taken_networks() {
        let r = |s: &str| netlink::Route {
            destination: s.parse().unwrap(),
            oif: 2,
        };
        let routes = [r("0.0.0.0/0"), r("10.88.5.0/24"), r("192.0.2.0/24")];
        let taken: Vec<Ipv4Net> = vec!["10.89.0.0/16".parse().unwrap()];
        assert_eq!(
            choose_subnet(&routes, &taken).unwrap(),
            "10.90.0.0/16".parse::<Ipv4Net>().unwrap()
        );
        // A wide route covers every 10.x candidate.
        let routes = [r("10.0.0.0/8")];
        assert_eq!(
            choose_subnet(&routes, &[]).unwrap(),
            "172.17.0.0/16".parse::<Ipv4Net>().unwrap()
        );
    }

    #[test]
    fn allocates_free_addresses() {
        let net = Network {
            name: "n".into(),
            id: "1".into(),
            bridge: "b".into(),
            subnet: "10.1.0.0/29".parse().unwrap(),
            gateway: "10.1.0.1".parse().unwrap(),
            internal: false,
            dns: false,
            mtu: 0,
            labels: Default::default(),
            created: String::new(),
        };
        let a: Ipv4Addr = "10.1.0.2".parse().unwrap();
        assert_eq!(allocate_ip(&net, &[], None).unwrap(), a);
        assert_eq!(
            allocate_ip(&net, &[a], None).unwrap(),
            "10.1.0.3".parse::<Ipv4Addr>().unwrap()
        );
        assert!(allocate_ip(&net, &[a], Some(a)).is_err());
        assert!(allocate_ip(&net, &[], Some("10.2.0.1".parse().unwrap())).is_err());
        assert!(allocate_ip(&net, &[], Some(net.gateway)).is_err());
        let all: Vec<Ipv4Addr> = net.subnet.hosts().collect();
        assert!(matches!(
            allocate_ip(&net, &all, None),
            Err(Error::Exhausted(_))
        ));
        assert_eq!(mac_for(a), "02:42:0a:01:00:02");
        assert!(check_mac("03:00:00:00:00:01").is_err());
        assert!(veth_name("abc", "def").len() <= 15);
    }
}
