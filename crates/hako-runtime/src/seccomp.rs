//! `linux.seccomp` to a BPF program, compiled by libseccomp once per
//! profile and kept in a cache under the state root; loaded with the
//! seccomp(2) syscall directly, so that every filter flag this kernel has
//! is available whatever the libseccomp version. A profile that refuses
//! by default gets a stub in front: syscalls numbered above the highest it
//! names answer ENOSYS, so that programs fall back from syscalls newer
//! than the profile or than this libseccomp.

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
    // A binary tree of syscall numbers instead of a list: an allowlist of
    // ~370 calls then costs a few comparisons per syscall, not hundreds.
    // (libseccomp before 2.5 lacks it and keeps the list.)
    let _ = ctx.set_ctl_optimize(2);
    let mut arches = vec![ScmpArch::native()];
    for (i, a) in s.architectures().iter().flatten().enumerate() {
        let name = enum_name(a);
        let arch = ScmpArch::from_str(&name).map_err(|e| err(&format!("architectures[{i}]"), e))?;
        if !arches.contains(&arch) {
            ctx.add_arch(arch)
                .map_err(|e| err(&format!("architectures[{i}] ({name})"), e))?;
            arches.push(arch);
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
            // A name this libseccomp does not know is skipped: either no
            // architecture here has it, or it is newer than this
            // libseccomp, and then the stub below answers ENOSYS for it.
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
    let mut compiled = Vec::new();
    f.read_to_end(&mut compiled)
        .map_err(|e| Error::Seccomp(format!("read the compiled filter: {e}")))?;
    let mut program = Vec::new();
    if refuses_by_default(default) {
        for insn in enosys_stub(&highest_syscalls(s, &arches)) {
            program.extend_from_slice(&insn.to_bytes());
        }
    }
    program.extend_from_slice(&compiled);
    Ok(program)
}

/// Whether the default action refuses a syscall (rather than letting it
/// through, logging or handing it to a tracer or a supervisor).
fn refuses_by_default(default: ScmpAction) -> bool {
    match default {
        ScmpAction::Errno(e) => e != libc::ENOSYS,
        ScmpAction::KillThread | ScmpAction::KillProcess | ScmpAction::Trap => true,
        _ => false,
    }
}

/// The highest syscall number the profile names, per architecture of the
/// filter (names this libseccomp does not know do not count).
fn highest_syscalls(s: &LinuxSeccomp, arches: &[ScmpArch]) -> Vec<(ScmpArch, u32)> {
    arches
        .iter()
        .filter_map(|&arch| {
            let highest = s
                .syscalls()
                .iter()
                .flatten()
                .flat_map(|r| r.names())
                .filter_map(|n| ScmpSyscall::from_name_by_arch(n, arch).ok())
                // Negative numbers are libseccomp's stand-ins for syscalls
                // this architecture lacks.
                .filter_map(|sc| u32::try_from(i32::from(sc)).ok())
                .map(|nr| {
                    if arch == ScmpArch::X32 {
                        nr | X32_SYSCALL_BIT
                    } else {
                        nr
                    }
                })
                .max()?;
            Some((arch, highest))
        })
        .collect()
}

const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The kernel's AUDIT_ARCH_* value for an architecture (what a filter
/// reads in `seccomp_data.arch`), for those the stub knows. x32 shares
/// x86-64's and sets X32_SYSCALL_BIT in the syscall number instead.
fn audit_arch(arch: ScmpArch) -> Option<u32> {
    match arch {
        ScmpArch::X8664 | ScmpArch::X32 => Some(0xC000_003E),
        ScmpArch::X86 => Some(0x4000_0003),
        ScmpArch::Aarch64 => Some(0xC000_00B7),
        ScmpArch::Arm => Some(0x4000_0028),
        _ => None,
    }
}

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

impl Insn {
    fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..2].copy_from_slice(&self.code.to_ne_bytes());
        b[2] = self.jt;
        b[3] = self.jf;
        b[4..].copy_from_slice(&self.k.to_ne_bytes());
        b
    }
}

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGT_K: u16 = 0x25;
const BPF_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

/// Where a stub jump goes.
#[derive(Clone, Copy)]
enum To {
    /// `n` instructions past the next one.
    Skip(usize),
    /// The next architecture's check (or the filter, after the last).
    NextArch,
    /// The ENOSYS return.
    Enosys,
    /// The filter itself.
    Filter,
}

/// Instructions put before the compiled filter: a syscall numbered above
/// the highest the profile names for its architecture answers ENOSYS,
/// not the default action. Such a syscall is newer than the profile (or
/// than this libseccomp, which cannot name it), and a C library that
/// tries it falls back to an older one on ENOSYS but not on EPERM (glibc
/// and `fchmodat2`, `clone3`...). Everything else goes on to the filter.
fn enosys_stub(highest: &[(ScmpArch, u32)]) -> Vec<Insn> {
    let find = |a: ScmpArch| highest.iter().find(|(x, _)| *x == a).map(|(_, n)| *n);
    // (AUDIT_ARCH, highest number, for x86-64: x32's highest if the filter
    // has x32)
    let mut blocks: Vec<(u32, u32, Option<Option<u32>>)> = Vec::new();
    for &(arch, n) in highest {
        match (arch, audit_arch(arch)) {
            (ScmpArch::X8664, Some(token)) => {
                blocks.push((token, n, Some(find(ScmpArch::X32))));
            }
            // x32 rides on x86-64's block; without it, nothing to do.
            (ScmpArch::X32, _) | (_, None) => {}
            (_, Some(token)) => blocks.push((token, n, None)),
        }
    }
    if blocks.is_empty() {
        return Vec::new();
    }
    let mut code: Vec<(u16, To, To, u32)> =
        vec![(BPF_LD_W_ABS, To::Skip(0), To::Skip(0), DATA_ARCH)];
    let mut block_starts = Vec::new();
    for (token, n, x32) in blocks {
        block_starts.push(code.len());
        code.push((BPF_JEQ_K, To::Skip(0), To::NextArch, token));
        code.push((BPF_LD_W_ABS, To::Skip(0), To::Skip(0), DATA_NR));
        match x32 {
            // x86-64 with x32 in the filter: x32 numbers against x32's.
            Some(Some(n32)) => {
                code.push((BPF_JSET_K, To::Skip(0), To::Skip(1), X32_SYSCALL_BIT));
                code.push((BPF_JGT_K, To::Enosys, To::Filter, n32));
            }
            // x86-64 without x32: x32 numbers are the filter's to refuse.
            Some(None) => code.push((BPF_JSET_K, To::Filter, To::Skip(0), X32_SYSCALL_BIT)),
            None => {}
        }
        code.push((BPF_JGT_K, To::Enosys, To::Filter, n));
    }
    let enosys = code.len();
    code.push((
        BPF_RET_K,
        To::Skip(0),
        To::Skip(0),
        SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
    ));
    let filter = code.len();
    let block_of = |i: usize| block_starts.iter().rposition(|s| *s <= i).unwrap_or(0);
    let offset = |i: usize, to: To| -> u8 {
        let target = match to {
            To::Skip(n) => i + 1 + n,
            To::NextArch => block_starts.get(block_of(i) + 1).copied().unwrap_or(filter),
            To::Enosys => enosys,
            To::Filter => filter,
        };
        // A handful of instructions per architecture: always in range.
        u8::try_from(target - (i + 1)).unwrap_or(u8::MAX)
    };
    code.iter()
        .enumerate()
        .map(|(i, &(c, jt, jf, k))| Insn {
            code: c,
            jt: if c & 0x07 == 0x05 { offset(i, jt) } else { 0 },
            jf: if c & 0x07 == 0x05 { offset(i, jf) } else { 0 },
            k,
        })
        .collect()
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
/// is not used (2: rules without errnoRet return EPERM; 3: the ENOSYS
/// stub for syscalls newer than the profile).
const COMPILER_REVISION: u32 = 4;

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

    /// Loads `f` in a child process, makes the syscalls `calls` there and
    /// returns, per call, its result or the errno.
    fn run_filtered(f: &Filter, calls: &[libc::c_long]) -> Vec<std::result::Result<(), i32>> {
        let prog = SockFprog {
            len: u16::try_from(f.program.len() / 8).unwrap(),
            filter: f.program.as_ptr(),
        };
        let mut pipe = [0 as libc::c_int; 2];
        // SAFETY: a valid two-int array.
        assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
        // SAFETY: the child makes only raw syscalls and _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: raw syscalls with valid arguments.
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                if libc::syscall(libc::SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0 {
                    libc::_exit(2);
                }
                for &nr in calls {
                    let r = libc::syscall(nr, 0, 0, 0, 0);
                    let code: i32 = if r == -1 {
                        *libc::__errno_location()
                    } else {
                        0
                    };
                    libc::write(pipe[1], (&raw const code).cast(), 4);
                }
                libc::_exit(0);
            }
        }
        // SAFETY: our pipe's descriptors.
        unsafe { libc::close(pipe[1]) };
        let mut status = 0;
        // SAFETY: our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child: {status:#x}"
        );
        // SAFETY: the read end, owned here from now on.
        let mut r = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(pipe[0]) });
        let mut buf = Vec::new();
        r.read_to_end(&mut buf).unwrap();
        buf.chunks(4)
            .map(|c| match i32::from_ne_bytes(c.try_into().unwrap()) {
                0 => Ok(()),
                e => Err(e),
            })
            .collect()
    }

    fn nr(name: &str) -> i32 {
        i32::from(ScmpSyscall::from_name(name).unwrap())
    }

    #[test]
    fn syscalls_above_the_profile_answer_enosys() {
        let allowed = ["exit", "exit_group", "getppid", "rt_sigreturn", "write"];
        let s = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "syscalls": [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]
        }));
        let highest = allowed.iter().map(|n| nr(n)).max().unwrap();
        // Refused by default, below the highest: EPERM; above: ENOSYS.
        let below = ["getpid", "getuid", "getgid", "gettid"]
            .iter()
            .map(|n| nr(n))
            .find(|n| *n < highest)
            .unwrap();
        let f = prepare(&s, None, &mut Vec::new()).unwrap();
        let calls = [nr("getppid"), below, highest + 1, highest + 100].map(libc::c_long::from);
        assert_eq!(
            run_filtered(&f, &calls),
            [
                Ok(()),
                Err(libc::EPERM),
                Err(libc::ENOSYS),
                Err(libc::ENOSYS)
            ]
        );
        // A profile that allows by default gets no stub.
        let s = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}]
        }));
        let f = prepare(&s, None, &mut Vec::new()).unwrap();
        assert_eq!(
            run_filtered(&f, &[libc::c_long::from(nr("getppid") + 1)]),
            [Ok(())]
        );
        assert_eq!(
            run_filtered(&f, &[libc::c_long::from(nr("getppid"))]),
            [Err(libc::EPERM)]
        );
    }

    #[test]
    fn the_stub_checks_each_architecture() {
        let x32_highest = X32_SYSCALL_BIT | 547;
        let stub = enosys_stub(&[
            (ScmpArch::X8664, 231),
            (ScmpArch::X86, 252),
            (ScmpArch::X32, x32_highest),
        ]);
        let i = |code, jt, jf, k| Insn { code, jt, jf, k };
        let enosys = SECCOMP_RET_ERRNO | 38;
        assert_eq!(
            stub,
            [
                i(BPF_LD_W_ABS, 0, 0, DATA_ARCH),
                // x86-64, and x32 by its bit.
                i(BPF_JEQ_K, 0, 4, 0xC000_003E),
                i(BPF_LD_W_ABS, 0, 0, DATA_NR),
                i(BPF_JSET_K, 0, 1, X32_SYSCALL_BIT),
                i(BPF_JGT_K, 4, 5, x32_highest),
                i(BPF_JGT_K, 3, 4, 231),
                // i386.
                i(BPF_JEQ_K, 0, 3, 0x4000_0003),
                i(BPF_LD_W_ABS, 0, 0, DATA_NR),
                i(BPF_JGT_K, 0, 1, 252),
                i(BPF_RET_K, 0, 0, enosys),
            ]
        );
        // Without x32 in the filter, its numbers go to the filter as they are.
        let stub = enosys_stub(&[(ScmpArch::X8664, 231)]);
        assert_eq!(stub[3], i(BPF_JSET_K, 2, 0, X32_SYSCALL_BIT));
        assert_eq!(stub[4], i(BPF_JGT_K, 0, 1, 231));
        // An architecture the stub does not know: no stub at all.
        assert!(enosys_stub(&[(ScmpArch::S390X, 400)]).is_empty());
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
