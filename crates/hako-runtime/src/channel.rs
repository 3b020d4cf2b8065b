//! The sync channel between the runtime and a process it starts in a
//! container: a SOCK_SEQPACKET pair, one message per packet, descriptors
//! passed with SCM_RIGHTS.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};

/// The most descriptors one message carries: a `tasks` file for each v1
/// hierarchy (a host mounts at most fifteen or so).
const MAX_FDS: usize = 32;

/// What the two sides tell each other.
#[derive(Debug)]
pub enum Msg {
    /// Runtime → child: set-up may go on (an exec'd process joins its
    /// cgroup now).
    Go,
    /// Runtime → child: the cgroup is made and configured; the child joins
    /// it through these `tasks` files of its v1 hierarchies (none on
    /// cgroup v2, where the clone put it there).
    CgroupReady(Vec<OwnedFd>),
    /// Child → runtime: write the id maps of the user namespace I just made.
    WriteMaps,
    /// Runtime → child: the maps are written.
    MapsWritten,
    /// Child → runtime: the container's init is this (host) pid; I exit.
    InitPid(i32),
    /// Child → runtime: run the prestart and createRuntime hooks now.
    RunHooks,
    /// Runtime → child: the hooks ran.
    HooksDone,
    /// Child → runtime: the seccomp notify listener.
    SeccompFd(OwnedFd),
    /// Child → runtime: set-up is complete; waiting to exec.
    Ready,
    /// Runtime → child: exec the program now (the in-process `start`).
    Start,
    /// Child → runtime: something the runtime should log.
    Warning(String),
    /// Child → runtime: set-up failed.
    Error(String),
}

impl Msg {
    fn tag(&self) -> u8 {
        match self {
            Msg::Go => b'G',
            Msg::CgroupReady(_) => b'C',
            Msg::WriteMaps => b'M',
            Msg::MapsWritten => b'm',
            Msg::InitPid(_) => b'P',
            Msg::RunHooks => b'H',
            Msg::HooksDone => b'h',
            Msg::SeccompFd(_) => b'S',
            Msg::Ready => b'R',
            Msg::Start => b's',
            Msg::Warning(_) => b'W',
            Msg::Error(_) => b'E',
        }
    }
}

/// One end of the channel.
pub struct Channel {
    fd: OwnedFd,
}

/// A connected pair: the runtime's end, and the child's end at descriptor
/// `min` or above (clear of the descriptors a caller preserves).
pub fn pair_above(min: RawFd) -> nix::Result<(Channel, Channel)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    Ok((
        Channel { fd: a },
        Channel {
            fd: crate::sys::move_above(b, min)?,
        },
    ))
}

impl Channel {
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn send(&self, msg: &Msg) -> nix::Result<()> {
        let mut body = vec![msg.tag()];
        let mut fds = Vec::new();
        match msg {
            Msg::InitPid(pid) => body.extend_from_slice(pid.to_string().as_bytes()),
            Msg::Error(text) | Msg::Warning(text) => body.extend_from_slice(text.as_bytes()),
            Msg::SeccompFd(fd) => fds.push(fd.as_raw_fd()),
            Msg::CgroupReady(files) => fds.extend(files.iter().map(AsRawFd::as_raw_fd)),
            _ => {}
        }
        if fds.len() > MAX_FDS {
            return Err(Errno::EMSGSIZE);
        }
        let iov = [IoSlice::new(&body)];
        let cmsgs: Vec<ControlMessage> = if fds.is_empty() {
            Vec::new()
        } else {
            vec![ControlMessage::ScmRights(&fds)]
        };
        loop {
            match sendmsg::<()>(
                self.fd.as_raw_fd(),
                &iov,
                &cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Err(Errno::EINTR) => continue,
                r => return r.map(|_| ()),
            }
        }
    }

    /// The next message; `None` when the other side closed its end (it
    /// exec'd or died).
    pub fn recv(&self) -> nix::Result<Option<Msg>> {
        let mut buf = vec![0u8; 16 * 1024];
        let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = loop {
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Err(Errno::EINTR) => continue,
                // A peer that died with messages unread resets the
                // connection: for us, the same as an end of stream.
                Err(Errno::ECONNRESET) => return Ok(None),
                r => break r?,
            }
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(got) = c {
                for f in got {
                    // SAFETY: the kernel installed this descriptor for us.
                    fds.push(unsafe { OwnedFd::from_raw_fd(f) });
                }
            }
        }
        let len = msg.bytes;
        if len == 0 {
            return Ok(None);
        }
        let body = &buf[1..len];
        let text = || String::from_utf8_lossy(body).into_owned();
        Ok(Some(match buf[0] {
            b'G' => Msg::Go,
            b'C' => Msg::CgroupReady(fds),
            b'M' => Msg::WriteMaps,
            b'm' => Msg::MapsWritten,
            b'P' => Msg::InitPid(text().parse().map_err(|_| Errno::EPROTO)?),
            b'H' => Msg::RunHooks,
            b'h' => Msg::HooksDone,
            b'S' => Msg::SeccompFd(fds.into_iter().next().ok_or(Errno::EPROTO)?),
            b'R' => Msg::Ready,
            b's' => Msg::Start,
            b'W' => Msg::Warning(text()),
            b'E' => Msg::Error(text()),
            _ => return Err(Errno::EPROTO),
        }))
    }
}

/// Sends one message with an optional descriptor over any unix socket
/// (the console socket and the seccomp listener speak this way).
pub fn send_with_fd(sock: RawFd, body: &[u8], fd: Option<RawFd>) -> nix::Result<()> {
    let iov = [IoSlice::new(body)];
    let fds;
    let cmsgs: &[ControlMessage] = match fd {
        Some(f) => {
            fds = [f];
            &[ControlMessage::ScmRights(&fds)]
        }
        None => &[],
    };
    sendmsg::<()>(sock, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None).map(|_| ())
}

/// Receives one descriptor sent with SCM_RIGHTS over any unix socket.
pub fn recv_fd(sock: RawFd) -> nix::Result<Option<OwnedFd>> {
    let mut buf = vec![0u8; 4096];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(f) = fds.first()
        {
            // SAFETY: the kernel installed this descriptor for us.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(*f) }));
        }
    }
    Ok(None)
}
