//! NAT, published ports and network isolation in hako's own nftables
//! table, through libnftables loaded into this process (no `nft` or
//! `iptables` child per container). Nothing outside that table is read
//! or changed.
//!
//! The table's rules are fixed; containers and networks only add and
//! remove elements of its sets and maps (and two small chains per
//! network), so a container's setup is one short transaction.

use crate::nfnl::{self, Element};
use crate::{Error, PortMapping, Protocol, Result};
use ipnet::Ipv4Net;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

type CtxNew = unsafe extern "C" fn(u32) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type CtxBuffer = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxGetBuffer = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;
type SetFlags = unsafe extern "C" fn(*mut c_void, u32);

/// `NFT_CTX_OUTPUT_JSON` of libnftables.h.
const OUTPUT_JSON: u32 = 1 << 4;

/// The functions of libnftables this module calls.
struct Lib {
    _lib: libloading::Library,
    ctx_new: CtxNew,
    ctx_free: CtxFree,
    buffer_error: CtxBuffer,
    buffer_output: CtxBuffer,
    get_error: CtxGetBuffer,
    get_output: CtxGetBuffer,
    set_output_flags: SetFlags,
    run_cmd: RunCmd,
}

const LIBRARY: &str = "libnftables.so.1";

/// libnftables stays loaded once loaded: a command that sets up a
/// container opens several contexts.
static LIB: std::sync::OnceLock<Lib> = std::sync::OnceLock::new();

impl Lib {
    fn get() -> Result<&'static Lib> {
        if let Some(l) = LIB.get() {
            return Ok(l);
        }
        let l = Lib::load()?;
        Ok(LIB.get_or_init(|| l))
    }

    fn load() -> Result<Lib> {
        let missing = |e: libloading::Error| {
            Error::Firewall(format!(
                "load {LIBRARY}: {e} (install the nftables library: apt-get install libnftables1)"
            ))
        };
        // SAFETY: loading libnftables runs only its (side-effect free)
        // initialisers.
        let lib = unsafe { libloading::Library::new(LIBRARY) }.map_err(missing)?;
        // SAFETY: each symbol is looked up with the type libnftables.h gives it.
        unsafe {
            Ok(Lib {
                ctx_new: *lib.get::<CtxNew>("nft_ctx_new").map_err(missing)?,
                ctx_free: *lib.get::<CtxFree>("nft_ctx_free").map_err(missing)?,
                buffer_error: *lib
                    .get::<CtxBuffer>("nft_ctx_buffer_error")
                    .map_err(missing)?,
                buffer_output: *lib
                    .get::<CtxBuffer>("nft_ctx_buffer_output")
                    .map_err(missing)?,
                get_error: *lib
                    .get::<CtxGetBuffer>("nft_ctx_get_error_buffer")
                    .map_err(missing)?,
                get_output: *lib
                    .get::<CtxGetBuffer>("nft_ctx_get_output_buffer")
                    .map_err(missing)?,
                set_output_flags: *lib
                    .get::<SetFlags>("nft_ctx_output_set_flags")
                    .map_err(missing)?,
                run_cmd: *lib
                    .get::<RunCmd>("nft_run_cmd_from_buffer")
                    .map_err(missing)?,
                _lib: lib,
            })
        }
    }
}

/// hako's table (family `ip`) in the host's ruleset.
pub struct Firewall {
    lib: &'static Lib,
    ctx: *mut c_void,
    table: String,
}

impl Drop for Firewall {
    fn drop(&mut self) {
        // SAFETY: `ctx` came from nft_ctx_new and is freed once.
        unsafe { (self.lib.ctx_free)(self.ctx) };
    }
}

/// An nftables string literal (interface names are hako's own, so they
/// never hold a quote; the check keeps it so).
fn quoted(s: &str) -> Result<String> {
    if s.is_empty()
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(Error::Invalid(format!("bad interface name {s:?}")));
    }
    Ok(format!("\"{s}\""))
}

impl Firewall {
    /// Opens libnftables for the table `table`.
    pub fn open(table: &str) -> Result<Firewall> {
        if quoted(table).is_err() {
            return Err(Error::Invalid(format!("bad table name {table:?}")));
        }
        let lib = Lib::get()?;
        // SAFETY: plain constructor; 0 is NFT_CTX_DEFAULT.
        let ctx = unsafe { (lib.ctx_new)(0) };
        if ctx.is_null() {
            return Err(Error::Firewall("nft_ctx_new failed".into()));
        }
        // SAFETY: `ctx` is valid; both only switch where messages go.
        unsafe {
            (lib.buffer_error)(ctx);
            (lib.buffer_output)(ctx);
        }
        Ok(Firewall {
            lib,
            ctx,
            table: table.to_string(),
        })
    }

    /// Runs `cmds` (nft syntax) as one transaction.
    fn run(&mut self, cmds: &str) -> Result<()> {
        let c = CString::new(cmds).map_err(|e| Error::Invalid(e.to_string()))?;
        // SAFETY: `ctx` is valid and `c` is a NUL-terminated string that
        // outlives the call.
        let rc = unsafe { (self.lib.run_cmd)(self.ctx, c.as_ptr()) };
        if rc == 0 {
            return Ok(());
        }
        // SAFETY: the error buffer is a NUL-terminated string owned by
        // `ctx`, valid until the next command; it is copied at once.
        let msg = unsafe {
            let p = (self.lib.get_error)(self.ctx);
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        Err(Error::Firewall(format!(
            "{}: {}",
            cmds.lines().next().unwrap_or_default(),
            msg.trim()
        )))
    }

    /// Runs a listing command; its JSON output.
    fn list_json(&mut self, cmd: &str) -> Result<serde_json::Value> {
        // SAFETY: `ctx` is valid; the flags only change the output format.
        unsafe { (self.lib.set_output_flags)(self.ctx, OUTPUT_JSON) };
        let ran = self.run(cmd);
        // SAFETY: as above; the output buffer is a NUL-terminated string
        // owned by `ctx`, copied at once.
        let out = unsafe {
            let p = (self.lib.get_output)(self.ctx);
            let text = if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            };
            (self.lib.set_output_flags)(self.ctx, 0);
            text
        };
        ran?;
        serde_json::from_str(&out).map_err(|e| Error::Firewall(format!("{cmd}: bad JSON: {e}")))
    }

    /// Every published port in the table with the container address it
    /// leads to: `(mapping of one port, address)`.
    pub fn published(&mut self) -> Result<Vec<(PortMapping, Ipv4Addr)>> {
        let t = self.table.clone();
        let mut out = Vec::new();
        for map in ["ports", "ports_ip"] {
            let v = self.list_json(&format!("list map ip {t} {map}"))?;
            let elems = v["nftables"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| o["map"]["elem"].as_array())
                .flatten();
            for e in elems {
                let key = e[0]["concat"].as_array();
                let val = e[1]["concat"].as_array();
                let (Some(key), Some(val)) = (key, val) else {
                    continue;
                };
                let (host_ip, rest) = match key.len() {
                    3 => (key[0].as_str().and_then(|s| s.parse().ok()), &key[1..]),
                    _ => (None, &key[..]),
                };
                let protocol = match rest.first().and_then(|p| p.as_str()) {
                    Some("tcp") => Protocol::Tcp,
                    Some("udp") => Protocol::Udp,
                    _ => continue,
                };
                let port = |v: Option<&serde_json::Value>| {
                    v.and_then(serde_json::Value::as_u64)
                        .and_then(|p| u16::try_from(p).ok())
                };
                let (Some(host_port), Some(container_port)) = (port(rest.get(1)), port(val.get(1)))
                else {
                    continue;
                };
                let Some(target) = val[0].as_str().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                out.push((
                    PortMapping {
                        host_ip,
                        host_port,
                        container_port,
                        range: 1,
                        protocol,
                    },
                    target,
                ));
            }
        }
        Ok(out)
    }

    /// Runs each line on its own, ignoring failures: for removals, where a
    /// part may be gone already.
    fn run_each(&mut self, cmds: &str) {
        if self.run(cmds).is_err() {
            for line in cmds.lines().filter(|l| !l.trim().is_empty()) {
                let _ = self.run(line);
            }
        }
    }

    /// Whether the table exists.
    pub fn table_exists(&mut self) -> bool {
        let t = self.table.clone();
        self.run(&format!("list table ip {t}")).is_ok()
    }

    /// Creates the table with its fixed rules, unless it is there already.
    /// Callers serialise this (one table per state root, under its lock).
    pub fn ensure_table(&mut self) -> Result<()> {
        if self.table_exists() {
            return Ok(());
        }
        let t = &self.table;
        let rules = format!(
            "table ip {t} {{
  set bridges {{ type ifname; }}
  set nets {{ type ipv4_addr; flags interval; }}
  set masq_nets {{ type ipv4_addr; flags interval; }}
  map ports {{ type inet_proto . inet_service : ipv4_addr . inet_service; }}
  map ports_ip {{ type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }}
  map from_bridge {{ type ifname : verdict; }}
  map to_bridge {{ type ifname : verdict; }}
  chain published {{
    dnat ip to ip daddr . meta l4proto . th dport map @ports_ip
    dnat ip to meta l4proto . th dport map @ports
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    fib daddr type local jump published
  }}
  chain output {{
    type nat hook output priority -100; policy accept;
    fib daddr type local jump published
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ct status dnat ip saddr 127.0.0.0/8 masquerade
    ct status dnat ip saddr @nets oifname @bridges masquerade
    ip saddr @masq_nets oifname != @bridges masquerade
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname vmap @from_bridge
    oifname vmap @to_bridge
  }}
}}"
        );
        self.run(&rules)
    }

    /// Deletes the table and everything in it.
    pub fn delete_table(&mut self) {
        let t = self.table.clone();
        self.run_each(&format!("delete table ip {t}"));
    }

    /// Adds a network: NAT for its subnet (unless `internal`) and the
    /// rules that keep it apart from hako's other networks. Repeating it
    /// is harmless.
    pub fn add_network(&mut self, bridge: &str, subnet: Ipv4Net, internal: bool) -> Result<()> {
        let t = &self.table;
        let b = quoted(bridge)?;
        let mut c = String::new();
        let _ = writeln!(c, "add element ip {t} bridges {{ {b} }}");
        let _ = writeln!(c, "add element ip {t} nets {{ {subnet} }}");
        if !internal {
            let _ = writeln!(c, "add element ip {t} masq_nets {{ {subnet} }}");
        }
        // Leaving the network: within it, to published ports, and (unless
        // internal) out to the world; not to another hako network.
        let _ = writeln!(c, "add chain ip {t} from-{bridge}");
        let _ = writeln!(c, "flush chain ip {t} from-{bridge}");
        let _ = writeln!(c, "add rule ip {t} from-{bridge} oifname {b} accept");
        let _ = writeln!(c, "add rule ip {t} from-{bridge} ct status dnat accept");
        let _ = writeln!(c, "add rule ip {t} from-{bridge} oifname @bridges drop");
        let _ = writeln!(
            c,
            "add rule ip {t} from-{bridge} {}",
            if internal { "drop" } else { "accept" }
        );
        // Entering it from elsewhere: replies and published ports only.
        let _ = writeln!(c, "add chain ip {t} to-{bridge}");
        let _ = writeln!(c, "flush chain ip {t} to-{bridge}");
        if !internal {
            let _ = writeln!(
                c,
                "add rule ip {t} to-{bridge} ct state established,related accept"
            );
            let _ = writeln!(c, "add rule ip {t} to-{bridge} ct status dnat accept");
        }
        let _ = writeln!(c, "add rule ip {t} to-{bridge} drop");
        let _ = writeln!(
            c,
            "add element ip {t} from_bridge {{ {b} : jump from-{bridge} }}"
        );
        let _ = writeln!(
            c,
            "add element ip {t} to_bridge {{ {b} : jump to-{bridge} }}"
        );
        self.run(&c)
    }

    /// Removes what [`Firewall::add_network`] added.
    pub fn remove_network(&mut self, bridge: &str, subnet: Ipv4Net) -> Result<()> {
        let t = self.table.clone();
        let b = quoted(bridge)?;
        let mut c = String::new();
        let _ = writeln!(c, "delete element ip {t} from_bridge {{ {b} }}");
        let _ = writeln!(c, "delete element ip {t} to_bridge {{ {b} }}");
        let _ = writeln!(c, "delete chain ip {t} from-{bridge}");
        let _ = writeln!(c, "delete chain ip {t} to-{bridge}");
        let _ = writeln!(c, "delete element ip {t} bridges {{ {b} }}");
        let _ = writeln!(c, "delete element ip {t} nets {{ {subnet} }}");
        self.run_each(&c);
        // Only non-internal networks are in `masq_nets`.
        self.run_each(&format!("delete element ip {t} masq_nets {{ {subnet} }}"));
        Ok(())
    }
}

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
    }
}

/// The map and element of one published host port (nftables' layout:
/// each field of a concatenation padded to 4 bytes, ports big-endian).
fn port_element(p: &PortMapping, i: u16, target: Option<Ipv4Addr>) -> (&'static str, Element) {
    let mut key = Vec::with_capacity(12);
    let map = match p.host_ip {
        Some(ip) if !ip.is_unspecified() => {
            key.extend_from_slice(&ip.octets());
            "ports_ip"
        }
        _ => "ports",
    };
    key.extend_from_slice(&[proto_number(p.protocol), 0, 0, 0]);
    key.extend_from_slice(&(p.host_port + i).to_be_bytes());
    key.extend_from_slice(&[0, 0]);
    let value = target.map(|ip| {
        let mut v = ip.octets().to_vec();
        v.extend_from_slice(&(p.container_port + i).to_be_bytes());
        v.extend_from_slice(&[0, 0]);
        v
    });
    (map, Element { key, value })
}

/// The elements of `ports`, by map.
fn elements(ports: &[PortMapping], target: Option<Ipv4Addr>) -> Vec<(&'static str, Vec<Element>)> {
    let mut by_map: Vec<(&'static str, Vec<Element>)> =
        vec![("ports", Vec::new()), ("ports_ip", Vec::new())];
    for p in ports {
        for i in 0..p.count() {
            let (map, e) = port_element(p, i, target);
            if let Some((_, list)) = by_map.iter_mut().find(|(m, _)| *m == map) {
                list.push(e);
            }
        }
    }
    by_map
}

/// Publishes `ports` of the container at `ip` in `table` (made by
/// [`Firewall::ensure_table`]). A host port that is published already
/// fails the whole set, naming the ports.
pub fn add_ports(table: &str, ip: Ipv4Addr, ports: &[PortMapping]) -> Result<()> {
    let mut done: Vec<&'static str> = Vec::new();
    for (map, elems) in elements(ports, Some(ip)) {
        if let Err(e) = nfnl::change(table, map, &elems, true) {
            // One transaction per map: undo the map done already.
            for (m, els) in elements(ports, None) {
                if done.contains(&m) {
                    let _ = nfnl::change(table, m, &els, false);
                }
            }
            return Err(match e {
                Error::Netlink { source, .. } if source.raw_os_error() == Some(libc::EEXIST) => {
                    Error::PortInUse(format!(
                        "a host port of {} is published already by another container",
                        ports
                            .iter()
                            .map(|p| p.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
                e => e,
            });
        }
        done.push(map);
    }
    Ok(())
}

/// Takes published ports out of `table` (those gone already are skipped).
pub fn remove_ports(table: &str, ports: &[PortMapping]) {
    for (map, elems) in elements(ports, None) {
        if nfnl::change(table, map, &elems, false).is_err() {
            for e in elems {
                let _ = nfnl::change(table, map, std::slice::from_ref(&e), false);
            }
        }
    }
}
