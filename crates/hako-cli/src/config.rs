//! hako's configuration: `/etc/hako/hako.toml`, then
//! `$XDG_CONFIG_HOME/hako/hako.toml` (or `~/.config/hako/hako.toml`),
//! later files adding to earlier ones; `HAKO_CONFIG` names a single file
//! instead.
//!
//! ```toml
//! [registries]
//! insecure = ["registry.local:5000"]     # plain http
//! [registries.mirrors]
//! "docker.io" = ["mirror.local:5000"]    # tried first for pulls
//! [network]
//! dns_upstream = ["127.0.0.1:5353"]     # where user networks' resolver
//!                                       # sends other names (default: the
//!                                       # host's /etc/resolv.conf servers)
//! ```
//!
//! Extra CA certificates for a registry go in
//! `/etc/hako/certs.d/<host[:port]>/*.crt`, as Docker's `certs.d`
//! (`certs_dir` under `[registries]` moves it).

use anyhow::{Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub registries: Registries,
    #[serde(default)]
    pub network: NetworkConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    #[serde(default)]
    pub dns_upstream: Vec<std::net::SocketAddr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registries {
    #[serde(default)]
    pub insecure: Vec<String>,
    #[serde(default)]
    pub mirrors: BTreeMap<String, Vec<String>>,
    pub certs_dir: Option<PathBuf>,
}

fn files() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("HAKO_CONFIG") {
        return vec![PathBuf::from(p)];
    }
    let mut out = vec![PathBuf::from("/etc/hako/hako.toml")];
    let user = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(dir) = user {
        out.push(dir.join("hako/hako.toml"));
    }
    out
}

impl Config {
    pub fn load() -> Result<Config> {
        let mut cfg = Config::default();
        for path in files() {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
            };
            let more: Config = toml::from_str(&text)
                .with_context(|| format!("{}: not a valid hako configuration", path.display()))?;
            cfg.registries.insecure.extend(more.registries.insecure);
            cfg.registries.mirrors.extend(more.registries.mirrors);
            if !more.network.dns_upstream.is_empty() {
                cfg.network.dns_upstream = more.network.dns_upstream;
            }
            if more.registries.certs_dir.is_some() {
                cfg.registries.certs_dir = more.registries.certs_dir;
            }
        }
        Ok(cfg)
    }
}
