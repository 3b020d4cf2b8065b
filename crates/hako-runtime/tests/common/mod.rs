//! Shared helpers for the runtime's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Output;

pub use hako_testutil::{Bundle, LeakCheck, Runtime, unique_id};

/// The runtime under test: the one cargo built, or `HAKO_RUNTIME_BIN`
/// (the VM test run puts a copy elsewhere).
pub fn bin() -> PathBuf {
    std::env::var_os("HAKO_RUNTIME_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_hako-runtime")))
}

/// A runtime with its own state root and a busybox bundle.
pub struct Setup {
    pub rt: Runtime,
    pub bundle: Bundle,
    pub id: String,
    leaks: LeakCheck,
}

impl Setup {
    pub fn new(prefix: &str) -> Setup {
        let rt = Runtime::new(bin());
        let bundle = Bundle::busybox();
        let id = unique_id(prefix);
        let leaks = LeakCheck::new(&[bundle.dir(), rt.root()], &id).with_state_root(rt.root());
        Setup {
            rt,
            bundle,
            id,
            leaks,
        }
    }

    /// Runs the container with `args` and returns its output.
    pub fn run(&mut self, args: &[&str]) -> Output {
        self.bundle.set_args(args);
        self.bundle.save();
        self.rt.run(&self.bundle, &self.id)
    }

    /// Creates the container with `args` as its program (it waits for
    /// `start`).
    pub fn create(&mut self, args: &[&str]) {
        self.bundle.set_args(args);
        self.bundle.save();
        ok(&self.rt.create(&self.bundle, &self.id));
    }

    pub fn start(&self) {
        ok(&self.cmd().args(["start", &self.id]).output().unwrap());
    }

    /// `delete --force`, which must succeed.
    pub fn force_delete(&self) {
        ok(&self
            .cmd()
            .args(["delete", "--force", &self.id])
            .output()
            .unwrap());
    }

    /// `exec` of `args` in the container.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.cmd()
            .arg("exec")
            .arg(&self.id)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn cmd(&self) -> std::process::Command {
        self.rt.cmd()
    }

    /// Ends with the leak check: nothing of the container may remain. The
    /// container must be gone already (a test that keeps one deletes it
    /// itself): a `delete --force` first would hide what a failed create or
    /// an unclean `run` left behind. It still runs, so that a failed check
    /// cleans up.
    pub fn finish(self) {
        let left = self.leaks.state_left();
        self.rt.delete_force(&self.id);
        assert!(
            left.is_empty(),
            "container state was still there at the end of the test: {left:?}"
        );
        self.leaks.assert_clean();
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

pub fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Receives one descriptor sent with SCM_RIGHTS (a console socket's pty).
pub fn recv_fd(conn: &std::os::unix::net::UnixStream) -> std::os::fd::OwnedFd {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .unwrap();
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel installed this descriptor for us.
            return unsafe { std::os::fd::OwnedFd::from_raw_fd(fds[0]) };
        }
    }
    panic!("no descriptor received");
}
