//! Registry credentials: hako's own file (Docker's `config.json` format,
//! `{"auths":{"host":{"auth":"base64(user:pass)"}}}`), then Docker's
//! `config.json` (inline `auths`, `credHelpers` and `credsStore`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// `user:password` in base64, as HTTP basic auth and Docker's
    /// `config.json` carry them.
    pub fn basic(&self) -> String {
        B64.encode(format!("{}:{}", self.username, self.password))
    }
}

/// Where credentials are looked up and stored.
#[derive(Clone, Debug, Default)]
pub struct AuthStore {
    hako_file: Option<PathBuf>,
    docker_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("read credentials file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("credentials file {path} is not valid: {detail}; fix or remove it")]
    Parse { path: PathBuf, detail: String },
    #[error("write credentials file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "nowhere to keep credentials: set HAKO_AUTH_FILE, XDG_CONFIG_HOME or HOME to say where"
    )]
    NoLocation,
    #[error(
        "credential helper docker-credential-{helper} failed for {registry}: {detail}; check the helper, or remove it from {path}"
    )]
    Helper {
        helper: String,
        registry: String,
        path: PathBuf,
        detail: String,
    },
}

/// The key the registry is known by: `docker.io` for Docker Hub's names,
/// else the host (and port) without scheme or path.
pub fn normalize_registry(registry: &str) -> String {
    let s = registry.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" | "docker.io" => {
            "docker.io".to_string()
        }
        _ => host,
    }
}

/// The key written into the file: Docker's own for Docker Hub, so that
/// the file can also serve as a Docker config.
fn file_key(registry: &str) -> String {
    let n = normalize_registry(registry);
    if n == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        n
    }
}

fn read_json(path: &Path) -> Result<Option<Value>, AuthError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AuthError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if text.trim().is_empty() {
        return Ok(Some(json!({})));
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| AuthError::Parse {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    if !v.is_object() {
        return Err(AuthError::Parse {
            path: path.to_path_buf(),
            detail: "it is not a JSON object".to_string(),
        });
    }
    Ok(Some(v))
}

/// Credentials from one `auths` entry: `auth` (base64 `user:pass`) or
/// `username` and `password`.
fn entry_credentials(
    path: &Path,
    key: &str,
    entry: &Value,
) -> Result<Option<Credentials>, AuthError> {
    if let Some(auth) = entry.get("auth").and_then(Value::as_str)
        && !auth.is_empty()
    {
        let bad = |detail: String| AuthError::Parse {
            path: path.to_path_buf(),
            detail: format!("auths[{key:?}].auth: {detail}"),
        };
        let raw = B64
            .decode(auth.trim())
            .map_err(|e| bad(format!("not base64: {e}")))?;
        let text = String::from_utf8(raw).map_err(|_| bad("not UTF-8".to_string()))?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| bad("does not read user:password".to_string()))?;
        return Ok(Some(Credentials {
            username: u.to_string(),
            password: p.to_string(),
        }));
    }
    match (
        entry.get("username").and_then(Value::as_str),
        entry.get("password").and_then(Value::as_str),
    ) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credentials {
            username: u.to_string(),
            password: p.to_string(),
        })),
        _ => Ok(None),
    }
}

fn find_in_auths(
    path: &Path,
    doc: &Value,
    registry: &str,
) -> Result<Option<Credentials>, AuthError> {
    let want = normalize_registry(registry);
    let Some(auths) = doc.get("auths").and_then(Value::as_object) else {
        return Ok(None);
    };
    // An exact key first, then any key that normalises to the same host.
    if let Some(entry) = auths.get(registry)
        && let Some(c) = entry_credentials(path, registry, entry)?
    {
        return Ok(Some(c));
    }
    for (key, entry) in auths {
        if normalize_registry(key) == want
            && let Some(c) = entry_credentials(path, key, entry)?
        {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Asks `docker-credential-HELPER get` for the registry's credentials;
/// None when the helper is not installed or knows nothing of it.
fn from_helper(
    path: &Path,
    helper: &str,
    registry: &str,
) -> Result<Option<Credentials>, AuthError> {
    let fail = |detail: String| AuthError::Helper {
        helper: helper.to_string(),
        registry: registry.to_string(),
        path: path.to_path_buf(),
        detail,
    };
    let server = file_key(registry);
    let child = Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(e.to_string())),
    };
    // A helper may answer (and exit) before reading its input: a failed
    // write is not the error; what it says is. It is reaped either way.
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(server.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("wait for it: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let msg = [stdout.trim(), String::from_utf8_lossy(&out.stderr).trim()]
            .into_iter()
            .filter(|m| !m.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        if msg.to_ascii_lowercase().contains("not found") {
            return Ok(None);
        }
        return Err(fail(format!("{}: {msg}", out.status)));
    }
    if let Some(Err(e)) = written {
        return Err(fail(format!("write its input: {e}")));
    }
    let v: Value =
        serde_json::from_str(&stdout).map_err(|e| fail(format!("its answer is not JSON: {e}")))?;
    match (
        v.get("Username").and_then(Value::as_str),
        v.get("Secret").and_then(Value::as_str),
    ) {
        (Some(u), Some(s)) if !s.is_empty() => Ok(Some(Credentials {
            username: u.to_string(),
            password: s.to_string(),
        })),
        _ => Ok(None),
    }
}

fn nonempty_env(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

impl AuthStore {
    /// hako's file: `$HAKO_AUTH_FILE`, else `$XDG_CONFIG_HOME/hako/auth.json`,
    /// else `~/.config/hako/auth.json`; Docker's: `$DOCKER_CONFIG/config.json`,
    /// else `~/.docker/config.json`.
    pub fn from_env() -> AuthStore {
        let home = nonempty_env("HOME");
        let hako_file = nonempty_env("HAKO_AUTH_FILE")
            .or_else(|| nonempty_env("XDG_CONFIG_HOME").map(|d| d.join("hako/auth.json")))
            .or_else(|| home.as_ref().map(|h| h.join(".config/hako/auth.json")));
        let docker_file = nonempty_env("DOCKER_CONFIG")
            .map(|d| d.join("config.json"))
            .or_else(|| home.as_ref().map(|h| h.join(".docker/config.json")));
        AuthStore {
            hako_file,
            docker_file,
        }
    }

    /// Explicit files, for tests and for callers with their own layout.
    pub fn with_files(hako_file: PathBuf, docker_file: Option<PathBuf>) -> AuthStore {
        AuthStore {
            hako_file: Some(hako_file),
            docker_file,
        }
    }

    /// The credentials for `registry` (a host, `host:port`, or a Docker
    /// Hub name): hako's file first, then Docker's config.
    pub fn get(&self, registry: &str) -> Result<Option<Credentials>, AuthError> {
        if let Some(path) = &self.hako_file
            && let Some(doc) = read_json(path)?
            && let Some(c) = find_in_auths(path, &doc, registry)?
        {
            return Ok(Some(c));
        }
        let Some(path) = &self.docker_file else {
            return Ok(None);
        };
        let Some(doc) = read_json(path)? else {
            return Ok(None);
        };
        let want = normalize_registry(registry);
        if let Some(helpers) = doc.get("credHelpers").and_then(Value::as_object) {
            for (key, helper) in helpers {
                if normalize_registry(key) == want
                    && let Some(helper) = helper.as_str()
                    && let Some(c) = from_helper(path, helper, registry)?
                {
                    return Ok(Some(c));
                }
            }
        }
        if let Some(c) = find_in_auths(path, &doc, registry)? {
            return Ok(Some(c));
        }
        if let Some(store) = doc.get("credsStore").and_then(Value::as_str)
            && !store.is_empty()
        {
            return from_helper(path, store, registry);
        }
        Ok(None)
    }

    /// Saves credentials for `registry` in hako's file.
    pub fn store(&self, registry: &str, creds: &Credentials) -> Result<(), AuthError> {
        let path = self.hako_file.as_ref().ok_or(AuthError::NoLocation)?;
        let mut doc = read_json(path)?.unwrap_or_else(|| json!({}));
        let want = normalize_registry(registry);
        let auths = auths_mut(path, &mut doc)?;
        auths.retain(|k, _| normalize_registry(k) != want);
        let encoded = creds.basic();
        auths.insert(file_key(registry), json!({ "auth": encoded }));
        write_atomically(path, &doc)
    }

    /// Forgets the credentials for `registry` in hako's file; false if
    /// there were none.
    pub fn remove(&self, registry: &str) -> Result<bool, AuthError> {
        let path = self.hako_file.as_ref().ok_or(AuthError::NoLocation)?;
        let Some(mut doc) = read_json(path)? else {
            return Ok(false);
        };
        let want = normalize_registry(registry);
        let auths = auths_mut(path, &mut doc)?;
        let before = auths.len();
        auths.retain(|k, _| normalize_registry(k) != want);
        if auths.len() == before {
            return Ok(false);
        }
        write_atomically(path, &doc)?;
        Ok(true)
    }
}

fn auths_mut<'a>(path: &Path, doc: &'a mut Value) -> Result<&'a mut Map<String, Value>, AuthError> {
    let obj = doc.as_object_mut().ok_or_else(|| AuthError::Parse {
        path: path.to_path_buf(),
        detail: "it is not a JSON object".to_string(),
    })?;
    obj.entry("auths")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| AuthError::Parse {
            path: path.to_path_buf(),
            detail: "\"auths\" is not an object".to_string(),
        })
}

/// Writes the file with mode 0600 through a temporary file and a rename,
/// so that a reader never sees half of it.
fn write_atomically(path: &Path, doc: &Value) -> Result<(), AuthError> {
    let werr = |p: &Path, source| AuthError::Write {
        path: p.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| werr(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "auth.json".to_string());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut text = serde_json::to_string_pretty(doc).map_err(|e| AuthError::Parse {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    text.push('\n');
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(werr(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_hosts() {
        assert_eq!(
            normalize_registry("https://index.docker.io/v1/"),
            "docker.io"
        );
        assert_eq!(normalize_registry("registry-1.docker.io"), "docker.io");
        assert_eq!(
            normalize_registry("http://127.0.0.1:5000/"),
            "127.0.0.1:5000"
        );
        assert_eq!(normalize_registry("Quay.io"), "quay.io");
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let c = Credentials {
            username: "u".into(),
            password: "secret".into(),
        };
        assert!(!format!("{c:?}").contains("secret"));
    }
}
