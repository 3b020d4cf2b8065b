//! Restart policies across a reboot, without a daemon.
//!
//! Docker's daemon restarts containers when it starts; hako has no daemon,
//! so the first command after a boot does that work (and `hako system
//! boot`, run by the `hako-restart` unit at boot, makes it happen without
//! waiting for a command). A boot is told by the kernel's boot id, kept in
//! the volatile run root: a run root that is new (`/run` is a tmpfs) or
//! holds another boot's id means the machine started again since.

use crate::error::IoContext;
use crate::{Container, Engine, RestartPolicy, Result, Status};
use std::fs;
use std::path::Path;

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
/// The boot id the run root was last used in.
const MARKER: &str = "boot-id";

/// What the first command after a boot did.
#[derive(Debug, Default)]
pub struct BootReport {
    /// Containers that were running when the machine went down.
    pub settled: Vec<String>,
    /// Containers started again by their restart policy (names).
    pub restarted: Vec<String>,
    /// Containers whose restart failed: name and error.
    pub failed: Vec<(String, String)>,
}

fn current_boot_id() -> Result<String> {
    let id = fs::read_to_string(BOOT_ID).ctx(|| format!("read {BOOT_ID}"))?;
    Ok(id.trim().to_string())
}

/// Docker's rule at daemon start: `always` comes back whether it was
/// running or stopped by hand (it was started once); `unless-stopped`
/// and `on-failure` (within its count) only when the boot ended them.
fn restarts_at_boot(c: &Container, was_running: bool) -> bool {
    if c.config.auto_remove || c.started_at.is_empty() {
        return false;
    }
    match c.config.restart {
        RestartPolicy::No => false,
        RestartPolicy::Always => true,
        RestartPolicy::UnlessStopped => was_running,
        RestartPolicy::OnFailure => {
            was_running && (c.config.max_restarts == 0 || c.restart_count < c.config.max_restarts)
        }
    }
}

impl Engine {
    /// Does the first-command-after-a-boot work when this is it; `None`
    /// when the run root was used in this boot already (the common case:
    /// two small reads).
    pub fn after_boot(&mut self) -> Result<Option<BootReport>> {
        let boot = current_boot_id()?;
        let marker = self.runroot.join(MARKER);
        if fs::read_to_string(&marker).is_ok_and(|m| m.trim() == boot) {
            return Ok(None);
        }
        // Many commands may be first at once: one does the work.
        let _lock = self.run_lock("boot.lock")?;
        if fs::read_to_string(&marker).is_ok_and(|m| m.trim() == boot) {
            return Ok(None);
        }
        let report = self.recover_from_reboot()?;
        write_marker(&marker, &boot)?;
        Ok(Some(report))
    }

    /// Every container the last boot left running is settled (its
    /// processes, mounts and cgroups went with that boot), then the
    /// restart policies are applied.
    fn recover_from_reboot(&mut self) -> Result<BootReport> {
        let mut report = BootReport::default();
        let mut was_running = Vec::new();
        for mut c in self.db.all()? {
            if !matches!(
                c.status,
                Status::Running | Status::Paused | Status::Removing
            ) {
                continue;
            }
            if c.status != Status::Removing {
                was_running.push(c.id.clone());
            }
            // Its pids belong to the last boot: a process of this boot may
            // hold the same number now.
            c.pid = 0;
            c.monitor_pid = 0;
            c.monitor_start = 0;
            self.db.update(&c)?;
            // No exit was recorded: the boot, not the program, ended it.
            let unrecorded = hako_monitor::read_exit(&self.container_dir(&c.id)).is_none();
            self.cleanup(&c.id, None)?;
            if let Some(mut settled) = self.db.get(&c.id)? {
                if unrecorded {
                    settled.error = "the host restarted while the container ran".into();
                    self.db.update(&settled)?;
                }
                report.settled.push(settled.name);
            }
        }
        for c in self.db.all()? {
            if !restarts_at_boot(&c, was_running.contains(&c.id)) {
                continue;
            }
            match self.start(&c.id, false, false) {
                Ok(_) => report.restarted.push(c.name),
                Err(e) => report.failed.push((c.name, e.to_string())),
            }
        }
        Ok(report)
    }
}

fn write_marker(path: &Path, boot: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, format!("{boot}\n")).ctx(|| format!("write {}", tmp.display()))?;
    fs::rename(&tmp, path).ctx(|| format!("rename {}", tmp.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(policy: RestartPolicy, started: bool) -> Container {
        Container {
            id: "0".repeat(64),
            name: "c".into(),
            image: String::new(),
            image_id: String::new(),
            created: String::new(),
            config: crate::ContainerConfig {
                restart: policy,
                ..Default::default()
            },
            status: Status::Exited,
            pid: 0,
            monitor_pid: 0,
            monitor_start: 0,
            started_at: if started {
                "2026-01-01T00:00:00Z".into()
            } else {
                String::new()
            },
            finished_at: String::new(),
            exit_code: 0,
            restart_count: 0,
            error: String::new(),
        }
    }

    #[test]
    fn docker_rules_at_boot() {
        use RestartPolicy::*;
        assert!(restarts_at_boot(&container(Always, true), false));
        assert!(!restarts_at_boot(&container(Always, false), false));
        assert!(restarts_at_boot(&container(UnlessStopped, true), true));
        assert!(!restarts_at_boot(&container(UnlessStopped, true), false));
        assert!(restarts_at_boot(&container(OnFailure, true), true));
        assert!(!restarts_at_boot(&container(OnFailure, true), false));
        assert!(!restarts_at_boot(&container(No, true), true));
        let mut limited = container(OnFailure, true);
        limited.config.max_restarts = 2;
        limited.restart_count = 2;
        assert!(!restarts_at_boot(&limited, true));
        let mut removed = container(Always, true);
        removed.config.auto_remove = true;
        assert!(!restarts_at_boot(&removed, true));
    }
}
