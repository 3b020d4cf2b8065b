//! Test fixtures for hako: busybox root filesystems and OCI bundles made
//! from Debian's `busybox-static`, runtimes with their own state roots, and
//! leak checks that every integration test ends with.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

pub mod registry;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub mod images;

/// The static busybox the fixtures copy into root filesystems.
pub const BUSYBOX: &str = "/bin/busybox";

/// An id no other test (in this or a parallel test process) uses; it
/// starts with `hako-` so that leftovers are easy to find.
pub fn unique_id(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "hako-{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Checks that `/bin/busybox` is the static one: a dynamic busybox would
/// not run inside a rootfs without its libraries.
fn busybox_checked() -> &'static Path {
    static CHECKED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    CHECKED.get_or_init(|| {
        let bytes = std::fs::read(BUSYBOX).unwrap_or_else(|e| {
            panic!(
                "{BUSYBOX}: {e}: install Debian's busybox-static (apt-get install busybox-static)"
            )
        });
        assert!(
            !has_interpreter(&bytes),
            "{BUSYBOX} is dynamically linked: install busybox-static instead of busybox"
        );
    });
    Path::new(BUSYBOX)
}

/// Whether a 64-bit ELF file names a program interpreter (PT_INTERP), that
/// is, needs the dynamic loader.
pub fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| usize::try_from(u64::from_le_bytes(b.try_into().unwrap())).ok())
    };
    let (Some(phoff), Some(entsize), Some(num)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..num).any(|i| {
        elf.get(phoff + i * entsize..phoff + i * entsize + 4) == Some(&3u32.to_le_bytes()[..])
    })
}

/// Builds a busybox root filesystem in `dir`: the binary, a link for each
/// applet, the usual directories, and /etc/passwd and /etc/group with
/// root and nobody.
pub fn make_busybox_rootfs(dir: &Path) {
    let busybox = busybox_checked();
    for d in [
        "bin", "dev", "etc", "proc", "sys", "tmp", "root", "var", "run",
    ] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    set_mode(&dir.join("tmp"), 0o1777);
    // A copy, never a hard link: a container writing to its /bin/busybox
    // must not change the host's.
    std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    for applet in applets() {
        let link = dir.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    std::fs::write(dir.join("etc/hostname"), "busybox\n").unwrap();
}

fn applets() -> &'static [String] {
    static LIST: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    LIST.get_or_init(|| {
        let out = Command::new(busybox_checked())
            .arg("--list")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .filter(|a| a != "busybox")
            .collect()
    })
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The default configuration of the fixtures: what `runc spec` writes,
/// without a terminal and with a writable root.
pub fn default_config() -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.2.0",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "hako",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// An OCI bundle in a temporary directory: `config.json` plus a busybox
/// rootfs. Removed when dropped.
pub struct Bundle {
    dir: tempfile::TempDir,
    config: Value,
}

impl Bundle {
    pub fn busybox() -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("hako-bundle-")
            .tempdir()
            .unwrap();
        // The bundle directory must be searchable by ids a user namespace
        // maps root to.
        set_mode(dir.path(), 0o755);
        make_busybox_rootfs(&dir.path().join("rootfs"));
        let b = Bundle {
            dir,
            config: default_config(),
        };
        b.save();
        b
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// The configuration, to change before `save`.
    pub fn config(&mut self) -> &mut Value {
        &mut self.config
    }

    pub fn set_args(&mut self, args: &[&str]) {
        self.config["process"]["args"] = json!(args);
    }

    pub fn save(&self) {
        std::fs::write(
            self.dir.path().join("config.json"),
            serde_json::to_vec_pretty(&self.config).unwrap(),
        )
        .unwrap();
    }
}

/// A runtime binary with a state root of its own.
pub struct Runtime {
    bin: PathBuf,
    root: tempfile::TempDir,
}

impl Runtime {
    pub fn new(bin: impl Into<PathBuf>) -> Runtime {
        let root = tempfile::Builder::new()
            .prefix("hako-state-")
            .tempdir()
            .unwrap();
        Runtime {
            bin: bin.into(),
            root,
        }
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The runtime command with `--root` set.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(self.root.path());
        c
    }

    /// `run` in the foreground: the container's stdio are the pipes this
    /// returns.
    pub fn run(&self, bundle: &Bundle, id: &str) -> Output {
        self.cmd()
            .args(["run", "--bundle"])
            .arg(bundle.dir())
            .arg(id)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `create`: the container keeps its stdio after the runtime returns,
    /// so they go to files (`<bundle>/<id>.out` and `.err`) rather than
    /// pipes a caller would wait on. The runtime's own messages land in
    /// the same files; the returned output holds what was there when it
    /// exited.
    pub fn create(&self, bundle: &Bundle, id: &str) -> Output {
        let (out, err) = Self::output_files(bundle, id);
        let status = self
            .cmd()
            .args(["create", "--bundle"])
            .arg(bundle.dir())
            .arg(id)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .status()
            .unwrap();
        Output {
            status,
            stdout: std::fs::read(&out).unwrap(),
            stderr: std::fs::read(&err).unwrap(),
        }
    }

    /// Where `create` sends a container's stdout and stderr.
    pub fn output_files(bundle: &Bundle, id: &str) -> (PathBuf, PathBuf) {
        (
            bundle.dir().join(format!("{id}.out")),
            bundle.dir().join(format!("{id}.err")),
        )
    }

    /// The `state` JSON; panics with the runtime's message when it fails.
    pub fn state(&self, id: &str) -> Value {
        let out = self.cmd().args(["state", id]).output().unwrap();
        assert!(
            out.status.success(),
            "state {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn delete_force(&self, id: &str) {
        let _ = self.cmd().args(["delete", "--force", id]).output();
    }
}

impl Drop for Runtime {
    /// A test that failed half-way still removes its containers.
    fn drop(&mut self) {
        let Ok(out) = self.cmd().args(["list", "-q"]).output() else {
            return;
        };
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            self.delete_force(id.trim());
        }
    }
}

/// What a test must not leave behind: mounts under its directories,
/// cgroups or processes of its container, state in its runtime root.
pub struct LeakCheck {
    paths: Vec<PathBuf>,
    id: String,
    state_root: Option<PathBuf>,
}

impl LeakCheck {
    pub fn new(paths: &[&Path], id: &str) -> LeakCheck {
        LeakCheck {
            paths: paths.iter().map(|p| p.to_path_buf()).collect(),
            id: id.to_string(),
            state_root: None,
        }
    }

    /// Also checks that `root`, the test's own runtime state root, holds no
    /// container state: every container directory in it counts (names
    /// starting with a dot are the runtime's caches, not containers).
    pub fn with_state_root(mut self, root: &Path) -> LeakCheck {
        self.state_root = Some(root.to_path_buf());
        self
    }

    /// The container state directories left in the state root.
    pub fn state_left(&self) -> Vec<PathBuf> {
        let Some(root) = &self.state_root else {
            return Vec::new();
        };
        let Ok(rd) = std::fs::read_dir(root) else {
            return Vec::new();
        };
        let mut left: Vec<PathBuf> = rd
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect();
        left.sort();
        left
    }

    /// What is left, as readable lines; empty when clean.
    pub fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mountinfo.lines() {
            let mountpoint = line.split(' ').nth(4).unwrap_or_default();
            if self
                .paths
                .iter()
                .any(|p| Path::new(mountpoint).starts_with(p))
            {
                out.push(format!("mount {mountpoint}"));
            }
        }
        out.extend(
            self.state_left()
                .iter()
                .map(|p| format!("state directory {}", p.display())),
        );
        let mut cgroups = Vec::new();
        find_dirs_named(Path::new("/sys/fs/cgroup"), &self.id, 8, &mut cgroups);
        out.extend(cgroups.iter().map(|c| format!("cgroup {}", c.display())));
        for pid in processes_in_cgroups_named(&self.id) {
            out.push(format!(
                "process {pid} ({})",
                std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .unwrap_or_default()
                    .replace('\0', " ")
            ));
        }
        out
    }

    /// Waits briefly for killed processes and removed cgroups to go, then
    /// panics with what remains.
    pub fn assert_clean(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = self.leftovers();
            if left.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "container {} left these behind:\n{}",
                    self.id,
                    left.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn find_dirs_named(dir: &Path, needle: &str, depth: u32, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let p = e.path();
        if e.file_name().to_string_lossy().contains(needle) {
            out.push(p.clone());
        }
        if depth > 0 {
            find_dirs_named(&p, needle, depth - 1, out);
        }
    }
}

/// Processes whose cgroup path (in any hierarchy) names the container.
fn processes_in_cgroups_named(needle: &str) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(needle))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_state_directory_is_a_leak() {
        let root = tempfile::tempdir().unwrap();
        let check =
            LeakCheck::new(&[root.path()], "hako-leaktest-none").with_state_root(root.path());
        std::fs::create_dir(root.path().join(".seccomp")).unwrap();
        assert!(check.leftovers().is_empty(), "{:?}", check.leftovers());
        std::fs::create_dir(root.path().join("hako-x-1")).unwrap();
        let left = check.leftovers();
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0].starts_with("state directory ") && left[0].ends_with("hako-x-1"));
    }
}
