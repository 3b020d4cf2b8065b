//! Elements of an nftables set or map, added and taken out over a raw
//! nfnetlink socket: one batch, one round trip, no library to load and no
//! ruleset cache to fetch. This is the per-container part of the firewall
//! (published ports); tables, chains and rules go through libnftables.

use crate::{Error, Result};
use netlink_sys::{Socket, SocketAddr};

const NETLINK_NETFILTER: isize = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_IPV4: u8 = 2;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;

/// One element: its key and, in a map, its value (nftables' register
/// layout: each field of a concatenation padded to 4 bytes).
pub struct Element {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

fn u16_of(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

fn put_attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    buf.extend_from_slice(&u16_of(4 + data.len()).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(align(buf.len()), 0);
}

fn nest_start(buf: &mut Vec<u8>, ty: u16) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    at
}

fn nest_end(buf: &mut [u8], at: usize) {
    let len = u16_of(buf.len() - at);
    buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

/// Appends a netlink message with an nfgenmsg header; `body` fills in
/// the attributes.
fn message(
    buf: &mut Vec<u8>,
    ty: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    body: impl FnOnce(&mut Vec<u8>),
) {
    let at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.push(family);
    buf.push(0); // NFNETLINK_V0
    buf.extend_from_slice(&res_id.to_be_bytes());
    body(buf);
    let len = u32::try_from(buf.len() - at).unwrap_or(u32::MAX);
    buf[at..at + 4].copy_from_slice(&len.to_ne_bytes());
}

fn nl_err(what: &str, e: std::io::Error) -> Error {
    Error::Netlink {
        what: what.to_string(),
        source: e,
    }
}

/// Adds (`add`, failing with EEXIST on a key that is there) or takes out
/// `elems` of the set `set` in the `ip` table `table`, in one transaction.
pub fn change(table: &str, set: &str, elems: &[Element], add: bool) -> Result<()> {
    if elems.is_empty() {
        return Ok(());
    }
    let what = format!(
        "{} elements of {table} {set}",
        if add { "add" } else { "delete" }
    );
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(|e| nl_err(&what, e))?;
    socket.bind_auto().map_err(|e| nl_err(&what, e))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| nl_err(&what, e))?;
    let mut buf = Vec::with_capacity(256 + elems.len() * 64);
    message(
        &mut buf,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        1,
        0,
        NFNL_SUBSYS_NFTABLES,
        |_| {},
    );
    let (ty, flags) = if add {
        (
            NFT_MSG_NEWSETELEM,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
    } else {
        (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK)
    };
    message(
        &mut buf,
        (NFNL_SUBSYS_NFTABLES << 8) | ty,
        flags,
        2,
        NFPROTO_IPV4,
        0,
        |b| {
            let mut name = table.as_bytes().to_vec();
            name.push(0);
            put_attr(b, NFTA_SET_ELEM_LIST_TABLE, &name);
            let mut name = set.as_bytes().to_vec();
            name.push(0);
            put_attr(b, NFTA_SET_ELEM_LIST_SET, &name);
            let list = nest_start(b, NFTA_SET_ELEM_LIST_ELEMENTS);
            for e in elems {
                let elem = nest_start(b, NFTA_LIST_ELEM);
                let key = nest_start(b, NFTA_SET_ELEM_KEY);
                put_attr(b, NFTA_DATA_VALUE, &e.key);
                nest_end(b, key);
                if let (true, Some(v)) = (add, &e.value) {
                    let data = nest_start(b, NFTA_SET_ELEM_DATA);
                    put_attr(b, NFTA_DATA_VALUE, v);
                    nest_end(b, data);
                }
                nest_end(b, elem);
            }
            nest_end(b, list);
        },
    );
    message(
        &mut buf,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        3,
        0,
        NFNL_SUBSYS_NFTABLES,
        |_| {},
    );
    socket.send(&buf, 0).map_err(|e| nl_err(&what, e))?;
    // The acknowledgement of the one message that asked for it.
    let mut reply = vec![0u8; 8192];
    loop {
        let n = socket
            .recv(&mut &mut reply[..], 0)
            .map_err(|e| nl_err(&what, e))?;
        let mut off = 0;
        while off + 16 <= n {
            let len =
                u32::from_ne_bytes([reply[off], reply[off + 1], reply[off + 2], reply[off + 3]]);
            let len = usize::try_from(len).unwrap_or(0);
            let ty = u16::from_ne_bytes([reply[off + 4], reply[off + 5]]);
            let seq = u32::from_ne_bytes([
                reply[off + 8],
                reply[off + 9],
                reply[off + 10],
                reply[off + 11],
            ]);
            if len < 16 {
                break;
            }
            if ty == NLMSG_ERROR && off + 20 <= n {
                let code = i32::from_ne_bytes([
                    reply[off + 16],
                    reply[off + 17],
                    reply[off + 18],
                    reply[off + 19],
                ]);
                if code != 0 {
                    return Err(nl_err(&what, std::io::Error::from_raw_os_error(-code)));
                }
                if seq == 2 {
                    return Ok(());
                }
            }
            off += align(len);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nests_and_pads() {
        let mut b = Vec::new();
        let n = nest_start(&mut b, 3);
        put_attr(&mut b, 1, &[1, 2, 3]);
        nest_end(&mut b, n);
        // 4 (nest header) + 4 (attr header) + 3 data + 1 pad.
        assert_eq!(b.len(), 12);
        assert_eq!(u16::from_ne_bytes([b[0], b[1]]), 12);
        assert_eq!(u16::from_ne_bytes([b[2], b[3]]), 3 | NLA_F_NESTED);
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), 7);
    }
}
