//! `hako cp`, `diff`, `export` and `commit` on real containers, running
//! and stopped, from a busybox image pulled from a local registry. Each
//! test has its own `--root`/`--runroot` and ends with nothing left.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// A store with `busybox` pulled from a registry of its own.
type Setup = Busybox;

impl Busybox {
    /// Runs and asserts failure (any code); returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        self.h.refuses(args)
    }

    /// Starts a detached container that runs `script`, then sleeps, and
    /// waits until the script is done (it touches /ready).
    fn running(&self, name: &str, script: &str) {
        let script = format!("{script}\ntouch /ready\nexec sleep 1000");
        self.ok(&[
            "run",
            "-d",
            "--name",
            name,
            &self.image,
            "sh",
            "-c",
            &script,
        ]);
        wait_for("the container's script", || {
            self.run(&["exec", name, "test", "-e", "/ready"])
                .status
                .success()
        });
    }

    /// Removes every container, then checks nothing is left.
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

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// The names and contents (files only) of a tar.
fn tar_entries(bytes: &[u8]) -> Vec<(String, Option<String>)> {
    let mut a = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let data = if e.header().entry_type() == tar::EntryType::Regular {
            let mut b = Vec::new();
            e.read_to_end(&mut b).unwrap();
            Some(String::from_utf8_lossy(&b).into_owned())
        } else {
            None
        };
        out.push((name, data));
    }
    out
}

#[test]
fn cp_files_and_directories_both_ways() {
    let s = Setup::new();
    s.running(
        "c1",
        "mkdir -p /data/sub && echo hello > /data/sub/f && echo top > /data/t && ln -s sub/f /data/lnk && chown 7:8 /data/t",
    );
    let host = tempfile::tempdir().unwrap();
    let h = host.path();

    // A file to a new name, and into an existing directory.
    s.ok(&["cp", "c1:/data/t", h.join("t.txt").to_str().unwrap()]);
    assert_eq!(read(&h.join("t.txt")), "top\n");
    std::fs::create_dir(h.join("into")).unwrap();
    s.ok(&[
        "cp",
        "c1:/data/t",
        &format!("{}/", h.join("into").display()),
    ]);
    assert_eq!(read(&h.join("into/t")), "top\n");
    // Without -a the copy is the copier's; with -a the source's owner.
    assert_eq!(std::fs::metadata(h.join("into/t")).unwrap().uid(), 0);
    s.ok(&["cp", "-a", "c1:/data/t", h.join("owned").to_str().unwrap()]);
    let md = std::fs::metadata(h.join("owned")).unwrap();
    assert_eq!((md.uid(), md.gid()), (7, 8));
    // A file over an existing file.
    std::fs::write(h.join("over"), "old contents, longer\n").unwrap();
    s.ok(&["cp", "c1:/data/t", h.join("over").to_str().unwrap()]);
    assert_eq!(read(&h.join("over")), "top\n");

    // A directory to a new name: the directory itself, links as links.
    s.ok(&["cp", "c1:/data", h.join("d1").to_str().unwrap()]);
    assert_eq!(read(&h.join("d1/sub/f")), "hello\n");
    assert_eq!(
        std::fs::read_link(h.join("d1/lnk")).unwrap(),
        Path::new("sub/f")
    );
    // Into an existing directory: under its own name; with /. its contents.
    std::fs::create_dir(h.join("d2")).unwrap();
    s.ok(&["cp", "c1:/data", h.join("d2").to_str().unwrap()]);
    assert_eq!(read(&h.join("d2/data/t")), "top\n");
    std::fs::create_dir(h.join("d3")).unwrap();
    s.ok(&["cp", "c1:/data/.", h.join("d3").to_str().unwrap()]);
    assert_eq!(read(&h.join("d3/t")), "top\n");
    assert!(!h.join("d3/data").exists());
    // -L copies what a link names.
    s.ok(&[
        "cp",
        "-L",
        "c1:/data/lnk",
        h.join("followed").to_str().unwrap(),
    ]);
    assert_eq!(read(&h.join("followed")), "hello\n");
    s.ok(&[
        "cp",
        "c1:/data/lnk",
        h.join("notfollowed").to_str().unwrap(),
    ]);
    assert!(
        std::fs::symlink_metadata(h.join("notfollowed"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // Errors as Docker gives them.
    s.fails(&["cp", "c1:/nonexistent", h.join("x").to_str().unwrap()]);
    s.fails(&["cp", "c1:/data", h.join("t.txt").to_str().unwrap()]);
    s.fails(&[
        "cp",
        "c1:/data/t",
        &format!("{}/", h.join("nodir").display()),
    ]);

    // Host to container.
    std::fs::write(h.join("up"), "uploaded\n").unwrap();
    std::fs::set_permissions(h.join("up"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(h.join("up"), Some(1234), Some(5678)).unwrap();
    s.ok(&["cp", h.join("up").to_str().unwrap(), "c1:/data/up"]);
    assert_eq!(s.ok(&["exec", "c1", "cat", "/data/up"]), "uploaded\n");
    assert_eq!(
        s.ok(&["exec", "c1", "stat", "-c", "%a %u:%g", "/data/up"]),
        "640 0:0\n"
    );
    s.ok(&["cp", "-a", h.join("up").to_str().unwrap(), "c1:/data/"]);
    assert_eq!(
        s.ok(&["exec", "c1", "stat", "-c", "%u:%g", "/data/up"]),
        "1234:5678\n"
    );
    std::fs::create_dir_all(h.join("tree/inner")).unwrap();
    std::fs::write(h.join("tree/inner/deep"), "deep\n").unwrap();
    s.ok(&["cp", h.join("tree").to_str().unwrap(), "c1:/newtree"]);
    assert_eq!(
        s.ok(&["exec", "c1", "cat", "/newtree/inner/deep"]),
        "deep\n"
    );
    s.ok(&["cp", h.join("tree").to_str().unwrap(), "c1:/data"]);
    assert_eq!(
        s.ok(&["exec", "c1", "cat", "/data/tree/inner/deep"]),
        "deep\n"
    );
    s.ok(&["cp", &format!("{}/.", h.join("tree").display()), "c1:/data"]);
    assert_eq!(s.ok(&["exec", "c1", "cat", "/data/inner/deep"]), "deep\n");

    // Tar streams: out on stdout, in from stdin.
    let out = s.run(&["cp", "c1:/data/sub", "-"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let entries = tar_entries(&out.stdout);
    assert!(
        entries.contains(&("sub/f".into(), Some("hello\n".into()))),
        "{entries:?}"
    );
    let tar = TarBuilder::new()
        .dir("streamed")
        .file("streamed/in", b"from a tar\n")
        .build();
    let out = s.h.with_input(&["cp", "-", "c1:/data"], &tar);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        s.ok(&["exec", "c1", "cat", "/data/streamed/in"]),
        "from a tar\n"
    );

    // A read-only root filesystem takes no copies, running or not.
    s.ok(&["create", "--name", "ro", "--read-only", &s.image, "true"]);
    let err = s.fails(&["cp", h.join("up").to_str().unwrap(), "ro:/tmp/"]);
    assert!(err.to_lowercase().contains("read-only"), "{err}");
    s.ok(&[
        "cp",
        "ro:/etc/passwd",
        h.join("ro-passwd").to_str().unwrap(),
    ]);

    // A stopped container: its filesystem is mounted for the copy only.
    s.ok(&["stop", "-t", "0", "c1"]);
    s.ok(&[
        "cp",
        "c1:/data/streamed/in",
        h.join("from-stopped").to_str().unwrap(),
    ]);
    assert_eq!(read(&h.join("from-stopped")), "from a tar\n");
    s.ok(&[
        "cp",
        h.join("up").to_str().unwrap(),
        "c1:/data/while-stopped",
    ]);
    assert_no_mounts_under(s.h.dir.path());
    s.ok(&["start", "c1"]);
    assert_eq!(
        s.ok(&["exec", "c1", "cat", "/data/while-stopped"]),
        "uploaded\n"
    );
    s.finish();
}

/// As in Docker, `cp` reaches a stopped container's volumes and bind
/// mounts, both ways; a read-only one is refused for writes.
#[test]
fn cp_reaches_a_stopped_containers_volumes() {
    let s = Setup::new();
    let host = tempfile::tempdir().unwrap();
    let bind = format!("{}:/bind", host.path().display());
    s.ok(&[
        "run",
        "--name",
        "vols",
        "-v",
        "data:/data",
        "-v",
        &bind,
        "-v",
        "rodata:/srv/ro:ro",
        &s.image,
        "sh",
        "-c",
        "echo in-volume > /data/a",
    ]);
    let o = tempfile::tempdir().unwrap();
    let out = o.path().join("a");
    s.ok(&["cp", "vols:/data/a", out.to_str().unwrap()]);
    assert_eq!(read(&out), "in-volume\n");

    let file = o.path().join("new");
    std::fs::write(&file, "from the host\n").unwrap();
    let f = file.to_str().unwrap();
    s.ok(&["cp", f, "vols:/data/b"]);
    s.ok(&["cp", f, "vols:/bind/c"]);
    assert_eq!(read(&host.path().join("c")), "from the host\n");
    let err = s.fails(&["cp", f, "vols:/srv/ro/d"]);
    assert!(err.to_lowercase().contains("read-only"), "{err}");
    // What went into the volume is there for the next container.
    let seen = s.ok(&[
        "run",
        "--rm",
        "-v",
        "data:/data",
        &s.image,
        "cat",
        "/data/b",
    ]);
    assert_eq!(seen, "from the host\n");
    s.ok(&["rm", "vols"]);
    s.ok(&["volume", "rm", "data", "rodata"]);
    s.finish();
}

#[test]
fn cp_symlinks_resolve_inside_the_container() {
    let s = Setup::new();
    // A host directory the container's links name.
    let host = tempfile::tempdir().unwrap();
    let secret_dir = host.path().join("secret");
    std::fs::create_dir(&secret_dir).unwrap();
    std::fs::write(secret_dir.join("key"), "host secret\n").unwrap();
    let sd = secret_dir.display().to_string();
    let climb = format!("../../../../../../../../..{sd}");
    s.running(
        "evil",
        &format!(
            "ln -s {sd} /abs && ln -s {climb} /rel && mkdir /data && ln -s / /data/root && ln -s /etc /data/etc"
        ),
    );
    let out_dir = tempfile::tempdir().unwrap();
    let o = out_dir.path();
    for stopped in [false, true] {
        if stopped {
            s.ok(&["stop", "-t", "0", "evil"]);
        }
        // Reading through the links finds nothing: the container has no
        // such directory.
        for src in ["evil:/abs/key", "evil:/rel/key", "evil:/data/root/abs/key"] {
            s.fails(&["cp", src, o.join("leak").to_str().unwrap()]);
            assert!(!o.join("leak").exists(), "{src} was read from the host");
            let out = s.run(&["cp", src, "-"]);
            assert!(!out.status.success());
            assert!(!text(&out.stdout).contains("host secret"));
        }
        s.fails(&["cp", "-L", "evil:/abs", o.join("leak").to_str().unwrap()]);
        assert!(!o.join("leak").exists());
        // Without -L a link is copied as a link, never as what it names.
        s.ok(&["cp", "evil:/abs", o.join("abs").to_str().unwrap()]);
        assert_eq!(std::fs::read_link(o.join("abs")).unwrap(), secret_dir);
        std::fs::remove_file(o.join("abs")).unwrap();
        // A directory holding links to / and /etc: copied as links.
        s.ok(&["cp", "evil:/data", o.join("data").to_str().unwrap()]);
        assert_eq!(
            std::fs::read_link(o.join("data/etc")).unwrap(),
            Path::new("/etc")
        );
        std::fs::remove_dir_all(o.join("data")).unwrap();

        // Writing through the links never lands on the host.
        std::fs::write(o.join("payload"), "pwned\n").unwrap();
        for dst in ["evil:/abs/written", "evil:/rel/written", "evil:/abs/"] {
            s.fails(&["cp", o.join("payload").to_str().unwrap(), dst]);
        }
        // Through /data/root (a link to /) the copy lands in the container.
        s.ok(&[
            "cp",
            o.join("payload").to_str().unwrap(),
            "evil:/data/root/tmp/",
        ]);
        // A hostile tar: a link out, then a file through it; a `..` name.
        let tar = TarBuilder::new()
            .symlink("out", &sd)
            .file("out/written", b"pwned\n")
            .build();
        let out = s.h.with_input(&["cp", "-", "evil:/"], &tar);
        assert!(!out.status.success());
        let tar = TarBuilder::new()
            .raw(
                "../../../../../../../../tmp/hako-cp-escape",
                tar::EntryType::Regular,
                0o644,
                0,
                None,
                b"pwned\n",
            )
            .build();
        let out = s.h.with_input(&["cp", "-", "evil:/tmp"], &tar);
        assert!(!out.status.success());
        assert!(!Path::new("/tmp/hako-cp-escape").exists());
        let left: Vec<_> = std::fs::read_dir(&secret_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("key")],
            "written on the host"
        );
    }
    s.ok(&["start", "evil"]);
    assert_eq!(s.ok(&["exec", "evil", "cat", "/tmp/payload"]), "pwned\n");
    s.finish();
}

#[test]
fn diff_lists_added_changed_and_deleted() {
    let s = Setup::new();
    s.ok(&[
        "run",
        "--name",
        "d",
        &s.image,
        "sh",
        "-c",
        "echo new > /tmp/added && echo more >> /etc/passwd && rm /etc/group && mkdir -p /var/newdir/sub",
    ]);
    let out = s.ok(&["diff", "d"]);
    let lines: Vec<&str> = out.lines().collect();
    for want in [
        "C /etc",
        "C /etc/passwd",
        "D /etc/group",
        "C /tmp",
        "A /tmp/added",
        "C /var",
        "A /var/newdir",
        "A /var/newdir/sub",
    ] {
        assert!(lines.contains(&want), "{want:?} not in:\n{out}");
    }
    let mut sorted = lines.clone();
    sorted.sort_by_key(|l| &l[2..]);
    assert_eq!(lines, sorted, "sorted by path");
    assert!(!out.contains("/bin"), "unchanged paths listed:\n{out}");
    // Mount points the runtime made are not the container's changes.
    assert!(!out.contains("/etc/hosts"), "{out}");
    assert!(!out.contains("/etc/resolv.conf"), "{out}");
    s.ok(&["run", "--name", "nothing", &s.image, "true"]);
    assert_eq!(s.ok(&["diff", "nothing"]), "");
    // The same for a running container.
    s.running("r", "echo x > /root/file");
    let out = s.ok(&["diff", "r"]);
    assert!(out.lines().any(|l| l == "A /root/file"), "{out}");
    assert!(out.lines().any(|l| l == "C /root"), "{out}");
    s.finish();
}

#[test]
fn export_has_the_containers_files() {
    let s = Setup::new();
    s.ok(&[
        "run",
        "--name",
        "e",
        &s.image,
        "sh",
        "-c",
        "echo exported > /etc/exp && rm /etc/group",
    ]);
    let file = s.h.dir.path().join("e.tar");
    s.ok(&["export", "-o", file.to_str().unwrap(), "e"]);
    let entries = tar_entries(&std::fs::read(&file).unwrap());
    assert!(
        entries.contains(&("etc/exp".into(), Some("exported\n".into()))),
        "{entries:?}"
    );
    assert!(entries.iter().any(|(n, _)| n == "bin/busybox"));
    assert!(!entries.iter().any(|(n, _)| n == "etc/group"));
    assert_no_mounts_under(s.h.dir.path());
    // To stdout, from a running container.
    s.running("r", "echo live > /live");
    let out = s.run(&["export", "r"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let entries = tar_entries(&out.stdout);
    assert!(entries.contains(&("live".into(), Some("live\n".into()))));
    s.finish();
}

#[test]
fn commit_makes_an_image_that_runs() {
    let s = Setup::new();
    s.ok(&[
        "run",
        "--name",
        "c",
        &s.image,
        "sh",
        "-c",
        "mkdir -p /the && echo committed > /the/file && rm /etc/group",
    ]);
    let id = s.ok(&[
        "commit",
        "-m",
        "add a file",
        "-a",
        "Tester <t@example.com>",
        "-c",
        r#"CMD ["cat", "/the/file"]"#,
        "-c",
        "ENV ADDED=yes",
        "-c",
        "WORKDIR /the",
        "c",
        "made:v1",
    ]);
    let id = id.trim();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    // The new CMD, and the file, and the deletion.
    assert_eq!(s.ok(&["run", "--rm", "made:v1"]), "committed\n");
    assert_eq!(
        s.ok(&["run", "--rm", "made:v1", "cat", "/the/file"]),
        "committed\n"
    );
    assert_eq!(
        s.ok(&[
            "run",
            "--rm",
            "made:v1",
            "sh",
            "-c",
            "echo $ADDED $FROM_IMAGE; pwd; test -e /etc/group || echo gone"
        ]),
        "yes 1\n/the\ngone\n"
    );
    let img: serde_json::Value =
        serde_json::from_str(&s.ok(&["image", "inspect", "made:v1"])).unwrap();
    let text_of = img.to_string();
    assert!(text_of.contains("add a file"), "{text_of}");
    assert!(text_of.contains("Tester"), "{text_of}");
    // By id too, with ENTRYPOINT and USER.
    let id2 = s.ok(&[
        "commit",
        "-c",
        r#"ENTRYPOINT ["echo", "entry"]"#,
        "-c",
        "USER nobody",
        "c",
    ]);
    let id2 = id2.trim();
    assert_eq!(s.ok(&["run", "--rm", id2, "arg"]), "entry arg\n");
    assert_eq!(
        s.ok(&["run", "--rm", "--entrypoint", "whoami", id2]),
        "nobody\n"
    );

    assert_eq!(img[0]["RootFS"]["Layers"].as_array().unwrap().len(), 2);
    // No changes but the runtime's mount points: no layer, as in Docker.
    s.ok(&["run", "--name", "same", &s.image, "true"]);
    s.ok(&["commit", "same", "made:same"]);
    let same: serde_json::Value =
        serde_json::from_str(&s.ok(&["image", "inspect", "made:same"])).unwrap();
    assert_eq!(same[0]["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    assert_eq!(s.ok(&["run", "--rm", "made:same", "echo", "ok"]), "ok\n");

    // A running container: paused during the commit, running after.
    s.running("live", "echo running > /state");
    s.ok(&["commit", "live", "made:live"]);
    let info: serde_json::Value =
        serde_json::from_str(&s.ok(&["container", "inspect", "live"])).unwrap();
    assert_eq!(info[0]["State"]["Status"], "running");
    assert_eq!(
        s.ok(&["run", "--rm", "made:live", "cat", "/state"]),
        "running\n"
    );
    s.ok(&["commit", "--pause=false", "live", "made:live2"]);
    assert_eq!(
        s.ok(&["run", "--rm", "made:live2", "cat", "/state"]),
        "running\n"
    );
    s.finish();
}
