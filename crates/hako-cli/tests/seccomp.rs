//! The default seccomp profile on real containers from a busybox image:
//! an allowlist under which everyday programs run, syscalls outside it
//! fail with EPERM, `--cap-add` opens the syscalls of its capability, and
//! `seccomp=unconfined` and `--privileged` lift it. Each test has its own
//! `--root`/`--runroot` and ends with nothing left behind.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

const EPERM: &str = "Operation not permitted";

/// A store with `busybox` pulled from a registry of its own.
type Setup = Busybox;

/// What a foreground `hako run --rm` gave: exit code, stdout, stderr.
struct Ran {
    code: Option<i32>,
    out: String,
    err: String,
}

impl Busybox {
    /// `hako run --rm [flags] IMAGE cmd...`
    fn run_rm(&self, flags: &[&str], cmd: &[&str]) -> Ran {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.push(&self.image);
        args.extend_from_slice(cmd);
        let o = self.h.run(&args);
        Ran {
            code: o.status.code(),
            out: String::from_utf8_lossy(&o.stdout).into_owned(),
            err: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Runs and asserts success.
    fn ok_rm(&self, flags: &[&str], cmd: &[&str]) -> String {
        let r = self.run_rm(flags, cmd);
        assert_eq!(
            r.code,
            Some(0),
            "{flags:?} {cmd:?}\nstdout: {}\nstderr: {}",
            r.out,
            r.err
        );
        r.out
    }

    /// Runs and asserts failure with `error` in stderr.
    fn refused(&self, flags: &[&str], cmd: &[&str], error: &str) {
        let r = self.run_rm(flags, cmd);
        assert_ne!(r.code, Some(0), "{flags:?} {cmd:?} should have failed");
        assert!(
            r.err.contains(error),
            "{flags:?} {cmd:?}: wanted {error:?}\nstdout: {}\nstderr: {}",
            r.out,
            r.err
        );
    }

    /// Nothing left: no containers, no mounts.
    fn finish(self) {
        assert_eq!(self.h.ok(&["ps", "-a", "-q"]), "");
        assert_no_mounts_under(self.h.dir.path());
    }
}

#[test]
fn everyday_programs_run_under_the_allowlist() {
    let s = Setup::new();
    let mode = s.ok_rm(&[], &["grep", "^Seccomp:", "/proc/self/status"]);
    assert_eq!(mode.split_whitespace().last(), Some("2"), "{mode}");
    // A shell forking pipelines, files, clocks, sleeps, sockets, signals,
    // and the usage text of network tools (which exit 1 on -h).
    let script = "set -e; ls -la / >/dev/null; cat /etc/passwd >/dev/null; \
        date >/dev/null; sleep 0.1; echo a | tr a b | cat; \
        mkdir -p /tmp/d; touch /tmp/d/f; chmod 600 /tmp/d/f; ln -s f /tmp/d/l; \
        mv /tmp/d/f /tmp/d/g; rm -r /tmp/d; id -u; uname -s; \
        (sleep 5 & kill $!; wait $! || true); \
        wget -h 2>&1 | head -n 1 >/dev/null; nc -h 2>&1 | head -n 1 >/dev/null; \
        echo served > /tmp/f; httpd -f -p 8080 -h /tmp & \
        for i in $(seq 50); do wget -q -O - http://127.0.0.1:8080/f && break; sleep 0.1; done; \
        kill $!; echo done";
    let out = s.ok_rm(&[], &["sh", "-c", script]);
    assert_eq!(out, "b\n0\nLinux\nserved\ndone\n");
    // personality for the 32-bit domain is one of the values allowed.
    let arch = s.ok_rm(&[], &["linux32", "uname", "-m"]);
    if cfg!(target_arch = "x86_64") {
        assert_eq!(arch, "i686\n");
    }
    // chroot with the default CAP_SYS_CHROOT; without it, refused.
    s.ok_rm(&[], &["chroot", "/", "true"]);
    s.refused(
        &["--cap-drop", "SYS_CHROOT"],
        &["chroot", "/", "true"],
        EPERM,
    );
    s.finish();
}

#[test]
fn refused_syscalls_and_capabilities_that_open_them() {
    let s = Setup::new();
    // A user namespace needs no capability from the kernel: the refusal
    // is the filter's (unshare and setns are CAP_SYS_ADMIN's syscalls).
    s.refused(&[], &["unshare", "-U", "true"], EPERM);
    s.ok_rm(
        &["--security-opt", "seccomp=unconfined"],
        &["unshare", "-U", "true"],
    );
    s.ok_rm(&["--privileged"], &["unshare", "-U", "true"]);
    s.ok_rm(&["--cap-add", "SYS_ADMIN"], &["unshare", "-U", "true"]);
    // The other namespaces, which the kernel also wants CAP_SYS_ADMIN for.
    s.refused(&[], &["unshare", "-n", "true"], EPERM);
    s.ok_rm(&["--cap-add", "SYS_ADMIN"], &["unshare", "-n", "true"]);
    s.ok_rm(
        &["--cap-add", "CAP_SYS_ADMIN"],
        &["unshare", "-m", "-u", "-i", "true"],
    );
    // swapoff is in no group: refused even with CAP_SYS_ADMIN, which is
    // all the kernel asks for (it then looks for the file).
    s.refused(&["--cap-add", "SYS_ADMIN"], &["swapoff", "/nope"], EPERM);
    s.refused(
        &[
            "--cap-add",
            "SYS_ADMIN",
            "--security-opt",
            "seccomp=unconfined",
        ],
        &["swapoff", "/nope"],
        "No such file or directory",
    );
    // Setting the clock: with CAP_SYS_TIME the call reaches the kernel,
    // which refuses a time before 1970 (the host's clock never changes).
    // date reports the failure but exits 0.
    let set_date = |flags: &[&str]| s.run_rm(flags, &["date", "-s", "@-100000"]).err;
    let err = set_date(&[]);
    assert!(
        err.contains("can't set date") && err.contains(EPERM),
        "{err}"
    );
    let err = set_date(&["--cap-add", "SYS_TIME"]);
    assert!(err.contains("can't set date: Invalid argument"), "{err}");
    s.finish();
}

#[test]
fn exec_runs_under_the_container_profile() {
    let s = Setup::new();
    let id =
        s.h.ok(&["run", "-d", &s.image, "sleep", "60"])
            .trim()
            .to_string();
    let o = s.h.run(&["exec", &id, "unshare", "-U", "true"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains(EPERM));
    assert_eq!(s.h.ok(&["exec", &id, "echo", "in"]), "in\n");
    s.h.ok(&["rm", "-f", &id]);
    hako_testutil::LeakCheck::new(&[s.h.dir.path()], &id).assert_clean();
    s.finish();
}
