//! The OCI lifecycle on real containers: create, start, state, kill,
//! delete, run, and the rules for each operation in each state.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

#[test]
fn run_prints_and_returns_exit_codes() {
    let mut s = Setup::new("run");
    let out = s.run(&["echo", "hello from hako"]);
    assert_eq!(ok(&out).trim(), "hello from hako");
    let out = s.run(&["sh", "-c", "exit 42"]);
    assert_eq!(out.status.code(), Some(42), "{}", stderr(&out));
    let out = s.run(&["sh", "-c", "echo $$"]);
    assert_eq!(
        ok(&out).trim(),
        "1",
        "the program is pid 1 of its pid namespace"
    );
    // pid 1 ignores even SIGKILL from inside its namespace; without a pid
    // namespace the program can die by a signal, which run reports as
    // 128 + the signal.
    let out = s.run(&["sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    s.bundle.config()["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "pid");
    let out = s.run(&["sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    s.finish();
}

#[test]
fn missing_program_fails_create_clearly() {
    let mut s = Setup::new("noprog");
    let out = s.run(&["no-such-program"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no-such-program"), "{}", stderr(&out));
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    s.finish();
}

#[test]
fn create_start_state_kill_delete() {
    let mut s = Setup::new("life");
    s.bundle.set_args(&["sleep", "300"]);
    s.bundle.config()["annotations"] = serde_json::json!({"org.hako.test": "yes"});
    s.bundle.save();
    ok(&s.rt.create(&s.bundle, &s.id));

    let st = s.rt.state(&s.id);
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], s.id.as_str());
    assert_eq!(st["annotations"]["org.hako.test"], "yes");
    let pid = st["pid"].as_i64().unwrap();
    assert!(pid > 0);
    assert_eq!(
        st["bundle"].as_str().unwrap(),
        std::fs::canonicalize(s.bundle.dir())
            .unwrap()
            .to_str()
            .unwrap()
    );

    // Delete without --force refuses a container that is not stopped.
    let out = s.cmd().args(["delete", &s.id]).output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("created"), "{}", stderr(&out));

    s.start();
    assert_eq!(s.rt.state(&s.id)["status"], "running");
    // A second start fails and changes nothing.
    let out = s.cmd().args(["start", &s.id]).output().unwrap();
    assert!(!out.status.success());
    assert_eq!(s.rt.state(&s.id)["status"], "running");

    // list and ps see it.
    let list = ok(&s.cmd().args(["list", "--format", "json"]).output().unwrap());
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list[0]["id"], s.id.as_str());
    let ps = ok(&s
        .cmd()
        .args(["ps", "--format", "json", &s.id])
        .output()
        .unwrap());
    let ps: Vec<i64> = serde_json::from_str(&ps).unwrap();
    assert!(ps.contains(&pid), "{ps:?} lacks {pid}");

    ok(&s.cmd().args(["kill", &s.id, "KILL"]).output().unwrap());
    wait_for(
        || s.rt.state(&s.id)["status"] == "stopped",
        "the container to stop",
    );
    ok(&s.cmd().args(["delete", &s.id]).output().unwrap());
    let out = s.cmd().args(["state", &s.id]).output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    s.finish();
}

#[test]
fn unknown_ids_fail_and_change_nothing() {
    let s = Setup::new("unknown");
    for args in [
        vec!["start", "nope"],
        vec!["kill", "nope", "TERM"],
        vec!["delete", "nope"],
        vec!["state", "nope"],
        vec!["pause", "nope"],
    ] {
        let out = s.cmd().args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr(&out).contains("does not exist"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = s
        .cmd()
        .args([
            "create",
            "--bundle",
            s.bundle.dir().to_str().unwrap(),
            "bad/id",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("invalid"), "{}", stderr(&out));
    s.finish();
}

#[test]
fn flags_after_the_id_and_signal_spellings() {
    let mut s = Setup::new("flags");
    // As pid 1 of its namespace, the program gets only the signals it
    // handles (and SIGKILL).
    s.bundle
        .set_args(&["sh", "-c", "trap 'exit 0' TERM; sleep 300 & wait"]);
    s.bundle.save();
    // The container keeps the stdio it is given: files, not pipes that
    // this test would wait on.
    let err = s.bundle.dir().join("create.err");
    let status = s
        .cmd()
        .args([
            "create",
            &s.id,
            "--bundle",
            s.bundle.dir().to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "{}", read(&err));
    s.start();
    let out = s
        .cmd()
        .args(["kill", &s.id, "NOTASIGNAL"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    ok(&s.cmd().args(["kill", &s.id, "SIGTERM"]).output().unwrap());
    wait_for(
        || s.rt.state(&s.id)["status"] == "stopped",
        "SIGTERM to stop sleep",
    );
    ok(&s.cmd().args(["delete", &s.id]).output().unwrap());
    s.finish();
}

#[test]
fn pause_and_resume() {
    let mut s = Setup::new("pause");
    s.create(&["sleep", "300"]);
    s.start();
    ok(&s.cmd().args(["pause", &s.id]).output().unwrap());
    assert_eq!(s.rt.state(&s.id)["status"], "paused");
    let pid = s.rt.state(&s.id)["pid"].as_i64().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        stat.lines()
            .any(|l| l.starts_with("State:") && (l.contains("D") || l.contains("S"))),
        "{stat}"
    );
    ok(&s.cmd().args(["resume", &s.id]).output().unwrap());
    assert_eq!(s.rt.state(&s.id)["status"], "running");
    let out = s.cmd().args(["resume", &s.id]).output().unwrap();
    assert!(
        !out.status.success(),
        "resume of a running container must fail"
    );
    s.force_delete();
    s.finish();
}

#[test]
fn exec_runs_in_the_container() {
    let mut s = Setup::new("exec");
    s.bundle.set_args(&["sleep", "300"]);
    s.bundle.config()["hostname"] = "exec-box".into();
    s.bundle.save();
    ok(&s.rt.create(&s.bundle, &s.id));
    s.start();
    let out = s.exec(&["hostname"]);
    assert_eq!(ok(&out).trim(), "exec-box");
    let out = s
        .cmd()
        .args([
            "exec",
            "--env",
            "GREETING=hi",
            "--cwd",
            "/tmp",
            &s.id,
            "sh",
            "-c",
            "echo $GREETING $PWD; exit 7",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(stdout(&out).trim(), "hi /tmp");
    let out = s
        .cmd()
        .args(["exec", "--user", "65534:65534", &s.id, "id", "-u"])
        .output()
        .unwrap();
    assert_eq!(ok(&out).trim(), "65534");
    // exec'd processes see the container's pid namespace.
    let out = s.exec(&["sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"]);
    assert_eq!(ok(&out).trim(), "sleep 300");
    // ... and are in its cgroups, in every hierarchy (seen from its
    // cgroup namespace, an outsider's path would start with "/..").
    let out = s.exec(&[
        "sh",
        "-c",
        "cat /proc/self/cgroup; echo ==; cat /proc/1/cgroup",
    ]);
    let text = ok(&out);
    let (exec_cgroups, init_cgroups) = text.split_once("==\n").unwrap();
    assert_eq!(exec_cgroups, init_cgroups);
    // --process FILE
    let proc_file = s.bundle.dir().join("process.json");
    std::fs::write(&proc_file, serde_json::json!({"args": ["sh", "-c", "echo from-file"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "env": ["PATH=/bin"]}).to_string()).unwrap();
    let out = s
        .cmd()
        .args(["exec", "--process", proc_file.to_str().unwrap(), &s.id])
        .output()
        .unwrap();
    assert_eq!(ok(&out).trim(), "from-file");
    let out = s.exec(&["no-such-thing"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    s.force_delete();
    s.finish();
}

#[test]
fn an_exit_is_never_lost() {
    let mut s = Setup::new("loop");
    s.bundle.set_args(&["sh", "-c", "exit 3"]);
    s.bundle.save();
    for i in 0..250 {
        let out = s.rt.run(&s.bundle, &s.id);
        assert_eq!(out.status.code(), Some(3), "run {i}: {}", stderr(&out));
    }
    s.finish();
}

#[test]
fn detached_run_and_events() {
    let mut s = Setup::new("detach");
    s.bundle.set_args(&["sleep", "300"]);
    s.bundle.save();
    let out = s
        .cmd()
        .args([
            "run",
            "-d",
            "--bundle",
            s.bundle.dir().to_str().unwrap(),
            &s.id,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(s.bundle.dir().join("run.err")).unwrap())
        .status()
        .unwrap();
    assert!(out.success(), "{}", read(&s.bundle.dir().join("run.err")));
    assert_eq!(s.rt.state(&s.id)["status"], "running");
    let ev = ok(&s.cmd().args(["events", "--stats", &s.id]).output().unwrap());
    let ev: serde_json::Value = serde_json::from_str(ev.trim()).unwrap();
    assert_eq!(ev["type"], "stats");
    assert_eq!(ev["id"], s.id.as_str());
    assert!(ev["data"]["pids"]["current"].as_u64().unwrap() >= 1, "{ev}");
    s.force_delete();
    s.finish();
}

#[test]
fn spec_features_version() {
    let s = Setup::new("meta");
    let f = ok(&s.cmd().arg("features").output().unwrap());
    let f: serde_json::Value = serde_json::from_str(&f).unwrap();
    assert_eq!(f["ociVersionMin"], "1.0.0");
    assert!(f["linux"]["namespaces"].as_array().unwrap().len() >= 8);
    let v = ok(&s.cmd().arg("--version").output().unwrap());
    assert!(v.contains("spec: 1.2.0"), "{v}");
    let dir = tempfile::tempdir().unwrap();
    ok(&s
        .cmd()
        .args([
            "spec",
            "--rootless",
            "--bundle",
            dir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap());
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    assert!(c["linux"]["uidMappings"].is_array());
    let out = s
        .cmd()
        .args(["spec", "--bundle", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "spec must not overwrite config.json");
    s.finish();
}

#[test]
fn kill_sends_realtime_signals_and_refuses_a_stopped_container() {
    let mut s = Setup::new("killrt");
    s.create(&[
        "sh",
        "-c",
        "trap 'echo rt34' 34; trap 'echo rt37' 37; trap 'echo rt62' 62; trap 'echo rt64; exit 0' 64; echo ready; while :; do sleep 0.05; done",
    ]);
    s.start();
    let (out, _) = Runtime::output_files(&s.bundle, &s.id);
    wait_for(|| read(&out).contains("ready"), "the traps to be set");
    for (signal, seen) in [
        ("34", "rt34"),
        ("SIGRTMIN+3", "rt37"),
        ("rtmax-2", "rt62"),
        ("RTMAX", "rt64"),
    ] {
        ok(&s.cmd().args(["kill", &s.id, signal]).output().unwrap());
        wait_for(|| read(&out).contains(seen), seen);
    }
    for bad in ["65", "0", "RTMIN+31", "RTMAX-", "RTMIN3"] {
        let o = s.cmd().args(["kill", &s.id, bad]).output().unwrap();
        assert!(!o.status.success(), "{bad} was accepted");
        assert!(
            stderr(&o).contains("is not a signal"),
            "{bad}: {}",
            stderr(&o)
        );
    }
    wait_for(
        || s.rt.state(&s.id)["status"] == "stopped",
        "RTMAX to end the container",
    );
    let o = s.cmd().args(["kill", &s.id, "TERM"]).output().unwrap();
    assert!(!o.status.success(), "kill of a stopped container succeeded");
    assert!(stderr(&o).contains("is stopped"), "{}", stderr(&o));
    ok(&s.cmd().args(["delete", &s.id]).output().unwrap());
    s.finish();
}
