//! `linux.seccomp` to a BPF program, compiled by libseccomp once per
//! profile and kept in a cache under the state root; loaded with the
//! seccomp(2) syscall directly, so that every filter flag this kernel has
//! is available whatever the libseccomp version.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{Read, Seek, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::str::FromStr;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

use crate::error::{Error, Result};

const SECCOMP_SET_MODE_FILTER: u32 = 1;
const FLAG_TSYNC: u32 = 1;
const FLAG_LOG: u32 = 2;
const FLAG_SPEC_ALLOW: u32 = 4;
const FLAG_NEW_LISTENER: u32 = 8;
const FLAG_TSYNC_ESRCH: u32 = 16;
const FLAG_WAIT_KILLABLE_RECV: u32 = 32;

/// A compiled filter, ready to load.
#[derive(Debug, Clone)]
pub struct Filter {
    /// `struct sock_filter` array, as the kernel takes it.
    program: Vec<u8>,
    flags: u32,
}

impl Filter {
    pub fn uses_notify(&self) -> bool {
        self.flags & FLAG_NEW_LISTENER != 0
    }
}

/// The libseccomp action for a spec action. `errno` is the rule's
/// `errnoRet` (or, for the default action, `defaultErrnoRet`); without it
/// the spec's default, EPERM, applies: `defaultErrnoRet` is for the
/// default action only.
fn action(a: LinuxSeccompAction, errno: Option<u32>) -> ScmpAction {
    use LinuxSeccompAction as A;
    let errno_value =
        |e: Option<u32>| i32::try_from(e.unwrap_or(libc::EPERM as u32)).unwrap_or(libc::EPERM);
    match a {
        A::ScmpActKill | A::ScmpActKillThread => ScmpAction::KillThread,
        A::ScmpActKillProcess => ScmpAction::KillProcess,
        A::ScmpActTrap => ScmpAction::Trap,
        A::ScmpActErrno => ScmpAction::Errno(errno_value(errno)),
        A::ScmpActTrace => ScmpAction::Trace(u16::try_from(errno_value(errno)).unwrap_or(0)),
        A::ScmpActAllow => ScmpAction::Allow,
        A::ScmpActLog => ScmpAction::Log,
        A::ScmpActNotify => ScmpAction::Notify,
    }
}

fn op(o: LinuxSeccompOperator, value: u64, value_two: Option<u64>) -> (ScmpCompareOp, u64) {
    use LinuxSeccompOperator as O;
    match o {
        O::ScmpCmpNe => (ScmpCompareOp::NotEqual, value),
        O::ScmpCmpLt => (ScmpCompareOp::Less, value),
        O::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, value),
        O::ScmpCmpEq => (ScmpCompareOp::Equal, value),
        O::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, value),
        O::ScmpCmpGt => (ScmpCompareOp::Greater, value),
        // The spec puts the mask in `value` and the expected result in
        // `valueTwo`.
        O::ScmpCmpMaskedEq => (ScmpCompareOp::MaskedEqual(value), value_two.unwrap_or(0)),
    }
}

fn enum_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn uses_notify(s: &LinuxSeccomp) -> bool {
    s.default_action() == LinuxSeccompAction::ScmpActNotify
        || s.syscalls()
            .iter()
            .flatten()
            .any(|r| r.action() == LinuxSeccompAction::ScmpActNotify)
}

/// The load flags a profile asks for.
fn flags(s: &LinuxSeccomp, warnings: &mut Vec<String>) -> u32 {
    let notify = uses_notify(s);
    let mut f = if notify { FLAG_NEW_LISTENER } else { 0 };
    for flag in s.flags().iter().flatten() {
        f |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => FLAG_SPEC_ALLOW,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv if notify => {
                FLAG_WAIT_KILLABLE_RECV
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                warnings.push("linux.seccomp.flags: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV only matters with SCMP_ACT_NOTIFY; ignored".into());
                0
            }
        };
    }
    // TSYNC and a listener together need TSYNC_ESRCH (the kernel cannot
    // report a failed thread and return the listener at once).
    if f & FLAG_TSYNC != 0 && notify {
        f |= FLAG_TSYNC_ESRCH;
    }
    f
}

/// Whether an action takes a return value (`errnoRet`).
fn takes_errno(a: LinuxSeccompAction) -> bool {
    matches!(
        a,
        LinuxSeccompAction::ScmpActErrno | LinuxSeccompAction::ScmpActTrace
    )
}

/// Refuses a rule's `errnoRet` on an action that returns no value, which
/// would otherwise be silently ignored. Returns the field and the message.
/// (`defaultErrnoRet` beside a default action that takes none is ignored
/// instead, as runc does: profiles carry it whatever their default.)
pub fn check(s: &LinuxSeccomp) -> std::result::Result<(), (String, String)> {
    for (i, rule) in s.syscalls().iter().flatten().enumerate() {
        if rule.errno_ret().is_some() && !takes_errno(rule.action()) {
            return Err((
                format!("linux.seccomp.syscalls[{i}].errnoRet"),
                format!(
                    "{} returns no value: only SCMP_ACT_ERRNO and SCMP_ACT_TRACE take one; remove the field",
                    enum_name(&rule.action())
                ),
            ));
        }
    }
    Ok(())
}

/// Compiles a profile with libseccomp.
fn compile(s: &LinuxSeccomp) -> Result<Vec<u8>> {
    let err = |field: &str, e: libseccomp::error::SeccompError| {
        Error::Seccomp(format!("linux.seccomp.{field}: {e}"))
    };
    check(s).map_err(|(field, msg)| Error::Seccomp(format!("{field}: {msg}")))?;
    let default = action(s.default_action(), s.default_errno_ret());
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| err("defaultAction", e))?;
    for (i, a) in s.architectures().iter().flatten().enumerate() {
        let name = enum_name(a);
        let arch = ScmpArch::from_str(&name).map_err(|e| err(&format!("architectures[{i}]"), e))?;
        if arch != ScmpArch::native() {
            ctx.add_arch(arch)
                .map_err(|e| err(&format!("architectures[{i}] ({name})"), e))?;
        }
    }
    for (i, rule) in s.syscalls().iter().flatten().enumerate() {
        let act = action(rule.action(), rule.errno_ret());
        // A rule whose action is the default (the same action with the same
        // return value) adds nothing, and libseccomp refuses it.
        if act == default {
            continue;
        }
        let mut conds = Vec::new();
        let mut per_arg = [0u8; 6];
        for (j, a) in rule.args().iter().flatten().enumerate() {
            if a.index() > 5 {
                return Err(Error::Seccomp(format!(
                    "linux.seccomp.syscalls[{i}].args[{j}].index: {} is not an argument index (0 to 5)",
                    a.index()
                )));
            }
            per_arg[a.index()] += 1;
            let (o, datum) = op(a.op(), a.value(), a.value_two());
            conds.push(ScmpArgCompare::new(
                u32::try_from(a.index()).unwrap_or(0),
                o,
                datum,
            ));
        }
        for name in rule.names() {
            // A name this libseccomp does not know is a syscall no
            // architecture here has: nothing to filter.
            let Ok(sc) = ScmpSyscall::from_name(name) else {
                continue;
            };
            let r = if conds.is_empty() {
                ctx.add_rule(act, sc).map(|_| ())
            } else if per_arg.iter().any(|n| *n > 1) {
                // Several conditions on one argument mean "any of them",
                // as in runc: one rule per condition.
                conds.iter().try_for_each(|c| {
                    ctx.add_rule_conditional(act, sc, std::slice::from_ref(c))
                        .map(|_| ())
                })
            } else {
                ctx.add_rule_conditional(act, sc, &conds).map(|_| ())
            };
            r.map_err(|e| err(&format!("syscalls[{i}] ({name})"), e))?;
        }
    }
    // libseccomp writes the program to a descriptor; a memfd holds it.
    let memfd = memfd("hako-seccomp")?;
    ctx.export_bpf(&memfd).map_err(|e| err("(export)", e))?;
    let mut f = std::fs::File::from(memfd);
    f.rewind()
        .map_err(|e| Error::Seccomp(format!("read the compiled filter: {e}")))?;
    let mut program = Vec::new();
    f.read_to_end(&mut program)
        .map_err(|e| Error::Seccomp(format!("read the compiled filter: {e}")))?;
    Ok(program)
}

fn memfd(name: &str) -> Result<OwnedFd> {
    let cname = std::ffi::CString::new(name).unwrap_or_default();
    // SAFETY: memfd_create with a valid NUL-terminated name.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::Seccomp(format!(
            "memfd_create: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Bumped whenever `compile` turns the same profile into a different
/// program, so that a cache written by an older build of the same version
/// is not used (2: rules without errnoRet return EPERM).
const COMPILER_REVISION: u32 = 2;

/// The filter for a profile: from the cache under `cache_dir` when this
/// exact profile was compiled before, else compiled and stored there.
pub fn prepare(
    s: &LinuxSeccomp,
    cache_dir: Option<&Path>,
    warnings: &mut Vec<String>,
) -> Result<Filter> {
    let flags = flags(s, warnings);
    let key = serde_json::to_vec(s).map_err(|e| Error::Seccomp(format!("encode profile: {e}")))?;
    let Some(dir) = cache_dir else {
        return Ok(Filter {
            program: compile(s)?,
            flags,
        });
    };
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    let v = libseccomp::ScmpVersion::current()
        .map(|v| (v.major, v.minor, v.micro))
        .unwrap_or((0, 0, 0));
    v.hash(&mut h);
    env!("CARGO_PKG_VERSION").hash(&mut h);
    COMPILER_REVISION.hash(&mut h);
    let file = dir.join(format!("{:016x}.bpf", h.finish()));
    if let Some(program) = read_cached(&file, &key) {
        return Ok(Filter { program, flags });
    }
    let program = compile(s)?;
    // The cache is an optimisation: failing to write it is no error.
    let _ = write_cached(dir, &file, &key, &program);
    Ok(Filter { program, flags })
}

/// A cache file holds the profile it was made from (compared in full, so
/// a hash collision can never select another profile's program) and the
/// program.
fn read_cached(file: &Path, key: &[u8]) -> Option<Vec<u8>> {
    let data = std::fs::read(file).ok()?;
    let len = usize::try_from(u32::from_le_bytes(data.get(..4)?.try_into().ok()?)).ok()?;
    let stored = data.get(4..4 + len)?;
    if stored != key {
        return None;
    }
    let program = data.get(4 + len..)?;
    (program.len() % 8 == 0 && !program.is_empty()).then(|| program.to_vec())
}

fn write_cached(dir: &Path, file: &Path, key: &[u8], program: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&u32::try_from(key.len()).unwrap_or(0).to_le_bytes())?;
    f.write_all(key)?;
    f.write_all(program)?;
    drop(f);
    std::fs::rename(&tmp, file)
}

#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const u8,
}

/// Loads the filter into this process (and, with TSYNC, its threads);
/// returns the notify listener when the profile has one. A flag this
/// kernel does not know is dropped with a warning, as other runtimes do.
pub fn load(f: &Filter, warnings: &mut Vec<String>) -> Result<Option<OwnedFd>> {
    let prog = SockFprog {
        len: u16::try_from(f.program.len() / 8)
            .map_err(|_| Error::Seccomp("filter longer than the kernel allows".into()))?,
        filter: f.program.as_ptr(),
    };
    let mut flags = f.flags;
    loop {
        // SAFETY: `prog` points at a valid sock_filter array of `len`
        // entries that outlives the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                flags,
                &prog as *const SockFprog,
            )
        };
        if ret >= 0 {
            if flags & FLAG_NEW_LISTENER == 0 {
                return Ok(None);
            }
            let fd = RawFd::try_from(ret)
                .map_err(|_| Error::Seccomp("listener descriptor out of range".into()))?;
            // SAFETY: the kernel returned a new listener descriptor.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        let e = std::io::Error::last_os_error();
        let optional = [
            (
                FLAG_WAIT_KILLABLE_RECV,
                "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
            ),
            (FLAG_SPEC_ALLOW, "SECCOMP_FILTER_FLAG_SPEC_ALLOW"),
            (FLAG_LOG, "SECCOMP_FILTER_FLAG_LOG"),
        ];
        match optional.iter().find(|(bit, _)| flags & bit != 0) {
            Some((bit, name)) if e.raw_os_error() == Some(libc::EINVAL) => {
                warnings.push(format!(
                    "linux.seccomp.flags: {name} is not supported by this kernel; ignored"
                ));
                flags &= !bit;
            }
            _ => return Err(Error::Seccomp(format!("load the filter: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn profile(json: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn compiles_and_caches() {
        let s = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "syscalls": [{"names": ["mkdir", "no_such_call"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                         {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]
        }));
        let dir = tempfile::tempdir().unwrap();
        let mut w = Vec::new();
        let a = prepare(&s, Some(dir.path()), &mut w).unwrap();
        assert!(!a.program.is_empty() && a.program.len().is_multiple_of(8));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let b = prepare(&s, Some(dir.path()), &mut w).unwrap();
        assert_eq!(a.program, b.program);
        // A different profile is a different entry.
        let mut s2 = s.clone();
        s2.set_default_errno_ret(Some(38));
        prepare(&s2, Some(dir.path()), &mut w).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn a_cache_entry_for_another_profile_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.bpf");
        write_cached(dir.path(), &file, b"profile-a", &[0u8; 16]).unwrap();
        assert!(read_cached(&file, b"profile-a").is_some());
        assert!(read_cached(&file, b"profile-b").is_none());
    }

    #[test]
    fn notify_and_flags() {
        let s = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
            "listenerPath": "/run/x.sock",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        }));
        let mut w = Vec::new();
        let f = flags(&s, &mut w);
        assert_eq!(
            f,
            FLAG_NEW_LISTENER | FLAG_TSYNC | FLAG_TSYNC_ESRCH | FLAG_WAIT_KILLABLE_RECV
        );
        assert!(w.is_empty());
    }
}
