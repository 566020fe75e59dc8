//! [`LineParser`]: lackey lines to records, one line at a time, with the
//! state that spans lines (pending system calls, threads, descriptors).

use std::sync::Arc;

use super::access::{parse_access, FAST_WINDOW, HEX_DIGIT, NOT_HEX};
use super::bytes::{find, parse_dec, parse_signed, trim};
use super::files::FileIdentifier;
use super::syscall::{is_async_start, open_path, parse_call, success_value, Args, Call};
use crate::record::{FileId, MappedFile};
use crate::{Access, AccessKind, ProcEvent, ProcessInfo, Record};

/// What a line was expected to be: the message of a malformed line.
const EXPECTED_LINE: &str = "expected an access line (`I  addr,size` or ` L|S|M addr,size`), \
     a `SYSCALL[pid,tid](nr) ...` line, a ` --> result` line or a `==PID==` message";

/// `MAP_PRIVATE | MAP_ANONYMOUS`: the flags given to a mapping moved by `mremap`.
const MREMAP_FLAGS: u32 = 0x22;
/// `PROT_READ | PROT_WRITE`: the protection given to a mapping moved by `mremap`.
const MREMAP_PROT: u32 = 3;
/// `MAP_ANONYMOUS`: a mapping of no file, whatever its descriptor.
const MAP_ANONYMOUS: u32 = 0x20;

/// A system call whose result is printed on a later line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pending {
    /// Thread that made the call (the `tid` of `SYSCALL[pid,tid]`).
    tid: u32,
    /// The call and its arguments.
    call: Call,
}

/// Parses lackey log lines one at a time, keeping the state that spans lines
/// (system calls whose result comes later, threads, exit).
///
/// Feed it every line of one process's log in order with
/// [`parse_line`](Self::parse_line), then call [`finish`](Self::finish) at the
/// end of the stream.
#[derive(Clone, Debug)]
pub struct LineParser {
    pid: Option<u32>,
    fixed_pid: bool,
    parent: Option<u32>,
    command: Option<String>,
    /// Calls printed without their result, oldest first (one per thread at most).
    pending: Vec<Pending>,
    /// The call printed last without a result: a ` --> ...` line belongs to it.
    last_open: Option<Pending>,
    live_threads: u32,
    exited: bool,
    closed: bool,
    /// Path of each thread's `open`/`openat` awaiting its result.
    open_paths: Vec<(u32, Vec<u8>)>,
    /// Files open in this process by descriptor (as seen in this stream).
    fds: std::collections::HashMap<u32, Arc<FileId>>,
    /// Names and fingerprints files; `None`: paths only.
    files: Option<Arc<FileIdentifier>>,
}

impl LineParser {
    /// A parser for one process's stream. With `Some(pid)` every record
    /// carries that pid; with `None` the pid is taken from the first
    /// `==PID==` line (records before it carry pid 0).
    pub fn new(pid: Option<u32>) -> Self {
        LineParser {
            pid,
            fixed_pid: pid.is_some(),
            parent: None,
            command: None,
            pending: Vec::new(),
            last_open: None,
            live_threads: 1,
            exited: false,
            closed: false,
            open_paths: Vec::new(),
            fds: std::collections::HashMap::new(),
            files: None,
        }
    }

    /// Fingerprint every file this stream opens with `files` (the
    /// recorder, which sees the files while the program runs). Without it
    /// a file-backed `mmap` carries only the path.
    pub fn with_files(mut self, files: Arc<FileIdentifier>) -> Self {
        self.files = Some(files);
        self
    }

    /// The process id records carry (0 while unknown).
    #[inline]
    pub fn pid(&self) -> u32 {
        self.pid.unwrap_or(0)
    }

    /// The process as the preamble described it (`Command:`, `Parent PID:`).
    pub fn process_info(&self) -> ProcessInfo {
        ProcessInfo {
            pid: self.pid(),
            parent: self.parent,
            command: self.command.clone().unwrap_or_default(),
        }
    }

    /// True once the preamble's `Command:` line was seen.
    pub fn has_preamble(&self) -> bool {
        self.command.is_some()
    }

    /// True once lackey's closing `Exit code:` line was seen: Valgrind
    /// writes nothing after it.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// True once an exit event was produced.
    pub fn has_exited(&self) -> bool {
        self.exited
    }

    /// True when the last system call printed was an `execve` still waiting
    /// for its result: if the stream ends here, the exec succeeded.
    pub fn exec_pending(&self) -> bool {
        self.pending.iter().any(|p| p.call == Call::Execve)
    }

    /// Parse one line (without its `\n`; a trailing `\r` is ignored) and
    /// append the records it produces (zero, one or two) to `out`.
    ///
    /// # Errors
    /// A static description of what was expected, for a line that does not
    /// parse; the caller adds the file and line number.
    #[inline]
    pub fn parse_line(&mut self, line: &[u8], out: &mut Vec<Record>) -> Result<(), &'static str> {
        let line = match line.last() {
            Some(b'\r') => &line[..line.len() - 1],
            _ => line,
        };
        match line.first() {
            None => Ok(()),
            Some(b'I') => {
                let a = parse_access(&line[1..], AccessKind::Fetch, self.pid())?;
                out.push(Record::Access(a));
                Ok(())
            }
            Some(b' ') => match line.get(1) {
                Some(b'L') => self.push_access(&line[2..], AccessKind::Load, out),
                Some(b'S') => self.push_access(&line[2..], AccessKind::Store, out),
                Some(b'M') => self.push_access(&line[2..], AccessKind::Modify, out),
                Some(b'-') if line.starts_with(b" -->") => {
                    self.continuation(&line[4..], out);
                    Ok(())
                }
                _ => Err(EXPECTED_LINE),
            },
            Some(b'S') if line.starts_with(b"SYSCALL[") => self.syscall(&line[8..], out),
            Some(b'=') | Some(b'-') => {
                self.message(line, out);
                Ok(())
            }
            _ => Err(EXPECTED_LINE),
        }
    }

    /// Parse the plain access lines at the start of `buf` in one pass, without
    /// searching for each line's end first: the recorder's and the
    /// [`Reader`](super::Reader)'s fast path. Stops before the first line that
    /// is anything else (an event, a message, an access line with unusual spacing, a
    /// `\r`, a malformed one), before a line that may be cut off (less than
    /// [`FAST_WINDOW`] bytes before the end of `buf`), and once `out` holds
    /// `limit` records. Returns the bytes consumed (whole lines with their
    /// `\n`) and the lines parsed; each line gives one record.
    ///
    /// Whatever it stops at goes through [`parse_line`](Self::parse_line),
    /// which gives the same record for every line accepted here (a property
    /// test checks it) and the error for a malformed one.
    #[inline]
    pub fn parse_access_lines(
        &self,
        buf: &[u8],
        out: &mut Vec<Record>,
        limit: usize,
    ) -> (usize, u64) {
        let pid = self.pid();
        let mut pos = 0;
        let mut lines = 0;
        while out.len() < limit && buf.len() - pos >= FAST_WINDOW {
            let w: &[u8; FAST_WINDOW] = buf[pos..pos + FAST_WINDOW]
                .try_into()
                .expect("a window of FAST_WINDOW bytes");
            let (kind, mut i) = match (w[0], w[1]) {
                (b'I', _) => (AccessKind::Fetch, 1),
                (b' ', b'L') => (AccessKind::Load, 2),
                (b' ', b'S') => (AccessKind::Store, 2),
                (b' ', b'M') => (AccessKind::Modify, 2),
                _ => break,
            };
            // Lackey writes one or two spaces; up to 8 stay in the window.
            let spaces_end = i + 8;
            while i < spaces_end && w[i] == b' ' {
                i += 1;
            }
            let hex = i;
            let mut addr = 0u64;
            // One digit more than allowed, to tell 16 digits from 17.
            while i < hex + 17 {
                let d = HEX_DIGIT[usize::from(w[i])];
                if d == NOT_HEX {
                    break;
                }
                addr = (addr << 4) | u64::from(d);
                i += 1;
            }
            if !(1..=16).contains(&(i - hex)) || w[i] != b',' {
                break;
            }
            i += 1;
            let dec = i;
            let mut size = 0u32;
            while i < dec + 6 && w[i].is_ascii_digit() {
                size = size * 10 + u32::from(w[i] - b'0');
                i += 1;
            }
            if !(1..=5).contains(&(i - dec)) || w[i] != b'\n' {
                break;
            }
            let Ok(size) = u16::try_from(size) else {
                break;
            };
            out.push(Record::Access(Access {
                addr,
                pid,
                size,
                kind,
            }));
            pos += i + 1;
            lines += 1;
        }
        (pos, lines)
    }

    /// End of the stream: a pending `execve` (printed without a result) means
    /// the exec succeeded and the new image logs elsewhere, so an `Exec`
    /// event is appended.
    pub fn finish(&mut self, out: &mut Vec<Record>) {
        if self.exec_pending() && !self.exited {
            self.pending.retain(|p| p.call != Call::Execve);
            self.last_open = None;
            self.event(ProcEvent::Exec, out);
        }
    }

    #[inline]
    fn push_access(
        &self,
        rest: &[u8],
        kind: AccessKind,
        out: &mut Vec<Record>,
    ) -> Result<(), &'static str> {
        out.push(Record::Access(parse_access(rest, kind, self.pid())?));
        Ok(())
    }

    fn event(&mut self, kind: ProcEvent, out: &mut Vec<Record>) {
        if matches!(kind, ProcEvent::Exit { .. }) {
            self.exited = true;
        }
        out.push(Record::event(self.pid(), kind));
    }

    /// A `==PID== ...` or `--PID-- ...` message line.
    fn message(&mut self, line: &[u8], out: &mut Vec<Record>) {
        let delim = line[0];
        let body = line.get(2..).unwrap_or(&[]);
        let Some(end) = body.iter().position(|&b| b == delim) else {
            return;
        };
        let digits = &body[..end];
        let text = line.get(2 + end + 2..).unwrap_or(&[]);
        let text = text.strip_prefix(b" ").unwrap_or(text);
        if !self.fixed_pid && self.pid.is_none() {
            if let Some(p) = parse_dec(digits).and_then(|v| u32::try_from(v).ok()) {
                self.pid = Some(p);
            }
        }
        if let Some(cmd) = text.strip_prefix(b"Command: ") {
            self.command = Some(String::from_utf8_lossy(cmd).into_owned());
        } else if let Some(p) = text.strip_prefix(b"Parent PID: ") {
            self.parent = parse_dec(trim(p)).and_then(|v| u32::try_from(v).ok());
        } else if let Some(rest) =
            text.strip_prefix(b"Process terminating with default action of signal ")
        {
            let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            if let Some(sig) = parse_dec(&rest[..n]).and_then(|v| i32::try_from(v).ok()) {
                if !self.exited {
                    self.event(
                        ProcEvent::Exit {
                            code: sig.saturating_add(128),
                        },
                        out,
                    );
                }
            }
        } else if let Some(rest) = text.strip_prefix(b"Exit code:") {
            self.closed = true;
            if !self.exited {
                if let Some(code) = parse_signed(trim(rest)) {
                    self.event(ProcEvent::Exit { code }, out);
                }
            }
        }
    }

    /// `SYSCALL[` already consumed.
    fn syscall(&mut self, s: &[u8], out: &mut Vec<Record>) -> Result<(), &'static str> {
        const EXPECTED: &str = "expected `SYSCALL[pid,tid](nr) name ( args ) ...`";
        let comma = find(s, b",").ok_or(EXPECTED)?;
        let close = find(s, b"](").ok_or(EXPECTED)?;
        if close < comma {
            return Err(EXPECTED);
        }
        let tid = parse_dec(&s[comma + 1..close])
            .and_then(|v| u32::try_from(v).ok())
            .ok_or(EXPECTED)?;
        let s = &s[close + 2..];
        let nr_end = find(s, b")").ok_or(EXPECTED)?;
        parse_dec(&s[..nr_end]).ok_or(EXPECTED)?;
        let body = s.get(nr_end + 2..).unwrap_or(&[]);
        let (head, result) = match find(body, b"-->") {
            Some(i) => (&body[..i], Some(&body[i + 3..])),
            None => (body, None),
        };
        if head.starts_with(b"...") {
            // Completion of an asynchronous call: `... [async] --> Success(0x4)`.
            let Some(result) = result else { return Ok(()) };
            if let Some(i) = self.pending.iter().position(|p| p.tid == tid) {
                let p = self.pending.remove(i);
                if self.last_open == Some(p) {
                    self.last_open = None;
                }
                self.complete(p, result, out);
            }
            return Ok(());
        }
        self.early_event(head, out);
        let call = parse_call(head);
        if call == Call::Open {
            self.open_paths.retain(|(t, _)| *t != tid);
            if let Some(p) = open_path(head) {
                self.open_paths.push((tid, p.to_vec()));
            }
        }
        match result {
            Some(r) if !is_async_start(r) => {
                self.complete(Pending { tid, call }, r, out);
            }
            _ => {
                // Result on a later line (async, or fork/unimplemented/execve).
                self.pending.retain(|p| p.tid != tid);
                let p = Pending { tid, call };
                self.pending.push(p);
                self.last_open = Some(p);
            }
        }
        Ok(())
    }

    /// A ` --> result` line: the result of the call printed last without one.
    fn continuation(&mut self, rest: &[u8], out: &mut Vec<Record>) {
        if is_async_start(rest) {
            return;
        }
        if let Some(p) = self.last_open.take() {
            self.pending.retain(|q| *q != p);
            self.complete(p, rest, out);
        }
    }

    /// A call and its printed result (the text after `-->`).
    fn complete(&mut self, p: Pending, result: &[u8], out: &mut Vec<Record>) {
        let ret = success_value(result);
        match (p.call, ret) {
            (
                Call::Mmap {
                    len,
                    prot,
                    flags,
                    fd,
                    offset,
                },
                Some(addr),
            ) => {
                let file = (flags & MAP_ANONYMOUS == 0)
                    .then(|| self.fds.get(&fd))
                    .flatten()
                    .map(|f| MappedFile {
                        file: Arc::clone(f),
                        offset,
                    });
                self.event(
                    ProcEvent::Mmap {
                        addr,
                        len,
                        prot,
                        flags,
                        file,
                    },
                    out,
                )
            }
            (Call::Open, r) => {
                let i = self.open_paths.iter().position(|(t, _)| *t == p.tid);
                let path = i.map(|i| self.open_paths.swap_remove(i).1);
                if let (Some(fd), Some(path)) = (r.and_then(|v| u32::try_from(v).ok()), path) {
                    let id = match &self.files {
                        Some(f) => f.identify(&path),
                        None => Arc::new(FileId {
                            path: String::from_utf8_lossy(&path).into_owned(),
                            fingerprint: None,
                        }),
                    };
                    self.fds.insert(fd, id);
                }
            }
            (Call::Close { fd }, Some(_)) => {
                self.fds.remove(&fd);
            }
            (Call::Munmap { addr, len }, Some(_)) => {
                self.event(ProcEvent::Munmap { addr, len }, out)
            }
            (Call::Mprotect { addr, len, prot }, Some(_)) => {
                self.event(ProcEvent::Mprotect { addr, len, prot }, out)
            }
            (Call::Brk, Some(addr)) => self.event(ProcEvent::Brk { addr }, out),
            (
                Call::Mremap {
                    old_addr,
                    old_len,
                    new_len,
                },
                Some(addr),
            ) => {
                self.event(
                    ProcEvent::Munmap {
                        addr: old_addr,
                        len: old_len,
                    },
                    out,
                );
                self.event(
                    ProcEvent::Mmap {
                        addr,
                        len: new_len,
                        prot: MREMAP_PROT,
                        flags: MREMAP_FLAGS,
                        file: None,
                    },
                    out,
                );
            }
            (Call::Clone { child: Some(child) }, _) => {
                // Only the parent prints `created child N`; the fork happened.
                self.event(ProcEvent::Fork { child }, out)
            }
            (Call::Clone { child: None }, Some(ret)) if ret != 0 => {
                // A clone that created a thread (forks print `created child`).
                self.live_threads = self.live_threads.saturating_add(1);
            }
            _ => {}
        }
    }
}

impl LineParser {
    /// Calls that never return print their event on the first line.
    fn early_event(&mut self, head: &[u8], out: &mut Vec<Record>) {
        let head = trim(head);
        if let Some(rest) = head.strip_prefix(b"exit_group(") {
            if let Some(code) = Args::new(rest).next() {
                self.event(ProcEvent::Exit { code: code as i32 }, out);
            }
        } else if let Some(rest) = head.strip_prefix(b"exit(") {
            if self.live_threads <= 1 {
                if let Some(code) = Args::new(rest).next() {
                    self.event(ProcEvent::Exit { code: code as i32 }, out);
                }
            } else {
                self.live_threads -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Vec<Record> {
        let mut p = LineParser::new(Some(7));
        let mut out = Vec::new();
        for l in lines {
            p.parse_line(l.as_bytes(), &mut out).unwrap();
        }
        p.finish(&mut out);
        out
    }

    fn ev(kind: ProcEvent) -> Record {
        Record::event(7, kind)
    }

    fn acc(addr: u64, size: u16, kind: AccessKind) -> Record {
        Record::Access(Access {
            addr,
            pid: 7,
            size,
            kind,
        })
    }

    #[test]
    fn access_lines() {
        let r = parse(&[
            "I  04016a8,3",
            " L 1ffefffd58,8",
            " S 04a27a18,16",
            " M 0000ff,1\r",
        ]);
        assert_eq!(
            r,
            vec![
                acc(0x4016a8, 3, AccessKind::Fetch),
                acc(0x1ffefffd58, 8, AccessKind::Load),
                acc(0x4a27a18, 16, AccessKind::Store),
                acc(0xff, 1, AccessKind::Modify),
            ]
        );
    }

    #[test]
    fn memory_syscalls() {
        let r = parse(&[
            "SYSCALL[3686,1](12) sys_brk ( 0x0 ) --> [pre-success] Success(0x4035000) ",
            "SYSCALL[3686,1](9) sys_mmap ( 0x0, 8192, 3, 34, 4294967295, 0 ) --> [pre-success] Success(0x4835000) ",
            "SYSCALL[3686,1](9) sys_mmap ( 0x1, 4096, 1, 50, 4294967295, 0 ) --> [pre-fail] Failure(0xc) ",
            "SYSCALL[3686,1](10) sys_mprotect ( 0x4a14000, 16384, 1 )[sync] --> Success(0x0) ",
            "SYSCALL[3686,1](11) sys_munmap ( 0x483c000, 33699 )[sync] --> Success(0x0) ",
            "SYSCALL[5504,1](25) sys_mremap ( 0x483c000, 8192, 1048576, 0x1 ) --> [pre-success] Success(0x522b000) ",
        ]);
        assert_eq!(
            r,
            vec![
                ev(ProcEvent::Brk { addr: 0x4035000 }),
                ev(ProcEvent::Mmap {
                    addr: 0x4835000,
                    len: 8192,
                    prot: 3,
                    flags: 34,
                    file: None,
                }),
                ev(ProcEvent::Mprotect {
                    addr: 0x4a14000,
                    len: 16384,
                    prot: 1
                }),
                ev(ProcEvent::Munmap {
                    addr: 0x483c000,
                    len: 33699
                }),
                ev(ProcEvent::Munmap {
                    addr: 0x483c000,
                    len: 8192
                }),
                ev(ProcEvent::Mmap {
                    addr: 0x522b000,
                    len: 1 << 20,
                    prot: 3,
                    flags: 0x22,
                    file: None,
                }),
            ]
        );
    }

    #[test]
    fn async_and_continuation_lines() {
        let r = parse(&[
            "SYSCALL[3686,1](257) sys_openat ( 4294967196, 0x4034bb0(/a, b (c).so), 524288 ) --> [async] ... ",
            "I  0401ab70,3",
            "SYSCALL[3686,1](257) ... [async] --> Success(0x4) ",
            "SYSCALL[3686,1](334) unimplemented (by the kernel) syscall: 334! (ni_syscall)",
            " --> [pre-fail] Failure(0x26) ",
            "SYSCALL[3686,1](56) sys_clone ( 1200011, 0x0, 0x0, 0x4a27a10, 0x0 )   clone(fork): process 3686 created child 3687",
            " --> [pre-success] Success(0xe67) ",
            "SYSCALL[5504,1](58) sys_fork ( )   fork: process 5504 created child 5507",
            " --> [pre-success] Success(0x1583) ",
            "SYSCALL[3686,1](15) sys_rt_sigreturn ( ) --> [pre-success] NoWriteResult ",
            "SYSCALL[3686,1](231) exit_group( 3 ) --> [pre-success] Success(0x0) ",
            "==3686== Exit code:       0",
        ]);
        assert_eq!(
            r,
            vec![
                acc(0x401ab70, 3, AccessKind::Fetch),
                ev(ProcEvent::Fork { child: 3687 }),
                ev(ProcEvent::Fork { child: 5507 }),
                ev(ProcEvent::Exit { code: 3 }),
            ]
        );
    }

    #[test]
    fn file_backed_mmaps_name_the_file_opened_on_their_descriptor() {
        let r = parse(&[
            "SYSCALL[3686,1](257) sys_openat ( 4294967196, 0x4034bb0(/a, b (c).so), 524288 ) --> [async] ... ",
            "SYSCALL[3686,1](257) ... [async] --> Success(0x4) ",
            // Text at offset 0x28000 of fd 4; then an anonymous map with fd 4
            // named (MAP_ANONYMOUS wins); then fd 4 closed and reused.
            "SYSCALL[3686,1](9) sys_mmap ( 0x0, 8192, 5, 2066, 4, 163840 ) --> [pre-success] Success(0x4a00000) ",
            "SYSCALL[3686,1](9) sys_mmap ( 0x0, 4096, 3, 34, 4, 0 ) --> [pre-success] Success(0x4b00000) ",
            "SYSCALL[3686,1](3) sys_close ( 4 )[sync] --> Success(0x0) ",
            "SYSCALL[3686,1](9) sys_mmap ( 0x0, 4096, 1, 2, 4, 0 ) --> [pre-success] Success(0x4c00000) ",
            "SYSCALL[3686,1](2) sys_open ( 0x4034bc0(rel/x), 0, 0 )[sync] --> Success(0x5) ",
            // A directory-relative openat of a relative path is not named.
            "SYSCALL[3686,1](257) sys_openat ( 7, 0x4034bd0(y), 0 ) --> Success(0x6) ",
            "SYSCALL[3686,1](9) sys_mmap ( 0x0, 4096, 1, 2, 5, 4096 ) --> [pre-success] Success(0x4d00000) ",
            "SYSCALL[3686,1](9) sys_mmap ( 0x0, 4096, 1, 2, 6, 0 ) --> [pre-success] Success(0x4e00000) ",
        ]);
        let file = |path: &str, offset| {
            Some(MappedFile {
                file: Arc::new(FileId {
                    path: path.into(),
                    fingerprint: None,
                }),
                offset,
            })
        };
        let mmap = |addr, len, prot, flags, file| {
            ev(ProcEvent::Mmap {
                addr,
                len,
                prot,
                flags,
                file,
            })
        };
        assert_eq!(
            r,
            vec![
                mmap(0x4a00000, 8192, 5, 2066, file("/a, b (c).so", 163840)),
                mmap(0x4b00000, 4096, 3, 34, None),
                mmap(0x4c00000, 4096, 1, 2, None),
                mmap(0x4d00000, 4096, 1, 2, file("rel/x", 4096)),
                mmap(0x4e00000, 4096, 1, 2, None),
            ]
        );
    }

    #[test]
    fn threads_do_not_exit_the_process() {
        let r = parse(&[
            "SYSCALL[5504,1](56) sys_clone ( 3d0f00, 0x5229f70, 0x522a990, 0x522a990, 0x522a6c0 ) --> [pre-success] Success(0x1581) ",
            "SYSCALL[5504,2](60) exit( 0 ) --> [pre-success] Success(0x0) ",
            "SYSCALL[5504,1](60) exit( 4 ) --> [pre-success] Success(0x0) ",
        ]);
        assert_eq!(r, vec![ev(ProcEvent::Exit { code: 4 })]);
    }

    #[test]
    fn exec_and_signal_death() {
        // A child's log starts with the child's half of the fork.
        let r = parse(&[
            "==5506== Command: ./t x",
            "==5506== Parent PID: 5504",
            " --> [pre-success] Success(0x0) ",
            "SYSCALL[5506,1](59) sys_execve ( 0x10a00e(/nonexistent), 0x1fff000640, 0x1fff0007a0 ) --> [pre-fail] Failure(0x2) ",
            "SYSCALL[5506,1](59) sys_execve ( 0x10a004(/bin/true), 0x1fff000640, 0x1fff0007a0 )",
        ]);
        assert_eq!(r, vec![ev(ProcEvent::Exec)]);
        let r = parse(&[
            "==5504== Process terminating with default action of signal 11 (SIGSEGV)",
            "==5504== Exit code:       0",
        ]);
        assert_eq!(r, vec![ev(ProcEvent::Exit { code: 139 })]);
    }

    #[test]
    fn mangled_lines_never_panic() {
        let samples = [
            "I  04016a8,3",
            " L 1ffefffd58,8",
            "==5504== Process terminating with default action of signal 11 (SIGSEGV)",
            "==3686== Exit code:       0",
            "==5506== Parent PID: 5504",
            " --> [pre-success] Success(0xe67) ",
            "SYSCALL[3686,1](9) sys_mmap ( 0x0, 8192, 3, 34, 4294967295, 0 ) --> [pre-success] Success(0x4835000) ",
            "SYSCALL[3686,1](56) sys_clone ( 1200011, 0x0 )   clone(fork): process 3686 created child 3687",
            "SYSCALL[5504,1](25) sys_mremap ( 0x483c000, 8192, 1048576, 0x1 ) --> Success(0x522b000) ",
            "SYSCALL[3686,1](231) exit_group( 3 ) --> [pre-success] Success(0x0) ",
            "SYSCALL[3686,1](257) ... [async] --> Success(0x4) ",
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut p = LineParser::new(None);
        let mut out = Vec::new();
        for _ in 0..20_000 {
            let src = samples[(next() % samples.len() as u64) as usize].as_bytes();
            // Every prefix, and random byte edits.
            let mut line = src[..(next() as usize % (src.len() + 1))].to_vec();
            for _ in 0..(next() % 4) {
                if !line.is_empty() {
                    let i = next() as usize % line.len();
                    let alphabet = b"0123456789abcdefx(),[]=- .>\xff";
                    line[i] = alphabet[next() as usize % alphabet.len()];
                }
            }
            let _ = p.parse_line(&line, &mut out);
            out.clear();
        }
        p.finish(&mut out);
    }

    /// Parse `text` with the one-pass line parser where it applies and
    /// [`LineParser::parse_line`] for the rest, as the recorder does:
    /// records, and the lines each path took.
    fn parse_fast_and_slow(text: &[u8]) -> (Vec<Result<Record, &'static str>>, u64, u64) {
        let mut p = LineParser::new(Some(7));
        let (mut out, mut fast, mut slow) = (Vec::new(), 0, 0);
        let mut recs = Vec::new();
        let mut pos = 0;
        loop {
            let (used, lines) = p.parse_access_lines(&text[pos..], &mut recs, usize::MAX);
            pos += used;
            fast += lines;
            out.extend(recs.drain(..).map(Ok));
            let Some(nl) = memchr::memchr(b'\n', &text[pos..]) else {
                break;
            };
            slow += 1;
            match p.parse_line(&text[pos..pos + nl], &mut recs) {
                Ok(()) => out.extend(recs.drain(..).map(Ok)),
                Err(e) => out.push(Err(e)),
            }
            pos += nl + 1;
        }
        (out, fast, slow)
    }

    /// Every line through [`LineParser::parse_line`] alone.
    fn parse_slow(text: &[u8]) -> Vec<Result<Record, &'static str>> {
        let mut p = LineParser::new(Some(7));
        let mut out = Vec::new();
        let mut recs = Vec::new();
        for line in text.split_inclusive(|&b| b == b'\n') {
            let Some(line) = line.strip_suffix(b"\n") else {
                break;
            };
            match p.parse_line(line, &mut recs) {
                Ok(()) => out.extend(recs.drain(..).map(Ok)),
                Err(e) => out.push(Err(e)),
            }
        }
        out
    }

    #[test]
    fn the_one_pass_line_parser_takes_valgrinds_lines_and_leaves_the_rest() {
        // Lines as lackey writes them take the fast path; the edges (17 hex
        // digits, size 65536, six size digits, a `\r`, nine spaces, an
        // event) go through `parse_line`, with the same records and errors.
        let mut text = Vec::new();
        for _ in 0..4 {
            text.extend_from_slice(
                b"I  04016a8,3\n L 1ffefffd58,8\n S 04a2b040,16\n M 1ffefffd40,4\n",
            );
        }
        let edges: &[&[u8]] = &[
            b" L ffffffffffffffff,64\n",
            b" L 1ffffffffffffffff,8\n",
            b" L 10,65535\n",
            b" L 10,65536\n",
            b" L 10,000008\n",
            b" L 10,8\r\n",
            b" L          10,8\n",
            b"I04016a8,3\n",
            b"SYSCALL[3686,1](12) sys_brk ( 0x0 ) --> [pre-success] Success(0x4035000)\n",
            b" X 10,8\n",
        ];
        for e in edges {
            text.extend_from_slice(e);
            text.extend_from_slice(b"I  04016a8,3\n");
        }
        let (fast_path, fast, slow) = parse_fast_and_slow(&text);
        assert_eq!(fast_path, parse_slow(&text));
        // 16 + 2 * 10 = 36 lines. `parse_line` takes the 7 edges the fast
        // path refuses (17 digits, 65536, six digits, `\r`, ten spaces, the
        // syscall, ` X`) and the 2 `I` lines after the last two edges: from
        // the one after the syscall on, 13 + 8 + 13 = 34 bytes are left,
        // fewer than FAST_WINDOW (48). The other 27 lines take the fast path.
        assert_eq!((fast, slow), (27, 9));
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        #[test]
        fn the_one_pass_line_parser_agrees_with_parse_line_on_any_text(
            lines in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["I", "I  ", " L ", " S ", " M ", " L", " X ", ""]),
                    proptest::prop_oneof![
                        // Near Valgrind's form: hex digits, a comma, digits.
                        (
                            proptest::string::string_regex(" {0,9}[0-9a-fA-F]{0,17}").unwrap(),
                            proptest::string::string_regex(",[0-9]{0,6}\r?").unwrap(),
                        )
                            .prop_map(|(a, b)| format!("{a}{b}").into_bytes()),
                        proptest::collection::vec(
                            proptest::sample::select(b"  0123456789abcdefABCDEFx,,-\r".to_vec()),
                            0..24,
                        ),
                    ],
                ),
                0..40,
            )
        ) {
            let mut text = Vec::new();
            for (kind, body) in &lines {
                text.extend_from_slice(kind.as_bytes());
                text.extend_from_slice(body);
                text.push(b'\n');
            }
            let (fast_path, _, _) = parse_fast_and_slow(&text);
            proptest::prop_assert_eq!(fast_path, parse_slow(&text));
        }
    }
}
