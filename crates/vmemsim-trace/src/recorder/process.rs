//! The recorded program's process group, the terminal it is handed, and
//! the watchdog that kills the group if the recorder dies.

use std::fs::File;

/// In the child, before exec: a process group of its own (made the
/// terminal's foreground group when `hand_terminal`), killed if the
/// recorder's thread dies.
pub(super) fn in_child_before_exec(hand_terminal: bool) {
    // SAFETY: async-signal-safe calls on this (the child) process only.
    unsafe {
        libc::setpgid(0, 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if hand_terminal {
            with_sigttou_blocked(|| {
                libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpid());
            });
        }
    }
}

/// Run `f` with SIGTTOU blocked: a process outside the terminal's
/// foreground group may then change it (job control, as a shell does).
fn with_sigttou_blocked(f: impl FnOnce()) {
    // SAFETY: sigprocmask(2) on the calling thread with a set built here.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTTOU);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
}

/// The controlling terminal on standard input, while the recorder's group
/// owns it.
#[derive(Clone, Copy)]
pub(super) struct Terminal {
    /// The recorder's process group, to give the terminal back to.
    pgrp: libc::pid_t,
}

impl Terminal {
    /// `Some` when standard input is a terminal whose foreground group is ours.
    pub(super) fn foreground() -> Option<Terminal> {
        // SAFETY: plain queries of this process and its standard input.
        unsafe {
            let pgrp = libc::getpgrp();
            (libc::isatty(libc::STDIN_FILENO) == 1 && libc::tcgetpgrp(libc::STDIN_FILENO) == pgrp)
                .then_some(Terminal { pgrp })
        }
    }

    /// Make the recorder's group the foreground again.
    pub(super) fn take_back(self) {
        with_sigttou_blocked(|| {
            // SAFETY: tcsetpgrp(3) on standard input to our own group.
            unsafe { libc::tcsetpgrp(libc::STDIN_FILENO, self.pgrp) };
        });
    }
}

/// A process that kills the recorded program's process group when the
/// recorder dies without dismissing it (SIGKILL, a crash): it waits on a
/// pipe whose only writer is the recorder.
pub(super) struct Watchdog {
    pid: libc::pid_t,
    /// The pipe's write end; closed by a normal goodbye or by death.
    tx: Option<std::os::fd::OwnedFd>,
}

impl Watchdog {
    /// Start one for process group `group` (none when `group` is 0 or
    /// fork fails: the recording goes on, only unguarded).
    pub(super) fn start(group: libc::pid_t) -> Watchdog {
        let none = Watchdog { pid: 0, tx: None };
        if group <= 0 {
            return none;
        }
        let mut fds = [0; 2];
        // SAFETY: pipe2(2) into a local array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return none;
        }
        let (rx, tx) = (fds[0], fds[1]);
        // SAFETY: the child calls only async-signal-safe functions (close,
        // signal, read, kill, _exit), as required after fork in a process
        // that may have other threads.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe {
                libc::close(tx);
                for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                    libc::signal(sig, libc::SIG_IGN);
                }
                let mut b = 0u8;
                let n = loop {
                    let n = libc::read(rx, (&mut b as *mut u8).cast(), 1);
                    if !(n < 0 && *libc::__errno_location() == libc::EINTR) {
                        break n;
                    }
                };
                if n == 0 {
                    // End of file without the goodbye byte: the recorder died.
                    libc::kill(-group, libc::SIGKILL);
                }
                libc::_exit(0);
            }
        }
        // SAFETY: closing our copy of the read end; `tx` is ours alone.
        unsafe { libc::close(rx) };
        if pid < 0 {
            unsafe { libc::close(tx) };
            return none;
        }
        use std::os::fd::FromRawFd;
        Watchdog {
            pid,
            // SAFETY: `tx` is an open descriptor nothing else owns.
            tx: Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(tx) }),
        }
    }

    /// The recording ended normally: tell the watchdog and reap it.
    pub(super) fn dismiss(mut self) {
        if let Some(tx) = self.tx.take() {
            let mut f = File::from(tx);
            let _ = std::io::Write::write_all(&mut f, b"x");
        }
        if self.pid > 0 {
            // SAFETY: waitpid(2) on our own child.
            unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), 0) };
        }
    }
}
