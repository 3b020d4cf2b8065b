//! Reading a bundle's `config.json`: version check, unknown fields and
//! capability names, typed parse, and the checks that must pass before any
//! resource is taken.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::runtime::Spec;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::{Error, Result};

/// A parsed bundle configuration with the rootfs resolved to an absolute path.
#[derive(Debug, Clone)]
pub struct BundleConfig {
    pub spec: Spec,
    /// The file as read, kept in the state so that `exec` and hooks use the
    /// exact configuration the container was created with.
    pub raw: Box<RawValue>,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// Non-fatal findings (capabilities this kernel lacks), for the log.
    pub warnings: Vec<String>,
}

impl BundleConfig {
    /// An error about one field of this bundle's config.json.
    pub fn invalid(&self, field: impl Into<String>, message: impl Into<String>) -> Error {
        invalid(&self.bundle.join("config.json"), field, message)
    }
}

fn invalid(path: &Path, field: impl Into<String>, message: impl Into<String>) -> Error {
    Error::InvalidConfig {
        path: path.to_path_buf(),
        field: field.into(),
        message: message.into(),
    }
}

/// Accepts runtime-spec versions 1.0.0 up to 1.3.x, with or without a
/// pre-release suffix (`1.0.2-dev`).
pub fn check_version(version: &str) -> std::result::Result<(), String> {
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    let nums: Option<Vec<u64>> = parts.iter().map(|p| p.parse().ok()).collect();
    match nums.as_deref() {
        Some([1, minor, _patch]) if *minor <= 3 => Ok(()),
        Some([_, _, _]) => Err(format!(
            "version {version:?} is not supported: this runtime implements runtime-spec 1.0.0 to 1.3.x"
        )),
        _ => Err(format!(
            "{version:?} is not a version: write the runtime-spec version, e.g. \"1.2.0\""
        )),
    }
}

/// Loads and validates `<bundle>/config.json`.
pub fn load(bundle: &Path) -> Result<BundleConfig> {
    let bundle = std::fs::canonicalize(bundle).map_err(|source| Error::ReadConfig {
        path: bundle.to_path_buf(),
        source,
    })?;
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|source| Error::ReadConfig {
        path: path.clone(),
        source,
    })?;
    parse(&path, &bundle, &text)
}

/// The error for a config that failed to parse (`first`): parsed again,
/// tracking the path, so that it names the field.
fn parse_error(path: &Path, text: &[u8], first: serde_json::Error) -> Error {
    let mut track = serde_path_to_error::Track::new();
    let mut de = serde_json::Deserializer::from_slice(text);
    let parsed: std::result::Result<Spec, serde_json::Error> = {
        let tracked = serde_path_to_error::Deserializer::new(&mut de, &mut track);
        serde::Deserialize::deserialize(tracked)
    };
    let e = parsed
        .and_then(|s| de.end().map(|()| s))
        .err()
        .unwrap_or(first);
    if e.is_syntax() || e.is_eof() {
        return invalid(
            path,
            format!("line {} column {}", e.line(), e.column()),
            format!("not valid JSON: {e}"),
        );
    }
    let field = track.path().to_string();
    let msg = e.to_string();
    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
    if field.contains("capabilities")
        && (msg.starts_with("unknown variant") || msg.starts_with("no variant"))
    {
        let name = msg
            .split('`')
            .nth(1)
            .or_else(|| {
                msg.strip_prefix("no variant for ")
                    .and_then(|r| r.split_whitespace().next())
            })
            .unwrap_or_default();
        return invalid(
            path,
            field,
            format!(
                "unknown capability {name:?} (names look like \"CAP_NET_ADMIN\"; see capabilities(7))"
            ),
        );
    }
    if msg.starts_with("unknown variant") {
        // serde lists every variant; the first few say enough.
        let short: String = msg.split(", expected").next().unwrap_or(&msg).to_string();
        let expected = msg.split("expected one of ").nth(1).map(|l| {
            let names: Vec<&str> = l.split(", ").take(6).collect();
            format!(
                ": use one of {}{}",
                names.join(", "),
                if l.split(", ").count() > 6 {
                    ", ..."
                } else {
                    ""
                }
            )
        });
        return invalid(
            path,
            field,
            format!("{short}{}", expected.unwrap_or_default()),
        );
    }
    invalid(
        path,
        if field == "." {
            "(top level)".into()
        } else {
            field
        },
        msg,
    )
}

/// A path as serde_ignored reports it, written as the spec's fields are
/// (`mounts[0].destination`).
fn ignored_path(p: &serde_ignored::Path) -> String {
    use serde_ignored::Path as P;
    match p {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        P::Map { parent, key } => {
            let base = ignored_path(parent);
            if base.is_empty() {
                key.clone()
            } else {
                format!("{base}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_path(parent)
        }
    }
}

/// Parses config text in one typed pass that also notes every field the
/// spec does not define; `path` only names the file in errors.
pub fn parse(path: &Path, bundle: &Path, text: &[u8]) -> Result<BundleConfig> {
    let mut unknown = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(text);
    let parsed: std::result::Result<Spec, serde_json::Error> =
        serde_ignored::deserialize(&mut de, |p| unknown.push(ignored_path(&p)))
            .and_then(|s| de.end().map(|()| s));
    let spec = match parsed {
        Ok(s) => s,
        // Tracking the path costs an allocation a field, so only a config
        // that failed is parsed again with it, to name the field.
        Err(e) => return Err(parse_error(path, text, e)),
    };
    check_version(spec.version()).map_err(|m| invalid(path, "ociVersion", m))?;
    if let Some(field) = unknown.into_iter().next() {
        return Err(invalid(
            path,
            field,
            "unknown field: check its spelling against the runtime-spec (it would otherwise be silently ignored)",
        ));
    }
    let mut warnings = Vec::new();
    capability_warnings(&spec, &mut warnings);
    let raw = RawValue::from_string(String::from_utf8_lossy(text).into_owned())
        .map_err(|e| invalid(path, "(top level)", format!("cannot keep the text: {e}")))?;

    let root = spec.root().as_ref().ok_or_else(|| {
        invalid(
            path,
            "root",
            "missing: add \"root\": {\"path\": \"rootfs\"}",
        )
    })?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    let rootfs = std::fs::canonicalize(&rootfs)
        .map_err(|e| invalid(path, "root.path", format!("{}: {e}", rootfs.display())))?;
    if !rootfs.is_dir() {
        return Err(invalid(
            path,
            "root.path",
            format!("{} is not a directory", rootfs.display()),
        ));
    }
    validate(path, &spec)?;
    Ok(BundleConfig {
        spec,
        raw,
        bundle: bundle.to_path_buf(),
        rootfs,
        warnings,
    })
}

/// Capabilities this kernel does not have are dropped with a warning, as
/// the runtime-spec asks (names that are no capability at all fail the
/// parse).
fn capability_warnings(spec: &Spec, warnings: &mut Vec<String>) {
    let Some(caps) = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
    else {
        return;
    };
    let last = crate::sys::last_cap();
    let sets = [
        ("bounding", caps.bounding()),
        ("effective", caps.effective()),
        ("permitted", caps.permitted()),
        ("inheritable", caps.inheritable()),
        ("ambient", caps.ambient()),
    ];
    for (set, names) in sets {
        for c in names.iter().flatten() {
            let name = serde_json::to_value(c)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            match caps::Capability::from_str(&name) {
                Ok(cap) if u32::from(cap.index()) <= last => {}
                _ => warnings.push(format!(
                    "process.capabilities.{set}: {name} is not supported by this kernel; ignored"
                )),
            }
        }
    }
}

fn validate(path: &Path, spec: &Spec) -> Result<()> {
    use oci_spec::runtime::LinuxNamespaceType as Ns;
    if let Some(process) = spec.process() {
        if process.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(invalid(
                path,
                "process.args",
                "must name the program to run, e.g. [\"sh\"]",
            ));
        }
        if !process.cwd().is_absolute() {
            return Err(invalid(
                path,
                "process.cwd",
                format!("{:?} must be an absolute path", process.cwd()),
            ));
        }
        for (i, e) in process.env().iter().flatten().enumerate() {
            if !e.contains('=') {
                return Err(invalid(
                    path,
                    format!("process.env[{i}]"),
                    format!("{e:?} must have the form NAME=value"),
                ));
            }
        }
    } else {
        return Err(invalid(
            path,
            "process",
            "missing: a container needs a process to run",
        ));
    }
    if let Some(hooks) = spec.hooks() {
        let kinds = [
            ("prestart", hooks.prestart()),
            ("createRuntime", hooks.create_runtime()),
            ("createContainer", hooks.create_container()),
            ("startContainer", hooks.start_container()),
            ("poststart", hooks.poststart()),
            ("poststop", hooks.poststop()),
        ];
        for (kind, list) in kinds {
            for (i, h) in list.iter().flatten().enumerate() {
                if let Some(t) = h.timeout()
                    && t <= 0
                {
                    return Err(invalid(
                        path,
                        format!("hooks.{kind}[{i}].timeout"),
                        format!(
                            "{t} is not a timeout: give seconds greater than zero, or leave it out for none"
                        ),
                    ));
                }
            }
        }
    }
    let Some(linux) = spec.linux() else {
        return Ok(());
    };
    if linux.intel_rdt().is_some() {
        let resctrl =
            std::fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("resctrl"));
        return Err(invalid(
            path,
            "linux.intelRdt",
            if resctrl {
                "Intel RDT (resctrl) is not supported by this runtime: remove the field"
            } else {
                "this kernel has no resctrl filesystem, so no Intel RDT: remove the field"
            },
        ));
    }
    let mut seen = Vec::new();
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    for (i, ns) in namespaces.iter().enumerate() {
        if seen.contains(&ns.typ()) {
            return Err(invalid(
                path,
                format!("linux.namespaces[{i}]"),
                format!("namespace {:?} is listed twice", ns.typ()),
            ));
        }
        seen.push(ns.typ());
        if let Some(p) = ns.path()
            && !p.is_absolute()
        {
            return Err(invalid(
                path,
                format!("linux.namespaces[{i}].path"),
                format!("{} must be an absolute path", p.display()),
            ));
        }
    }
    let has_userns = seen.contains(&Ns::User);
    let maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    let userns_new = namespaces
        .iter()
        .any(|n| n.typ() == Ns::User && n.path().is_none());
    if maps && !has_userns {
        return Err(invalid(
            path,
            "linux.uidMappings",
            "id mappings need a user namespace: add {\"type\": \"user\"} to linux.namespaces",
        ));
    }
    if userns_new && !maps {
        return Err(invalid(
            path,
            "linux.uidMappings",
            "a new user namespace needs uidMappings and gidMappings",
        ));
    }
    if linux.time_offsets().is_some()
        && !namespaces
            .iter()
            .any(|n| n.typ() == Ns::Time && n.path().is_none())
    {
        return Err(invalid(
            path,
            "linux.timeOffsets",
            "time offsets need a new time namespace: add {\"type\": \"time\"} to linux.namespaces",
        ));
    }
    if let Some(sysctl) = linux.sysctl() {
        let mut keys: Vec<&String> = sysctl.keys().collect();
        keys.sort();
        for key in keys {
            if key.contains("..") || key.contains('/') && key.contains('.') && key.starts_with('/')
            {
                return Err(invalid(
                    path,
                    format!("linux.sysctl.{key}"),
                    "not a sysctl name",
                ));
            }
            check_sysctl(key, &namespaces)
                .map_err(|m| invalid(path, format!("linux.sysctl.{key}"), m))?;
        }
    }
    if let Some(s) = linux.seccomp() {
        crate::seccomp::check(s).map_err(|(field, msg)| invalid(path, field, msg))?;
    }
    if let Some(res) = linux.resources() {
        if let Some(mem) = res.memory() {
            if let (Some(limit), Some(swap)) = (mem.limit(), mem.swap())
                && limit > 0
                && swap > 0
                && swap < limit
            {
                return Err(invalid(
                    path,
                    "linux.resources.memory.swap",
                    format!(
                        "{swap} is below memory.limit {limit}: swap is memory plus swap, so it must be at least the limit (or -1 for unlimited)"
                    ),
                ));
            }
            if let Some(limit) = mem.limit()
                && (limit == 0 || limit < -1)
            {
                return Err(invalid(
                    path,
                    "linux.resources.memory.limit",
                    format!(
                        "{limit} is not a usable limit: give bytes (at least a few MiB) or -1 for unlimited"
                    ),
                ));
            }
        }
        if let Some(cpu) = res.cpu()
            && cpu.period() == Some(0)
        {
            return Err(invalid(
                path,
                "linux.resources.cpu.period",
                "0 is not a period: use microseconds between 1000 and 1000000",
            ));
        }
    }
    Ok(())
}

/// The sysctls the kernel keeps per ipc namespace (besides `fs.mqueue.*`).
const IPC_SYSCTLS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Whether the container gets a namespace of type `t` of its own: a new
/// one, or one joined by a path that is not the runtime's (the host's)
/// own namespace of that type.
fn own_namespace(
    namespaces: &[oci_spec::runtime::LinuxNamespace],
    t: oci_spec::runtime::LinuxNamespaceType,
) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(ns) = namespaces.iter().find(|n| n.typ() == t) else {
        return false;
    };
    let Some(p) = ns.path() else {
        return true;
    };
    let mine = format!("/proc/self/ns/{}", crate::namespaces::name(t));
    match (std::fs::metadata(p), std::fs::metadata(mine)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) != (b.dev(), b.ino()),
        // A path that cannot be read fails when it is joined, with its
        // own message.
        _ => true,
    }
}

/// Refuses a sysctl that would not stay inside the container: only the
/// namespaced ones are allowed, each with its namespace (the same rules as
/// runc's validator).
fn check_sysctl(
    key: &str,
    namespaces: &[oci_spec::runtime::LinuxNamespace],
) -> std::result::Result<(), String> {
    use oci_spec::runtime::LinuxNamespaceType as Ns;
    // Both separators name the same file under /proc/sys.
    let name = key.replace('/', ".");
    let need = |t: Ns, what: &str, ns: &str| {
        if own_namespace(namespaces, t) {
            Ok(())
        } else {
            Err(format!(
                "{name} is {what}, and the container shares the host's {ns} namespace, so writing it would change the host: add {{\"type\": \"{ns}\"}} to linux.namespaces or remove the sysctl"
            ))
        }
    };
    if IPC_SYSCTLS.contains(&name.as_str()) || name.starts_with("fs.mqueue.") {
        return need(Ns::Ipc, "kept per ipc namespace", "ipc");
    }
    if name.starts_with("net.") {
        return need(Ns::Network, "kept per network namespace", "network");
    }
    if name == "kernel.hostname" || name == "kernel.domainname" {
        return need(Ns::Uts, "kept per uts namespace", "uts");
    }
    Err(format!(
        "{name} is not namespaced: it is one value for the whole host, so a container may not set it (only kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.* with an ipc namespace, net.* with a network namespace, kernel.hostname and kernel.domainname with a uts namespace)"
    ))
}

/// The default configuration `spec` writes: a busybox-friendly container
/// with the usual namespaces, mounts and masked paths.
pub fn default_spec(rootless: bool) -> Value {
    let caps = serde_json::json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let mut namespaces = vec![
        serde_json::json!({"type": "pid"}),
        serde_json::json!({"type": "network"}),
        serde_json::json!({"type": "ipc"}),
        serde_json::json!({"type": "uts"}),
        serde_json::json!({"type": "mount"}),
        serde_json::json!({"type": "cgroup"}),
    ];
    let mut mounts = vec![
        serde_json::json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        serde_json::json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        serde_json::json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        serde_json::json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        serde_json::json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        serde_json::json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        serde_json::json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    let mut linux = serde_json::json!({
        "resources": {"devices": [{"allow": false, "access": "rwm"}]},
        "namespaces": [],
        "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
    });
    if rootless {
        namespaces.retain(|n| n["type"] != "network" && n["type"] != "cgroup");
        namespaces.push(serde_json::json!({"type": "user"}));
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        linux["uidMappings"] = serde_json::json!([{"containerID": 0, "hostID": uid, "size": 1}]);
        linux["gidMappings"] = serde_json::json!([{"containerID": 0, "hostID": gid, "size": 1}]);
        if let Some(obj) = linux.as_object_mut() {
            obj.remove("resources");
        }
        mounts.retain(|m| m["destination"] != "/sys" && m["destination"] != "/sys/fs/cgroup");
        mounts.push(serde_json::json!({"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}));
        for m in &mut mounts {
            if m["destination"] == "/dev/pts" {
                m["options"] = serde_json::json!([
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620"
                ]);
            }
        }
    }
    linux["namespaces"] = Value::Array(namespaces);
    serde_json::json!({
        "ociVersion": "1.2.0",
        "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "hako",
        "mounts": mounts,
        "linux": linux
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse_str(text: &str) -> Result<BundleConfig> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        parse(Path::new("config.json"), dir.path(), text.as_bytes())
    }

    #[test]
    fn versions() {
        for ok in ["1.0.0", "1.0.2-dev", "1.1.0", "1.2.1", "1.3.0", "1.3.7+x"] {
            assert!(check_version(ok).is_ok(), "{ok}");
        }
        for bad in ["0.9.0", "1.4.0", "2.0.0", "one", "1.2"] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_spec_parses() {
        let text = serde_json::to_string(&default_spec(false)).unwrap();
        parse_str(&text).unwrap();
        let text = serde_json::to_string(&default_spec(true)).unwrap();
        parse_str(&text).unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        let mut spec = default_spec(false);
        spec["process"]["capabilities"]["bounding"][1] = "CAP_FLY".into();
        let err = parse_str(&spec.to_string()).unwrap_err().to_string();
        assert!(err.contains("process.capabilities.bounding[1]"), "{err}");
        assert!(err.contains("CAP_FLY"), "{err}");

        let mut spec = default_spec(false);
        spec["process"]["rlimits"][0]["type"] = "RLIMIT_BOGUS".into();
        let err = parse_str(&spec.to_string()).unwrap_err().to_string();
        assert!(err.contains("process.rlimits[0].type"), "{err}");

        let mut spec = default_spec(false);
        spec["root"]["readOnly"] = true.into();
        let err = parse_str(&spec.to_string()).unwrap_err().to_string();
        assert!(
            err.contains("root.readOnly") && err.contains("unknown field"),
            "{err}"
        );

        let err = parse_str("{\"ociVersion\": \"1.0.0\",")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid JSON"), "{err}");

        let mut spec = default_spec(false);
        spec["ociVersion"] = "1.9.0".into();
        let err = parse_str(&spec.to_string()).unwrap_err().to_string();
        assert!(err.contains("ociVersion"), "{err}");

        let mut spec = default_spec(false);
        spec["linux"]["resources"]["memory"] = serde_json::json!({"limit": 0});
        let err = parse_str(&spec.to_string()).unwrap_err().to_string();
        assert!(err.contains("linux.resources.memory.limit"), "{err}");
    }

    #[test]
    fn sysctls_need_their_namespace() {
        let err_of = |key: &str, drop_ns: Option<&str>| {
            let mut spec = default_spec(false);
            if let Some(t) = drop_ns {
                spec["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|n| n["type"] != t);
            }
            spec["linux"]["sysctl"] = serde_json::json!({key: "1"});
            parse_str(&spec.to_string()).err().map(|e| e.to_string())
        };
        for ok in [
            "kernel.shmmni",
            "fs.mqueue.msg_max",
            "net.ipv4.ip_forward",
            "kernel.hostname",
        ] {
            assert_eq!(err_of(ok, None), None, "{ok}");
        }
        assert!(err_of("net/ipv4/ip_forward", None).is_none());
        for (key, ns) in [
            ("kernel.sem", "ipc"),
            ("fs.mqueue.queues_max", "ipc"),
            ("net.core.somaxconn", "network"),
            ("net/ipv4/ip_forward", "network"),
            ("kernel.domainname", "uts"),
        ] {
            let err = err_of(key, Some(ns)).unwrap();
            assert!(err.contains(&format!("linux.sysctl.{key}")), "{err}");
        }
        let err = err_of("kernel.core_pattern", None).unwrap();
        assert!(err.contains("not namespaced"), "{err}");
        let err = err_of("vm.overcommit_memory", None).unwrap();
        assert!(err.contains("not namespaced"), "{err}");
    }

    #[test]
    fn annotations_and_free_maps_are_kept() {
        let mut spec = default_spec(false);
        spec["annotations"] = serde_json::json!({"org.example/a": "b"});
        spec["linux"]["sysctl"] = serde_json::json!({"net.ipv4.ip_forward": "1"});
        parse_str(&spec.to_string()).unwrap();
    }
}
