//! The container process's identity and limits: rlimits, LSM labels,
//! user and groups, capabilities, and finding the program to exec.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use caps::Capability;
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{LinuxCapabilities, PosixRlimitType, Process};

use crate::error::{Context, Error, Result};
use crate::sys;

/// The C library's type for a resource number: glibc has its own, musl
/// an `int`.
#[cfg(target_env = "gnu")]
type RlimitResource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type RlimitResource = libc::c_int;

fn rlimit_resource(t: PosixRlimitType) -> Option<RlimitResource> {
    use PosixRlimitType as R;
    Some(match t {
        R::RlimitCpu => libc::RLIMIT_CPU,
        R::RlimitFsize => libc::RLIMIT_FSIZE,
        R::RlimitData => libc::RLIMIT_DATA,
        R::RlimitStack => libc::RLIMIT_STACK,
        R::RlimitCore => libc::RLIMIT_CORE,
        R::RlimitRss => libc::RLIMIT_RSS,
        R::RlimitNproc => libc::RLIMIT_NPROC,
        R::RlimitNofile => libc::RLIMIT_NOFILE,
        R::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        R::RlimitAs => libc::RLIMIT_AS,
        R::RlimitLocks => libc::RLIMIT_LOCKS,
        R::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        R::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        R::RlimitNice => libc::RLIMIT_NICE,
        R::RlimitRtprio => libc::RLIMIT_RTPRIO,
        R::RlimitRttime => libc::RLIMIT_RTTIME,
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}

pub fn set_rlimits(process: &Process) -> Result<()> {
    for (i, r) in process.rlimits().iter().flatten().enumerate() {
        let res = rlimit_resource(r.typ()).ok_or_else(|| {
            Error::Init(format!(
                "process.rlimits[{i}]: {:?} is not a Linux rlimit",
                r.typ()
            ))
        })?;
        if r.soft() > r.hard() {
            return Err(Error::Init(format!(
                "process.rlimits[{i}]: soft limit {} is above hard limit {}",
                r.soft(),
                r.hard()
            )));
        }
        let lim = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: setrlimit reads a valid rlimit struct.
        let ret = unsafe { libc::setrlimit(res, &lim) };
        if ret != 0 {
            return Err(nix::Error::last())
                .context(|| format!("process.rlimits[{i}]: setrlimit {:?}", r.typ()));
        }
    }
    Ok(())
}

/// Writes an LSM attribute for the next exec; fails clearly where the host
/// runs no such LSM.
pub fn set_lsm_labels(process: &Process) -> Result<()> {
    if let Some(profile) = process
        .apparmor_profile()
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        let enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .map(|s| s.trim() == "Y")
            .unwrap_or(false);
        if !enabled {
            return Err(Error::Init(format!(
                "process.apparmorProfile: {profile:?} was asked for, but AppArmor is not enabled on this host (remove the field or enable AppArmor)"
            )));
        }
        let attr = if Path::new("/proc/self/attr/apparmor/exec").exists() {
            "/proc/self/attr/apparmor/exec"
        } else {
            "/proc/self/attr/exec"
        };
        std::fs::write(attr, format!("exec {profile}"))
            .context(|| format!("process.apparmorProfile: set {profile:?}"))?;
    }
    if let Some(label) = process.selinux_label().as_deref().filter(|p| !p.is_empty()) {
        if !Path::new("/sys/fs/selinux/enforce").exists() {
            return Err(Error::Init(format!(
                "process.selinuxLabel: {label:?} was asked for, but SELinux is not enabled on this host (remove the field or enable SELinux)"
            )));
        }
        std::fs::write("/proc/self/attr/exec", label)
            .context(|| format!("process.selinuxLabel: set {label:?}"))?;
    }
    Ok(())
}

pub fn set_oom_score_adj(process: &Process) -> Result<()> {
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .context(|| format!("process.oomScoreAdj: write {adj}"))?;
    }
    Ok(())
}

pub fn set_io_priority(process: &Process) -> Result<()> {
    if let Some(io) = process.io_priority() {
        use oci_spec::runtime::IOPriorityClass as C;
        let class = match io.class() {
            C::IoprioClassRt => 1,
            C::IoprioClassBe => 2,
            C::IoprioClassIdle => 3,
        };
        sys::set_io_priority(class, i32::try_from(io.priority()).unwrap_or(0))
            .context(|| "process.ioPriority: ioprio_set".to_string())?;
    }
    Ok(())
}

pub fn set_scheduler(process: &Process) -> Result<()> {
    let Some(s) = process.scheduler() else {
        return Ok(());
    };
    use oci_spec::runtime::LinuxSchedulerPolicy as P;
    let policy = match s.policy() {
        P::SchedOther => libc::SCHED_OTHER,
        P::SchedFifo => libc::SCHED_FIFO,
        P::SchedRr => libc::SCHED_RR,
        P::SchedBatch => libc::SCHED_BATCH,
        P::SchedIso => 4,
        P::SchedIdle => libc::SCHED_IDLE,
        P::SchedDeadline => 6,
    };
    if policy == 6 || policy == 4 {
        return Err(Error::Init(
            "process.scheduler.policy: SCHED_DEADLINE and SCHED_ISO are not supported by this runtime".into(),
        ));
    }
    // The kernel's sched_param is the priority alone. The syscall itself,
    // as glibc's wrapper makes it: musl's answers ENOSYS, since the kernel
    // sets a thread's policy, not a process's (this init has one thread).
    let priority: libc::c_int = s.priority().unwrap_or(0);
    // SAFETY: sched_setscheduler reads one int (the priority) we own.
    let ret =
        unsafe { libc::syscall(libc::SYS_sched_setscheduler, 0, policy, &raw const priority) };
    if ret != 0 {
        return Err(nix::Error::last())
            .context(|| "process.scheduler: sched_setscheduler".to_string());
    }
    if let Some(nice) = s.nice() {
        // SAFETY: setpriority with integer arguments only.
        let ret = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, *nice) };
        if ret != 0 {
            return Err(nix::Error::last()).context(|| "process.scheduler.nice".to_string());
        }
    }
    Ok(())
}

/// The capability numbers of a set, leaving out those this kernel lacks
/// (config.rs warned about them).
fn cap_bits(names: &Option<HashSet<oci_spec::runtime::Capability>>) -> u64 {
    let last = sys::last_cap();
    names
        .iter()
        .flatten()
        .filter_map(|c| {
            let name = serde_json::to_value(c).ok()?;
            Capability::from_str(name.as_str()?).ok()
        })
        .map(|c| u32::from(c.index()))
        .filter(|i| *i <= last && *i < 64)
        .fold(0u64, |m, i| m | (1u64 << i))
}

/// Drops the bounding set to what the spec allows. Done while still root,
/// before the user changes.
pub fn drop_bounding(c: Option<&LinuxCapabilities>) -> Result<()> {
    let keep = c.map(|c| cap_bits(c.bounding())).unwrap_or_default();
    for cap in 0..=sys::last_cap().min(63) {
        if keep & (1u64 << cap) == 0 {
            sys::drop_bounding_cap(cap)
                .context(|| format!("drop capability {cap} from the bounding set"))?;
        }
    }
    Ok(())
}

/// Switches to the process's user and groups, keeping capabilities across
/// the switch, then sets the permitted, inheritable and effective sets in
/// one call, and the ambient set.
pub fn set_user_and_caps(
    process: &Process,
    in_userns: bool,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let user = process.user();
    let uid = Uid::from_raw(user.uid());
    let gid = Gid::from_raw(user.gid());
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    sys::set_keep_caps().context(|| "keep capabilities across setuid".to_string())?;
    // setgroups is refused in a user namespace whose setgroups file says deny.
    let setgroups_allowed = !in_userns
        || std::fs::read_to_string("/proc/self/setgroups")
            .map(|s| s.trim() == "allow")
            .unwrap_or(true);
    if setgroups_allowed {
        nix::unistd::setgroups(&groups)
            .context(|| format!("process.user.additionalGids: setgroups {groups:?}"))?;
    } else if !groups.is_empty() {
        return Err(Error::Init(
            "process.user.additionalGids: setgroups is denied in this user namespace".into(),
        ));
    }
    nix::unistd::setresgid(gid, gid, gid).context(|| format!("process.user.gid: setgid {gid}"))?;
    nix::unistd::setresuid(uid, uid, uid).context(|| format!("process.user.uid: setuid {uid}"))?;
    if let Some(umask) = user.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    }
    let c = process.capabilities().as_ref();
    let bits = |pick: fn(&LinuxCapabilities) -> &Option<HashSet<oci_spec::runtime::Capability>>| {
        c.map(|c| cap_bits(pick(c))).unwrap_or(0)
    };
    let sets = sys::CapSets {
        effective: bits(|c| c.effective()),
        permitted: bits(|c| c.permitted()),
        inheritable: bits(|c| c.inheritable()),
    };
    sys::capset(sets).context(|| format!("process.capabilities: set effective {:#x}, permitted {:#x}, inheritable {:#x} (effective must be within permitted)", sets.effective, sets.permitted, sets.inheritable))?;
    sys::clear_ambient().context(|| "clear ambient capabilities".to_string())?;
    let ambient = bits(|c| c.ambient());
    for cap in 0..64u32 {
        if ambient & (1u64 << cap) != 0 {
            // The spec asks for a warning, not a failure, for what cannot
            // be granted.
            if let Err(e) = sys::raise_ambient(cap) {
                warnings.push(format!("process.capabilities.ambient: capability {cap} cannot be raised ({e}): an ambient capability must also be permitted and inheritable"));
            }
        }
    }
    Ok(())
}

pub fn set_personality(p: &oci_spec::runtime::LinuxPersonality) -> Result<()> {
    use oci_spec::runtime::LinuxPersonalityDomain as D;
    let persona: libc::c_ulong = match p.domain() {
        D::PerLinux => 0,
        D::PerLinux32 => 8,
    };
    // SAFETY: personality takes an integer.
    if unsafe { libc::personality(persona) } == -1 {
        return Err(nix::Error::last())
            .context(|| "linux.personality: set the execution domain".to_string());
    }
    Ok(())
}

/// A list of numbers with ranges, as the kernel writes them: `0-3,7`.
pub fn parse_list(field: &str, s: &str) -> Result<Vec<usize>> {
    let bad = || Error::Init(format!("{field}: {s:?} is not a list like \"0-3,7\""));
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if a > b || b >= 4096 {
            return Err(bad());
        }
        out.extend(a..=b);
    }
    Ok(out)
}

/// linux.memoryPolicy through set_mempolicy(2).
pub fn set_memory_policy(p: &oci_spec::runtime::LinuxMemoryPolicy) -> Result<()> {
    use oci_spec::runtime::{MemoryPolicyFlagType as F, MemoryPolicyModeType as M};
    let mode: i32 = match p.mode() {
        M::MpolDefault => 0,
        M::MpolPreferred => 1,
        M::MpolBind => 2,
        M::MpolInterleave => 3,
        M::MpolLocal => 4,
        M::MpolPreferredMany => 5,
        M::MpolWeightedInterleave => 6,
    };
    let mut flags = 0;
    for f in p.flags().iter().flatten() {
        flags |= match f {
            F::MpolFNumaBalancing => 1 << 13,
            F::MpolFRelativeNodes => 1 << 14,
            F::MpolFStaticNodes => 1 << 15,
        };
    }
    let nodes = parse_list(
        "linux.memoryPolicy.nodes",
        p.nodes().as_deref().unwrap_or(""),
    )?;
    let mut mask = vec![0u64; 64];
    for n in &nodes {
        mask[n / 64] |= 1 << (n % 64);
    }
    let maxnode = if nodes.is_empty() { 0 } else { mask.len() * 64 };
    // SAFETY: the mask holds `maxnode` bits and outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_set_mempolicy,
            mode | flags,
            mask.as_ptr(),
            maxnode,
        )
    };
    if ret != 0 {
        return Err(nix::Error::last()).context(|| {
            format!(
                "linux.memoryPolicy: set_mempolicy mode {:?} nodes {:?}",
                p.mode(),
                p.nodes()
            )
        });
    }
    Ok(())
}

/// Pins this process to the CPUs of `list`.
pub fn set_cpu_affinity(field: &str, list: &str) -> Result<()> {
    let cpus = parse_list(field, list)?;
    let mut set = nix::sched::CpuSet::new();
    for c in cpus {
        set.set(c).context(|| format!("{field}: CPU {c}"))?;
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .context(|| format!("{field}: sched_setaffinity {list}"))
}

/// chdir to the process's cwd inside the container, and proof that the
/// result is inside it (a descriptor to a host directory, reached through
/// /proc/self/fd, would not be: CVE-2024-21626).
pub fn enter_cwd(cwd: &Path) -> Result<()> {
    nix::unistd::chdir(cwd).context(|| {
        format!(
            "process.cwd: chdir to {} inside the container",
            cwd.display()
        )
    })?;
    let now = nix::unistd::getcwd().context(|| "process.cwd: getcwd".to_string())?;
    if !now.is_absolute() || now.starts_with("(unreachable)") {
        return Err(Error::Init(format!(
            "process.cwd: {} leads outside the container",
            cwd.display()
        )));
    }
    Ok(())
}

/// Finds the program like execvp does, with the container's PATH, inside
/// the container; the error reads as the shell's would.
pub fn find_program(arg0: &str, env: &[String]) -> Result<PathBuf> {
    let not_found = |message: &str| Error::Exec {
        program: arg0.to_string(),
        message: message.to_string(),
        not_found: true,
    };
    if arg0.contains('/') {
        let p = PathBuf::from(arg0);
        return match std::fs::metadata(&p) {
            Ok(_) => Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(not_found("no such file or directory"))
            }
            Err(e) => Err(Error::Exec {
                program: arg0.to_string(),
                message: e.to_string(),
                not_found: false,
            }),
        };
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let mut denied = None;
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(arg0);
        if let Ok(m) = std::fs::metadata(&candidate) {
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
            if m.is_file() {
                denied.get_or_insert(candidate);
            }
        }
    }
    match denied {
        Some(p) => Err(Error::Exec {
            program: arg0.to_string(),
            message: format!("{} is not executable: permission denied", p.display()),
            not_found: false,
        }),
        None => Err(not_found("executable file not found in $PATH")),
    }
}

/// Execs the program through the trampoline (see `selfexe`); returns
/// only on failure.
pub fn exec(
    trampoline: &crate::selfexe::Trampoline,
    program: &Path,
    args: &[String],
    env: &[String],
) -> Error {
    let e = trampoline.exec(program, args, env);
    Error::Exec {
        program: program.display().to_string(),
        message: format!("exec the trampoline: {e}"),
        not_found: false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn finds_programs_on_path() {
        let env = vec!["PATH=/nonexistent:/bin:/usr/bin".to_string()];
        assert!(find_program("sh", &env).is_ok());
        let err = find_program("no-such-program-here", &env).unwrap_err();
        assert!(err.to_string().contains("not found in $PATH"));
    }
}
