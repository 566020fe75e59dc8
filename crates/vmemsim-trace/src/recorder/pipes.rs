//! Log pipes: each Valgrind instance's `--log-file` opened as a pipe to the
//! recorder instead of a file.
//!
//! Lackey writes one `write(2)` per log line. Into a file that costs the
//! page-cache path (about 400 ns a line here, on ext4 or tmpfs); into a
//! pipe whose reader drains it in large chunks, about 60% of that (and
//! `/dev/null`, the baseline, about a third). Valgrind opens its log with
//! the raw `open` system call and the flags `O_WRONLY|O_CREAT|O_TRUNC`; a
//! seccomp filter installed in the recorded process tree (inherited by
//! every child and kept across `execve`) turns exactly those calls into
//! user notifications (`SECCOMP_RET_USER_NOTIF`, Linux 5.0; answered with
//! `SECCOMP_IOCTL_NOTIF_ADDFD` and `SECCOMP_ADDFD_FLAG_SEND`, Linux 5.14).
//! The recorder reads the path the process asked for; when it names a log
//! in the recorder's private directory it creates a pipe and installs the
//! write end as the call's result, else it lets the call run unchanged
//! (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`). Every other system call, and
//! `openat` (what the C library's `open` and `fopen` use), never leaves
//! the kernel's filter.
//!
//! Each process still gets its own stream: a forked child's Valgrind
//! opens its own `%p` log, which is a new pipe. When any step is not
//! available (another architecture, an old kernel, seccomp forbidden in a
//! container), nothing is installed and Valgrind writes log files as
//! before.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// The flags Valgrind opens its log file with (`m_libcprint.c`).
const LOG_OPEN_FLAGS: libc::c_int = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
/// Pipe capacity asked for: the default unprivileged maximum
/// (`/proc/sys/fs/pipe-max-size`), so Valgrind rarely waits for the reader.
pub(super) const PIPE_BYTES: libc::c_int = 1 << 20;
/// `AUDIT_ARCH_X86_64` (`linux/audit.h`).
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;

/// Classic BPF opcodes (`linux/filter.h`).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
/// Offsets in `struct seccomp_data`: `nr`, `arch`, low half of `args[1]`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARG1_LOW: u32 = 24;

/// Made before Valgrind is spawned; its child half runs between fork and
/// exec, its parent half after the spawn.
pub(super) struct Trap {
    /// The recorder's end of the socket the child sends the listener over.
    parent: OwnedFd,
    /// The child's end (close-on-exec).
    child: OwnedFd,
    filter: [libc::sock_filter; 8],
}

/// The child's half of a [`Trap`]: plain data, usable after `fork`.
#[derive(Clone, Copy)]
pub(super) struct ChildSide {
    sock: RawFd,
    filter: [libc::sock_filter; 8],
}

impl Trap {
    /// `None` where log pipes are not supported (the recorder then uses
    /// log files).
    pub(super) fn new() -> Option<Trap> {
        if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        let arch = AUDIT_ARCH;
        #[cfg(not(target_arch = "x86_64"))]
        let arch = 0;
        let mut fds = [0; 2];
        // SAFETY: socketpair(2) into a local array.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if r != 0 {
            return None;
        }
        // SAFETY: two fresh descriptors nothing else owns.
        let (parent, child) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let stmt = |code, k| libc::sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        };
        let jeq = |k, jf| libc::sock_filter {
            code: BPF_JEQ_K,
            jt: 0,
            jf,
            k,
        };
        // Jumps count from the next instruction; 7 is "allow".
        let filter = [
            stmt(BPF_LD_W_ABS, DATA_ARCH),
            jeq(arch, 5),
            stmt(BPF_LD_W_ABS, DATA_NR),
            jeq(libc::SYS_open as u32, 3),
            stmt(BPF_LD_W_ABS, DATA_ARG1_LOW),
            jeq(LOG_OPEN_FLAGS as u32, 1),
            stmt(BPF_RET_K, libc::SECCOMP_RET_USER_NOTIF),
            stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW),
        ];
        Some(Trap {
            parent,
            child,
            filter,
        })
    }

    /// What the child needs.
    pub(super) fn child_side(&self) -> ChildSide {
        ChildSide {
            sock: self.child.as_raw_fd(),
            filter: self.filter,
        }
    }

    /// After the spawn: the listener the child sent, with the directory
    /// whose logs become pipes. `None` when the child could not install
    /// the filter.
    pub(super) fn listener(self, dir: &std::path::Path) -> Option<Listener> {
        drop(self.child);
        let fd = recv_fd(self.parent.as_raw_fd())?;
        let mut prefix = dir.as_os_str().as_encoded_bytes().to_vec();
        prefix.push(b'/');
        Some(Listener {
            fd,
            prefix,
            let_through: std::cell::Cell::new(false),
        })
    }
}

impl ChildSide {
    /// In the child, before exec: install the filter and send its listener
    /// to the recorder. Any failure leaves the child without a filter (or,
    /// if only the send fails, with log opens failing loudly).
    ///
    /// # Safety
    /// Only async-signal-safe calls: prctl, seccomp, sendmsg, close.
    pub(super) unsafe fn install(&self) {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return;
        }
        let prog = libc::sock_fprog {
            len: self.filter.len() as u16,
            filter: self.filter.as_ptr().cast_mut(),
        };
        let fd = libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &prog as *const libc::sock_fprog,
        );
        if fd < 0 {
            return;
        }
        let fd = fd as RawFd;
        send_fd(self.sock, fd);
        libc::close(fd);
    }
}

/// The recorder's end of the filter.
pub(super) struct Listener {
    fd: OwnedFd,
    /// `DIR/`: opens of paths under it are logs.
    prefix: Vec<u8>,
    /// A log `open` was let through (no pipe could be made): that log is a
    /// file, which the watcher must take within milliseconds.
    let_through: std::cell::Cell<bool>,
}

/// A log opened as a pipe: the file name asked for and the read end.
pub(super) struct LogPipe {
    pub(super) name: String,
    pub(super) read: File,
}

impl Listener {
    /// True once a log was let through as a file.
    pub(super) fn let_a_file_through(&self) -> bool {
        self.let_through.get()
    }

    /// Wait up to `timeout` for a trapped `open`, answer every pending one
    /// and append the pipes made, in the order the opens happened.
    pub(super) fn serve(&self, timeout: Duration, out: &mut Vec<LogPipe>) {
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        let mut wait = ms;
        loop {
            let mut p = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll(2) on one descriptor we own.
            let r = unsafe { libc::poll(&mut p, 1, wait) };
            if r <= 0 || p.revents & libc::POLLIN == 0 {
                if r == 0 || p.revents & (libc::POLLHUP | libc::POLLERR) == 0 {
                    return;
                }
                // Every filtered process is gone: nothing more will come.
                std::thread::sleep(timeout);
                return;
            }
            self.answer_one(out);
            wait = 0;
        }
    }

    fn answer_one(&self, out: &mut Vec<LogPipe>) {
        // SAFETY: a zeroed plain C struct, as the ioctl requires.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: NOTIF_RECV fills `req`.
        if unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                &mut req,
            )
        } != 0
        {
            return;
        }
        let path = read_path(req.pid, req.data.args[0]);
        let log = path
            .as_deref()
            .and_then(|p| p.strip_prefix(self.prefix.as_slice()));
        if let Some(name) = log.filter(|n| !n.contains(&b'/')) {
            if let Some(read) = self.give_pipe(req.id) {
                out.push(LogPipe {
                    name: String::from_utf8_lossy(name).into_owned(),
                    read,
                });
                return;
            }
            self.let_through.set(true);
        }
        let resp = libc::seccomp_notif_resp {
            id: req.id,
            val: 0,
            error: 0,
            flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        };
        // SAFETY: NOTIF_SEND reads `resp`; a stale id only fails.
        unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) };
    }

    /// Make a pipe, enlarge it, and make its write end the result of the
    /// trapped `open`; the read end (non-blocking) is returned.
    fn give_pipe(&self, id: u64) -> Option<File> {
        let mut fds = [0; 2];
        // SAFETY: pipe2(2) into a local array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return None;
        }
        // SAFETY: fresh descriptors nothing else owns.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl(2) on our own descriptors; failures keep defaults.
        unsafe {
            libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES);
            let fl = libc::fcntl(read.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(read.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        let add = libc::seccomp_notif_addfd {
            id,
            flags: libc::SECCOMP_ADDFD_FLAG_SEND as u32,
            srcfd: write.as_raw_fd() as u32,
            newfd: 0,
            newfd_flags: 0,
        };
        // SAFETY: NOTIF_ADDFD reads `add`; on success the process's `open`
        // returns its copy of the write end.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ADDFD, &add) };
        // Our copy of the write end closes here, so the pipe ends when
        // every Valgrind holding it is gone.
        drop(write);
        (r >= 0).then(|| File::from(read))
    }
}

/// The NUL-terminated path at `addr` in process `pid` (at most 4 KiB).
fn read_path(pid: u32, addr: u64) -> Option<Vec<u8>> {
    let mut path = Vec::new();
    let mut at = addr;
    while path.len() < 4096 {
        // Up to the end of the page, so no read crosses into an unmapped one.
        let n = (4096 - (at % 4096)) as usize;
        let mut chunk = [0u8; 4096];
        let local = libc::iovec {
            iov_base: chunk.as_mut_ptr().cast(),
            iov_len: n,
        };
        let remote = libc::iovec {
            iov_base: at as *mut libc::c_void,
            iov_len: n,
        };
        // SAFETY: process_vm_readv(2) into a local buffer of `n` bytes.
        let got = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        if got <= 0 {
            return None;
        }
        let got = &chunk[..got as usize];
        if let Some(end) = got.iter().position(|&b| b == 0) {
            path.extend_from_slice(&got[..end]);
            return Some(path);
        }
        path.extend_from_slice(got);
        at += got.len() as u64;
    }
    None
}

/// Send descriptor `fd` over the socket `sock` (async-signal-safe).
///
/// # Safety
/// `sock` and `fd` are open descriptors.
unsafe fn send_fd(sock: RawFd, fd: RawFd) {
    let mut byte = 0u8;
    let mut iov = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    let mut space = [0u64; 4];
    let mut msg: libc::msghdr = std::mem::zeroed();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
    let c = libc::CMSG_FIRSTHDR(&msg);
    (*c).cmsg_level = libc::SOL_SOCKET;
    (*c).cmsg_type = libc::SCM_RIGHTS;
    (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
    libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL);
}

/// Receive a descriptor sent with [`send_fd`], without waiting.
fn recv_fd(sock: RawFd) -> Option<OwnedFd> {
    let mut byte = 0u8;
    let mut iov = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    let mut space = [0u64; 4];
    // SAFETY: recvmsg(2) into local buffers described by `msg`; the
    // control message is read only as the kernel wrote it.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = space.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&space);
        let n = libc::recvmsg(sock, &mut msg, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC);
        if n <= 0 {
            return None;
        }
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_level != libc::SOL_SOCKET || (*c).cmsg_type != libc::SCM_RIGHTS
        {
            return None;
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>());
        Some(OwnedFd::from_raw_fd(fd))
    }
}
