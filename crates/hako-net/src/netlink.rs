//! A small synchronous rtnetlink client: links, addresses and routes, in
//! the network namespace the socket was opened in. No helper programs, no
//! async runtime: each call is one request and its acknowledgement.

use crate::{Error, Result};
use ipnet::Ipv4Net;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

/// A route of the main IPv4 table: its destination and output device.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub destination: Ipv4Net,
    pub oif: u32,
}

/// An rtnetlink socket bound to one network namespace.
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

fn nl_err(what: impl Into<String>, e: std::io::Error) -> Error {
    Error::Netlink {
        what: what.into(),
        source: e,
    }
}

impl Netlink {
    /// A socket in this thread's network namespace.
    pub fn open() -> Result<Netlink> {
        let mut socket =
            Socket::new(NETLINK_ROUTE).map_err(|e| nl_err("open a netlink socket", e))?;
        socket
            .bind_auto()
            .map_err(|e| nl_err("bind a netlink socket", e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| nl_err("connect a netlink socket", e))?;
        let _ = socket.set_ext_ack(true);
        Ok(Netlink {
            socket,
            seq: 1,
            buf: vec![0; 64 * 1024],
        })
    }

    /// A socket in the network namespace at `netns` (a bind-mounted
    /// namespace file). The socket keeps working in that namespace after
    /// the short-lived thread that opened it is gone.
    pub fn open_in(netns: &Path) -> Result<Netlink> {
        let file = std::fs::File::open(netns)
            .map_err(|e| Error::io(format!("open {}", netns.display()), e))?;
        let shown = netns.display().to_string();
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                    nl_err(
                        format!("enter the network namespace {shown}"),
                        std::io::Error::from(e),
                    )
                })?;
                Netlink::open()
            })
            .join()
            .unwrap_or_else(|_| Err(Error::Invalid("netlink thread panicked".into())))
        })
    }

    /// Sends `msg` and collects the replies up to the acknowledgement (or
    /// the end of a dump).
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        what: &dyn Fn() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        self.seq = self.seq.wrapping_add(1);
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0).map_err(|e| nl_err(what(), e))?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut replies = Vec::new();
        loop {
            let n = self
                .socket
                .recv(&mut &mut self.buf[..], 0)
                .map_err(|e| nl_err(what(), e))?;
            let mut offset = 0;
            while offset < n {
                let reply =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[offset..n])
                        .map_err(|e| {
                            Error::Invalid(format!("{}: bad netlink reply: {e}", what()))
                        })?;
                let len = usize::try_from(reply.header.length).unwrap_or(0);
                if len == 0 {
                    break;
                }
                offset += (len + 3) & !3;
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(replies),
                            Some(code) => Err(nl_err(
                                what(),
                                std::io::Error::from_raw_os_error(-code.get()),
                            )),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(m) => {
                        replies.push(m);
                        if !dump {
                            continue;
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn link_request(
        &mut self,
        msg: LinkMessage,
        flags: u16,
        what: &dyn Fn() -> String,
    ) -> Result<()> {
        self.request(RouteNetlinkMessage::NewLink(msg), flags | NLM_F_ACK, what)
            .map(drop)
    }

    /// The index of the link `name`, if there is one.
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(msg), NLM_F_ACK, &|| {
            format!("look up link {name}")
        }) {
            Ok(replies) => Ok(replies.into_iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })),
            Err(Error::Netlink { source, .. }) if source.raw_os_error() == Some(libc::ENODEV) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Creates the bridge `name` (down).
    pub fn create_bridge(&mut self, name: &str, mtu: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        if mtu > 0 {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.link_request(msg, NLM_F_CREATE | NLM_F_EXCL, &|| {
            format!("create bridge {name}")
        })
    }

    /// Creates a veth pair: `host` here, its peer `peer` (with address
    /// `peer_mac`) in the network namespace `peer_netns`; both down.
    pub fn create_veth(
        &mut self,
        host: &str,
        peer: &str,
        peer_netns: BorrowedFd<'_>,
        peer_mac: [u8; 6],
        mtu: u32,
        controller: u32,
    ) -> Result<()> {
        let mut peer_msg = LinkMessage::default();
        peer_msg
            .attributes
            .push(LinkAttribute::IfName(peer.to_string()));
        peer_msg
            .attributes
            .push(LinkAttribute::NetNsFd(peer_netns.as_raw_fd()));
        peer_msg
            .attributes
            .push(LinkAttribute::Address(peer_mac.to_vec()));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(host.to_string()));
        if mtu > 0 {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
            peer_msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::Controller(controller));
        // Up from the start: one request less.
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.link_request(msg, NLM_F_CREATE | NLM_F_EXCL, &|| {
            format!("create veth pair {host}/{peer}")
        })
    }

    /// Sets link `index` up.
    pub fn set_up(&mut self, index: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(msg), NLM_F_ACK, &|| {
            format!("set link {index} up")
        })
        .map(drop)
    }

    /// Deletes link `name`; a link that is gone already is no error.
    pub fn delete_link(&mut self, name: &str) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::DelLink(msg), NLM_F_ACK, &|| {
            format!("delete link {name}")
        }) {
            Err(Error::Netlink { source, .. }) if source.raw_os_error() == Some(libc::ENODEV) => {
                Ok(())
            }
            r => r.map(drop),
        }
    }

    /// Adds `addr/prefix` to link `index`; an address it has already is no
    /// error.
    pub fn add_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.attributes
            .push(AddressAttribute::Local(IpAddr::V4(addr)));
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V4(addr)));
        let net = Ipv4Net::new(addr, prefix).map_err(|e| Error::Invalid(e.to_string()))?;
        msg.attributes
            .push(AddressAttribute::Broadcast(net.broadcast()));
        match self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &|| format!("add address {addr}/{prefix} to link {index}"),
        ) {
            Err(Error::Netlink { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {
                Ok(())
            }
            r => r.map(drop),
        }
    }

    /// Adds the default route through `gateway`.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr) -> Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &|| format!("add the default route via {gateway}"),
        )
        .map(drop)
    }

    /// The routes of the main IPv4 table.
    pub fn routes(&mut self) -> Result<Vec<Route>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        let replies = self.request(RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP, &|| {
            "list routes".to_string()
        })?;
        let mut routes = Vec::new();
        for r in replies {
            let RouteNetlinkMessage::NewRoute(r) = r else {
                continue;
            };
            if r.header.table != RouteHeader::RT_TABLE_MAIN {
                continue;
            }
            let mut dest = Ipv4Addr::UNSPECIFIED;
            let mut oif = 0;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => dest = *d,
                    RouteAttribute::Oif(o) => oif = *o,
                    _ => {}
                }
            }
            if let Ok(destination) = Ipv4Net::new(dest, r.header.destination_prefix_length) {
                routes.push(Route { destination, oif });
            }
        }
        Ok(routes)
    }
}
