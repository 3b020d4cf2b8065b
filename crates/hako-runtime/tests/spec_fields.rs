//! More fields of config.json, each checked from inside a real container:
//! process scheduling, personality, LSM labels, seccomp notify, hooks that
//! fail or hang, idmapped mounts, root propagation, pivot-less roots,
//! namespaces joined beside a new user namespace, hugetlb limits.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use serde_json::json;
use std::os::fd::AsRawFd;

#[test]
fn scheduler_io_priority_and_personality() {
    let mut s = Setup::new("sched");
    let c = s.bundle.config();
    c["process"]["scheduler"] = json!({"policy": "SCHED_BATCH", "nice": 5});
    c["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 6});
    c["linux"]["personality"] = json!({"domain": "LINUX32"});
    // Field 41 of /proc/PID/stat is the policy (3: SCHED_BATCH), 19 nice.
    let out = s.run(&[
        "sh",
        "-c",
        "cut -d' ' -f19,41 /proc/self/stat; ionice -p $$; uname -m",
    ]);
    let text = ok(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "5 3", "{text}");
    assert!(
        lines[1].contains("best-effort") && lines[1].contains('6'),
        "{text}"
    );
    assert_eq!(lines[2], "i686", "{text}");
    s.finish();
}

#[test]
fn lsm_labels_fail_clearly_without_the_lsm() {
    let mut s = Setup::new("lsm");
    let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.trim() == "Y");
    let selinux = std::path::Path::new("/sys/fs/selinux/enforce").exists();
    if !apparmor {
        s.bundle.config()["process"]["apparmorProfile"] = "hako-test".into();
        let out = s.run(&["true"]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("process.apparmorProfile")
                && stderr(&out).contains("not enabled"),
            "{}",
            stderr(&out)
        );
        s.bundle.config()["process"]
            .as_object_mut()
            .unwrap()
            .remove("apparmorProfile");
    }
    if !selinux {
        s.bundle.config()["process"]["selinuxLabel"] = "system_u:system_r:container_t:s0".into();
        let out = s.run(&["true"]);
        assert!(
            stderr(&out).contains("process.selinuxLabel") && stderr(&out).contains("not enabled"),
            "{}",
            stderr(&out)
        );
    }
    s.finish();
}

#[test]
fn seccomp_notify_hands_the_listener_to_the_agent() {
    use libseccomp::{ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags};
    let mut s = Setup::new("notify");
    let sock = s.bundle.dir().join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    s.bundle.config()["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": sock,
        "listenerMetadata": "agent-meta",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    let id = s.id.clone();
    // The agent: takes the descriptor and the state, then refuses one
    // mkdir with ECONNREFUSED, which no filesystem would answer.
    let agent = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 65536];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = nix::sys::socket::recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            nix::sys::socket::MsgFlags::empty(),
        )
        .unwrap();
        let mut fd = -1;
        for c in msg.cmsgs().unwrap() {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                fd = fds[0];
            }
        }
        let len = msg.bytes;
        let state: serde_json::Value = serde_json::from_slice(&buf[..len]).unwrap();
        let req = ScmpNotifReq::receive(fd).unwrap();
        ScmpNotifResp::new_error(req.id, -libc::ECONNREFUSED, ScmpNotifRespFlags::empty())
            .respond(fd)
            .unwrap();
        state
    });
    let out = s.run(&["sh", "-c", "mkdir /tmp/blocked; echo rc=$?"]);
    let state = agent.join().unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("Connection refused") && text.contains("rc=1"),
        "{text}"
    );
    assert_eq!(state["fds"], json!(["seccompFd"]));
    assert_eq!(state["metadata"], "agent-meta");
    assert_eq!(state["state"]["id"], id.as_str());
    assert_eq!(state["state"]["status"], "creating");
    assert!(state["pid"].as_i64().unwrap() > 0);
    s.finish();
}

#[test]
fn failing_and_hanging_hooks_follow_the_spec() {
    let mut s = Setup::new("hookfail");
    let marker = s.bundle.dir().join("poststop-ran");
    // A failing poststart or poststop hook is a warning: the container
    // runs and is removed all the same.
    s.bundle.config()["hooks"] = json!({
        "poststart": [{"path": "/bin/false"}],
        "poststop": [{"path": "/bin/false"}, {"path": "/bin/sh", "args": ["sh", "-c", format!("touch {}", marker.display())]}],
    });
    let out = s.run(&["sh", "-c", "echo ran"]);
    assert_eq!(ok(&out).trim(), "ran");
    assert!(
        stderr(&out).contains("poststart hook /bin/false"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("poststop hook /bin/false"),
        "{}",
        stderr(&out)
    );
    assert!(
        marker.exists(),
        "a failed poststop hook stops none of the others"
    );
    // A failing createRuntime hook fails create, and leaves nothing; the
    // lifecycle goes on at delete, so the poststop hooks run, and see the
    // container stopped.
    let poststop = s.bundle.dir().join("poststop.log");
    s.bundle.config()["hooks"] = json!({
        "createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 9"]}],
        "poststop": [{"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}", poststop.display())]}]
    });
    let out = s.run(&["true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("createRuntime hook /bin/sh: exited with status 9"),
        "{}",
        stderr(&out)
    );
    let st: serde_json::Value = serde_json::from_str(&read(&poststop))
        .unwrap_or_else(|e| panic!("poststop did not run after the failed create: {e}"));
    assert_eq!(st["status"], "stopped");
    assert_eq!(st["id"], s.id.as_str());
    // A timeout of zero or less is refused before anything starts.
    for t in [0, -5] {
        s.bundle.config()["hooks"] =
            json!({"poststop": [{"path": "/bin/true"}, {"path": "/bin/true", "timeout": t}]});
        let out = s.run(&["true"]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("hooks.poststop[1].timeout"),
            "{}",
            stderr(&out)
        );
    }
    // A hook past its timeout is killed and fails create.
    s.bundle.config()["hooks"] =
        json!({"prestart": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]});
    let start = std::time::Instant::now();
    let out = s.run(&["true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("timed out after 1s"),
        "{}",
        stderr(&out)
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
    assert!(
        std::fs::read_dir(s.rt.root())
            .unwrap()
            .flatten()
            .all(|e| e.file_name().to_string_lossy().starts_with('.'))
    );
    s.finish();
}

#[test]
fn idmapped_bind_mount() {
    let mut s = Setup::new("idmap");
    let host = tempfile::Builder::new()
        .prefix("hako-idmap-")
        .tempdir_in(s.bundle.dir())
        .unwrap();
    let file = host.path().join("owned");
    std::fs::write(&file, "x").unwrap();
    s.bundle.config()["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/mapped", "type": "bind", "source": host.path(), "options": ["bind", "idmap"],
        "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
        "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]
    }));
    // As with a user namespace's maps, containerID is the id on the source
    // filesystem and hostID the id the mount shows: root's file shows as
    // owned by 1000.
    let out = s.run(&["stat", "-c", "%u:%g", "/mapped/owned"]);
    // tmpfs has idmapped mounts from Linux 6.3; before, the error must say
    // what is missing.
    let statfs = nix::sys::statfs::statfs(host.path()).unwrap();
    let release = nix::sys::utsname::uname()
        .unwrap()
        .release()
        .to_string_lossy()
        .into_owned();
    let (major, minor): (u32, u32) = {
        let mut v = release.split(['.', '-']).map(|x| x.parse().unwrap_or(0));
        (v.next().unwrap_or(0), v.next().unwrap_or(0))
    };
    if statfs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC && (major, minor) < (6, 3) {
        assert!(
            stderr(&out).contains("needs a filesystem that supports idmapped mounts"),
            "{}",
            stderr(&out)
        );
    } else {
        assert_eq!(ok(&out).trim(), "1000:1000");
    }
    s.finish();
}

#[test]
fn root_propagation_and_no_pivot() {
    let mut s = Setup::new("prop");
    s.bundle.config()["linux"]["rootfsPropagation"] = "private".into();
    let out = s.run(&["sh", "-c", "awk '$5 == \"/\"' /proc/self/mountinfo"]);
    let text = ok(&out);
    assert!(
        !text.contains("shared:") && !text.contains("master:"),
        "{text}"
    );
    s.bundle.config()["linux"]["rootfsPropagation"] = "shared".into();
    let out = s.run(&["sh", "-c", "awk '$5 == \"/\"' /proc/self/mountinfo"]);
    assert!(ok(&out).contains("shared:"), "{}", stdout(&out));
    // --no-pivot: the root is moved and chrooted into instead.
    s.bundle.config()["linux"]
        .as_object_mut()
        .unwrap()
        .remove("rootfsPropagation");
    s.bundle.set_args(&[
        "sh",
        "-c",
        "echo $$; cat /proc/self/cgroup > /dev/null && echo fine",
    ]);
    s.bundle.save();
    let out = s
        .cmd()
        .args([
            "run",
            "--no-pivot",
            "--bundle",
            s.bundle.dir().to_str().unwrap(),
            &s.id,
        ])
        .output()
        .unwrap();
    assert_eq!(ok(&out), "1\nfine\n");
    // What tells the two apart: with pivot_root the host's mounts are gone
    // from the container's mount namespace; with --no-pivot the rootfs only
    // sits on top of them. Entering the namespace from the host lands on
    // the topmost mount at its root, the rootfs; once that is detached, a
    // second entry lands on what lies beneath: the host's root with
    // --no-pivot, nothing to run a program from without.
    assert!(host_root_beneath(&mut s, true), "--no-pivot");
    assert!(!host_root_beneath(&mut s, false), "pivot_root");
    s.finish();
}

/// Creates the container (with `--no-pivot` or not) and says whether the
/// host's root lies beneath its rootfs in its mount namespace.
fn host_root_beneath(s: &mut Setup, no_pivot: bool) -> bool {
    s.bundle.set_args(&["sleep", "300"]);
    s.bundle.save();
    let (out, err) = Runtime::output_files(&s.bundle, &s.id);
    let mut create = s.cmd();
    create.arg("create");
    if no_pivot {
        create.arg("--no-pivot");
    }
    let status = create
        .args(["--bundle", s.bundle.dir().to_str().unwrap(), &s.id])
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "{}", read(&err));
    let pid = s.rt.state(&s.id)["pid"].as_i64().unwrap();
    let mnt = format!("--mount=/proc/{pid}/ns/mnt");
    // The busybox umount of the container's rootfs; the init keeps its
    // root, the namespace's stack loses its top.
    ok(&std::process::Command::new("nsenter")
        .args([mnt.as_str(), "umount", "-l", "/"])
        .output()
        .unwrap());
    let probe = format!("test -d {} && echo host-root", s.bundle.dir().display());
    let o = std::process::Command::new("nsenter")
        .args([mnt.as_str(), "/bin/sh", "-c", probe.as_str()])
        .output()
        .unwrap();
    s.force_delete();
    stdout(&o).contains("host-root")
}

#[test]
fn joined_network_namespace_beside_a_new_user_namespace() {
    // The provider's network namespace belongs to the host's user
    // namespace: the child must enter it before making its own user
    // namespace, and then fork the init into a new pid namespace.
    let mut provider = Setup::new("netsrc");
    provider.create(&["sleep", "300"]);
    let pid = provider.rt.state(&provider.id)["pid"].as_i64().unwrap();
    let inode = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();

    let mut s = Setup::new("netjoin");
    let c = s.bundle.config();
    for ns in c["linux"]["namespaces"].as_array_mut().unwrap() {
        if ns["type"] == "network" {
            ns["path"] = format!("/proc/{pid}/ns/net").into();
        }
    }
    c["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 300000, "size": 65536}]);
    c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 300000, "size": 65536}]);
    c["mounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["destination"] != "/sys/fs/cgroup" && m["destination"] != "/sys");
    let out = s.run(&[
        "sh",
        "-c",
        "readlink /proc/self/ns/net; echo $$; cat /proc/self/uid_map",
    ]);
    let text = ok(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], inode.to_str().unwrap(), "{text}");
    assert_eq!(lines[1], "1", "{text}");
    assert!(
        lines[2].split_whitespace().eq(["0", "300000", "65536"]),
        "{text}"
    );
    provider.force_delete();
    provider.finish();
    s.finish();
}

/// Whether this host can limit huge pages, read from the kernel apart
/// from the code under test: a mounted v1 hierarchy holds hugetlb, or it is
/// in no v1 hierarchy and a cgroup2 tree offers it.
fn host_has_hugetlb() -> bool {
    let table = std::fs::read_to_string("/proc/cgroups").unwrap();
    let Some(hierarchy) = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"hugetlb") && f.get(3) == Some(&"1"))
        .and_then(|f| f.get(1).map(|h| h.to_string()))
    else {
        return false;
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    if hierarchy != "0" {
        return mountinfo.lines().any(|l| {
            l.contains(" - cgroup ")
                && l.rsplit(' ')
                    .next()
                    .unwrap()
                    .split(',')
                    .any(|o| o == "hugetlb")
        });
    }
    mountinfo
        .lines()
        .filter(|l| l.contains(" - cgroup2 "))
        .filter_map(|l| l.split(' ').nth(4))
        .filter_map(|m| std::fs::read_to_string(format!("{m}/cgroup.controllers")).ok())
        .any(|c| c.split_whitespace().any(|w| w == "hugetlb"))
}

#[test]
fn hugetlb_limits_wherever_the_controller_lives() {
    if !std::path::Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").exists() {
        eprintln!("no 2 MB huge pages on this kernel; nothing to limit");
        return;
    }
    let mut s = Setup::new("hugetlb");
    s.bundle.config()["linux"]["resources"]["hugepageLimits"] =
        json!([{"pageSize": "2MB", "limit": 4194304}]);
    let path = format!("/hako-test/{}", s.id);
    s.bundle.config()["linux"]["cgroupsPath"] = path.clone().into();
    if !host_has_hugetlb() {
        // Neither tree can hold the limit: create must say so, and why.
        s.bundle.set_args(&["sleep", "300"]);
        s.bundle.save();
        let out = s.rt.create(&s.bundle, &s.id);
        let err = stderr(&out);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains("linux.resources.hugepageLimits[0]")
                && err.contains("the hugetlb controller is not available here"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "one error, nothing else: {err}");
        s.finish();
        return;
    }
    s.create(&["sleep", "300"]);
    // On a hybrid host without a v1 hugetlb hierarchy the limit lives in
    // the cgroup2 tree; on v1 in the hugetlb hierarchy; on v2 in the tree.
    let candidates = [
        format!("/sys/fs/cgroup/unified{path}/hugetlb.2MB.max"),
        format!("/sys/fs/cgroup/hugetlb{path}/hugetlb.2MB.limit_in_bytes"),
        format!("/sys/fs/cgroup{path}/hugetlb.2MB.max"),
    ];
    let found: Vec<String> = candidates
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    assert_eq!(
        found.iter().map(|v| v.trim()).collect::<Vec<_>>(),
        vec!["4194304"],
        "{candidates:?}"
    );
    s.force_delete();
    s.finish();
}

#[test]
fn memory_policy_cpu_affinity_and_intel_rdt() {
    let mut s = Setup::new("numa");
    s.bundle.config()["linux"]["memoryPolicy"] = json!({"mode": "MPOL_BIND", "nodes": "0"});
    // numa_maps names each mapping's policy: bind to node 0 here.
    let out = s.run(&["sh", "-c", "grep -c ' bind:0 ' /proc/self/numa_maps"]);
    assert!(
        ok(&out).trim().parse::<u32>().unwrap() > 0,
        "{}",
        stdout(&out)
    );
    s.bundle.config()["linux"]
        .as_object_mut()
        .unwrap()
        .remove("memoryPolicy");

    // execCPUAffinity applies to exec'd processes.
    s.create(&["sleep", "300"]);
    s.start();
    let process = s.bundle.dir().join("affinity.json");
    std::fs::write(
        &process,
        json!({"args": ["sh", "-c", "grep Cpus_allowed_list /proc/self/status"], "cwd": "/", "user": {"uid": 0, "gid": 0},
               "env": ["PATH=/bin"], "execCPUAffinity": {"initial": "0", "final": "1"}})
        .to_string(),
    )
    .unwrap();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let out = s
        .cmd()
        .args(["exec", "--process", process.to_str().unwrap(), &s.id])
        .output()
        .unwrap();
    if cpus > 1 {
        assert!(
            ok(&out).contains("Cpus_allowed_list:\t1"),
            "{}",
            stdout(&out)
        );
    } else {
        assert!(
            stderr(&out).contains("process.execCPUAffinity.final"),
            "{}",
            stderr(&out)
        );
    }
    s.force_delete();

    s.bundle.config()["linux"]["intelRdt"] = json!({"closID": "x"});
    let out = s.run(&["true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("linux.intelRdt"), "{}", stderr(&out));
    s.finish();
}

/// A veth pair on the host, removed when dropped (whichever end is left).
struct Veth(String, String);

impl Veth {
    fn new(tag: &str) -> Veth {
        let n = std::process::id() % 100_000;
        let v = Veth(format!("hk{tag}{n}a"), format!("hk{tag}{n}b"));
        let out = std::process::Command::new("ip")
            .args(["link", "add", &v.0, "type", "veth", "peer", "name", &v.1])
            .output()
            .unwrap();
        assert!(out.status.success(), "ip link add: {}", stderr(&out));
        v
    }

    fn exists(name: &str) -> bool {
        std::path::Path::new("/sys/class/net").join(name).exists()
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        for n in [&self.0, &self.1] {
            if Veth::exists(n) {
                let _ = std::process::Command::new("ip")
                    .args(["link", "del", n])
                    .output();
            }
        }
    }
}

#[test]
fn net_devices_move_in_renamed_and_back_on_delete() {
    let veth = Veth::new("nd");
    let mut s = Setup::new("netdev");
    s.bundle.config()["linux"]["netDevices"] = json!({ veth.0.clone(): {"name": "eth7"} });
    s.create(&["sleep", "300"]);
    assert!(!Veth::exists(&veth.0), "the device left the host");
    s.start();
    let out = s.exec(&["ip", "-o", "link", "show", "eth7"]);
    assert!(ok(&out).contains("eth7"), "{}", stdout(&out));
    // Deleting a running container gives the device back under its name.
    s.force_delete();
    assert!(Veth::exists(&veth.0), "the device is back on the host");
    // All or none: when one device cannot be moved, the others come back.
    s.bundle.config()["linux"]["netDevices"] =
        json!({ veth.0.clone(): {"name": "eth7"}, "hk-missing0": {} });
    let out = s.run(&["true"]);
    assert!(stderr(&out).contains("hk-missing0"), "{}", stderr(&out));
    assert!(
        Veth::exists(&veth.0),
        "a device moved before the failure is back on the host"
    );
    // Without a network namespace of its own there is nowhere to move to.
    s.bundle.config()["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "network");
    let out = s.run(&["true"]);
    assert!(
        stderr(&out).contains("linux.netDevices"),
        "{}",
        stderr(&out)
    );
    s.finish();
}
