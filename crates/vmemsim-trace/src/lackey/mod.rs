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
//! [`LineParser`] turns one line at a time into [`Record`](crate::Record)s without
//! allocating for access lines; [`Reader`] drives it over a file or any
//! [`BufRead`](std::io::BufRead) and implements
//! [`RecordSource`](crate::RecordSource).
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

mod access;
mod bytes;
mod files;
mod parser;
mod reader;
mod syscall;

pub use access::FAST_WINDOW;
pub(crate) use files::fingerprint_file;
pub use files::FileIdentifier;
pub use parser::LineParser;
pub use reader::{malformed, Reader};
