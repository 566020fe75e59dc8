//! The system-call lines of a lackey log: which call a line is, its
//! arguments, its result, and the path an `open` names.

use super::bytes::{find, parse_dec, parse_hex, parse_num, trim, trim_start};

/// A system call that produces an event, with the arguments needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Call {
    Mmap {
        len: u64,
        prot: u32,
        flags: u32,
        /// The file descriptor (`u32::MAX` = -1: anonymous).
        fd: u32,
        offset: u64,
    },
    /// `open`/`openat` whose path is kept in
    /// [`LineParser::open_paths`](super::LineParser::open_paths).
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

/// `AT_FDCWD` (-100) as Valgrind prints it (unsigned 32-bit).
const AT_FDCWD: u64 = 4_294_967_196;

/// The path argument of `sys_open ( 0x..(PATH), ... )` or
/// `sys_openat ( DIRFD, 0x..(PATH), ... )`. Valgrind prints the path
/// unquoted inside the parentheses, so a path may itself hold `)`: it
/// ends at the last `), ` followed only by numeric arguments. `None` for
/// an `openat` relative to a directory descriptor other than `AT_FDCWD`
/// (the recorder does not know which directory that is).
pub(super) fn open_path(head: &[u8]) -> Option<&[u8]> {
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

/// True for the result text of a call that has not returned yet (`[async] ...`).
#[inline]
pub(super) fn is_async_start(result: &[u8]) -> bool {
    trim(result).ends_with(b"...")
}

/// The value of `Success(0x..)` in a result text; `None` for failures and
/// results without a value.
pub(super) fn success_value(result: &[u8]) -> Option<u64> {
    let i = find(result, b"Success(0x")?;
    let hex = &result[i + 10..];
    let n = hex.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    parse_hex(&hex[..n])
}

/// Which call a `name ( args )` text is, with the arguments needed.
pub(super) fn parse_call(head: &[u8]) -> Call {
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

/// Numeric arguments of `( a, b, c )`: `0x` hex or decimal; stops at the
/// first argument that is neither.
pub(super) struct Args<'a> {
    s: &'a [u8],
}

impl<'a> Args<'a> {
    pub(super) fn new(s: &'a [u8]) -> Self {
        let s = trim(s);
        let s = s.strip_prefix(b"(").unwrap_or(s);
        Args { s }
    }

    pub(super) fn next(&mut self) -> Option<u64> {
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
