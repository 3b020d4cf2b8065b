//! Proxying a container's pty to this process's own stdio, for a
//! foreground `run` of a terminal container.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use anyhow::{Context, Result};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::SignalFd;
use nix::sys::termios::{SetArg, Termios, cfmakeraw, tcgetattr, tcsetattr};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Puts the caller's terminal into raw mode and restores it when dropped.
struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            cfmakeraw(&mut raw);
            let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        }
        RawMode { saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, t);
        }
    }
}

fn copy_window_size(to: &OwnedFd) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into the valid struct; TIOCSWINSZ
    // reads it.
    unsafe {
        if libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Copies stdin to the pty and the pty to stdout until the container's
/// init exits; forwards signals. Returns the exit code.
pub fn proxy(master: OwnedFd, pid: i32, signals: &SigSet) -> Result<i32> {
    let _raw = RawMode::enter();
    copy_window_size(&master);
    let sfd = SignalFd::new(signals).context("signalfd")?;
    let child = Pid::from_raw(pid);
    let mut stdin_open = true;
    let mut master_open = true;
    let mut buf = [0u8; 16384];
    let stdin_fd = std::io::stdin().as_raw_fd();
    loop {
        // SAFETY: stdin stays open for the life of the process.
        let stdin_b = unsafe { BorrowedFd::borrow_raw(stdin_fd) };
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if master_open {
            fds.push(PollFd::new(master.as_fd(), PollFlags::POLLIN));
        }
        if stdin_open {
            fds.push(PollFd::new(stdin_b, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => {
                r.context("poll")?;
            }
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut i = 1;
        if master_open {
            if ready[i] {
                match nix::unistd::read(&master, &mut buf) {
                    Ok(0) | Err(_) => master_open = false,
                    Ok(n) => {
                        let _ = nix::unistd::write(std::io::stdout(), &buf[..n]);
                    }
                }
            }
            i += 1;
        }
        if stdin_open && ready[i] {
            match nix::unistd::read(stdin_b, &mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    let _ = nix::unistd::write(&master, &buf[..n]);
                }
            }
        }
        if ready[0] {
            if let Ok(Some(info)) = sfd.read_signal() {
                let sig = Signal::try_from(i32::try_from(info.ssi_signo).unwrap_or(0)).ok();
                match sig {
                    Some(Signal::SIGCHLD) | None => {}
                    Some(Signal::SIGWINCH) => copy_window_size(&master),
                    Some(s) => {
                        let _ = kill(child, s);
                    }
                }
            }
            match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => return finish(&master, master_open, code),
                Ok(WaitStatus::Signaled(_, s, _)) => {
                    return finish(&master, master_open, 128 + s as i32);
                }
                _ => {}
            }
        }
    }
}

/// Prints what the pty still holds after the init exited.
fn finish(master: &OwnedFd, open: bool, code: i32) -> Result<i32> {
    if open {
        let _ = nix::fcntl::fcntl(
            master,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        let mut buf = [0u8; 16384];
        while let Ok(n) = nix::unistd::read(master, &mut buf) {
            if n == 0 {
                break;
            }
            let _ = nix::unistd::write(std::io::stdout(), &buf[..n]);
        }
    }
    Ok(code)
}
