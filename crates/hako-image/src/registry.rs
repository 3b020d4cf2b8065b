//! A client of the OCI distribution API: manifests and blobs, pulled and
//! pushed, with Docker's token and basic authentication, mirrors, retries
//! with backoff, and blob downloads that resume after a dropped connection.
//!
//! It is synchronous: one `ureq` agent (per set of trusted CAs) is shared
//! by the clones of a [`Client`], so that threads reuse connections.

use crate::Digest;
use crate::auth::{AuthStore, Credentials};
use crate::reference::Reference;
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use ureq::http::{self, HeaderMap, Method, Response};

/// How many times a request is tried on connection errors and on 429,
/// 502, 503 and 504; and the first wait between tries (then doubled).
const TRIES: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// How many times a blob download reconnects after it broke off.
const RESUMES: u32 = 4;
/// The largest manifest read.
const MAX_MANIFEST: u64 = 8 << 20;

#[derive(Clone, Debug, Default)]
pub struct RegistryConfig {
    /// Registry hosts (`host` or `host:port`) spoken to over plain http.
    pub insecure: Vec<String>,
    /// Registry host -> mirror hosts tried first (pulls only).
    pub mirrors: BTreeMap<String, Vec<String>>,
    pub auth: AuthStore,
    pub user_agent: Option<String>,
    /// Extra CA certificates: `DIR/<host[:port]>/*.crt`, as in
    /// `/etc/containers/certs.d`.
    pub certs_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "{host}: cannot reach the registry ({what}): {detail}; check that it is up, the name and port are right{hint}"
    )]
    Connect {
        host: String,
        what: String,
        detail: String,
        hint: &'static str,
    },
    #[error(
        "{host}: TLS failed ({what}): {detail}; if the registry uses a private CA, put its certificate in <certs dir>/{host}/ca.crt; if it speaks plain http, list it among the insecure registries"
    )]
    Tls {
        host: String,
        what: String,
        detail: String,
    },
    #[error("unauthorized: {host} refused {what}{detail}; run `hako login {registry}`")]
    Unauthorized {
        registry: String,
        host: String,
        what: String,
        detail: String,
    },
    #[error(
        "denied: {host} does not allow {what}{detail}; check that the account given to `hako login {registry}` may use repository {repository}"
    )]
    Denied {
        registry: String,
        host: String,
        repository: String,
        what: String,
        detail: String,
    },
    #[error(
        "manifest unknown: {kind} {reference} is not in repository {repository} on {host}{detail}; check the name and {kind}"
    )]
    ManifestUnknown {
        host: String,
        repository: String,
        kind: &'static str,
        reference: String,
        detail: String,
    },
    #[error(
        "blob unknown: {digest} is not in repository {repository} on {host}{detail}; the image on the registry is incomplete, push it again"
    )]
    BlobUnknown {
        host: String,
        repository: String,
        digest: Digest,
        detail: String,
    },
    #[error("{host}: {what}: the registry answered HTTP {status}{detail}")]
    Status {
        host: String,
        what: String,
        status: u16,
        detail: String,
    },
    #[error(
        "{host}: {what}: the content does not match its digest: expected {expected}, got {actual}; the registry or a proxy served wrong content"
    )]
    DigestMismatch {
        host: String,
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{host}: {what}: {detail}")]
    Protocol {
        host: String,
        what: String,
        detail: String,
    },
    #[error("{host}: {what}: {source}")]
    Io {
        host: String,
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("CA certificates for {host} in {path}: {detail}; fix or remove the file")]
    Certs {
        host: String,
        path: PathBuf,
        detail: String,
    },
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
}

impl RegistryError {
    /// Whether trying again may help: connection trouble and overloaded
    /// servers, not refusals.
    fn transient(&self) -> bool {
        match self {
            RegistryError::Connect { .. } | RegistryError::Io { .. } => true,
            RegistryError::Status { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            _ => false,
        }
    }
}

/// A manifest as fetched: its bytes, media type and digest.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    pub body: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

/// What a token or a set of basic credentials lets through, per host.
#[derive(Clone)]
enum Authz {
    Bearer(String),
    Basic(String),
}

struct Inner {
    config: RegistryConfig,
    agent: ureq::Agent,
    /// Agents trusting extra CAs, per host; None when the host has none.
    ca_agents: Mutex<HashMap<String, Option<ureq::Agent>>>,
    /// Authorization per (host, scope).
    tokens: Mutex<HashMap<(String, String), Authz>>,
}

/// A registry client. Cheap to clone; clones share connections and tokens.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// The body of a request.
enum Payload<'a> {
    Empty,
    Bytes(&'a [u8]),
    Reader(Box<dyn Read + Send>, u64),
}

/// One request, made again as often as auth and retries need.
struct Req<'a> {
    method: Method,
    /// A path under `/v2/` or an absolute URL (upload locations).
    url: String,
    headers: Vec<(&'static str, String)>,
    /// What is being done, for messages.
    what: String,
    body: &'a dyn Fn() -> io::Result<Payload<'a>>,
}

fn no_body<'a>() -> io::Result<Payload<'a>> {
    Ok(Payload::Empty)
}

/// Where requests for one registry go, and as whom.
struct Target<'a> {
    /// The host requests go to (a mirror, or the registry's API host).
    host: String,
    /// The name credentials are stored under (`docker.io`, `host:port`).
    registry: String,
    repository: &'a str,
    /// `repository:NAME:ACTIONS`, space-separated.
    scope: String,
    /// Credentials given for this call, instead of the store's.
    creds: Option<&'a Credentials>,
}

fn is_loopback(host: &str) -> bool {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    h == "localhost"
        || h == "::1"
        || h.parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A challenge from `WWW-Authenticate`: scheme and parameters.
fn parse_challenge(value: &str) -> (String, HashMap<String, String>) {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next().is_none() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            val.push(n);
                        }
                    }
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), val.trim().to_string());
    }
    (scheme.to_ascii_lowercase(), params)
}

/// `: CODE: message` from an OCI error body, or a short piece of the body.
fn error_detail(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(errors) = v.get("errors").and_then(|e| e.as_array())
    {
        let parts: Vec<String> = errors
            .iter()
            .map(|e| {
                let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
                let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
                match (code.is_empty(), msg.is_empty()) {
                    (false, false) => format!("{code}: {msg}"),
                    (false, true) => code.to_string(),
                    _ => msg.to_string(),
                }
            })
            .filter(|s| !s.is_empty())
            .collect();
        if !parts.is_empty() {
            return format!(" ({})", parts.join("; "));
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        let short: String = text.chars().take(200).collect();
        format!(" ({short})")
    }
}

fn read_limited(body: &mut ureq::Body, limit: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    body.as_reader().take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the answer is larger than {limit} bytes"),
        ));
    }
    Ok(out)
}

/// Reads a little of an error answer for its message.
fn small_body(resp: &mut Response<ureq::Body>) -> Vec<u8> {
    read_limited(resp.body_mut(), 64 * 1024).unwrap_or_default()
}

fn strip_scheme(host: &str) -> (&str, Option<bool>) {
    if let Some(h) = host.strip_prefix("https://") {
        (h.trim_end_matches('/'), Some(false))
    } else if let Some(h) = host.strip_prefix("http://") {
        (h.trim_end_matches('/'), Some(true))
    } else {
        (host.trim_end_matches('/'), None)
    }
}

fn connect_error(host: &str, what: &str, e: ureq::Error) -> RegistryError {
    let detail = e.to_string();
    let tls = matches!(e, ureq::Error::Tls(_) | ureq::Error::Rustls(_))
        || detail.contains("certificate")
        || detail.contains("InvalidContentType")
        || detail.contains("CorruptMessage");
    if tls {
        return RegistryError::Tls {
            host: host.to_string(),
            what: what.to_string(),
            detail,
        };
    }
    RegistryError::Connect {
        host: host.to_string(),
        what: what.to_string(),
        detail,
        hint: if is_loopback(host) {
            ""
        } else {
            ", and whether it needs to be listed among the insecure (plain http) registries"
        },
    }
}

impl Client {
    pub fn new(config: RegistryConfig) -> Client {
        let agent = Self::make_agent(&config, ureq::tls::RootCerts::WebPki);
        Client {
            inner: Arc::new(Inner {
                config,
                agent,
                ca_agents: Mutex::new(HashMap::new()),
                tokens: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn make_agent(config: &RegistryConfig, roots: ureq::tls::RootCerts) -> ureq::Agent {
        let ua = config
            .user_agent
            .clone()
            .unwrap_or_else(|| format!("hako/{}", env!("CARGO_PKG_VERSION")));
        let tls = ureq::tls::TlsConfig::builder().root_certs(roots).build();
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(ua)
            .tls_config(tls)
            .max_redirects(10)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .timeout_per_write(Some(Duration::from_secs(120)))
            .build()
            .new_agent()
    }

    /// The agent for a host: one trusting its extra CAs if the certs dir
    /// has any for it, else the shared one.
    fn agent_for(&self, host: &str) -> Result<ureq::Agent, RegistryError> {
        let Some(dir) = &self.inner.config.certs_dir else {
            return Ok(self.inner.agent.clone());
        };
        let mut cache = self
            .inner
            .ca_agents
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(a) = cache.get(host) {
            return Ok(a.clone().unwrap_or_else(|| self.inner.agent.clone()));
        }
        let hostdir = dir.join(host);
        let mut extra: Vec<ureq::tls::Certificate<'static>> = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&hostdir) {
            let mut paths: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "crt"))
                .collect();
            paths.sort();
            for path in paths {
                let certs_err = |detail: String| RegistryError::Certs {
                    host: host.to_string(),
                    path: path.clone(),
                    detail,
                };
                let pem = std::fs::read(&path).map_err(|e| certs_err(e.to_string()))?;
                let before = extra.len();
                for item in ureq::tls::parse_pem(&pem) {
                    if let ureq::tls::PemItem::Certificate(c) =
                        item.map_err(|e| certs_err(e.to_string()))?
                    {
                        extra.push(c);
                    }
                }
                if extra.len() == before {
                    return Err(certs_err("it holds no PEM certificate".to_string()));
                }
            }
        }
        let agent = if extra.is_empty() {
            None
        } else {
            let mut all: Vec<ureq::tls::Certificate<'static>> =
                webpki_root_certs::TLS_SERVER_ROOT_CERTS
                    .iter()
                    .map(|c| ureq::tls::Certificate::from_der(c.as_ref()))
                    .collect();
            all.extend(extra);
            Some(Self::make_agent(
                &self.inner.config,
                ureq::tls::RootCerts::new_with_certs(&all),
            ))
        };
        cache.insert(host.to_string(), agent.clone());
        Ok(agent.unwrap_or_else(|| self.inner.agent.clone()))
    }

    /// `http` or `https` for a host (mirror names may carry a scheme).
    fn base_url(&self, host: &str) -> String {
        let (h, plain) = strip_scheme(host);
        // Extra CAs for a host mean it speaks https, even on loopback.
        let has_certs = self
            .inner
            .config
            .certs_dir
            .as_ref()
            .is_some_and(|d| d.join(h).is_dir());
        let plain = plain.unwrap_or_else(|| {
            !has_certs && is_loopback(h)
                || self
                    .inner
                    .config
                    .insecure
                    .iter()
                    .any(|i| strip_scheme(i).0 == h)
        });
        format!("{}://{h}", if plain { "http" } else { "https" })
    }

    fn url(&self, host: &str, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else if path.starts_with('/') {
            format!("{}{path}", self.base_url(host))
        } else {
            format!("{}/v2/{path}", self.base_url(host))
        }
    }

    fn credentials(&self, t: &Target) -> Result<Option<Credentials>, RegistryError> {
        if let Some(c) = t.creds {
            return Ok(Some(c.clone()));
        }
        let key = strip_scheme(&t.host).0;
        // A mirror's own credentials, else the registry's.
        if let Some(c) = self.inner.config.auth.get(key)? {
            return Ok(Some(c));
        }
        if key != t.registry {
            return Ok(self.inner.config.auth.get(&t.registry)?);
        }
        Ok(None)
    }

    fn cached_authz(&self, t: &Target) -> Option<Authz> {
        let tokens = self.inner.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens
            .get(&(t.host.clone(), t.scope.clone()))
            .or_else(|| tokens.get(&(t.host.clone(), String::new())))
            .cloned()
    }

    fn cache_authz(&self, t: &Target, scope: &str, a: Authz) {
        let mut tokens = self.inner.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.insert((t.host.clone(), scope.to_string()), a);
    }

    /// Sends one request once (after following redirects).
    fn send_once(
        &self,
        t: &Target,
        req: &Req,
        authz: Option<&Authz>,
    ) -> Result<Response<ureq::Body>, RegistryError> {
        let url = self.url(&t.host, &req.url);
        let agent = self.agent_for(strip_scheme(&t.host).0)?;
        let mut b = http::Request::builder()
            .method(req.method.clone())
            .uri(&url);
        for (k, v) in &req.headers {
            b = b.header(*k, v);
        }
        match authz {
            Some(Authz::Bearer(tok)) => b = b.header("Authorization", format!("Bearer {tok}")),
            Some(Authz::Basic(v)) => b = b.header("Authorization", format!("Basic {v}")),
            None => {}
        }
        let payload = (req.body)().map_err(|source| RegistryError::Io {
            host: t.host.clone(),
            what: req.what.clone(),
            source,
        })?;
        let bad = |e: http::Error| RegistryError::Protocol {
            host: t.host.clone(),
            what: req.what.clone(),
            detail: format!("cannot make a request for {url}: {e}"),
        };
        let result = match payload {
            Payload::Empty => {
                if matches!(req.method, Method::POST | Method::PUT | Method::PATCH) {
                    agent.run(b.body(&[][..]).map_err(bad)?)
                } else {
                    agent.run(b.body(()).map_err(bad)?)
                }
            }
            Payload::Bytes(bytes) => agent.run(
                b.header("Content-Length", bytes.len().to_string())
                    .body(bytes)
                    .map_err(bad)?,
            ),
            Payload::Reader(reader, len) => agent.run(
                b.header("Content-Length", len.to_string())
                    .body(ureq::SendBody::from_owned_reader(reader.take(len)))
                    .map_err(bad)?,
            ),
        };
        let mut resp = result.map_err(|e| connect_error(&t.host, &req.what, e))?;
        // Go's https servers answer a plain request with a bare HTTP/1.0 400.
        if resp.status().as_u16() == 400
            && resp.version() == http::Version::HTTP_10
            && url.starts_with("http://")
        {
            let body = small_body(&mut resp);
            return Err(RegistryError::Protocol {
                host: t.host.clone(),
                what: req.what.clone(),
                detail: format!(
                    "the registry speaks https, not plain http{}; remove it from the insecure registries, or put its CA certificate in <certs dir>/{}/ca.crt",
                    error_detail(&body),
                    strip_scheme(&t.host).0
                ),
            });
        }
        Ok(resp)
    }

    /// Sends with retries on transient failures.
    fn send_retrying(
        &self,
        t: &Target,
        req: &Req,
        authz: Option<&Authz>,
    ) -> Result<Response<ureq::Body>, RegistryError> {
        let mut wait = FIRST_BACKOFF;
        let mut tries = 0;
        loop {
            tries += 1;
            let result = self.send_once(t, req, authz).and_then(|mut resp| {
                let status = resp.status().as_u16();
                if matches!(status, 429 | 502 | 503 | 504) {
                    let detail = error_detail(&small_body(&mut resp));
                    Err(RegistryError::Status {
                        host: t.host.clone(),
                        what: req.what.clone(),
                        status,
                        detail,
                    })
                } else {
                    Ok(resp)
                }
            });
            match result {
                Err(e) if e.transient() && tries < TRIES => {
                    std::thread::sleep(wait);
                    wait *= 2;
                }
                other => return other,
            }
        }
    }

    /// Sends a request, answering 401 challenges: a bearer token from the
    /// realm, or basic credentials. The answer is never 401.
    fn send(&self, t: &Target, req: &Req) -> Result<Response<ureq::Body>, RegistryError> {
        let mut authz = self.cached_authz(t);
        let mut resp = self.send_retrying(t, req, authz.as_ref())?;
        // Looked up on the first 401 only, and then once: it reads files
        // and may run a credential helper.
        let mut known: Option<Option<Credentials>> = None;
        for _ in 0..2 {
            if resp.status().as_u16() != 401 {
                return Ok(resp);
            }
            let challenge = header(resp.headers(), "www-authenticate")
                .unwrap_or("")
                .to_string();
            let body = small_body(&mut resp);
            let (scheme, params) = parse_challenge(&challenge);
            let creds = match &known {
                Some(c) => c.clone(),
                None => known.insert(self.credentials(t)?).clone(),
            };
            let unauthorized = |detail: String| RegistryError::Unauthorized {
                registry: t.registry.clone(),
                host: t.host.clone(),
                what: req.what.clone(),
                detail,
            };
            let next = match scheme.as_str() {
                "bearer" => {
                    let realm = params.get("realm").cloned().ok_or_else(|| {
                        unauthorized(format!(": its challenge names no realm: {challenge:?}"))
                    })?;
                    let scope = if t.scope.is_empty() {
                        params.get("scope").cloned().unwrap_or_default()
                    } else {
                        t.scope.clone()
                    };
                    let token = self.fetch_token(
                        t,
                        &realm,
                        params.get("service").map(String::as_str),
                        &scope,
                        creds.as_ref(),
                    )?;
                    let a = Authz::Bearer(token);
                    self.cache_authz(t, &t.scope, a.clone());
                    a
                }
                "basic" => {
                    let Some(c) = creds else {
                        return Err(unauthorized(format!(
                            ": it wants a user name and password{}",
                            error_detail(&body)
                        )));
                    };
                    let a = Authz::Basic(c.basic());
                    if matches!(authz, Some(Authz::Basic(_))) {
                        // The same credentials were refused already.
                        return Err(unauthorized(format!(
                            ": the credentials were refused{}",
                            error_detail(&body)
                        )));
                    }
                    self.cache_authz(t, "", a.clone());
                    a
                }
                _ => {
                    return Err(unauthorized(format!(
                        ": unsupported challenge {challenge:?}{}",
                        error_detail(&body)
                    )));
                }
            };
            authz = Some(next);
            resp = self.send_retrying(t, req, authz.as_ref())?;
        }
        if resp.status().as_u16() == 401 {
            let detail = error_detail(&small_body(&mut resp));
            let had_creds = match known {
                Some(c) => c.is_some(),
                None => self.credentials(t)?.is_some(),
            };
            return Err(RegistryError::Unauthorized {
                registry: t.registry.clone(),
                host: t.host.clone(),
                what: req.what.clone(),
                detail: if had_creds {
                    format!(": the credentials were refused{detail}")
                } else {
                    format!(": no credentials are stored for it{detail}")
                },
            });
        }
        Ok(resp)
    }

    fn fetch_token(
        &self,
        t: &Target,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        creds: Option<&Credentials>,
    ) -> Result<String, RegistryError> {
        let mut query = Vec::new();
        if let Some(s) = service {
            query.push(format!("service={}", enc(s)));
        }
        for s in scope.split_whitespace() {
            query.push(format!("scope={}", enc(s)));
        }
        let url = if query.is_empty() {
            realm.to_string()
        } else if realm.contains('?') {
            format!("{realm}&{}", query.join("&"))
        } else {
            format!("{realm}?{}", query.join("&"))
        };
        let what = format!("get a token from {realm}");
        let (realm_host, _) = realm.split_once("://").map_or((realm, ""), |(_, rest)| {
            (rest.split('/').next().unwrap_or(rest), "")
        });
        let token_target = Target {
            host: if realm.starts_with("http://") {
                format!("http://{realm_host}")
            } else {
                format!("https://{realm_host}")
            },
            registry: t.registry.clone(),
            repository: t.repository,
            scope: String::new(),
            creds: None,
        };
        let mut headers = Vec::new();
        if let Some(c) = creds {
            headers.push(("Authorization", format!("Basic {}", c.basic())));
        }
        let req = Req {
            method: Method::GET,
            url,
            headers,
            what: what.clone(),
            body: &no_body,
        };
        let mut resp = self.send_retrying(&token_target, &req, None)?;
        let status = resp.status().as_u16();
        let body = read_limited(resp.body_mut(), 1 << 20).map_err(|source| RegistryError::Io {
            host: t.host.clone(),
            what: what.clone(),
            source,
        })?;
        match status {
            200 => {}
            401 | 403 => {
                return Err(RegistryError::Unauthorized {
                    registry: t.registry.clone(),
                    host: t.host.clone(),
                    what: format!("a token for {scope:?}"),
                    detail: if creds.is_some() {
                        format!(": the credentials were refused{}", error_detail(&body))
                    } else {
                        format!(": anonymous access is not allowed{}", error_detail(&body))
                    },
                });
            }
            _ => {
                return Err(RegistryError::Status {
                    host: t.host.clone(),
                    what,
                    status,
                    detail: error_detail(&body),
                });
            }
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                host: t.host.clone(),
                what: what.clone(),
                detail: format!("the token answer is not JSON: {e}"),
            })?;
        v.get("token")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .or_else(|| v.get("access_token").and_then(|t| t.as_str()))
            .map(str::to_string)
            .ok_or_else(|| RegistryError::Protocol {
                host: t.host.clone(),
                what,
                detail: "the token answer holds no token".to_string(),
            })
    }

    /// The hosts to pull from: the registry's mirrors in order, then it.
    fn pull_hosts(&self, r: &Reference) -> Vec<String> {
        let mut hosts = Vec::new();
        for key in [r.registry.as_str(), r.api_host()] {
            if let Some(m) = self.inner.config.mirrors.get(key) {
                for h in m {
                    if !hosts.contains(h) {
                        hosts.push(h.clone());
                    }
                }
            }
        }
        hosts.push(r.api_host().to_string());
        hosts
    }

    fn target<'a>(&self, host: &str, r: &'a Reference, scope: String) -> Target<'a> {
        Target {
            host: host.to_string(),
            registry: r.registry.clone(),
            repository: &r.repository,
            scope,
            creds: None,
        }
    }

    /// Runs `f` against each pull host in turn; the registry's own error
    /// if all fail.
    fn with_mirrors<T>(
        &self,
        r: &Reference,
        mut f: impl FnMut(&Target) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let hosts = self.pull_hosts(r);
        let scope = format!("repository:{}:pull", r.repository);
        let mut last = None;
        for host in &hosts {
            let t = self.target(host, r, scope.clone());
            match f(&t) {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::Protocol {
            host: r.api_host().to_string(),
            what: "pull".to_string(),
            detail: "no host to pull from".to_string(),
        }))
    }

    fn status_error(t: &Target, what: &str, resp: &mut Response<ureq::Body>) -> RegistryError {
        let status = resp.status().as_u16();
        let detail = error_detail(&small_body(resp));
        if status == 403 {
            return RegistryError::Denied {
                registry: t.registry.clone(),
                host: t.host.clone(),
                repository: t.repository.to_string(),
                what: what.to_string(),
                detail,
            };
        }
        RegistryError::Status {
            host: t.host.clone(),
            what: what.to_string(),
            status,
            detail,
        }
    }

    /// Fetches a manifest by tag or digest.
    pub fn get_manifest(
        &self,
        r: &Reference,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let pinned = reference.parse::<Digest>().ok();
        self.with_mirrors(r, |t| {
            let what = format!("get manifest {}:{reference}", r.repository);
            let req = Req {
                method: Method::GET,
                url: format!("{}/manifests/{reference}", r.repository),
                headers: vec![("Accept", crate::manifest::MANIFEST_ACCEPT.join(", "))],
                what: what.clone(),
                body: &no_body,
            };
            let mut resp = self.send(t, &req)?;
            match resp.status().as_u16() {
                200 => {}
                404 => {
                    let detail = error_detail(&small_body(&mut resp));
                    return Err(RegistryError::ManifestUnknown {
                        host: t.host.clone(),
                        repository: r.repository.clone(),
                        kind: if pinned.is_some() { "digest" } else { "tag" },
                        reference: reference.to_string(),
                        detail,
                    });
                }
                _ => return Err(Self::status_error(t, &what, &mut resp)),
            }
            let header_digest = header(resp.headers(), "docker-content-digest")
                .and_then(|d| d.trim().parse::<Digest>().ok());
            let content_type = header(resp.headers(), "content-type")
                .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
                .unwrap_or_default();
            let body = read_limited(resp.body_mut(), MAX_MANIFEST).map_err(|source| {
                RegistryError::Io {
                    host: t.host.clone(),
                    what: what.clone(),
                    source,
                }
            })?;
            let actual = Digest::of(&body);
            // The body is the truth: a digest asked for, or the one the
            // registry names, must match it.
            if let Some(expected) = pinned.clone().or(header_digest)
                && expected != actual
            {
                return Err(RegistryError::DigestMismatch {
                    host: t.host.clone(),
                    what,
                    expected,
                    actual,
                });
            }
            let digest = actual;
            let media_type = if content_type.is_empty()
                || content_type == "application/json"
                || content_type == "text/plain"
                || content_type == "application/octet-stream"
            {
                serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| {
                        v.get("mediaType")
                            .and_then(|m| m.as_str())
                            .map(str::to_string)
                    })
                    .unwrap_or(content_type)
            } else {
                content_type
            };
            Ok(FetchedManifest {
                body,
                media_type,
                digest,
            })
        })
    }

    /// Opens a blob at `offset` on one host: the answer's body reader, the
    /// offset it starts at after skipping, and the blob's total size.
    fn open_blob_at(
        &self,
        t: &Target,
        r: &Reference,
        digest: &Digest,
        offset: u64,
    ) -> Result<(ureq::BodyReader<'static>, Option<u64>), RegistryError> {
        let what = format!("get blob {digest} of {}", r.repository);
        let mut headers = Vec::new();
        if offset > 0 {
            headers.push(("Range", format!("bytes={offset}-")));
        }
        let req = Req {
            method: Method::GET,
            url: format!("{}/blobs/{digest}", r.repository),
            headers,
            what: what.clone(),
            body: &no_body,
        };
        let mut resp = self.send(t, &req)?;
        let status = resp.status().as_u16();
        let length = header(resp.headers(), "content-length").and_then(|l| l.parse::<u64>().ok());
        let io_err = |source| RegistryError::Io {
            host: t.host.clone(),
            what: what.clone(),
            source,
        };
        match status {
            200 => {
                let mut reader = resp.into_body().into_reader();
                if offset > 0 {
                    let skipped = io::copy(&mut (&mut reader).take(offset), &mut io::sink())
                        .map_err(io_err)?;
                    if skipped < offset {
                        return Err(RegistryError::Protocol {
                            host: t.host.clone(),
                            what,
                            detail: format!(
                                "the blob has {skipped} bytes, fewer than the offset {offset}"
                            ),
                        });
                    }
                }
                Ok((reader, length))
            }
            206 => {
                let range = header(resp.headers(), "content-range")
                    .unwrap_or("")
                    .to_string();
                // bytes START-END/TOTAL
                let start = range
                    .trim()
                    .strip_prefix("bytes ")
                    .and_then(|s| s.split('-').next())
                    .and_then(|s| s.trim().parse::<u64>().ok());
                if start.is_some_and(|s| s != offset) {
                    return Err(RegistryError::Protocol {
                        host: t.host.clone(),
                        what,
                        detail: format!(
                            "asked for bytes from {offset}, got Content-Range {range:?}"
                        ),
                    });
                }
                let total = range
                    .rsplit_once('/')
                    .and_then(|(_, t)| t.trim().parse::<u64>().ok())
                    .or(length.map(|l| l + offset));
                Ok((resp.into_body().into_reader(), total))
            }
            416 => Err(RegistryError::Protocol {
                host: t.host.clone(),
                what,
                detail: format!(
                    "the registry refused the range from byte {offset}: the blob is shorter"
                ),
            }),
            404 => {
                let detail = error_detail(&small_body(&mut resp));
                Err(RegistryError::BlobUnknown {
                    host: t.host.clone(),
                    repository: r.repository.clone(),
                    digest: digest.clone(),
                    detail,
                })
            }
            _ => Err(Self::status_error(t, &what, &mut resp)),
        }
    }

    /// Streams a blob from `offset` on; the reader reconnects (with a
    /// Range from where it stopped) if the connection drops.
    pub fn open_blob(
        &self,
        r: &Reference,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobReader, RegistryError> {
        let mut chosen = String::new();
        let (body, total) = self.with_mirrors(r, |t| {
            let opened = self.open_blob_at(t, r, digest, offset)?;
            chosen = t.host.clone();
            Ok(opened)
        })?;
        Ok(BlobReader {
            client: self.clone(),
            reference: r.clone(),
            digest: digest.clone(),
            host: chosen,
            body: Some(body),
            pos: offset,
            total,
        })
    }

    /// The blob's size if the repository has it, as a pull sees it
    /// (mirrors first).
    pub fn blob_exists(
        &self,
        r: &Reference,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        let scope = format!("repository:{}:pull", r.repository);
        let mut last = None;
        for host in &self.pull_hosts(r) {
            match self.head_blob(&self.target(host, r, scope.clone()), r, digest) {
                // A mirror without it says nothing of the registry.
                Ok(None) if *host != r.api_host() => last = Some(Ok(None)),
                Ok(v) => return Ok(v),
                Err(e) => last = Some(Err(e)),
            }
        }
        last.unwrap_or(Ok(None))
    }

    /// The blob's size if the registry itself has it in the repository:
    /// what a push may skip (mirrors, which serve pulls only, are not
    /// asked; the push's own token is used).
    pub fn blob_in_registry(
        &self,
        r: &Reference,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        self.head_blob(&self.push_target(r, None), r, digest)
    }

    fn head_blob(
        &self,
        t: &Target,
        r: &Reference,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        let what = format!("check for blob {digest} in {}", r.repository);
        let req = Req {
            method: Method::HEAD,
            url: format!("{}/blobs/{digest}", r.repository),
            headers: Vec::new(),
            what: what.clone(),
            body: &no_body,
        };
        let mut resp = self.send(t, &req)?;
        match resp.status().as_u16() {
            200 => Ok(Some(
                header(resp.headers(), "content-length")
                    .and_then(|l| l.parse::<u64>().ok())
                    .unwrap_or(0),
            )),
            404 => Ok(None),
            _ => Err(Self::status_error(t, &what, &mut resp)),
        }
    }

    fn push_target<'a>(&self, r: &'a Reference, extra_scope: Option<&str>) -> Target<'a> {
        let mut scope = format!("repository:{}:pull,push", r.repository);
        if let Some(from) = extra_scope {
            scope.push_str(&format!(" repository:{from}:pull"));
        }
        self.target(r.api_host(), r, scope)
    }

    /// Where the upload goes on: the Location of an answer, absolute.
    fn location(
        &self,
        t: &Target,
        what: &str,
        resp: &Response<ureq::Body>,
    ) -> Result<String, RegistryError> {
        let loc = header(resp.headers(), "location").ok_or_else(|| RegistryError::Protocol {
            host: t.host.clone(),
            what: what.to_string(),
            detail: "the answer has no Location to upload to".to_string(),
        })?;
        if loc.starts_with("http://") || loc.starts_with("https://") {
            Ok(loc.to_string())
        } else if loc.starts_with('/') {
            Ok(format!("{}{loc}", self.base_url(&t.host)))
        } else {
            Ok(format!(
                "{}/v2/{}/blobs/uploads/{loc}",
                self.base_url(&t.host),
                t.repository
            ))
        }
    }

    /// Tries to mount a blob from another repository of the same registry;
    /// false if the registry started an upload instead (it is cancelled).
    pub fn mount_blob(
        &self,
        r: &Reference,
        digest: &Digest,
        from_repository: &str,
    ) -> Result<bool, RegistryError> {
        let t = self.push_target(r, Some(from_repository));
        let what = format!(
            "mount blob {digest} from {from_repository} into {}",
            r.repository
        );
        let req = Req {
            method: Method::POST,
            url: format!(
                "{}/blobs/uploads/?mount={}&from={}",
                r.repository,
                enc(&digest.to_string()),
                enc(from_repository)
            ),
            headers: Vec::new(),
            what: what.clone(),
            body: &no_body,
        };
        let mut resp = self.send(&t, &req)?;
        match resp.status().as_u16() {
            201 => Ok(true),
            202 => {
                // An upload was started instead: cancel it, quietly.
                if let Ok(loc) = self.location(&t, &what, &resp) {
                    self.cancel_upload(&t, loc);
                }
                Ok(false)
            }
            _ => Err(Self::status_error(&t, &what, &mut resp)),
        }
    }

    /// Ends an upload session that will not be finished, quietly (the
    /// registry would otherwise keep it until its own purge).
    fn cancel_upload(&self, t: &Target, location: String) {
        let cancel = Req {
            method: Method::DELETE,
            url: location,
            headers: Vec::new(),
            what: "cancel the upload".to_string(),
            body: &no_body,
        };
        let _ = self.send_once(t, &cancel, self.cached_authz(t).as_ref());
    }

    /// Uploads a blob: monolithic (`chunk_size` None) or in PATCH chunks.
    /// `open` gives its content from the start; it is called again when the
    /// upload is retried.
    pub fn push_blob(
        &self,
        r: &Reference,
        digest: &Digest,
        size: u64,
        open: &dyn Fn() -> io::Result<Box<dyn Read + Send>>,
        chunk_size: Option<u64>,
    ) -> Result<(), RegistryError> {
        let t = self.push_target(r, None);
        let mut wait = FIRST_BACKOFF;
        let mut tries = 0;
        loop {
            tries += 1;
            match self.push_blob_once(&t, r, digest, size, open, chunk_size) {
                Err(e) if e.transient() && tries < TRIES => {
                    std::thread::sleep(wait);
                    wait *= 2;
                }
                other => return other,
            }
        }
    }

    fn push_blob_once(
        &self,
        t: &Target,
        r: &Reference,
        digest: &Digest,
        size: u64,
        open: &dyn Fn() -> io::Result<Box<dyn Read + Send>>,
        chunk_size: Option<u64>,
    ) -> Result<(), RegistryError> {
        let what = format!("push blob {digest} to {}", r.repository);
        let start = Req {
            method: Method::POST,
            url: format!("{}/blobs/uploads/", r.repository),
            headers: Vec::new(),
            what: what.clone(),
            body: &no_body,
        };
        let mut resp = self.send(t, &start)?;
        if resp.status().as_u16() != 202 {
            return Err(Self::status_error(t, &what, &mut resp));
        }
        let mut location = self.location(t, &what, &resp)?;
        let result = self.upload(t, &what, &mut location, digest, size, open, chunk_size);
        if result.is_err() {
            // The session this upload opened goes with it (at its latest
            // location, which the registry may have moved).
            self.cancel_upload(t, location);
        }
        result
    }

    /// The body of an upload whose session is at `location` (kept up to
    /// date as the registry moves it).
    #[allow(clippy::too_many_arguments)]
    fn upload(
        &self,
        t: &Target,
        what: &str,
        location: &mut String,
        digest: &Digest,
        size: u64,
        open: &dyn Fn() -> io::Result<Box<dyn Read + Send>>,
        chunk_size: Option<u64>,
    ) -> Result<(), RegistryError> {
        let what = what.to_string();
        let with_digest = |loc: &str| {
            let sep = if loc.contains('?') { '&' } else { '?' };
            format!("{loc}{sep}digest={}", enc(&digest.to_string()))
        };
        let io_err = |source| RegistryError::Io {
            host: t.host.clone(),
            what: what.clone(),
            source,
        };
        let final_put = match chunk_size.filter(|c| *c > 0) {
            None => {
                let body = || -> io::Result<Payload> { Ok(Payload::Reader(open()?, size)) };
                let req = Req {
                    method: Method::PUT,
                    url: with_digest(location),
                    headers: vec![("Content-Type", "application/octet-stream".to_string())],
                    what: what.clone(),
                    body: &body,
                };
                self.send(t, &req)?
            }
            Some(chunk) => {
                let mut reader = open().map_err(io_err)?;
                let mut sent: u64 = 0;
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    let n = (&mut reader)
                        .take(chunk)
                        .read_to_end(&mut buf)
                        .map_err(io_err)?;
                    if n == 0 {
                        break;
                    }
                    let end = sent + n as u64 - 1;
                    let chunk_body = || -> io::Result<Payload> { Ok(Payload::Bytes(&buf)) };
                    let req = Req {
                        method: Method::PATCH,
                        url: location.clone(),
                        headers: vec![
                            ("Content-Type", "application/octet-stream".to_string()),
                            ("Content-Range", format!("{sent}-{end}")),
                        ],
                        what: format!("{what} (bytes {sent}-{end})"),
                        body: &chunk_body,
                    };
                    let mut resp = self.send(t, &req)?;
                    if resp.status().as_u16() != 202 {
                        return Err(Self::status_error(t, &req.what, &mut resp));
                    }
                    *location = self.location(t, &what, &resp)?;
                    sent += n as u64;
                }
                if sent != size {
                    return Err(RegistryError::Protocol {
                        host: t.host.clone(),
                        what,
                        detail: format!("the content had {sent} bytes, not the {size} expected"),
                    });
                }
                let req = Req {
                    method: Method::PUT,
                    url: with_digest(location),
                    headers: Vec::new(),
                    what: what.clone(),
                    body: &no_body,
                };
                self.send(t, &req)?
            }
        };
        let mut resp = final_put;
        match resp.status().as_u16() {
            201 | 204 => Ok(()),
            400 => {
                let detail = error_detail(&small_body(&mut resp));
                Err(RegistryError::Status {
                    host: t.host.clone(),
                    what: format!(
                        "{what}: the registry refused the content (does it match the digest and size {size}?)"
                    ),
                    status: 400,
                    detail,
                })
            }
            _ => Err(Self::status_error(t, &what, &mut resp)),
        }
    }

    /// Uploads a manifest under a tag or digest; its digest.
    pub fn put_manifest(
        &self,
        r: &Reference,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<Digest, RegistryError> {
        let t = self.push_target(r, None);
        let what = format!("push manifest {}:{reference}", r.repository);
        let payload = || -> io::Result<Payload> { Ok(Payload::Bytes(body)) };
        let req = Req {
            method: Method::PUT,
            url: format!("{}/manifests/{reference}", r.repository),
            headers: vec![("Content-Type", media_type.to_string())],
            what: what.clone(),
            body: &payload,
        };
        let mut resp = self.send(&t, &req)?;
        match resp.status().as_u16() {
            201 | 200 | 204 => {}
            404 => {
                let detail = error_detail(&small_body(&mut resp));
                return Err(RegistryError::Status {
                    host: t.host.clone(),
                    what: format!("{what}: a blob it names is missing, push the blobs first"),
                    status: 404,
                    detail,
                });
            }
            _ => return Err(Self::status_error(&t, &what, &mut resp)),
        }
        let actual = Digest::of(body);
        if let Some(d) = header(resp.headers(), "docker-content-digest")
            .and_then(|d| d.trim().parse::<Digest>().ok())
            && d != actual
        {
            return Err(RegistryError::DigestMismatch {
                host: t.host.clone(),
                what,
                expected: actual,
                actual: d,
            });
        }
        Ok(actual)
    }

    /// Checks credentials against `GET /v2/` (basic, or a token from the
    /// realm); an error if the registry refuses them.
    pub fn check_login(&self, registry: &str, creds: &Credentials) -> Result<(), RegistryError> {
        let registry = crate::auth::normalize_registry(registry);
        let host = if registry == "docker.io" {
            "registry-1.docker.io".to_string()
        } else {
            registry.clone()
        };
        let t = Target {
            host,
            registry: registry.clone(),
            repository: "",
            scope: String::new(),
            creds: Some(creds),
        };
        let what = "log in".to_string();
        let req = Req {
            method: Method::GET,
            url: String::new(),
            headers: Vec::new(),
            what: what.clone(),
            body: &no_body,
        };
        // No cached authorization: these credentials are what is checked.
        let mut resp = self.send_retrying(&t, &req, None)?;
        if resp.status().as_u16() == 401 {
            let challenge = header(resp.headers(), "www-authenticate")
                .unwrap_or("")
                .to_string();
            let _ = small_body(&mut resp);
            let (scheme, params) = parse_challenge(&challenge);
            let authz = match scheme.as_str() {
                "bearer" => {
                    let realm = params.get("realm").cloned().unwrap_or_default();
                    Authz::Bearer(self.fetch_token(
                        &t,
                        &realm,
                        params.get("service").map(String::as_str),
                        params.get("scope").map_or("", String::as_str),
                        Some(creds),
                    )?)
                }
                _ => Authz::Basic(creds.basic()),
            };
            resp = self.send_retrying(&t, &req, Some(&authz))?;
        }
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            401 => {
                let detail = error_detail(&small_body(&mut resp));
                Err(RegistryError::Unauthorized {
                    registry: registry.clone(),
                    host: t.host.clone(),
                    what: format!("the credentials of {}", creds.username),
                    detail,
                })
            }
            _ => Err(Self::status_error(&t, &what, &mut resp)),
        }
    }
}

/// A blob's body. Reads resume with a Range request after the connection
/// drops, a few times with backoff, before they fail.
pub struct BlobReader {
    client: Client,
    reference: Reference,
    digest: Digest,
    host: String,
    body: Option<ureq::BodyReader<'static>>,
    /// The offset in the blob of the next byte.
    pos: u64,
    /// The blob's size, when the registry said.
    total: Option<u64>,
}

impl BlobReader {
    fn reconnect(&mut self) -> Result<(), RegistryError> {
        let scope = format!("repository:{}:pull", self.reference.repository);
        let t = self.client.target(&self.host, &self.reference, scope);
        let (body, total) =
            self.client
                .open_blob_at(&t, &self.reference, &self.digest, self.pos)?;
        self.body = Some(body);
        if self.total.is_none() {
            self.total = total;
        }
        Ok(())
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut wait = FIRST_BACKOFF;
        let mut resumes = 0;
        // Why the last reconnection failed, when it did.
        let mut refused: Option<io::Error> = None;
        loop {
            let result = match (self.body.as_mut(), refused.take()) {
                (Some(b), _) => b.read(buf),
                (None, Some(e)) => Err(e),
                (None, None) => Err(io::Error::other("not connected")),
            };
            let err = match result {
                Ok(0) => match self.total {
                    Some(total) if self.pos < total => io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the connection closed at byte {} of {total}", self.pos),
                    ),
                    _ => return Ok(0),
                },
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) => e,
            };
            self.body = None;
            if resumes >= RESUMES {
                return Err(io::Error::new(
                    err.kind(),
                    format!(
                        "{}: blob {} of {}: {err} (gave up after {resumes} reconnections)",
                        self.host, self.digest, self.reference.repository
                    ),
                ));
            }
            resumes += 1;
            std::thread::sleep(wait);
            wait *= 2;
            // A failed reconnection counts as a try too, unless trying
            // again cannot help (the blob is gone, access was refused).
            if let Err(e) = self.reconnect() {
                let transient = e.transient();
                let e = io::Error::other(e.to_string());
                if !transient {
                    return Err(e);
                }
                refused = Some(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/busybox:pull,push");
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(s, "basic");
        assert_eq!(p["realm"], "Registry Realm");
    }

    #[test]
    fn loopback() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("127.3.2.1"));
        assert!(is_loopback("localhost:80"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("quay.io"));
        assert!(!is_loopback("10.0.0.1:5000"));
    }

    #[test]
    fn encoding() {
        assert_eq!(
            enc("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }

    #[test]
    fn error_details() {
        let d = error_detail(
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        );
        assert_eq!(d, " (MANIFEST_UNKNOWN: manifest unknown)");
    }
}
