//! The cgroup crate on this machine's kernel: create, limit, attach,
//! freeze, stats, kill, remove — whatever the layout. On a hybrid host the
//! cgroup2 tree alone also stands in for a pure v2 host, which proves the
//! eBPF device filter here.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Child, Command, Stdio};

use hako_cgroups::{Cgroup, Hierarchies, Layout};
use oci_spec::runtime::LinuxResources;

fn unique(name: &str) -> String {
    format!("/hako-cgtest-{name}-{}", std::process::id())
}

fn resources(json: serde_json::Value) -> LinuxResources {
    serde_json::from_value(json).unwrap()
}

/// A shell that waits for a line on stdin before running `script`.
fn waiting_shell(script: &str) -> Child {
    Command::new("/bin/sh")
        .args(["-c", &format!("read go; {script}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn go(mut child: Child) -> String {
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn gone(cg: &Cgroup) {
    for d in cg.all_dirs() {
        assert!(!d.exists(), "{} is left", d.display());
    }
    for d in &cg.created {
        assert!(!d.exists(), "{} is left", d.display());
    }
}

#[test]
fn lifecycle_of_a_cgroup() {
    let h = Hierarchies::discover().unwrap();
    let mut cg = Cgroup::resolve(&h, &format!("{}/nested", unique("life")), "x").unwrap();
    cg.create().unwrap();
    let warnings = cg
        .apply(&resources(
            serde_json::json!({"pids": {"limit": 50}, "memory": {"limit": 67108864}}),
        ))
        .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let mut child = waiting_shell("sleep 300");
    let pid = i32::try_from(child.id()).unwrap();
    cg.add_task(pid).unwrap();
    assert_eq!(cg.pids().unwrap(), vec![pid]);
    let stats = cg.stats().unwrap();
    assert_eq!(stats.pids.current, 1);
    assert_eq!(stats.pids.limit, 50);
    assert_eq!(stats.memory.usage.limit, 67108864);

    cg.freeze().unwrap();
    assert!(cg.is_frozen().unwrap());
    cg.thaw().unwrap();
    assert!(!cg.is_frozen().unwrap());

    cg.signal_all(libc::SIGKILL).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    cg.destroy().unwrap();
    gone(&cg);
}

#[test]
fn a_limit_the_kernel_refuses_names_the_field() {
    let h = Hierarchies::discover().unwrap();
    let mut cg = Cgroup::resolve(&h, &unique("bad"), "x").unwrap();
    cg.create().unwrap();
    let err = cg
        .apply(&resources(serde_json::json!({"cpu": {"cpus": "0-4096"}})))
        .unwrap_err()
        .to_string();
    assert!(err.contains("linux.resources.cpu.cpus"), "{err}");
    let err = cg
        .apply(&resources(
            serde_json::json!({"hugepageLimits": [{"pageSize": "3MB", "limit": 1}]}),
        ))
        .unwrap_err()
        .to_string();
    assert!(err.contains("hugepageLimits[0]"), "{err}");
    cg.destroy().unwrap();
    gone(&cg);
}

#[test]
fn devices_through_an_ebpf_filter_on_cgroup2() {
    let h = Hierarchies::discover().unwrap();
    let Some(v2) = &h.v2 else {
        eprintln!("no cgroup2 tree on this host");
        return;
    };
    // The cgroup2 tree alone, as a pure v2 host would have it.
    let v2_only = Hierarchies {
        v1: Vec::new(),
        v2: Some(v2.clone()),
    };
    let mut cg = Cgroup::resolve(&v2_only, &unique("bpf"), "x").unwrap();
    assert_eq!(cg.layout, Layout::V2);
    cg.create().unwrap();
    cg.apply(&resources(serde_json::json!({"devices": [
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"},
    ]})))
    .unwrap();
    let child = waiting_shell(
        "echo x > /dev/null && echo null-ok; head -c 1 /dev/zero > /dev/null || echo zero-denied",
    );
    cg.add_task(i32::try_from(child.id()).unwrap()).unwrap();
    let text = go(child);
    assert!(text.contains("null-ok"), "{text}");
    assert!(text.contains("zero-denied"), "{text}");
    // An update replaces the program: now /dev/zero is allowed.
    cg.apply(&resources(
        serde_json::json!({"devices": [{"allow": true, "access": "rwm"}]}),
    ))
    .unwrap();
    let child = waiting_shell("head -c 1 /dev/zero > /dev/null && echo zero-ok");
    cg.add_task(i32::try_from(child.id()).unwrap()).unwrap();
    assert!(go(child).contains("zero-ok"));
    cg.destroy().unwrap();
    gone(&cg);
}

/// A process joins the v1 hierarchies itself, through `tasks` files that
/// were opened for it, and lands in the cgroup in each of them.
#[test]
fn a_process_joins_its_v1_cgroups_itself() {
    use std::os::unix::process::CommandExt;
    let h = Hierarchies::discover().unwrap();
    let mut cg = Cgroup::resolve(&h, &unique("self"), "x").unwrap();
    cg.create().unwrap();
    let tasks = cg.open_v1_tasks().unwrap();
    assert_eq!(tasks.len(), cg.v1.len());
    let mut cmd = Command::new("/bin/cat");
    cmd.arg("/proc/self/cgroup");
    // SAFETY: between fork and exec the closure only writes to
    // descriptors; it allocates only to report a failure, and this test's
    // process has no other thread that could hold the allocator's lock.
    unsafe {
        cmd.pre_exec(move || {
            hako_cgroups::join_self(&tasks).map_err(|e| std::io::Error::from(e.errno))
        });
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let membership = String::from_utf8(out.stdout).unwrap();
    for d in &cg.v1 {
        let line = membership
            .lines()
            .find(|l| {
                let ctrls = l.split(':').nth(1).unwrap_or_default();
                let mut ctrls: Vec<&str> = ctrls.split(',').collect();
                ctrls.sort_unstable();
                ctrls == d.controllers.iter().map(String::as_str).collect::<Vec<_>>()
            })
            .unwrap_or_else(|| panic!("{:?} not in {membership}", d.controllers));
        assert!(line.ends_with(&cg.path), "{line} is not in {}", cg.path);
    }
    cg.destroy().unwrap();
    gone(&cg);
}
