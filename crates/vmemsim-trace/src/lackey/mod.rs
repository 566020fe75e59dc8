//! Streaming parser of Valgrind lackey logs.
//!
//! `valgrind --tool=lackey --trace-mem=yes` writes one line per memory access
//! (`I  04016a8,3` for a fetch, ` L 1ffefffd58,8`, ` S ...`, ` M ...` for
//! loads, stores and modifies: hex address, decimal size). With the core's
//! `--trace-syscalls=yes` the same stream also carries one or two lines per
//! system call, in program order with the accesses:
//!
//! ```text
//! SYSCALL[3686,1](9) sys_mmap ( 0x0, 8192, 3, 34, 4294967295, 0 ) --> [pre-success] Success(0x4835000)
//! SYSCALL[3686,1](10) sys_mprotect ( 0x4a14000, 16384, 1 )[sync] --> Success(0x0)
//! SYSCALL[3686,1](257) sys_openat ( 4294967196, 0x40290b1(/etc/ld.so.cache), 524288 ) --> [async] ...
//! SYSCALL[3686,1](257) ... [async] --> Success(0x4)
//! SYSCALL[3686,1](56) sys_clone ( 1200011, 0x0, 0x0, 0x4a27a10, 0x0 )   clone(fork): process 3686 created child 3687
//!  --> [pre-success] Success(0xe67)
//! SYSCALL[5506,1](59) sys_execve ( 0x10a004(/bin/true), 0x1fff000640, 0x1fff0007a0 )
//! SYSCALL[3686,1](231) exit_group( 0 ) --> [pre-success] Success(0x0)
//! ```
//!
//! (Valgrind 3.19 on amd64.) A successful `execve` prints only its first half:
//! the process image is replaced before the result is printed, and the new
//! image's Valgrind starts a new log. `vfork` and `posix_spawn`'s
//! `clone(CLONE_VM|CLONE_VFORK)` are run by Valgrind as a plain fork and
//! print `fork: process P created child C` or `clone(fork): ...`; a clone that
//! creates a thread prints no such text. Lines that begin with `==PID==` or
//! `--PID--` are Valgrind's own messages: the preamble (`Command:`,
//! `Parent PID:`), `Process terminating with default action of signal N`,
//! and lackey's closing statistics ending in `Exit code: N`.
//!
//! [`LineParser`] turns one line at a time into [`Record`]s without
//! allocating for access lines; [`Reader`] drives it over a file or any
//! [`BufRead`] and implements [`RecordSource`].
//!
//! Events produced, all only for calls that succeeded and with the kernel's
//! result where it matters: `mmap` (returned address), `munmap`, `mprotect`,
//! `brk` (returned break, every call including `brk(0)` queries), `mremap`
//! (as `Munmap` of the old range then `Mmap` of the new one with
//! `PROT_READ|PROT_WRITE` and `MAP_PRIVATE|MAP_ANONYMOUS`: lackey does not
//! print the protection, and moved mappings are almost always heap), a fork
//! of a process (not a thread), `execve` (emitted when the stream ends right
//! after the call: see [`LineParser::finish`]), and exit (`exit_group`,
//! `exit` of the last thread, death by a signal as `128 + signal`, or lackey's
//! closing `Exit code:` if none of those was seen).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use std::sync::{Arc, Mutex};

use crate::record::{FileId, Fingerprint, MappedFile, FINGERPRINT_BYTES};
use crate::{Access, AccessKind, ProcEvent, ProcessInfo, Record, RecordSource, TraceError};

/// What a line was expected to be: the message of a malformed line.
const EXPECTED_LINE: &str = "expected an access line (`I  addr,size` or ` L|S|M addr,size`), \
     a `SYSCALL[pid,tid](nr) ...` line, a ` --> result` line or a `==PID==` message";

/// `MAP_PRIVATE | MAP_ANONYMOUS`: the flags given to a mapping moved by `mremap`.
const MREMAP_FLAGS: u32 = 0x22;
/// `PROT_READ | PROT_WRITE`: the protection given to a mapping moved by `mremap`.
const MREMAP_PROT: u32 = 3;

/// A system call whose result is printed on a later line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pending {
    /// Thread that made the call (the `tid` of `SYSCALL[pid,tid]`).
    tid: u32,
    /// The call and its arguments.
    call: Call,
}

/// A system call that produces an event, with the arguments needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Mmap {
        len: u64,
        prot: u32,
        flags: u32,
        /// The file descriptor (`u32::MAX` = -1: anonymous).
        fd: u32,
        offset: u64,
    },
    /// `open`/`openat` whose path is kept in [`LineParser::open_paths`].
    Open,
    Close {
        fd: u32,
    },
    Munmap {
        addr: u64,
        len: u64,
    },
    Mprotect {
        addr: u64,
        len: u64,
        prot: u32,
    },
    Brk,
    Mremap {
        old_addr: u64,
        old_len: u64,
        new_len: u64,
    },
    /// A clone/fork; `child` is set when Valgrind printed `created child N`.
    Clone {
        child: Option<u32>,
    },
    Execve,
    /// Any call that produces no event (only its completion is tracked).
    Other,
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
    /// [`Reader`]'s fast path. Stops before the first line that is anything
    /// else (an event, a message, an access line with unusual spacing, a
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

/// `MAP_ANONYMOUS`: a mapping of no file, whatever its descriptor.
const MAP_ANONYMOUS: u32 = 0x20;
/// `AT_FDCWD` (-100) as Valgrind prints it (unsigned 32-bit).
const AT_FDCWD: u64 = 4_294_967_196;

/// The path argument of `sys_open ( 0x..(PATH), ... )` or
/// `sys_openat ( DIRFD, 0x..(PATH), ... )`. Valgrind prints the path
/// unquoted inside the parentheses, so a path may itself hold `)`: it
/// ends at the last `), ` followed only by numeric arguments. `None` for
/// an `openat` relative to a directory descriptor other than `AT_FDCWD`
/// (the recorder does not know which directory that is).
fn open_path(head: &[u8]) -> Option<&[u8]> {
    let head = trim(head);
    let open = find(head, b"(")?;
    let args = &head[open + 1..];
    let is_at = head.starts_with(b"sys_openat");
    let mut a = Args::new(&head[open..]);
    if is_at && a.next() != Some(AT_FDCWD) {
        // Absolute paths ignore the directory descriptor.
        let start = find(args, b"(/")?;
        return path_in(&args[start..]);
    }
    let start = find(args, b"(")?;
    path_in(&args[start..])
}

/// `(PATH), NUM[, NUM] )` -> `PATH`.
fn path_in(s: &[u8]) -> Option<&[u8]> {
    let s = s.strip_prefix(b"(")?;
    let mut end = s.len();
    while let Some(i) = s[..end].windows(3).rposition(|w| w == b"), ") {
        let rest = &s[i + 3..];
        let numeric = rest
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b',' | b' ' | b')' | b'[' | b']'));
        if numeric {
            return Some(&s[..i]).filter(|p| !p.is_empty());
        }
        end = i;
    }
    None
}

/// Names and fingerprints the files a recorded program opens, once per
/// (path, device, inode, size, mtime): a shared library opened by every
/// process of a pipeline is hashed once. Shared by every stream's
/// [`LineParser`].
///
/// A relative path is resolved against `cwd`, the directory the recorded
/// program started in (a program that `chdir`s and then opens a relative
/// path may be fingerprinted wrongly or not at all; mappings of files the
/// process inherited already open get no identity).
#[derive(Debug)]
pub struct FileIdentifier {
    cwd: std::path::PathBuf,
    known: Mutex<std::collections::HashMap<FileKey, Arc<FileId>>>,
}

/// What makes a file the same file for [`FileIdentifier`]: path as opened,
/// device, inode, size and mtime (ns).
type FileKey = (Vec<u8>, u64, u64, u64, i64);

impl FileIdentifier {
    /// An identifier resolving relative paths against `cwd`.
    pub fn new(cwd: std::path::PathBuf) -> Self {
        FileIdentifier {
            cwd,
            known: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The identity of the file at `path` now; without a fingerprint if it
    /// cannot be read (removed, no permission).
    pub fn identify(&self, path: &[u8]) -> Arc<FileId> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::MetadataExt;
        let name = String::from_utf8_lossy(path).into_owned();
        let full = self.cwd.join(std::ffi::OsStr::from_bytes(path));
        let unknown = || {
            Arc::new(FileId {
                path: name.clone(),
                fingerprint: None,
            })
        };
        let Ok(meta) = std::fs::metadata(&full) else {
            return unknown();
        };
        if !meta.is_file() {
            return unknown();
        }
        let key = (
            path.to_vec(),
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
        );
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = known.get(&key) {
            return Arc::clone(id);
        }
        let id = match fingerprint_file(&full, meta.size()) {
            Some(fingerprint) => Arc::new(FileId {
                path: name,
                fingerprint: Some(fingerprint),
            }),
            None => return unknown(),
        };
        known.insert(key, Arc::clone(&id));
        id
    }
}

/// Size and XXH3-64 of the first [`FINGERPRINT_BYTES`] of the file.
pub(crate) fn fingerprint_file(path: &Path, size: u64) -> Option<Fingerprint> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut r = std::io::BufReader::with_capacity(1 << 16, f.take(FINGERPRINT_BYTES));
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(Fingerprint {
        size,
        hash: h.digest(),
    })
}

/// True for the result text of a call that has not returned yet (`[async] ...`).
#[inline]
fn is_async_start(result: &[u8]) -> bool {
    trim(result).ends_with(b"...")
}

/// The value of `Success(0x..)` in a result text; `None` for failures and
/// results without a value.
fn success_value(result: &[u8]) -> Option<u64> {
    let i = find(result, b"Success(0x")?;
    let hex = &result[i + 10..];
    let n = hex.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    parse_hex(&hex[..n])
}

/// Which call a `name ( args )` text is, with the arguments needed.
fn parse_call(head: &[u8]) -> Call {
    let head = trim(head);
    let name_end = head
        .iter()
        .position(|&b| b == b' ' || b == b'(')
        .unwrap_or(head.len());
    let name = &head[..name_end];
    let args = || Args::new(&head[name_end..]);
    match name {
        b"sys_mmap" | b"sys_mmap2" => {
            let mut a = args();
            let _addr = a.next();
            match (a.next(), a.next(), a.next()) {
                (Some(len), Some(prot), Some(flags)) => {
                    let fd = a.next().map_or(u32::MAX, |v| v as u32);
                    Call::Mmap {
                        len,
                        prot: prot as u32,
                        flags: flags as u32,
                        fd,
                        offset: a.next().unwrap_or(0),
                    }
                }
                _ => Call::Other,
            }
        }
        b"sys_open" | b"sys_openat" | b"sys_openat2" => Call::Open,
        b"sys_close" => match args().next() {
            Some(fd) => Call::Close { fd: fd as u32 },
            None => Call::Other,
        },
        b"sys_munmap" => {
            let mut a = args();
            match (a.next(), a.next()) {
                (Some(addr), Some(len)) => Call::Munmap { addr, len },
                _ => Call::Other,
            }
        }
        b"sys_mprotect" => {
            let mut a = args();
            match (a.next(), a.next(), a.next()) {
                (Some(addr), Some(len), Some(prot)) => Call::Mprotect {
                    addr,
                    len,
                    prot: prot as u32,
                },
                _ => Call::Other,
            }
        }
        b"sys_brk" => Call::Brk,
        b"sys_mremap" => {
            let mut a = args();
            match (a.next(), a.next(), a.next()) {
                (Some(old_addr), Some(old_len), Some(new_len)) => Call::Mremap {
                    old_addr,
                    old_len,
                    new_len,
                },
                _ => Call::Other,
            }
        }
        b"sys_clone" | b"sys_clone3" | b"sys_fork" | b"sys_vfork" => {
            let child = find(head, b"created child ").and_then(|i| {
                let d = &head[i + 14..];
                let n = d.iter().take_while(|b| b.is_ascii_digit()).count();
                parse_dec(&d[..n]).and_then(|v| u32::try_from(v).ok())
            });
            Call::Clone { child }
        }
        b"sys_execve" | b"sys_execveat" => Call::Execve,
        _ => Call::Other,
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

/// Numeric arguments of `( a, b, c )`: `0x` hex or decimal; stops at the
/// first argument that is neither.
struct Args<'a> {
    s: &'a [u8],
}

impl<'a> Args<'a> {
    fn new(s: &'a [u8]) -> Self {
        let s = trim(s);
        let s = s.strip_prefix(b"(").unwrap_or(s);
        Args { s }
    }

    fn next(&mut self) -> Option<u64> {
        let s = trim_start(self.s);
        let end = s
            .iter()
            .position(|&b| b == b',' || b == b')' || b == b' ')
            .unwrap_or(s.len());
        let tok = &s[..end];
        let rest = &s[end..];
        let rest = trim_start(rest);
        self.s = rest.strip_prefix(b",").unwrap_or(rest);
        parse_num(tok)
    }
}

/// Value of each byte as a hex digit; [`NOT_HEX`] for other bytes.
const HEX_DIGIT: [u8; 256] = {
    let mut t = [NOT_HEX; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};
/// Bytes [`LineParser::parse_access_lines`] needs in view to parse a line
/// without bounds checks per byte: the longest line it accepts (kind, 8
/// spaces, 16 hex digits, comma, 5 digits, newline: 34 bytes) with room.
pub const FAST_WINDOW: usize = 48;
/// Marks a byte that is no hex digit in [`HEX_DIGIT`].
const NOT_HEX: u8 = 0xff;

/// Parse `addr,size` after the kind letter (leading spaces allowed).
///
/// One pass over the bytes for the lines Valgrind writes (spaces, 1 to 16
/// hex digits, a comma, 1 to 5 decimal digits); anything else goes
/// through [`parse_access_general`], which gives the same result (a test
/// checks it) and the error.
#[inline]
fn parse_access(s: &[u8], kind: AccessKind, pid: u32) -> Result<Access, &'static str> {
    let mut i = 0;
    while i < s.len() && s[i] == b' ' {
        i += 1;
    }
    let digits = i;
    let mut addr = 0u64;
    while i < s.len() {
        let d = HEX_DIGIT[usize::from(s[i])];
        if d == NOT_HEX {
            break;
        }
        addr = (addr << 4) | u64::from(d);
        i += 1;
    }
    let hex_len = i - digits;
    if (1..=16).contains(&hex_len) && s.get(i) == Some(&b',') {
        let size_digits = &s[i + 1..];
        if (1..=5).contains(&size_digits.len()) {
            let mut size = 0u32;
            let mut ok = true;
            for &b in size_digits {
                ok &= b.is_ascii_digit();
                size = size * 10 + u32::from(b.wrapping_sub(b'0'));
            }
            if ok {
                if let Ok(size) = u16::try_from(size) {
                    return Ok(Access {
                        addr,
                        pid,
                        size,
                        kind,
                    });
                }
            }
        }
    }
    parse_access_general(s, kind, pid)
}

/// [`parse_access`] for any input: whitespace around the size, errors.
fn parse_access_general(s: &[u8], kind: AccessKind, pid: u32) -> Result<Access, &'static str> {
    const EXPECTED: &str = "expected `hexaddr,size` after the access kind (size 1 to 65535)";
    let s = trim_start(s);
    let comma = s.iter().position(|&b| b == b',').ok_or(EXPECTED)?;
    let addr = parse_hex(&s[..comma]).ok_or(EXPECTED)?;
    let size = parse_dec(trim(&s[comma + 1..])).ok_or(EXPECTED)?;
    let size = u16::try_from(size).map_err(|_| EXPECTED)?;
    Ok(Access {
        addr,
        pid,
        size,
        kind,
    })
}

#[inline]
fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v = 0u64;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

#[inline]
fn parse_dec(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v = 0u64;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

fn parse_signed(s: &[u8]) -> Option<i32> {
    match s.strip_prefix(b"-") {
        Some(d) => parse_dec(d).and_then(|v| i32::try_from(v).ok()).map(|v| -v),
        None => parse_dec(s).and_then(|v| i32::try_from(v).ok()),
    }
}

/// `0x` hex or decimal.
fn parse_num(s: &[u8]) -> Option<u64> {
    match s.strip_prefix(b"0x") {
        Some(h) => parse_hex(h),
        None => parse_dec(s),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &s[n..]
}

fn trim(s: &[u8]) -> &[u8] {
    let s = trim_start(s);
    let n = s
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_whitespace())
        .count();
    &s[..s.len() - n]
}

/// Reads a lackey log (one process) from a file or any buffered reader.
pub struct Reader {
    path: PathBuf,
    src: Box<dyn BufRead>,
    line: Vec<u8>,
    line_no: u64,
    parser: LineParser,
    /// Records produced beyond the caller's `max`, handed out first next time.
    overflow: Vec<Record>,
    processes: Vec<ProcessInfo>,
    done: bool,
}

impl Reader {
    /// Open a lackey log file, plain or xz / gzip compressed (detected
    /// from its first bytes); records carry the pid of its `==PID==` lines.
    ///
    /// # Errors
    /// [`TraceError::Io`] when the file cannot be opened.
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        let (input, _) = crate::champsim::open_decompressed(path)?;
        Ok(Self::new(
            path.to_path_buf(),
            Box::new(BufReader::with_capacity(1 << 18, input)),
            None,
        ))
    }

    /// Read a lackey log from `r` (for example stdin); `name` is used in
    /// error messages. Records carry the pid of its `==PID==` lines.
    pub fn from_reader(name: &str, r: impl BufRead + 'static) -> Self {
        Self::new(PathBuf::from(name), Box::new(r), None)
    }

    /// Like [`from_reader`](Self::from_reader), but every record carries `pid`.
    pub fn with_pid(name: &str, r: impl BufRead + 'static, pid: u32) -> Self {
        Self::new(PathBuf::from(name), Box::new(r), Some(pid))
    }

    fn new(path: PathBuf, src: Box<dyn BufRead>, pid: Option<u32>) -> Self {
        Reader {
            path,
            src,
            line: Vec::with_capacity(256),
            line_no: 0,
            parser: LineParser::new(pid),
            overflow: Vec::new(),
            processes: Vec::new(),
            done: false,
        }
    }

    fn update_processes(&mut self) {
        if self.parser.has_preamble() {
            self.processes.clear();
            self.processes.push(self.parser.process_info());
        }
    }
}

impl RecordSource for Reader {
    fn next_batch(&mut self, buf: &mut Vec<Record>, max: usize) -> Result<usize, TraceError> {
        let start = buf.len();
        let target = start + max;
        while buf.len() < target {
            if !self.overflow.is_empty() {
                let take = (target - buf.len()).min(self.overflow.len());
                buf.extend(self.overflow.drain(..take));
                continue;
            }
            if self.done {
                break;
            }
            // Plain access lines straight from the reader's buffer (one
            // record each, so `target` is never passed).
            let avail = self
                .src
                .fill_buf()
                .map_err(|e| TraceError::io(&self.path, e))?;
            let (used, lines) = self.parser.parse_access_lines(avail, buf, target);
            if used > 0 {
                self.src.consume(used);
                self.line_no += lines;
                continue;
            }
            self.line.clear();
            let n = self
                .src
                .read_until(b'\n', &mut self.line)
                .map_err(|e| TraceError::io(&self.path, e))?;
            if n == 0 {
                self.done = true;
                self.parser.finish(&mut self.overflow);
                continue;
            }
            self.line_no += 1;
            let line = match self.line.last() {
                Some(b'\n') => &self.line[..self.line.len() - 1],
                _ => &self.line[..],
            };
            let out = if target - buf.len() >= 2 {
                &mut *buf
            } else {
                &mut self.overflow
            };
            if let Err(what) = self.parser.parse_line(line, out) {
                return Err(malformed(&self.path, self.line_no, what, line));
            }
            if line.first() == Some(&b'=') {
                self.update_processes();
            }
        }
        Ok(buf.len() - start)
    }

    fn processes(&self) -> &[ProcessInfo] {
        &self.processes
    }
}

/// The error for a line that does not parse: file, line number, what was
/// expected and (the start of) what was found.
pub fn malformed(path: &Path, line_no: u64, what: &str, line: &[u8]) -> TraceError {
    let shown = &line[..line.len().min(80)];
    TraceError::Malformed {
        path: path.to_path_buf(),
        at: format!("line {line_no}"),
        what: format!("{what}; found {:?}", String::from_utf8_lossy(shown)),
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
    fn the_identifier_fingerprints_each_file_once() {
        let dir = std::env::temp_dir().join(format!("vmemsim-fid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), b"hello").unwrap();
        let ids = FileIdentifier::new(dir.clone());
        let a = ids.identify(b"f");
        let b = ids.identify(b"f");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(
            a.fingerprint,
            Some(Fingerprint {
                size: 5,
                hash: xxhash_rust::xxh3::xxh3_64(b"hello")
            })
        );
        assert_eq!(ids.identify(b"missing").fingerprint, None);
        std::fs::remove_dir_all(&dir).unwrap();
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
    fn preamble_sets_pid_and_process() {
        let text = "==42== Lackey, an example Valgrind tool\n==42== Command: sh -c echo\\ hi\n==42== Parent PID: 41\n==42== \nI  0401ab70,3\n";
        let mut r = Reader::from_reader("<test>", std::io::Cursor::new(text.as_bytes().to_vec()));
        let mut buf = Vec::new();
        assert_eq!(r.next_batch(&mut buf, 100).unwrap(), 1);
        assert_eq!(
            buf,
            vec![Record::Access(Access {
                addr: 0x401ab70,
                pid: 42,
                size: 3,
                kind: AccessKind::Fetch
            })]
        );
        assert_eq!(
            r.processes(),
            &[ProcessInfo {
                pid: 42,
                parent: Some(41),
                command: "sh -c echo\\ hi".into()
            }]
        );
        buf.clear();
        assert_eq!(r.next_batch(&mut buf, 100).unwrap(), 0);
    }

    #[test]
    fn malformed_lines_name_the_line() {
        for bad in [
            "I  zz,3",
            " L 1000",
            " S 1000,99999",
            "hello",
            " Q 10,1",
            "SYSCALL[1](2)",
        ] {
            let text = format!("I  1000,4\n\n{bad}\n");
            let mut r = Reader::from_reader("trace.txt", std::io::Cursor::new(text.into_bytes()));
            let mut buf = Vec::new();
            let e = r.next_batch(&mut buf, 100).unwrap_err().to_string();
            assert!(e.starts_with("trace.txt: line 3: expected"), "{bad}: {e}");
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
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

    #[test]
    fn small_batches_keep_every_record() {
        let text = "SYSCALL[1,1](25) sys_mremap ( 0x1000, 4096, 8192, 0x1 ) --> Success(0x9000)\nI  10,1\n";
        let mut r = Reader::with_pid("t", std::io::Cursor::new(text.as_bytes().to_vec()), 1);
        let mut all = Vec::new();
        loop {
            let mut buf = Vec::new();
            if r.next_batch(&mut buf, 1).unwrap() == 0 {
                break;
            }
            assert_eq!(buf.len(), 1);
            all.extend(buf);
        }
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn the_one_pass_access_parser_agrees_with_the_general_one() {
        // Lines as Valgrind writes them, and the edges of the fast path:
        // 16 hex digits, 17 (too many), size 65535 and 65536, 5 and 6
        // size digits, whitespace the fast path leaves to the general one.
        let cases: &[&[u8]] = &[
            b"  04016a8,3",
            b" 1ffefffd58,8",
            b"ffffffffffffffff,64",
            b"1ffffffffffffffff,8",
            b" 10,65535",
            b" 10,65536",
            b" 10,00008",
            b" 10,000008",
            b" 10, 8 ",
            b"\t10,8",
            b" 10 ,8",
            b" 0x10,8",
            b" 10,",
            b" ,8",
            b"",
            b" AbC,1",
            b" 10,8x",
        ];
        for c in cases {
            assert_eq!(
                parse_access(c, AccessKind::Load, 3),
                parse_access_general(c, AccessKind::Load, 3),
                "{:?}",
                String::from_utf8_lossy(c)
            );
        }
        assert_eq!(
            parse_access(b"  04016a8,3", AccessKind::Fetch, 3),
            Ok(Access {
                addr: 0x4016a8,
                pid: 3,
                size: 3,
                kind: AccessKind::Fetch
            })
        );
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

        #[test]
        fn the_one_pass_access_parser_agrees_on_any_bytes(
            line in proptest::collection::vec(
                proptest::sample::select(b" \t0123456789abcdefABCDEFxg,-".to_vec()),
                0..28,
            )
        ) {
            proptest::prop_assert_eq!(
                parse_access(&line, AccessKind::Store, 9),
                parse_access_general(&line, AccessKind::Store, 9)
            );
        }
    }
}
