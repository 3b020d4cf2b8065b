//! The runc command-line contract beyond the lifecycle: global flags,
//! pid files, update, kill --all, the options of exec.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use serde_json::json;

fn started(prefix: &str, args: &[&str]) -> Setup {
    let mut s = Setup::new(prefix);
    s.create(args);
    s.start();
    s
}

#[test]
fn log_file_in_json_and_systemd_driver_refused() {
    let s = Setup::new("log");
    let log = s.bundle.dir().join("runtime.log");
    let out = s
        .cmd()
        .args([
            "--log",
            log.to_str().unwrap(),
            "--log-format",
            "json",
            "state",
            "no-such-container",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let line = read(&log);
    let entry: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(entry["level"], "error");
    assert!(
        entry["msg"].as_str().unwrap().contains("does not exist"),
        "{line}"
    );
    // A log that cannot be opened, or a format that is neither text nor
    // json, fails the command (even one that would succeed), naming it.
    let unopenable = s.bundle.dir().join("no/such/dir/runtime.log");
    let out = s
        .cmd()
        .args(["--log", unopenable.to_str().unwrap(), "list"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(unopenable.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
    let out = s
        .cmd()
        .args([
            "--log",
            log.to_str().unwrap(),
            "--log-format",
            "xml",
            "list",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("--log-format") && stderr(&out).contains("xml"),
        "{}",
        stderr(&out)
    );
    let out = s.cmd().args(["--systemd-cgroup", "list"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("systemd cgroup driver"),
        "{}",
        stderr(&out)
    );
    s.finish();
}

#[test]
fn pid_files_for_create_and_exec() {
    let mut s = Setup::new("pidfile");
    s.bundle.set_args(&["sleep", "300"]);
    s.bundle.save();
    let pid_file = s.bundle.dir().join("init.pid");
    let status = s
        .cmd()
        .args([
            "create",
            "--pid-file",
            pid_file.to_str().unwrap(),
            "--bundle",
            s.bundle.dir().to_str().unwrap(),
            &s.id,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let pid: i64 = read(&pid_file).parse().unwrap();
    assert_eq!(s.rt.state(&s.id)["pid"].as_i64().unwrap(), pid);
    s.start();
    let exec_pid = s.bundle.dir().join("exec.pid");
    // A detached process keeps the stdio it is given: not pipes to wait on.
    let status = s
        .cmd()
        .args([
            "exec",
            "-d",
            "--pid-file",
            exec_pid.to_str().unwrap(),
            &s.id,
            "sleep",
            "200",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let epid: i32 = read(&exec_pid).parse().unwrap();
    // The pid is the process's from its first exec (through the trampoline).
    wait_for(
        || {
            std::fs::read_to_string(format!("/proc/{epid}/cmdline"))
                .is_ok_and(|c| c == "sleep\u{0}200\u{0}")
        },
        "the exec'd process to run sleep",
    );
    let ps: Vec<i32> = serde_json::from_str(&ok(&s
        .cmd()
        .args(["ps", "--format", "json", &s.id])
        .output()
        .unwrap()))
    .unwrap();
    assert!(ps.contains(&epid), "{ps:?}");
    s.force_delete();
    s.finish();
}

#[test]
fn update_changes_limits_of_a_running_container() {
    let mut s = Setup::new("update");
    s.bundle.config()["linux"]["cgroupsPath"] = format!("/hako-test/{}", s.id).into();
    s.bundle.config()["linux"]["resources"]["pids"] = json!({"limit": 40});
    s.create(&["sleep", "300"]);
    s.start();
    let file = s.bundle.dir().join("res.json");
    std::fs::write(
        &file,
        json!({"pids": {"limit": 77}, "memory": {"limit": 134217728}}).to_string(),
    )
    .unwrap();
    ok(&s
        .cmd()
        .args(["update", "--resources", file.to_str().unwrap(), &s.id])
        .output()
        .unwrap());
    let read_limits = || {
        let out = s.exec(&["sh", "-c", "cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/memory.max"]);
        ok(&out)
    };
    assert_eq!(read_limits(), "77\n134217728\n");
    ok(&s
        .cmd()
        .args(["update", "--pids-limit", "55", "--memory", "96m", &s.id])
        .output()
        .unwrap());
    assert_eq!(read_limits(), "55\n100663296\n");
    // An impossible value fails and names the setting.
    let out = s
        .cmd()
        .args(["update", "--cpu-shares", "1", "--cpu-quota", "-5", &s.id])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("linux.resources.cpu"),
        "{}",
        stderr(&out)
    );
    s.force_delete();
    s.finish();
}

#[test]
fn kill_all_reaches_every_process() {
    // Without a pid namespace the children outlive the init unless all
    // get the signal.
    let mut s = Setup::new("killall");
    s.bundle.config()["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "pid");
    s.bundle
        .set_args(&["sh", "-c", "sleep 300 & sleep 301 & wait"]);
    s.bundle.save();
    ok(&s.rt.create(&s.bundle, &s.id));
    s.start();
    wait_for(|| container_pids(&s).len() == 3, "three processes");
    ok(&s
        .cmd()
        .args(["kill", "--all", &s.id, "9"])
        .output()
        .unwrap());
    wait_for(|| container_pids(&s).is_empty(), "all processes to die");
    assert_eq!(s.rt.state(&s.id)["status"], "stopped");
    ok(&s.cmd().args(["delete", &s.id]).output().unwrap());
    s.finish();
}

fn container_pids(s: &Setup) -> Vec<i32> {
    let out = s
        .cmd()
        .args(["ps", "--format", "json", &s.id])
        .output()
        .unwrap();
    serde_json::from_str(&ok(&out)).unwrap()
}

#[test]
fn exec_options() {
    let s = started("execopts", &["sleep", "300"]);
    // --cap and --no-new-privs.
    let out = s
        .cmd()
        .args([
            "exec",
            "--cap",
            "CAP_NET_RAW",
            "--no-new-privs",
            &s.id,
            "grep",
            "-E",
            "^(CapEff|NoNewPrivs)",
            "/proc/self/status",
        ])
        .output()
        .unwrap();
    let text = ok(&out);
    let eff = text
        .lines()
        .find(|l| l.starts_with("CapEff"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap();
    assert_ne!(
        u64::from_str_radix(eff, 16).unwrap() & (1 << 13),
        0,
        "{text}"
    );
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");
    // --additional-gids and --user.
    let out = s
        .cmd()
        .args(["exec", "--user", "1000:1000", "-g", "44", &s.id, "id", "-G"])
        .output()
        .unwrap();
    assert_eq!(ok(&out).trim(), "1000 44");
    // A terminal through a console socket.
    let sock_path = s.bundle.dir().join("exec-console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    let mut cmd = s.cmd();
    cmd.args([
        "exec",
        "-t",
        "--console-socket",
        sock_path.to_str().unwrap(),
        &s.id,
        "sh",
        "-c",
        "tty; exit 4",
    ]);
    let child = std::thread::spawn(move || cmd.output().unwrap());
    let (conn, _) = listener.accept().unwrap();
    let master = recv_fd(&conn);
    let mut text = String::new();
    let mut f = std::fs::File::from(master);
    let _ = std::io::Read::read_to_string(&mut f, &mut text);
    let out = child.join().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(text.contains("/dev/pts/"), "{text}");
    // exec in a stopped container fails.
    ok(&s.cmd().args(["kill", &s.id, "KILL"]).output().unwrap());
    wait_for(
        || s.rt.state(&s.id)["status"] == "stopped",
        "the container to stop",
    );
    let out = s.exec(&["true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("stopped"), "{}", stderr(&out));
    ok(&s.cmd().args(["delete", &s.id]).output().unwrap());
    s.finish();
}

#[test]
fn list_and_ps_tables() {
    let s = started("tables", &["sleep", "300"]);
    let list = ok(&s.cmd().arg("list").output().unwrap());
    let header: Vec<&str> = list.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    );
    assert!(list.lines().nth(1).unwrap().contains("running"), "{list}");
    let ps = ok(&s.cmd().args(["ps", &s.id]).output().unwrap());
    assert!(ps.lines().next().unwrap().contains("PID"), "{ps}");
    assert!(ps.contains("sleep 300"), "{ps}");
    // delete without --force refuses a running container and changes
    // nothing.
    let out = s.cmd().args(["delete", &s.id]).output().unwrap();
    assert!(!out.status.success());
    assert_eq!(s.rt.state(&s.id)["status"], "running");
    s.force_delete();
    s.finish();
}
