//! Which namespaces a container gets and how: born into with clone3,
//! entered by the runtime around the clone, or entered and made by the
//! child itself when a user namespace must come first.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use nix::fcntl::{OFlag, open};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType as Ns};

use crate::error::{Context, Error, Result};

pub fn name(t: Ns) -> &'static str {
    match t {
        Ns::Mount => "mnt",
        Ns::Cgroup => "cgroup",
        Ns::Uts => "uts",
        Ns::Ipc => "ipc",
        Ns::User => "user",
        Ns::Pid => "pid",
        Ns::Network => "net",
        Ns::Time => "time",
    }
}

pub fn flag(t: Ns) -> CloneFlags {
    match t {
        Ns::Mount => CloneFlags::CLONE_NEWNS,
        Ns::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        Ns::Uts => CloneFlags::CLONE_NEWUTS,
        Ns::Ipc => CloneFlags::CLONE_NEWIPC,
        Ns::User => CloneFlags::CLONE_NEWUSER,
        Ns::Pid => CloneFlags::CLONE_NEWPID,
        Ns::Network => CloneFlags::CLONE_NEWNET,
        Ns::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// The order in which namespaces are entered: the user namespace first (it
/// owns the others), the mount namespace last (it changes what paths mean).
pub fn join_order(t: Ns) -> u8 {
    match t {
        Ns::User => 0,
        Ns::Mount => 2,
        _ => 1,
    }
}

/// How the container's namespaces come about.
#[derive(Debug, Clone)]
pub struct Plan {
    /// clone3 flags: the new namespaces the child is born in.
    pub clone_flags: CloneFlags,
    /// Entered by the runtime just before the clone and left just after,
    /// so that the child is born in them.
    pub parent_joins: Vec<(Ns, PathBuf)>,
    /// A new time namespace, made by the runtime before the clone (its
    /// offsets can only be written before a process enters it).
    pub new_time: bool,
    /// Entered by the child itself (when a user namespace comes into
    /// play), user namespace first.
    pub child_joins: Vec<(Ns, PathBuf)>,
    /// The child makes the user namespace itself, after its joins.
    pub child_new_user: bool,
    /// New namespaces the child makes after the user namespace.
    pub child_unshare: CloneFlags,
    /// The child makes a pid namespace and forks the init into it.
    pub child_new_pid: bool,
    /// A new user namespace (either way): the runtime writes its maps.
    pub new_user: bool,
    /// The process ends up in a user namespace other than the runtime's.
    pub in_userns: bool,
    /// A new cgroup namespace, made by the init once it is in its cgroup.
    pub new_cgroup: bool,
    pub new_net: bool,
    pub new_uts: bool,
    pub new_mount: bool,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            clone_flags: CloneFlags::empty(),
            parent_joins: Vec::new(),
            new_time: false,
            child_joins: Vec::new(),
            child_new_user: false,
            child_unshare: CloneFlags::empty(),
            child_new_pid: false,
            new_user: false,
            in_userns: false,
            new_cgroup: false,
            new_net: false,
            new_uts: false,
            new_mount: false,
        }
    }
}

pub fn plan(namespaces: &[LinuxNamespace]) -> Plan {
    let mut p = Plan::default();
    let joined = |t: Ns| {
        namespaces
            .iter()
            .any(|n| n.typ() == t && n.path().is_some())
    };
    let new = |t: Ns| {
        namespaces
            .iter()
            .any(|n| n.typ() == t && n.path().is_none())
    };
    p.new_user = new(Ns::User);
    p.in_userns = p.new_user || joined(Ns::User);
    p.new_cgroup = new(Ns::Cgroup);
    p.new_net = new(Ns::Network);
    p.new_uts = new(Ns::Uts);
    p.new_mount = new(Ns::Mount);
    p.new_time = new(Ns::Time);
    // pid and time namespaces affect only children, so the runtime can
    // always enter them around the clone.
    let childless = [Ns::Pid, Ns::Time];
    let other_joins = namespaces
        .iter()
        .any(|n| n.path().is_some() && !childless.contains(&n.typ()) && n.typ() != Ns::User);
    let slow = joined(Ns::User) || (p.new_user && other_joins);
    for n in namespaces {
        let t = n.typ();
        match n.path() {
            Some(path) if slow && !childless.contains(&t) => p.child_joins.push((t, path.clone())),
            Some(path) => p.parent_joins.push((t, path.clone())),
            None if matches!(t, Ns::Cgroup | Ns::Time) => {}
            None if slow && t == Ns::User => p.child_new_user = true,
            None if slow && t == Ns::Pid => p.child_new_pid = true,
            None if slow => p.child_unshare |= flag(t),
            None => p.clone_flags |= flag(t),
        }
    }
    p.child_joins.sort_by_key(|(t, _)| join_order(*t));
    p.parent_joins.sort_by_key(|(t, _)| join_order(*t));
    p
}

/// The runtime's own namespaces and working directory, kept while it
/// stands in the container's for a clone.
pub struct Saved {
    own: Vec<(Ns, OwnedFd)>,
    cwd: OwnedFd,
}

fn open_ns(path: &str) -> Result<OwnedFd> {
    open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).context(|| format!("open {path}"))
}

/// Enters `joins` (and makes the new time namespace with `offsets`) for
/// the clone that follows; `restore` undoes it.
pub fn enter_for_clone(joins: &[(Ns, PathBuf)], new_time: Option<&str>) -> Result<Saved> {
    let cwd = open(
        ".",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context(|| "open the working directory".to_string())?;
    let mut saved = Saved {
        own: Vec::new(),
        cwd,
    };
    for (t, path) in joins {
        let own = open_ns(&format!("/proc/self/ns/{}", name(*t)))?;
        let target =
            open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).context(|| {
                format!(
                    "linux.namespaces: open the {} namespace {}",
                    name(*t),
                    path.display()
                )
            })?;
        if let Err(e) = setns(target.as_fd(), flag(*t)) {
            restore(saved)?;
            return Err(Error::Sys {
                context: format!(
                    "linux.namespaces: enter the {} namespace {}",
                    name(*t),
                    path.display()
                ),
                source: e,
            });
        }
        saved.own.push((*t, own));
    }
    if let Some(offsets) = new_time {
        let own = open_ns("/proc/self/ns/time_for_children")?;
        unshare(flag(Ns::Time)).context(|| "make a time namespace".to_string())?;
        saved.own.push((Ns::Time, own));
        if !offsets.is_empty()
            && let Err(e) = std::fs::write("/proc/self/timens_offsets", offsets)
        {
            restore(saved)?;
            return Err(Error::Io {
                context: format!("linux.timeOffsets: write {offsets:?}"),
                source: e,
            });
        }
    }
    Ok(saved)
}

/// Returns the runtime to its own namespaces and working directory.
pub fn restore(saved: Saved) -> Result<()> {
    for (t, fd) in saved.own.iter().rev() {
        setns(fd.as_fd(), flag(*t))
            .context(|| format!("return to the runtime's {} namespace", name(*t)))?;
    }
    nix::unistd::fchdir(&saved.cwd).context(|| "return to the working directory".to_string())
}

/// The child's half of a slow-path plan: joins, the user namespace (the
/// runtime writes its maps), the other new namespaces, and, for a new pid
/// namespace, the fork whose child becomes the init. Returns in the
/// process that goes on as the init.
pub fn child_setup(p: &Plan, cgroup: &mut crate::init::CgroupWait) -> Result<()> {
    use crate::channel::Msg;
    let chan = cgroup.chan;
    let opened: Vec<(Ns, OwnedFd, &PathBuf)> = p
        .child_joins
        .iter()
        .map(|(t, path)| {
            open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
                .map(|fd| (*t, fd, path))
                .context(|| {
                    format!(
                        "linux.namespaces: open the {} namespace {}",
                        name(*t),
                        path.display()
                    )
                })
        })
        .collect::<Result<_>>()?;
    for (t, fd, path) in &opened {
        setns(fd.as_fd(), flag(*t)).context(|| {
            format!(
                "linux.namespaces: enter the {} namespace {}",
                name(*t),
                path.display()
            )
        })?;
    }
    if p.child_new_user {
        unshare(CloneFlags::CLONE_NEWUSER).context(|| "make the user namespace".to_string())?;
        chan.send(&Msg::WriteMaps)
            .context(|| "ask for the id maps".to_string())?;
        cgroup.expect("the id maps", |m| matches!(m, Msg::MapsWritten))?;
    }
    if p.in_userns {
        become_root()?;
    }
    if !p.child_unshare.is_empty() {
        unshare(p.child_unshare).context(|| format!("make namespaces {:?}", p.child_unshare))?;
    }
    if p.child_new_pid {
        // The init, forked below, must be born in the cgroup.
        cgroup.wait()?;
        unshare(CloneFlags::CLONE_NEWPID).context(|| "make the pid namespace".to_string())?;
        // The init shares this process's channel: it must say nothing
        // before the runtime has learnt its pid, or the runtime would take
        // a later message (say, Ready) as coming from this intermediate
        // process and track the wrong pid. The init waits for the end of
        // this pipe, which closes when this process exits after sending
        // the pid.
        let (hold, held) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
            .context(|| "make the pipe that orders the init's messages".to_string())?;
        match crate::sys::clone3(0, None)
            .context(|| "fork the init into its pid namespace".to_string())?
        {
            crate::sys::Forked::Child => {
                drop(held);
                let mut byte = [0u8; 1];
                while let Err(nix::errno::Errno::EINTR) = nix::unistd::read(&hold, &mut byte) {}
            }
            crate::sys::Forked::Parent(pid) => {
                let _ = chan.send(&Msg::InitPid(pid));
                crate::sys::exit_now(0);
            }
        }
    }
    Ok(())
}

/// uid and gid 0 of the user namespace the process just entered.
pub fn become_root() -> Result<()> {
    let (u, g) = (nix::unistd::Uid::from_raw(0), nix::unistd::Gid::from_raw(0));
    nix::unistd::setresgid(g, g, g).context(|| "become gid 0 in the user namespace".to_string())?;
    nix::unistd::setresuid(u, u, u).context(|| "become uid 0 in the user namespace".to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ns(list: &[(&str, Option<&str>)]) -> Vec<LinuxNamespace> {
        list.iter()
            .map(|(t, p)| {
                let mut n = LinuxNamespace::default();
                n.set_typ(Ns::try_from(*t).unwrap());
                n.set_path(p.map(PathBuf::from));
                n
            })
            .collect()
    }

    #[test]
    fn all_new_is_one_clone() {
        let p = plan(&ns(&[
            ("pid", None),
            ("network", None),
            ("mount", None),
            ("cgroup", None),
            ("user", None),
        ]));
        assert!(p.clone_flags.contains(
            CloneFlags::CLONE_NEWPID
                | CloneFlags::CLONE_NEWNET
                | CloneFlags::CLONE_NEWNS
                | CloneFlags::CLONE_NEWUSER
        ));
        assert!(
            !p.clone_flags.contains(CloneFlags::CLONE_NEWCGROUP),
            "made after the cgroup is joined"
        );
        assert!(p.new_cgroup && p.new_user && p.child_joins.is_empty());
    }

    #[test]
    fn joined_netns_without_userns_is_entered_by_the_runtime() {
        let p = plan(&ns(&[
            ("pid", None),
            ("network", Some("/run/netns/x")),
            ("mount", None),
        ]));
        assert_eq!(p.parent_joins.len(), 1);
        assert!(p.clone_flags.contains(CloneFlags::CLONE_NEWPID));
        assert!(!p.child_new_pid);
    }

    #[test]
    fn joined_netns_with_new_userns_is_done_by_the_child() {
        let p = plan(&ns(&[
            ("user", None),
            ("pid", None),
            ("network", Some("/run/netns/x")),
            ("mount", None),
            ("pid", None),
        ]));
        assert!(p.clone_flags.is_empty());
        assert!(p.child_new_user && p.child_new_pid);
        assert_eq!(p.child_joins.len(), 1);
        assert!(p.child_unshare.contains(CloneFlags::CLONE_NEWNS));
    }

    #[test]
    fn joined_userns_goes_first() {
        let p = plan(&ns(&[
            ("mount", Some("/m")),
            ("user", Some("/u")),
            ("ipc", Some("/i")),
        ]));
        let order: Vec<Ns> = p.child_joins.iter().map(|(t, _)| *t).collect();
        assert_eq!(order, vec![Ns::User, Ns::Ipc, Ns::Mount]);
    }
}
