//! Fields of config.json, each checked from inside a real container.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use serde_json::json;
use std::path::Path;

#[test]
fn hostname_env_cwd_user_groups() {
    let mut s = Setup::new("proc");
    let c = s.bundle.config();
    c["hostname"] = "box-1".into();
    c["domainname"] = "example.test".into();
    c["process"]["env"] = json!(["PATH=/bin", "FOO=bar"]);
    c["process"]["cwd"] = "/tmp".into();
    c["process"]["user"] =
        json!({"uid": 1000, "gid": 1001, "additionalGids": [20, 30], "umask": 63});
    let out = s.run(&["sh", "-c", "hostname; cat /proc/sys/kernel/domainname; echo $FOO; pwd; id -u; id -g; id -G; umask; echo $HOME"]);
    let lines: Vec<String> = ok(&out).lines().map(str::to_string).collect();
    assert_eq!(lines[0], "box-1");
    assert_eq!(lines[1], "example.test");
    assert_eq!(lines[2], "bar");
    assert_eq!(lines[3], "/tmp");
    assert_eq!(lines[4], "1000");
    assert_eq!(lines[5], "1001");
    assert_eq!(lines[6], "1001 20 30");
    assert_eq!(lines[7], "0077");
    assert_eq!(
        lines[8], "/",
        "HOME defaults to / for a user without a passwd entry"
    );
    s.finish();
}

fn cap_mask(bits: &[u32]) -> u64 {
    bits.iter().fold(0, |m, b| m | (1u64 << b))
}

#[test]
fn capabilities_all_five_sets() {
    let mut s = Setup::new("caps");
    s.bundle.config()["process"]["capabilities"] = json!({
        "bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_CHOWN"],
        "effective": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "permitted": ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_CHOWN"],
        "inheritable": ["CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_NET_BIND_SERVICE"],
    });
    s.bundle.config()["process"]["noNewPrivileges"] = true.into();
    let out = s.run(&["grep", "-E", "^(Cap|NoNewPrivs)", "/proc/self/status"]);
    let text = ok(&out);
    let field = |name: &str| {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16)
            .unwrap_or_else(|_| line.split_whitespace().nth(1).unwrap().parse().unwrap())
    };
    // grep is exec'd by the container's init, so these are the sets after
    // exec: the ambient set flows into permitted and effective.
    assert_eq!(field("CapBnd:"), cap_mask(&[5, 10, 0]), "{text}");
    assert_eq!(field("CapInh:"), cap_mask(&[10]), "{text}");
    assert_eq!(field("CapAmb:"), cap_mask(&[10]), "{text}");
    assert_eq!(field("CapPrm:"), cap_mask(&[5, 10, 0]), "{text}");
    assert_eq!(field("NoNewPrivs:"), 1, "{text}");
    s.finish();
}

#[test]
fn unknown_capability_and_malformed_configs_leave_nothing() {
    let mut s = Setup::new("badcfg");
    let good = s.bundle.config().clone();
    let cases: Vec<(serde_json::Value, &str)> = vec![(
        json!({"bounding": ["CAP_FLY"]}),
        "process.capabilities.bounding[0]",
    )];
    for (caps, field) in cases {
        *s.bundle.config() = good.clone();
        s.bundle.config()["process"]["capabilities"] = caps;
        let out = s.run(&["true"]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(field), "{}", stderr(&out));
    }
    *s.bundle.config() = good.clone();
    s.bundle.config()["process"]["rlimits"] =
        json!([{"type": "RLIMIT_NOPE", "soft": 1, "hard": 1}]);
    let out = s.run(&["true"]);
    assert!(
        stderr(&out).contains("process.rlimits[0].type"),
        "{}",
        stderr(&out)
    );
    *s.bundle.config() = good.clone();
    s.bundle.config()["linux"]["resources"] = json!({"memory": {"limit": 4096}});
    let out = s.run(&["true"]);
    assert!(
        !out.status.success(),
        "a 4 KiB memory limit cannot hold a process"
    );
    assert!(stderr(&out).contains("memory"), "{}", stderr(&out));
    *s.bundle.config() = good.clone();
    s.bundle.config()["linux"]["resources"]["cpu"] = json!({"cpus": "0-4096"});
    let out = s.run(&["true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("linux.resources.cpu.cpus"),
        "{}",
        stderr(&out)
    );
    *s.bundle.config() = good.clone();
    s.bundle.config()["mounts"][0]["destinaton"] = "/x".into();
    let out = s.run(&["true"]);
    assert!(
        stderr(&out).contains("mounts[0].destinaton"),
        "{}",
        stderr(&out)
    );
    std::fs::write(
        s.bundle.dir().join("config.json"),
        "{\"ociVersion\": \"1.2.0\", ",
    )
    .unwrap();
    let out = s.rt.run(&s.bundle, &s.id);
    assert!(stderr(&out).contains("not valid JSON"), "{}", stderr(&out));
    // Nothing was left: no state directory.
    assert!(
        std::fs::read_dir(s.rt.root())
            .map(|d| d.count() == 0)
            .unwrap_or(true)
    );
    s.finish();
}

#[test]
fn rlimits_oom_score_and_sysctl() {
    let mut s = Setup::new("limits");
    let c = s.bundle.config();
    c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 777, "hard": 888}, {"type": "RLIMIT_NPROC", "soft": 500, "hard": 600}]);
    c["process"]["oomScoreAdj"] = 123.into();
    c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1"});
    let out = s.run(&["sh", "-c", "ulimit -n; ulimit -Hn; ulimit -u; cat /proc/self/oom_score_adj; cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shm_rmid_forced"]);
    let lines: Vec<String> = ok(&out).lines().map(str::to_string).collect();
    assert_eq!(lines, vec!["777", "888", "500", "123", "1", "1"]);
    s.finish();
}

#[test]
fn sysctls_outside_the_containers_namespaces_are_refused() {
    let mut s = Setup::new("sysctl");
    let good = s.bundle.config().clone();
    let core_pattern = read(std::path::Path::new("/proc/sys/kernel/core_pattern"));
    let ip_forward = read(std::path::Path::new("/proc/sys/net/ipv4/ip_forward"));
    // A value the host does not have, so that a write would show.
    let other_forward = if ip_forward.trim() == "1" { "0" } else { "1" };
    // Not namespaced at all.
    s.bundle.config()["linux"]["sysctl"] = json!({"kernel.core_pattern": "|/bin/false hako-test"});
    let out = s.run(&["true"]);
    assert!(!out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("linux.sysctl.kernel.core_pattern") && err.contains("not namespaced"),
        "{err}"
    );
    // Per network namespace, but the container would share the host's.
    *s.bundle.config() = good.clone();
    s.bundle.config()["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "network");
    s.bundle.config()["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": other_forward});
    let out = s.run(&["true"]);
    assert!(!out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("linux.sysctl.net.ipv4.ip_forward") && err.contains("network"),
        "{err}"
    );
    // The same for an ipc sysctl without an ipc namespace.
    *s.bundle.config() = good.clone();
    s.bundle.config()["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "ipc");
    s.bundle.config()["linux"]["sysctl"] = json!({"kernel.shmmni": "1000"});
    let out = s.run(&["true"]);
    assert!(
        !out.status.success() && stderr(&out).contains("linux.sysctl.kernel.shmmni"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        read(std::path::Path::new("/proc/sys/kernel/core_pattern")),
        core_pattern
    );
    assert_eq!(
        read(std::path::Path::new("/proc/sys/net/ipv4/ip_forward")),
        ip_forward
    );
    // Nothing was made for the refused configs.
    assert!(
        std::fs::read_dir(s.rt.root())
            .map(|d| d.count() == 0)
            .unwrap_or(true)
    );
    // With their namespaces they apply, inside only.
    *s.bundle.config() = good;
    s.bundle.config()["linux"]["sysctl"] =
        json!({"net.ipv4.ip_forward": other_forward, "kernel.shmmni": "1000"});
    let out = s.run(&[
        "cat",
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/kernel/shmmni",
    ]);
    assert_eq!(ok(&out), format!("{other_forward}\n1000\n"));
    assert_eq!(
        read(std::path::Path::new("/proc/sys/net/ipv4/ip_forward")),
        ip_forward
    );
    s.finish();
}

#[test]
fn readonly_root_masked_and_readonly_paths() {
    let mut s = Setup::new("ro");
    s.bundle.config()["root"]["readonly"] = true.into();
    let out = s.run(&["sh", "-c", "touch /x 2>/dev/null && echo wrote-root; wc -c < /proc/timer_list; echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo wrote-sys; ls /sys/firmware | wc -l; touch /tmp/ok 2>/dev/null && echo tmp-rw; echo done"]);
    let text = ok(&out);
    assert!(!text.contains("wrote-root"), "{text}");
    assert!(!text.contains("wrote-sys"), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].trim(),
        "0",
        "masked /proc/timer_list reads empty: {text}"
    );
    assert_eq!(
        lines[1].trim(),
        "0",
        "masked /sys/firmware is empty: {text}"
    );
    assert!(text.contains("done"));
    s.finish();
}

#[test]
fn mounts_tmpfs_bind_ro_and_propagation() {
    let mut s = Setup::new("mnt");
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("greeting"), "hi from host").unwrap();
    let file = host.path().join("single");
    std::fs::write(&file, "one file").unwrap();
    let mounts = s.bundle.config()["mounts"].as_array_mut().unwrap();
    mounts.push(json!({"destination": "/data", "type": "bind", "source": host.path(), "options": ["rbind", "ro", "nosuid"]}));
    mounts.push(json!({"destination": "/etc/single", "type": "bind", "source": file, "options": ["bind", "rprivate"]}));
    mounts.push(json!({"destination": "/deep/er/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m", "mode=700", "noexec"]}));
    mounts.push(json!({"destination": "/rro", "type": "bind", "source": host.path(), "options": ["rbind", "rro"]}));
    let out = s.run(&["sh", "-c", "cat /data/greeting; echo; cat /etc/single; echo; touch /data/x 2>/dev/null && echo wrote-ro; touch /rro/x 2>/dev/null && echo wrote-rro; grep ' /deep/er/scratch ' /proc/self/mountinfo; stat -c %a /deep/er/scratch"]);
    let text = ok(&out);
    assert!(text.contains("hi from host"), "{text}");
    assert!(text.contains("one file"), "{text}");
    assert!(
        !text.contains("wrote-ro") && !text.contains("wrote-rro"),
        "{text}"
    );
    assert!(text.contains("noexec") && text.contains("tmpfs"), "{text}");
    assert!(text.trim_end().ends_with("700"), "{text}");
    assert!(!host.path().join("x").exists());
    s.finish();
}

#[test]
fn mount_targets_cannot_escape_through_symlinks() {
    let mut s = Setup::new("escape");
    let outside = tempfile::tempdir().unwrap();
    // A hostile rootfs: /evil points at a host directory, /up climbs out.
    std::os::unix::fs::symlink(outside.path(), s.bundle.rootfs().join("evil")).unwrap();
    std::os::unix::fs::symlink("../../../../../../..", s.bundle.rootfs().join("up")).unwrap();
    let mounts = s.bundle.config()["mounts"].as_array_mut().unwrap();
    mounts.push(json!({"destination": "/evil/planted", "type": "tmpfs", "source": "tmpfs"}));
    mounts.push(json!({"destination": "/up/tmp/planted2", "type": "tmpfs", "source": "tmpfs"}));
    let out = s.run(&["sh", "-c", "test -d /tmp/planted2 && echo inside"]);
    let _ = ok(&out);
    assert!(
        !outside.path().join("planted").exists(),
        "a mount target was created outside the rootfs"
    );
    assert!(!std::path::Path::new("/tmp/planted2").exists());
    assert!(
        stdout(&out).contains("inside"),
        "the climbing path resolves inside the rootfs"
    );
    s.finish();
}

#[test]
fn devices_and_dev_links() {
    let mut s = Setup::new("dev");
    s.bundle.config()["linux"]["devices"] = json!([{"path": "/dev/mydev", "type": "c", "major": 1, "minor": 3, "fileMode": 0o640, "uid": 0, "gid": 0}]);
    let out = s.run(&["sh", "-c", "ls -l /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty /dev/mydev | awk '{print $1, $5, $6}'; for l in fd stdin ptmx; do readlink /dev/$l; done; echo x > /dev/mydev && echo mydev-ok; head -c 4 /dev/zero | wc -c"]);
    let text = ok(&out);
    assert!(text.contains("crw-rw-rw- 1, 3"), "{text}");
    assert!(text.contains("crw-r----- 1, 3"), "{text}");
    assert!(
        text.contains("/proc/self/fd\n/proc/self/fd/0\npts/ptmx"),
        "{text}"
    );
    assert!(text.contains("mydev-ok"), "{text}");
    assert!(text.trim_end().ends_with('4'), "{text}");
    s.finish();
}

#[test]
fn default_devices_without_a_dev_mount() {
    let mut s = Setup::new("nodev");
    s.bundle.config()["mounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["destination"] != "/dev");
    let script = "ls -l /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty | awk '{print $1, $5, $6}'; for l in fd stdin stdout stderr ptmx; do readlink /dev/$l; done; head -c 4 /dev/zero | wc -c; echo x > /dev/null && echo null-ok";
    // Twice: the second run finds what the first left in the rootfs.
    for _ in 0..2 {
        let out = s.run(&["sh", "-c", script]);
        let text = ok(&out);
        for dev in ["1, 3", "1, 5", "1, 7", "1, 8", "1, 9", "5, 0"] {
            assert!(text.contains(&format!("crw-rw-rw- {dev}")), "{dev}: {text}");
        }
        assert!(
            text.contains(
                "/proc/self/fd\n/proc/self/fd/0\n/proc/self/fd/1\n/proc/self/fd/2\npts/ptmx\n4\nnull-ok"
            ),
            "{text}"
        );
    }
    // No device node was made on the rootfs's disk.
    let meta = std::fs::symlink_metadata(s.bundle.rootfs().join("dev/null")).unwrap();
    assert!(meta.is_file() && meta.len() == 0, "{meta:?}");
    s.finish();
}

#[test]
fn seccomp_profile_with_errno_and_args() {
    let mut s = Setup::new("seccomp");
    s.bundle.config()["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["no_such_syscall_at_all"], "action": "SCMP_ACT_ERRNO"}
        ]
    });
    let out = s.run(&[
        "sh",
        "-c",
        "mkdir /tmp/x 2>&1; echo rc=$?; touch /tmp/y && echo touch-ok",
    ]);
    let text = ok(&out);
    assert!(text.contains("Operation not permitted"), "{text}");
    assert!(text.contains("rc=1"), "{text}");
    assert!(text.contains("touch-ok"), "{text}");
    s.finish();
}

/// Every syscall name this libseccomp knows, but `except`.
fn syscall_names_except(except: &[&str]) -> Vec<String> {
    (0..1024)
        .filter_map(|n| libseccomp::ScmpSyscall::from(n).get_name().ok())
        .filter(|n| !except.contains(&n.as_str()))
        .collect()
}

#[test]
fn seccomp_actions_errno_defaults_and_argument_filters() {
    let mut s = Setup::new("seccomp-act");
    let archs = json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]);
    let mkdir = json!(["mkdir", "mkdirat"]);
    let chmod = ["chmod", "fchmodat", "fchmodat2"];
    // Deny by default with ENOSYS; a rule without errnoRet returns EPERM
    // (the spec's default), not the default action's value.
    s.bundle.config()["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "architectures": archs,
        "syscalls": [
            {"names": syscall_names_except(&["mkdir", "mkdirat", "chmod", "fchmodat", "fchmodat2"]), "action": "SCMP_ACT_ALLOW"},
            {"names": chmod, "action": "SCMP_ACT_ERRNO"}
        ]
    });
    let out = s.run(&[
        "sh",
        "-c",
        "mkdir /tmp/x 2>&1; touch /tmp/f; chmod 600 /tmp/f 2>&1; echo end",
    ]);
    let text = ok(&out);
    assert!(text.contains("Function not implemented"), "{text}");
    assert!(text.contains("Operation not permitted"), "{text}");
    assert!(text.contains("end"), "{text}");

    // Killed by SIGSYS: 128 + 31.
    for act in ["SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP"] {
        s.bundle.config()["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": archs,
            "syscalls": [{"names": mkdir, "action": act}]
        });
        let out = s.run(&["mkdir", "/tmp/x"]);
        assert_eq!(out.status.code(), Some(159), "{act}: {}", stderr(&out));
    }

    // Logged, and let through.
    s.bundle.config()["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": archs,
        "syscalls": [{"names": mkdir, "action": "SCMP_ACT_LOG"}]
    });
    let out = s.run(&["sh", "-c", "mkdir /tmp/x && echo made"]);
    assert_eq!(ok(&out), "made\n");

    // An argument filter on the mode: 0700 is refused, 0755 is not. The
    // mode is argument 1 of chmod and 2 of fchmodat(2).
    let rule = |name: &str, index: u32| json!({"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": 13, "args": [{"index": index, "value": 0o700, "op": "SCMP_CMP_EQ"}]});
    s.bundle.config()["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": archs,
        "syscalls": [rule("chmod", 1), rule("fchmodat", 2), rule("fchmodat2", 2)]
    });
    let out = s.run(&[
        "sh",
        "-c",
        "touch /tmp/f; chmod 700 /tmp/f 2>&1; echo rc=$?; chmod 755 /tmp/f && stat -c %a /tmp/f",
    ]);
    let text = ok(&out);
    assert!(text.contains("Permission denied"), "{text}");
    assert!(text.contains("rc=1"), "{text}");
    assert!(text.trim_end().ends_with("755"), "{text}");

    // errnoRet on an action that returns nothing is refused up front.
    s.bundle.config()["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": mkdir, "action": "SCMP_ACT_KILL", "errnoRet": 1}]
    });
    let out = s.run(&["true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("linux.seccomp.syscalls[0].errnoRet"),
        "{}",
        stderr(&out)
    );
    assert!(
        std::fs::read_dir(s.rt.root())
            .unwrap()
            .flatten()
            .all(|e| e.file_name().to_string_lossy().starts_with('.')),
        "a refused config left state behind"
    );
    s.finish();
}

#[test]
fn user_namespace_with_id_mappings() {
    let mut s = Setup::new("userns");
    let c = s.bundle.config();
    c["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    // sysfs and cgroup come from the host: read-only binds, as for rootless.
    let mounts = c["mounts"].as_array_mut().unwrap();
    mounts.retain(|m| m["destination"] != "/sys/fs/cgroup");
    // The rootfs must be reachable by the mapped root.
    let out = s.run(&[
        "sh",
        "-c",
        "cat /proc/self/uid_map /proc/self/gid_map; id -u; touch /tmp/u && echo ok",
    ]);
    let text = ok(&out);
    let maps: Vec<Vec<&str>> = text
        .lines()
        .take(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(maps[0], vec!["0", "200000", "65536"], "{text}");
    assert_eq!(maps[1], vec!["0", "200000", "65536"], "{text}");
    assert!(text.contains("\n0\n"), "{text}");
    s.finish();
}

#[test]
fn time_namespace_offsets() {
    let mut s = Setup::new("timens");
    let c = s.bundle.config();
    c["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "time"}));
    c["linux"]["timeOffsets"] = json!({"boottime": {"secs": 864000, "nanosecs": 0}, "monotonic": {"secs": 864000, "nanosecs": 0}});
    let out = s.run(&["cat", "/proc/uptime"]);
    let up: f64 = ok(&out).split_whitespace().next().unwrap().parse().unwrap();
    assert!(up > 864000.0, "uptime {up} lacks the boottime offset");
    s.finish();
}

#[test]
fn joins_an_existing_namespace_by_path() {
    let mut s = Setup::new("join");
    // A first container provides the uts namespace.
    let mut provider = Setup::new("joinsrc");
    provider.bundle.set_args(&["sleep", "300"]);
    provider.bundle.config()["hostname"] = "shared-uts".into();
    provider.bundle.save();
    ok(&provider.rt.create(&provider.bundle, &provider.id));
    let pid = provider.rt.state(&provider.id)["pid"].as_i64().unwrap();
    let c = s.bundle.config();
    for ns in c["linux"]["namespaces"].as_array_mut().unwrap() {
        if ns["type"] == "uts" {
            ns["path"] = format!("/proc/{pid}/ns/uts").into();
        }
    }
    c.as_object_mut().unwrap().remove("hostname");
    let out = s.run(&["hostname"]);
    assert_eq!(ok(&out).trim(), "shared-uts");
    provider.force_delete();
    provider.finish();
    s.finish();
}

#[test]
fn cgroup_resources_are_applied() {
    let mut s = Setup::new("cgres");
    s.bundle.config()["linux"]["resources"] = json!({
        "memory": {"limit": 67108864},
        "pids": {"limit": 33},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
        "devices": [{"allow": false, "access": "rwm"}]
    });
    s.bundle.config()["linux"]["cgroupsPath"] = format!("/hako-test/{}", s.id).into();
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    // What only one of the two has: swappiness on v1, raw files on v2.
    if v2 {
        s.bundle.config()["linux"]["resources"]["unified"] = json!({"memory.high": "50003968"});
    } else {
        s.bundle.config()["linux"]["resources"]["memory"]["swappiness"] = json!(10);
    }
    // Each value read back from inside, in the files of cgroup v2 or of
    // the v1 hierarchies, whichever this kernel has.
    let out = s.run(&["sh", "-c", "if [ -f /sys/fs/cgroup/cgroup.controllers ]; then cd /sys/fs/cgroup; cat memory.max pids.max cpu.weight cpu.max cpuset.cpus cpuset.mems memory.high; else cd /sys/fs/cgroup; cat memory/memory.limit_in_bytes pids/pids.max; echo $(cat cpu/cpu.shares) $(cat cpu/cpu.cfs_quota_us) $(cat cpu/cpu.cfs_period_us); cat cpuset/cpuset.cpus cpuset/cpuset.mems memory/memory.swappiness; fi"]);
    let lines: Vec<String> = ok(&out).lines().map(str::to_string).collect();
    let cpu = if v2 {
        // shares 512 as a weight, then "quota period".
        vec!["20".to_string(), "50000 100000".to_string()]
    } else {
        vec!["512 50000 100000".to_string()]
    };
    let mut want = vec!["67108864".to_string(), "33".to_string()];
    want.extend(cpu);
    want.extend(["0".to_string(), "0".to_string()]);
    want.push(if v2 { "50003968" } else { "10" }.to_string());
    assert_eq!(lines, want);
    s.finish();
}

#[test]
fn host_descriptors_do_not_reach_the_container() {
    let mut s = Setup::new("fds");
    s.bundle.set_args(&["ls", "/proc/self/fd"]);
    s.bundle.save();
    // An open descriptor in the caller, without CLOEXEC, at fd 3 or above.
    let f = std::fs::File::open("/etc/hostname").unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&f);
    let dup = nix::unistd::dup(&f).unwrap();
    let out = s.rt.run(&s.bundle, &s.id);
    let fds: Vec<i32> = ok(&out)
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // 0-2 plus the one ls opens for the directory.
    assert!(
        fds.iter().all(|&f| f <= 3),
        "leaked descriptors: {fds:?} (host fds {raw}, {dup:?})"
    );
    drop(dup);
    s.finish();
}

#[test]
fn proc_self_exe_of_the_waiting_init_is_out_of_reach() {
    let mut s = Setup::new("exe");
    s.create(&["sleep", "300"]);
    // While created, pid 1 is the runtime's init: it must not be readable.
    let out = s.exec(&[
        "sh",
        "-c",
        "readlink /proc/1/exe || echo denied; cat /proc/1/exe > /dev/null 2>&1 || echo no-open",
    ]);
    let text = ok(&out);
    assert!(text.contains("denied"), "{text}");
    assert!(text.contains("no-open"), "{text}");
    s.force_delete();
    s.finish();
}

#[test]
fn hooks_run_in_order_with_state() {
    let mut s = Setup::new("hooks");
    let log = s.bundle.dir().join("hooks.log");
    let hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("read -r state; echo \"{name} $state\" >> {}", log.display())], "timeout": 10});
    // createContainer runs in the container's namespaces before
    // pivot_root, so host paths still resolve; startContainer runs inside
    // the container: its path is the container's /bin/sh and it logs into
    // a bind mount. Both show that they are in the container's uts
    // namespace.
    let inner = |name: &str, log: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("read -r state; echo \"{name} $state\" >> {log}; hostname >> {log}.uts")]});
    let dir = s.bundle.dir().to_path_buf();
    let c = s.bundle.config();
    c["hostname"] = "hooked".into();
    c["hooks"] = json!({
        "prestart": [hook("prestart")],
        "createRuntime": [hook("createRuntime")],
        "createContainer": [inner("createContainer", log.to_str().unwrap())],
        "startContainer": [inner("startContainer", "/hooklog/hooks.log")],
        "poststart": [hook("poststart")],
        "poststop": [hook("poststop")],
    });
    c["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/hooklog", "type": "bind", "source": dir, "options": ["bind"]}),
    );
    let out = s.run(&["true"]);
    ok(&out);
    assert_eq!(read(&log.with_extension("log.uts")), "hooked\nhooked\n");
    let text = read(&log);
    let names: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        names,
        vec![
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ],
        "{text}"
    );
    for l in text.lines() {
        let (name, json) = l.split_once(' ').unwrap();
        let st: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(st["id"], s.id.as_str(), "{name}");
        let want = match name {
            "poststart" => "running",
            "poststop" => "stopped",
            "startContainer" => "created",
            _ => "creating",
        };
        assert_eq!(st["status"], want, "{name}");
    }
    // A failing prestart hook fails create and leaves nothing.
    s.bundle.config()["hooks"] = json!({"prestart": [{"path": "/bin/false"}]});
    let out = s.run(&["true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("/bin/false"), "{}", stderr(&out));
    s.finish();
}

#[test]
fn console_socket_receives_the_pty() {
    use std::os::unix::net::UnixListener;
    let mut s = Setup::new("tty");
    let sock_path = s.bundle.dir().join("console.sock");
    let listener = UnixListener::bind(&sock_path).unwrap();
    s.bundle.config()["process"]["terminal"] = true.into();
    s.bundle.config()["process"]["consoleSize"] = json!({"height": 30, "width": 100});
    s.bundle
        .set_args(&["sh", "-c", "tty; stty size; echo tty-ok"]);
    s.bundle.save();
    let bundle_dir = s.bundle.dir().to_path_buf();
    let mut create = s.cmd();
    create.args([
        "create",
        "--console-socket",
        sock_path.to_str().unwrap(),
        "--bundle",
        bundle_dir.to_str().unwrap(),
        &s.id,
    ]);
    let child = std::thread::spawn(move || create.output().unwrap());
    let (conn, _) = listener.accept().unwrap();
    let master = recv_fd(&conn);
    let out = child.join().unwrap();
    ok(&out);
    s.start();
    let mut text = String::new();
    let mut f = std::fs::File::from(master);
    let _ = std::io::Read::read_to_string(&mut f, &mut text);
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("30 100"), "{text}");
    assert!(text.contains("tty-ok"), "{text}");
    wait_for(
        || s.rt.state(&s.id)["status"] == "stopped",
        "the tty container to exit",
    );
    ok(&s.cmd().args(["delete", &s.id]).output().unwrap());
    s.finish();
}
