//! `hako` image verbs against a real registry (Debian's docker-registry,
//! started per test on a loopback port) holding images the fixtures build:
//! pull by tag and digest, platforms, zstd, hostile layers, corrupt blobs,
//! concurrent and killed pulls, push, archives with skopeo, import, tags,
//! removal and garbage collection, login, disk usage.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

use hako_image::Store;
use hako_image::snapshot::Snapshotter;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn push(reg: &Registry, img: BuiltImage, name: &str) -> String {
    let tag = name
        .rsplit_once(':')
        .map_or("latest", |(_, t)| t)
        .to_string();
    let dest = reg.image(name);
    img.into_layout(&tag).push(&tag, &dest);
    dest
}

/// The image's final tree, as a container would see it: an overlay of its
/// layers mounted on a temp dir for `check`, then taken down.
fn with_rootfs(h: &Hako, image: &str, snapshotter: Snapshotter, check: impl FnOnce(&Path)) {
    let store = Store::open(&h.root()).unwrap();
    let img = store.resolve(image).unwrap();
    let name = format!("t{}", std::process::id());
    let snap = store
        .create_snapshot(&name, &img.chain_ids(), Some(&img.id), snapshotter)
        .unwrap();
    let target = h.dir.path().join("mnt");
    std::fs::create_dir_all(&target).unwrap();
    snap.mount(&store, &target).unwrap();
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&target)));
    hako_image::snapshot::unmount(&target).unwrap();
    store.remove_snapshot(&name).unwrap();
    if let Err(p) = res {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn pull_by_tag_and_digest_then_list_and_inspect() {
    let reg = Registry::start();
    let img = busybox_image();
    let (manifest_digest, config_digest) = (img.manifest_digest.clone(), img.config_digest.clone());
    // Pushed by skopeo: hako pulls what another tool wrote.
    let name = reg.image("tools/busybox:1");
    let layout = img.into_layout("1");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:1", layout.dir().display()),
        &format!("docker://{name}"),
    ]);
    let h = Hako::new();

    let out = h.ok(&["pull", &name]);
    assert!(out.contains(&format!("Digest: {manifest_digest}")), "{out}");
    assert!(out.contains("Status: Downloaded newer image"), "{out}");
    assert!(out.trim_end().ends_with(&name), "{out}");
    let again = h.ok(&["pull", &name]);
    assert!(again.contains("Status: Image is up to date"), "{again}");
    let by_digest = format!("{}@{manifest_digest}", name.rsplit_once(':').unwrap().0);
    h.ok(&["pull", "-q", &by_digest]);
    assert_eq!(h.image_ids(), std::slice::from_ref(&config_digest));

    // The layer is unpacked: busybox itself, byte for byte.
    with_rootfs(&h, &name, Snapshotter::Overlay, |root| {
        assert_eq!(
            std::fs::read(root.join("bin/busybox")).unwrap(),
            std::fs::read("/bin/busybox").unwrap()
        );
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
    });

    // Unpacked layers (setuid files, devices) are for root alone.
    for d in ["layers", "snapshots"] {
        let mode = std::fs::metadata(h.root().join(d)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700, "{d}");
    }
    let short = &config_digest["sha256:".len().."sha256:".len() + 12];
    assert_eq!(h.ok(&["images", "-q"]).trim(), short);
    let table = h.ok(&["images", "--digests"]);
    assert!(table.starts_with("REPOSITORY"), "{table}");
    assert!(table.contains(&manifest_digest), "{table}");
    let repo = name.rsplit_once(':').unwrap().0;
    let formatted = h.ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
    assert_eq!(formatted.trim(), format!("{repo}:1 {short}"));
    let inspect: serde_json::Value =
        serde_json::from_str(&h.ok(&["image", "inspect", &name])).unwrap();
    assert_eq!(inspect[0]["Id"], config_digest.as_str());
    assert_eq!(inspect[0]["Os"], "linux");
    assert_eq!(inspect[0]["Config"]["Cmd"][0], "sh");
    assert_eq!(
        inspect[0]["RepoDigests"][0],
        format!("{repo}@{manifest_digest}")
    );
    assert_eq!(
        h.ok(&["inspect", "--format", "{{.Architecture}}", short])
            .trim(),
        host_arch()
    );
    let missing = h.fails(&["pull", &reg.image("tools/busybox:nope")]);
    assert!(missing.contains("nope"), "{missing}");
    h.assert_consistent();
}

#[test]
fn layers_apply_whiteouts_opaque_dirs_hard_links_and_long_names() {
    let reg = Registry::start();
    let name = push(&reg, layered_image(), "layered:latest");
    let h = Hako::new();
    h.ok(&["pull", "-q", &name]);
    assert_eq!(
        h.entries("layers")
            .iter()
            .filter(|e| !e.starts_with('.'))
            .count(),
        5
    );
    for snapshotter in [Snapshotter::Overlay, Snapshotter::Copy] {
        with_rootfs(&h, &name, snapshotter, |root| {
            let d = root.join("data");
            assert_eq!(std::fs::read_to_string(d.join("keep")).unwrap(), "keep\n");
            assert_eq!(
                std::fs::metadata(d.join("keep")).unwrap().ino(),
                std::fs::metadata(d.join("link")).unwrap().ino(),
                "{snapshotter:?}: link is a hard link to keep"
            );
            assert!(
                !d.join("gone").exists(),
                "{snapshotter:?}: gone is whited out"
            );
            let dir: Vec<_> = std::fs::read_dir(d.join("dir"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(dir, ["new"], "{snapshotter:?}: the opaque dir hides old");
            assert_eq!(
                std::fs::read_to_string(d.join("replaced")).unwrap(),
                "second\n"
            );
            assert_eq!(
                std::fs::read_to_string(d.join("x".repeat(150))).unwrap(),
                "long\n"
            );
            assert_eq!(
                std::fs::read_link(d.join("sym")).unwrap(),
                Path::new("keep")
            );
            let m = std::fs::metadata(d.join("mode")).unwrap();
            assert_eq!((m.mode() & 0o7777, m.uid()), (0o750, 1000));
            assert!(root.join("bin/busybox").exists());
        });
    }
    h.assert_consistent();
}

#[test]
fn manifest_lists_resolve_to_the_host_or_the_asked_platform() {
    let reg = Registry::start();
    let dest = reg.image("multi:1");
    let layout = multi_platform_layout("1", &[(host_arch(), None), ("arm64", Some("v8"))]);
    layout.push("1", &dest);

    let h = Hako::new();
    h.ok(&["pull", &dest]);
    with_rootfs(&h, &dest, Snapshotter::Overlay, |root| {
        assert_eq!(
            std::fs::read_to_string(root.join("platform")).unwrap(),
            format!("linux/{}\n", host_arch())
        );
    });

    let arm = Hako::new();
    arm.ok(&["pull", "--platform", "linux/arm64", &dest]);
    assert_eq!(
        arm.ok(&["inspect", "--format", "{{.Architecture}}", &dest])
            .trim(),
        "arm64"
    );
    with_rootfs(&arm, &dest, Snapshotter::Overlay, |root| {
        assert_eq!(
            std::fs::read_to_string(root.join("platform")).unwrap(),
            "linux/arm64/v8\n"
        );
    });

    let none = Hako::new();
    let err = none.fails(&["pull", "--platform", "linux/s390x", &dest]);
    assert!(err.contains("s390x") && err.contains("arm64"), "{err}");
    assert!(none.image_ids().is_empty());
}

#[test]
fn zstd_and_uncompressed_layers() {
    let reg = Registry::start();
    let name = push(&reg, zstd_image(), "zstd:1");
    let h = Hako::new();
    h.ok(&["pull", "-q", &name]);
    with_rootfs(&h, &name, Snapshotter::Overlay, |root| {
        assert!(root.join("bin/busybox").is_file());
    });
}

/// A directory outside every store that hostile layers aim at.
struct Sentinel {
    dir: tempfile::TempDir,
}

impl Sentinel {
    fn new() -> Sentinel {
        let dir = tempfile::Builder::new()
            .prefix("hako-sentinel-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("victim"), "original\n").unwrap();
        Sentinel { dir }
    }

    fn path(&self) -> String {
        self.dir.path().to_string_lossy().into_owned()
    }

    fn assert_untouched(&self) {
        let names: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["victim"], "the host dir was written to");
        let victim = self.dir.path().join("victim");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "original\n");
        assert_eq!(std::fs::metadata(&victim).unwrap().nlink(), 1);
    }
}

#[test]
fn hostile_layers_are_refused_and_touch_nothing() {
    let reg = Registry::start();
    let s = Sentinel::new();
    let sp = s.path();
    let depth = "../".repeat(20);
    let passwd_links = std::fs::metadata("/etc/passwd").unwrap().nlink();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "climb",
            TarBuilder::new()
                .file(&format!("{depth}{}/pwned", &sp[1..]), b"x")
                .build(),
        ),
        (
            "symlinked-dir",
            TarBuilder::new()
                .symlink("evil", &sp)
                .file("evil/pwned", b"x")
                .build(),
        ),
        (
            "symlinked-dir-overwrite",
            TarBuilder::new()
                .symlink("evil", &sp)
                .file("evil/victim", b"changed\n")
                .build(),
        ),
        (
            "hardlink-absolute",
            TarBuilder::new()
                .hardlink("pw", &format!("{sp}/victim"))
                .build(),
        ),
        (
            "hardlink-climb",
            TarBuilder::new()
                .hardlink("pw", &format!("{depth}{}/victim", &sp[1..]))
                .build(),
        ),
        (
            "hardlink-through-symlink",
            TarBuilder::new()
                .symlink("evil", &sp)
                .hardlink("pw", "evil/victim")
                .build(),
        ),
        (
            "whiteout-climb",
            TarBuilder::new()
                .file(&format!("{depth}{}/.wh.victim", &sp[1..]), b"")
                .build(),
        ),
        (
            "whiteout-through-symlink",
            TarBuilder::new()
                .symlink("evil", &sp)
                .file("evil/.wh.victim", b"")
                .build(),
        ),
    ];
    for (case, tar) in cases {
        let name = push(
            &reg,
            ImageBuilder::new().layer(tar, Compression::Gzip).build(),
            &format!("hostile-{case}:1"),
        );
        let h = Hako::new();
        let err = h.fails(&["pull", &name]);
        assert!(err.starts_with("Error: "), "{case}: {err}");
        assert!(err.contains("layer"), "{case}: {err}");
        s.assert_untouched();
        assert!(h.image_ids().is_empty(), "{case}: an image was recorded");
        assert!(
            h.entries("layers").is_empty(),
            "{case}: layers kept: {:?}",
            h.entries("layers")
        );
        assert!(h.entries("ingest").is_empty(), "{case}: download kept");
        h.assert_consistent();
    }
    assert_eq!(
        std::fs::metadata("/etc/passwd").unwrap().nlink(),
        passwd_links
    );

    // Absolute names are taken relative to the layer, as Docker does.
    let name = push(
        &reg,
        ImageBuilder::new()
            .layer(
                TarBuilder::new()
                    .file(&format!("{sp}/abs"), b"inside\n")
                    .build(),
                Compression::Gzip,
            )
            .build(),
        "absolute:1",
    );
    let h = Hako::new();
    h.ok(&["pull", "-q", &name]);
    s.assert_untouched();
    with_rootfs(&h, &name, Snapshotter::Overlay, |root| {
        assert_eq!(
            std::fs::read_to_string(root.join(&sp[1..]).join("abs")).unwrap(),
            "inside\n"
        );
    });
}

#[test]
fn corrupt_blobs_and_wrong_diff_ids_are_refused() {
    let reg = Registry::start();
    // A blob whose bytes no longer match its digest: changed in the
    // registry's storage after the push.
    let img = busybox_image();
    let layer = img.layer_digests[0].clone();
    let name = push(&reg, img, "corrupt:1");
    let data = reg
        .storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&layer["sha256:".len().."sha256:".len() + 2])
        .join(&layer["sha256:".len()..])
        .join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let h = Hako::new();
    let err = h.fails(&["pull", &name]);
    assert!(err.contains(&layer[..19]), "{err}");
    assert!(h.image_ids().is_empty());
    assert!(h.entries("layers").is_empty());
    assert!(!h.entries("blobs/sha256").contains(&layer[7..].to_string()));
    h.assert_consistent();

    // A layer that does not unpack to its config's diff id.
    let mut img = busybox_image();
    let mut cfg: serde_json::Value = serde_json::from_slice(&img.config).unwrap();
    cfg["rootfs"]["diff_ids"][0] = format!("sha256:{}", "0".repeat(64)).into();
    img = rebuild_with_config(img, &cfg);
    let name = push(&reg, img, "wrongdiff:1");
    let err = h.fails(&["pull", &name]);
    assert!(err.contains("diff"), "{err}");
    assert!(h.image_ids().is_empty());
    assert!(h.entries("layers").is_empty());
    h.assert_consistent();
}

/// The same image with another config (and so another manifest).
fn rebuild_with_config(mut img: BuiltImage, cfg: &serde_json::Value) -> BuiltImage {
    img.config = serde_json::to_vec(cfg).unwrap();
    img.config_digest = sha256(&img.config);
    let mut m: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
    m["config"]["digest"] = img.config_digest.clone().into();
    m["config"]["size"] = img.config.len().into();
    img.manifest = serde_json::to_vec(&m).unwrap();
    img.manifest_digest = sha256(&img.manifest);
    img
}

#[test]
fn concurrent_pulls_of_one_image_share_the_store() {
    let reg = Registry::start();
    let img = layered_image();
    let config = img.config_digest.clone();
    let blobs: Vec<String> = img.layer_digests.clone();
    let name = push(&reg, img, "shared:1");
    // busybox alone shares the bottom layer.
    let base_config = busybox_image().config_digest;
    let base = push(&reg, busybox_image(), "base:1");
    let h = Hako::new();
    let names: Vec<&String> = [&name, &name, &base, &name, &base, &name].to_vec();
    let mut children: Vec<_> = names
        .iter()
        .map(|n| {
            h.cmd()
                .args(["pull", "-q", n])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // A deadlock between the pulls fails the test instead of hanging it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while children.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
        if std::time::Instant::now() > deadline {
            for c in &mut children {
                let _ = c.kill();
                let _ = c.wait();
            }
            panic!("concurrent pulls still running after 120 s: a deadlock");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for c in children {
        let out = c.wait_with_output().unwrap();
        ok(&out, &["pull", "-q", "(concurrent)"]);
    }
    let mut both = vec![config.clone(), base_config];
    both.sort();
    assert_eq!(h.image_ids(), both);
    h.ok(&["rmi", &base]);
    assert_eq!(h.image_ids(), [config]);
    let layers: Vec<_> = h
        .entries("layers")
        .into_iter()
        .filter(|e| !e.starts_with('.'))
        .collect();
    assert_eq!(layers.len(), 5, "{layers:?}");
    let stored = h.entries("blobs/sha256");
    for b in &blobs {
        assert!(stored.contains(&b[7..].to_string()), "{b} not stored");
    }
    assert!(h.entries("ingest").is_empty(), "{:?}", h.entries("ingest"));
    h.assert_consistent();
    with_rootfs(&h, &name, Snapshotter::Overlay, |root| {
        assert_eq!(
            std::fs::read_to_string(root.join("data/replaced")).unwrap(),
            "second\n"
        );
    });
}

/// A loopback TCP proxy that passes on at most `rate` bytes a second, so
/// that a pull takes long enough to be killed in the middle.
struct SlowProxy {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SlowProxy {
    fn start(upstream: u16, rate: usize) -> SlowProxy {
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_in, &mut s_out);
                    let _ = s_out.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_in, mut c_out) = (server, client);
                let f = flag.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; rate / 20];
                    loop {
                        if f.load(Ordering::Relaxed) {
                            break;
                        }
                        match s_in.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if c_out.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        SlowProxy { port, stop }
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn a_pull_killed_midway_leaves_no_image_and_the_next_one_completes() {
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(busybox_layer(), Compression::Gzip)
        .layer(big_layer(24 << 20), Compression::Gzip)
        .build();
    let config = img.config_digest.clone();
    let big = img.layer_digests[1].clone();
    push(&reg, img, "big:1");
    let proxy = SlowProxy::start(reg.port(), 8 << 20);
    let name = format!("127.0.0.1:{}/big:1", proxy.port);
    let h = Hako::new();
    let mut child = h
        .cmd()
        .args(["pull", "-q", &name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let partial = h
        .root()
        .join("ingest")
        .join(format!("{}.partial", &big[7..]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) < (2 << 20) {
        assert!(
            std::time::Instant::now() < deadline,
            "the pull never got going"
        );
        assert!(child.try_wait().unwrap().is_none(), "the pull ended early");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(kept >= 2 << 20);
    assert!(h.image_ids().is_empty(), "a killed pull recorded an image");
    assert!(!h.entries("blobs/sha256").contains(&big[7..].to_string()));

    // The next pull resumes the download and completes.
    let out = h.ok(&["pull", &name]);
    assert!(out.contains("Downloaded newer image"), "{out}");
    assert_eq!(h.image_ids(), [config]);
    assert!(h.entries("blobs/sha256").contains(&big[7..].to_string()));
    assert!(!partial.exists());
    h.assert_consistent();
    drop(proxy);
}

#[test]
fn push_then_pull_back_with_mounts_and_chunks() {
    let src = Registry::start();
    let dst = Registry::start();
    let img = layered_image();
    let (config, manifest) = (img.config_digest.clone(), img.manifest_digest.clone());
    let name = push(&src, img, "app:1");
    let h = Hako::new();
    h.ok(&["pull", "-q", &name]);

    let target = dst.image("team/app:2");
    let out = h.ok(&["push", &name, &target]);
    assert!(out.contains(": Pushed"), "{out}");
    assert!(out.contains(&format!("2: digest: {manifest}")), "{out}");
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]);
    assert_eq!(
        sha256(raw.as_bytes()),
        manifest,
        "the manifest went as it was"
    );
    // Pushing again: every layer is there already.
    h.ok(&["tag", &name, &target]);
    let again = h.ok(&["push", &target]);
    assert!(again.contains("Layer already exists"), "{again}");
    // Another repository of the same registry: blobs are mounted.
    let other = dst.image("other/app:3");
    h.ok(&["tag", &name, &other]);
    let mounted = h.ok(&["push", &other]);
    assert!(mounted.contains("Mounted from team/app"), "{mounted}");
    // Chunked uploads to a third.
    let chunked = dst.image("chunked:1");
    h.ok(&["tag", &name, &chunked]);
    h.ok(&["push", "--chunk-size", "65536", &chunked]);

    for pulled in [&target, &other, &chunked] {
        let fresh = Hako::new();
        fresh.ok(&["pull", "-q", pulled]);
        assert_eq!(fresh.image_ids(), std::slice::from_ref(&config));
    }
    // skopeo reads what hako pushed.
    let cfg = skopeo(&[
        "inspect",
        "--config",
        "--tls-verify=false",
        &format!("docker://{chunked}"),
    ]);
    assert!(cfg.contains("\"diff_ids\""), "{cfg}");
}

#[test]
fn archives_round_trip_and_interoperate_with_skopeo() {
    let reg = Registry::start();
    let img = layered_image();
    let config = img.config_digest.clone();
    let name = push(&reg, img, "arch:1");
    let h = Hako::new();
    h.ok(&["pull", "-q", &name]);
    let dir = h.dir.path();

    // hako save → hako load (both formats), and skopeo reads them.
    for (format, transport) in [
        ("docker-archive", "docker-archive"),
        ("oci-archive", "oci-archive"),
    ] {
        let file = dir.join(format!("{format}.tar"));
        h.ok(&[
            "save",
            "--format",
            format,
            "-o",
            file.to_str().unwrap(),
            &name,
        ]);
        let other = Hako::new();
        let out = other.ok(&["load", "-i", file.to_str().unwrap()]);
        assert!(out.contains(&format!("Loaded image: {name}")), "{out}");
        assert_eq!(other.image_ids(), std::slice::from_ref(&config));
        with_rootfs(&other, &name, Snapshotter::Overlay, |root| {
            assert!(!root.join("data/gone").exists());
            assert_eq!(
                std::fs::read_to_string(root.join("data/replaced")).unwrap(),
                "second\n"
            );
        });
        let out_dir = dir.join(format!("{format}-oci"));
        skopeo(&[
            "copy",
            &format!("{transport}:{}", file.display()),
            &format!("oci:{}:x", out_dir.display()),
        ]);
        let seen = skopeo(&[
            "inspect",
            "--config",
            &format!("oci:{}:x", out_dir.display()),
        ]);
        assert!(seen.contains("\"diff_ids\""), "{seen}");
    }

    // skopeo save → hako load, both formats (docker archives cannot hold
    // zstd layers, so this image has gzip ones only).
    let name = push(&reg, busybox_image(), "plain:1");
    for transport in ["docker-archive", "oci-archive"] {
        let file = dir.join(format!("skopeo-{transport}.tar"));
        let dest = format!("{transport}:{}:{name}", file.display());
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{name}"),
            &dest,
        ]);
        let other = Hako::new();
        let out = other.ok(&["load", "-i", file.to_str().unwrap()]);
        assert!(out.contains("Loaded image"), "{transport}: {out}");
        with_rootfs(&other, &name, Snapshotter::Overlay, |root| {
            assert!(root.join("bin/busybox").is_file());
        });
    }

    // A truncated archive is an error that keeps nothing.
    let file = dir.join("docker-archive.tar");
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.join("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let other = Hako::new();
    other.fails(&["load", "-i", cut.to_str().unwrap()]);
    assert!(other.image_ids().is_empty());
    other.assert_consistent();
}

/// podman with a store of its own in a short temp dir (podman refuses a
/// runroot path longer than 50 characters).
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        Podman {
            dir: tempfile::Builder::new()
                .prefix("hkpm")
                .tempdir_in("/tmp")
                .unwrap(),
        }
    }

    /// podman on this store.
    fn cmd(&self) -> std::process::Command {
        let d = self.dir.path();
        let mut c = std::process::Command::new("podman");
        c.arg("--root")
            .arg(d.join("r"))
            .arg("--runroot")
            .arg(d.join("rr"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"]);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        stdout_of(self.cmd().args(args))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd().args(["system", "reset", "-f"]).output();
    }
}

#[test]
fn archives_interoperate_with_podman() {
    let reg = Registry::start();
    let img = busybox_image();
    let config = img.config_digest.clone();
    let name = push(&reg, img, "pm:1");
    let h = Hako::new();
    h.ok(&["pull", "-q", &name]);
    let file = h.dir.path().join("hako-save.tar");
    h.ok(&["save", "-o", file.to_str().unwrap(), &name]);

    // podman loads what hako saved, and names it the same.
    let pm = Podman::new();
    pm.run(&["load", "-q", "-i", file.to_str().unwrap()]);
    let ids = pm.run(&["images", "-q", "--no-trunc"]);
    assert!(ids.contains(&config[7..]), "{ids}");
    let names = pm.run(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(names.contains(&name), "{names}");

    // hako loads what podman saved, in both formats.
    for format in ["docker-archive", "oci-archive"] {
        let out_file = pm.dir.path().join(format!("{format}.tar"));
        pm.run(&[
            "save",
            "-q",
            "--format",
            format,
            "-o",
            out_file.to_str().unwrap(),
            &name,
        ]);
        let other = Hako::new();
        let out = other.ok(&["load", "-i", out_file.to_str().unwrap()]);
        assert!(out.contains("Loaded image"), "{format}: {out}");
        with_rootfs(&other, &name, Snapshotter::Overlay, |root| {
            assert!(root.join("bin/busybox").is_file(), "{format}");
        });
    }
}

#[test]
fn import_makes_an_image_from_a_rootfs_tarball() {
    let h = Hako::new();
    let tar = h.dir.path().join("rootfs.tar");
    std::fs::write(&tar, busybox_layer()).unwrap();
    let out = h.ok(&["import", tar.to_str().unwrap(), "imported:1"]);
    let id = out.trim();
    assert!(id.starts_with("sha256:"), "{out}");
    assert_eq!(h.image_ids(), [id.to_string()]);
    let listed = h.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(listed.trim(), "imported:1");
    with_rootfs(&h, "imported:1", Snapshotter::Overlay, |root| {
        assert!(root.join("bin/busybox").is_file());
    });
}

#[test]
fn tags_removal_prune_and_garbage_collection() {
    let reg = Registry::start();
    let a = push(&reg, busybox_image(), "a:1");
    let b = push(&reg, layered_image(), "b:1");
    let h = Hako::new();
    h.ok(&["pull", "-q", &a]);
    h.ok(&["pull", "-q", &b]);
    h.ok(&["tag", &a, "local/alias:2"]);
    let listed = h.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(listed.contains("local/alias:2"), "{listed}");

    // Two tags: rmi of one only untags.
    let out = h.ok(&["rmi", "local/alias:2"]);
    assert!(out.contains("Untagged: local/alias:2"), "{out}");
    assert!(!out.contains("Deleted"), "{out}");
    assert_eq!(h.image_ids().len(), 2);
    let err = h.fails(&["rmi", "no-such-image:1"]);
    assert!(err.contains("no-such-image"), "{err}");

    let out = h.ok(&["rmi", &a]);
    assert!(out.contains("Deleted: sha256:"), "{out}");
    assert_eq!(h.image_ids().len(), 1);
    // busybox's layer is shared with b, so it stays.
    assert_eq!(
        h.entries("layers")
            .iter()
            .filter(|e| !e.starts_with('.'))
            .count(),
        5
    );

    let df = h.ok(&["system", "df"]);
    assert!(df.starts_with("TYPE"), "{df}");
    assert!(df.contains("Images"), "{df}");

    h.ok(&["tag", &b, "keep:1"]);
    h.ok(&["rmi", &b]);
    let out = h.ok(&["image", "prune", "-a", "-f"]);
    assert!(out.contains("Total reclaimed space"), "{out}");
    assert!(h.image_ids().is_empty());
    assert!(
        h.entries("layers")
            .iter()
            .all(|e| e.starts_with('.') && !e.starts_with(".tmp")),
        "{:?}",
        h.entries("layers")
    );
    assert!(
        h.entries("blobs/sha256").is_empty(),
        "{:?}",
        h.entries("blobs/sha256")
    );
    h.assert_consistent();
}

#[test]
fn login_and_logout_with_basic_auth() {
    let reg = Registry::with_basic_auth("alice", "s3cret");
    // skopeo pushes with the credentials.
    let img = busybox_image();
    let tag = "1";
    let layout = img.into_layout(tag);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        "alice:s3cret",
        &format!("oci:{}:{tag}", layout.dir().display()),
        &format!("docker://{}", reg.image("private:1")),
    ]);
    let h = Hako::new();
    let name = reg.image("private:1");
    let err = h.fails(&["pull", &name]);
    assert!(err.contains("login"), "{err}");

    let host = reg.host();
    let bad = h
        .cmd()
        .args(["login", "-u", "alice", "--password-stdin", &host])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = feed(bad, "wrong\n");
    assert!(!out.status.success());
    let good = h
        .cmd()
        .args(["login", "-u", "alice", "--password-stdin", &host])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = feed(good, "s3cret\n");
    assert!(
        String::from_utf8_lossy(&ok(&out, &["login"]).into_bytes()).contains("Login Succeeded")
    );
    let stored = std::fs::read_to_string(h.auth_file()).unwrap();
    assert!(stored.contains(&host), "{stored}");
    assert_eq!(
        std::fs::metadata(h.auth_file()).unwrap().mode() & 0o777,
        0o600
    );
    h.ok(&["pull", "-q", &name]);

    let out = h.ok(&["logout", &host]);
    assert!(out.contains("Removing login credentials"), "{out}");
    let fresh = Hako::new();
    std::fs::copy(h.auth_file(), fresh.auth_file()).unwrap();
    assert!(fresh.fails(&["pull", &name]).contains("login"));

    // Credentials from Docker's config.json work too.
    let auth = base64_encode(b"alice:s3cret");
    std::fs::write(
        fresh.dir.path().join("docker/config.json"),
        format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    fresh.ok(&["pull", "-q", &name]);
}

fn feed(mut child: std::process::Child, input: &str) -> std::process::Output {
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn a_debian_minbase_image_pulls_whole() {
    let reg = Registry::start();
    let name = push(&reg, debian_minbase_image(), "debian:bookworm");
    let h = Hako::new();
    h.ok(&["pull", "-q", &name]);
    with_rootfs(&h, &name, Snapshotter::Overlay, |root| {
        assert!(
            std::fs::read_to_string(root.join("etc/debian_version"))
                .unwrap()
                .starts_with("12")
        );
        assert!(root.join("usr/bin/bash").is_file());
        // Setuid bits and owners survive.
        let su = std::fs::metadata(root.join("usr/bin/su")).unwrap();
        assert_eq!(su.mode() & 0o4000, 0o4000);
    });
    h.assert_consistent();
}

/// A tmpfs mounted for the test, unmounted however the test ends.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "hako-test"])
            .arg(path)
            .status()
            .unwrap();
        assert!(st.success(), "mount a tmpfs on {}", path.display());
        SmallDisk {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_full_disk_fails_the_pull_cleanly_and_keeps_the_store_usable() {
    let reg = Registry::start();
    let big = push(
        &reg,
        ImageBuilder::new()
            .layer(busybox_layer(), Compression::Gzip)
            .layer(big_layer(24 << 20), Compression::Gzip)
            .build(),
        "huge:1",
    );
    let small = push(&reg, busybox_image(), "small:1");
    let h = Hako::new();
    let disk = SmallDisk::mount(&h.root(), "20m");
    let err = h.fails(&["pull", &big]);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(h.image_ids().is_empty());
    assert!(h.entries("ingest").is_empty(), "{:?}", h.entries("ingest"));
    for e in h.entries("layers") {
        assert!(!e.starts_with(".tmp"), "staging dir {e} left");
    }
    // What failed took its space with it: a smaller image still fits.
    h.ok(&["pull", "-q", &small]);
    assert_eq!(h.image_ids().len(), 1);
    drop(disk);
    assert_no_mounts_under(h.dir.path());
}

#[test]
fn pull_progress_is_plain_lines_off_a_terminal_and_bars_on_one() {
    let reg = Registry::start();
    let name = push(&reg, layered_image(), "progress:1");
    let h = Hako::new();
    let plain = h.ok(&["pull", &name]);
    assert!(plain.contains(": Pulling from progress"), "{plain}");
    assert_eq!(plain.matches(": Pull complete").count(), 5, "{plain}");
    assert_eq!(plain.matches(": Download complete").count(), 5, "{plain}");
    assert!(
        !plain.contains('\x1b'),
        "escape codes off a terminal: {plain:?}"
    );

    // On a terminal (script(1) gives the command a pty).
    let tty = Hako::new();
    let cmd = format!(
        "{} --root {} --runroot {} pull {name}",
        env!("CARGO_BIN_EXE_hako"),
        tty.root().display(),
        tty.dir.path().join("run").display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("HAKO_AUTH_FILE", tty.auth_file())
        .env("HAKO_CONFIG", tty.config_file())
        .output()
        .unwrap();
    let text = ok(&out, &["pull (on a pty)"]);
    assert!(text.contains("Pull complete"), "{text:?}");
    assert!(text.contains("Status: Downloaded newer image"), "{text:?}");
    assert!(text.contains('\x1b'), "no terminal drawing: {text:?}");
}

#[test]
fn dangling_images_prune_and_forced_removal() {
    let h = Hako::new();
    let dir = h.dir.path();
    let first = dir.join("first.tar");
    std::fs::write(&first, TarBuilder::new().file("v", b"1\n").build()).unwrap();
    let second = dir.join("second.tar");
    std::fs::write(&second, TarBuilder::new().file("v", b"2\n").build()).unwrap();
    h.ok(&["import", first.to_str().unwrap(), "app:1"]);
    // The tag moves to a new image: the old one dangles.
    h.ok(&["import", second.to_str().unwrap(), "app:1"]);
    let listed = h.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let mut names: Vec<&str> = listed.lines().collect();
    names.sort_unstable();
    assert_eq!(names, ["<none>:<none>", "app:1"], "{listed}");
    let out = h.ok(&["image", "prune", "-f"]);
    assert!(out.contains("Deleted"), "{out}");
    let listed = h.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(listed.trim(), "app:1");

    // An image with two tags: rmi of its id needs -f, which removes both.
    h.ok(&["tag", "app:1", "app:2"]);
    let id = h.image_ids().pop().unwrap();
    let err = h.fails(&["rmi", &id[7..19]]);
    assert!(err.contains("-f") || err.contains("force"), "{err}");
    let out = h.ok(&["rmi", "-f", &id[7..19]]);
    assert!(
        out.contains("Untagged: app:1") && out.contains("Untagged: app:2"),
        "{out}"
    );
    assert!(out.contains("Deleted"), "{out}");
    assert!(h.image_ids().is_empty());
    h.assert_consistent();
}
