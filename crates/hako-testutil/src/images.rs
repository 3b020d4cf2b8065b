//! Images for the image tests: layer tars built entry by entry (hostile
//! ones too), OCI image layouts on disk, and `skopeo` to push them into a
//! [`crate::registry::Registry`]. The images are made here from Debian's
//! `busybox-static` and from files the fixtures write; nothing comes from
//! outside this machine.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    pub fn compress(self, tar: &[u8]) -> Vec<u8> {
        match self {
            Compression::None => tar.to_vec(),
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(tar).unwrap();
                enc.finish().unwrap()
            }
            Compression::Zstd => zstd::encode_all(tar, 3).unwrap(),
        }
    }
}

/// A layer tar, entry by entry. Names are written as given (raw), so a
/// test can make the hostile ones a careful tar writer refuses.
pub struct TarBuilder {
    out: Vec<u8>,
    mtime: u64,
}

impl Default for TarBuilder {
    fn default() -> Self {
        TarBuilder::new()
    }
}

impl TarBuilder {
    pub fn new() -> TarBuilder {
        TarBuilder {
            out: Vec::new(),
            mtime: 1_700_000_000,
        }
    }

    /// One entry with a raw name (PAX header for names over 100 bytes).
    #[allow(clippy::too_many_arguments)]
    pub fn raw(
        &mut self,
        name: &str,
        kind: tar::EntryType,
        mode: u32,
        uid: u64,
        link: Option<&str>,
        data: &[u8],
    ) -> &mut Self {
        let mut pax: Vec<(&str, &str)> = Vec::new();
        if name.len() > 100 {
            pax.push(("path", name));
        }
        if let Some(l) = link.filter(|l| l.len() > 100) {
            pax.push(("linkpath", l));
        }
        if !pax.is_empty() {
            let mut body = Vec::new();
            for (k, v) in pax {
                let rest = format!(" {k}={v}\n");
                // The length field counts itself.
                let mut len = rest.len() + 1;
                while format!("{len}{rest}").len() != len {
                    len += 1;
                }
                body.extend_from_slice(format!("{len}{rest}").as_bytes());
            }
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::XHeader);
            h.as_old_mut().name[..9].copy_from_slice(b"PaxHeader");
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(self.mtime);
            h.set_cksum();
            self.append(&h, &body);
        }
        let mut h = tar::Header::new_ustar();
        let bytes = name.as_bytes();
        let n = bytes.len().min(100);
        h.as_old_mut().name[..n].copy_from_slice(&bytes[..n]);
        if let Some(l) = link {
            let lb = l.as_bytes();
            let n = lb.len().min(100);
            h.as_old_mut().linkname[..n].copy_from_slice(&lb[..n]);
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_mtime(self.mtime);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.append(&h, data);
        self
    }

    fn append(&mut self, h: &tar::Header, data: &[u8]) {
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.raw(name, tar::EntryType::Directory, 0o755, 0, None, b"")
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.raw(name, tar::EntryType::Regular, 0o644, 0, None, data)
    }

    pub fn file_with(&mut self, name: &str, data: &[u8], mode: u32, uid: u64) -> &mut Self {
        self.raw(name, tar::EntryType::Regular, mode, uid, None, data)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name, tar::EntryType::Symlink, 0o777, 0, Some(target), b"")
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name, tar::EntryType::Link, 0o644, 0, Some(target), b"")
    }

    /// `dir/.wh.name`: deletes `dir/name` of the layers below.
    pub fn whiteout(&mut self, path: &str) -> &mut Self {
        let (dir, name) = path.rsplit_once('/').map_or(("", path), |(d, n)| (d, n));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&wh, b"")
    }

    /// `dir/.wh..wh..opq`: hides everything the layers below have in `dir`.
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"")
    }

    /// Every file under `root`, as `tar` would pack it (names relative).
    pub fn tree(&mut self, root: &Path) -> &mut Self {
        let mut b = tar::Builder::new(Vec::new());
        b.follow_symlinks(false);
        b.mode(tar::HeaderMode::Deterministic);
        b.append_dir_all(".", root).unwrap();
        let bytes = b.into_inner().unwrap();
        // Drop the two zero blocks that end the archive.
        let end = trailing_end(&bytes);
        self.out.extend_from_slice(&bytes[..end]);
        self
    }

    /// The finished tar (with its end-of-archive blocks).
    pub fn build(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }
}

fn trailing_end(bytes: &[u8]) -> usize {
    let mut end = bytes.len();
    while end >= 512 && bytes[end - 512..end].iter().all(|b| *b == 0) {
        end -= 512;
    }
    end
}

/// The host's platform as OCI names it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// An image being put together: layers (tar + compression) and a config.
pub struct ImageBuilder {
    layers: Vec<(Vec<u8>, Compression)>,
    arch: String,
    variant: Option<String>,
    config: Value,
}

/// A built image: its blobs and the digests that name them.
pub struct BuiltImage {
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub config: Vec<u8>,
    pub config_digest: String,
    /// Compressed layer blobs, bottom first.
    pub layers: Vec<Vec<u8>>,
    pub layer_digests: Vec<String>,
    pub diff_ids: Vec<String>,
    pub arch: String,
    pub variant: Option<String>,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        ImageBuilder::new()
    }
}

impl ImageBuilder {
    pub fn new() -> ImageBuilder {
        ImageBuilder {
            layers: Vec::new(),
            arch: host_arch().to_string(),
            variant: None,
            config: json!({"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]}),
        }
    }

    pub fn layer(mut self, tar: Vec<u8>, c: Compression) -> Self {
        self.layers.push((tar, c));
        self
    }

    pub fn arch(mut self, arch: &str, variant: Option<&str>) -> Self {
        self.arch = arch.to_string();
        self.variant = variant.map(str::to_string);
        self
    }

    /// Sets a field of the image's runtime config (`Cmd`, `Env`, ...).
    pub fn config(mut self, key: &str, value: Value) -> Self {
        self.config[key] = value;
        self
    }

    pub fn build(self) -> BuiltImage {
        let diff_ids: Vec<String> = self.layers.iter().map(|(t, _)| sha256(t)).collect();
        let blobs: Vec<Vec<u8>> = self.layers.iter().map(|(t, c)| c.compress(t)).collect();
        let layer_digests: Vec<String> = blobs.iter().map(|b| sha256(b)).collect();
        let mut cfg = json!({
            "created": "2026-01-01T00:00:00Z",
            "architecture": self.arch,
            "os": "linux",
            "config": self.config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": self.layers.iter().map(|_| json!({"created_by": "hako-testutil"})).collect::<Vec<_>>(),
        });
        if let Some(v) = &self.variant {
            cfg["variant"] = json!(v);
        }
        let config = serde_json::to_vec(&cfg).unwrap();
        let config_digest = sha256(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": self.layers.iter().zip(&blobs).zip(&layer_digests).map(|(((_, c), b), d)| json!({
                "mediaType": c.media_type(),
                "digest": d,
                "size": b.len(),
            })).collect::<Vec<_>>(),
        }))
        .unwrap();
        BuiltImage {
            manifest_digest: sha256(&manifest),
            manifest,
            config,
            config_digest,
            layers: blobs,
            layer_digests,
            diff_ids,
            arch: self.arch,
            variant: self.variant,
        }
    }
}

impl BuiltImage {
    /// An OCI image layout in a new temp dir, the image tagged `tag`.
    pub fn into_layout(self, tag: &str) -> OciLayout {
        let layout = OciLayout::new();
        layout.add_image(&self);
        layout.add_ref(
            "application/vnd.oci.image.manifest.v1+json",
            &self.manifest_digest,
            self.manifest.len(),
            tag,
        );
        layout
    }
}

/// An OCI image layout directory (`oci:DIR:TAG` for skopeo).
pub struct OciLayout {
    dir: tempfile::TempDir,
}

impl Default for OciLayout {
    fn default() -> Self {
        OciLayout::new()
    }
}

impl OciLayout {
    pub fn new() -> OciLayout {
        let dir = tempfile::Builder::new()
            .prefix("hako-layout-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        std::fs::write(
            dir.path().join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("index.json"),
            br#"{"schemaVersion":2,"manifests":[]}"#,
        )
        .unwrap();
        OciLayout { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn add_blob(&self, bytes: &[u8]) -> String {
        let d = sha256(bytes);
        let p = self
            .dir()
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"));
        std::fs::write(p, bytes).unwrap();
        d
    }

    pub fn add_image(&self, img: &BuiltImage) {
        self.add_blob(&img.config);
        for l in &img.layers {
            self.add_blob(l);
        }
        self.add_blob(&img.manifest);
    }

    /// Names a manifest or index in index.json as `tag`.
    pub fn add_ref(&self, media_type: &str, digest: &str, size: usize, tag: &str) {
        let path = self.dir().join("index.json");
        let mut index: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        index["manifests"].as_array_mut().unwrap().push(json!({
            "mediaType": media_type,
            "digest": digest,
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        std::fs::write(path, serde_json::to_vec(&index).unwrap()).unwrap();
    }

    /// Pushes `tag` of this layout (all platforms of an index) to
    /// `dest` (`127.0.0.1:port/repo:tag`, an anonymous plain-http
    /// registry) byte for byte: blobs and manifests go as they are, so the
    /// digests the test knows are the ones the registry serves. (skopeo
    /// would compress uncompressed layers on the way.)
    pub fn push(&self, tag: &str, dest: &str) {
        let (hostport, rest) = dest.split_once('/').unwrap();
        let port: u16 = hostport.rsplit_once(':').unwrap().1.parse().unwrap();
        let (repo, dest_tag) = rest.rsplit_once(':').unwrap();
        let index: Value =
            serde_json::from_slice(&std::fs::read(self.dir().join("index.json")).unwrap()).unwrap();
        let top = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap_or_else(|| panic!("no {tag} in the layout"));
        self.push_manifest(port, repo, top, dest_tag);
    }

    fn blob(&self, digest: &str) -> Vec<u8> {
        std::fs::read(
            self.dir()
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap()
    }

    fn push_manifest(&self, port: u16, repo: &str, desc: &Value, reference: &str) {
        let digest = desc["digest"].as_str().unwrap();
        let media_type = desc["mediaType"].as_str().unwrap();
        let body = self.blob(digest);
        let m: Value = serde_json::from_slice(&body).unwrap();
        if let Some(children) = m["manifests"].as_array() {
            for c in children {
                self.push_manifest(port, repo, c, c["digest"].as_str().unwrap());
            }
        } else {
            let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_string()];
            for l in m["layers"].as_array().unwrap() {
                blobs.push(l["digest"].as_str().unwrap().to_string());
            }
            for b in blobs {
                push_blob(port, repo, &b, &self.blob(&b));
            }
        }
        let (status, _, text) = http(
            port,
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            &body,
        );
        assert_eq!(status, 201, "push manifest {digest} to {repo}: {text}");
    }
}

/// One blob, monolithic upload, skipped when the registry has it.
fn push_blob(port: u16, repo: &str, digest: &str, bytes: &[u8]) {
    let (status, _, _) = http(
        port,
        "HEAD",
        &format!("/v2/{repo}/blobs/{digest}"),
        &[],
        b"",
    );
    if status == 200 {
        return;
    }
    let (status, headers, text) = http(
        port,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        b"",
    );
    assert_eq!(status, 202, "start an upload to {repo}: {text}");
    let location = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("location"))
        .map(|(_, v)| v.clone())
        .unwrap();
    let path = match location.find("/v2/") {
        Some(i) => location[i..].to_string(),
        None => location,
    };
    let sep = if path.contains('?') { '&' } else { '?' };
    let (status, _, text) = http(
        port,
        "PUT",
        &format!("{path}{sep}digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        bytes,
    );
    assert_eq!(status, 201, "upload {digest} to {repo}: {text}");
}

/// A plain HTTP/1.1 exchange with 127.0.0.1:`port`: status, headers, body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let hs = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    (status, hs, rest.to_string())
}

/// Runs `cmd` (a peer tool: skopeo, podman), panicking with its stderr
/// on failure; returns its stdout.
pub fn stdout_of(cmd: &mut Command) -> String {
    let what = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "{what}: {e}: apt-get install {}",
            cmd.get_program().to_string_lossy()
        )
    });
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs skopeo, panicking with its output on failure.
pub fn skopeo(args: &[&str]) -> String {
    stdout_of(Command::new("skopeo").arg("--insecure-policy").args(args))
}

/// A multi-platform index: one image per (arch, variant), each with a
/// busybox layer and a `/platform` file naming its platform.
pub fn multi_platform_layout(tag: &str, platforms: &[(&str, Option<&str>)]) -> OciLayout {
    let layout = OciLayout::new();
    let base = busybox_layer();
    let mut entries = Vec::new();
    for (arch, variant) in platforms {
        let name = match variant {
            Some(v) => format!("linux/{arch}/{v}"),
            None => format!("linux/{arch}"),
        };
        let img = ImageBuilder::new()
            .arch(arch, *variant)
            .layer(base.clone(), Compression::Gzip)
            .layer(
                TarBuilder::new()
                    .file("platform", format!("{name}\n").as_bytes())
                    .build(),
                Compression::Gzip,
            )
            .build();
        layout.add_image(&img);
        let mut platform = json!({"os": "linux", "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = json!(v);
        }
        entries.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": img.manifest_digest,
            "size": img.manifest.len(),
            "platform": platform,
        }));
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }))
    .unwrap();
    let d = layout.add_blob(&index);
    layout.add_ref(
        "application/vnd.oci.image.index.v1+json",
        &d,
        index.len(),
        tag,
    );
    layout
}

/// A tar of a busybox root filesystem (the binary, applet links, /etc).
pub fn busybox_layer() -> Vec<u8> {
    static TAR: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    TAR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("hako-busybox-")
            .tempdir()
            .unwrap();
        crate::make_busybox_rootfs(dir.path());
        TarBuilder::new().tree(dir.path()).build()
    })
    .clone()
}

/// busybox as a one-layer gzip image.
pub fn busybox_image() -> BuiltImage {
    ImageBuilder::new()
        .layer(busybox_layer(), Compression::Gzip)
        .build()
}

/// Five layers over busybox that exercise whiteouts, opaque directories,
/// hard links, long names and replaced entries. The final tree has:
/// - `/data/keep` = "keep\n" and `/data/link` a hard link to it;
/// - no `/data/gone` (whited out in layer 3);
/// - `/data/dir` holding only `new` = "new\n" (opaque in layer 3; `old`
///   from layer 2 hidden);
/// - `/data/replaced` = "second\n" (layer 4 replaces layer 2's file);
/// - `/data/<150 x's>` = "long\n";
/// - `/data/sym` a symlink to `keep`;
/// - `/data/mode` mode 0750 owned by uid 1000 (layer 5).
pub fn layered_image() -> BuiltImage {
    let long = format!("data/{}", "x".repeat(150));
    ImageBuilder::new()
        .layer(busybox_layer(), Compression::Gzip)
        .layer(
            TarBuilder::new()
                .dir("data")
                .file("data/keep", b"keep\n")
                .hardlink("data/link", "data/keep")
                .file("data/gone", b"gone\n")
                .dir("data/dir")
                .file("data/dir/old", b"old\n")
                .file("data/replaced", b"first\n")
                .build(),
            Compression::Gzip,
        )
        .layer(
            TarBuilder::new()
                .whiteout("data/gone")
                .opaque("data/dir")
                .file("data/dir/new", b"new\n")
                .build(),
            Compression::Gzip,
        )
        .layer(
            TarBuilder::new()
                .file("data/replaced", b"second\n")
                .file(&long, b"long\n")
                .symlink("data/sym", "keep")
                .build(),
            Compression::None,
        )
        .layer(
            TarBuilder::new()
                .file_with("data/mode", b"mode\n", 0o750, 1000)
                .build(),
            Compression::Zstd,
        )
        .build()
}

/// busybox with its layer compressed by zstd.
pub fn zstd_image() -> BuiltImage {
    ImageBuilder::new()
        .layer(busybox_layer(), Compression::Zstd)
        .build()
}

/// Where fixtures keep what is slow to make: `$HAKO_FIXTURE_CACHE`, else
/// `/var/cache/hako-fixtures`.
pub fn fixture_cache_dir() -> PathBuf {
    let dir = std::env::var_os("HAKO_FIXTURE_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/hako-fixtures"), PathBuf::from);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A Debian minbase root filesystem as a tar (debootstrap through the
/// machine's apt mirror), cached in [`fixture_cache_dir`]. Made once per
/// machine; several test processes wait on one lock.
pub fn debian_minbase_tar() -> PathBuf {
    let cache = fixture_cache_dir();
    let tar = cache.join("debian-minbase.tar");
    let lock = std::fs::File::create(cache.join("debian-minbase.lock")).unwrap();
    lock.lock().unwrap();
    if tar.exists() {
        return tar;
    }
    let mirror = apt_mirror();
    // The mirror is the one thing here that is not on this machine: a
    // failed download gets two more tries.
    let mut failures = Vec::new();
    let root = loop {
        let root = tempfile::Builder::new()
            .prefix("hako-debootstrap-")
            .tempdir_in(&cache)
            .unwrap();
        let out = Command::new("debootstrap")
            .args(["--variant=minbase", "bookworm"])
            .arg(root.path())
            .arg(&mirror)
            .output()
            .unwrap_or_else(|e| panic!("debootstrap: {e}: apt-get install debootstrap"));
        if out.status.success() {
            break root;
        }
        // debootstrap mounts /proc and /sys in its target; a failed run
        // can leave them there.
        unmount_under(root.path());
        failures.push(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
        assert!(
            failures.len() < 3,
            "debootstrap --variant=minbase bookworm {mirror} failed 3 times: {}",
            failures.join("\n---\n")
        );
        std::thread::sleep(std::time::Duration::from_secs(5));
    };
    unmount_under(root.path());
    let part = cache.join("debian-minbase.tar.part");
    let st = Command::new("tar")
        .args(["--numeric-owner", "--xattrs", "-C"])
        .arg(root.path())
        .arg("-cf")
        .arg(&part)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar of the debootstrap root");
    std::fs::rename(&part, &tar).unwrap();
    tar
}

/// Unmounts whatever is mounted below `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The machine's apt mirror for Debian bookworm: the sources entry whose
/// suites include `bookworm`.
fn apt_mirror() -> String {
    let mut texts = vec![std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut files: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        texts.extend(
            files
                .iter()
                .map(|f| std::fs::read_to_string(f).unwrap_or_default()),
        );
    }
    for t in &texts {
        // One-line form: deb [opts] URI SUITE COMPONENTS...
        for line in t.lines() {
            let words: Vec<&str> = line
                .split_whitespace()
                .filter(|w| !w.starts_with('['))
                .collect();
            if words.first() == Some(&"deb") && words.get(2) == Some(&"bookworm") {
                return words[1].to_string();
            }
        }
        // deb822 form: paragraphs with URIs: and Suites: fields.
        for para in t.split("\n\n") {
            let field = |name: &str| {
                para.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                    .unwrap_or_default()
            };
            if field("Suites:").iter().any(|s| s == "bookworm")
                && let Some(u) = field("URIs:").first()
            {
                return u.clone();
            }
        }
    }
    panic!(
        "no apt source for Debian bookworm in /etc/apt/sources.list(.d): debootstrap needs one \
         to build the Debian minbase fixture"
    )
}

/// A Debian minbase image: one gzip layer of the debootstrap root.
pub fn debian_minbase_image() -> BuiltImage {
    let tar = std::fs::read(debian_minbase_tar()).unwrap();
    ImageBuilder::new()
        .config("Cmd", json!(["bash"]))
        .layer(tar, Compression::Gzip)
        .build()
}

/// A layer of `size` incompressible bytes in one file, for tests that
/// need a pull to take a while.
pub fn big_layer(size: usize) -> Vec<u8> {
    let mut data = vec![0u8; size];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in data.chunks_mut(8) {
        // xorshift: fast, and gzip cannot shrink it.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    TarBuilder::new().file("big", &data).build()
}
