//! The container's root filesystem: mounts resolved inside the rootfs,
//! devices, `/dev` links, pivot_root, masked and read-only paths.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, makedev};
use nix::unistd::{chdir, chroot, fchdir, pivot_root};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};

use crate::error::{Context, Error, Result};
use crate::sys;

/// What mount options mean: flags set or cleared, propagation, and
/// mount_setattr attributes applied to the whole tree.
#[derive(Debug)]
pub struct MountOptions {
    pub flags: MsFlags,
    pub clear: MsFlags,
    pub propagation: MsFlags,
    pub attr_set: u64,
    pub attr_clear: u64,
    pub idmap: bool,
    pub recursive_idmap: bool,
    pub data: Vec<String>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            clear: MsFlags::empty(),
            propagation: MsFlags::empty(),
            attr_set: 0,
            attr_clear: 0,
            idmap: false,
            recursive_idmap: false,
            data: Vec::new(),
        }
    }
}

/// MS_NOSYMFOLLOW (Linux 5.10), which nix does not name.
const MS_NOSYMFOLLOW: MsFlags = MsFlags::from_bits_retain(256);

pub fn parse_options(options: &[String]) -> MountOptions {
    let mut o = MountOptions::default();
    for opt in options {
        let (set, clear): (MsFlags, MsFlags) = match opt.as_str() {
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "silent" => (MsFlags::MS_SILENT, MsFlags::empty()),
            "loud" => (MsFlags::empty(), MsFlags::MS_SILENT),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "nosymfollow" => (MS_NOSYMFOLLOW, MsFlags::empty()),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                let mut p = match opt.trim_start_matches('r') {
                    "private" => MsFlags::MS_PRIVATE,
                    "shared" => MsFlags::MS_SHARED,
                    "slave" => MsFlags::MS_SLAVE,
                    _ => MsFlags::MS_UNBINDABLE,
                };
                // "rprivate" etc. start with r; "private" does not.
                if opt.starts_with("rp") || opt.starts_with("rs") || opt.starts_with("ru") {
                    p |= MsFlags::MS_REC;
                }
                o.propagation = p;
                continue;
            }
            "idmap" => {
                o.idmap = true;
                continue;
            }
            "ridmap" => {
                o.idmap = true;
                o.recursive_idmap = true;
                continue;
            }
            "tmpcopyup" => continue,
            other => {
                if let Some((set, clear)) = recursive_attr(other) {
                    o.attr_set |= set;
                    o.attr_clear |= clear;
                } else {
                    o.data.push(other.to_string());
                }
                continue;
            }
        };
        o.flags |= set;
        o.flags &= !clear;
        o.clear |= clear;
    }
    o
}

/// The recursive mount attributes (`rro`, `rnosuid`, ...): mount_setattr
/// bits to set and to clear.
fn recursive_attr(opt: &str) -> Option<(u64, u64)> {
    let a = |x: u64| Some((x, 0));
    let c = |x: u64| Some((0, x));
    match opt {
        "rro" => a(libc::MOUNT_ATTR_RDONLY),
        "rrw" => c(libc::MOUNT_ATTR_RDONLY),
        "rnosuid" => a(libc::MOUNT_ATTR_NOSUID),
        "rsuid" => c(libc::MOUNT_ATTR_NOSUID),
        "rnodev" => a(libc::MOUNT_ATTR_NODEV),
        "rdev" => c(libc::MOUNT_ATTR_NODEV),
        "rnoexec" => a(libc::MOUNT_ATTR_NOEXEC),
        "rexec" => c(libc::MOUNT_ATTR_NOEXEC),
        "rnodiratime" => a(libc::MOUNT_ATTR_NODIRATIME),
        "rdiratime" => c(libc::MOUNT_ATTR_NODIRATIME),
        "rnosymfollow" => a(libc::MOUNT_ATTR_NOSYMFOLLOW),
        "rsymfollow" => c(libc::MOUNT_ATTR_NOSYMFOLLOW),
        "rrelatime" => Some((libc::MOUNT_ATTR_RELATIME, libc::MOUNT_ATTR__ATIME)),
        "rnorelatime" => c(libc::MOUNT_ATTR_RELATIME),
        "rnoatime" => Some((libc::MOUNT_ATTR_NOATIME, libc::MOUNT_ATTR__ATIME)),
        "ratime" => c(libc::MOUNT_ATTR_NOATIME),
        "rstrictatime" => Some((libc::MOUNT_ATTR_STRICTATIME, libc::MOUNT_ATTR__ATIME)),
        "rnostrictatime" => c(libc::MOUNT_ATTR_STRICTATIME),
        _ => None,
    }
}

/// Everything the mount setup needs to know about the container.
pub struct RootfsContext<'a> {
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    /// Bind sources that are relative paths are relative to the bundle.
    pub bundle: &'a Path,
    pub in_userns: bool,
    pub new_netns: bool,
    pub new_cgroupns: bool,
    pub cgroup: Option<&'a hako_cgroups::Cgroup>,
    /// The user namespaces of idmapped mounts, by mount index: made by the
    /// runtime, whose /proc matches its pids (the init's does not).
    pub idmap_userns: &'a [(usize, OwnedFd)],
}

fn open_root(rootfs: &Path) -> Result<OwnedFd> {
    open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context(|| format!("open rootfs {}", rootfs.display()))
}

/// Resolves `dest` inside the rootfs, creating missing directories (and the
/// last component as a file when `file` is set) without ever leaving it:
/// symlinks, absolute or climbing, resolve as if the rootfs were `/`, and
/// what they point at is created inside the rootfs too.
pub fn make_target(root: &OwnedFd, dest: &Path, file: bool) -> Result<OwnedFd> {
    // Most targets exist: one lookup.
    match sys::open_in_root(root.as_raw_fd(), dest, libc::O_PATH, 0) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(e).context(|| format!("resolve {} in rootfs", dest.display())),
    }
    let ctx = || format!("create {} in rootfs", dest.display());
    let mut remaining: std::collections::VecDeque<std::ffi::OsString> = dest
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    // The logical path inside the rootfs, and a descriptor for it.
    let mut at = PathBuf::from("/");
    let mut cur = sys::open_in_root(root.as_raw_fd(), &at, libc::O_PATH | libc::O_DIRECTORY, 0)
        .context(ctx)?;
    let mut links = 0;
    while let Some(name) = remaining.pop_front() {
        if name == ".." {
            at.pop();
            cur = sys::open_in_root(root.as_raw_fd(), &at, libc::O_PATH | libc::O_DIRECTORY, 0)
                .context(ctx)?;
            continue;
        }
        let last = remaining.is_empty();
        let name_path = Path::new(&name);
        let st = match nix::sys::stat::fstatat(
            &cur,
            name_path,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => st,
            Err(Errno::ENOENT) => {
                let made = if last && file {
                    nix::fcntl::openat(
                        &cur,
                        name_path,
                        OFlag::O_CREAT
                            | OFlag::O_EXCL
                            | OFlag::O_WRONLY
                            | OFlag::O_NOFOLLOW
                            | OFlag::O_CLOEXEC,
                        Mode::from_bits_truncate(0o644),
                    )
                    .map(drop)
                } else {
                    nix::sys::stat::mkdirat(&cur, name_path, Mode::from_bits_truncate(0o755))
                };
                match made {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => {
                        return Err(e)
                            .context(|| format!("create {} in rootfs", at.join(&name).display()));
                    }
                }
                nix::sys::stat::fstatat(&cur, name_path, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                    .context(ctx)?
            }
            Err(e) => return Err(e).context(ctx),
        };
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            links += 1;
            if links > 40 {
                return Err(Errno::ELOOP).context(ctx);
            }
            let target = nix::fcntl::readlinkat(&cur, name_path).context(ctx)?;
            let target = PathBuf::from(target);
            if target.is_absolute() {
                at = PathBuf::from("/");
                cur = sys::open_in_root(root.as_raw_fd(), &at, libc::O_PATH | libc::O_DIRECTORY, 0)
                    .context(ctx)?;
            }
            for c in target.components().rev() {
                match c {
                    Component::Normal(n) => remaining.push_front(n.to_os_string()),
                    Component::ParentDir => remaining.push_front("..".into()),
                    _ => {}
                }
            }
            continue;
        }
        cur = nix::fcntl::openat(
            &cur,
            name_path,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .context(ctx)?;
        at.push(&name);
    }
    Ok(cur)
}

/// Flags that a bind remount must keep: the kernel refuses to drop the
/// "locked" ones (nosuid, nodev, noexec, ...) inherited from the source.
fn locked_flags(path: &str) -> MsFlags {
    let Ok(st) = nix::sys::statvfs::statvfs(path) else {
        return MsFlags::empty();
    };
    use nix::sys::statvfs::FsFlags;
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (from, to) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        // ST_RELATIME (the kernel's bit; nix names it for glibc only).
        (FsFlags::from_bits_retain(0x1000), MsFlags::MS_RELATIME),
    ] {
        if f.contains(from) {
            out |= to;
        }
    }
    out
}

/// Step one, in the container's new mount namespace, before pivot_root.
/// `before_cgroup_mount` runs before the first cgroup mount, which shows
/// the container's cgroup and so needs it to exist.
pub fn prepare(
    ctx: &RootfsContext,
    before_cgroup_mount: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    let linux = ctx.spec.linux().as_ref();
    let propagation = match linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        Some("shared") | Some("rshared") => MsFlags::MS_SHARED | MsFlags::MS_REC,
        Some("private") | Some("rprivate") => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        Some("unbindable") | Some("runbindable") => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => MsFlags::MS_SLAVE | MsFlags::MS_REC,
    };
    // Nothing mounted below may propagate back to the host; a shared root
    // propagation is applied to the new root after pivot_root instead.
    let first = if propagation.contains(MsFlags::MS_SHARED) {
        MsFlags::MS_SLAVE | MsFlags::MS_REC
    } else {
        propagation
    };
    mount(None::<&str>, "/", None::<&str>, first, None::<&str>)
        .context(|| "make / a slave mount in the container's namespace".to_string())?;
    mount(
        Some(ctx.rootfs),
        ctx.rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .context(|| format!("bind rootfs {} onto itself", ctx.rootfs.display()))?;

    let root = open_root(ctx.rootfs)?;
    let mut dev_is_tmpfs = false;
    let mut dev_mounted = false;
    let mut cgroup_waited = false;
    for (i, m) in ctx.spec.mounts().iter().flatten().enumerate() {
        if !cgroup_waited && matches!(m.typ().as_deref(), Some("cgroup") | Some("cgroup2")) {
            before_cgroup_mount()?;
            cgroup_waited = true;
        }
        if m.destination() == Path::new("/dev") {
            dev_mounted = true;
        }
        if m.destination() == Path::new("/dev") && m.typ().as_deref() != Some("bind") {
            let bind = m
                .options()
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind");
            dev_is_tmpfs = !bind;
        }
        mount_one(ctx, &root, i, m).map_err(|e| match e {
            Error::Sys { context, source } => Error::Sys {
                context: format!("mounts[{i}] ({}): {context}", m.destination().display()),
                source,
            },
            other => other,
        })?;
    }
    // The spec's default devices are always there: made in a /dev tmpfs,
    // or, with no mount at /dev, bound from the host onto files in the
    // rootfs's own /dev (a device node made there would stay on its disk).
    if dev_is_tmpfs || !dev_mounted {
        for (path, kind, major, minor) in DEFAULT_DEVICES {
            if !dev_mounted {
                let rdev = makedev(major.unsigned_abs(), minor.unsigned_abs());
                bind_host_device(&root, Path::new(path), rdev)?;
                continue;
            }
            let mut d = LinuxDevice::default();
            d.set_path(PathBuf::from(path));
            d.set_typ(kind);
            d.set_major(major);
            d.set_minor(minor);
            d.set_file_mode(Some(0o666));
            d.set_uid(Some(0));
            d.set_gid(Some(0));
            make_device(ctx, &root, &d)?;
        }
        for (link, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
            ("ptmx", "pts/ptmx"),
        ] {
            let dev = sys::open_in_root(
                root.as_raw_fd(),
                Path::new("/dev"),
                libc::O_PATH | libc::O_DIRECTORY,
                0,
            )
            .context(|| "open /dev in rootfs".to_string())?;
            match nix::unistd::symlinkat(target, &dev, link) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e).context(|| format!("symlink /dev/{link} -> {target}")),
            }
        }
    }
    for d in linux
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
    {
        make_device(ctx, &root, d)?;
    }
    Ok(())
}

/// The devices the runtime-spec says every container has.
const DEFAULT_DEVICES: [(&str, LinuxDeviceType, i64, i64); 6] = [
    ("/dev/null", LinuxDeviceType::C, 1, 3),
    ("/dev/zero", LinuxDeviceType::C, 1, 5),
    ("/dev/full", LinuxDeviceType::C, 1, 7),
    ("/dev/random", LinuxDeviceType::C, 1, 8),
    ("/dev/urandom", LinuxDeviceType::C, 1, 9),
    ("/dev/tty", LinuxDeviceType::C, 5, 0),
];

/// Binds the host's device node `path` onto the same path in the rootfs
/// (resolved inside it), unless the rootfs has that very device there.
fn bind_host_device(root: &OwnedFd, path: &Path, rdev: u64) -> Result<()> {
    let t = make_target(root, path, true)?;
    let st = nix::sys::stat::fstat(&t).context(|| format!("stat {} in rootfs", path.display()))?;
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFCHR
        && st.st_rdev == rdev
    {
        return Ok(());
    }
    mount(
        Some(path),
        sys::fd_path(&t).as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .context(|| format!("bind device {}", path.display()))
}

fn mount_one(ctx: &RootfsContext, root: &OwnedFd, index: usize, m: &Mount) -> Result<()> {
    let opts = parse_options(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().as_deref().unwrap_or("");
    let is_bind = opts.flags.contains(MsFlags::MS_BIND) || typ == "bind";
    let mut source = m.source().clone().unwrap_or_default();
    if is_bind && source.is_relative() {
        source = ctx.bundle.join(source);
    }
    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup(ctx, root, m, &opts);
    }
    let file = is_bind && source.exists() && !source.is_dir();
    let target = make_target(root, m.destination(), file)?;
    let tpath = sys::fd_path(&target);

    if opts.idmap {
        let userns = ctx
            .idmap_userns
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, fd)| fd)
            .ok_or_else(|| {
                Error::Init(format!(
                    "mounts[{index}]: no user namespace was made for its idmap"
                ))
            })?;
        return mount_idmapped(m, &opts, &source, &target, userns);
    }
    if is_bind {
        let flags = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
        mount(
            Some(&source),
            tpath.as_str(),
            None::<&str>,
            flags,
            None::<&str>,
        )
        .context(|| format!("bind {} to {}", source.display(), m.destination().display()))?;
        let extra = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            // The new mount is reached through a fresh lookup of the target.
            let fresh = make_target(root, m.destination(), file)?;
            let fpath = sys::fd_path(&fresh);
            let keep = locked_flags(&fpath) & !opts.clear;
            mount(
                None::<&str>,
                fpath.as_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra | keep,
                None::<&str>,
            )
            .context(|| format!("remount {} with its options", m.destination().display()))?;
        }
    } else {
        let data = opts.data.join(",");
        let flags = opts.flags & !MsFlags::MS_REMOUNT;
        let result = mount(
            Some(&source),
            tpath.as_str(),
            Some(typ),
            flags,
            (!data.is_empty()).then_some(data.as_str()),
        );
        match result {
            // Without its own network namespace (or inside a user namespace)
            // sysfs cannot be mounted afresh: bind the host's, as others do.
            Err(Errno::EPERM) | Err(Errno::EBUSY) if typ == "sysfs" => {
                mount(
                    Some("/sys"),
                    tpath.as_str(),
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .context(|| "bind /sys".to_string())?;
                let fresh = make_target(root, m.destination(), false)?;
                let fpath = sys::fd_path(&fresh);
                let keep = locked_flags(&fpath);
                mount(
                    None::<&str>,
                    fpath.as_str(),
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | (flags & !MsFlags::MS_REC) | keep,
                    None::<&str>,
                )
                .context(|| "remount /sys".to_string())?;
            }
            Err(e) => {
                return Err(e).context(|| {
                    format!(
                        "mount {typ} {} on {} (data {data:?})",
                        source.display(),
                        m.destination().display()
                    )
                });
            }
            Ok(()) => {}
        }
    }
    if !opts.propagation.is_empty() || opts.attr_set != 0 || opts.attr_clear != 0 {
        let fresh = make_target(root, m.destination(), file)?;
        if !opts.propagation.is_empty() {
            mount(
                None::<&str>,
                sys::fd_path(&fresh).as_str(),
                None::<&str>,
                opts.propagation,
                None::<&str>,
            )
            .context(|| format!("set propagation of {}", m.destination().display()))?;
        }
        if opts.attr_set != 0 || opts.attr_clear != 0 {
            sys::mount_setattr(
                fresh.as_raw_fd(),
                true,
                opts.attr_set,
                opts.attr_clear,
                None,
            )
            .context(|| format!("set recursive attributes on {}", m.destination().display()))?;
        }
    }
    Ok(())
}

fn mount_idmapped(
    m: &Mount,
    opts: &MountOptions,
    source: &Path,
    target: &OwnedFd,
    userns: &OwnedFd,
) -> Result<()> {
    let tree = sys::open_tree_clone(
        source,
        opts.recursive_idmap || opts.flags.contains(MsFlags::MS_REC),
    )
    .context(|| format!("open_tree {}", source.display()))?;
    sys::mount_setattr(
        tree.as_raw_fd(),
        opts.recursive_idmap,
        libc::MOUNT_ATTR_IDMAP,
        0,
        Some(userns.as_raw_fd()),
    )
    .context(|| {
        format!(
            "idmap {} (needs a filesystem that supports idmapped mounts)",
            source.display()
        )
    })?;
    let mut set = opts.attr_set;
    if opts.flags.contains(MsFlags::MS_RDONLY) {
        set |= libc::MOUNT_ATTR_RDONLY;
    }
    if set != 0 || opts.attr_clear != 0 {
        sys::mount_setattr(tree.as_raw_fd(), true, set, opts.attr_clear, None)
            .context(|| format!("set attributes on {}", m.destination().display()))?;
    }
    sys::move_mount_to_fd(tree.as_raw_fd(), target.as_raw_fd())
        .context(|| format!("move idmapped mount to {}", m.destination().display()))?;
    Ok(())
}

/// A user namespace holding the mount's id mappings: a short-lived child
/// unshares one, the maps are written, and its ns file is kept open.
pub fn idmap_userns(m: &Mount) -> Result<OwnedFd> {
    let format_map = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.iter()
            .flatten()
            .map(|x| format!("{} {} {}\n", x.container_id(), x.host_id(), x.size()))
            .collect::<String>()
    };
    let uid_map = format_map(m.uid_mappings());
    let gid_map = format_map(m.gid_mappings());
    if uid_map.is_empty() || gid_map.is_empty() {
        return Err(Error::Init(format!(
            "mount {}: idmap needs uidMappings and gidMappings on the mount",
            m.destination().display()
        )));
    }
    let (r, w) = nix::unistd::pipe().context(|| "pipe".to_string())?;
    match sys::clone3(libc::CLONE_NEWUSER as u64, None)
        .context(|| "clone a user namespace for idmap".to_string())?
    {
        sys::Forked::Child => {
            drop(w);
            let mut b = [0u8; 1];
            let _ = nix::unistd::read(&r, &mut b);
            sys::exit_now(0);
        }
        sys::Forked::Parent(pid) => {
            drop(r);
            let result = (|| {
                std::fs::write(format!("/proc/{pid}/uid_map"), &uid_map)
                    .context(|| "write idmap uid_map".to_string())?;
                std::fs::write(format!("/proc/{pid}/setgroups"), "deny").ok();
                std::fs::write(format!("/proc/{pid}/gid_map"), &gid_map)
                    .context(|| "write idmap gid_map".to_string())?;
                open(
                    format!("/proc/{pid}/ns/user").as_str(),
                    OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .context(|| "open idmap user namespace".to_string())
            })();
            drop(w);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            result
        }
    }
}

/// Cgroup mounts. On a pure v2 host: cgroup2 itself in a cgroup namespace,
/// else a bind of the container's cgroup. On v1 and hybrid hosts: a tmpfs
/// with a bind of the container's cgroup from each hierarchy, named as on
/// the host (so `/sys/fs/cgroup/memory` shows the container's own
/// cgroup).
fn mount_cgroup(ctx: &RootfsContext, root: &OwnedFd, m: &Mount, opts: &MountOptions) -> Result<()> {
    use hako_cgroups::Layout;
    let target = make_target(root, m.destination(), false)?;
    let flags = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
    let Some(cg) = ctx.cgroup else {
        return Err(Error::Init(format!(
            "mount {}: the container has no cgroup to show",
            m.destination().display()
        )));
    };
    if cg.layout == Layout::V2 {
        let path = sys::fd_path(&target);
        if ctx.new_cgroupns {
            return mount(
                Some("cgroup2"),
                path.as_str(),
                Some("cgroup2"),
                flags,
                None::<&str>,
            )
            .context(|| format!("mount cgroup2 on {}", m.destination().display()));
        }
        let src = cg
            .v2
            .as_ref()
            .map(|d| d.dir.clone())
            .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup"));
        mount(
            Some(&src),
            path.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .context(|| format!("bind {} on {}", src.display(), m.destination().display()))?;
        return remount_bind(root, m.destination(), flags);
    }
    mount(
        Some("tmpfs"),
        sys::fd_path(&target).as_str(),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755"),
    )
    .context(|| format!("mount tmpfs on {}", m.destination().display()))?;
    let dir_fd = make_target(root, m.destination(), false)?;
    let dir = reopen_dir(&dir_fd)?;
    for (name, host) in cg.v1_mount_sources() {
        // Made and reached through the tmpfs's descriptor: it is ours, so
        // no lookup from the rootfs is needed.
        let dest = m.destination().join(&name);
        match nix::sys::stat::mkdirat(&dir, name.as_str(), Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e).context(|| format!("create {}", dest.display())),
        }
        let open_at = || {
            nix::fcntl::openat(
                &dir,
                name.as_str(),
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .context(|| format!("open {}", dest.display()))
        };
        let t = open_at()?;
        mount(
            Some(&host),
            sys::fd_path(&t).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .context(|| format!("bind {} on {}", host.display(), dest.display()))?;
        if !flags.is_empty() {
            // A fresh lookup lands on the new mount.
            remount_at(&open_at()?, &dest, flags)?;
        }
        // Co-mounted hierarchies (cpu,cpuacct) are also reachable by each
        // controller's name, as on the host.
        if name.contains(',') {
            for part in name.split(',') {
                match nix::unistd::symlinkat(name.as_str(), &dir, part) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => {
                        return Err(e).context(|| {
                            format!("symlink {part} -> {name} in {}", m.destination().display())
                        });
                    }
                }
            }
        }
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        remount_bind(root, m.destination(), flags)?;
    }
    Ok(())
}

/// Applies `flags` to the bind mount at `dest`, keeping the flags the
/// kernel locks; `dest` is looked up afresh, so that the lookup lands on
/// the mount now there rather than on what it covers.
fn remount_bind(root: &OwnedFd, dest: &Path, flags: MsFlags) -> Result<()> {
    if flags.is_empty() {
        return Ok(());
    }
    remount_at(&make_target(root, dest, false)?, dest, flags)
}

/// Applies `flags` to the bind mount `fresh` refers to.
fn remount_at(fresh: &OwnedFd, dest: &Path, flags: MsFlags) -> Result<()> {
    let p = sys::fd_path(fresh);
    let keep = locked_flags(&p);
    mount(
        None::<&str>,
        p.as_str(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | keep,
        None::<&str>,
    )
    .context(|| format!("remount {}", dest.display()))
}

fn make_device(ctx: &RootfsContext, root: &OwnedFd, d: &LinuxDevice) -> Result<()> {
    let path = d.path();
    if !path.is_absolute() || !path.starts_with("/dev") {
        return Err(Error::Init(format!(
            "linux.devices: {} must be an absolute path under /dev",
            path.display()
        )));
    }
    let parent = path.parent().unwrap_or(Path::new("/dev"));
    let name = path
        .file_name()
        .ok_or_else(|| Error::Init(format!("linux.devices: {} has no name", path.display())))?;
    if ctx.in_userns {
        // mknod is not allowed in a user namespace: bind the host's node.
        let t = make_target(root, path, true)?;
        return mount(
            Some(path),
            sys::fd_path(&t).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .context(|| format!("bind device {}", path.display()));
    }
    let pfd = make_target(root, parent, false)?;
    let dir = reopen_dir(&pfd)?;
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(Error::Init(format!(
                "linux.devices: {} has type \"a\", which is not a device node",
                path.display()
            )));
        }
    };
    let mode = Mode::from_bits_truncate(d.file_mode().unwrap_or(0o666));
    let dev = makedev(
        u64::try_from(d.major()).unwrap_or(0),
        u64::try_from(d.minor()).unwrap_or(0),
    );
    let _ = nix::unistd::unlinkat(
        &dir,
        Path::new(name),
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    );
    nix::sys::stat::mknodat(&dir, Path::new(name), kind, mode, dev)
        .context(|| format!("mknod {}", path.display()))?;
    // mknod applies the umask; the spec's mode is meant exactly.
    nix::sys::stat::fchmodat(
        &dir,
        Path::new(name),
        mode,
        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
    )
    .or_else(|e| {
        if e == Errno::EOPNOTSUPP {
            Ok(())
        } else {
            Err(e)
        }
    })
    .context(|| format!("chmod {}", path.display()))?;
    nix::unistd::fchownat(
        &dir,
        Path::new(name),
        Some(nix::unistd::Uid::from_raw(d.uid().unwrap_or(0))),
        Some(nix::unistd::Gid::from_raw(d.gid().unwrap_or(0))),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .context(|| format!("chown {}", path.display()))?;
    Ok(())
}

fn reopen_dir(fd: &OwnedFd) -> Result<OwnedFd> {
    open(
        sys::fd_path(fd).as_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context(|| "open directory".to_string())
}

/// Makes the rootfs the process's `/`.
pub fn pivot(rootfs: &Path, no_pivot: bool) -> Result<()> {
    if no_pivot {
        chdir(rootfs).context(|| format!("chdir {}", rootfs.display()))?;
        mount(
            Some(rootfs),
            "/",
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .context(|| "move rootfs to /".to_string())?;
        chroot(".").context(|| "chroot".to_string())?;
        return chdir("/").context(|| "chdir /".to_string());
    }
    let old = open(
        "/",
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context(|| "open /".to_string())?;
    let new = open(
        rootfs,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context(|| format!("open {}", rootfs.display()))?;
    fchdir(&new).context(|| "chdir rootfs".to_string())?;
    pivot_root(".", ".").context(|| format!("pivot_root {}", rootfs.display()))?;
    fchdir(&old).context(|| "chdir old root".to_string())?;
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .context(|| "make old root a slave".to_string())?;
    umount2(".", MntFlags::MNT_DETACH).context(|| "detach old root".to_string())?;
    chdir("/").context(|| "chdir /".to_string())
}

/// Without a mount namespace: only a chroot into the rootfs.
pub fn chroot_only(rootfs: &Path) -> Result<()> {
    chdir(rootfs).context(|| format!("chdir {}", rootfs.display()))?;
    chroot(".").context(|| format!("chroot {}", rootfs.display()))?;
    chdir("/").context(|| "chdir /".to_string())
}

/// Shows the container's pty as /dev/console too.
pub fn bind_console(pty: &str) -> Result<()> {
    let console = Path::new("/dev/console");
    if std::fs::symlink_metadata(console).is_err() {
        std::fs::File::create(console).context(|| "create /dev/console".to_string())?;
    }
    mount(
        Some(pty),
        console,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .context(|| format!("bind {pty} on /dev/console"))
}

/// The container's /dev/null, checked to be the null device, for masking
/// files: a rootfs could hold anything under that name.
fn null_device() -> Result<OwnedFd> {
    let fd = open(
        "/dev/null",
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context(|| "open the container's /dev/null".to_string())?;
    let st = nix::sys::stat::fstat(&fd).context(|| "stat the container's /dev/null".to_string())?;
    let is_char = st.st_mode & libc::S_IFMT == libc::S_IFCHR;
    if !is_char || st.st_rdev != makedev(1, 3) {
        return Err(Error::Init(
            "maskedPaths: the container's /dev/null is not the null device (1:3)".into(),
        ));
    }
    Ok(fd)
}

/// Step two, inside the new root: masked and read-only paths, read-only
/// root, root propagation.
pub fn finish(spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    let mut null = None;
    for p in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        let meta = match std::fs::metadata(p) {
            Ok(m) => m,
            Err(_) => continue,
        };
        let res = if meta.is_dir() {
            mount(
                Some("tmpfs"),
                p.as_str(),
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                Some("size=0k,mode=0555"),
            )
        } else {
            if null.is_none() {
                null = Some(null_device()?);
            }
            let src = null.as_ref().map(sys::fd_path).unwrap_or_default();
            mount(
                Some(src.as_str()),
                p.as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        };
        res.context(|| format!("maskedPaths: mask {p}"))?;
    }
    for p in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        if std::fs::symlink_metadata(p).is_err() {
            continue;
        }
        mount(
            Some(p.as_str()),
            p.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .context(|| format!("bind {p} read-only"))?;
        let keep = locked_flags(p);
        mount(
            None::<&str>,
            p.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | keep,
            None::<&str>,
        )
        .context(|| format!("remount {p} read-only"))?;
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        let keep = locked_flags("/");
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | keep,
            None::<&str>,
        )
        .context(|| "remount the root read-only".to_string())?;
    }
    if let Some(p) = linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        let flags = match p {
            "shared" | "rshared" => MsFlags::MS_SHARED,
            "slave" | "rslave" => MsFlags::MS_SLAVE,
            "private" | "rprivate" => MsFlags::MS_PRIVATE,
            "unbindable" | "runbindable" => MsFlags::MS_UNBINDABLE,
            other => {
                return Err(Error::Init(format!(
                    "linux.rootfsPropagation: {other:?} is not one of shared, slave, private, unbindable"
                )));
            }
        };
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            flags | MsFlags::MS_REC,
            None::<&str>,
        )
        .context(|| format!("set root propagation {p}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options() {
        let o = parse_options(&strs(&[
            "rbind", "ro", "nosuid", "rslave", "rro", "size=10k",
        ]));
        assert!(o.flags.contains(
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID
        ));
        assert_eq!(o.propagation, MsFlags::MS_SLAVE | MsFlags::MS_REC);
        assert_eq!(o.attr_set, libc::MOUNT_ATTR_RDONLY);
        assert_eq!(o.data, vec!["size=10k".to_string()]);
        let o = parse_options(&strs(&["ro", "rw", "private"]));
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
        assert_eq!(o.propagation, MsFlags::MS_PRIVATE);
    }
}
