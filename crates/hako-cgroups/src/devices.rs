//! Device access rules: the v1 `devices` controller's semantics, applied
//! either to v1's `devices.allow`/`devices.deny` or, on cgroup v2, as an
//! eBPF program attached to the cgroup.
//!
//! The rules of `linux.resources.devices` are evaluated the way the v1
//! kernel evaluates writes, in order (a model of it, [`Devices`], holds the
//! outcome); v2 then enforces exactly that outcome, so a config means the
//! same on both.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::fsutil::{open_dir, read_trim, write_file};
use crate::{Cgroup, Error, Place, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceType {
    All,
    Char,
    Block,
}

const ACC_MKNOD: u8 = 1;
const ACC_READ: u8 = 2;
const ACC_WRITE: u8 = 4;
const ACC_ALL: u8 = 7;

/// One rule: type, major and minor (`None` for `*`), access bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub typ: DeviceType,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: u8,
}

impl DeviceRule {
    fn is_everything(&self) -> bool {
        self.typ == DeviceType::All
            && self.major.is_none()
            && self.minor.is_none()
            && self.access == ACC_ALL
    }

    fn same_device(&self, o: &DeviceRule) -> bool {
        self.typ == o.typ && self.major == o.major && self.minor == o.minor
    }

    /// The v1 file syntax: `c 1:3 rwm`.
    fn v1_line(&self) -> String {
        let t = match self.typ {
            DeviceType::All => 'a',
            DeviceType::Char => 'c',
            DeviceType::Block => 'b',
        };
        let num = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
        format!(
            "{t} {}:{} {}",
            num(self.major),
            num(self.minor),
            access_string(self.access)
        )
    }

    fn parse_v1_line(line: &str) -> Option<DeviceRule> {
        let mut f = line.split_whitespace();
        let typ = match f.next()? {
            "a" => DeviceType::All,
            "c" => DeviceType::Char,
            "b" => DeviceType::Block,
            _ => return None,
        };
        let (maj, min) = f.next()?.split_once(':')?;
        let num = |s: &str| {
            if s == "*" {
                Some(None)
            } else {
                s.parse().ok().map(Some)
            }
        };
        Some(DeviceRule {
            typ,
            major: num(maj)?,
            minor: num(min)?,
            access: parse_access(f.next()?)?,
        })
    }
}

fn access_string(a: u8) -> String {
    let mut s = String::new();
    if a & ACC_READ != 0 {
        s.push('r');
    }
    if a & ACC_WRITE != 0 {
        s.push('w');
    }
    if a & ACC_MKNOD != 0 {
        s.push('m');
    }
    s
}

fn parse_access(s: &str) -> Option<u8> {
    let mut a = 0;
    for c in s.chars() {
        a |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => return None,
        };
    }
    Some(a)
}

/// The state a v1 devices cgroup is in after a sequence of writes: a
/// default, and exceptions to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Devices {
    pub default_allow: bool,
    pub exceptions: Vec<DeviceRule>,
}

impl Default for Devices {
    /// A new cgroup under an unrestricted parent: everything allowed.
    fn default() -> Self {
        Devices {
            default_allow: true,
            exceptions: Vec::new(),
        }
    }
}

impl Devices {
    /// Applies one allow or deny rule as the v1 kernel would.
    pub fn apply(&mut self, allow: bool, rule: DeviceRule) {
        if rule.is_everything() {
            self.default_allow = allow;
            self.exceptions.clear();
            return;
        }
        if allow == self.default_allow {
            // Agrees with the default: takes access away from exceptions
            // for exactly this device.
            self.exceptions.retain_mut(|e| {
                if e.same_device(&rule) {
                    e.access &= !rule.access;
                }
                e.access != 0
            });
        } else if let Some(e) = self.exceptions.iter_mut().find(|e| e.same_device(&rule)) {
            e.access |= rule.access;
        } else {
            self.exceptions.push(rule);
        }
    }

    /// The outcome of the spec's rules, in order, on a new cgroup.
    pub fn from_spec(rules: &[LinuxDeviceCgroup]) -> Result<Devices> {
        let mut d = Devices::default();
        for (i, r) in rules.iter().enumerate() {
            d.apply(r.allow(), rule_from_spec(i, r)?);
        }
        Ok(d)
    }

    /// Whether an access is allowed, by the v1 kernel's matching rules (for
    /// tests and for checking the eBPF program against the model).
    pub fn allows(&self, typ: DeviceType, major: u32, minor: u32, access: u8) -> bool {
        let matches = |e: &DeviceRule| {
            (e.typ == DeviceType::All || e.typ == typ)
                && e.major.is_none_or(|m| m == major)
                && e.minor.is_none_or(|m| m == minor)
        };
        if self.default_allow {
            // Any overlap with a denied exception denies.
            !self
                .exceptions
                .iter()
                .any(|e| matches(e) && e.access & access != 0)
        } else {
            // An allowed exception must cover every bit asked for.
            self.exceptions
                .iter()
                .any(|e| matches(e) && access & !e.access == 0)
        }
    }
}

fn rule_from_spec(i: usize, r: &LinuxDeviceCgroup) -> Result<DeviceRule> {
    let field = format!("devices[{i}]");
    let typ = match r.typ() {
        None | Some(LinuxDeviceType::A) => DeviceType::All,
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => DeviceType::Char,
        Some(LinuxDeviceType::B) => DeviceType::Block,
        Some(LinuxDeviceType::P) => {
            return Err(Error::Resource {
                field: format!("{field}.type"),
                message: "\"p\" (a fifo) is not subject to device rules; use a, b or c".into(),
            });
        }
    };
    let num = |n: Option<i64>, what: &str| -> Result<Option<u32>> {
        match n {
            None | Some(-1) => Ok(None),
            Some(v) => u32::try_from(v).map(Some).map_err(|_| Error::Resource {
                field: format!("{field}.{what}"),
                message: format!("{v} is not a device number"),
            }),
        }
    };
    let access = match r.access().as_deref() {
        None | Some("") => ACC_ALL,
        Some(s) => parse_access(s).ok_or_else(|| Error::Resource {
            field: format!("{field}.access"),
            message: format!("{s:?} is not a combination of r, w and m"),
        })?,
    };
    Ok(DeviceRule {
        typ,
        major: num(r.major(), "major")?,
        minor: num(r.minor(), "minor")?,
        access,
    })
}

pub fn apply(cg: &Cgroup, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    let target = Devices::from_spec(rules)?;
    match cg.place("devices") {
        Some(Place::V1(dir)) => apply_v1(dir, &target),
        Some(Place::V2(dir)) => apply_v2(dir, &target),
        None => Err(Error::Resource {
            field: "devices".into(),
            message: "no devices controller: mount the v1 devices hierarchy or use cgroup v2"
                .into(),
        }),
    }
}

fn v1_write(dir: &Path, allow: bool, r: &DeviceRule) -> Result<()> {
    let file = dir.join(if allow {
        "devices.allow"
    } else {
        "devices.deny"
    });
    // "a" in v1 resets everything, so a partial all-types rule is written
    // as its char and block halves.
    if r.typ == DeviceType::All && !r.is_everything() {
        for typ in [DeviceType::Char, DeviceType::Block] {
            write_file(&file, &DeviceRule { typ, ..*r }.v1_line())?;
        }
        return Ok(());
    }
    write_file(&file, &r.v1_line())
}

/// Moves a v1 devices cgroup to `target` without a moment in which a
/// device that stays allowed is denied (the container may be running).
fn apply_v1(dir: &Path, target: &Devices) -> Result<()> {
    let field_err = |e: Error| match e {
        Error::Write {
            path,
            value,
            source,
        } => Error::Resource {
            field: "devices".into(),
            message: format!("write {value:?} to {}: {source}", path.display()),
        },
        other => other,
    };
    let list = read_trim(&dir.join("devices.list")).map_err(field_err)?;
    let current_rules: Vec<DeviceRule> =
        list.lines().filter_map(DeviceRule::parse_v1_line).collect();
    let current_allow_all = current_rules.iter().any(DeviceRule::is_everything);
    let all = DeviceRule {
        typ: DeviceType::All,
        major: None,
        minor: None,
        access: ACC_ALL,
    };
    if target.default_allow {
        v1_write(dir, true, &all).map_err(field_err)?;
        for e in &target.exceptions {
            v1_write(dir, false, e).map_err(field_err)?;
        }
        return Ok(());
    }
    if current_allow_all {
        v1_write(dir, false, &all).map_err(field_err)?;
        for e in &target.exceptions {
            v1_write(dir, true, e).map_err(field_err)?;
        }
        return Ok(());
    }
    for e in &target.exceptions {
        v1_write(dir, true, e).map_err(field_err)?;
    }
    for c in &current_rules {
        let keep = target
            .exceptions
            .iter()
            .find(|e| e.same_device(c))
            .map_or(0, |e| e.access);
        let drop = c.access & !keep;
        if drop != 0 {
            v1_write(dir, false, &DeviceRule { access: drop, ..*c }).map_err(field_err)?;
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ eBPF

/// One eBPF instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

// Opcodes used (see linux/bpf.h and linux/bpf_common.h).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54;
const ALU32_RSH_K: u8 = 0x74;
const ALU64_AND_K: u8 = 0x57;
const ALU64_MOV_K: u8 = 0xb7;
const ALU64_MOV_X: u8 = 0xbf;
const JMP_JNE_K: u8 = 0x55;
const JMP_JEQ_K: u8 = 0x15;
const JMP_EXIT: u8 = 0x95;

const DEVCG_BLOCK: i32 = 1;
const DEVCG_CHAR: i32 = 2;

/// The program that enforces `d`: registers r2 = type, r3 = access,
/// r4 = major, r5 = minor; each exception is a block that returns the
/// opposite of the default when it matches.
pub fn program(d: &Devices) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    let result = i32::from(!d.default_allow);
    for e in &d.exceptions {
        // Each test jumps past the block's end when it does not match;
        // offsets are filled in once the block's length is known.
        let mut block: Vec<Insn> = Vec::new();
        let mut jumps = Vec::new();
        match e.typ {
            DeviceType::All => {}
            DeviceType::Char | DeviceType::Block => {
                let t = if e.typ == DeviceType::Char {
                    DEVCG_CHAR
                } else {
                    DEVCG_BLOCK
                };
                jumps.push(block.len());
                block.push(insn(JMP_JNE_K, 2, 0, 0, t));
            }
        }
        if e.access != ACC_ALL || d.default_allow {
            block.push(insn(ALU64_MOV_X, 1, 3, 0, 0));
            if d.default_allow {
                // Denied exception: matches when any asked bit is in it.
                block.push(insn(ALU64_AND_K, 1, 0, 0, i32::from(e.access)));
                jumps.push(block.len());
                block.push(insn(JMP_JEQ_K, 1, 0, 0, 0));
            } else {
                // Allowed exception: matches when it covers every bit.
                block.push(insn(ALU64_AND_K, 1, 0, 0, i32::from(!e.access & ACC_ALL)));
                jumps.push(block.len());
                block.push(insn(JMP_JNE_K, 1, 0, 0, 0));
            }
        }
        if let Some(m) = e.major {
            jumps.push(block.len());
            block.push(insn(
                JMP_JNE_K,
                4,
                0,
                0,
                i32::try_from(m).unwrap_or(i32::MAX),
            ));
        }
        if let Some(m) = e.minor {
            jumps.push(block.len());
            block.push(insn(
                JMP_JNE_K,
                5,
                0,
                0,
                i32::try_from(m).unwrap_or(i32::MAX),
            ));
        }
        block.push(insn(ALU64_MOV_K, 0, 0, 0, result));
        block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        let len = block.len();
        for j in jumps {
            block[j].off = i16::try_from(len - j - 1).unwrap_or(i16::MAX);
        }
        p.extend(block);
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, i32::from(d.default_allow)));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

const BPF_PROG_LOAD: i64 = 5;
const BPF_PROG_ATTACH: i64 = 8;
const BPF_PROG_DETACH: i64 = 9;
const BPF_PROG_GET_FD_BY_ID: i64 = 13;
const BPF_PROG_QUERY: i64 = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// bpf(2) with an attribute struct of ours.
fn bpf<T>(cmd: i64, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: `attr` is a valid, initialised repr(C) struct whose size is
    // passed; the kernel reads (and for QUERY writes) only within it.
    let ret =
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn owned(fd: i64) -> Result<OwnedFd> {
    let fd = RawFd::try_from(fd).map_err(|_| Error::Bpf("descriptor out of range".into()))?;
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn load_program(insns: &[Insn]) -> Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(insns.len()).map_err(|_| Error::Bpf("program too long".into()))?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: u32::try_from(log.len()).unwrap_or(0),
        log_buf: log.as_mut_ptr() as u64,
        ..Default::default()
    };
    attr.prog_name[..9].copy_from_slice(b"hako_devs");
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => owned(fd),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(0);
            Err(Error::Bpf(format!(
                "load the device program: {e}{}",
                if end > 0 {
                    format!(
                        "; verifier: {}",
                        String::from_utf8_lossy(&log[..end]).trim()
                    )
                } else {
                    String::new()
                }
            )))
        }
    }
}

fn attached_programs(cgroup: RawFd) -> Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut q = QueryAttr {
        target_fd: u32::try_from(cgroup).unwrap_or(0),
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: 64,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut q)
        .map_err(|e| Error::Bpf(format!("query attached device programs: {e}")))?;
    ids.truncate(usize::try_from(q.prog_cnt).unwrap_or(0).min(64));
    Ok(ids)
}

/// Attaches the new program, then detaches the ones it replaces, so that
/// the cgroup is never without a filter.
fn apply_v2(dir: &Path, target: &Devices) -> Result<()> {
    let cgroup = open_dir(dir)?;
    let old = attached_programs(cgroup.as_raw_fd())?;
    let prog = load_program(&program(target))?;
    let mut a = AttachAttr {
        target_fd: u32::try_from(cgroup.as_raw_fd()).unwrap_or(0),
        attach_bpf_fd: u32::try_from(prog.as_raw_fd()).unwrap_or(0),
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    bpf(BPF_PROG_ATTACH, &mut a).map_err(|e| {
        Error::Bpf(format!(
            "attach the device program to {}: {e}",
            dir.display()
        ))
    })?;
    for id in old {
        let mut g = GetFdAttr {
            prog_id: id,
            ..Default::default()
        };
        let Ok(fd) = bpf(BPF_PROG_GET_FD_BY_ID, &mut g) else {
            continue;
        };
        let old_prog = owned(fd)?;
        let mut d = AttachAttr {
            target_fd: u32::try_from(cgroup.as_raw_fd()).unwrap_or(0),
            attach_bpf_fd: u32::try_from(old_prog.as_raw_fd()).unwrap_or(0),
            attach_type: BPF_CGROUP_DEVICE,
            attach_flags: 0,
        };
        bpf(BPF_PROG_DETACH, &mut d).map_err(|e| {
            Error::Bpf(format!(
                "detach an old device program from {}: {e}",
                dir.display()
            ))
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rule(
        allow: bool,
        typ: Option<LinuxDeviceType>,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(allow);
        r.set_typ(typ);
        r.set_major(major);
        r.set_minor(minor);
        r.set_access(Some(access.into()));
        r
    }

    #[test]
    fn whitelist_after_deny_all() {
        let d = Devices::from_spec(&[
            rule(false, None, None, None, "rwm"),
            rule(true, Some(LinuxDeviceType::C), Some(1), Some(3), "rwm"),
            rule(true, Some(LinuxDeviceType::C), Some(136), None, "rw"),
            rule(true, Some(LinuxDeviceType::C), Some(1), Some(5), "r"),
        ])
        .unwrap();
        assert!(!d.default_allow);
        assert!(d.allows(DeviceType::Char, 1, 3, ACC_READ | ACC_WRITE));
        assert!(d.allows(DeviceType::Char, 136, 7, ACC_WRITE));
        assert!(!d.allows(DeviceType::Char, 136, 7, ACC_MKNOD));
        assert!(!d.allows(DeviceType::Char, 1, 5, ACC_WRITE));
        assert!(!d.allows(DeviceType::Block, 1, 3, ACC_READ));
    }

    #[test]
    fn deny_removes_from_whitelist_and_allow_all_resets() {
        let mut d = Devices::from_spec(&[
            rule(false, None, None, None, "rwm"),
            rule(true, Some(LinuxDeviceType::C), Some(1), Some(3), "rwm"),
            rule(false, Some(LinuxDeviceType::C), Some(1), Some(3), "w"),
        ])
        .unwrap();
        assert!(d.allows(DeviceType::Char, 1, 3, ACC_READ));
        assert!(!d.allows(DeviceType::Char, 1, 3, ACC_WRITE));
        d.apply(
            true,
            DeviceRule {
                typ: DeviceType::All,
                major: None,
                minor: None,
                access: ACC_ALL,
            },
        );
        assert!(d.default_allow && d.exceptions.is_empty());
        d.apply(
            false,
            DeviceRule {
                typ: DeviceType::Block,
                major: Some(8),
                minor: None,
                access: ACC_WRITE,
            },
        );
        assert!(!d.allows(DeviceType::Block, 8, 1, ACC_WRITE | ACC_READ));
        assert!(d.allows(DeviceType::Block, 8, 1, ACC_READ));
    }

    #[test]
    fn v1_lines_round_trip() {
        for l in ["c 1:3 rwm", "a *:* rwm", "b 8:* r", "c *:* m"] {
            assert_eq!(DeviceRule::parse_v1_line(l).unwrap().v1_line(), l);
        }
    }

    /// Runs the program on a context the way the kernel would, to check
    /// it against the model on every combination.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn interpret(p: &[Insn], typ: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(access << 16) | typ, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = (usize::from(i.regs & 0xf), usize::from(i.regs >> 4));
            let imm = i64::from(i.imm) as u64;
            pc += 1;
            match i.code {
                LDX_MEM_W => r[dst] = u64::from(ctx[usize::try_from(i.off).unwrap() / 4]),
                ALU32_AND_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                ALU32_RSH_K => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
                ALU64_AND_K => r[dst] &= imm,
                ALU64_MOV_K => r[dst] = imm,
                ALU64_MOV_X => r[dst] = r[src],
                JMP_JNE_K => {
                    if r[dst] != imm {
                        pc += usize::try_from(i.off).unwrap();
                    }
                }
                JMP_JEQ_K => {
                    if r[dst] == imm {
                        pc += usize::try_from(i.off).unwrap();
                    }
                }
                JMP_EXIT => return r[0],
                other => panic!("unknown opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn program_matches_the_model() {
        let sets = [
            vec![
                rule(false, None, None, None, "rwm"),
                rule(true, Some(LinuxDeviceType::C), Some(1), Some(3), "rwm"),
                rule(true, Some(LinuxDeviceType::C), Some(136), None, "rw"),
                rule(true, Some(LinuxDeviceType::B), None, None, "m"),
                rule(true, None, Some(5), Some(2), "r"),
            ],
            vec![
                rule(true, None, None, None, "rwm"),
                rule(false, Some(LinuxDeviceType::C), Some(1), Some(3), "w"),
                rule(false, Some(LinuxDeviceType::B), Some(8), None, "rwm"),
            ],
            vec![rule(false, None, None, None, "rwm")],
            vec![],
        ];
        for rules in sets {
            let d = Devices::from_spec(&rules).unwrap();
            let p = program(&d);
            for (typ, t) in [(DeviceType::Char, 2), (DeviceType::Block, 1)] {
                for (maj, min) in [(1, 3), (1, 5), (136, 0), (136, 9), (8, 0), (5, 2), (5, 3)] {
                    for acc in 1..=7u8 {
                        let want = d.allows(typ, maj, min, acc);
                        let got = interpret(&p, t, u32::from(acc), maj, min) == 1;
                        assert_eq!(got, want, "{d:?} {typ:?} {maj}:{min} {acc}");
                    }
                }
            }
        }
    }
}
