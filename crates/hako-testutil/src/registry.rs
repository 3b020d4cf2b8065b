//! A real OCI registry for tests: Debian's `docker-registry` (distribution
//! 2.x) on a free loopback port, in its own temporary directory, anonymous
//! or with basic auth (htpasswd), token auth (a tiny token server in a
//! thread, JWTs signed with `openssl`), or TLS (a CA and a certificate for
//! 127.0.0.1 made with `openssl`). Dropping it kills and reaps the process,
//! stops the token server and removes the directory.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The registry binary Debian's `docker-registry` package installs.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// The `service` the token-auth registry names in its challenges.
pub const TOKEN_SERVICE: &str = "hako-test-registry";
const TOKEN_ISSUER: &str = "hako-test-issuer";

enum Auth {
    None,
    Basic { user: String, pass: String },
    Token { user: String, pass: String },
    Tls,
}

/// A running registry; see the module doc.
pub struct Registry {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    ca_cert: Option<PathBuf>,
    token_server: Option<TokenServer>,
}

fn run(dir: &Path, program: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}: install it (apt-get install {program})"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local address").port()
}

/// Whether something answers HTTP on the port (an https server answers a
/// plain request with a 400, which is enough to know it is up).
fn answers_http(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    let mut got = 0;
    while got < 8 {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    buf[..got].starts_with(b"HTTP/1.")
}

impl Registry {
    /// An anonymous registry over plain http on 127.0.0.1.
    pub fn start() -> Registry {
        Registry::launch(Auth::None)
    }

    /// A registry that wants basic auth from `user` with `pass`.
    pub fn with_basic_auth(user: &str, pass: &str) -> Registry {
        Registry::launch(Auth::Basic {
            user: user.to_string(),
            pass: pass.to_string(),
        })
    }

    /// A registry with token auth: its token server gives anyone pull
    /// access, and push access to `user` with `pass` only.
    pub fn with_token_auth(user: &str, pass: &str) -> Registry {
        Registry::launch(Auth::Token {
            user: user.to_string(),
            pass: pass.to_string(),
        })
    }

    /// An anonymous registry over https, with a certificate for 127.0.0.1
    /// from a CA of its own ([`Registry::ca_cert`]).
    pub fn with_tls() -> Registry {
        Registry::launch(Auth::Tls)
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT/name`.
    pub fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.host())
    }

    /// The CA certificate (PEM) of a TLS registry.
    pub fn ca_cert(&self) -> Option<PathBuf> {
        self.ca_cert.clone()
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The registry's filesystem storage (`docker/registry/v2/...` under
    /// it), for tests that corrupt what it serves.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    fn launch(auth: Auth) -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: apt-get install docker-registry"
        );
        let mut dir = tempfile::Builder::new()
            .prefix("hako-registry-")
            .tempdir()
            .expect("make a temporary directory");
        let d = dir.path().to_path_buf();
        fs::create_dir(d.join("storage")).expect("make the storage directory");
        let mut auth_yaml = String::new();
        let mut tls_yaml = String::new();
        let mut ca_cert = None;
        let mut token_server = None;
        match &auth {
            Auth::None => {}
            Auth::Basic { user, pass } => {
                let line = run(&d, "htpasswd", &["-Bbn", user, pass]);
                fs::write(d.join("htpasswd"), line).expect("write htpasswd");
                auth_yaml = format!(
                    "auth:\n  htpasswd:\n    realm: hako-test\n    path: {}\n",
                    d.join("htpasswd").display()
                );
            }
            Auth::Token { user, pass } => {
                run(
                    &d,
                    "openssl",
                    &[
                        "req",
                        "-x509",
                        "-newkey",
                        "rsa:2048",
                        "-nodes",
                        "-keyout",
                        "token.key",
                        "-out",
                        "token.crt",
                        "-days",
                        "2",
                        "-subj",
                        "/CN=hako-test-token-issuer",
                    ],
                );
                let der = run(
                    &d,
                    "openssl",
                    &["x509", "-in", "token.crt", "-outform", "DER"],
                );
                let server = TokenServer::start(TokenConfig {
                    user: user.clone(),
                    pass: pass.clone(),
                    key: d.join("token.key"),
                    x5c: STANDARD.encode(der),
                });
                auth_yaml = format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                    server.port,
                    d.join("token.crt").display()
                );
                token_server = Some(server);
            }
            Auth::Tls => {
                let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
                let mut args = vec!["req", "-x509"];
                args.extend(ec);
                args.extend([
                    "-nodes",
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=hako-test-ca",
                ]);
                run(&d, "openssl", &args);
                let mut args = vec!["req"];
                args.extend(ec);
                args.extend([
                    "-nodes",
                    "-keyout",
                    "tls.key",
                    "-out",
                    "tls.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ]);
                run(&d, "openssl", &args);
                fs::write(
                    d.join("tls.ext"),
                    "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
                )
                .expect("write tls.ext");
                run(
                    &d,
                    "openssl",
                    &[
                        "x509",
                        "-req",
                        "-in",
                        "tls.csr",
                        "-CA",
                        "ca.crt",
                        "-CAkey",
                        "ca.key",
                        "-CAcreateserial",
                        "-out",
                        "tls.crt",
                        "-days",
                        "2",
                        "-extfile",
                        "tls.ext",
                    ],
                );
                tls_yaml = format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    d.join("tls.crt").display(),
                    d.join("tls.key").display()
                );
                ca_cert = Some(d.join("ca.crt"));
            }
        }
        let mut last_log = String::new();
        for _ in 0..8 {
            let port = free_port();
            let config = format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: hako-test-secret\n{tls_yaml}{auth_yaml}",
                storage = d.join("storage").display(),
            );
            fs::write(d.join("config.yml"), config).expect("write config.yml");
            let log = fs::File::create(d.join("registry.log")).expect("create registry.log");
            let child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(d.join("config.yml"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup the log file"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("start {REGISTRY_BIN}: {e}"));
            let mut reg = Registry {
                child: Some(child),
                port,
                dir,
                ca_cert: ca_cert.clone(),
                token_server,
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut exited = false;
            while Instant::now() < deadline {
                if answers_http(port) {
                    return reg;
                }
                if let Some(c) = reg.child.as_mut()
                    && matches!(c.try_wait(), Ok(Some(_)))
                {
                    exited = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            last_log = reg.log();
            reg.stop();
            assert!(
                exited,
                "docker-registry did not answer on 127.0.0.1:{port} within 20s; its log:\n{last_log}"
            );
            // It exited: most likely another test took the port. Again.
            token_server = reg.token_server.take();
            dir = std::mem::replace(
                &mut reg.dir,
                tempfile::tempdir().expect("make a temporary directory"),
            );
        }
        panic!("docker-registry would not start; its last log:\n{last_log}");
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Child::kill signals this child by its own PID.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

struct TokenConfig {
    user: String,
    pass: String,
    key: PathBuf,
    x5c: String,
}

/// A token server in a thread: `GET /token?service=&scope=` with optional
/// basic credentials; anonymous callers get pull access only.
struct TokenServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TokenServer {
    fn start(cfg: TokenConfig) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the token server");
        let port = listener.local_addr().expect("local address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(s) = conn {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let _ = serve_token(s, &cfg);
                }
            }
        });
        TokenServer {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

/// Stops the accept thread however the server goes: with its registry, or
/// with a `launch` that panicked before the registry was whole.
impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn query_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(s: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()
}

fn serve_token(mut s: TcpStream, cfg: &TokenConfig) -> std::io::Result<()> {
    let mut reader = BufReader::new(s.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("authorization")
        {
            authorization = Some(v.trim().to_string());
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let params = query_params(query);
    let authenticated = match authorization {
        None => false,
        Some(a) => {
            let ok = a
                .strip_prefix("Basic ")
                .and_then(|b| STANDARD.decode(b.trim()).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .is_some_and(|up| up == format!("{}:{}", cfg.user, cfg.pass));
            if !ok {
                return respond(
                    &mut s,
                    "401 Unauthorized",
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"wrong user name or password"}]}"#,
                );
            }
            true
        }
    };
    let service = params
        .iter()
        .find(|(k, _)| k == "service")
        .map_or(TOKEN_SERVICE.to_string(), |(_, v)| v.clone());
    let access: Vec<serde_json::Value> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .filter_map(|(_, scope)| {
            let (kind, rest) = scope.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            let actions: Vec<&str> = actions
                .split(',')
                .filter(|a| authenticated || *a == "pull")
                .collect();
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions}))
        })
        .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [cfg.x5c]});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER,
        "sub": if authenticated { cfg.user.as_str() } else { "" },
        "aud": service,
        "exp": now + 600,
        "nbf": now.saturating_sub(60),
        "iat": now,
        "jti": format!("{now}-{}", std::process::id()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&cfg.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(signing_input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return respond(&mut s, "500 Internal Server Error", r#"{"error":"sign"}"#);
    }
    let jwt = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(out.stdout));
    let body = serde_json::json!({
        "token": jwt,
        "access_token": jwt,
        "expires_in": 600,
        "issued_at": "1970-01-01T00:00:00Z",
    });
    respond(&mut s, "200 OK", &body.to_string())
}
