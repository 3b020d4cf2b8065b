//! What a hostile container or config must not achieve: reach the runtime
//! binary, leave its root through its working directory, use devices it was
//! not given, or inherit the caller's descriptors.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use serde_json::json;

fn file_digest(p: &std::path::Path) -> (u64, Vec<u8>) {
    let data = std::fs::read(p).unwrap();
    (data.len() as u64, data[..4096.min(data.len())].to_vec())
}

fn plant_evil_script(s: &Setup) {
    // CVE-2019-5736: a program that is a script whose interpreter is
    // /proc/self/exe makes the kernel run whatever the exec'ing process
    // runs. Were that the runtime binary, it would now run inside the
    // container (and print its usage); through the trampoline the script
    // loops on the sealed trampoline until the arguments run out.
    let p = s.bundle.rootfs().join("bin/evil");
    std::fs::write(&p, "#!/proc/self/exe\n").unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

#[test]
fn a_proc_self_exe_script_reaches_only_the_sealed_trampoline() {
    let mut s = Setup::new("exe-attack");
    plant_evil_script(&s);
    let before = file_digest(&bin());
    let out = s.run(&["/bin/evil", "more", "args"]);
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the container's program could not be executed"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).to_lowercase().contains("usage"),
        "the runtime ran in the container: {}",
        stderr(&out)
    );
    assert_eq!(file_digest(&bin()), before, "the runtime binary changed");
    s.finish();
}

#[test]
fn exec_through_a_proc_self_exe_script_is_contained_too() {
    let mut s = Setup::new("exe-exec");
    plant_evil_script(&s);
    s.create(&["sleep", "300"]);
    s.start();
    let before = file_digest(&bin());
    let out = s.exec(&["/bin/evil"]);
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    assert!(
        !stderr(&out).to_lowercase().contains("usage"),
        "{}",
        stderr(&out)
    );
    // While the init waits and runs, its exe is out of the container's
    // reach too.
    let out = s.exec(&["sh", "-c", "readlink /proc/1/exe"]);
    assert_eq!(ok(&out).trim(), "/bin/busybox");
    assert_eq!(file_digest(&bin()), before);
    s.force_delete();
    s.finish();
}

#[test]
fn cwd_through_a_descriptor_cannot_leave_the_root() {
    let mut s = Setup::new("cwd-escape");
    // CVE-2024-21626: a cwd of /proc/self/fd/N reaching a descriptor the
    // runtime leaked would be outside the container. Try every low number.
    for fd in 3..12 {
        s.bundle.config()["process"]["cwd"] = format!("/proc/self/fd/{fd}").into();
        let out = s.run(&["sh", "-c", "pwd; ls .. | head -3"]);
        assert!(
            !out.status.success(),
            "cwd /proc/self/fd/{fd} worked: {}",
            stdout(&out)
        );
    }
    s.finish();
}

#[test]
fn devices_outside_the_rules_are_refused() {
    let mut s = Setup::new("devdeny");
    let c = s.bundle.config();
    for set in ["bounding", "effective", "permitted"] {
        c["process"]["capabilities"][set]
            .as_array_mut()
            .unwrap()
            .push(json!("CAP_MKNOD"));
    }
    // /dev/mem (1:1) is in no rule: making the node is allowed, opening it
    // is not. /dev/null (1:3) is a default device.
    let out = s.run(&[
        "sh",
        "-c",
        "mknod /tmp/mem c 1 1 && echo made; head -c 1 /tmp/mem; echo x > /dev/null && echo null-ok",
    ]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("made"), "{text}");
    // v1 says EPERM, an eBPF filter on v2 EACCES.
    assert!(
        text.contains("Operation not permitted") || text.contains("Permission denied"),
        "{text}"
    );
    assert!(text.contains("null-ok"), "{text}");
    s.finish();
}

#[test]
fn preserved_descriptors_and_nothing_else() {
    let mut s = Setup::new("preserve");
    s.bundle.set_args(&[
        "sh",
        "-c",
        "ls /proc/self/fd | sort -n | tr '\\n' ' '; cat <&3",
    ]);
    s.bundle.save();
    let file = s.bundle.dir().join("fd3.txt");
    std::fs::write(&file, "from fd 3").unwrap();
    // fd 3 is preserved; fd 4 is open in the caller too but not preserved.
    let script = format!(
        "exec 3<{} 4<{}; exec {} --root {} run --preserve-fds 1 --bundle {} {}",
        file.display(),
        file.display(),
        bin().display(),
        s.rt.root().display(),
        s.bundle.dir().display(),
        s.id
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    let text = ok(&out);
    // 0-2, the preserved 3, and the one ls opens.
    assert!(text.starts_with("0 1 2 3 4 "), "{text}");
    assert!(!text.starts_with("0 1 2 3 4 5"), "{text}");
    assert!(text.ends_with("from fd 3"), "{text}");
    s.finish();
}

#[test]
fn with_cap_sys_ptrace_the_init_runs_from_a_sealed_copy() {
    let mut s = Setup::new("ptrace");
    let caps = json!(["CAP_KILL", "CAP_SYS_PTRACE"]);
    s.bundle.config()["process"]["capabilities"] =
        json!({"bounding": caps, "effective": caps, "permitted": caps});
    s.create(&["sleep", "300"]);
    let pid = s.rt.state(&s.id)["pid"].as_i64().unwrap();
    let exe = format!("/proc/{pid}/exe");
    // The waiting init is what CAP_SYS_PTRACE could open despite
    // non-dumpable: it must be the sealed copy, not the binary on disk.
    let target = std::fs::read_link(&exe).unwrap();
    assert!(
        target.to_string_lossy().starts_with("/memfd:hako-runtime"),
        "{}",
        target.display()
    );
    let write = std::fs::OpenOptions::new().write(true).open(&exe);
    assert!(write.is_err(), "the init's binary opened for writing");
    // From inside, with the capability, the init shows the copy too.
    let out = s.exec(&["readlink", "/proc/1/exe"]);
    assert!(
        ok(&out).starts_with("/memfd:hako-runtime"),
        "{}",
        stdout(&out)
    );
    s.force_delete();
    s.finish();

    // The default capabilities keep the fast path: no copy.
    let mut d = Setup::new("noptrace");
    d.create(&["sleep", "300"]);
    let pid = d.rt.state(&d.id)["pid"].as_i64().unwrap();
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        std::fs::canonicalize(bin()).unwrap()
    );
    d.force_delete();
    d.finish();
}
