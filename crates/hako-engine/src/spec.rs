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

/// Syscalls a container may not make unless it holds the capability
/// named (none: never). They reach the host kernel's global state:
/// modules, clocks, swap, keyrings, other processes' memory, new mounts
/// and namespaces.
const DENIED: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_MODULE",
        &[
            "init_module",
            "finit_module",
            "delete_module",
            "create_module",
            "get_kernel_syms",
            "query_module",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot", "kexec_load", "kexec_file_load"]),
    (
        "CAP_SYS_TIME",
        &[
            "settimeofday",
            "stime",
            "clock_settime",
            "clock_settime64",
            "adjtimex",
            "clock_adjtime",
            "clock_adjtime64",
        ],
    ),
    (
        "CAP_SYS_ADMIN",
        &[
            "mount",
            "umount",
            "umount2",
            "pivot_root",
            "swapon",
            "swapoff",
            "setns",
            "unshare",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "move_mount",
            "open_tree",
            "mount_setattr",
            "quotactl",
            "quotactl_fd",
            "lookup_dcookie",
            "bpf",
            "fanotify_init",
            "name_to_handle_at",
            "perf_event_open",
            "setdomainname",
            "sethostname",
            "vm86",
            "vm86old",
            "nfsservctl",
        ],
    ),
    (
        "CAP_SYS_PTRACE",
        &[
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "kcmp",
            "pidfd_getfd",
        ],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_NICE",
        &[
            "mbind",
            "move_pages",
            "set_mempolicy",
            "set_mempolicy_home_node",
            "migrate_pages",
        ],
    ),
    (
        "",
        &["keyctl", "add_key", "request_key", "uselib", "userfaultfd"],
    ),
];

/// clone's namespace flags: a new namespace needs CAP_SYS_ADMIN.
const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

/// The default seccomp profile: everything is allowed except what
/// reaches past the container (the list above, for a container without
/// the matching capability), with EPERM. `clone3` answers ENOSYS, as in
/// Docker's profile, since its flags cannot be filtered: the C library
/// then falls back to `clone`, whose namespace flags are.
pub fn default_seccomp(caps: &[String]) -> Value {
    let has = |c: &str| caps.iter().any(|x| x == c);
    let mut syscalls = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for (cap, list) in DENIED {
        if cap.is_empty() || !has(cap) {
            names.extend(list.iter().copied());
        }
    }
    syscalls.push(json!({"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}));
    if !has("CAP_SYS_ADMIN") {
        syscalls.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}));
        for flag in CLONE_NAMESPACE_FLAGS {
            syscalls.push(json!({
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": 1,
                // On x86-64 and arm64 the flags are clone's first argument.
                "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
            }));
        }
    }
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "syscalls": syscalls,
    })
}
