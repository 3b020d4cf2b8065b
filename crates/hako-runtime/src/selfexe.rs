//! Keeping the runtime binary out of its containers' reach.
//!
//! A process the runtime starts in a container runs the runtime's own code
//! until it execs the container's program. Before that exec it is
//! non-dumpable, so that no process of the container can open its
//! `/proc/PID/exe`. The exec itself is the dangerous moment: if the program
//! is a script starting `#!/proc/self/exe` (CVE-2019-5736), the kernel would
//! run the *runtime* binary inside the container, where a process of the
//! container could open it and, once it exits, rewrite it on the host.
//!
//! So the last exec goes through a trampoline: a 269-byte static program
//! held in a sealed memfd, whose only job is `execve(argv[0], argv + 1,
//! envp)`. `/proc/self/exe` during the program's exec is the trampoline,
//! which nobody can write; the runtime binary is never on that path. This
//! costs one exec of a tiny binary, where copying the whole runtime into a
//! memfd and re-executing it (what other runtimes do) costs milliseconds.
//!
//! Non-dumpable is not enough against a container process that has
//! `CAP_SYS_PTRACE` in the host's user namespace: that capability lets it
//! open `/proc/PID/exe` of a non-dumpable process, so it could open the
//! runtime binary through the waiting init (or an exec'd process before
//! its exec) and rewrite it later. For such containers alone, `create`
//! and `exec` first re-execute themselves from a sealed memfd copy of the
//! binary ([`reexec_sealed`]): every process they start in the container
//! then runs from that copy, which nobody can write, and the binary on
//! disk is never in reach. With the default capabilities (no
//! `CAP_SYS_PTRACE`) or a new user namespace (where the capability does
//! not reach the host's processes) the copy is skipped, and the fast path
//! stays as it is.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// x86-64 code of the trampoline: `execve(argv[0], &argv[1], envp)`; if
/// that fails, or there is nothing to run (fewer than two arguments: how a
/// `#!/proc/self/exe` script loop ends), a message on stderr and exit 127
/// (ENOENT) or 126.
///
/// ```text
///     mov rax,[rsp]; mov rbx,-8; cmp rax,2; jb fail      ; argc < 2
///     mov rdi,[rsp+8]; lea rsi,[rsp+16]; lea rdx,[rsp+rax*8+16]
///     mov eax,59; syscall                                 ; execve
///     mov rbx,rax
/// fail:
///     mov eax,1; mov edi,2; lea rsi,[rip+msg]; mov edx,msglen
///     syscall                                             ; write(2, msg, msglen)
///     mov edi,126; cmp rbx,-2; jne 1f; mov edi,127
/// 1:  mov eax,231; syscall                                ; exit_group
/// ```
#[cfg(target_arch = "x86_64")]
const CODE: [u8; 89] = [
    0x48, 0x8b, 0x04, 0x24, 0x48, 0xc7, 0xc3, 0xf8, 0xff, 0xff, 0xff, 0x48, 0x83, 0xf8, 0x02, 0x72,
    0x19, 0x48, 0x8b, 0x7c, 0x24, 0x08, 0x48, 0x8d, 0x74, 0x24, 0x10, 0x48, 0x8d, 0x54, 0xc4, 0x10,
    0xb8, 0x3b, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x48, 0x89, 0xc3, 0xb8, 0x01, 0x00, 0x00, 0x00, 0xbf,
    0x02, 0x00, 0x00, 0x00, 0x48, 0x8d, 0x35, 0x1e, 0x00, 0x00, 0x00, 0xba, 0x3c, 0x00, 0x00, 0x00,
    0x0f, 0x05, 0xbf, 0x7e, 0x00, 0x00, 0x00, 0x48, 0x83, 0xfb, 0xfe, 0x75, 0x05, 0xbf, 0x7f, 0x00,
    0x00, 0x00, 0xb8, 0xe7, 0x00, 0x00, 0x00, 0x0f, 0x05,
];

/// The message the code writes; its length (60) is in the code.
const MESSAGE: &[u8; 60] = b"hako-runtime: the container's program could not be executed\n";

/// Where the trampoline is loaded.
const BASE: u64 = 0x40_0000;

/// The trampoline as an ELF executable: header, one loadable segment,
/// code, message.
pub fn trampoline_elf() -> Vec<u8> {
    const EHDR: u64 = 64;
    const PHDR: u64 = 56;
    let total = EHDR + PHDR + CODE.len() as u64 + MESSAGE.len() as u64;
    let mut e = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    // e_ident: ELF, 64-bit, little-endian, version 1, System V ABI.
    e.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    e.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    e.extend_from_slice(&62u16.to_le_bytes()); // e_machine: x86-64
    e.extend_from_slice(&1u32.to_le_bytes()); // e_version
    e.extend_from_slice(&(BASE + EHDR + PHDR).to_le_bytes()); // e_entry
    e.extend_from_slice(&EHDR.to_le_bytes()); // e_phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    e.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    e.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    e.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
    e.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    e.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
    e.extend_from_slice(&1u32.to_le_bytes()); // p_type: PT_LOAD
    e.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R + X
    e.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    e.extend_from_slice(&BASE.to_le_bytes()); // p_vaddr
    e.extend_from_slice(&BASE.to_le_bytes()); // p_paddr
    e.extend_from_slice(&total.to_le_bytes()); // p_filesz
    e.extend_from_slice(&total.to_le_bytes()); // p_memsz
    e.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    e.extend_from_slice(&CODE);
    e.extend_from_slice(MESSAGE);
    e
}

/// The trampoline in a sealed memfd: executable, never writable.
#[derive(Debug)]
pub struct Trampoline {
    fd: OwnedFd,
}

const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

impl Trampoline {
    /// Makes the trampoline; its descriptor is `min_fd` or above, clear of
    /// the descriptors a caller preserves for the container.
    pub fn new(min_fd: std::os::fd::RawFd) -> std::io::Result<Trampoline> {
        // MFD_EXEC (Linux 6.3) says outright that the memfd may be
        // executed, where a sysctl could forbid it by default; older
        // kernels refuse the flag and allow it anyway.
        const MFD_EXEC: libc::c_uint = 0x10;
        let mut fd = -1;
        for flags in [
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | MFD_EXEC,
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        ] {
            // SAFETY: memfd_create with a valid NUL-terminated name.
            fd = unsafe { libc::memfd_create(c"hako-trampoline".as_ptr(), flags) };
            if fd >= 0 {
                break;
            }
        }
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor to us.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut file = std::fs::File::from(fd);
        std::io::Write::write_all(&mut file, &trampoline_elf())?;
        let fd = OwnedFd::from(file);
        // SAFETY: F_ADD_SEALS on a memfd made with MFD_ALLOW_SEALING.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = crate::sys::move_above(fd, min_fd).map_err(std::io::Error::from)?;
        Ok(Trampoline { fd })
    }

    pub fn raw(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    /// Execs `program` with `args` and `env` through the trampoline.
    /// Returns only if the trampoline itself could not be executed.
    pub fn exec(&self, program: &Path, args: &[String], env: &[String]) -> std::io::Error {
        let c = |s: &[u8]| CString::new(s).unwrap_or_default();
        let mut strings = vec![c(program.as_os_str().as_encoded_bytes())];
        strings.extend(args.iter().map(|a| c(a.as_bytes())));
        let envs: Vec<CString> = env.iter().map(|e| c(e.as_bytes())).collect();
        let mut argv: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = envs.iter().map(|s| s.as_ptr()).collect();
        envp.push(std::ptr::null());
        // SAFETY: argv and envp are NUL-terminated arrays of valid C
        // strings that outlive the call; with AT_EMPTY_PATH only the
        // descriptor is used. On success this does not return.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                self.fd.as_raw_fd(),
                c"".as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        std::io::Error::last_os_error()
    }
}

/// Set in the environment of the sealed re-execution, so that it happens
/// once.
pub const SEALED_ENV: &str = "_HAKO_RUNTIME_SEALED";

/// The memfd's name, which `/proc/PID/exe` shows as `/memfd:NAME (deleted)`.
const SEALED_NAME: &std::ffi::CStr = c"hako-runtime";

/// Whether a process with `process`'s capabilities in a container made
/// from `spec` could reach the runtime binary through `/proc/PID/exe`: it
/// keeps `CAP_SYS_PTRACE` in its bounding set and has no new user
/// namespace to confine that capability.
pub fn needs_sealed_copy(
    process: &oci_spec::runtime::Process,
    spec: &oci_spec::runtime::Spec,
) -> bool {
    use oci_spec::runtime::{Capability, LinuxNamespaceType};
    let ptrace = process
        .capabilities()
        .as_ref()
        .and_then(|c| c.bounding().as_ref())
        .is_some_and(|b| b.contains(&Capability::SysPtrace));
    let new_userns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none())
        });
    ptrace && !new_userns
}

/// Whether this process already runs from the sealed copy.
fn running_sealed() -> bool {
    std::fs::read_link("/proc/self/exe").is_ok_and(|p| {
        p.as_os_str()
            .as_encoded_bytes()
            .starts_with(b"/memfd:hako-runtime")
    })
}

/// Re-executes this process, with the same arguments and environment (plus
/// [`SEALED_ENV`]), from a sealed memfd copy of its binary. Returns at once
/// when it runs from that copy already; otherwise returns only on failure.
pub fn reexec_sealed() -> std::io::Result<()> {
    let marked = std::env::var_os(SEALED_ENV).is_some();
    if running_sealed() {
        return Ok(());
    }
    if marked {
        // Set by our own re-execution, which then did not run from the
        // copy: going on would loop.
        return Err(std::io::Error::other(format!(
            "{SEALED_ENV} is set but /proc/self/exe is not the sealed copy; unset it"
        )));
    }
    let mut binary = std::fs::File::open("/proc/self/exe")?;
    // SAFETY: memfd_create with a valid NUL-terminated name.
    let fd = unsafe {
        libc::memfd_create(
            SEALED_NAME.as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us.
    let mut copy = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    std::io::copy(&mut binary, &mut copy)?;
    drop(binary);
    // SAFETY: F_ADD_SEALS on a memfd made with MFD_ALLOW_SEALING.
    if unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.into_encoded_bytes()).unwrap_or_default())
        .collect();
    let mut envs: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend(v.into_encoded_bytes());
            CString::new(kv).ok()
        })
        .collect();
    envs.push(CString::new(format!("{SEALED_ENV}=1")).unwrap_or_default());
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|s| s.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = envs.iter().map(|s| s.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: argv and envp are NUL-terminated arrays of valid C strings
    // that outlive the call; with AT_EMPTY_PATH only the descriptor is
    // used. On success this does not return.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            copy.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(std::io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_trampoline_runs_programs_and_reports_failures() {
        let t = Trampoline::new(3).unwrap();
        // Run it as a child: the trampoline replaces the process.
        let run = |prog: &str, args: &[&str]| {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            // SAFETY: fork in a test process; the child only execs or exits.
            match unsafe { libc::fork() } {
                0 => {
                    let _ = t.exec(Path::new(prog), &args, &["A=b".to_string()]);
                    // SAFETY: leaving the forked child at once.
                    unsafe { libc::_exit(99) }
                }
                pid => {
                    let mut status = 0;
                    // SAFETY: waiting for the child just forked.
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                    libc::WEXITSTATUS(status)
                }
            }
        };
        assert_eq!(
            run(
                "/bin/sh",
                &["sh", "-c", "test \"$0\" = sh && test \"$A\" = b && exit 7"]
            ),
            7
        );
        assert_eq!(run("/nonexistent/program", &["x"]), 127);
        assert_eq!(run("/etc/hostname", &["x"]), 126);
    }
}
