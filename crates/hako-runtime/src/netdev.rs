//! `linux.netDevices`: host network devices moved into the container's
//! network namespace (and renamed), and back on delete while that namespace
//! still exists. One rtnetlink request per device, sent from this process.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

use crate::error::{Context, Error, Result};

const RTM_NEWLINK: u16 = 16;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const IFLA_IFNAME: u16 = 3;
const IFLA_NET_NS_FD: u16 = 28;

fn route_socket() -> Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(Errno::last()).context(|| "open a netlink socket".to_string());
    }
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn push_attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// Moves the device with index `ifindex` (in the socket's namespace) into
/// the namespace `netns`, named `name` there.
fn move_link(sock: &OwnedFd, ifindex: i32, netns: &OwnedFd, name: &str) -> Result<()> {
    let mut msg = vec![0u8; 16];
    // struct ifinfomsg: family, pad, type, index, flags, change.
    msg.extend_from_slice(&[0u8; 4]);
    msg.extend_from_slice(&ifindex.to_ne_bytes());
    msg.extend_from_slice(&[0u8; 8]);
    push_attr(
        &mut msg,
        IFLA_NET_NS_FD,
        &u32::try_from(netns.as_raw_fd()).unwrap_or(0).to_ne_bytes(),
    );
    let mut cname = name.as_bytes().to_vec();
    cname.push(0);
    push_attr(&mut msg, IFLA_IFNAME, &cname);
    let len = u32::try_from(msg.len()).unwrap_or(0);
    msg[0..4].copy_from_slice(&len.to_ne_bytes());
    msg[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
    msg[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // SAFETY: send of a buffer we own to a socket we own.
    let sent = unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if sent < 0 {
        return Err(Errno::last()).context(|| "send a netlink request".to_string());
    }
    let mut ack = [0u8; 1024];
    // SAFETY: recv into a buffer we own.
    let got = unsafe { libc::recv(sock.as_raw_fd(), ack.as_mut_ptr().cast(), ack.len(), 0) };
    if got < 20 {
        return Err(Errno::last()).context(|| "read the netlink answer".to_string());
    }
    let kind = u16::from_ne_bytes([ack[4], ack[5]]);
    let code = i32::from_ne_bytes([ack[16], ack[17], ack[18], ack[19]]);
    if kind == NLMSG_ERROR && code != 0 {
        return Err(Errno::from_raw(-code)).context(|| "move the device".to_string());
    }
    Ok(())
}

fn index_of(name: &str) -> Option<i32> {
    let c = CString::new(name).ok()?;
    // SAFETY: if_nametoindex reads a valid NUL-terminated name.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    i32::try_from(i).ok().filter(|i| *i > 0)
}

fn open_netns(pid: i32) -> Result<OwnedFd> {
    let path = format!("/proc/{pid}/ns/net");
    nix::fcntl::open(
        path.as_str(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .context(|| format!("open {path}"))
}

/// Moves each (host name, container name) device from this process's
/// namespace into that of `pid`: all or none.
pub fn move_in(devices: &[(String, String)], pid: i32) -> Result<()> {
    if devices.is_empty() {
        return Ok(());
    }
    let netns = open_netns(pid)?;
    let netns = &netns;
    let sock = route_socket()?;
    for (i, (host, inside)) in devices.iter().enumerate() {
        let moved = match index_of(host) {
            None => Err(Error::Init(format!(
                "linux.netDevices.{host}: no such network device in the runtime's namespace"
            ))),
            Some(index) => move_link(&sock, index, netns, inside).map_err(|e| {
                Error::Init(format!(
                    "linux.netDevices.{host}: move it into the container as {inside:?}: {e}"
                ))
            }),
        };
        if let Err(e) = moved {
            // All or none: the ones already moved come back.
            let _ = move_out(&devices[..i], netns);
            return Err(e);
        }
    }
    Ok(())
}

/// Moves the devices back from the network namespace of `pid`; see
/// `move_out`.
pub fn return_from(devices: &[(String, String)], pid: i32) -> Vec<String> {
    if devices.is_empty() {
        return Vec::new();
    }
    match open_netns(pid) {
        Ok(netns) => move_out(devices, &netns),
        Err(e) => vec![format!(
            "linux.netDevices: cannot move the devices back: {e}"
        )],
    }
}

/// Moves the devices back from `netns` to this process's namespace under
/// their host names. Best effort: returns what could not be moved.
fn move_out(devices: &[(String, String)], netns: &OwnedFd) -> Vec<String> {
    let mut failed = Vec::new();
    if devices.is_empty() {
        return failed;
    }
    let result = (|| -> Result<(OwnedFd, OwnedFd)> {
        let own = nix::fcntl::open(
            "/proc/self/ns/net",
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .context(|| "open the runtime's network namespace".to_string())?;
        // A netlink socket belongs to the namespace it was made in.
        nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .context(|| "enter the container's network namespace".to_string())?;
        let sock = route_socket();
        nix::sched::setns(own.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .context(|| "return to the runtime's network namespace".to_string())?;
        Ok((sock?, own))
    })();
    let (sock, own) = match result {
        Ok(x) => x,
        Err(e) => return vec![e.to_string()],
    };
    for (host, inside) in devices {
        // The index as the container's namespace numbers it.
        let ifindex = container_index(&sock, inside);
        match ifindex.and_then(|i| move_link(&sock, i, &own, host).ok()) {
            Some(()) => {}
            None => failed.push(format!(
                "linux.netDevices.{host}: could not be moved back from the container ({inside})"
            )),
        }
    }
    failed
}

/// The index of `name` in the namespace of `sock`, asked with RTM_GETLINK.
fn container_index(sock: &OwnedFd, name: &str) -> Option<i32> {
    const RTM_GETLINK: u16 = 18;
    let mut msg = vec![0u8; 16];
    msg.extend_from_slice(&[0u8; 16]);
    let mut cname = name.as_bytes().to_vec();
    cname.push(0);
    push_attr(&mut msg, IFLA_IFNAME, &cname);
    let len = u32::try_from(msg.len()).ok()?;
    msg[0..4].copy_from_slice(&len.to_ne_bytes());
    msg[4..6].copy_from_slice(&RTM_GETLINK.to_ne_bytes());
    msg[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    msg[8..12].copy_from_slice(&2u32.to_ne_bytes());
    // SAFETY: send of a buffer we own to a socket we own.
    if unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) } < 0 {
        return None;
    }
    let mut answer = [0u8; 8192];
    // SAFETY: recv into a buffer we own.
    let got = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            answer.as_mut_ptr().cast(),
            answer.len(),
            0,
        )
    };
    if got < 24 || u16::from_ne_bytes([answer[4], answer[5]]) != RTM_NEWLINK {
        return None;
    }
    // struct ifinfomsg follows the 16-byte header: the index is at 20.
    Some(i32::from_ne_bytes([
        answer[20], answer[21], answer[22], answer[23],
    ]))
}
