//! The distribution client against real registries (Debian's
//! docker-registry, started per test by hako-testutil).
#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use hako_image::auth::{AuthStore, Credentials};
use hako_image::registry::{Client, RegistryConfig, RegistryError};
use hako_image::{Digest, Reference};
use hako_testutil::registry::Registry;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Bytes that do not compress, from a seed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[3]
        })
        .collect()
}

fn reference(s: &str) -> Reference {
    s.parse().unwrap()
}

fn anon() -> Client {
    Client::new(RegistryConfig::default())
}

fn push_bytes(client: &Client, r: &Reference, data: &[u8], chunk: Option<u64>) -> Digest {
    let digest = Digest::of(data);
    let owned: Arc<Vec<u8>> = Arc::new(data.to_vec());
    let open = move || -> std::io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(std::io::Cursor::new(owned.as_ref().clone())))
    };
    client
        .push_blob(r, &digest, data.len() as u64, &open, chunk)
        .unwrap();
    digest
}

fn manifest_for(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let desc = |mt: &str, b: &[u8]| serde_json::json!({"mediaType": mt, "digest": Digest::of(b).to_string(), "size": b.len()});
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", config),
        "layers": layers.iter().map(|l| desc("application/vnd.oci.image.layer.v1.tar", l)).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// Pushes a small image (config and two layers) under `r`'s tag; its
/// manifest, config and layers.
fn push_image(client: &Client, r: &Reference, seed: u64) -> (Vec<u8>, Vec<u8>, Vec<Vec<u8>>) {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "seed": seed,
        "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .unwrap();
    let l1 = noise(seed, 300_000);
    let l2 = noise(seed + 1, 200_003);
    push_bytes(client, r, &config, None);
    push_bytes(client, r, &l1, None);
    push_bytes(client, r, &l2, Some(65_536));
    let manifest = manifest_for(&config, &[&l1, &l2]);
    let d = client
        .put_manifest(r, r.tag.as_deref().unwrap(), OCI_MANIFEST, &manifest)
        .unwrap();
    assert_eq!(d, Digest::of(&manifest));
    (manifest, config, vec![l1, l2])
}

fn read_blob(client: &Client, r: &Reference, d: &Digest, offset: u64) -> Vec<u8> {
    let mut out = Vec::new();
    client
        .open_blob(r, d, offset)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn push_then_pull_back() {
    let reg = Registry::start();
    let client = anon();
    let r = reference(&reg.image("lib/app:v1"));
    let (manifest, config, layers) = push_image(&client, &r, 1);

    let by_tag = client.get_manifest(&r, "v1").unwrap();
    assert_eq!(by_tag.body, manifest, "{}", reg.log());
    assert_eq!(by_tag.media_type, OCI_MANIFEST);
    assert_eq!(by_tag.digest, Digest::of(&manifest));
    let by_digest = client.get_manifest(&r, &by_tag.digest.to_string()).unwrap();
    assert_eq!(by_digest.body, manifest);

    for (i, blob) in [config.clone(), layers[0].clone(), layers[1].clone()]
        .iter()
        .enumerate()
    {
        let d = Digest::of(blob);
        assert_eq!(read_blob(&client, &r, &d, 0), *blob, "blob {i}");
        assert_eq!(client.blob_exists(&r, &d).unwrap(), Some(blob.len() as u64));
    }
    let l1 = &layers[0];
    let d1 = Digest::of(l1);
    assert_eq!(read_blob(&client, &r, &d1, 1000), l1[1000..]);
    assert_eq!(
        read_blob(&client, &r, &d1, l1.len() as u64 - 1),
        l1[l1.len() - 1..]
    );
    let missing = Digest::of(b"not there");
    assert_eq!(client.blob_exists(&r, &missing).unwrap(), None);
    let err = client.open_blob(&r, &missing, 0).err().unwrap();
    assert!(matches!(err, RegistryError::BlobUnknown { .. }), "{err}");

    // The same client shared by threads.
    std::thread::scope(|s| {
        for blob in &layers {
            let client = client.clone();
            let r = r.clone();
            s.spawn(move || assert_eq!(read_blob(&client, &r, &Digest::of(blob), 0), *blob));
        }
    });
}

#[test]
fn missing_manifest_names_tag_and_repository() {
    let reg = Registry::start();
    let client = anon();
    let r = reference(&reg.image("lib/nothing:v9"));
    let err = client.get_manifest(&r, "v9").err().unwrap();
    let msg = err.to_string();
    assert!(
        matches!(err, RegistryError::ManifestUnknown { .. }),
        "{msg}"
    );
    assert!(msg.contains("v9") && msg.contains("lib/nothing"), "{msg}");

    // A digest that is not there either.
    let d = Digest::of(b"x").to_string();
    let msg = client.get_manifest(&r, &d).err().unwrap().to_string();
    assert!(msg.contains(&d) && msg.contains("lib/nothing"), "{msg}");
}

#[test]
fn mount_from_another_repository() {
    let reg = Registry::start();
    let client = anon();
    let a = reference(&reg.image("team/a:v1"));
    let b = reference(&reg.image("team/b:v1"));
    let data = noise(7, 50_000);
    let d = push_bytes(&client, &a, &data, None);
    assert_eq!(client.blob_exists(&b, &d).unwrap(), None);
    assert!(
        client.mount_blob(&b, &d, "team/a").unwrap(),
        "{}",
        reg.log()
    );
    assert_eq!(client.blob_exists(&b, &d).unwrap(), Some(50_000));
    assert_eq!(read_blob(&client, &b, &d, 0), data);
    // Nothing to mount: the registry starts an upload, which is dropped.
    let none = Digest::of(b"absent");
    assert!(!client.mount_blob(&b, &none, "team/a").unwrap());
}

fn auth_files(dir: &Path) -> AuthStore {
    AuthStore::with_files(
        dir.join("hako/auth.json"),
        Some(dir.join("docker/config.json")),
    )
}

#[test]
fn basic_auth() {
    let reg = Registry::with_basic_auth("alice", "s3cret");
    let r = reference(&reg.image("lib/app:v1"));
    let tmp = tempfile::tempdir().unwrap();
    let store = auth_files(tmp.path());

    let no_creds = Client::new(RegistryConfig {
        auth: store.clone(),
        ..Default::default()
    });
    let err = no_creds.get_manifest(&r, "v1").err().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{msg}");
    assert!(msg.contains(&format!("hako login {}", reg.host())), "{msg}");
    let data = b"layer".to_vec();
    let open = move || -> std::io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(std::io::Cursor::new(data.clone())))
    };
    let err = no_creds
        .push_blob(&r, &Digest::of(b"layer"), 5, &open, None)
        .err()
        .unwrap();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");

    let good = Credentials {
        username: "alice".into(),
        password: "s3cret".into(),
    };
    let bad = Credentials {
        username: "alice".into(),
        password: "wrong".into(),
    };
    assert!(no_creds.check_login(&reg.host(), &good).is_ok());
    let err = no_creds.check_login(&reg.host(), &bad).err().unwrap();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");

    store.store(&reg.host(), &good).unwrap();
    let client = Client::new(RegistryConfig {
        auth: store.clone(),
        ..Default::default()
    });
    let (manifest, _, layers) = push_image(&client, &r, 2);
    assert_eq!(client.get_manifest(&r, "v1").unwrap().body, manifest);
    let d = Digest::of(&layers[0]);
    assert_eq!(read_blob(&client, &r, &d, 10), layers[0][10..]);

    // Wrong stored credentials: refused, and said so.
    store.store(&reg.host(), &bad).unwrap();
    let client = Client::new(RegistryConfig {
        auth: store,
        ..Default::default()
    });
    let msg = client.get_manifest(&r, "v1").err().unwrap().to_string();
    assert!(
        msg.contains("refused") && msg.contains("hako login"),
        "{msg}"
    );
}

#[test]
fn token_auth() {
    let reg = Registry::with_token_auth("bob", "hunter2");
    let r = reference(&reg.image("lib/app:v1"));
    let tmp = tempfile::tempdir().unwrap();
    let store = auth_files(tmp.path());
    let anon_client = Client::new(RegistryConfig {
        auth: store.clone(),
        ..Default::default()
    });

    // Anonymous callers may pull but not push.
    let data = b"layer".to_vec();
    let open = move || -> std::io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(std::io::Cursor::new(data.clone())))
    };
    let err = anon_client
        .push_blob(&r, &Digest::of(b"layer"), 5, &open, None)
        .err()
        .unwrap();
    assert!(
        matches!(err, RegistryError::Unauthorized { .. }),
        "{err}\n{}",
        reg.log()
    );

    let creds = Credentials {
        username: "bob".into(),
        password: "hunter2".into(),
    };
    assert!(anon_client.check_login(&reg.host(), &creds).is_ok());
    let wrong = Credentials {
        username: "bob".into(),
        password: "nope".into(),
    };
    assert!(anon_client.check_login(&reg.host(), &wrong).is_err());

    store.store(&reg.host(), &creds).unwrap();
    let client = Client::new(RegistryConfig {
        auth: store.clone(),
        ..Default::default()
    });
    let (manifest, _, layers) = push_image(&client, &r, 3);
    // Mount needs pull on the source too.
    let other = reference(&reg.image("lib/other:v1"));
    let d = Digest::of(&layers[1]);
    assert!(
        client.mount_blob(&other, &d, "lib/app").unwrap(),
        "{}",
        reg.log()
    );

    store.remove(&reg.host()).unwrap();
    let anon_client = Client::new(RegistryConfig {
        auth: store,
        ..Default::default()
    });
    let got = anon_client.get_manifest(&r, "v1").unwrap();
    assert_eq!(got.body, manifest);
    assert_eq!(read_blob(&anon_client, &r, &d, 0), layers[1]);
    assert_eq!(read_blob(&anon_client, &other, &d, 5), layers[1][5..]);
}

#[test]
fn tls_with_and_without_the_ca() {
    let reg = Registry::with_tls();
    let r = reference(&reg.image("lib/app:v1"));

    // Loopback is spoken to over plain http unless the certs dir names it.
    let plain = anon();
    let err = plain.get_manifest(&r, "v1").err().unwrap();
    assert!(
        err.to_string().contains("https") && err.to_string().contains("ca.crt"),
        "{err}"
    );

    // https, but without the CA: refused by the TLS check.
    let certs = tempfile::tempdir().unwrap();
    std::fs::create_dir(certs.path().join(reg.host())).unwrap();
    let without_ca = Client::new(RegistryConfig {
        certs_dir: Some(certs.path().to_path_buf()),
        ..Default::default()
    });
    let err = without_ca.get_manifest(&r, "v1").err().unwrap();
    assert!(matches!(err, RegistryError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("ca.crt"), "{err}");

    std::fs::copy(
        reg.ca_cert().unwrap(),
        certs.path().join(reg.host()).join("ca.crt"),
    )
    .unwrap();
    let client = Client::new(RegistryConfig {
        certs_dir: Some(certs.path().to_path_buf()),
        ..Default::default()
    });
    let (manifest, _, layers) = push_image(&client, &r, 4);
    assert_eq!(client.get_manifest(&r, "v1").unwrap().body, manifest);
    assert_eq!(
        read_blob(&client, &r, &Digest::of(&layers[0]), 7),
        layers[0][7..]
    );
}

/// A loopback TCP proxy that cuts the first blob download after `cut_after`
/// bytes of its answer; it counts the connections it carried.
struct CuttingProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
    ranges: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CuttingProxy {
    fn start(upstream: u16, cut_after: usize) -> CuttingProxy {
        CuttingProxy::start_with(upstream, cut_after, 0)
    }

    /// Also answers the first `busy` connections with a 503 and closes them.
    fn start_with(upstream: u16, cut_after: usize, busy: usize) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let ranges = Arc::new(AtomicUsize::new(0));
        let (stop2, cuts2, ranges2) = (stop.clone(), cuts.clone(), ranges.clone());
        let thread = std::thread::spawn(move || {
            let mut workers = Vec::new();
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut client) = conn else { continue };
                if cuts2.load(Ordering::SeqCst) < busy {
                    // Count the busy answers with the cuts.
                    cuts2.fetch_add(1, Ordering::SeqCst);
                    let mut buf = [0u8; 4096];
                    let _ = client.read(&mut buf);
                    let _ = client.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let blob_asked = Arc::new(AtomicBool::new(false));
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let asked = blob_asked.clone();
                let ranges = ranges2.clone();
                workers.push(std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    loop {
                        let n = match c_in.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let text = String::from_utf8_lossy(&buf[..n]);
                        if text.starts_with("GET ") && text.contains("/blobs/sha256:") {
                            asked.store(true, Ordering::SeqCst);
                            if text.to_ascii_lowercase().contains("range: bytes=") {
                                ranges.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        if s_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_out.shutdown(Shutdown::Write);
                }));
                let cuts = cuts2.clone();
                let (mut s_in, mut c_out) = (server, client);
                workers.push(std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let mut sent_for_blob = 0usize;
                    loop {
                        let n = match s_in.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if blob_asked.load(Ordering::SeqCst) && cuts.load(Ordering::SeqCst) == busy
                        {
                            sent_for_blob += n;
                            if sent_for_blob > cut_after {
                                cuts.fetch_add(1, Ordering::SeqCst);
                                let _ = c_out.shutdown(Shutdown::Both);
                                let _ = s_in.shutdown(Shutdown::Both);
                                break;
                            }
                        }
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_out.shutdown(Shutdown::Both);
                }));
            }
            for w in workers {
                let _ = w.join();
            }
        });
        CuttingProxy {
            port,
            stop,
            cuts,
            ranges,
            thread: Some(thread),
        }
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn blob_download_resumes_after_a_dropped_connection() {
    let reg = Registry::start();
    let client = anon();
    let direct = reference(&reg.image("lib/app:v1"));
    let (_, _, layers) = push_image(&client, &direct, 5);
    let d = Digest::of(&layers[0]);

    let proxy = CuttingProxy::start(reg.port(), 100_000);
    let via_proxy = reference(&format!("127.0.0.1:{}/lib/app:v1", proxy.port));
    {
        let fresh = anon();
        assert_eq!(read_blob(&fresh, &via_proxy, &d, 0), layers[0]);
        // And from an offset, after the cut was used up.
        assert_eq!(read_blob(&fresh, &via_proxy, &d, 4321), layers[0][4321..]);
    }
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1);
    assert!(
        proxy.ranges.load(Ordering::SeqCst) >= 1,
        "no Range request after the cut"
    );
}

fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn mirrors_first_then_the_registry() {
    let upstream = Registry::start();
    let mirror = Registry::start();
    let pusher = anon();

    // The image is only on the mirror: pulls of the registry's name work.
    let on_mirror = reference(&mirror.image("lib/app:v1"));
    let (manifest, _, layers) = push_image(&pusher, &on_mirror, 6);
    let r = reference(&upstream.image("lib/app:v1"));
    let client = Client::new(RegistryConfig {
        mirrors: BTreeMap::from([(upstream.host(), vec![mirror.host()])]),
        ..Default::default()
    });
    assert_eq!(client.get_manifest(&r, "v1").unwrap().body, manifest);
    let d = Digest::of(&layers[1]);
    assert_eq!(
        client.blob_exists(&r, &d).unwrap(),
        Some(layers[1].len() as u64)
    );
    assert_eq!(read_blob(&client, &r, &d, 0), layers[1]);
    // A push asks the registry alone: what only the mirror has must go up.
    assert_eq!(client.blob_in_registry(&r, &d).unwrap(), None);
    assert!(
        anon().get_manifest(&r, "v1").is_err(),
        "the registry has it too"
    );

    // An unreachable mirror and one without the image: the registry serves.
    let r2 = reference(&upstream.image("lib/only-upstream:v2"));
    let (manifest2, _, layers2) = push_image(&pusher, &r2, 7);
    let client = Client::new(RegistryConfig {
        mirrors: BTreeMap::from([(
            upstream.host(),
            vec![format!("127.0.0.1:{}", closed_port()), mirror.host()],
        )]),
        ..Default::default()
    });
    assert_eq!(client.get_manifest(&r2, "v2").unwrap().body, manifest2);
    let d2 = Digest::of(&layers2[0]);
    assert_eq!(
        client.blob_exists(&r2, &d2).unwrap(),
        Some(layers2[0].len() as u64)
    );
    assert_eq!(read_blob(&client, &r2, &d2, 3), layers2[0][3..]);
    // Missing everywhere: the registry's own answer.
    let msg = client.get_manifest(&r2, "nope").err().unwrap().to_string();
    assert!(
        msg.contains("nope") && msg.contains(&upstream.host()),
        "{msg}"
    );
}

#[test]
fn auth_store_round_trip_and_docker_config() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let store = auth_files(tmp.path());
    let c = Credentials {
        username: "u".into(),
        password: "p:w".into(),
    };
    assert_eq!(store.get("127.0.0.1:5000").unwrap(), None);
    store.store("127.0.0.1:5000", &c).unwrap();
    let file = tmp.path().join("hako/auth.json");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(store.get("127.0.0.1:5000").unwrap(), Some(c.clone()));
    assert_eq!(
        store.get("http://127.0.0.1:5000/").unwrap(),
        Some(c.clone())
    );
    store.store("docker.io", &c).unwrap();
    assert_eq!(store.get("index.docker.io").unwrap(), Some(c.clone()));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("https://index.docker.io/v1/"), "{text}");
    assert!(store.remove("127.0.0.1:5000").unwrap());
    assert!(!store.remove("127.0.0.1:5000").unwrap());
    assert_eq!(store.get("127.0.0.1:5000").unwrap(), None);
    assert_eq!(store.get("docker.io").unwrap(), Some(c.clone()));

    // Docker's config.json: read when hako's file has nothing.
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    std::fs::create_dir_all(tmp.path().join("docker")).unwrap();
    std::fs::write(
        tmp.path().join("docker/config.json"),
        serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"auth": b64("hub:hubpw")},
            "quay.io": {"auth": b64("q:qpw")},
            "https://ghcr.io": {"auth": b64("g:gpw")},
        }})
        .to_string(),
    )
    .unwrap();
    let cred = |u: &str, p: &str| {
        Some(Credentials {
            username: u.into(),
            password: p.into(),
        })
    };
    assert_eq!(store.get("quay.io").unwrap(), cred("q", "qpw"));
    assert_eq!(store.get("ghcr.io").unwrap(), cred("g", "gpw"));
    // hako's own file wins.
    assert_eq!(store.get("docker.io").unwrap(), Some(c));
    store.remove("docker.io").unwrap();
    assert_eq!(store.get("docker.io").unwrap(), cred("hub", "hubpw"));
    assert_eq!(store.get("example.com").unwrap(), None);
}

#[test]
fn busy_registry_is_retried() {
    let reg = Registry::start();
    let client = anon();
    let direct = reference(&reg.image("lib/app:v1"));
    let (manifest, _, layers) = push_image(&client, &direct, 8);
    // Two 503s, then a blob cut short once: all within the retries.
    let proxy = CuttingProxy::start_with(reg.port(), 50_000, 2);
    let via_proxy = reference(&format!("127.0.0.1:{}/lib/app:v1", proxy.port));
    let fresh = anon();
    assert_eq!(fresh.get_manifest(&via_proxy, "v1").unwrap().body, manifest);
    assert_eq!(
        read_blob(&fresh, &via_proxy, &Digest::of(&layers[0]), 0),
        layers[0]
    );
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 3);
}
