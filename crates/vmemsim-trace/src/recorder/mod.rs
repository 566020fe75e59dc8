//! Record a real program's memory accesses and process events into a `.vmt`
//! trace by running it under Valgrind: the vmemsim tool, or lackey.
//!
//! # How it works
//!
//! [`record`] runs
//! `valgrind --tool=vmemsim --trace-syscalls=yes --trace-children=yes
//! --vgdb=no --log-file=DIR/%p.%n COMMAND...` (with `VALGRIND_LIB` naming
//! the tool's directory), or with `--tool=lackey --trace-mem=yes` instead
//! ([`RecordTool`]). The vmemsim tool (module `tool`; C source in
//! `crates/vmemsim-trace/valgrind/`, GPL-2.0-or-later, built with `gcc`
//! on first use and cached under `$XDG_CACHE_HOME/vmemsim/`) prints the
//! same access lines as `lackey --trace-mem=yes`, with the same choices
//! (dirty helpers' memory effects, a CAS as load then store, LL/SC,
//! guarded loads and stores, read-modify-write merging), but buffers them
//! and writes them in 1 MiB chunks, flushed whenever a thread stops running
//! client code (before each system call, signal and thread switch), before
//! a fork and at exit: lackey's one `write(2)` per access is what made
//! recording slower than Valgrind itself. With the default
//! [`RecordTool::Auto`] the recorder falls back to lackey where the tool
//! cannot be built (saying why once on standard error). Both tools run
//! with the same environment given the same `VALGRIND_LIB`, and their
//! traces are the same record for record (`tests/record_tool.rs`); the
//! creator string names the tool.
//!
//! The program's stdin, stdout and stderr are left to the user; its
//! environment is the recorder's (sorted by name). `DIR` is a
//! fresh private directory under `$TMPDIR` if set, else `/dev/shm`, else
//! the system temporary directory (creating it removes those that
//! recorders killed outright left there).
//!
//! **One stream per process, streamed.** Every Valgrind instance writes its
//! own log: the original process, each forked child (Valgrind reopens `%p`
//! logs in the child after a fork) and each image started by `execve` (a
//! new Valgrind instance). *Log pipes* (module `pipes`): a seccomp filter
//! in the recorded process tree traps exactly Valgrind's `open` of its log
//! (the raw `open` call with `O_WRONLY|O_CREAT|O_TRUNC`; the program's own
//! opens use `openat` and never leave the kernel), and the recorder answers
//! it with the write end of a new 1 MiB pipe, so no log file exists at all.
//! Lackey makes one `write(2)` per line; into a pipe that costs about 60%
//! of a write into a file (the vmemsim tool one per about 40,000 lines). Where the filter cannot be installed (not
//! x86-64 Linux >= 5.14, seccomp forbidden) or with `VMEMSIM_RECORD_LOG_FILES`
//! set, Valgrind writes log files: a watcher thread scans `DIR` every 2 ms,
//! opens each new file and unlinks it at once. Either way one thread per
//! log then follows it like `tail -f`, reading up to 4 MiB at a time and
//! sleeping 4 ms whenever it has caught up (so reading costs a few system
//! calls per megabyte), parses lines with [`crate::lackey::LineParser`]
//! (plain access lines, nearly all of the text, in one pass straight from
//! the read buffer: [`crate::lackey::LineParser::parse_access_lines`]) and
//! sends record batches over a channel. A file's consumed bytes are
//! released with `fallocate(PUNCH_HOLE)` every 16 MiB, so only the unread
//! tail of each log is ever stored.
//!
//! *Why not `--log-socket`* (one TCP connection per Valgrind instance): a
//! forked child keeps writing into its parent's connection until it execs,
//! and Valgrind flushes its output buffer in arbitrary chunks, so the two
//! processes' lines arrive interleaved mid-line and cannot be separated
//! (`--child-silent-after-fork` does not apply to sockets). Shell pipelines
//! and forking servers do most of their work in such children. *Why `%n`*:
//! an exec'd Valgrind opens `PID.1` with `O_TRUNC`; the forked child's
//! pre-exec log is `PID.2` (or higher), so the name does not collide. When a
//! process execs twice (or the first process execs), the new instance reuses
//! the name `PID.1`; a pipe has no name to collide, and with files, since
//! the recorder unlinks every file within a few milliseconds of its
//! creation and Valgrind takes far longer to start, the new instance
//! creates a new file instead of truncating the old one.
//!
//! A stream ends when lackey printed its closing `Exit code:` line, when a
//! newer log of the same pid appeared (the process exec'd: its old Valgrind
//! is gone), when every writer closed its pipe, or when the process no
//! longer exists (or is a zombie; asked of `/proc` every 40 ms while
//! idle); the reader then reads to the end once more.
//!
//! **Order.** One writer thread (the caller's) interleaves the streams in
//! arrival order and writes them through [`crate::vmt::Writer`]. Two rules
//! keep the trace causal: a child's records wait until its parent's `Fork`
//! event has been written (the child's log may be read before the parent
//! prints the fork), and a process's post-exec stream waits until its
//! pre-exec stream has ended (its `Exec` event closes that stream).
//!
//! **Process table.** Each process is entered (`add_process`) when its first
//! stream becomes active, with its parent from the fork event (or the log's
//! `Parent PID:` line) and its command line from the log's `Command:` line
//! (Valgrind's quoting, spaces inside arguments escaped with `\`); after an
//! exec the entry is replaced with the new command.
//!
//! **Valgrind's own memory** never appears: the tool instruments only the
//! client's (the program's) instructions, and `--trace-syscalls` prints only
//! the client's system calls, so Valgrind's own mappings (its tool heap, the
//! translation cache) produce neither accesses nor events. The client's
//! layout is Valgrind's, not the native one: the main stack near
//! `0x1fff000000`, the dynamic loader near `0x4000000`, the initial break at
//! `0x4035000` (on amd64). The executable, loader and stack are mapped by
//! Valgrind's loader, not by client syscalls, so they have no `Mmap` event:
//! a simulator discovers them as implicit mappings on first touch. The
//! client's own `LD_PRELOAD` of `vgpreload_core` does appear (as ordinary
//! `mmap`s).
//!
//! **Mapped files.** Each stream's parser follows the process's
//! `open`/`openat`/`close` calls and gives a file-backed `mmap` event the
//! file behind its descriptor: the path as the program passed it, the
//! mapping's file offset, and a fingerprint (size and XXH3-64 of the first
//! 64 MiB), read while the program runs (within milliseconds of the open;
//! each file once per recording, see [`crate::lackey::FileIdentifier`]).
//! Not named: descriptors inherited across `fork`/`exec` (their `open` is
//! in another stream), `openat` relative to a directory descriptor, and the
//! images Valgrind's loader maps (the executable, the dynamic loader).
//!
//! **Nothing recorded is lost.** On SIGINT, SIGTERM or SIGHUP (a closed
//! terminal, a dropped ssh session) the recorder forwards the signal to the
//! program, keeps reading what the processes wrote for up to 5 seconds
//! (Valgrind delivers the signal to the program at its next stop in
//! Valgrind's scheduler, after the tool wrote out its buffer, and runs the
//! tool's exit), then finishes the trace marked truncated. A crashing program or a
//! non-zero exit is a complete trace with that exit status (128 + signal
//! for a signal death). The trace is written to `OUTPUT.partial` and
//! renamed to `OUTPUT` only by [`crate::vmt::Writer::finish`]: whenever the
//! recorder returns, the file is either complete or explicitly marked
//! truncated. Each block reaches the file as it fills, so even a recorder
//! killed outright (SIGKILL, a crash) leaves a `.partial` readable up to its
//! last whole block.
//!
//! **The program dies with the recorder.** Valgrind runs in a process
//! group of its own (which is also made the terminal's foreground group
//! when the recorder's was, so the program can read the terminal and
//! Ctrl-C reaches it), with `PR_SET_PDEATHSIG` = SIGKILL; a small watchdog
//! process kills the whole group if the recorder dies without saying
//! goodbye, so no Valgrind is left writing into an unlinked log.

mod follow;
mod logdir;
mod order;
mod pipes;
mod process;
mod run;
mod tool;
mod valgrind;

pub use valgrind::{find_program, find_valgrind, valgrind_runs, vmemsim_tool_dir};

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use crate::{ProcessInfo, Record, TraceError};
use run::run;

/// Set (to anything) to make Valgrind write log files even where log
/// pipes work (see the module documentation): for tests of the file path
/// and for troubleshooting.
pub const LOG_FILES_ENV: &str = "VMEMSIM_RECORD_LOG_FILES";

/// What to record and where.
#[derive(Clone, Debug, Default)]
pub struct RecordOptions {
    /// The `.vmt` file to write.
    pub output: PathBuf,
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// The `valgrind` executable; `None` searches `PATH`.
    pub valgrind: Option<PathBuf>,
    /// Which Valgrind tool records (see [`RecordTool`]).
    pub tool: RecordTool,
}

/// The Valgrind tool that records the accesses. Both print the same lines
/// (those of `lackey --trace-mem=yes`), so the trace is the same whichever
/// runs; only its creator string names the tool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecordTool {
    /// The `vmemsim` tool where it can be built here, else lackey (saying
    /// why once on standard error).
    #[default]
    Auto,
    /// The `vmemsim` tool (module `tool`: built from C source once and
    /// cached; it buffers its output instead of one `write(2)` per access
    /// line); an error where it cannot be built.
    Vmemsim,
    /// Valgrind's own lackey (`--tool=lackey --trace-mem=yes`).
    Lackey,
}

impl RecordTool {
    /// The tool's name as Valgrind's `--tool=` takes it (`Auto` as `auto`).
    pub fn name(self) -> &'static str {
        match self {
            RecordTool::Auto => "auto",
            RecordTool::Vmemsim => "vmemsim",
            RecordTool::Lackey => "lackey",
        }
    }
}

impl std::str::FromStr for RecordTool {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(RecordTool::Auto),
            "vmemsim" => Ok(RecordTool::Vmemsim),
            "lackey" => Ok(RecordTool::Lackey),
            other => Err(format!(
                "unknown recording tool `{other}`: expected auto, vmemsim or lackey"
            )),
        }
    }
}

/// What a recording produced.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordSummary {
    /// The trace written.
    pub output: PathBuf,
    /// Processes in the process table.
    pub processes: usize,
    /// Memory accesses written.
    pub accesses: u64,
    /// Process events written.
    pub events: u64,
    /// Size of the trace file in bytes.
    pub bytes_written: u64,
    /// Exit status of the command (128 + signal when killed), if it ended.
    pub exit_code: Option<i32>,
    /// Why the trace is marked truncated, `None` when it is complete.
    pub truncated: Option<String>,
    /// Process logs that came through pipes (see the module documentation).
    pub log_pipes: usize,
    /// Process logs that came through files (where pipes are not available,
    /// or with [`LOG_FILES_ENV`] set).
    pub log_files: usize,
    /// The tool that recorded ([`RecordTool::Vmemsim`] or
    /// [`RecordTool::Lackey`], never `Auto`).
    pub tool: RecordTool,
}

impl RecordSummary {
    /// Trace bytes per recorded access (0 when there are none).
    pub fn bytes_per_access(&self) -> f64 {
        crate::vmt::bytes_per_access(self.bytes_written, self.accesses)
    }
}

impl fmt::Display for RecordSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} processes, {} accesses, {} events, {} bytes ({:.3} bytes/access)",
            self.output.display(),
            self.processes,
            self.accesses,
            self.events,
            self.bytes_written,
            self.bytes_per_access()
        )?;
        match (&self.truncated, self.exit_code) {
            (Some(why), _) => write!(f, "; truncated: {why}"),
            (None, Some(c)) => write!(f, "; exit status {c}"),
            (None, None) => Ok(()),
        }
    }
}

/// Run `opts.command` under Valgrind lackey and write its trace to
/// `opts.output` (see the module documentation).
///
/// # Errors
/// [`TraceError::Io`] when Valgrind is missing (the message says how to
/// install it) or cannot be started, or the trace cannot be written;
/// [`TraceError::Malformed`] when a log line does not parse (the trace is
/// still finished, marked truncated).
pub fn record(opts: &RecordOptions) -> Result<RecordSummary, TraceError> {
    run(opts, None)
}

/// Like [`record`], but also returns every record in the order written
/// (for tests that check the trace reads back exactly). Holds them all in
/// memory.
///
/// # Errors
/// As [`record`].
pub fn record_keeping(opts: &RecordOptions) -> Result<(RecordSummary, Vec<Record>), TraceError> {
    let mut kept = Vec::new();
    let s = run(opts, Some(&mut kept))?;
    Ok((s, kept))
}

/// Messages from the watcher and stream readers to the writer.
enum Msg {
    /// A new log stream, in creation order.
    Stream { id: usize, pid: u32 },
    /// The preamble of a stream (command, parent).
    Info { id: usize, info: ProcessInfo },
    /// Parsed records of a stream, in order.
    Batch { id: usize, records: Vec<Record> },
    /// The stream ended (with the error that ended it, if any).
    End {
        id: usize,
        error: Option<TraceError>,
    },
}

/// Flags shared by the recorder's threads.
struct Shared {
    /// The root Valgrind process exited.
    root_done: AtomicBool,
    /// Stop reading now (after the grace period of a stop signal).
    abort: AtomicBool,
    /// Stream readers still running.
    readers: AtomicUsize,
    /// Logs taken as pipes and as files.
    log_pipes: AtomicUsize,
    log_files: AtomicUsize,
    /// Fingerprints the files the program opens (for file-backed mmaps).
    files: Arc<crate::lackey::FileIdentifier>,
}
