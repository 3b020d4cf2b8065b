//! containerd drives hako-runtime through its runc shim unchanged
//! (`ctr run --runc-binary`): output, exit codes, `ctr task exec`, kill and
//! removal. The test starts a containerd of its own, with its root, state
//! and socket in a temporary directory, and stops it afterwards.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Containerd {
    dir: tempfile::TempDir,
    daemon: Child,
}

impl Containerd {
    fn start() -> Containerd {
        assert!(
            Command::new("containerd")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "containerd is not installed: apt-get install containerd"
        );
        let dir = tempfile::Builder::new()
            .prefix("hako-containerd-")
            .tempdir()
            .unwrap();
        let d = dir.path().display();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n[grpc]\n  address = \"{d}/containerd.sock\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\"]\n  disable = true\n"
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("containerd.log")).unwrap())
            .spawn()
            .unwrap();
        let c = Containerd { dir, daemon };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c
            .ctr()
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            assert!(
                Instant::now() < deadline,
                "containerd did not start: {}",
                read(&c.dir.path().join("containerd.log"))
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(self.dir.path().join("containerd.sock"));
        c
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // SAFETY: a signal to the daemon this test started, by its pid.
        unsafe { libc::kill(i32::try_from(self.daemon.id()).unwrap(), libc::SIGTERM) };
        let _ = self.daemon.wait();
    }
}

#[test]
fn containerd_runs_containers_with_hako_runtime() {
    let c = Containerd::start();
    let rootfs = c.dir.path().join("rootfs");
    hako_testutil::make_busybox_rootfs(&rootfs);
    let id = hako_testutil::unique_id("ctrd");
    let check = LeakCheck::new(&[c.dir.path()], &id);
    let run = |extra: &[&str], id: &str, args: &[&str]| {
        c.ctr()
            .arg("run")
            .args(extra)
            .arg("--runc-binary")
            .arg(bin())
            .arg("--rootfs")
            .arg(&rootfs)
            .arg(id)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(
        &["--rm"],
        &format!("{id}-fg"),
        &["sh", "-c", "echo hello from containerd; exit 4"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "hello from containerd");

    let out = run(
        &["-d"],
        &id,
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while true; do sleep 1; done",
        ],
    );
    ok(&out);
    let out = c
        .ctr()
        .args([
            "task",
            "exec",
            "--exec-id",
            "e1",
            &id,
            "sh",
            "-c",
            "echo exec-ok; exit 6",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "exec-ok");
    ok(&c.ctr().args(["task", "kill", &id]).output().unwrap());
    wait_for(
        || {
            c.ctr().args(["task", "ls"]).output().is_ok_and(|o| {
                stdout(&o)
                    .lines()
                    .any(|l| l.starts_with(&id) && l.contains("STOPPED"))
            })
        },
        "the task to stop on SIGTERM",
    );
    ok(&c.ctr().args(["task", "rm", &id]).output().unwrap());
    ok(&c.ctr().args(["container", "rm", &id]).output().unwrap());
    check.assert_clean();
}
