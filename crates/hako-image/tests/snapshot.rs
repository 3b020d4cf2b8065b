//! Snapshots of imported images, overlay and copy: a container's changes
//! land in its own dir, are exported as a layer with whiteouts, and the
//! snapshot goes without leaving a mount or a file behind.
#![allow(clippy::unwrap_used)]

use hako_image::Store;
use hako_image::snapshot::{self, Snapshotter};
use hako_testutil::images::{TarBuilder, busybox_layer};
use std::collections::BTreeMap;
use std::path::Path;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::Builder::new()
        .prefix("hako-snap-test-")
        .tempdir()
        .unwrap();
    let store = Store::open(&dir.path().join("root")).unwrap();
    (dir, store)
}

/// Entry name → (kind, content) of a layer tar.
fn entries(tar: &[u8]) -> BTreeMap<String, (char, Vec<u8>)> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_string();
            let kind = match e.header().entry_type() {
                tar::EntryType::Directory => 'd',
                tar::EntryType::Symlink => 'l',
                tar::EntryType::Link => 'h',
                _ => 'f',
            };
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            (name, (kind, data))
        })
        .collect()
}

fn mounted_under(dir: &Path) -> Vec<String> {
    let d = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&d))
        .map(str::to_string)
        .collect()
}

#[test]
fn container_changes_export_as_a_layer_and_snapshots_leave_nothing() {
    for snapshotter in [Snapshotter::Overlay, Snapshotter::Copy] {
        let (dir, store) = store();
        let base = TarBuilder::new()
            .dir("etc")
            .file("etc/keep", b"keep\n")
            .file("etc/remove", b"remove\n")
            .dir("app")
            .file("app/old", b"old\n")
            .build();
        let two = {
            let busy = hako_image::archive::add_layer(&store, &busybox_layer()[..]).unwrap();
            let mine = hako_image::archive::add_layer(&store, &base[..]).unwrap();
            let cfg = hako_image::ImageConfig {
                architecture: "amd64".into(),
                os: "linux".into(),
                rootfs: hako_image::manifest::RootFs {
                    kind: "layers".into(),
                    diff_ids: vec![busy.digest.clone(), mine.digest.clone()],
                },
                ..Default::default()
            };
            let bytes = serde_json::to_vec(&cfg).unwrap();
            hako_image::archive::add_local_image(
                &store,
                &bytes,
                &cfg,
                vec![busy, mine],
                hako_image::manifest::OCI_MANIFEST,
                &["local/two:1".parse().unwrap()],
            )
            .unwrap()
        };
        let two = store.resolve(&two.to_string()).unwrap();
        let snap = store
            .create_snapshot("c1", &two.chain_ids(), Some(&two.id), snapshotter)
            .unwrap();
        assert_eq!(store.snapshots().unwrap(), ["c1"]);
        let target = snap.merged_dir();
        std::fs::create_dir_all(&target).unwrap();
        snap.mount(&store, &target).unwrap();
        let changed = std::panic::catch_unwind(|| {
            assert_eq!(
                std::fs::read_to_string(target.join("etc/keep")).unwrap(),
                "keep\n"
            );
            assert!(target.join("bin/busybox").is_file());
            std::fs::write(target.join("etc/new"), "new\n").unwrap();
            std::fs::write(target.join("etc/keep"), "changed\n").unwrap();
            std::fs::remove_file(target.join("etc/remove")).unwrap();
            std::fs::remove_dir_all(target.join("app")).unwrap();
            std::fs::create_dir(target.join("app")).unwrap();
            std::fs::write(target.join("app/fresh"), "fresh\n").unwrap();
        });
        snapshot::unmount(&target).unwrap();
        changed.unwrap();

        // The layers themselves are untouched.
        for l in two.chain_ids() {
            let diff = store.layer_dir(&l).join("diff");
            assert!(!diff.join("etc/new").exists(), "{snapshotter:?}");
        }

        let mut out = Vec::new();
        snap.export_diff(&store, &mut out).unwrap();
        let e = entries(&out);
        assert_eq!(
            e["etc/new"],
            ('f', b"new\n".to_vec()),
            "{snapshotter:?}: {e:?}"
        );
        assert_eq!(
            e["etc/keep"],
            ('f', b"changed\n".to_vec()),
            "{snapshotter:?}"
        );
        assert!(e.contains_key("etc/.wh.remove"), "{snapshotter:?}: {e:?}");
        assert_eq!(
            e["app/fresh"],
            ('f', b"fresh\n".to_vec()),
            "{snapshotter:?}"
        );
        // The old file of app is gone: an opaque marker or its whiteout.
        assert!(
            e.contains_key("app/.wh..wh..opq") || e.contains_key("app/.wh.old"),
            "{snapshotter:?}: {e:?}"
        );
        assert!(
            !e.contains_key("bin/busybox"),
            "{snapshotter:?}: only changes"
        );

        // The exported layer, applied over the image, gives the changed tree.
        let applied = dir.path().join("applied");
        std::fs::create_dir(&applied).unwrap();
        let unpacked = dir.path().join("unpacked");
        std::fs::create_dir(&unpacked).unwrap();
        hako_image::unpack::unpack(&out[..], &unpacked).unwrap();
        for l in two.chain_ids() {
            hako_image::unpack::apply_copy(&store.layer_dir(&l).join("diff"), &applied).unwrap();
        }
        hako_image::unpack::apply_copy(&unpacked, &applied).unwrap();
        assert!(!applied.join("etc/remove").exists());
        assert!(!applied.join("app/old").exists());
        assert_eq!(
            std::fs::read_to_string(applied.join("etc/keep")).unwrap(),
            "changed\n"
        );

        // A snapshot keeps its layers from the collector.
        store.remove_image(&two.id).unwrap();
        store.collect_garbage().unwrap();
        for l in two.chain_ids() {
            assert!(
                store.layer_dir(&l).exists(),
                "{snapshotter:?}: layer collected"
            );
        }
        store.remove_snapshot("c1").unwrap();
        assert!(store.snapshots().unwrap().is_empty());
        assert!(!snap.dir.exists());
        let left: Vec<_> = std::fs::read_dir(store.snapshots_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert!(mounted_under(dir.path()).is_empty());
    }
}

#[test]
fn a_mounted_snapshot_is_unmounted_when_removed() {
    let (dir, store) = store();
    let id = hako_image::archive::import(&store, &busybox_layer()[..], &[], None).unwrap();
    let img = store.resolve(&id.to_string()).unwrap();
    let snap = store
        .create_snapshot(
            "busy",
            &img.chain_ids(),
            Some(&img.id),
            snapshot::detect(dir.path()),
        )
        .unwrap();
    std::fs::create_dir_all(snap.merged_dir()).unwrap();
    snap.mount(&store, &snap.merged_dir()).unwrap();
    assert!(!mounted_under(dir.path()).is_empty());
    store.remove_snapshot("busy").unwrap();
    assert!(mounted_under(dir.path()).is_empty());
    assert!(!snap.dir.exists());
    let err = store
        .create_snapshot("../evil", &img.chain_ids(), None, Snapshotter::Overlay)
        .unwrap_err();
    assert!(err.to_string().contains("snapshot name"), "{err}");
}
