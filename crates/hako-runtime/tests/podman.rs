//! Podman drives hako-runtime unchanged: output, exit codes, detached
//! containers, `podman exec` (with and without a terminal), stop and rm.
//! Podman keeps its state under a temporary root; the machine's own podman
//! state is not touched.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Podman {
    dir: tempfile::TempDir,
    rootfs: PathBuf,
    /// Cgroups podman keeps for itself (its parent and conmon's), removed
    /// afterwards if this test made them.
    cgroups_before: Vec<PathBuf>,
}

fn podman_cgroups() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let p = h.path().join("libpod_parent");
        if p.is_dir() {
            out.push(p);
        }
    }
    out
}

impl Podman {
    fn new() -> Podman {
        assert!(
            Command::new("podman")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "podman is not installed: apt-get install podman"
        );
        let dir = tempfile::Builder::new()
            .prefix("hako-podman-")
            .tempdir()
            .unwrap();
        let rootfs = dir.path().join("rootfs");
        hako_testutil::make_busybox_rootfs(&rootfs);
        Podman {
            dir,
            rootfs,
            cgroups_before: podman_cgroups(),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("runroot"))
            .arg("--runtime")
            .arg(bin())
            .args([
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
                "--storage-driver",
                "vfs",
            ]);
        c
    }

    /// `podman run` flags every test container takes: no network setup,
    /// and limits this machine can grant (it lacks CAP_SYS_RESOURCE, so
    /// podman's default nofile limit cannot be set).
    fn run_args(&self) -> Vec<String> {
        [
            "--network",
            "none",
            "--ulimit",
            "nofile=20000:20000",
            "--ulimit",
            "nproc=32768:32768",
            "--rootfs",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(std::iter::once(self.rootfs.display().to_string()))
        .collect()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self
            .cmd()
            .args(["rm", "--all", "--force", "--time", "0"])
            .output();
        let _ = self.cmd().args(["system", "reset", "--force"]).output();
        for p in podman_cgroups() {
            if !self.cgroups_before.contains(&p) {
                let _ = std::fs::remove_dir(p.join("conmon"));
                let _ = std::fs::remove_dir(&p);
            }
        }
    }
}

fn leaks(id: &str, dir: &Path) -> LeakCheck {
    LeakCheck::new(&[dir], id)
}

#[test]
fn podman_runs_containers_with_hako_runtime() {
    let p = Podman::new();
    let out = p
        .cmd()
        .arg("run")
        .arg("--rm")
        .args(p.run_args())
        .args(["/bin/sh", "-c", "echo hello from podman; exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "hello from podman");

    let out = p
        .cmd()
        .arg("run")
        .arg("-d")
        .args(p.run_args())
        .args(["/bin/sleep", "300"])
        .output()
        .unwrap();
    let id = ok(&out).trim().to_string();
    let check = leaks(&id, p.dir.path());
    let out = p
        .cmd()
        .args(["exec", &id, "sh", "-c", "echo exec-ok; cat /proc/1/cmdline"])
        .output()
        .unwrap();
    let text = ok(&out);
    assert!(text.starts_with("exec-ok\n/bin/sleep"), "{text}");
    let out = p
        .cmd()
        .args(["exec", &id, "sh", "-c", "exit 7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let out = p.cmd().args(["exec", "-t", &id, "tty"]).output().unwrap();
    assert!(ok(&out).trim().starts_with("/dev/pts/"), "{}", stdout(&out));
    let inspect = ok(&p
        .cmd()
        .args(["inspect", "--format", "{{.State.Status}}", &id])
        .output()
        .unwrap());
    assert_eq!(inspect.trim(), "running");
    ok(&p
        .cmd()
        .args(["rm", "--force", "--time", "0", &id])
        .output()
        .unwrap());
    check.assert_clean();
}
