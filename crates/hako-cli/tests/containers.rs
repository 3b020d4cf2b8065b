//! `hako` container verbs on real containers, from a busybox image pulled
//! from a local registry: foreground and detached runs, exit codes, logs,
//! exec, stop/kill/wait, restart policies, external runtimes, crashes of
//! `hako` and of the monitor, and forty parallel `run -d`. Each test has
//! its own `--root`/`--runroot` and ends with nothing left behind.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A store with `busybox` pulled from a registry of its own.
type Setup = Busybox;

impl Busybox {
    fn inspect(&self, name: &str) -> Value {
        let out = self.ok(&["container", "inspect", name]);
        serde_json::from_str::<Value>(&out).unwrap()[0].clone()
    }

    /// Removes every container, then checks nothing is left: no records,
    /// mounts, run directories, cgroups or processes of its containers.
    fn finish(self) {
        let ids: Vec<String> = self
            .ok(&["ps", "-a", "-q", "--no-trunc"])
            .lines()
            .map(String::from)
            .collect();
        for id in &ids {
            self.ok(&["rm", "-f", id]);
        }
        assert_eq!(self.ok(&["ps", "-a", "-q"]), "");
        // A `--rm` container's directories are taken apart in the
        // background after `run` returns: given a few seconds.
        let run = self.h.dir.path().join("run");
        let left = || -> Vec<std::path::PathBuf> {
            [run.join("containers"), self.h.root().join("containers")]
                .iter()
                .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
                .map(|e| e.path())
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !left().is_empty() {
            assert!(
                Instant::now() < deadline,
                "container directories left: {:?}",
                left()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.h.assert_no_snapshots();
        for id in &ids {
            hako_testutil::LeakCheck::new(&[self.h.dir.path()], id).assert_clean();
        }
        assert_no_mounts_under(self.h.dir.path());
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn foreground_run_output_and_exit_codes() {
    let s = Setup::new();
    let out = s.run(&[
        "run",
        "--rm",
        &s.image,
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err\n"));
    // The image's Cmd and Env.
    let out = s.run(&["run", "--rm", "-i", &s.image]);
    assert_eq!(out.status.code(), Some(0));
    let mut child =
        s.h.cmd()
            .args([
                "run",
                "--rm",
                "-i",
                &s.image,
                "sh",
                "-c",
                "cat; echo $FROM_IMAGE",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "from stdin\n1\n");
    // Docker's codes: 127 not found, 126 not executable, 125 hako's own
    // failure (128+N for a signal: see the detached test's kill).
    let out = s.run(&["run", "--rm", &s.image, "no-such-program"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    // A container that never started is gone too (--rm), mount and all.
    assert_eq!(s.ok(&["ps", "-a", "-q"]), "");
    assert_no_mounts_under(s.h.dir.path());
    let out = s.run(&["run", "--rm", &s.image, "/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    let out = s.run(&["run", "--rm", "--pull", "never", "no-such-image:1", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("no-such-image"),
        "{}",
        text(&out.stderr)
    );
    // The spec from flags: user, env, workdir (made), hostname, read-only
    // root, capabilities, /dev/shm, /etc files.
    let out = s.ok(&[
        "run", "--rm", "-u", "1000:1000", "-e", "FOO=bar", "-w", "/made/here", "--hostname",
        "box", "--read-only", "--cap-drop", "ALL", "--add-host", "db:10.1.2.3", &s.image, "sh",
        "-c",
        "id -u; id -g; echo $FOO; pwd; hostname; touch /x 2>/dev/null || echo ro; grep CapEff /proc/self/status; grep db /etc/hosts; df /dev/shm | tail -1",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        &lines[..6],
        ["1000", "1000", "bar", "/made/here", "box", "ro"],
        "{out}"
    );
    assert!(lines[6].ends_with("0000000000000000"), "{out}");
    assert!(lines[7].starts_with("10.1.2.3"), "{out}");
    assert!(lines[8].contains("65536"), "{out}");
    // The default capabilities are Docker's.
    let out = s.ok(&[
        "run",
        "--rm",
        &s.image,
        "grep",
        "CapEff",
        "/proc/self/status",
    ]);
    assert!(out.trim().ends_with("00000000a80425fb"), "{out}");
    // The default seccomp profile is on (off with unconfined and for
    // --privileged); its namespace rules give way to CAP_SYS_ADMIN.
    let st = |args: &[&str]| {
        let mut v = vec!["run", "--rm"];
        v.extend_from_slice(args);
        v.extend_from_slice(&[s.image.as_str(), "grep", "^Seccomp:", "/proc/self/status"]);
        s.ok(&v).split_whitespace().last().unwrap().to_string()
    };
    assert_eq!(st(&[]), "2");
    assert_eq!(st(&["--security-opt", "seccomp=unconfined"]), "0");
    assert_eq!(st(&["--privileged"]), "0");
    let out = s.run(&["run", "--rm", &s.image, "unshare", "-n", "true"]);
    assert!(!out.status.success());
    s.ok(&[
        "run",
        "--rm",
        "--cap-add",
        "SYS_ADMIN",
        &s.image,
        "unshare",
        "-n",
        "true",
    ]);
    // With --network none: no network but loopback, and it is up.
    let out = s.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        &s.image,
        "sh",
        "-c",
        "ls /sys/class/net; cat /sys/class/net/lo/operstate",
    ]);
    assert_eq!(out, "lo\nunknown\n");
    s.finish();
}

#[test]
fn detached_lifecycle_logs_exec_stop_wait() {
    let s = Setup::new();
    let script = "echo started; trap 'echo got TERM; exit 7' TERM; while true; do sleep 0.1; done";
    let id = s.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--label",
        "tier=front",
        &s.image,
        "sh",
        "-c",
        script,
    ]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64);
    assert_eq!(s.ok(&["ps", "-q"]).trim(), &id[..12]);
    assert_eq!(
        s.ok(&[
            "ps",
            "--filter",
            "label=tier=front",
            "--format",
            "{{.Names}}"
        ]),
        "web\n"
    );
    assert!(s.ok(&["ps"]).contains("Up "));
    // The same name again is refused.
    let out = s.run(&["run", "-d", "--name", "web", &s.image, "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("already in use"),
        "{}",
        text(&out.stderr)
    );
    wait_for("the first log line", || {
        s.ok(&["logs", "web"]) == "started\n"
    });
    // exec: output, exit code, env of the container, a missing program.
    assert_eq!(
        s.ok(&["exec", "web", "sh", "-c", "echo in; echo $FROM_IMAGE"]),
        "in\n1\n"
    );
    assert_eq!(
        s.run(&["exec", &id[..6], "sh", "-c", "exit 4"])
            .status
            .code(),
        Some(4)
    );
    assert_eq!(s.run(&["exec", "web", "nope"]).status.code(), Some(127));
    // Input only with -i, as Docker.
    let out = s.h.with_input(&["exec", "-i", "web", "cat"], b"typed\n");
    assert_eq!(text(&out.stdout), "typed\n", "{}", text(&out.stderr));
    let out = s.h.with_input(&["exec", "web", "cat"], b"typed\n");
    assert_eq!(text(&out.stdout), "", "{}", text(&out.stderr));
    let st = s.inspect("web");
    assert_eq!(st["State"]["Status"], "running");
    assert!(st["State"]["Pid"].as_i64().unwrap() > 0);
    // A monitor process per container, which is the init's parent.
    let pid = st["State"]["Pid"].as_i64().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: i64 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{ppid}/comm")).unwrap(),
        "hako-monitor\n"
    );
    // rm of a running container is refused; stop sends TERM.
    assert!(!s.run(&["rm", "web"]).status.success());
    s.ok(&["stop", "web"]);
    let st = s.inspect("web");
    assert_eq!(st["State"]["Status"], "exited");
    assert_eq!(st["State"]["ExitCode"], 7);
    assert_eq!(s.ok(&["logs", "--tail", "1", "web"]), "got TERM\n");
    assert!(s.ok(&["ps", "-a"]).contains("Exited (7)"));
    assert_eq!(s.ok(&["ps", "-q"]), "");
    // Start again; kill; wait reports 137.
    s.ok(&["start", "web"]);
    assert_eq!(s.inspect("web")["State"]["Status"], "running");
    let waiter =
        s.h.cmd()
            .args(["wait", "web"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    s.ok(&["kill", "web"]);
    assert_eq!(text(&waiter.wait_with_output().unwrap().stdout), "137\n");
    assert_eq!(s.ok(&["logs", "web"]), "started\ngot TERM\nstarted\n");
    let ts = s.ok(&["logs", "-t", "web"]);
    assert!(ts.starts_with("20") && ts.contains("Z started"), "{ts}");
    s.ok(&["rename", "web", "web2"]);
    s.ok(&["rm", "web2"]);
    assert!(!s.run(&["inspect", "web2"]).status.success());
    s.finish();
}

#[test]
fn restart_policy_without_a_daemon() {
    let s = Setup::new();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        &s.image,
        "sh",
        "-c",
        "echo try; exit 1",
    ]);
    wait_for("two restarts and the end", || {
        let st = s.inspect("flaky");
        st["State"]["Status"] == "exited" && st["RestartCount"] == 2
    });
    assert_eq!(s.ok(&["logs", "flaky"]), "try\ntry\ntry\n");
    // In the foreground, `run` returns with the first exit; the policy
    // goes on without it.
    let out = s.run(&[
        "run",
        "--name",
        "fg",
        "--restart",
        "on-failure:1",
        &s.image,
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    wait_for("the restart and the end", || {
        let st = s.inspect("fg");
        st["State"]["Status"] == "exited" && st["RestartCount"] == 1
    });
    assert_eq!(s.inspect("flaky")["State"]["ExitCode"], 1);
    // always: restarts after a clean exit too, and stop ends it for good.
    s.ok(&[
        "run",
        "-d",
        "--name",
        "again",
        "--restart",
        "always",
        &s.image,
        "sh",
        "-c",
        "echo a; sleep 0.2",
    ]);
    wait_for("a restart", || {
        s.ok(&["logs", "again"]).lines().count() >= 2
    });
    s.ok(&["stop", "-t", "1", "again"]);
    assert_eq!(s.inspect("again")["State"]["Status"], "exited");
    s.finish();
}

#[test]
fn external_runtimes_runc_and_crun() {
    let s = Setup::new();
    for rt in ["runc", "crun"] {
        let out = s.run(&[
            "run",
            "--rm",
            "--runtime",
            rt,
            &s.image,
            "sh",
            "-c",
            "echo via; exit 5",
        ]);
        assert_eq!(out.status.code(), Some(5), "{rt}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "via\n", "{rt}");
        // Docker's codes when the program cannot run, with the runtime's
        // own words (from its log) and its name.
        let out = s.run(&["run", "--rm", "--runtime", rt, &s.image, "no-such-program"]);
        assert_eq!(out.status.code(), Some(127), "{rt}: {}", text(&out.stderr));
        let said = text(&out.stderr);
        assert!(said.contains(&format!("{rt} create")), "{rt}: {said}");
        assert!(said.contains("no-such-program"), "{rt}: {said}");
        let out = s.run(&["run", "--rm", "--runtime", rt, &s.image, "/etc/passwd"]);
        assert_eq!(out.status.code(), Some(126), "{rt}: {}", text(&out.stderr));
        s.ok(&[
            "run",
            "-d",
            "--name",
            rt,
            "--runtime",
            rt,
            &s.image,
            "sleep",
            "60",
        ]);
        assert_eq!(s.inspect(rt)["State"]["Status"], "running");
        s.ok(&["rm", "-f", rt]);
    }
    s.finish();
}

/// `-t`, `exec`, `pause`, `stats`, `update` and `top` through runc, on
/// real containers, as the built-in runtime does them.
#[test]
fn external_runtime_runc_does_what_the_builtin_does() {
    external_runtime_does_what_the_builtin_does("runc");
}

/// The same through crun.
#[test]
fn external_runtime_crun_does_what_the_builtin_does() {
    external_runtime_does_what_the_builtin_does("crun");
}

fn external_runtime_does_what_the_builtin_does(rt: &str) {
    let s = Setup::new();
    through_a_terminal(&s, rt);
    exec_with_its_flags(&s, rt);
    pause_stops_the_processes(&s, rt);
    stats_top_and_update(&s, rt);
    s.finish();
}

/// `hako ARGS` on a pty (script(1)) that `setup` prepares first (stty);
/// its output and exit code.
fn on_a_pty(s: &Setup, setup: &str, args: &[&str]) -> Output {
    let mut line = format!(
        "{setup}; {} --root {} --runroot {}",
        env!("CARGO_BIN_EXE_hako"),
        s.h.root().display(),
        s.h.dir.path().join("run").display()
    );
    for a in args {
        line.push_str(" '");
        line.push_str(a);
        line.push('\'');
    }
    Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("HAKO_AUTH_FILE", s.h.auth_file())
        .env("HAKO_CONFIG", s.h.config_file())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `run -t`: the program's stdio is the pty the runtime sent to the
/// monitor's console socket, sized as the caller's terminal; a detached
/// one's output is logged from it.
fn through_a_terminal(s: &Setup, rt: &str) {
    let out = s.run(&[
        "run",
        "--rm",
        "-t",
        "--runtime",
        rt,
        &s.image,
        "sh",
        "-c",
        "tty; exit 2",
    ]);
    assert_eq!(out.status.code(), Some(2), "{rt}: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "/dev/pts/0\r\n", "{rt}");
    let out = on_a_pty(
        s,
        "stty rows 22 cols 77",
        &[
            "run",
            "--rm",
            "-t",
            "--runtime",
            rt,
            &s.image,
            "stty",
            "size",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{rt}: {}", text(&out.stdout));
    assert!(
        text(&out.stdout).ends_with("22 77\r\n"),
        "{rt}: {:?}",
        text(&out.stdout)
    );
    s.ok(&[
        "run",
        "-d",
        "-t",
        "--name",
        "term",
        "--runtime",
        rt,
        &s.image,
        "sh",
        "-c",
        "tty; exec sleep 60",
    ]);
    wait_for("the terminal's output in the log", || {
        s.ok(&["logs", "term"]) == "/dev/pts/0\r\n"
    });
    assert_eq!(s.inspect("term")["Config"]["Tty"], true, "{rt}");
    s.ok(&["rm", "-f", "term"]);
}

/// `exec`: output, exit codes (the program's; 127, 126 and the runtime's
/// words when it cannot run), `-e`, `-u`, `-w`, `-i`, `-t`, `-d`,
/// `--privileged`, and signals passed on.
fn exec_with_its_flags(s: &Setup, rt: &str) {
    s.ok(&[
        "run",
        "-d",
        "--name",
        "box",
        "--runtime",
        rt,
        &s.image,
        "sleep",
        "600",
    ]);
    let out = s.run(&[
        "exec",
        "box",
        "sh",
        "-c",
        "echo in; echo $FROM_IMAGE; echo err >&2; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{rt}: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "in\n1\n", "{rt}");
    assert_eq!(text(&out.stderr), "err\n", "{rt}");
    assert_eq!(
        s.ok(&[
            "exec",
            "-e",
            "FOO=bar",
            "-e",
            "FROM_IMAGE=2",
            "-u",
            "nobody",
            "-w",
            "/tmp",
            "box",
            "sh",
            "-c",
            "echo $FOO $FROM_IMAGE; id -u; id -g; pwd",
        ]),
        "bar 2\n65534\n65534\n/tmp\n",
        "{rt}"
    );
    let out = s.run(&["exec", "box", "no-such-program"]);
    assert_eq!(out.status.code(), Some(127), "{rt}: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("{rt} exec")),
        "{rt}: {}",
        text(&out.stderr)
    );
    let out = s.run(&["exec", "box", "/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126), "{rt}: {}", text(&out.stderr));
    // Input only with -i, as Docker.
    let out = s.h.with_input(&["exec", "-i", "box", "cat"], b"typed\n");
    assert_eq!(text(&out.stdout), "typed\n", "{rt}: {}", text(&out.stderr));
    let out = s.h.with_input(&["exec", "box", "cat"], b"typed\n");
    assert_eq!(text(&out.stdout), "", "{rt}: {}", text(&out.stderr));
    // A terminal of its own, of the caller's size (crun may start the
    // program before it sizes the terminal as process.consoleSize asks;
    // hako sizes it as soon as it gets it).
    let out = on_a_pty(
        s,
        "stty rows 23 cols 71",
        &["exec", "-t", "box", "sh", "-c", "sleep 0.5; stty size"],
    );
    assert!(
        text(&out.stdout).contains("23 71"),
        "{rt}: {:?}",
        text(&out.stdout)
    );
    let out = s.run(&["exec", "-t", "box", "sh", "-c", "tty; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{rt}: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("/dev/pts/"),
        "{rt}: {:?}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stdout).ends_with("\r\n"),
        "{rt}: {:?}",
        text(&out.stdout)
    );
    // Detached: back at once, the program goes on.
    let started = Instant::now();
    s.ok(&["exec", "-d", "box", "sh", "-c", "sleep 3; touch /detached"]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{rt}: -d waited"
    );
    wait_for("the detached exec's file", || {
        s.run(&["exec", "box", "test", "-e", "/detached"])
            .status
            .success()
    });
    // --privileged: every capability (CAP_SYS_ADMIN, bit 21, among them).
    let caps = |args: &[&str]| {
        let mut v = vec!["exec"];
        v.extend_from_slice(args);
        v.extend_from_slice(&["box", "grep", "CapEff", "/proc/self/status"]);
        let out = s.ok(&v);
        u64::from_str_radix(out.split_whitespace().last().unwrap(), 16).unwrap()
    };
    assert_eq!(caps(&[]), 0xa804_25fb, "{rt}");
    assert_ne!(caps(&["--privileged"]) & (1 << 21), 0, "{rt}");
    // A signal to `hako exec` reaches the program.
    let child =
        s.h.cmd()
            .args([
                "exec",
                "box",
                "sh",
                "-c",
                "trap 'echo got-term; exit 9' TERM; echo ready; while true; do sleep 0.1; done",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
    let pid = child.id();
    wait_for("the exec to be ready", || {
        s.ok(&["top", "box"]).contains("while true")
    });
    let st = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(9), "{rt}");
    assert_eq!(text(&out.stdout), "ready\ngot-term\n", "{rt}");
    s.ok(&["rm", "-f", "box"]);
}

/// `pause` freezes the processes (a counter stops), `unpause` lets them
/// go on, and `inspect`/`ps` tell which.
fn pause_stops_the_processes(s: &Setup, rt: &str) {
    let data = s.h.dir.path().join("counter");
    std::fs::create_dir(&data).unwrap();
    let volume = format!("{}:/data", data.display());
    s.ok(&[
        "run",
        "-d",
        "--name",
        "counter",
        "--runtime",
        rt,
        "-v",
        &volume,
        &s.image,
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i > /data/n; sleep 0.02; done",
    ]);
    let count = || std::fs::read_to_string(data.join("n")).unwrap_or_default();
    wait_for("the counter to count", || !count().is_empty());
    s.ok(&["pause", "counter"]);
    assert_eq!(s.inspect("counter")["State"]["Status"], "paused", "{rt}");
    assert_eq!(s.inspect("counter")["State"]["Paused"], true, "{rt}");
    assert!(s.ok(&["ps"]).contains("(Paused)"), "{rt}");
    let frozen = count();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(), frozen, "{rt}: the counter went on while paused");
    // Paused twice, or unpaused while running: refused.
    assert!(
        s.h.refuses(&["pause", "counter"]).contains("not running"),
        "{rt}"
    );
    assert_eq!(s.run(&["exec", "counter", "true"]).status.code(), Some(126));
    s.ok(&["unpause", "counter"]);
    assert_eq!(s.inspect("counter")["State"]["Status"], "running", "{rt}");
    wait_for("the counter to go on", || count() != frozen);
    assert!(
        s.h.refuses(&["unpause", "counter"]).contains("not paused"),
        "{rt}"
    );
    // A paused container still stops (killed and thawed).
    s.ok(&["pause", "counter"]);
    let started = Instant::now();
    s.ok(&["stop", "-t", "1", "counter"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{rt}: stop of a paused container hung"
    );
    let st = s.inspect("counter");
    assert_eq!(st["State"]["Status"], "exited", "{rt}");
    assert_eq!(st["State"]["ExitCode"], 137, "{rt}");
    s.ok(&["rm", "counter"]);
}

/// `stats` and `top` read the cgroup the runtime made; `update` changes
/// its limits live.
fn stats_top_and_update(s: &Setup, rt: &str) {
    s.ok(&[
        "run",
        "-d",
        "--name",
        "two",
        "--runtime",
        rt,
        "-m",
        "64m",
        "--pids-limit",
        "20",
        &s.image,
        "sh",
        "-c",
        "sleep 1000 & exec sleep 1001",
    ]);
    wait_for("both processes", || {
        let top = s.ok(&["top", "two"]);
        top.contains("sleep 1000") && top.contains("sleep 1001")
    });
    let init = s.inspect("two")["State"]["Pid"].as_i64().unwrap();
    let top = s.ok(&["top", "two"]);
    assert_eq!(top.lines().count(), 3, "{rt}: {top}");
    assert!(
        top.lines().any(|l| l.starts_with(&format!("{init} "))),
        "{rt}: the init {init} is not listed: {top}"
    );
    let row = s.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.CPUPerc}} {{.MemUsage}} {{.PIDs}}",
        "two",
    ]);
    let f: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(f[0], "two", "{rt}: {row}");
    assert!(f[1].ends_with('%'), "{rt}: {row}");
    let used = f[2];
    assert!(
        used.ends_with("KiB") || used.ends_with("MiB"),
        "{rt}: no memory in use: {row}"
    );
    assert!(
        used.trim_end_matches(char::is_alphabetic)
            .parse::<f64>()
            .unwrap()
            > 0.0,
        "{rt}: {row}"
    );
    assert_eq!(f[4], "64.00MiB", "{rt}: {row}");
    assert_eq!(f[5], "2", "{rt}: {row}");
    s.ok(&["update", "--memory", "128m", "--pids-limit", "50", "two"]);
    let row = s.ok(&["stats", "--no-stream", "--format", "{{.MemUsage}}", "two"]);
    assert!(row.trim().ends_with("/ 128.00MiB"), "{rt}: {row}");
    // In the cgroup itself, as the container sees it (v1 or v2).
    let limits = s.ok(&[
        "exec", "two", "sh", "-c",
        "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max; \
         cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
    ]);
    assert_eq!(limits, "50\n134217728\n", "{rt}");
    assert_eq!(
        s.inspect("two")["HostConfig"]["Memory"],
        134_217_728,
        "{rt}"
    );
    s.ok(&["rm", "-f", "two"]);
}

#[test]
fn log_rotation_by_size() {
    let s = Setup::new();
    s.ok(&[
        "run",
        "--name",
        "chatty",
        "--log-opt",
        "max-size=2k",
        "--log-opt",
        "max-file=2",
        &s.image,
        "sh",
        "-c",
        "i=0; while [ $i -lt 200 ]; do echo line-$i; i=$((i+1)); done",
    ]);
    let st = s.inspect("chatty");
    let log = st["LogPath"].as_str().unwrap().to_string();
    let size = |p: &str| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    assert!(size(&log) <= 2048, "{}", size(&log));
    assert!(size(&format!("{log}.1")) > 0);
    assert!(!Path::new(&format!("{log}.2")).exists());
    let last = s.ok(&["logs", "--tail", "1", "chatty"]);
    assert_eq!(last, "line-199\n");
    s.finish();
}

/// SIGKILL of the `hako` client, of the monitor, and of the container's
/// init with its monitor gone: the next commands tell the truth and
/// `rm -f` releases everything.
#[test]
fn crashes_of_hako_and_the_monitor_are_repaired() {
    let s = Setup::new();
    // The client of a foreground run dies: the container goes on.
    let mut client =
        s.h.cmd()
            .args(["run", "--name", "fg", &s.image, "sleep", "60"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
    wait_for("the container to run", || {
        s.run(&["inspect", "fg"]).status.success()
            && s.inspect("fg")["State"]["Status"] == "running"
    });
    client.kill().unwrap();
    client.wait().unwrap();
    assert_eq!(s.inspect("fg")["State"]["Status"], "running");
    s.ok(&["rm", "-f", "fg"]);

    // The monitor dies: the container is still running (and says so);
    // rm -f ends it.
    s.ok(&["run", "-d", "--name", "orphan", &s.image, "sleep", "60"]);
    let pid = s.inspect("orphan")["State"]["Pid"].as_i64().unwrap();
    let ppid = ppid_of(pid);
    unsafe_kill(ppid);
    wait_for("the monitor to go", || {
        !Path::new(&format!("/proc/{ppid}")).exists() || zombie(ppid)
    });
    assert_eq!(s.inspect("orphan")["State"]["Status"], "running");
    // Its init dies too: no one saw the exit, and ps says so.
    unsafe_kill(i32::try_from(pid).unwrap());
    wait_for("the exit to be seen", || {
        s.inspect("orphan")["State"]["Status"] == "exited"
    });
    assert_eq!(s.inspect("orphan")["State"]["ExitCode"], 255);
    s.ok(&["rm", "orphan"]);

    // Monitor and init die unseen; the commands that repair the record
    // while they hold the container's lock (update, start) do not wait
    // for that lock themselves.
    s.ok(&["run", "-d", "--name", "unseen", &s.image, "sleep", "60"]);
    let pid = s.inspect("unseen")["State"]["Pid"].as_i64().unwrap();
    unsafe_kill(ppid_of(pid));
    unsafe_kill(i32::try_from(pid).unwrap());
    wait_for("the init to go", || {
        !Path::new(&format!("/proc/{pid}")).exists() || zombie(i32::try_from(pid).unwrap())
    });
    for args in [
        &["update", "--memory", "64m", "unseen"][..],
        &["start", "unseen"],
    ] {
        let mut child = s.h.cmd().args(args).stdout(Stdio::null()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!("{args:?} hung");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{args:?}");
    }
    assert_eq!(s.inspect("unseen")["State"]["Status"], "running");
    s.ok(&["rm", "-f", "unseen"]);

    // A background remover killed midway leaves trash directories:
    // `container prune` and `image prune` take them.
    let trash = [
        s.h.root().join("containers/.trash-0123-1"),
        s.h.dir.path().join("run/containers/.trash-0123-1"),
        s.h.root().join("snapshots/.trash.tmp-0123-1-1"),
    ];
    for t in &trash {
        std::fs::create_dir_all(t.join("upper/etc")).unwrap();
        std::fs::write(t.join("upper/etc/hosts"), "x").unwrap();
    }
    s.ok(&["container", "prune", "-f"]);
    assert!(!trash[0].exists() && !trash[1].exists());
    s.ok(&["image", "prune", "-f"]);
    assert!(!trash[2].exists());

    // The monitor dies with a running container, which rm -f then ends.
    s.ok(&["run", "-d", "--name", "lost", &s.image, "sleep", "60"]);
    let pid = s.inspect("lost")["State"]["Pid"].as_i64().unwrap();
    unsafe_kill(ppid_of(pid));
    s.ok(&["rm", "-f", "lost"]);
    wait_for("the init to go", || {
        !Path::new(&format!("/proc/{pid}")).exists() || zombie(i32::try_from(pid).unwrap())
    });
    s.finish();
}

/// A reboot, as the run root sees it: every container's processes are
/// gone (SIGKILL of monitor and init) and the kernel's boot id is not the
/// one the run root was last used in. The next command settles what the
/// boot ended and applies Docker's rules: `always` starts again even when
/// stopped by hand; `unless-stopped` only when the boot stopped it.
#[test]
fn restart_policies_after_a_reboot() {
    let s = Setup::new();
    let sleeper = |name: &str, policy: &str, network: &str| {
        s.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--restart",
            policy,
            "--network",
            network,
            &s.image,
            "sleep",
            "600",
        ]);
    };
    sleeper("always", "always", "bridge");
    sleeper("unless", "unless-stopped", "none");
    sleeper("failing", "on-failure", "none");
    sleeper("always-stopped", "always", "none");
    sleeper("unless-stopped", "unless-stopped", "none");
    sleeper("plain", "no", "none");
    s.ok(&["stop", "-t", "1", "always-stopped", "unless-stopped"]);
    let ran_before = s.inspect("always")["State"]["Pid"].as_i64().unwrap();
    for name in ["always", "unless", "failing", "plain"] {
        let pid = s.inspect(name)["State"]["Pid"].as_i64().unwrap();
        let monitor = ppid_of(pid);
        unsafe_kill(monitor);
        unsafe_kill(i32::try_from(pid).unwrap());
        wait_for("the container to go", || {
            !Path::new(&format!("/proc/{pid}")).exists() || zombie(i32::try_from(pid).unwrap())
        });
    }
    let marker = s.h.dir.path().join("run/boot-id");
    let this_boot = std::fs::read_to_string(&marker).unwrap();
    std::fs::write(&marker, "00000000-0000-0000-0000-000000000000\n").unwrap();

    let out = s.ok(&["system", "boot"]);
    let mut restarted: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("restarted "))
        .collect();
    restarted.sort_unstable();
    assert_eq!(
        restarted,
        ["always", "always-stopped", "failing", "unless"],
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), this_boot);
    for name in ["always", "always-stopped", "failing", "unless"] {
        let st = s.inspect(name);
        assert_eq!(st["State"]["Status"], "running", "{name}: {st}");
    }
    assert_ne!(
        s.inspect("always")["State"]["Pid"].as_i64().unwrap(),
        ran_before
    );
    // The restarted container is on its network again.
    let ip = s.inspect("always")["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!ip.is_empty());
    let plain = s.inspect("plain");
    assert_eq!(plain["State"]["Status"], "exited");
    assert_eq!(plain["State"]["ExitCode"], 255);
    assert!(
        plain["State"]["Error"]
            .as_str()
            .unwrap()
            .contains("host restarted"),
        "{plain}"
    );
    assert_eq!(s.inspect("unless-stopped")["State"]["Status"], "exited");
    // Once a boot is handled, it is not handled again.
    assert!(s.ok(&["system", "boot"]).contains("nothing to do"));
    s.finish();
}

fn ppid_of(pid: i64) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().unwrap().trim_start().starts_with('Z'))
        .unwrap_or(true)
}

/// SIGKILL to a process this test started (through hako).
fn unsafe_kill(pid: i32) {
    let st = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn forty_parallel_detached_runs() {
    let s = Setup::new();
    let children: Vec<_> = (0..40)
        .map(|i| {
            s.h.cmd()
                .args([
                    "run",
                    "-d",
                    "--name",
                    &format!("p{i}"),
                    &s.image,
                    "sleep",
                    "60",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let running = s.ok(&["ps", "-q"]);
    assert_eq!(running.lines().count(), 40);
    let removers: Vec<_> = (0..40)
        .map(|i| {
            s.h.cmd()
                .args(["rm", "-f", &format!("p{i}")])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut r in removers {
        assert!(r.wait().unwrap().success());
    }
    s.finish();
}

/// A container that keeps CAP_SYS_PTRACE could open its init's
/// `/proc/PID/exe` before the exec: the monitor then runs from a sealed
/// copy, so that file is not the monitor binary on the host.
#[test]
fn with_ptrace_the_monitor_runs_from_a_sealed_copy() {
    let s = Setup::new();
    let id = s.ok(&[
        "run",
        "-d",
        "--cap-add",
        "SYS_PTRACE",
        &s.image,
        "sleep",
        "60",
    ]);
    let pid = s.inspect(id.trim())["State"]["Pid"].as_i64().unwrap();
    let exe = std::fs::read_link(format!("/proc/{}/exe", ppid_of(pid))).unwrap();
    assert!(exe.to_string_lossy().starts_with("/memfd:"), "{exe:?}");
    // Without it, the plain binary (no copy on the hot path).
    let id2 = s.ok(&["run", "-d", &s.image, "sleep", "60"]);
    let pid2 = s.inspect(id2.trim())["State"]["Pid"].as_i64().unwrap();
    let exe2 = std::fs::read_link(format!("/proc/{}/exe", ppid_of(pid2))).unwrap();
    assert!(exe2.ends_with("hako-monitor"), "{exe2:?}");
    s.finish();
}

/// A container that runs on quietly gets a lean monitor (it re-executes
/// itself with only what its loop needs): output, stdin, stop and the exit
/// code all carry on across that.
#[test]
fn the_monitor_goes_lean_without_losing_the_container() {
    let s = Setup::new();
    let mut child =
        s.h.cmd()
            .args([
                "run",
                "-i",
                "--name",
                "quiet",
                &s.image,
                "sh",
                "-c",
                "echo one; read line; echo got $line; sleep 1.5; exit 6",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
    wait_for("the first line", || {
        s.run(&["logs", "quiet"]).stdout == b"one\n"
    });
    let pid = s.inspect("quiet")["State"]["Pid"].as_i64().unwrap();
    let monitor = ppid_of(pid);
    // Quiet for more than a second: the monitor re-executes (same pid).
    wait_for("the lean monitor", || {
        std::fs::read_to_string(format!("/proc/{monitor}/cmdline"))
            .unwrap()
            .contains("--handoff")
    });
    assert_eq!(ppid_of(pid), monitor);
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{monitor}/comm")).unwrap(),
        "hako-monitor\n"
    );
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"two\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert_eq!(text(&out.stdout), "one\ngot two\n");
    assert_eq!(s.ok(&["logs", "quiet"]), "one\ngot two\n");
    assert_eq!(s.inspect("quiet")["State"]["ExitCode"], 6);
    // And a lean monitor still stops its container.
    s.ok(&["run", "-d", "--name", "idle", &s.image, "sleep", "60"]);
    std::thread::sleep(Duration::from_millis(1500));
    s.ok(&["stop", "-t", "1", "idle"]);
    assert_eq!(s.inspect("idle")["State"]["ExitCode"], 137);
    s.finish();
}

/// `-t`, `--init`, `--device`, signal proxying, `attach` with the detach
/// keys, and the completion scripts.
#[test]
fn terminal_init_devices_signals_attach_and_completion() {
    let s = Setup::new();
    // A terminal: the program's stdio is a pty (lines end in \r\n).
    let out = s.run(&["run", "--rm", "-t", &s.image, "sh", "-c", "tty; exit 2"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stdout), "/dev/pts/0\r\n");
    // exec -t: the program's pty has the caller's terminal size.
    s.ok(&["run", "-d", "--name", "sized", &s.image, "sleep", "600"]);
    let out = on_a_pty(
        &s,
        "stty rows 23 cols 71",
        &["exec", "-t", "sized", "stty", "size"],
    );
    assert!(
        text(&out.stdout).contains("23 71"),
        "{:?} {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    s.ok(&["rm", "-f", "sized"]);
    // --init: tini is pid 1 and the program its child.
    let out = s.ok(&[
        "run",
        "--rm",
        "--init",
        &s.image,
        "sh",
        "-c",
        "cat /proc/1/cmdline | tr '\\0' ' '",
    ]);
    assert!(out.starts_with("/dev/init -- sh -c"), "{out}");
    // --device: a host device under another name, with its cgroup rule.
    let out = s.ok(&[
        "run",
        "--rm",
        "--device",
        "/dev/zero:/dev/myzero",
        &s.image,
        "sh",
        "-c",
        "head -c 4 /dev/myzero | od -An -tx1",
    ]);
    assert_eq!(out.trim(), "00 00 00 00");
    // Signals to a foreground `run` reach the container (--sig-proxy).
    let child =
        s.h.cmd()
            .args([
                "run",
                "--name",
                "sig",
                &s.image,
                "sh",
                "-c",
                "trap 'echo got-term; exit 9' TERM; echo ready; while true; do sleep 0.1; done",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
    wait_for("the container to be ready", || {
        s.run(&["logs", "sig"]).stdout == b"ready\n"
    });
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(9));
    assert_eq!(text(&out.stdout), "ready\ngot-term\n");
    // attach: output from now on and stdin; the detach keys leave the
    // container running.
    s.ok(&[
        "run",
        "-d",
        "-i",
        "--name",
        "echoer",
        &s.image,
        "sh",
        "-c",
        "while read l; do echo echo:$l; done",
    ]);
    let mut att =
        s.h.cmd()
            .args(["attach", "echoer"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
    use std::io::Write;
    let mut input = att.stdin.take().unwrap();
    input.write_all(b"hello\n").unwrap();
    wait_for("the echo", || {
        s.run(&["logs", "echoer"]).stdout == b"echo:hello\n"
    });
    input.write_all(&[0x10, 0x11]).unwrap();
    let out = att.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "echo:hello\n");
    assert_eq!(s.inspect("echoer")["State"]["Status"], "running");
    // Completion scripts for the three shells.
    for shell in ["bash", "zsh", "fish"] {
        assert!(s.ok(&["completion", shell]).contains("hako"), "{shell}");
    }
    s.finish();
}

/// `hako run` SIGKILLed at each step of making and starting a container:
/// every time, the next commands tell a consistent story, `start` can
/// finish the job, and `rm -f` releases everything.
#[test]
fn run_killed_at_every_step_is_repaired() {
    let s = Setup::new();
    let points = [
        "engine: record inserted",
        "engine: rootfs mounted, spec written",
        "engine: monitor ready",
        "engine: record updated, lo up",
        "engine: started",
    ];
    for (i, point) in points.iter().enumerate() {
        let name = format!("crash{i}");
        let out =
            s.h.cmd()
                .args(["run", "-d", "--name", &name, &s.image, "sleep", "60"])
                .env("HAKO_RUNTIME_CRASH_AT", point)
                .output()
                .unwrap();
        assert_eq!(
            out.status.code(),
            None,
            "{point}: not killed: {}",
            text(&out.stderr)
        );
        let ps = s.ok(&["ps", "-a", "--format", "{{.Names}} {{.State}}"]);
        assert!(ps.contains(&name), "{point}: {ps}");
        if i == 2 {
            // A monitor holds a created container the record does not
            // know of: start makes a fresh one.
            s.ok(&["start", &name]);
            assert_eq!(s.inspect(&name)["State"]["Status"], "running", "{point}");
        }
        s.ok(&["rm", "-f", &name]);
        assert!(!s.ok(&["ps", "-a"]).contains(&name), "{point}");
    }
    s.finish();
}

/// `stats` reads the container's cgroup; `update` changes its limits live
/// and for the next start; limits given at run are in place.
#[test]
fn stats_and_update_limits() {
    let s = Setup::new();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        "-m",
        "64m",
        "--pids-limit",
        "20",
        &s.image,
        "sh",
        "-c",
        "while true; do :; done",
    ]);
    let row = s.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.CPUPerc}} {{.MemUsage}} {{.PIDs}}",
        "busy",
    ]);
    let f: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(f[0], "busy", "{row}");
    let cpu: f64 = f[1].trim_end_matches('%').parse().unwrap();
    assert!(cpu > 10.0, "a busy loop uses CPU: {row}");
    assert_eq!(f[4], "64.00MiB", "{row}");
    assert_eq!(f[5], "1", "{row}");
    s.ok(&["update", "--memory", "128m", "--pids-limit", "50", "busy"]);
    let row = s.ok(&["stats", "--no-stream", "--format", "{{.MemUsage}}", "busy"]);
    assert!(row.trim().ends_with("/ 128.00MiB"), "{row}");
    // Seen from inside too (cgroup v1 or v2, whichever this host has).
    let limit = s.ok(&[
        "exec",
        "busy",
        "sh",
        "-c",
        "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max",
    ]);
    assert_eq!(limit.trim(), "50");
    assert_eq!(s.inspect("busy")["HostConfig"]["Memory"], 134_217_728);
    s.ok(&["rm", "-f", "busy"]);
    s.finish();
}
