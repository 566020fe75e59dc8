//! Snapshots of what a live process's pages hold: for each present page,
//! its VMA, the file the VMA maps (path, offset, fingerprint) and a 64-bit
//! hash of its 4 KiB of contents. The input that lets sharing experiments
//! run on the contents of real programs (docs/sharing.md).
//!
//! Read from procfs (proc(5)): `/proc/PID/maps` (the VMAs),
//! `/proc/PID/pagemap` (bit 63: the page is present in RAM; bit 62:
//! swapped) and `/proc/PID/mem` (the bytes). Reading another process's
//! `mem` needs ptrace access to it (`PTRACE_MODE_ATTACH`): the same user
//! and, with Yama's `kernel.yama.ptrace_scope` = 1 (the default of many
//! distributions), being its tracer or having `CAP_SYS_PTRACE` (root).
//! [`run_and_snapshot`] runs the program as its tracer, so that works for
//! any user; [`snapshot_pid`] of an unrelated process needs root or
//! `ptrace_scope` = 0. Without access the error says so.
//!
//! Page hashes: an all-zero page hashes to 0 (the model's zero content);
//! any other page to its XXH3-64 (never 0 or `u64::MAX`, which the model
//! reserves). Pages not present (never touched, or swapped out) are not
//! listed. VMAs that cannot be read (`[vvar]`, `[vsyscall]`, device
//! mappings) are listed without pages and counted in `unreadable_vmas`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::record::Fingerprint;
use crate::TraceError;

/// Name in every snapshot file's `format` field.
pub const FORMAT: &str = "vmemsim-snapshot";
/// Version of the snapshot file format.
pub const SNAPSHOT_VERSION: u32 = 1;

const PAGE: u64 = 4096;

/// A snapshot file: one or more snapshots of one program, in time order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`SNAPSHOT_VERSION`].
    pub version: u32,
    /// What was snapshot (the command line, or `pid N`).
    pub source: String,
    /// The snapshots, oldest first.
    pub snapshots: Vec<Snapshot>,
}

/// One process at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Milliseconds since the snapshotting started.
    pub time_ms: u64,
    /// Process id.
    pub pid: u32,
    /// Why it was taken: `at exit`, `periodic`, `now`.
    pub when: String,
    /// Every VMA, in address order.
    pub vmas: Vec<SnapVma>,
    /// VMAs whose contents could not be read.
    pub unreadable_vmas: u64,
}

/// One VMA of a snapshot and its present pages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapVma {
    /// First byte (page aligned).
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// Permissions as in `maps` (`r-xp`).
    pub perms: String,
    /// Offset in the mapped file of `start` (0 for anonymous mappings).
    pub offset: u64,
    /// The path `maps` shows (a file, or `[heap]`, `[stack]`...; `None`
    /// for an anonymous mapping).
    pub path: Option<String>,
    /// Fingerprint of the mapped file (same as `.vmt` version 3), when it
    /// is a regular file that could be read.
    pub fingerprint: Option<Fingerprint>,
    /// Present pages: (page index from `start`, content hash).
    pub pages: Vec<(u64, u64)>,
}

impl SnapVma {
    /// True when the VMA maps a regular file.
    pub fn is_file(&self) -> bool {
        self.path.as_deref().is_some_and(|p| p.starts_with('/'))
    }
}

impl Snapshot {
    /// Present pages in all VMAs.
    pub fn present_pages(&self) -> u64 {
        self.vmas.iter().map(|v| v.pages.len() as u64).sum()
    }
    /// Present pages whose content is all zero.
    pub fn zero_pages(&self) -> u64 {
        self.vmas
            .iter()
            .flat_map(|v| &v.pages)
            .filter(|p| p.1 == 0)
            .count() as u64
    }
}

/// The content hash of one page (0 for all zeros).
pub fn page_hash(page: &[u8]) -> u64 {
    if page.iter().all(|&b| b == 0) {
        return 0;
    }
    match xxhash_rust::xxh3::xxh3_64(page) {
        0 => 1,
        u64::MAX => u64::MAX - 1,
        h => h,
    }
}

fn io(path: &Path, e: std::io::Error) -> TraceError {
    if matches!(e.kind(), std::io::ErrorKind::PermissionDenied)
        || e.raw_os_error() == Some(libc::EPERM)
    {
        return TraceError::io(
            path,
            std::io::Error::new(
                e.kind(),
                format!(
                    "{e}: reading another process's memory needs ptrace access to it \
                     (the same user, and with kernel.yama.ptrace_scope = 1 being its \
                     tracer or root/CAP_SYS_PTRACE); `vmemsim snapshot -- CMD` runs the \
                     program as its tracer and needs no privilege"
                ),
            ),
        );
    }
    TraceError::io(path, e)
}

/// One line of `/proc/PID/maps`.
fn parse_maps_line(line: &str) -> Option<(u64, u64, String, u64, Option<String>)> {
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let perms = it.next()?.to_string();
    let offset = u64::from_str_radix(it.next()?, 16).ok()?;
    let _dev = it.next()?;
    let _inode = it.next()?;
    let path = it.next().map(str::trim).filter(|p| !p.is_empty());
    let (s, e) = range.split_once('-')?;
    Some((
        u64::from_str_radix(s, 16).ok()?,
        u64::from_str_radix(e, 16).ok()?,
        perms,
        offset,
        path.map(str::to_string),
    ))
}

/// Snapshot process `pid` now.
///
/// # Errors
/// [`TraceError::Io`] naming the procfs file that cannot be read, with
/// what access is needed when it is a permission error.
pub fn snapshot_pid(pid: u32, when: &str, time_ms: u64) -> Result<Snapshot, TraceError> {
    let base = PathBuf::from(format!("/proc/{pid}"));
    let maps_path = base.join("maps");
    let maps = std::fs::read_to_string(&maps_path).map_err(|e| io(&maps_path, e))?;
    let pm_path = base.join("pagemap");
    let mut pagemap = File::open(&pm_path).map_err(|e| io(&pm_path, e))?;
    let mem_path = base.join("mem");
    let mut mem = File::open(&mem_path).map_err(|e| io(&mem_path, e))?;
    let mut vmas = Vec::new();
    let mut unreadable = 0;
    let mut entries = Vec::new();
    let mut page = vec![0u8; PAGE as usize];
    let mut fingerprints: std::collections::HashMap<String, Option<Fingerprint>> =
        std::collections::HashMap::new();
    for line in maps.lines() {
        let Some((start, end, perms, offset, path)) = parse_maps_line(line) else {
            continue;
        };
        let fingerprint = match path.as_deref() {
            Some(p) if p.starts_with('/') => {
                *fingerprints.entry(p.to_string()).or_insert_with(|| {
                    let meta = std::fs::metadata(p).ok().filter(|m| m.is_file())?;
                    crate::lackey::fingerprint_file(Path::new(p), meta.len())
                })
            }
            _ => None,
        };
        let mut v = SnapVma {
            start,
            end,
            perms,
            offset,
            path,
            fingerprint,
            pages: Vec::new(),
        };
        let n = (end.saturating_sub(start) / PAGE) as usize;
        entries.resize(n * 8, 0u8);
        let readable = v.perms.starts_with('r')
            && pagemap.seek(SeekFrom::Start(start / PAGE * 8)).is_ok()
            && pagemap.read_exact(&mut entries).is_ok();
        if !readable {
            unreadable += 1;
            vmas.push(v);
            continue;
        }
        let mut failed = false;
        for i in 0..n {
            let e = u64::from_le_bytes(entries[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            if e >> 63 == 0 {
                continue;
            }
            let va = start + i as u64 * PAGE;
            let ok = mem.seek(SeekFrom::Start(va)).is_ok() && mem.read_exact(&mut page).is_ok();
            if !ok {
                failed = true;
                break;
            }
            v.pages.push((i as u64, page_hash(&page)));
        }
        if failed {
            v.pages.clear();
            unreadable += 1;
        }
        vmas.push(v);
    }
    if vmas.iter().all(|v| v.pages.is_empty()) && !vmas.is_empty() {
        // Not one page readable: almost surely no access to `mem`.
        let mut probe = [0u8; 1];
        let first = vmas
            .iter()
            .find(|v| v.perms.starts_with('r'))
            .map(|v| v.start);
        if let Some(va) = first {
            if let Err(e) = mem
                .seek(SeekFrom::Start(va))
                .and_then(|_| mem.read(&mut probe))
            {
                return Err(io(&mem_path, e));
            }
        }
    }
    Ok(Snapshot {
        time_ms,
        pid,
        when: when.to_string(),
        vmas,
        unreadable_vmas: unreadable,
    })
}

/// Snapshot process `pid` now, then, with `every`, again every period
/// until it exits.
///
/// # Errors
/// As [`snapshot_pid`] for the first snapshot (later ones stop quietly
/// when the process is gone).
pub fn watch_pid(pid: u32, every: Option<Duration>) -> Result<SnapshotFile, TraceError> {
    let t0 = Instant::now();
    let mut snaps = vec![snapshot_pid(pid, "now", 0)?];
    if let Some(d) = every {
        loop {
            std::thread::sleep(d);
            match snapshot_pid(pid, "periodic", t0.elapsed().as_millis() as u64) {
                Ok(s) => snaps.push(s),
                Err(_) => break,
            }
        }
    }
    Ok(SnapshotFile {
        format: FORMAT.into(),
        version: SNAPSHOT_VERSION,
        source: format!("pid {pid}"),
        snapshots: snaps,
    })
}

/// Run `command` as its tracer (ptrace), snapshot it every `every` while
/// it runs (if given) and when it exits (stopped at `exit_group` by
/// `PTRACE_O_TRACEEXIT`, its memory still whole). Only the program's
/// first process is snapshot (not its children). Returns the snapshots
/// and the program's exit status (128 + signal when killed).
///
/// # Errors
/// The program cannot be started, or a snapshot fails.
pub fn run_and_snapshot(
    command: &[std::ffi::OsString],
    every: Option<Duration>,
) -> Result<(SnapshotFile, i32), TraceError> {
    use std::os::unix::process::CommandExt;
    let (prog, args) = command.split_first().ok_or_else(|| {
        TraceError::io(
            Path::new("-"),
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "no command given"),
        )
    })?;
    let mut cmd = std::process::Command::new(prog);
    cmd.args(args);
    // SAFETY: PTRACE_TRACEME is async-signal-safe; called between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| TraceError::io(Path::new(prog), e))?;
    let pid = child.id() as libc::pid_t;
    let t0 = Instant::now();
    let mut snaps = Vec::new();
    let mut status = 0;
    // The child stops with SIGTRAP after its exec.
    // SAFETY: waitpid/ptrace on our own child.
    unsafe {
        libc::waitpid(pid, &mut status, 0);
        libc::ptrace(
            libc::PTRACE_SETOPTIONS,
            pid,
            0,
            libc::PTRACE_O_TRACEEXIT as libc::c_long,
        );
        libc::ptrace(libc::PTRACE_CONT, pid, 0, 0);
    }
    let mut next = every.map(|d| t0 + d);
    let exit_code;
    loop {
        // SAFETY: as above.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            if libc::WIFEXITED(status) {
                exit_code = libc::WEXITSTATUS(status);
                break;
            }
            if libc::WIFSIGNALED(status) {
                exit_code = 128 + libc::WTERMSIG(status);
                break;
            }
            if libc::WIFSTOPPED(status) {
                let sig = libc::WSTOPSIG(status);
                let event = (status >> 16) & 0xff;
                let mut forward = 0;
                if sig == libc::SIGTRAP && event == libc::PTRACE_EVENT_EXIT {
                    let ms = t0.elapsed().as_millis() as u64;
                    snaps.push(snapshot_pid(pid as u32, "at exit", ms)?);
                } else if sig != libc::SIGTRAP {
                    forward = sig;
                }
                // SAFETY: as above.
                unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, forward as libc::c_long) };
            }
            continue;
        }
        if r == -1 {
            return Err(TraceError::io(
                Path::new(prog),
                std::io::Error::last_os_error(),
            ));
        }
        if let (Some(at), Some(d)) = (next, every) {
            if Instant::now() >= at {
                if let Ok(s) = snapshot_pid(pid as u32, "periodic", t0.elapsed().as_millis() as u64)
                {
                    snaps.push(s);
                }
                next = Some(at + d);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let source = command
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    Ok((
        SnapshotFile {
            format: FORMAT.into(),
            version: SNAPSHOT_VERSION,
            source,
            snapshots: snaps,
        },
        exit_code,
    ))
}

/// Read a snapshot file.
///
/// # Errors
/// The file cannot be read, is not JSON of this shape, or has another
/// format name or version (named in the message).
pub fn read(path: &Path) -> Result<SnapshotFile, TraceError> {
    let text = std::fs::read(path).map_err(|e| TraceError::io(path, e))?;
    let f: SnapshotFile = serde_json::from_slice(&text).map_err(|e| TraceError::Malformed {
        path: path.to_path_buf(),
        at: format!("line {} column {}", e.line(), e.column()),
        what: format!("bad snapshot: {e}"),
    })?;
    if f.format != FORMAT || f.version != SNAPSHOT_VERSION {
        return Err(TraceError::Malformed {
            path: path.to_path_buf(),
            at: "format".into(),
            what: format!(
                "unknown version: {} version {}, expected {FORMAT} version {SNAPSHOT_VERSION}",
                f.format, f.version
            ),
        });
    }
    Ok(f)
}

/// The snapshot file as JSON bytes.
pub fn to_json(f: &SnapshotFile) -> Vec<u8> {
    serde_json::to_vec(f).expect("snapshot serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse() {
        let l = "7f1c2a000000-7f1c2a028000 r--p 00028000 08:01 1234   /usr/lib/x86_64-linux-gnu/libc.so.6";
        assert_eq!(
            parse_maps_line(l),
            Some((
                0x7f1c2a000000,
                0x7f1c2a028000,
                "r--p".into(),
                0x28000,
                Some("/usr/lib/x86_64-linux-gnu/libc.so.6".into())
            ))
        );
        let anon = "7ffd1000-7ffd2000 rw-p 00000000 00:00 0 ";
        assert_eq!(parse_maps_line(anon).unwrap().4, None);
    }

    #[test]
    fn zero_pages_hash_to_zero() {
        assert_eq!(page_hash(&[0u8; 4096]), 0);
        let mut p = [0u8; 4096];
        p[100] = 1;
        assert_ne!(page_hash(&p), 0);
    }
}
