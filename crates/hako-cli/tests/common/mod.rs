//! The `hako` binary with a store of its own, and what the image tests
//! check after each run.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub use hako_testutil::images::*;
pub use hako_testutil::registry::Registry;

/// `hako` with its own `--root`, `--runroot`, configuration and
/// credential files, all in one temp dir.
pub struct Hako {
    pub dir: tempfile::TempDir,
}

impl Default for Hako {
    fn default() -> Self {
        Hako::new()
    }
}

/// A test that fails midway still leaves nothing: its containers are
/// removed and anything still mounted under its directory goes.
impl Drop for Hako {
    fn drop(&mut self) {
        // Containers, networks (bridges, the firewall table), volumes.
        if self.root().join("hako.db").exists() {
            let _ = self.cmd().args(["system", "reset", "-f"]).output();
        }
        let dir = self.dir.path().to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&dir))
            .collect();
        // Deepest first.
        points.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in points {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

impl Hako {
    pub fn new() -> Hako {
        let dir = tempfile::Builder::new()
            .prefix("hako-cli-test-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("docker")).unwrap();
        Hako { dir }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn auth_file(&self) -> PathBuf {
        self.dir.path().join("auth.json")
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("hako.toml")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hako"));
        c.arg("--root")
            .arg(self.root())
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .env("HAKO_AUTH_FILE", self.auth_file())
            .env("HAKO_CONFIG", self.config_file())
            .env("DOCKER_CONFIG", self.dir.path().join("docker"))
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        ok(&self.run(args), args)
    }

    /// Runs and asserts failure with any exit code; returns stderr.
    pub fn refuses(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "hako {args:?} should have failed\nstdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs and asserts failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "hako {args:?} should have failed\nstdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(out.status.code(), Some(1), "hako {args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Entries of a store directory (`layers`, `blobs/sha256`, `ingest`),
    /// sorted; none when it does not exist.
    pub fn entries(&self, sub: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.root().join(sub))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// No snapshot is left. A `--rm` container's snapshot is taken apart
    /// in the background after `run` returns: given a few seconds.
    pub fn assert_no_snapshots(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.entries("snapshots").is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(
            self.entries("snapshots").is_empty(),
            "snapshots left: {:?}",
            self.entries("snapshots")
        );
    }

    /// Runs `hako ARGS` with `input` on its stdin; its output.
    pub fn with_input(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Image ids, as `images -q --no-trunc` prints them.
    pub fn image_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .ok(&["images", "-q", "--no-trunc"])
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Nothing half-made in the store: no staging dirs, no trash, no
    /// mounts under the temp dir.
    pub fn assert_consistent(&self) {
        for sub in ["layers", "snapshots", "blobs/sha256"] {
            for e in self.entries(sub) {
                assert!(
                    !e.starts_with(".tmp") && !e.starts_with(".trash"),
                    "{sub}/{e} left in the store"
                );
            }
        }
        assert_no_mounts_under(self.dir.path());
    }
}

pub fn ok(out: &Output, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "hako {args:?} failed ({:?})\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn assert_no_mounts_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let d = dir.to_string_lossy();
    let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&*d)).collect();
    assert!(left.is_empty(), "mounts left under {d}: {left:#?}");
}

/// A layer tar of a directory tree on disk.
pub fn tar_of(dir: &Path) -> Vec<u8> {
    TarBuilder::new().tree(dir).build()
}

/// The monitor and resolver binaries beside `hako`, up to date.
pub fn ensure_monitor() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Built every time (a no-op when fresh): a binary left from an
        // older build would test old code.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "-p", "hako-monitor", "--bin", "hako-monitor"])
            .args(["-p", "hako-net", "--bin", "hako-dns"]);
        if Path::new(env!("CARGO_BIN_EXE_hako"))
            .parent()
            .is_some_and(|d| d.ends_with("release"))
        {
            build.arg("--release");
        }
        let st = build.status().unwrap();
        assert!(st.success(), "build hako-monitor and hako-dns");
    });
}

/// A `hako` store that pulled busybox from a registry of its own, which
/// lives as long as this.
pub struct Busybox {
    pub h: Hako,
    _reg: Registry,
    /// The image's reference in that registry.
    pub image: String,
}

impl Busybox {
    pub fn new() -> Busybox {
        let (h, reg, image) = busybox_store();
        Busybox {
            h,
            _reg: reg,
            image,
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.h.run(args)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        self.h.ok(args)
    }
}

/// A registry of its own holding busybox (`Cmd ["sh"]`, `FROM_IMAGE=1`)
/// as `tools/busybox:1`, and a `hako` store that pulled it.
pub fn busybox_store() -> (Hako, Registry, String) {
    ensure_monitor();
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(busybox_layer(), Compression::Gzip)
        .config("Cmd", serde_json::json!(["sh"]))
        .config("Env", serde_json::json!(["FROM_IMAGE=1", "PATH=/bin"]))
        .build();
    let dest = reg.image("tools/busybox:1");
    img.into_layout("1").push("1", &dest);
    let h = Hako::new();
    h.ok(&["pull", "-q", &dest]);
    (h, reg, dest)
}
