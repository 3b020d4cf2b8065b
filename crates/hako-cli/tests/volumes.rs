//! Volumes on real containers: named volumes shared between containers,
//! read-only mounts, copy-up of the image's content (with modes, owners
//! and symlinks, never following a link out of the container's root),
//! anonymous volumes from `-v /path` and the image's `VOLUME`s, `rm -v`,
//! `--rm`, `volume rm` of a volume in use, and `volume prune`. Each test
//! has its own `--root`/`--runroot` and ends with no mounts left.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

use serde_json::Value;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

const BUSYBOX_PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";

/// A store with three images pulled from a registry of its own:
/// `busybox`; `seed`, busybox with a `/data` tree and `VOLUME /data`;
/// `evil`, busybox with symlinks that point out of `/data` and paths
/// that are links to `/etc`.
struct Setup {
    h: Hako,
    _reg: Registry,
    busybox: String,
    seed: String,
    evil: String,
}

impl Setup {
    fn new() -> Setup {
        ensure_monitor();
        let reg = Registry::start();
        let push = |name: &str, extra: Option<Vec<u8>>, volumes: Option<Value>| {
            let mut b = ImageBuilder::new()
                .layer(busybox_layer(), Compression::Gzip)
                .config("Cmd", serde_json::json!(["sh"]))
                .config("Env", serde_json::json!(["PATH=/bin"]));
            if let Some(layer) = extra {
                b = b.layer(layer, Compression::Gzip);
            }
            if let Some(v) = volumes {
                b = b.config("Volumes", v);
            }
            let dest = reg.image(name);
            b.build().into_layout("1").push("1", &dest);
            dest
        };
        let busybox = push("tools/busybox:1", None, None);
        let seed_layer = TarBuilder::new()
            .dir("data")
            .file("data/seed", b"seed\n")
            .dir("data/sub")
            .file_with("data/sub/owned", b"owned\n", 0o640, 1000)
            .file_with("data/sub/setuid", b"#!/bin/sh\n", 0o4755, 0)
            .symlink("data/rel", "seed")
            .build();
        let seed = push(
            "app/seed:1",
            Some(seed_layer),
            Some(serde_json::json!({"/data": {}})),
        );
        let evil_layer = TarBuilder::new()
            .dir("data")
            .symlink("data/evil", "/etc/passwd")
            .symlink("data/up", "../../../../../../etc/shadow")
            .file("data/plain", b"plain\n")
            .symlink("up", "/etc")
            .symlink("up2", "../../../../../../../etc")
            .build();
        let evil = push("app/evil:1", Some(evil_layer), None);
        let h = Hako::new();
        for img in [&busybox, &seed, &evil] {
            h.ok(&["pull", "-q", img]);
        }
        Setup {
            h,
            _reg: reg,
            busybox,
            seed,
            evil,
        }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.h.run(args)
    }

    fn ok(&self, args: &[&str]) -> String {
        self.h.ok(args)
    }

    /// Runs and expects failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        self.h.refuses(args)
    }

    fn volumes(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .ok(&["volume", "ls", "-q"])
            .lines()
            .map(String::from)
            .collect();
        v.sort();
        v
    }

    fn data(&self, volume: &str) -> PathBuf {
        self.h.root().join("volumes").join(volume).join("_data")
    }

    fn inspect(&self, name: &str) -> Value {
        let out = self.ok(&["container", "inspect", name]);
        serde_json::from_str::<Value>(&out).unwrap()[0].clone()
    }

    /// Removes every container, then checks none is left and nothing is
    /// mounted under the test's directory.
    fn finish(self) {
        for id in self.ok(&["ps", "-a", "-q", "--no-trunc"]).lines() {
            self.ok(&["rm", "-f", id]);
        }
        assert_eq!(self.ok(&["ps", "-a", "-q"]), "");
        assert_no_mounts_under(self.h.dir.path());
    }
}

#[test]
fn named_volume_shares_data_between_containers() {
    let s = Setup::new();
    let bb = s.busybox.as_str();
    // Made on first use.
    s.ok(&[
        "run",
        "--rm",
        "-v",
        "shared:/data",
        bb,
        "sh",
        "-c",
        "echo hello > /data/greeting",
    ]);
    assert_eq!(s.volumes(), ["shared"]);
    assert_eq!(
        s.ok(&["run", "--rm", "-v", "shared:/in", bb, "cat", "/in/greeting"]),
        "hello\n"
    );
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "--mount",
            "type=volume,source=shared,target=/m",
            bb,
            "cat",
            "/m/greeting"
        ]),
        "hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(s.data("shared").join("greeting")).unwrap(),
        "hello\n"
    );

    let out: Value = serde_json::from_str(&s.ok(&["volume", "inspect", "shared"])).unwrap();
    let v = &out[0];
    assert_eq!(v["Name"], "shared");
    assert_eq!(v["Driver"], "local");
    assert_eq!(v["Scope"], "local");
    assert_eq!(v["Options"], serde_json::json!({}));
    assert_eq!(v["Labels"], serde_json::json!({}));
    assert_eq!(v["Mountpoint"], s.data("shared").to_str().unwrap());
    assert!(v["CreatedAt"].as_str().unwrap().starts_with("20"));
    // `inspect` finds volumes after containers and images.
    assert_eq!(
        s.ok(&["inspect", "--format", "{{.Name}} {{.Scope}}", "shared"]),
        "shared local\n"
    );
    assert_eq!(
        s.ok(&["volume", "inspect", "--format", "{{.Mountpoint}}", "shared"]),
        format!("{}\n", s.data("shared").display())
    );

    // create: with labels, idempotent for a name, random name without one.
    assert_eq!(
        s.ok(&["volume", "create", "--label", "app=web", "labelled"]),
        "labelled\n"
    );
    assert_eq!(s.ok(&["volume", "create", "labelled"]), "labelled\n");
    let random = s.ok(&["volume", "create"]).trim().to_string();
    assert_eq!(random.len(), 64);
    assert!(random.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        s.ok(&["volume", "inspect", "-f", "{{.Labels.app}}", "labelled"]),
        "web\n"
    );
    let table = s.ok(&["volume", "ls"]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| {
            l.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(rows[0], ["DRIVER", "VOLUME NAME"], "{table}");
    assert!(rows.contains(&vec!["local", "shared"]), "{table}");
    assert_eq!(
        s.ok(&[
            "volume",
            "ls",
            "--filter",
            "label=app=web",
            "--format",
            "{{.Name}} {{.Driver}}"
        ]),
        "labelled local\n"
    );
    assert!(
        s.fails(&["volume", "create", "bad/name"])
            .contains("invalid characters")
    );
    assert!(
        s.fails(&["volume", "inspect", "nope"])
            .contains("no such volume")
    );
    assert!(
        s.fails(&["volume", "rm", "../x"])
            .contains("no such volume")
    );
    assert!(
        s.fails(&["run", "--rm", "-v", "a/b:/d", s.busybox.as_str(), "true"])
            .contains("invalid characters")
    );
    assert!(!s.h.dir.path().join("run/locks/volume-a").exists());

    s.ok(&["volume", "rm", "shared", "labelled", &random]);
    assert!(s.volumes().is_empty());
    assert!(!s.h.root().join("volumes/shared").exists());
    s.ok(&["volume", "rm", "-f", "gone"]);
    s.finish();
}

#[test]
fn readonly_volume_refuses_writes() {
    let s = Setup::new();
    let bb = s.busybox.as_str();
    s.ok(&["run", "--rm", "-v", "ro:/data", bb, "touch", "/data/ok"]);
    let out = s.run(&[
        "run",
        "--rm",
        "-v",
        "ro:/data:ro",
        bb,
        "sh",
        "-c",
        "echo x > /data/no",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.run(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,src=ro,dst=/data,readonly",
        bb,
        "touch",
        "/data/no",
    ]);
    assert!(!out.status.success());
    assert!(!s.data("ro").join("no").exists());
    assert!(s.data("ro").join("ok").exists());
    // Reading works.
    s.ok(&["run", "--rm", "-v", "ro:/data:ro", bb, "ls", "/data/ok"]);
    // A file bound read-only where the image has nothing: its mount
    // point is made as a file.
    let file = s.h.dir.path().join("motd");
    std::fs::write(&file, "hello file\n").unwrap();
    let spec = format!("{}:/etc/new/motd:ro", file.display());
    assert_eq!(
        s.ok(&["run", "--rm", "-v", &spec, bb, "cat", "/etc/new/motd"]),
        "hello file\n"
    );
    let out = s.run(&[
        "run",
        "--rm",
        "-v",
        &spec,
        bb,
        "sh",
        "-c",
        "echo x > /etc/new/motd",
    ]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hello file\n");
    s.finish();
}

#[test]
fn copy_up_fills_an_empty_volume_once() {
    let s = Setup::new();
    let seed = s.seed.as_str();
    // A fresh named volume over /data (it covers the image's VOLUME: no
    // anonymous one is made).
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "-v",
            "fresh:/data",
            seed,
            "cat",
            "/data/seed"
        ]),
        "seed\n"
    );
    assert_eq!(s.volumes(), ["fresh"]);
    let d = s.data("fresh");
    assert_eq!(std::fs::read_to_string(d.join("seed")).unwrap(), "seed\n");
    let owned = std::fs::metadata(d.join("sub/owned")).unwrap();
    assert_eq!(owned.uid(), 1000);
    assert_eq!(owned.gid(), 1000);
    assert_eq!(owned.permissions().mode() & 0o7777, 0o640);
    let setuid = std::fs::metadata(d.join("sub/setuid")).unwrap();
    assert_eq!(setuid.permissions().mode() & 0o7777, 0o4755);
    let rel = std::fs::symlink_metadata(d.join("rel")).unwrap();
    assert!(rel.file_type().is_symlink());
    assert_eq!(
        std::fs::read_link(d.join("rel")).unwrap(),
        Path::new("seed")
    );
    // The volume's root takes the mode of the image's directory.
    assert_eq!(
        std::fs::metadata(&d).unwrap().permissions().mode() & 0o7777,
        0o755
    );

    // Copied once: emptied, it stays empty in the next container.
    s.ok(&[
        "run",
        "--rm",
        "-v",
        "fresh:/data",
        seed,
        "sh",
        "-c",
        "rm -rf /data/*",
    ]);
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "-v",
            "fresh:/data",
            seed,
            "ls",
            "-A",
            "/data"
        ]),
        ""
    );
    // A volume that has data is never overwritten.
    s.ok(&["volume", "create", "full"]);
    std::fs::write(s.data("full").join("mine"), "mine\n").unwrap();
    assert_eq!(
        s.ok(&["run", "--rm", "-v", "full:/data", seed, "ls", "/data"]),
        "mine\n"
    );
    // nocopy: nothing copied.
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "-v",
            "bare:/data:nocopy",
            seed,
            "ls",
            "-A",
            "/data"
        ]),
        ""
    );

    // The image's VOLUME: an anonymous volume, filled from the image.
    assert_eq!(
        s.ok(&["run", "--name", "anon", seed, "cat", "/data/seed"]),
        "seed\n"
    );
    let c = s.inspect("anon");
    let mounts = c["Mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    let m = &mounts[0];
    assert_eq!(m["Type"], "volume");
    assert_eq!(m["Destination"], "/data");
    let name = m["Name"].as_str().unwrap().to_string();
    assert_eq!(name.len(), 64);
    assert_eq!(m["Source"], s.data(&name).to_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(s.data(&name).join("sub/owned")).unwrap(),
        "owned\n"
    );
    let v: Value = serde_json::from_str(&s.ok(&["volume", "inspect", &name])).unwrap();
    assert_eq!(v[0]["Labels"]["com.docker.volume.anonymous"], "");
    s.finish();
}

#[test]
fn anonymous_volumes_go_with_rm_v_and_run_rm() {
    let s = Setup::new();
    let (bb, seed) = (s.busybox.as_str(), s.seed.as_str());
    // -v /path and --mount without a source: anonymous volumes.
    s.ok(&[
        "run",
        "--name",
        "a",
        "-v",
        "/scratch",
        "--mount",
        "type=volume,target=/other",
        bb,
        "sh",
        "-c",
        "echo x > /scratch/f && echo y > /other/g",
    ]);
    let anon = s.volumes();
    assert_eq!(anon.len(), 2, "{anon:?}");
    // Plain rm keeps them (Docker too).
    s.ok(&["rm", "a"]);
    assert_eq!(s.volumes(), anon);
    s.ok(&["volume", "rm", &anon[0], &anon[1]]);

    // rm -v removes the anonymous one, not the named one.
    s.ok(&["run", "--name", "b", "-v", "keep:/keep", seed, "true"]);
    let vols = s.volumes();
    assert_eq!(vols.len(), 2, "{vols:?}");
    assert!(vols.contains(&"keep".to_string()));
    let anon = vols.iter().find(|v| *v != "keep").unwrap().clone();
    s.ok(&["rm", "-v", "b"]);
    assert_eq!(s.volumes(), ["keep"]);
    assert!(!s.h.root().join("volumes").join(&anon).exists());

    // --rm removes the anonymous volumes of the image's VOLUME too.
    s.ok(&["run", "--rm", "-v", "keep:/keep", seed, "cat", "/data/seed"]);
    assert_eq!(s.volumes(), ["keep"]);
    // Detached --rm: the monitor's cleanup removes them.
    s.ok(&["run", "-d", "--rm", "--name", "d", seed, "true"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while s.volumes() != ["keep"] {
        assert!(std::time::Instant::now() < deadline, "{:?}", s.volumes());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    s.finish();
}

#[test]
fn volume_in_use_is_not_removed() {
    let s = Setup::new();
    let bb = s.busybox.as_str();
    s.ok(&["create", "--name", "holder", "-v", "busy:/data", bb, "true"]);
    s.ok(&[
        "run",
        "-d",
        "--name",
        "runner",
        "-v",
        "live:/data",
        bb,
        "sleep",
        "60",
    ]);
    for name in ["busy", "live"] {
        for args in [vec!["volume", "rm", name], vec!["volume", "rm", "-f", name]] {
            let err = s.fails(&args);
            assert!(err.contains("in use"), "{err}");
            assert!(
                err.contains(if name == "busy" { "holder" } else { "runner" }),
                "{err}"
            );
        }
    }
    // `system df` counts them as active, and an unused one as reclaimable.
    s.ok(&["volume", "create", "spare"]);
    s.ok(&[
        "run",
        "--rm",
        "-v",
        "spare:/d",
        bb,
        "sh",
        "-c",
        "echo 12345678 > /d/f",
    ]);
    let df = s.ok(&["system", "df", "--format", "json"]);
    let row = |kind: &str| -> serde_json::Value {
        df.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|r| r["Type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} row in {df}"))
    };
    let volumes = row("Local Volumes");
    assert_eq!(volumes["TotalCount"], "3", "{df}");
    assert_eq!(volumes["Active"], "2", "{df}");
    assert!(
        volumes["Reclaimable"].as_str().unwrap().starts_with("9B"),
        "{df}"
    );
    let containers = row("Containers");
    assert_eq!(containers["TotalCount"], "2", "{df}");
    assert_eq!(containers["Active"], "1", "{df}");
    s.ok(&["volume", "rm", "spare"]);
    // Prune does not touch them either.
    s.ok(&["volume", "prune", "-f", "-a"]);
    assert_eq!(s.volumes(), ["busy", "live"]);
    s.ok(&["rm", "-f", "holder", "runner"]);
    s.ok(&["volume", "rm", "busy", "live"]);
    assert!(s.volumes().is_empty());
    s.finish();
}

#[test]
fn prune_removes_unused_anonymous_then_all() {
    let s = Setup::new();
    let bb = s.busybox.as_str();
    s.ok(&["volume", "create", "named"]);
    s.ok(&["create", "--name", "gone", "-v", "/a", bb, "true"]);
    s.ok(&["rm", "gone"]);
    let left = s.volumes();
    let unused_anon = left.iter().find(|v| *v != "named").unwrap().clone();
    s.ok(&[
        "create", "--name", "user", "-v", "/b", "-v", "used:/u", bb, "true",
    ]);
    let before = s.volumes();
    assert_eq!(before.len(), 4, "{before:?}");
    std::fs::write(s.data(&unused_anon).join("f"), vec![0u8; 5000]).unwrap();

    // Without -f it asks; no answer (stdin is empty) keeps everything.
    s.ok(&["volume", "prune"]);
    assert_eq!(s.volumes(), before);

    let out = s.ok(&["volume", "prune", "-f"]);
    assert_eq!(
        out,
        format!("Deleted Volumes:\n{unused_anon}\n\nTotal reclaimed space: 5kB\n")
    );
    let mut expect: Vec<String> = before.into_iter().filter(|v| *v != unused_anon).collect();
    assert_eq!(s.volumes(), expect);

    // A directory with no record (a crashed `volume rm`) goes too.
    let orphan = s.h.root().join("volumes/orphan");
    std::fs::create_dir_all(orphan.join("_data")).unwrap();
    let out = s.ok(&["volume", "prune", "-f", "--all"]);
    assert!(!orphan.exists());
    assert_eq!(
        out,
        "Deleted Volumes:\nnamed\n\nTotal reclaimed space: 0B\n"
    );
    expect.retain(|v| v != "named");
    assert_eq!(s.volumes(), expect);
    assert_eq!(
        s.ok(&["volume", "ls", "-q", "--filter", "dangling=true"]),
        ""
    );
    s.ok(&["rm", "-v", "user"]);
    // `used` is named: rm -v keeps it.
    assert_eq!(s.volumes(), ["used"]);
    assert_eq!(
        s.ok(&["volume", "ls", "-q", "--filter", "dangling=true"]),
        "used\n"
    );
    s.finish();
}

#[test]
fn copy_up_never_follows_links_out_of_the_container() {
    let s = Setup::new();
    let evil = s.evil.as_str();
    // Entries that are links to host paths are copied as links.
    s.ok(&["run", "--rm", "-v", "ev:/data", evil, "true"]);
    let d = s.data("ev");
    for (name, target) in [
        ("evil", "/etc/passwd"),
        ("up", "../../../../../../etc/shadow"),
    ] {
        let meta = std::fs::symlink_metadata(d.join(name)).unwrap();
        assert!(meta.file_type().is_symlink(), "{name} was copied as a file");
        assert_eq!(std::fs::read_link(d.join(name)).unwrap(), Path::new(target));
    }
    assert_eq!(std::fs::read_to_string(d.join("plain")).unwrap(), "plain\n");

    // A mount path that is a link to /etc resolves to the container's
    // /etc, not the host's: only busybox's three files are copied.
    for (vol, path) in [("up", "/up"), ("up2", "/up2")] {
        s.ok(&["run", "--rm", "-v", &format!("{vol}:{path}"), evil, "true"]);
        let d = s.data(vol);
        let mut names: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["group", "hostname", "passwd"], "{vol}");
        assert_eq!(
            std::fs::read_to_string(d.join("passwd")).unwrap(),
            BUSYBOX_PASSWD
        );
        assert!(!d.join("shadow").exists());
    }
    s.finish();
}

#[test]
fn parallel_first_use_makes_and_fills_the_volume_once() {
    let s = Setup::new();
    let seed = s.seed.as_str();
    let children: Vec<_> = (0..6)
        .map(|i| {
            s.h.cmd()
                .args(["run", "--rm", "-v", "par:/data", seed, "sh", "-c"])
                .arg(format!("cat /data/seed && echo {i} > /data/$(hostname)"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "seed\n");
    }
    assert_eq!(s.volumes(), ["par"]);
    // The seed, the image's tree, and one file per container: copied once.
    let d = s.data("par");
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 3 + 6);

    // Two mounts on one path are refused, before any volume is made.
    let err = s.fails(&[
        "create",
        "-v",
        "x1:/d",
        "--mount",
        "type=volume,source=x2,target=/d/",
        s.busybox.as_str(),
        "true",
    ]);
    assert!(err.contains("duplicate mount point"), "{err}");
    assert_eq!(s.volumes(), ["par"]);
    s.finish();
}
