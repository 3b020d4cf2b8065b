//! Layer unpack, apply and export on real files in temporary directories.
//! Tars are built here, hostile ones with raw headers.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hako_image::Compression;
use hako_image::unpack::{
    OPAQUE_XATTR, UnpackError, apply_copy, decompressor, export_diff, export_diff_between, unpack,
};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A tar being built by hand: headers with whatever names.
struct Tar {
    b: tar::Builder<Vec<u8>>,
}

struct E<'a> {
    kind: tar::EntryType,
    name: &'a [u8],
    link: &'a [u8],
    data: &'a [u8],
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    dev: (u32, u32),
    pax: Vec<(&'a str, &'a [u8])>,
}

fn e(kind: tar::EntryType, name: &str) -> E<'_> {
    E {
        kind,
        name: name.as_bytes(),
        link: b"",
        data: b"",
        mode: if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        },
        uid: 0,
        gid: 0,
        mtime: 1_600_000_000,
        dev: (0, 0),
        pax: Vec::new(),
    }
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> E<'a> {
    E {
        data,
        ..e(tar::EntryType::Regular, name)
    }
}

fn dir(name: &str) -> E<'_> {
    e(tar::EntryType::Directory, name)
}

fn symlink<'a>(name: &'a str, target: &'a str) -> E<'a> {
    E {
        link: target.as_bytes(),
        ..e(tar::EntryType::Symlink, name)
    }
}

fn hardlink<'a>(name: &'a str, target: &'a str) -> E<'a> {
    E {
        link: target.as_bytes(),
        ..e(tar::EntryType::Link, name)
    }
}

fn pax_data(recs: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in recs {
        let base = k.len() + v.len() + 3;
        let mut len = base + 1;
        while base + len.to_string().len() != len {
            len = base + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

impl Tar {
    fn new() -> Tar {
        Tar {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn add(&mut self, x: E) -> &mut Tar {
        if !x.pax.is_empty() {
            let data = pax_data(&x.pax);
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::XHeader);
            h.as_old_mut().name[..9].copy_from_slice(b"PaxHeader");
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            self.b.append(&h, data.as_slice()).unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(x.kind);
        let n = x.name.len().min(100);
        h.as_old_mut().name[..n].copy_from_slice(&x.name[..n]);
        let l = x.link.len().min(100);
        h.as_old_mut().linkname[..l].copy_from_slice(&x.link[..l]);
        h.set_mode(x.mode);
        h.set_uid(x.uid);
        h.set_gid(x.gid);
        h.set_mtime(x.mtime);
        h.set_size(x.data.len() as u64);
        h.set_device_major(x.dev.0).unwrap();
        h.set_device_minor(x.dev.1).unwrap();
        h.set_cksum();
        self.b.append(&h, x.data).unwrap();
        self
    }

    fn bytes(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

fn unpack_bytes(
    tar: &[u8],
) -> (
    tempfile::TempDir,
    Result<hako_image::unpack::UnpackStats, UnpackError>,
) {
    let d = tempfile::tempdir().unwrap();
    let r = unpack(tar, d.path());
    (d, r)
}

fn xattr_of(p: &Path, k: &str) -> Option<Vec<u8>> {
    xattr::get(p, k).unwrap()
}

fn is_whiteout(p: &Path) -> bool {
    fs::symlink_metadata(p)
        .map(|m| m.file_type().is_char_device() && m.rdev() == 0)
        .unwrap_or(false)
}

fn refused(r: Result<hako_image::unpack::UnpackStats, UnpackError>, name: &str) -> String {
    let err = r.expect_err("must fail");
    let msg = err.to_string();
    assert!(
        matches!(err, UnpackError::Refused { .. }),
        "not refused: {msg}"
    );
    assert!(msg.contains(name), "{msg:?} does not name {name:?}");
    msg
}

#[test]
fn every_entry_type_with_metadata() {
    let root = is_root();
    let mut t = Tar::new();
    t.add(E {
        mode: 0o710,
        uid: 11,
        gid: 12,
        mtime: 1_000_000_000,
        ..dir("d/")
    });
    t.add(E {
        mode: 0o4755,
        uid: 1000,
        gid: 2000,
        mtime: 1_234_567_890,
        pax: vec![
            ("SCHILY.xattr.user.color", b"blue"),
            ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
        ],
        ..file("d/setuid", b"#!/bin/sh\necho hi\n")
    });
    t.add(E {
        mode: 0o1777,
        ..dir("./d/sticky/")
    });
    t.add(E {
        mode: 0o2755,
        gid: 50,
        ..dir("d/setgid")
    });
    t.add(E {
        uid: 7,
        gid: 8,
        mtime: 1_111_111_111,
        ..symlink("d/link", "/nowhere/at/all")
    });
    t.add(hardlink("d/hard", "d/setuid"));
    t.add(E {
        dev: (1, 3),
        mode: 0o666,
        ..e(tar::EntryType::Char, "d/null")
    });
    t.add(E {
        dev: (7, 0),
        mode: 0o660,
        ..e(tar::EntryType::Block, "d/loop0")
    });
    t.add(E {
        mode: 0o620,
        ..e(tar::EntryType::Fifo, "d/fifo")
    });
    t.add(file("missing/parents/f", b"x"));
    let (d, r) = unpack_bytes(&t.bytes());
    let stats = r.unwrap();
    let p = d.path();
    let md = fs::symlink_metadata(p.join("d/setuid")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o4755);
    assert_eq!(md.mtime(), 1_234_567_890);
    assert_eq!(md.nlink(), 2);
    assert_eq!(fs::read(p.join("d/hard")).unwrap(), b"#!/bin/sh\necho hi\n");
    assert_eq!(
        xattr_of(&p.join("d/setuid"), "user.color").as_deref(),
        Some(&b"blue"[..])
    );
    // overlayfs's own xattrs never come from an image.
    if root {
        assert_eq!(
            xattr_of(&p.join("d/setuid"), "trusted.overlay.redirect"),
            None
        );
    }
    let dmd = fs::metadata(p.join("d")).unwrap();
    assert_eq!(dmd.mode() & 0o7777, 0o710);
    assert_eq!(
        dmd.mtime(),
        1_000_000_000,
        "dir mtime set after its contents"
    );
    assert_eq!(
        fs::metadata(p.join("d/sticky")).unwrap().mode() & 0o7777,
        0o1777
    );
    assert_eq!(
        fs::metadata(p.join("d/setgid")).unwrap().mode() & 0o7777,
        0o2755
    );
    let lmd = fs::symlink_metadata(p.join("d/link")).unwrap();
    assert!(lmd.file_type().is_symlink());
    assert_eq!(lmd.mtime(), 1_111_111_111);
    assert_eq!(
        fs::read_link(p.join("d/link")).unwrap(),
        PathBuf::from("/nowhere/at/all")
    );
    let fmd = fs::symlink_metadata(p.join("d/fifo")).unwrap();
    assert!(fmd.file_type().is_fifo());
    assert_eq!(fmd.mode() & 0o7777, 0o620);
    assert_eq!(
        fs::metadata(p.join("missing/parents")).unwrap().mode() & 0o7777,
        0o755
    );
    if root {
        assert_eq!((md.uid(), md.gid()), (1000, 2000));
        assert_eq!((dmd.uid(), dmd.gid()), (11, 12));
        assert_eq!((lmd.uid(), lmd.gid()), (7, 8));
        let c = fs::symlink_metadata(p.join("d/null")).unwrap();
        assert!(c.file_type().is_char_device());
        assert_eq!(c.rdev(), nix::sys::stat::makedev(1, 3));
        assert_eq!(c.mode() & 0o7777, 0o666);
        let b = fs::symlink_metadata(p.join("d/loop0")).unwrap();
        assert!(b.file_type().is_block_device());
        assert_eq!(b.rdev(), nix::sys::stat::makedev(7, 0));
        assert_eq!(stats.entries, 10);
    } else {
        assert!(!p.join("d/null").exists());
        assert_eq!(stats.entries, 8);
    }
    assert_eq!(stats.bytes, 18 + 1);
}

#[test]
fn long_names_pax_and_gnu() {
    let long_dir = "a".repeat(90);
    let long = format!("{long_dir}/{}", "b".repeat(120));
    let long_target = format!("/{}", "t".repeat(150));
    let mut t = Tar::new();
    // PAX path and linkpath.
    t.add(E {
        pax: vec![("path", long.as_bytes())],
        ..file("short-name", b"pax")
    });
    t.add(E {
        pax: vec![("path", b"pax-link"), ("linkpath", long_target.as_bytes())],
        ..symlink("x", "y")
    });
    t.add(E {
        pax: vec![("linkpath", long.as_bytes())],
        ..hardlink("pax-hard", "ignored")
    });
    let mut bytes = t.bytes();
    // GNU long names, as the tar crate's builder writes them.
    let mut b = tar::Builder::new(Vec::new());
    let gnu_name = format!("gnu/{}", "c".repeat(150));
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    b.append_data(&mut h, &gnu_name, &b"gnu"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "gnu-link", &long_target).unwrap();
    let gnu = b.into_inner().unwrap();
    // Splice: drop the first tar's end blocks.
    bytes.truncate(bytes.len() - 1024);
    bytes.extend_from_slice(&gnu);
    let (d, r) = unpack_bytes(&bytes);
    r.unwrap();
    let p = d.path();
    assert_eq!(fs::read(p.join(&long)).unwrap(), b"pax");
    assert!(!p.join("short-name").exists());
    assert_eq!(
        fs::read_link(p.join("pax-link")).unwrap(),
        PathBuf::from(&long_target)
    );
    assert_eq!(
        fs::metadata(p.join("pax-hard")).unwrap().ino(),
        fs::metadata(p.join(&long)).unwrap().ino()
    );
    assert_eq!(fs::read(p.join(&gnu_name)).unwrap(), b"gnu");
    assert_eq!(
        fs::read_link(p.join("gnu-link")).unwrap(),
        PathBuf::from(&long_target)
    );
}

#[test]
fn whiteouts_and_opaque_dirs() {
    if !is_root() {
        eprintln!("skipped: whiteouts and trusted xattrs need root");
        return;
    }
    let mut t = Tar::new();
    t.add(file("a/b/written-by-this-layer", b"x"));
    t.add(file("a/.wh.b", b""));
    t.add(file("a/.wh.gone", b""));
    t.add(file("c/.wh..wh..opq", b""));
    t.add(file("c/kept", b"k"));
    t.add(file("new/.wh..wh..opq", b""));
    t.add(file(".wh..wh.plnk", b""));
    t.add(file(".wh.top", b""));
    let (d, r) = unpack_bytes(&t.bytes());
    let stats = r.unwrap();
    let p = d.path();
    assert!(is_whiteout(&p.join("a/b")));
    assert!(is_whiteout(&p.join("a/gone")));
    assert!(is_whiteout(&p.join("top")));
    assert_eq!(
        xattr_of(&p.join("c"), OPAQUE_XATTR).as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        xattr_of(&p.join("new"), OPAQUE_XATTR).as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(fs::read(p.join("c/kept")).unwrap(), b"k");
    assert!(!p.join(".wh..wh.plnk").exists());
    assert!(!p.join("plnk").exists());
    assert_eq!(stats.entries, 7);
}

#[test]
fn later_entries_replace_earlier() {
    let mut t = Tar::new();
    t.add(file("x", b"file"));
    t.add(dir("x/"));
    t.add(file("x/in", b"in"));
    t.add(dir("y"));
    t.add(file("y/deep", b"deep"));
    t.add(file("y", b"now a file"));
    t.add(file("z", b"first"));
    t.add(file("z", b"second"));
    t.add(file("s", b"target"));
    t.add(symlink("s", "elsewhere"));
    t.add(E {
        mode: 0o700,
        ..dir("m")
    });
    t.add(file("m/f", b""));
    t.add(E {
        mode: 0o750,
        ..dir("m")
    });
    let (d, r) = unpack_bytes(&t.bytes());
    r.unwrap();
    let p = d.path();
    assert_eq!(fs::read(p.join("x/in")).unwrap(), b"in");
    assert_eq!(fs::read(p.join("y")).unwrap(), b"now a file");
    assert_eq!(fs::read(p.join("z")).unwrap(), b"second");
    assert_eq!(
        fs::read_link(p.join("s")).unwrap(),
        PathBuf::from("elsewhere")
    );
    assert!(p.join("m/f").exists(), "dir over dir keeps its contents");
    assert_eq!(fs::metadata(p.join("m")).unwrap().mode() & 0o7777, 0o750);
}

#[test]
fn dotdot_is_refused() {
    for name in ["../etc/passwd", "a/../../b", "ok/..", "/../x"] {
        let (d, r) = unpack_bytes(&Tar::new().add(file(name, b"bad")).bytes());
        let msg = refused(r, name);
        assert!(msg.contains(".."), "{msg}");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }
    let (_d, r) = unpack_bytes(&Tar::new().add(file("../.wh.x", b"")).bytes());
    refused(r, "../.wh.x");
}

#[test]
fn absolute_names_stay_inside() {
    let mut t = Tar::new();
    t.add(file("/abs/file", b"in"));
    t.add(file("./dot/./file", b"dot"));
    t.add(dir("/"));
    let (d, r) = unpack_bytes(&t.bytes());
    r.unwrap();
    assert_eq!(fs::read(d.path().join("abs/file")).unwrap(), b"in");
    assert_eq!(fs::read(d.path().join("dot/file")).unwrap(), b"dot");
}

#[test]
fn nothing_is_written_through_a_symlink() {
    let outside = tempfile::tempdir().unwrap();
    let out = outside.path().to_str().unwrap();
    let mut t = Tar::new();
    t.add(symlink("evil", out));
    t.add(file("evil/pwned", b"gotcha"));
    let (d, r) = unpack_bytes(&t.bytes());
    refused(r, "evil/pwned");
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    assert!(
        fs::symlink_metadata(d.path().join("evil"))
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // Nor through a symlink to a directory of the layer's own ("a/b" with
    // "a -> /" would be the host's root otherwise).
    for (link, entry) in [("up", "up/x"), ("deep", "deep/sub/x")] {
        let mut t = Tar::new();
        t.add(symlink(link, out));
        t.add(dir(entry));
        let (_d, r) = unpack_bytes(&t.bytes());
        refused(r, entry);
    }
    // A whiteout through one.
    let mut t = Tar::new();
    t.add(symlink("w", out));
    t.add(file("w/.wh.victim", b""));
    fs::write(outside.path().join("victim"), b"v").unwrap();
    let (_d, r) = unpack_bytes(&t.bytes());
    refused(r, "w/.wh.victim");
    assert_eq!(fs::read(outside.path().join("victim")).unwrap(), b"v");
}

#[test]
fn hard_links_stay_in_the_layer() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret");
    fs::write(&secret, b"s").unwrap();
    let out = outside.path().to_str().unwrap();

    let (_d, r) = unpack_bytes(&Tar::new().add(hardlink("h", "/etc/passwd")).bytes());
    let msg = refused(r, "h");
    assert!(msg.contains("not a file of this layer"), "{msg}");
    let (_d, r) = unpack_bytes(&Tar::new().add(hardlink("h", "../x")).bytes());
    refused(r, "h");

    // Through a symlinked directory: refused.
    let mut t = Tar::new();
    t.add(symlink("lnk", out));
    t.add(hardlink("h", "lnk/secret"));
    let (_d, r) = unpack_bytes(&t.bytes());
    refused(r, "h");
    // To a symlink that leads outside: the link is to the symlink itself.
    let mut t = Tar::new();
    t.add(symlink("lnk2", secret.to_str().unwrap()));
    t.add(hardlink("h2", "lnk2"));
    let (d, r) = unpack_bytes(&t.bytes());
    r.unwrap();
    assert!(
        fs::symlink_metadata(d.path().join("h2"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1);
    assert_eq!(fs::read(&secret).unwrap(), b"s");
}

fn sample_tar() -> Vec<u8> {
    let mut t = Tar::new();
    t.add(dir("etc/"));
    let big: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    t.add(file("etc/big", &big));
    t.add(file("etc/small", b"hello"));
    t.add(symlink("etc/link", "small"));
    t.bytes()
}

#[test]
fn truncated_or_corrupt_tars_are_errors() {
    let tar = sample_tar();
    // Cut inside the big file's content, on a block boundary (no end
    // blocks), and just before the end-of-archive blocks.
    for cut in [700_000, 512 * 3, tar.len() - 1024] {
        let (_d, r) = unpack_bytes(&tar[..cut]);
        assert!(
            matches!(r, Err(UnpackError::Truncated)),
            "cut at {cut}: {r:?}"
        );
    }
    // Cut inside a header.
    let (_d, r) = unpack_bytes(&tar[..512 + 100]);
    assert!(r.is_err());
    let (_d, r) = unpack_bytes(b"");
    assert!(matches!(r, Err(UnpackError::Truncated)), "{r:?}");
    let mut garbage = tar.clone();
    garbage[..512].fill(b'x');
    let (_d, r) = unpack_bytes(&garbage);
    assert!(matches!(r, Err(UnpackError::Read(_))), "{r:?}");

    // A truncated gzip stream through the decompressor.
    let gz = gzip(&tar);
    for cut in [gz.len() / 2, gz.len() - 4] {
        let dec = decompressor(&gz[..cut], Compression::Gzip).unwrap();
        let (d, res) = {
            let d = tempfile::tempdir().unwrap();
            let res = unpack(dec, d.path());
            (d, res)
        };
        assert!(res.is_err(), "gzip cut at {cut} of {}", gz.len());
        drop(d);
    }
    let zs = zstd::encode_all(tar.as_slice(), 3).unwrap();
    let dec = decompressor(&zs[..zs.len() - 3], Compression::Zstd).unwrap();
    let d = tempfile::tempdir().unwrap();
    assert!(unpack(dec, d.path()).is_err());
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(b).unwrap();
    enc.finish().unwrap()
}

/// Counts what was read through it.
struct Counted<R> {
    inner: R,
    n: std::rc::Rc<std::cell::Cell<usize>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n.set(self.n.get() + n);
        Ok(n)
    }
}

#[test]
fn compressed_round_trips_and_the_stream_is_drained() {
    let mut tar = sample_tar();
    // Extra zero padding after the end blocks, as some writers leave.
    tar.extend_from_slice(&[0u8; 8192]);
    for (kind, blob) in [
        (Compression::None, tar.clone()),
        (Compression::Gzip, gzip(&tar)),
        (
            Compression::Zstd,
            zstd::encode_all(tar.as_slice(), 3).unwrap(),
        ),
    ] {
        let d = tempfile::tempdir().unwrap();
        let n = std::rc::Rc::new(std::cell::Cell::new(0));
        let dec = decompressor(blob.as_slice(), kind).unwrap();
        let counted = Counted {
            inner: dec,
            n: n.clone(),
        };
        let stats = unpack(counted, d.path()).unwrap();
        assert_eq!(n.get(), tar.len(), "{kind:?}: all of the stream read");
        assert_eq!(stats.entries, 4);
        assert_eq!(stats.bytes, 1_200_000 + 5);
        assert_eq!(fs::read(d.path().join("etc/small")).unwrap(), b"hello");
        assert_eq!(
            fs::metadata(d.path().join("etc/big")).unwrap().len(),
            1_200_000
        );
    }
}

/// Everything in a tree, for comparing trees: path -> description.
fn describe(root: &Path, with_mtime: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for ent in fs::read_dir(&dir).unwrap() {
            let p = ent.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let ft = md.file_type();
            let what = if ft.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if ft.is_symlink() {
                format!("link {:?}", fs::read_link(&p).unwrap())
            } else if ft.is_file() {
                format!("file {:?}", String::from_utf8_lossy(&fs::read(&p).unwrap()))
            } else if ft.is_char_device() {
                format!("chr {}", md.rdev())
            } else {
                "other".to_string()
            };
            let mut xs: Vec<String> = xattr::list(&p)
                .unwrap()
                .map(|k| k.to_string_lossy().into_owned())
                .collect();
            xs.sort();
            let mtime = if with_mtime && !ft.is_dir() && !ft.is_symlink() {
                md.mtime()
            } else {
                0
            };
            out.push((
                rel,
                format!(
                    "{what} mode {:o} owner {}:{} mtime {mtime} xattrs {xs:?}",
                    md.mode() & 0o7777,
                    md.uid(),
                    md.gid()
                ),
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn apply_copy_of_two_layers() {
    if !is_root() {
        eprintln!("skipped: whiteouts need root");
        return;
    }
    let mut t = Tar::new();
    t.add(file("keep", b"keep"));
    t.add(file("del", b"del"));
    t.add(file("opq/old1", b"1"));
    t.add(dir("opq/olddir/"));
    t.add(file("opq/olddir/old2", b"2"));
    t.add(file("gone/deep/f", b"f"));
    t.add(file("replaced", b"was a file"));
    t.add(E {
        uid: 5,
        gid: 6,
        mode: 0o640,
        mtime: 1_500_000_000,
        pax: vec![("SCHILY.xattr.user.k", b"v")],
        ..file("meta", b"m")
    });
    let l1 = tempfile::tempdir().unwrap();
    unpack(t.bytes().as_slice(), l1.path()).unwrap();

    let mut t = Tar::new();
    t.add(file(".wh.del", b""));
    t.add(file(".wh.gone", b""));
    t.add(file("opq/.wh..wh..opq", b""));
    t.add(file("opq/new", b"new"));
    t.add(dir("replaced/"));
    t.add(file("replaced/inside", b"i"));
    t.add(file("h/one", b"linked"));
    t.add(hardlink("h/two", "h/one"));
    t.add(hardlink("three", "h/one"));
    t.add(symlink("sym", "keep"));
    t.add(E {
        dev: (0, 0),
        ..e(tar::EntryType::Fifo, "fifo")
    });
    let l2 = tempfile::tempdir().unwrap();
    unpack(t.bytes().as_slice(), l2.path()).unwrap();

    let target = tempfile::tempdir().unwrap();
    apply_copy(l1.path(), target.path()).unwrap();
    let stats = apply_copy(l2.path(), target.path()).unwrap();
    assert!(stats.entries >= 10);
    let p = target.path();
    assert_eq!(fs::read(p.join("keep")).unwrap(), b"keep");
    assert!(!p.join("del").exists());
    assert!(!p.join("gone").exists());
    let mut opq: Vec<_> = fs::read_dir(p.join("opq"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    opq.sort();
    assert_eq!(opq, ["new"]);
    assert_eq!(xattr_of(&p.join("opq"), OPAQUE_XATTR), None);
    assert_eq!(fs::read(p.join("replaced/inside")).unwrap(), b"i");
    let one = fs::metadata(p.join("h/one")).unwrap();
    assert_eq!(one.nlink(), 3);
    assert_eq!(fs::metadata(p.join("h/two")).unwrap().ino(), one.ino());
    assert_eq!(fs::metadata(p.join("three")).unwrap().ino(), one.ino());
    assert_eq!(fs::read_link(p.join("sym")).unwrap(), PathBuf::from("keep"));
    assert!(
        fs::symlink_metadata(p.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let m = fs::metadata(p.join("meta")).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777, m.mtime()),
        (5, 6, 0o640, 1_500_000_000)
    );
    assert_eq!(
        xattr_of(&p.join("meta"), "user.k").as_deref(),
        Some(&b"v"[..])
    );
    // No whiteout devices in a plain tree.
    assert!(
        !describe(p, false)
            .iter()
            .any(|(_, d)| d.starts_with("chr 0 "))
    );
}

#[test]
fn apply_copy_does_not_follow_target_symlinks() {
    let outside = tempfile::tempdir().unwrap();
    let layer = tempfile::tempdir().unwrap();
    unpack(
        Tar::new().add(file("d/f", b"x")).bytes().as_slice(),
        layer.path(),
    )
    .unwrap();
    let target = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), target.path().join("d")).unwrap();
    apply_copy(layer.path(), target.path()).unwrap();
    // The symlink was replaced by the layer's directory.
    assert!(target.path().join("d").is_dir());
    assert!(
        !fs::symlink_metadata(target.path().join("d"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
}

/// Unmounts on drop, so a failed assertion leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn export_diff_of_an_overlay_upper() {
    if !is_root() {
        eprintln!("skipped: mounting overlayfs needs root");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (lower, upper, work, merged) = (
        t.path().join("lower"),
        t.path().join("upper"),
        t.path().join("work"),
        t.path().join("merged"),
    );
    for d in [&lower, &upper, &work, &merged] {
        fs::create_dir(d).unwrap();
    }
    fs::write(lower.join("modify"), b"old").unwrap();
    fs::write(lower.join("delete"), b"x").unwrap();
    fs::create_dir_all(lower.join("tree/sub")).unwrap();
    fs::write(lower.join("tree/a"), b"a").unwrap();
    fs::write(lower.join("tree/sub/b"), b"b").unwrap();
    fs::create_dir(lower.join("untouched")).unwrap();
    fs::write(lower.join("untouched/f"), b"f").unwrap();
    {
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .unwrap();
        let _guard = Mounted(merged.clone());
        fs::write(merged.join("added"), b"new").unwrap();
        fs::create_dir(merged.join("newdir")).unwrap();
        fs::write(
            merged.join("newdir/long-".to_string() + &"n".repeat(120)),
            b"l",
        )
        .unwrap();
        fs::write(merged.join("modify"), b"new content").unwrap();
        fs::remove_file(merged.join("delete")).unwrap();
        fs::remove_dir_all(merged.join("tree")).unwrap();
        fs::create_dir(merged.join("tree")).unwrap();
        fs::write(merged.join("tree/c"), b"c").unwrap();
        fs::hard_link(merged.join("added"), merged.join("added-link")).unwrap();
        fs::set_permissions(merged.join("added"), fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut tar = Vec::new();
    let n = export_diff(&upper, &mut tar).unwrap();
    assert_eq!(n, tar.len() as u64);
    // Deterministic.
    let mut again = Vec::new();
    export_diff(&upper, &mut again).unwrap();
    assert_eq!(tar, again);

    let names: Vec<String> = tar::Archive::new(tar.as_slice())
        .entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect();
    for want in [
        ".wh.delete",
        "tree/",
        "tree/.wh..wh..opq",
        "tree/c",
        "modify",
        "added",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    assert!(!names.iter().any(|n| n.starts_with("untouched")));
    let mut sorted = names.clone();
    sorted.sort();

    let layer = tempfile::tempdir().unwrap();
    unpack(tar.as_slice(), layer.path()).unwrap();
    let l = layer.path();
    assert!(is_whiteout(&l.join("delete")));
    assert_eq!(
        xattr_of(&l.join("tree"), OPAQUE_XATTR).as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(fs::read(l.join("tree/c")).unwrap(), b"c");
    assert!(!l.join("tree/a").exists());
    assert_eq!(fs::read(l.join("modify")).unwrap(), b"new content");
    assert_eq!(
        fs::metadata(l.join("added")).unwrap().ino(),
        fs::metadata(l.join("added-link")).unwrap().ino()
    );
    assert_eq!(fs::metadata(l.join("added")).unwrap().mode() & 0o777, 0o600);
    assert_eq!(
        fs::read(l.join("newdir/long-".to_string() + &"n".repeat(120))).unwrap(),
        b"l"
    );
}

#[test]
fn export_diff_between_round_trips() {
    let base = tempfile::tempdir().unwrap();
    let b = base.path();
    fs::create_dir_all(b.join("dir/sub")).unwrap();
    fs::write(b.join("dir/sub/f"), b"f").unwrap();
    fs::write(b.join("dir/same"), b"same").unwrap();
    fs::write(b.join("modify"), b"aaaa").unwrap();
    fs::write(b.join("delete"), b"x").unwrap();
    fs::create_dir_all(b.join("deltree/x/y")).unwrap();
    fs::write(b.join("deltree/x/y/z"), b"z").unwrap();
    fs::write(b.join("chmod"), b"c").unwrap();
    fs::write(b.join("becomes-dir"), b"c").unwrap();
    std::os::unix::fs::symlink("dir", b.join("sym")).unwrap();

    // `changed` starts as a copy of base, as the copy snapshotter has it.
    let changed = tempfile::tempdir().unwrap();
    let c = changed.path();
    apply_copy(b, c).unwrap();
    fs::write(c.join("modify"), b"bbbb").unwrap();
    fs::remove_file(c.join("delete")).unwrap();
    fs::remove_dir_all(c.join("deltree")).unwrap();
    fs::set_permissions(c.join("chmod"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::remove_file(c.join("becomes-dir")).unwrap();
    fs::create_dir(c.join("becomes-dir")).unwrap();
    fs::write(c.join("becomes-dir/in"), b"in").unwrap();
    fs::write(c.join("dir/sub/new"), b"new").unwrap();
    fs::remove_file(c.join("sym")).unwrap();
    std::os::unix::fs::symlink("elsewhere", c.join("sym")).unwrap();
    fs::write(c.join("h1"), b"h").unwrap();
    fs::hard_link(c.join("h1"), c.join("h2")).unwrap();

    let mut tar = Vec::new();
    let n = export_diff_between(b, c, &mut tar).unwrap();
    assert_eq!(n, tar.len() as u64);
    let names: Vec<String> = tar::Archive::new(tar.as_slice())
        .entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect();
    assert!(names.contains(&".wh.deltree".to_string()), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("deltree/")),
        "{names:?}"
    );
    assert!(!names.contains(&"dir/same".to_string()), "{names:?}");
    assert!(names.contains(&"dir/".to_string()), "{names:?}");
    assert!(names.contains(&"dir/sub/new".to_string()), "{names:?}");

    let layer = tempfile::tempdir().unwrap();
    if is_root() {
        unpack(tar.as_slice(), layer.path()).unwrap();
        let result = tempfile::tempdir().unwrap();
        apply_copy(b, result.path()).unwrap();
        apply_copy(layer.path(), result.path()).unwrap();
        assert_eq!(describe(result.path(), true), describe(c, true));
        assert_eq!(
            fs::metadata(result.path().join("h1")).unwrap().ino(),
            fs::metadata(result.path().join("h2")).unwrap().ino()
        );
    }
}
