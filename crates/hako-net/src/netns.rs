//! Network namespaces kept as bind-mounted files, so that a container's
//! network outlives a restart of its program and can be set up before the
//! program runs.

use crate::netlink::Netlink;
use crate::{Error, Result};
use nix::mount::{MntFlags, MsFlags};
use std::path::Path;

/// Makes a new network namespace at `path` (a file that must not exist)
/// with `lo` up, and returns a netlink socket inside it.
pub fn create(path: &Path) -> Result<Netlink> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    let made = std::thread::scope(|s| {
        s.spawn(|| -> Result<Netlink> {
            // Only this thread moves: the namespace is kept by the mount.
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::io("make a network namespace", std::io::Error::from(e)))?;
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| {
                Error::io(
                    format!("bind the network namespace to {}", path.display()),
                    std::io::Error::from(e),
                )
            })?;
            let mut nl = Netlink::open()?;
            // `lo` is always index 1 in a new namespace.
            nl.set_up(1)?;
            Ok(nl)
        })
        .join()
        .unwrap_or_else(|_| Err(Error::Invalid("network namespace thread panicked".into())))
    });
    if made.is_err() {
        remove(path);
    }
    made
}

/// Whether `path` is a network namespace mount.
pub fn exists(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        .unwrap_or(false)
}

/// Removes the namespace at `path`: what is inside it (the container's
/// end of each veth) goes with it. Harmless when it is gone.
pub fn remove(path: &Path) {
    let _ = nix::mount::umount2(path, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(path);
}
