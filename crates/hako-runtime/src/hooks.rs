//! OCI hooks: the state on stdin, the spec's environment and arguments,
//! a timeout.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Hooks, Spec};

use crate::error::{Error, Result};
use crate::state::{OCI_VERSION, Status};

/// The hooks of one kind.
pub fn of(spec: &Spec, pick: fn(&Hooks) -> &Option<Vec<Hook>>) -> Vec<Hook> {
    spec.hooks()
        .as_ref()
        .and_then(|h| pick(h).clone())
        .unwrap_or_default()
}

/// The state a hook reads on stdin.
pub fn state_json(
    id: &str,
    status: Status,
    pid: i32,
    bundle: &Path,
    annotations: &HashMap<String, String>,
) -> String {
    let mut v = serde_json::json!({
        "ociVersion": OCI_VERSION,
        "id": id,
        "status": status,
        "bundle": bundle,
        "annotations": annotations,
    });
    if status != Status::Stopped {
        v["pid"] = pid.into();
    }
    v.to_string()
}

/// Runs each hook in order; the first failure stops the rest.
pub fn run_all(kind: &str, hooks: &[Hook], state_json: &str) -> Result<()> {
    for h in hooks {
        run(kind, h, state_json)?;
    }
    Ok(())
}

pub fn run(kind: &str, h: &Hook, state_json: &str) -> Result<()> {
    let fail = |message: String| Error::Hook {
        kind: kind.to_string(),
        path: h.path().clone(),
        message,
    };
    let mut cmd = Command::new(h.path());
    if let Some((first, rest)) = h.args().as_deref().and_then(<[String]>::split_first) {
        cmd.arg0(first).args(rest);
    }
    cmd.env_clear();
    for e in h.env().iter().flatten() {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| fail(format!("start: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin must not fail for it.
        let _ = stdin.write_all(state_json.as_bytes());
    }
    let timeout = h
        .timeout()
        .map(|t| Duration::from_secs(u64::try_from(t.max(1)).unwrap_or(1)));
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    let status = loop {
        match child.try_wait().map_err(|e| fail(format!("wait: {e}")))? {
            Some(s) => break s,
            None => {
                if timeout.is_some_and(|t| start.elapsed() >= t) {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(fail(format!(
                        "timed out after {}s",
                        h.timeout().unwrap_or(0)
                    )));
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
        }
    };
    if status.success() {
        Ok(())
    } else if let Some(sig) = status.signal() {
        Err(fail(format!("killed by signal {sig}")))
    } else {
        Err(fail(format!(
            "exited with status {}",
            status.code().unwrap_or(-1)
        )))
    }
}
