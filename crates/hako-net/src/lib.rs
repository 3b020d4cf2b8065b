//! hako-net: container networking without helper processes on the hot
//! path. Network namespaces, bridges, veths, addresses and routes go
//! through netlink in this process; NAT and published ports through
//! libnftables in this process, in hako's own table; names through one
//! small resolver (`hako-dns`) per state root.

pub mod dns;
