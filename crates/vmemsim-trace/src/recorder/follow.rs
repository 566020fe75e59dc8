//! Following the logs: the watcher that takes each new log (a pipe or a
//! file) and the reader that parses one log as Valgrind writes it.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::{pipes, Msg, Shared};
use crate::lackey::{malformed, LineParser};
use crate::{Record, TraceError};

/// Records per batch sent from a stream reader to the writer.
const BATCH_RECORDS: usize = 1 << 16;
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

/// `PID.SEQ` (a log's name) -> `(PID, SEQ)`.
fn log_name(name: &str) -> Option<(u32, u32)> {
    let (pid, seq) = name.split_once('.')?;
    Some((pid.parse().ok()?, seq.parse().ok()?))
}

/// The watcher: takes each new log (a pipe from `listener`, or a file that
/// appeared in `dir`: opened and unlinked), and starts one reader thread
/// per log.
pub(super) fn watch(
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
