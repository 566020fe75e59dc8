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

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::lackey::{malformed, LineParser};

mod pipes;
mod tool;
use crate::vmt::{self, FinishStatus};
use crate::{ProcEvent, ProcessInfo, Record, TraceError};

/// Records per batch sent from a stream reader to the writer.
const BATCH_RECORDS: usize = 1 << 16;
/// Messages in flight between the readers and the writer.
const CHANNEL_BATCHES: usize = 64;
/// How long the recorder keeps reading after SIGINT/SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Release consumed log bytes every this many bytes (on a tmpfs the log
/// is memory, so it is released often; a punch costs one system call).
const PUNCH_EVERY_BYTES: u64 = 16 << 20;
/// The longest log line accepted (Valgrind's are well under 4 KiB).
const MAX_LINE_BYTES: usize = 1 << 20;
/// Bytes asked for per `read(2)` of a log: large, so that reading costs a
/// few system calls per megabyte of text.
const READ_BYTES: usize = 4 << 20;
/// A read shorter than this means the reader has caught up with Valgrind:
/// it then sleeps [`CAUGHT_UP_SLEEP`] so that the next read finds a large
/// chunk instead of a few lines (Valgrind writes tens of MB/s at most).
const SHORT_READ_BYTES: usize = 256 << 10;
/// How long a reader that caught up waits before reading again.
const CAUGHT_UP_SLEEP: Duration = Duration::from_millis(4);
/// How often an idle reader asks `/proc` whether its process still lives
/// (the cheap end conditions, the closing line and a newer log of the same
/// pid, are checked on every idle read).
const ALIVE_CHECK_EVERY: Duration = Duration::from_millis(40);
/// How often the watcher looks for new log files: well before a process
/// that execs can start its new Valgrind and reuse its log's name.
const FILE_SCAN_EVERY: Duration = Duration::from_millis(2);
/// How often it looks when every log so far came as a pipe (a log `open`
/// wakes it at once): only to notice the end of the recording.
const PIPES_ONLY_SCAN_EVERY: Duration = Duration::from_millis(40);
/// Where the logs go unless `TMPDIR` is set: a tmpfs, on which Valgrind's
/// one `write(2)` per log line is cheaper than on a disk file system and no
/// log text is ever written back to disk.
const SHM_DIR: &str = "/dev/shm";
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
        if self.accesses == 0 {
            0.0
        } else {
            self.bytes_written as f64 / self.accesses as f64
        }
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

/// Find the `valgrind` executable: `explicit` if given, else on `PATH`.
///
/// # Errors
/// [`TraceError::Io`] (not found) saying how to install Valgrind.
pub fn find_valgrind(explicit: Option<&Path>) -> Result<PathBuf, TraceError> {
    let missing = |path: PathBuf| {
        TraceError::Io {
        path,
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "valgrind not found: recording needs Valgrind (Debian/Ubuntu: `apt-get install valgrind`)",
        ),
    }
    };
    let name = explicit.unwrap_or(Path::new("valgrind"));
    which::which(name).map_err(|_| missing(name.to_path_buf()))
}

/// True when Valgrind (`explicit`, else `valgrind` on `PATH`) is installed
/// and can run a program here (`valgrind --tool=none -q /bin/true`); tests
/// that record skip themselves otherwise, saying so on standard error.
pub fn valgrind_runs(explicit: Option<&Path>) -> bool {
    let ok = find_valgrind(explicit).is_ok_and(|v| {
        Command::new(v)
            .args(["--tool=none", "-q", "/bin/true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !ok {
        eprintln!("SKIPPED: valgrind is missing or cannot run here (apt-get install valgrind)");
    }
    ok
}

/// The `VALGRIND_LIB` directory that holds the built `vmemsim` tool (and
/// links to Valgrind's own files), building it first if needed (see
/// [`RecordTool::Vmemsim`]). For tests and troubleshooting: running
/// `VALGRIND_LIB=DIR valgrind --tool=vmemsim ...` by hand gives the log the
/// recorder reads, and running lackey with the same `VALGRIND_LIB` gives
/// the program the same environment (so the same stack addresses) as under
/// the vmemsim tool.
///
/// # Errors
/// [`TraceError::Io`] when Valgrind is missing or the tool cannot be built
/// here (the message says why).
pub fn vmemsim_tool_dir(valgrind: Option<&Path>) -> Result<PathBuf, TraceError> {
    let valgrind = find_valgrind(valgrind)?;
    let version = valgrind_version(&valgrind)?;
    tool::prepare(&valgrind, &version)
        .map(|t| t.lib)
        .map_err(|why| {
            TraceError::io(
                &valgrind,
                std::io::Error::other(format!("cannot use the vmemsim Valgrind tool: {why}")),
            )
        })
}

/// `valgrind --version`, trimmed (e.g. `valgrind-3.19.0`).
fn valgrind_version(valgrind: &Path) -> Result<String, TraceError> {
    let version = Command::new(valgrind)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| TraceError::io(valgrind, e))?;
    if !version.status.success() {
        return Err(TraceError::io(
            valgrind,
            std::io::Error::other(format!(
                "`{} --version` failed: Valgrind cannot run here",
                valgrind.display()
            )),
        ));
    }
    Ok(String::from_utf8_lossy(&version.stdout).trim().to_string())
}

/// Find the program to record (a path, or a name on `PATH`), so a missing
/// program is an error before Valgrind starts rather than a trace of
/// Valgrind failing to exec it.
///
/// # Errors
/// [`TraceError::Io`] naming the program.
pub fn find_program(program: &std::ffi::OsStr) -> Result<PathBuf, TraceError> {
    which::which(program).map_err(|e| TraceError::Io {
        path: PathBuf::from(program),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "program to record not found ({e}): give a path to an executable or a name on PATH"
            ),
        ),
    })
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

fn run(opts: &RecordOptions, keep: Option<&mut Vec<Record>>) -> Result<RecordSummary, TraceError> {
    let valgrind = find_valgrind(opts.valgrind.as_deref())?;
    if opts.command.is_empty() {
        return Err(TraceError::io(
            Path::new("<command>"),
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "no command to record"),
        ));
    }
    find_program(&opts.command[0])?;
    let version = valgrind_version(&valgrind)?;
    let command_text = opts
        .command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let tool = match opts.tool {
        RecordTool::Lackey => None,
        RecordTool::Vmemsim => Some(tool::prepare(&valgrind, &version).map_err(|why| {
            TraceError::io(
                &valgrind,
                std::io::Error::other(format!("cannot use the vmemsim Valgrind tool: {why}")),
            )
        })?),
        RecordTool::Auto => match tool::prepare(&valgrind, &version) {
            Ok(t) => Some(t),
            Err(why) => {
                eprintln!(
                    "vmemsim record: recording with Valgrind lackey (slower): \
                     the vmemsim Valgrind tool cannot be used here: {why}"
                );
                None
            }
        },
    };
    let tool_name = if tool.is_some() {
        RecordTool::Vmemsim
    } else {
        RecordTool::Lackey
    };
    let creator = format!(
        "vmemsim record ({version} --tool={}): {command_text}",
        tool_name.name()
    );

    let dir = make_log_dir()?;
    let result = run_in(opts, &valgrind, tool.as_ref(), &dir, &creator, keep);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Remove the log directories that recorders killed outright (SIGKILL,
/// a crash) left in `base`: `vmemsim-record-PID-*` of a PID with no live
/// process (no `/proc/PID`). Such a recorder took its Valgrind processes
/// with it, so nothing reads these logs any more; under `/dev/shm` they
/// would hold RAM until reboot. Directories of live PIDs, of other users
/// (not removable) and anything else are left alone; without `/proc`
/// nothing is removed. Errors are ignored: this is housekeeping.
fn remove_stale_log_dirs(base: &Path) {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("vmemsim-record-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !proc.join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A fresh private directory for the logs: under `$TMPDIR` when it is set,
/// else under [`SHM_DIR`] when that is usable, else under the system
/// temporary directory.
fn make_log_dir() -> Result<PathBuf, TraceError> {
    if std::env::var_os("TMPDIR").is_none() {
        if let Ok(d) = make_log_dir_in(Path::new(SHM_DIR)) {
            return Ok(d);
        }
    }
    make_log_dir_in(&std::env::temp_dir())
}

fn make_log_dir_in(base: &Path) -> Result<PathBuf, TraceError> {
    remove_stale_log_dirs(base);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for i in 0..100u32 {
        let d = base.join(format!(
            "vmemsim-record-{}-{nanos:x}-{i}",
            std::process::id()
        ));
        // Private: the logs show the program's addresses and file names.
        let made = {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().mode(0o700).create(&d)
        };
        match made {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(TraceError::io(&d, e)),
        }
    }
    Err(TraceError::io(
        base,
        std::io::Error::other("cannot create a private log directory"),
    ))
}

fn run_in(
    opts: &RecordOptions,
    valgrind: &Path,
    tool: Option<&tool::ToolDir>,
    dir: &Path,
    creator: &str,
    keep: Option<&mut Vec<Record>>,
) -> Result<RecordSummary, TraceError> {
    let mut writer = vmt::Writer::create(&opts.output, creator)?;

    let sigint = Arc::new(AtomicBool::new(false));
    let sigterm = Arc::new(AtomicBool::new(false));
    let sighup = Arc::new(AtomicBool::new(false));
    let ids = [
        signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&sigint)),
        signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&sigterm)),
        signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&sighup)),
    ];
    let terminal = Terminal::foreground();

    let mut log_arg = OsString::from("--log-file=");
    log_arg.push(dir.join("%p.%n"));
    let mut cmd = Command::new(valgrind);
    let hand_terminal = terminal.is_some();
    let trap = if std::env::var_os(LOG_FILES_ENV).is_some() {
        None
    } else {
        pipes::Trap::new()
    };
    let trap_child = trap.as_ref().map(pipes::Trap::child_side);
    // SAFETY: the closure runs in the child between fork and exec and
    // calls only async-signal-safe functions (setpgid, prctl, sigprocmask,
    // tcsetpgrp, getpid, seccomp, sendmsg, close).
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            in_child_before_exec(hand_terminal);
            if let Some(t) = &trap_child {
                t.install();
            }
            Ok(())
        });
    }
    // The program's environment is the recorder's, sorted by name, with
    // `VALGRIND_LIB` naming the tool's directory when the vmemsim tool
    // runs: built the same way for both tools, so that (given the same
    // `VALGRIND_LIB`) the program gets the same environment, and so the
    // same stack addresses, under either.
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !(tool.is_some() && k == "VALGRIND_LIB"))
        .collect();
    if let Some(t) = tool {
        env.push(("VALGRIND_LIB".into(), t.lib.clone().into_os_string()));
    }
    env.sort();
    cmd.env_clear().envs(env);
    match tool {
        Some(_) => {
            cmd.arg(format!("--tool={}", tool::TOOL_NAME));
        }
        None => {
            cmd.args(["--tool=lackey", "--trace-mem=yes"]);
        }
    }
    let spawned = cmd
        .args(["--trace-syscalls=yes", "--trace-children=yes", "--vgdb=no"])
        .arg(log_arg)
        .args(&opts.command)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            for id in ids.into_iter().flatten() {
                signal_hook::low_level::unregister(id);
            }
            let _ = writer.finish(FinishStatus::Truncated {
                reason: format!("valgrind did not start: {e}"),
            });
            let _ = std::fs::remove_file(&opts.output);
            return Err(TraceError::io(valgrind, e));
        }
    };
    let root_pid = child.id();
    // The group's id is the root's pid (setpgid(0, 0) in the child).
    let group = libc::pid_t::try_from(root_pid).unwrap_or(0);
    let watchdog = Watchdog::start(group);
    // After the watchdog's fork, so that only the recorder holds it.
    let listener = trap.and_then(|t| t.listener(dir));

    let shared = Arc::new(Shared {
        root_done: AtomicBool::new(false),
        abort: AtomicBool::new(false),
        readers: AtomicUsize::new(0),
        log_pipes: AtomicUsize::new(0),
        log_files: AtomicUsize::new(0),
        // The program starts in the recorder's working directory.
        files: Arc::new(crate::lackey::FileIdentifier::new(
            std::env::current_dir().unwrap_or_default(),
        )),
    });
    // Bounded: when the writer falls behind, readers wait and the unread
    // text stays in the (disk) log files instead of piling up in memory.
    let (tx, rx) = mpsc::sync_channel::<Msg>(CHANNEL_BATCHES);
    let watcher = {
        let shared = Arc::clone(&shared);
        let dir = dir.to_path_buf();
        thread::spawn(move || watch(&dir, listener.as_ref(), &tx, &shared))
    };

    let mut order = Order::new(root_pid, keep);
    let mut first_error: Option<TraceError> = None;
    let mut exit_code = None;
    let mut stop_at: Option<Instant> = None;
    let mut stop_reason: Option<String> = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(10)) {
            Ok(msg) => {
                if let Err(e) = order.handle(msg, &mut writer) {
                    // A write error: nothing more can be written.
                    shared.abort.store(true, Ordering::SeqCst);
                    first_error.get_or_insert(e);
                    break;
                }
                if let Some(e) = order.errors.pop() {
                    first_error.get_or_insert(e);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if exit_code.is_none() {
            if let Ok(Some(status)) = child.try_wait() {
                exit_code = Some(
                    status
                        .code()
                        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
                );
                shared.root_done.store(true, Ordering::SeqCst);
            }
        }
        if stop_at.is_none() {
            let sig = if sigterm.load(Ordering::SeqCst) {
                Some((libc::SIGTERM, "SIGTERM"))
            } else if sighup.load(Ordering::SeqCst) {
                Some((libc::SIGHUP, "SIGHUP"))
            } else if sigint.load(Ordering::SeqCst) {
                Some((libc::SIGINT, "SIGINT"))
            } else {
                None
            };
            if let Some((sig, name)) = sig {
                stop_at = Some(Instant::now() + STOP_GRACE);
                stop_reason = Some(format!("recording interrupted by {name}"));
                if exit_code.is_none() && group > 0 {
                    // SAFETY: kill(2) of the process group we created, whose
                    // leader we have not reaped.
                    unsafe { libc::kill(-group, sig) };
                }
            }
        }
        if let Some(t) = stop_at {
            if Instant::now() >= t && !shared.abort.load(Ordering::SeqCst) {
                shared.abort.store(true, Ordering::SeqCst);
                if exit_code.is_none() && group > 0 {
                    // SAFETY: as above.
                    unsafe { libc::kill(-group, libc::SIGKILL) };
                }
            }
        }
    }
    if exit_code.is_none() {
        if let Ok(status) = child.wait() {
            exit_code = Some(
                status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            );
        }
    }
    shared.root_done.store(true, Ordering::SeqCst);
    shared.abort.store(true, Ordering::SeqCst);
    if let Some(t) = terminal {
        t.take_back();
    }
    watchdog.dismiss();
    let _ = watcher.join();
    while let Ok(msg) = rx.try_recv() {
        if order.handle(msg, &mut writer).is_err() {
            break;
        }
    }
    for id in ids.into_iter().flatten() {
        signal_hook::low_level::unregister(id);
    }
    let flushed = order.flush_all(&mut writer);
    if let Err(e) = flushed {
        first_error.get_or_insert(e);
    }
    if let Some(e) = order.errors.pop() {
        first_error.get_or_insert(e);
    }

    let truncated = match (&first_error, stop_reason) {
        (Some(e), _) => Some(format!("recording failed: {e}")),
        (None, r) => r,
    };
    let status = match &truncated {
        Some(reason) => FinishStatus::Truncated {
            reason: reason.clone(),
        },
        None => FinishStatus::Complete { exit_code },
    };
    let ws = writer.finish(status)?;
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(RecordSummary {
        output: opts.output.clone(),
        processes: ws.processes,
        accesses: ws.accesses,
        events: ws.events,
        bytes_written: ws.bytes_written,
        exit_code,
        truncated,
        log_pipes: shared.log_pipes.load(Ordering::SeqCst),
        log_files: shared.log_files.load(Ordering::SeqCst),
        tool: if tool.is_some() {
            RecordTool::Vmemsim
        } else {
            RecordTool::Lackey
        },
    })
}

/// In the child, before exec: a process group of its own (made the
/// terminal's foreground group when `hand_terminal`), killed if the
/// recorder's thread dies.
fn in_child_before_exec(hand_terminal: bool) {
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
struct Terminal {
    /// The recorder's process group, to give the terminal back to.
    pgrp: libc::pid_t,
}

impl Terminal {
    /// `Some` when standard input is a terminal whose foreground group is ours.
    fn foreground() -> Option<Terminal> {
        // SAFETY: plain queries of this process and its standard input.
        unsafe {
            let pgrp = libc::getpgrp();
            (libc::isatty(libc::STDIN_FILENO) == 1 && libc::tcgetpgrp(libc::STDIN_FILENO) == pgrp)
                .then_some(Terminal { pgrp })
        }
    }

    /// Make the recorder's group the foreground again.
    fn take_back(self) {
        with_sigttou_blocked(|| {
            // SAFETY: tcsetpgrp(3) on standard input to our own group.
            unsafe { libc::tcsetpgrp(libc::STDIN_FILENO, self.pgrp) };
        });
    }
}

/// A process that kills the recorded program's process group when the
/// recorder dies without dismissing it (SIGKILL, a crash): it waits on a
/// pipe whose only writer is the recorder.
struct Watchdog {
    pid: libc::pid_t,
    /// The pipe's write end; closed by a normal goodbye or by death.
    tx: Option<std::os::fd::OwnedFd>,
}

impl Watchdog {
    /// Start one for process group `group` (none when `group` is 0 or
    /// fork fails: the recording goes on, only unguarded).
    fn start(group: libc::pid_t) -> Watchdog {
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
    fn dismiss(mut self) {
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

/// `PID.SEQ` (a log's name) -> `(PID, SEQ)`.
fn log_name(name: &str) -> Option<(u32, u32)> {
    let (pid, seq) = name.split_once('.')?;
    Some((pid.parse().ok()?, seq.parse().ok()?))
}

/// The watcher: takes each new log (a pipe from `listener`, or a file that
/// appeared in `dir`: opened and unlinked), and starts one reader thread
/// per log.
fn watch(
    dir: &Path,
    listener: Option<&pipes::Listener>,
    tx: &SyncSender<Msg>,
    shared: &Arc<Shared>,
) {
    let mut next_id = 0usize;
    let mut latest: HashMap<u32, Arc<AtomicBool>> = HashMap::new();
    let mut handles = Vec::new();
    let mut piped: Vec<pipes::LogPipe> = Vec::new();
    loop {
        // Read the flags before scanning, so a file created after the last
        // reader ended is still seen by this final scan.
        let quiet =
            shared.root_done.load(Ordering::SeqCst) && shared.readers.load(Ordering::SeqCst) == 0;
        let aborting = shared.abort.load(Ordering::SeqCst);
        // Pipes in the order their `open`s happened.
        let mut found: Vec<(u32, File, PathBuf)> = Vec::new();
        for p in piped.drain(..) {
            if let Some((pid, _)) = log_name(&p.name) {
                shared.log_pipes.fetch_add(1, Ordering::SeqCst);
                found.push((pid, p.read, dir.join(&p.name)));
            }
        }
        let mut files: Vec<(u32, u32, PathBuf)> = Vec::new();
        if let Ok(rd) = std::fs::read_dir(dir) {
            for entry in rd.flatten() {
                if let Some((pid, seq)) = log_name(&entry.file_name().to_string_lossy()) {
                    files.push((pid, seq, entry.path()));
                }
            }
        }
        // A forked child's pre-exec log (`PID.k`, k >= 2) comes before the
        // log of the image it exec'd (`PID.1`).
        files.sort_by_key(|&(pid, seq, _)| (pid, if seq == 1 { u32::MAX } else { seq }));
        for (pid, _seq, path) in files {
            if let Ok(file) = File::open(&path) {
                let _ = std::fs::remove_file(&path);
                shared.log_files.fetch_add(1, Ordering::SeqCst);
                found.push((pid, file, path));
            }
        }
        let none_new = found.is_empty();
        // Announce every new stream before any of their readers starts, so
        // the writer knows all traced parents before a child's preamble.
        let mut opened = Vec::with_capacity(found.len());
        for (pid, file, path) in found {
            let id = next_id;
            next_id += 1;
            let superseded = Arc::new(AtomicBool::new(false));
            if let Some(old) = latest.insert(pid, Arc::clone(&superseded)) {
                old.store(true, Ordering::SeqCst);
            }
            if tx.send(Msg::Stream { id, pid }).is_err() {
                return;
            }
            shared.readers.fetch_add(1, Ordering::SeqCst);
            opened.push((id, pid, file, path, superseded));
        }
        for (id, pid, file, path, superseded) in opened {
            let tx = tx.clone();
            let shared = Arc::clone(shared);
            handles.push(thread::spawn(move || {
                let followed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    follow(id, pid, file, &path, &superseded, &shared, &tx)
                }));
                let error = match followed {
                    Ok(r) => r.err(),
                    Err(_) => Some(TraceError::io(
                        &path,
                        std::io::Error::other("log reader panicked"),
                    )),
                };
                let _ = tx.send(Msg::End { id, error });
                shared.readers.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        if none_new && (quiet || (aborting && shared.readers.load(Ordering::SeqCst) == 0)) {
            break;
        }
        match listener {
            // Answers each log `open` at once (the process waits in it);
            // the directory needs scanning often only once a log is a file.
            Some(l) => {
                let wait = if l.let_a_file_through() {
                    FILE_SCAN_EVERY
                } else {
                    PIPES_ONLY_SCAN_EVERY
                };
                l.serve(wait, &mut piped);
            }
            None => thread::sleep(FILE_SCAN_EVERY),
        }
    }
    for h in handles {
        let _ = h.join();
    }
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let Some(close) = stat.iter().rposition(|&b| b == b')') else {
                return true;
            };
            !matches!(stat.get(close + 2), Some(b'Z') | Some(b'X'))
        }
        Err(_) => false,
    }
}

/// Follow one log file to its end, sending parsed batches.
///
/// Reads in chunks of up to [`READ_BYTES`]; a reader that has caught up
/// with Valgrind sleeps [`CAUGHT_UP_SLEEP`] before reading again, so the
/// text costs a few system calls per megabyte rather than one per wake-up.
/// When the stream has ended (see the module documentation) the file is
/// read once more to its end, so nothing written before is missed.
fn follow(
    id: usize,
    pid: u32,
    mut file: File,
    path: &Path,
    superseded: &AtomicBool,
    shared: &Shared,
    tx: &SyncSender<Msg>,
) -> Result<(), TraceError> {
    let mut parser = LineParser::new(Some(pid)).with_files(Arc::clone(&shared.files));
    let mut buf = vec![0u8; READ_BYTES];
    let (mut start, mut end) = (0usize, 0usize);
    let mut file_pos = 0u64; // file offset of buf[0]
    let mut punched = 0u64;
    let mut line_no = 0u64;
    let mut batch: Vec<Record> = Vec::with_capacity(BATCH_RECORDS);
    let mut sent_info = false;
    let mut last_pass = false;
    let mut alive_checked = Instant::now();
    let fd = file.as_raw_fd();
    let meta = file.metadata().ok();
    let is_pipe = meta.as_ref().is_some_and(|m| m.file_type().is_fifo());
    let mut punch_ok = !is_pipe && meta.is_some_and(|m| m.nlink() <= 1);
    // A small pipe (the 1 MiB asked for was refused) fills sooner.
    // SAFETY: F_GETPIPE_SZ on our own descriptor.
    let small_pipe = is_pipe && unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) } < pipes::PIPE_BYTES;
    let caught_up_sleep = if small_pipe {
        Duration::from_millis(1)
    } else {
        CAUGHT_UP_SLEEP
    };
    // Every writer of the pipe closed it.
    let mut pipe_ended = false;
    let send = |batch: &mut Vec<Record>| -> bool {
        if batch.is_empty() {
            return true;
        }
        let records = std::mem::replace(batch, Vec::with_capacity(BATCH_RECORDS));
        tx.send(Msg::Batch { id, records }).is_ok()
    };
    loop {
        if end == buf.len() {
            // The unparsed tail is shorter than a line may be (checked
            // below), so it is not the whole buffer: move it to the front.
            buf.copy_within(start..end, 0);
            file_pos += start as u64;
            end -= start;
            start = 0;
        }
        let n = match file.read(&mut buf[end..]) {
            Ok(0) if is_pipe => {
                pipe_ended = true;
                0
            }
            Ok(n) => n,
            // An empty pipe (its read end is non-blocking).
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(TraceError::io(path, e)),
        };
        if n == 0 {
            if !send(&mut batch) {
                return Ok(());
            }
            if last_pass {
                break;
            }
            let mut done = pipe_ended
                || parser.is_closed()
                || superseded.load(Ordering::SeqCst)
                || shared.abort.load(Ordering::SeqCst);
            if !done && alive_checked.elapsed() >= ALIVE_CHECK_EVERY {
                alive_checked = Instant::now();
                done = !alive(pid);
            }
            if done {
                // Read once more: everything written before the writer went
                // away is in the file now.
                last_pass = true;
                continue;
            }
            thread::sleep(caught_up_sleep);
            continue;
        }
        end += n;
        loop {
            if sent_info {
                // The bulk of the text: plain access lines in one pass.
                let (used, lines) =
                    parser.parse_access_lines(&buf[start..end], &mut batch, BATCH_RECORDS);
                start += used;
                line_no += lines;
                if batch.len() >= BATCH_RECORDS {
                    if !send(&mut batch) {
                        return Ok(());
                    }
                    continue;
                }
            }
            // Anything else, one line at a time.
            let Some(nl) = memchr::memchr(b'\n', &buf[start..end]) else {
                break;
            };
            let line = &buf[start..start + nl];
            line_no += 1;
            parser
                .parse_line(line, &mut batch)
                .map_err(|what| malformed(path, line_no, what, line))?;
            // The preamble is `Command:` then `Parent PID:`; announce the
            // process once both are in (or the preamble is over).
            if !sent_info
                && parser.has_preamble()
                && (parser.process_info().parent.is_some() || line.first() != Some(&b'='))
            {
                sent_info = true;
                let info = parser.process_info();
                if !send(&mut batch) || tx.send(Msg::Info { id, info }).is_err() {
                    return Ok(());
                }
            }
            start += nl + 1;
            if batch.len() >= BATCH_RECORDS && !send(&mut batch) {
                return Ok(());
            }
        }
        if end - start > MAX_LINE_BYTES {
            return Err(malformed(
                path,
                line_no + 1,
                "expected a line shorter than 1 MiB",
                &buf[start..start + 80],
            ));
        }
        let consumed = file_pos + start as u64;
        if punch_ok && consumed.saturating_sub(punched) >= PUNCH_EVERY_BYTES {
            let upto = consumed & !((1 << 20) - 1);
            // SAFETY: fallocate(2) on a file descriptor we own; it only
            // frees bytes we have already read.
            let r = unsafe {
                libc::fallocate(
                    fd,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    0,
                    upto as libc::off_t,
                )
            };
            punched = upto;
            // Unsupported here (some file systems): keep the bytes.
            punch_ok = r == 0;
        }
        if shared.abort.load(Ordering::SeqCst) && last_pass {
            break;
        }
        if n < SHORT_READ_BYTES && !last_pass {
            // Caught up: let Valgrind write a larger chunk first.
            thread::sleep(caught_up_sleep);
        }
    }
    if start < end {
        // A last line without its newline (a process killed mid-write).
        // Ignored if it does not parse: it was cut off.
        let _ = parser.parse_line(&buf[start..end], &mut batch);
    }
    parser.finish(&mut batch);
    send(&mut batch);
    Ok(())
}

/// One log stream in the writer.
struct StreamState {
    pid: u32,
    ended: bool,
    /// Records waiting until the stream becomes active.
    held: Vec<Record>,
    info: Option<ProcessInfo>,
    /// The process-table entry of this stream was written.
    announced: bool,
}

/// One process in the writer.
#[derive(Default)]
struct ProcState {
    /// Its streams in creation order; the front one is the current one.
    streams: VecDeque<usize>,
    /// Its records may be written: it is the root, or its parent's `Fork`
    /// event was written.
    released: bool,
    /// Parent from the fork event.
    parent: Option<u32>,
}

/// Puts the streams in a causal order and writes them.
struct Order<'k> {
    root_pid: u32,
    streams: HashMap<usize, StreamState>,
    procs: HashMap<u32, ProcState>,
    /// Pids that appeared in any stream (to tell traced parents apart).
    seen: HashSet<u32>,
    keep: Option<&'k mut Vec<Record>>,
    errors: Vec<TraceError>,
}

impl<'k> Order<'k> {
    fn new(root_pid: u32, keep: Option<&'k mut Vec<Record>>) -> Self {
        Order {
            root_pid,
            streams: HashMap::new(),
            procs: HashMap::new(),
            seen: HashSet::new(),
            keep,
            errors: Vec::new(),
        }
    }

    fn handle(&mut self, msg: Msg, w: &mut vmt::Writer) -> Result<(), TraceError> {
        match msg {
            Msg::Stream { id, pid } => {
                self.streams.insert(
                    id,
                    StreamState {
                        pid,
                        ended: false,
                        held: Vec::new(),
                        info: None,
                        announced: false,
                    },
                );
                self.seen.insert(pid);
                let root = pid == self.root_pid;
                let p = self.procs.entry(pid).or_default();
                p.streams.push_back(id);
                if root {
                    p.released = true;
                }
                self.advance(pid, w)?;
            }
            Msg::Info { id, info } => {
                let pid = match self.streams.get_mut(&id) {
                    Some(s) => {
                        s.info = Some(info.clone());
                        s.pid
                    }
                    None => return Ok(()),
                };
                // A process whose parent is not traced has no fork event.
                let untraced_parent = match info.parent {
                    Some(pp) => !self.seen.contains(&pp),
                    None => true,
                };
                if let Some(p) = self.procs.get_mut(&pid) {
                    if untraced_parent && !p.released && pid != self.root_pid {
                        p.released = true;
                    }
                }
                self.advance(pid, w)?;
            }
            Msg::Batch { id, records } => {
                if self.is_active(id) {
                    self.write(&records, w)?;
                } else if let Some(s) = self.streams.get_mut(&id) {
                    s.held.extend(records);
                }
            }
            Msg::End { id, error } => {
                if let Some(e) = error {
                    self.errors.push(e);
                }
                let Some(s) = self.streams.get_mut(&id) else {
                    return Ok(());
                };
                s.ended = true;
                let pid = s.pid;
                self.advance(pid, w)?;
            }
        }
        Ok(())
    }

    fn is_active(&self, id: usize) -> bool {
        let Some(s) = self.streams.get(&id) else {
            return false;
        };
        match self.procs.get(&s.pid) {
            Some(p) => p.released && p.streams.front() == Some(&id) && s.announced,
            None => false,
        }
    }

    /// Make the current stream of `pid` active if it may be: announce the
    /// process, write held records, move past ended streams.
    fn advance(&mut self, pid: u32, w: &mut vmt::Writer) -> Result<(), TraceError> {
        {
            while let Some(p) = self.procs.get(&pid) {
                if !p.released {
                    break;
                }
                let Some(&id) = p.streams.front() else { break };
                let fork_parent = p.parent;
                let Some(s) = self.streams.get_mut(&id) else {
                    break;
                };
                if !s.announced {
                    // Wait for the preamble unless the stream already ended.
                    let Some(info) = s.info.clone().or_else(|| {
                        s.ended.then(|| ProcessInfo {
                            pid,
                            ..Default::default()
                        })
                    }) else {
                        break;
                    };
                    s.announced = true;
                    let parent = if pid == self.root_pid {
                        None
                    } else {
                        fork_parent.or(info.parent)
                    };
                    w.add_process(ProcessInfo {
                        pid,
                        parent,
                        command: info.command,
                    });
                }
                let held = std::mem::take(&mut s.held);
                let ended = s.ended;
                self.write(&held, w)?;
                if !ended {
                    break;
                }
                self.streams.remove(&id);
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.streams.pop_front();
                }
            }
        }
        Ok(())
    }

    /// Write records; a written fork event lets the child's streams advance.
    fn write(&mut self, records: &[Record], w: &mut vmt::Writer) -> Result<(), TraceError> {
        let events_before = w.events_written();
        w.push_all(records)?;
        let mut children = Vec::new();
        // Most batches are accesses only: look for forks only in the others.
        let events = w.events_written() != events_before;
        for r in records.iter().filter(|_| events) {
            if let Record::Event(e) = r {
                let (pid, ProcEvent::Fork { child }) = (&e.pid, &e.kind) else {
                    continue;
                };
                let c = self.procs.entry(*child).or_default();
                c.released = true;
                c.parent = Some(*pid);
                children.push(*child);
            }
        }
        if let Some(k) = self.keep.as_deref_mut() {
            k.extend_from_slice(records);
        }
        for c in children {
            self.advance(c, w)?;
        }
        Ok(())
    }

    /// At the end: write whatever is still held, process by process in
    /// stream order (a child whose fork was never seen, for example).
    fn flush_all(&mut self, w: &mut vmt::Writer) -> Result<(), TraceError> {
        let mut ids: Vec<usize> = self.streams.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            s.ended = true;
            let pid = s.pid;
            if let Some(p) = self.procs.get_mut(&pid) {
                p.released = true;
            }
            self.advance(pid, w)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_log_dir_removes_those_of_dead_recorders_only() {
        let base = std::env::temp_dir().join(format!("vmemsim-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        // A PID that has just exited: a child we waited for (not reused
        // this fast: Linux hands out PIDs in increasing order).
        let dead = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        let mut dead = dead;
        dead.wait().unwrap();
        let stale = base.join(format!("vmemsim-record-{dead_pid}-1a2b-0"));
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(stale.join("123.1"), b"log").unwrap();
        let live = base.join(format!("vmemsim-record-{}-1a2b-0", std::process::id()));
        std::fs::create_dir_all(&live).unwrap();
        let other = base.join("vmemsim-record-notapid");
        std::fs::create_dir_all(&other).unwrap();
        let made = make_log_dir_in(&base).unwrap();
        assert!(!stale.exists(), "the dead recorder's directory stays");
        assert!(live.exists() && other.exists() && made.exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
