//! The OCI runtime spec of a container, from its image's config and the
//! options it was created with, made the way Docker makes it.

use crate::error::{Error, Result};
use crate::rootfs::User;
use crate::{ContainerConfig, MountKind, SeccompChoice};
use serde_json::{Value, json};
use std::path::Path;

/// Docker's default capabilities.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Every capability this kernel knows, for `--privileged` and `ALL`.
fn all_caps() -> Vec<String> {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(40);
    const NAMES: &[&str] = &[
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    // Only what this process may pass on: a capability outside its own
    // bounding set cannot be granted (as podman does for --privileged).
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|st| {
            st.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    NAMES
        .iter()
        .take(usize::try_from(last).unwrap_or(40) + 1)
        .enumerate()
        .filter(|(i, _)| bounding & (1u64 << i) != 0)
        .map(|(_, n)| format!("CAP_{n}"))
        .collect()
}

fn cap_name(c: &str) -> String {
    let up = c.trim().to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// The capability set after `--cap-add`/`--cap-drop` (`ALL` works in both).
pub fn capabilities(cfg: &ContainerConfig) -> Result<Vec<String>> {
    let all = all_caps();
    if cfg.privileged {
        return Ok(all);
    }
    let mut caps: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    for c in &cfg.cap_drop {
        let c = cap_name(c);
        if c == "CAP_ALL" {
            caps.clear();
        } else if all.contains(&c) {
            caps.retain(|x| *x != c);
        } else {
            return Err(Error::Invalid(format!(
                "--cap-drop: unknown capability {c}"
            )));
        }
    }
    for c in &cfg.cap_add {
        let c = cap_name(c);
        if c == "CAP_ALL" {
            caps = all.clone();
        } else if !all.contains(&c) {
            return Err(Error::Invalid(format!("--cap-add: unknown capability {c}")));
        } else if !caps.contains(&c) {
            caps.push(c);
        }
    }
    Ok(caps)
}

/// The process environment: PATH if the image has none, HOSTNAME, the
/// image's variables, then `-e` (later wins per name), TERM for a tty,
/// HOME from the user.
pub fn environment(
    image_env: &[String],
    cfg: &ContainerConfig,
    hostname: &str,
    home: &str,
) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let mut set = |kv: String| {
        let key = kv.split('=').next().unwrap_or("").to_string();
        if let Some(slot) = env
            .iter_mut()
            .find(|e| e.split('=').next() == Some(key.as_str()))
        {
            *slot = kv;
        } else {
            env.push(kv);
        }
    };
    set(format!("PATH={DEFAULT_PATH}"));
    set(format!("HOSTNAME={hostname}"));
    for e in image_env {
        set(e.clone());
    }
    for e in &cfg.env {
        set(e.clone());
    }
    if cfg.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={home}"));
    }
    env
}

fn bytes_of(v: Option<i64>) -> Option<i64> {
    v.filter(|&b| b != 0)
}

/// The spec (as JSON; the runtime checks it field by field).
#[allow(clippy::too_many_arguments)]
pub fn generate(
    cfg: &ContainerConfig,
    id: &str,
    rootfs: &Path,
    args: &[String],
    env: Vec<String>,
    cwd: &str,
    user: &User,
    files: &Path,
    netns: Option<&Path>,
) -> Result<Value> {
    let caps = capabilities(cfg)?;
    let hostname = cfg.hostname.clone().unwrap_or_else(|| id[..12].to_string());
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if cfg.privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", if cfg.privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", format!("size={}", cfg.shm_size.unwrap_or(64 << 20))]}),
    ];
    for f in ["resolv.conf", "hostname", "hosts"] {
        mounts.push(json!({
            "destination": format!("/etc/{f}"),
            "type": "bind",
            "source": files.join(f),
            "options": ["rbind", "rprivate"],
        }));
    }
    for m in &cfg.mounts {
        let mut options: Vec<String> = Vec::new();
        match m.kind {
            MountKind::Tmpfs => {
                options.extend(["nosuid", "nodev", "noexec"].map(String::from));
                if m.options.is_empty() {
                    options.push("mode=1777".into());
                }
                options.extend(m.options.iter().cloned());
                if m.readonly {
                    options.push("ro".into());
                }
                mounts.push(json!({"destination": m.target, "type": "tmpfs", "source": "tmpfs", "options": options}));
            }
            MountKind::Bind | MountKind::Volume => {
                options.extend(["rbind", "rprivate"].map(String::from));
                options.push(if m.readonly { "ro" } else { "rw" }.into());
                mounts.push(json!({"destination": m.target, "type": "bind", "source": m.source, "options": options}));
            }
        }
    }
    let mut args = args.to_vec();
    if cfg.init {
        if !Path::new(crate::INIT_BINARY).exists() {
            return Err(Error::Invalid(format!(
                "--init needs {} (apt-get install tini)",
                crate::INIT_BINARY
            )));
        }
        // On /dev, a tmpfs of the container's own: the image is not touched.
        mounts.push(json!({"destination": "/dev/init", "type": "bind", "source": crate::INIT_BINARY, "options": ["bind", "ro"]}));
        args.splice(0..0, ["/dev/init".to_string(), "--".to_string()]);
    }
    let mut linux_devices = Vec::new();
    let mut device_rules = Vec::new();
    for d in &cfg.devices {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let meta = std::fs::metadata(&d.host)
            .map_err(|e| Error::Invalid(format!("--device {}: {e}", d.host)))?;
        let kind = if meta.file_type().is_char_device() {
            "c"
        } else if meta.file_type().is_block_device() {
            "b"
        } else {
            return Err(Error::Invalid(format!("--device {}: not a device", d.host)));
        };
        let rdev = meta.rdev();
        let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
        linux_devices.push(json!({
            "path": d.container, "type": kind, "major": major, "minor": minor,
            "fileMode": meta.mode() & 0o7777, "uid": 0, "gid": 0,
        }));
        device_rules.push(json!({"allow": true, "type": kind, "major": major, "minor": minor, "access": d.permissions}));
    }
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    match netns {
        Some(path) => namespaces.push(json!({"type": "network", "path": path})),
        None if cfg.network != "host" => namespaces.push(json!({"type": "network"})),
        None => {}
    }
    if hako_cgroups_v2() {
        namespaces.push(json!({"type": "cgroup"}));
    }
    let mut resources = serde_json::Map::new();
    let devices = if cfg.privileged {
        json!([{"allow": true, "access": "rwm"}])
    } else {
        let mut d = vec![
            json!({"allow": false, "access": "rwm"}),
            json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}),
            json!({"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"}),
            json!({"allow": true, "type": "c", "major": 1, "minor": 7, "access": "rwm"}),
            json!({"allow": true, "type": "c", "major": 1, "minor": 8, "access": "rwm"}),
            json!({"allow": true, "type": "c", "major": 1, "minor": 9, "access": "rwm"}),
            json!({"allow": true, "type": "c", "major": 5, "minor": 0, "access": "rwm"}),
            json!({"allow": true, "type": "c", "major": 5, "minor": 1, "access": "rwm"}),
            json!({"allow": true, "type": "c", "major": 5, "minor": 2, "access": "rwm"}),
            json!({"allow": true, "type": "c", "major": 136, "access": "rwm"}),
            json!({"allow": true, "type": "c", "major": 10, "minor": 200, "access": "rwm"}),
        ];
        d.push(json!({"allow": false, "type": "c", "major": 10, "minor": 229, "access": "rwm"}));
        d.extend(device_rules);
        json!(d)
    };
    resources.insert("devices".into(), devices);
    let mut memory = serde_json::Map::new();
    if let Some(m) = bytes_of(cfg.resources.memory) {
        memory.insert("limit".into(), json!(m));
        // Docker: swap as large as the memory unless said otherwise.
        let swap = match cfg.resources.memory_swap {
            Some(-1) => -1,
            Some(s) if s > 0 => s,
            _ => m * 2,
        };
        memory.insert("swap".into(), json!(swap));
    }
    if !memory.is_empty() {
        resources.insert("memory".into(), Value::Object(memory));
    }
    let mut cpu = serde_json::Map::new();
    if let Some(c) = cfg.resources.cpus.filter(|c| *c > 0.0) {
        let period: u64 = 100_000;
        // Whole microseconds of the period; the float is a user's decimal.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let quota = (c * period as f64).round() as i64;
        cpu.insert("quota".into(), json!(quota));
        cpu.insert("period".into(), json!(period));
    }
    if let Some(s) = cfg.resources.cpu_shares.filter(|s| *s > 0) {
        cpu.insert("shares".into(), json!(s));
    }
    if let Some(s) = cfg.resources.cpuset_cpus.as_ref().filter(|s| !s.is_empty()) {
        cpu.insert("cpus".into(), json!(s));
    }
    if !cpu.is_empty() {
        resources.insert("cpu".into(), Value::Object(cpu));
    }
    if let Some(p) = cfg.resources.pids_limit.filter(|p| *p != 0) {
        resources.insert("pids".into(), json!({"limit": p}));
    }
    let rlimits: Vec<Value> = cfg
        .ulimits
        .iter()
        .map(|u| json!({"type": format!("RLIMIT_{}", u.name.to_ascii_uppercase()), "soft": u.soft, "hard": u.hard}))
        .collect();
    let mut linux = json!({
        "namespaces": namespaces,
        "resources": Value::Object(resources),
        // No shared parent: a parent made on demand would outlive the
        // container that made it whenever another one still ran in it.
        "cgroupsPath": format!("/hako-{id}"),
    });
    if !cfg.privileged {
        linux["maskedPaths"] = json!(MASKED);
        linux["readonlyPaths"] = json!(READONLY);
    }
    match (&cfg.seccomp, cfg.privileged) {
        (SeccompChoice::Default, false) => linux["seccomp"] = default_seccomp(&caps),
        (SeccompChoice::Profile(p), _) => linux["seccomp"] = p.clone(),
        _ => {}
    }
    if !linux_devices.is_empty() {
        linux["devices"] = json!(linux_devices);
    }
    if !cfg.sysctls.is_empty() {
        linux["sysctl"] = json!(cfg.sysctls);
    }
    let mut process = json!({
        "terminal": cfg.tty,
        "user": {"uid": user.uid, "gid": user.gid, "umask": 0o022, "additionalGids": user.additional_gids},
        "args": &args,
        "env": env,
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": cfg.no_new_privileges,
    });
    if !rlimits.is_empty() {
        process["rlimits"] = json!(rlimits);
    }
    Ok(json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": rootfs, "readonly": cfg.read_only},
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
        "annotations": {"io.hako.container.name": cfg.name_hint.clone().unwrap_or_default()},
    }))
}

/// Whether the host's cgroups are v2 only (then the container gets its own
/// cgroup namespace, as Docker does there).
fn hako_cgroups_v2() -> bool {
    std::fs::metadata("/sys/fs/cgroup/cgroup.controllers").is_ok()
}

/// `/etc/hosts` of a container.
pub fn hosts_file(
    hostname: &str,
    add_hosts: &[String],
    host_network: bool,
    own_ip: Option<std::net::Ipv4Addr>,
) -> Result<String> {
    let mut s = if host_network {
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n".to_string()
    };
    match own_ip {
        Some(ip) => s.push_str(&format!("{ip}\t{hostname}\n")),
        None if !host_network => s.push_str(&format!("127.0.1.1\t{hostname}\n")),
        None => {}
    }
    for h in add_hosts {
        let (name, ip) = h
            .split_once(':')
            .ok_or_else(|| Error::Invalid(format!("--add-host {h:?}: write HOST:IP")))?;
        if ip.parse::<std::net::IpAddr>().is_err() {
            return Err(Error::Invalid(format!(
                "--add-host {h:?}: {ip} is not an IP address"
            )));
        }
        s.push_str(&format!("{ip}\t{name}\n"));
    }
    Ok(s)
}

/// `/etc/resolv.conf`: `--dns` servers, else `resolver` (hako's, on a
/// user network), else the host's file without loopback servers
/// (unreachable from the container's own network).
pub fn resolv_conf(
    dns: &[String],
    host_network: bool,
    resolver: Option<std::net::Ipv4Addr>,
) -> Result<String> {
    for d in dns {
        if d.parse::<std::net::IpAddr>().is_err() {
            return Err(Error::Invalid(format!("--dns {d}: not an IP address")));
        }
    }
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut out = String::new();
    for line in host.lines() {
        let t = line.trim();
        if let Some(ns) = t.strip_prefix("nameserver") {
            let ns = ns.trim();
            let loopback = ns.starts_with("127.") || ns == "::1";
            if !dns.is_empty() || resolver.is_some() || (loopback && !host_network) {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    for d in dns {
        out.push_str(&format!("nameserver {d}\n"));
    }
    if let (true, Some(r)) = (dns.is_empty(), resolver) {
        out.push_str(&format!("nameserver {r}\n"));
    }
    Ok(out)
}

/// Syscalls every container may make (the C library's and the runtime's
/// everyday calls, and those whose harm the kernel already bounds by the
/// container's capabilities). Names a host's libseccomp does not know are
/// skipped when the filter is compiled.
const SECCOMP_ALLOWED: &[&str] = &[
    // Files and directories.
    "access",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "close",
    "close_range",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "flock",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futimesat",
    "getcwd",
    "getdents",
    "getdents64",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "ioctl",
    "lchown",
    "lchown32",
    "link",
    "linkat",
    "_llseek",
    "lseek",
    "lstat",
    "lstat64",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "name_to_handle_at",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pipe",
    "pipe2",
    "pread64",
    "preadv",
    "preadv2",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "rename",
    "renameat",
    "renameat2",
    "rmdir",
    "sendfile",
    "sendfile64",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "tee",
    "truncate",
    "truncate64",
    "umask",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vmsplice",
    "write",
    "writev",
    // Extended attributes.
    "fgetxattr",
    "flistxattr",
    "fremovexattr",
    "fsetxattr",
    "getxattr",
    "getxattrat",
    "lgetxattr",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "lremovexattr",
    "lsetxattr",
    "removexattr",
    "removexattrat",
    "setxattr",
    "setxattrat",
    // Reading the mount table (what /proc/self/mountinfo shows anyway).
    "listmount",
    "statmount",
    // Asynchronous I/O, polling and event descriptors.
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioprio_get",
    "ioprio_set",
    "_newselect",
    "pause",
    "poll",
    "ppoll",
    "ppoll_time64",
    "pselect6",
    "pselect6_time64",
    "select",
    "signalfd",
    "signalfd4",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    // Memory.
    "brk",
    "cachestat",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mremap",
    "mseal",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "remap_file_pages",
    // Processes, threads and signals (`clone` is below: its namespace
    // flags need CAP_SYS_ADMIN).
    "capget",
    "capset",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "fork",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "getrusage",
    "getsid",
    "gettid",
    "getuid",
    "getuid32",
    "kill",
    "pidfd_open",
    "pidfd_send_signal",
    "prctl",
    "prlimit64",
    "process_mrelease",
    "restart_syscall",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "setsid",
    "setuid",
    "setuid32",
    "sigaltstack",
    "sigprocmask",
    "sigreturn",
    "tgkill",
    "tkill",
    "ugetrlimit",
    "uretprobe",
    "vfork",
    "wait4",
    "waitid",
    "waitpid",
    // Debugging of the container's own processes: since Linux 4.8 a
    // traced process cannot get past the filter through its tracer.
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    // Sandboxing oneself.
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    // Sockets (`socket` is below: it refuses AF_VSOCK).
    "accept",
    "accept4",
    "bind",
    "connect",
    "getpeername",
    "getsockname",
    "getsockopt",
    "listen",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "send",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setsockopt",
    "shutdown",
    "socketcall",
    "socketpair",
    // System V and POSIX IPC (the container has its own IPC namespace).
    "ipc",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    // Time and timers (reading the clocks; adjtimex and clock_adjtime
    // change them only with CAP_SYS_TIME, which the kernel checks).
    "adjtimex",
    "alarm",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "getitimer",
    "gettimeofday",
    "nanosleep",
    "setitimer",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "times",
    // The system, read only.
    "getrandom",
    "sysinfo",
    "uname",
];

/// Allowed on x86 hosts only (the 64-bit, x32 and 32-bit ABIs).
const SECCOMP_ALLOWED_X86: &[&str] = &["arch_prctl", "modify_ldt"];

/// Allowed on Arm hosts only (the 64-bit and 32-bit ABIs).
const SECCOMP_ALLOWED_ARM: &[&str] = &[
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "breakpoint",
    "cacheflush",
    "set_tls",
    "sync_file_range2",
];

/// Syscalls allowed only to a container that holds the capability named:
/// they act on the host beyond the container (mounts, namespaces, modules,
/// clocks, the kernel log, other processes' memory), which the capability
/// is the permission for anyway.
const SECCOMP_BY_CAP: &[(&str, &[&str])] = &[
    ("CAP_BPF", &["bpf"]),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    ("CAP_PERFMON", &["perf_event_open"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "lsm_get_self_attr",
            "lsm_list_modules",
            "lsm_set_self_attr",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "finit_module", "init_module"],
    ),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &["kcmp", "pidfd_getfd", "process_madvise"],
    ),
    ("CAP_SYS_RAWIO", &["ioperm", "iopl"]),
    (
        "CAP_SYS_TIME",
        &["clock_settime", "clock_settime64", "settimeofday", "stime"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    ("CAP_SYSLOG", &["syslog"]),
];

/// `personality` domains a container may switch to: Linux (0), its 32-bit
/// variant (PER_LINUX32, 8), each with address-space randomisation turned
/// off (ADDR_NO_RANDOMIZE, 0x20000), and 0xffffffff, the query.
const SECCOMP_PERSONALITIES: &[u64] = &[0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// clone's namespace flags (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC,
/// NEWUSER, NEWPID, NEWNET): a new namespace needs CAP_SYS_ADMIN.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// AF_VSOCK: sockets to the hypervisor and other virtual machines.
const AF_VSOCK: u64 = 40;

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// The default seccomp profile, the semantics of Docker's: an allowlist.
/// A syscall not allowed fails with EPERM. Allowed are the everyday
/// syscalls (`SECCOMP_ALLOWED`, and those of this host's architecture),
/// the syscalls of each capability the container holds
/// (`SECCOMP_BY_CAP`), `personality` for the usual domains only, and
/// `socket` for every family but AF_VSOCK. Without CAP_SYS_ADMIN, `clone`
/// may not make namespaces, and `clone3`, whose flags a filter cannot
/// read, answers ENOSYS so that the C library falls back to `clone`.
/// `ptrace` and `process_vm_readv`/`writev` are allowed, as Docker does
/// on Linux 4.8 and later (earlier kernels let a tracer take a process
/// past its filter; hako needs a newer kernel anyway).
pub fn default_seccomp(caps: &[String]) -> Value {
    let has = |c: &str| caps.iter().any(|x| x == c);
    let (architectures, arch_allowed): (&[&str], &[&str]) = if cfg!(target_arch = "x86_64") {
        (
            &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            SECCOMP_ALLOWED_X86,
        )
    } else if cfg!(target_arch = "aarch64") {
        (&["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"], SECCOMP_ALLOWED_ARM)
    } else {
        // Another architecture: its native syscalls only.
        (&[], &[])
    };
    let mut names: Vec<&str> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let by_cap = SECCOMP_BY_CAP
        .iter()
        .filter(|(cap, _)| has(cap))
        .flat_map(|(_, list)| list.iter());
    for n in SECCOMP_ALLOWED.iter().chain(arch_allowed).chain(by_cap) {
        if seen.insert(*n) {
            names.push(n);
        }
    }
    let mut syscalls = vec![json!({"names": names, "action": "SCMP_ACT_ALLOW"})];
    syscalls.push(json!({
        "names": ["socket"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}],
    }));
    for p in SECCOMP_PERSONALITIES {
        syscalls.push(json!({
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": p, "op": "SCMP_CMP_EQ"}],
        }));
    }
    if !has("CAP_SYS_ADMIN") {
        // On x86 and Arm the flags are clone's first argument.
        syscalls.push(json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
        }));
        syscalls.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": architectures,
        "syscalls": syscalls,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn caps(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// The names the profile allows without condition.
    fn allowed(profile: &Value) -> Vec<String> {
        profile["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none())
            .flat_map(|r| r["names"].as_array().unwrap().iter())
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    }

    /// The rules that name `name`.
    fn rules<'a>(profile: &'a Value, name: &str) -> Vec<&'a Value> {
        profile["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == name))
            .collect()
    }

    #[test]
    fn default_profile_is_an_allowlist() {
        let p = default_seccomp(&caps(DEFAULT_CAPS));
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(p["defaultErrnoRet"], 1);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                p["architectures"],
                json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
            );
            assert!(allowed(&p).contains(&"arch_prctl".to_string()));
        } else if cfg!(target_arch = "aarch64") {
            assert_eq!(
                p["architectures"],
                json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"])
            );
        }
        let a = allowed(&p);
        for n in ["read", "write", "execve", "openat", "ptrace", "chroot"] {
            assert!(a.contains(&n.to_string()), "{n} allowed by default");
        }
        for n in [
            "mount", "unshare", "setns", "reboot", "swapon", "keyctl", "clone",
        ] {
            assert!(!a.contains(&n.to_string()), "{n} not allowed outright");
        }
        // One rule per name list: nothing named twice in the big rule.
        let mut sorted = a.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), a.len());
        // socket for every family but AF_VSOCK; personality for five values.
        assert_eq!(
            rules(&p, "socket")[0]["args"],
            json!([{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}])
        );
        let personalities: Vec<Value> = rules(&p, "personality")
            .iter()
            .map(|r| r["args"][0]["value"].clone())
            .collect();
        assert_eq!(
            personalities,
            [0x0u64, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff].map(|v| json!(v))
        );
    }

    #[test]
    fn clone_without_and_with_sys_admin() {
        let p = default_seccomp(&caps(DEFAULT_CAPS));
        let clone = rules(&p, "clone");
        assert_eq!(clone.len(), 1);
        assert_eq!(
            clone[0]["args"],
            json!([{"index": 0, "value": 0x7E02_0000u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}])
        );
        let clone3 = rules(&p, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0]["action"], "SCMP_ACT_ERRNO");
        assert_eq!(clone3[0]["errnoRet"], 38);

        let mut admin = caps(DEFAULT_CAPS);
        admin.push("CAP_SYS_ADMIN".into());
        let p = default_seccomp(&admin);
        let a = allowed(&p);
        for n in ["clone", "clone3", "mount", "unshare", "setns"] {
            assert!(a.contains(&n.to_string()), "{n} allowed with CAP_SYS_ADMIN");
        }
        // No conditional clone rule and no ENOSYS for clone3 beside them.
        assert_eq!(rules(&p, "clone").len(), 1);
        assert_eq!(rules(&p, "clone3").len(), 1);
    }

    #[test]
    fn capability_groups_appear_only_with_their_capability() {
        let none = allowed(&default_seccomp(&[]));
        for (cap, list) in SECCOMP_BY_CAP {
            for n in *list {
                assert!(
                    !SECCOMP_ALLOWED.contains(n),
                    "{n} is both always allowed and in {cap}'s group"
                );
                assert!(!none.contains(&n.to_string()), "{n} allowed without {cap}");
            }
            let with = allowed(&default_seccomp(&caps(&[cap])));
            for n in *list {
                assert!(with.contains(&n.to_string()), "{n} not allowed with {cap}");
            }
            // Nothing else opens: the names beyond the everyday set are
            // this group's.
            for n in &with {
                assert!(
                    SECCOMP_ALLOWED.contains(&n.as_str())
                        || SECCOMP_ALLOWED_X86.contains(&n.as_str())
                        || SECCOMP_ALLOWED_ARM.contains(&n.as_str())
                        || list.contains(&n.as_str()),
                    "{n} allowed with {cap} alone"
                );
            }
        }
    }
}
