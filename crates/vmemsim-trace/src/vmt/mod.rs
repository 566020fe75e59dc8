//! The vmemsim trace format (`.vmt`): a versioned header, zstd-compressed
//! blocks of compactly encoded records, and a footer with an index and
//! counts so that [`crate::info`] need not decode the records.
//!
//! The byte layout is specified in `docs/trace-format.md`. In short:
//!
//! ```text
//! header   magic(8) version(u16) flags(u16) exit_code(i32) creator_len(u16) creator
//! block*   'B' comp_len(u32) records(u32) raw_len(u32) zstd-frame(comp_len)
//! footer   'F' body_len(u32) body
//! trailer  footer_offset(u64) "VMTFOOT\n"
//! ```
//!
//! Inside a block every entry is one tag byte (access kind, size code,
//! prediction base and delta length) and the bytes after it; the block's
//! payload holds all tags first, then all those bytes (version 2), so the
//! decoder finds the next tag without waiting for this entry's length. A
//! sequential instruction fetch costs one tag byte before compression.
//! Addresses are zigzag fixed-width deltas (0, 1, 2 or 4 bytes) from a
//! per-process prediction (fetch: end of the previous fetch; data: one of
//! two recent data addresses). Process switches, events, process-table
//! entries and unusual sizes are rare escape tags. The prediction state is
//! reset at every block, so blocks decode independently.
//!
//! The [`Writer`] writes `PATH.partial` and renames it to `PATH` only in
//! [`Writer::finish`]; a crashed recording leaves only the `.partial` file,
//! which the [`Reader`] still reads up to its last whole block.
//!
//! Layout: this file holds the format's constants and the public types of
//! header and footer; `codec` the entry encoding (tags, varints, address
//! prediction, the decoders' hot loop), `writer` and `reader` the two
//! directions, `footer` the footer's bytes and the trailer.

use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use std::collections::HashMap;
use std::sync::Arc;

use crate::record::{
    Access, AccessKind, Event, FileId, Fingerprint, MappedFile, ProcEvent, ProcessInfo, Record,
    RecordSource,
};
use crate::TraceError;

mod codec;
mod footer;
mod reader;
#[cfg(test)]
mod tests;
mod writer;

use codec::*;
use footer::*;
pub(crate) use reader::read_full;
pub use reader::Reader;
pub use writer::Writer;

/// The 8 magic bytes at the start of every `.vmt` file.
pub const MAGIC: [u8; 8] = *b"\x89VMT\r\n\x1a\n";
/// The format version this crate writes. Version 3 adds the mapped file
/// (path, offset, fingerprint) to `mmap` events and a table of mapped files
/// to the footer.
pub const VERSION: u16 = 3;
/// The oldest version this crate reads (version 2: mmap events without
/// files; its traces read as if no mapping named a file).
pub const MIN_VERSION: u16 = 2;
/// Longest path stored for a mapped file, in bytes (longer ones are cut).
pub const MAX_PATH: usize = 4096;
/// The 8 bytes that end a file with a footer.
pub const TRAILER_MAGIC: [u8; 8] = *b"VMTFOOT\n";
/// Default number of records per block.
pub const DEFAULT_BLOCK_RECORDS: u32 = 1 << 16;

/// Header flag: the recording finished and the recorded program exited.
pub const FLAG_COMPLETE: u16 = 1;
/// Header flag: the recording was stopped early (see the footer's reason).
pub const FLAG_TRUNCATED: u16 = 2;
/// Header flag: the exit code field is valid.
pub const FLAG_EXIT_CODE: u16 = 4;

/// Names of the access kinds, indexed by `AccessKind as usize`.
pub const ACCESS_KIND_NAMES: [&str; 4] = ["fetch", "load", "store", "modify"];
/// Names of the event kinds, indexed by [`event_index`].
pub const EVENT_KIND_NAMES: [&str; 7] =
    ["fork", "exec", "mmap", "munmap", "brk", "mprotect", "exit"];

/// Index of an event kind in [`EVENT_KIND_NAMES`].
pub fn event_index(e: &ProcEvent) -> usize {
    match e {
        ProcEvent::Fork { .. } => 0,
        ProcEvent::Exec => 1,
        ProcEvent::Mmap { .. } => 2,
        ProcEvent::Munmap { .. } => 3,
        ProcEvent::Brk { .. } => 4,
        ProcEvent::Mprotect { .. } => 5,
        ProcEvent::Exit { .. } => 6,
    }
}

/// How a recording ended, given to [`Writer::finish`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinishStatus {
    /// The recorded program ran to its end.
    Complete {
        /// Its exit code (128 + signal when killed), `None` when not known
        /// (for example a trace converted from a format without it).
        exit_code: Option<i32>,
    },
    /// The recording was stopped early (record limit, interrupt, ...).
    Truncated {
        /// Why, for the user.
        reason: String,
    },
}

/// What [`Writer::finish`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteSummary {
    /// Processes in the process table.
    pub processes: usize,
    /// Memory accesses written.
    pub accesses: u64,
    /// Process events written.
    pub events: u64,
    /// Size of the file in bytes.
    pub bytes_written: u64,
}

impl WriteSummary {
    /// File bytes per access (0 when there are no accesses).
    pub fn bytes_per_access(&self) -> f64 {
        bytes_per_access(self.bytes_written, self.accesses)
    }
}

/// `bytes` over `accesses` (0 when there are no accesses): a trace's
/// size per access, as the writer, the recorder and `info` report it.
pub(crate) fn bytes_per_access(bytes: u64, accesses: u64) -> f64 {
    if accesses == 0 {
        0.0
    } else {
        bytes as f64 / accesses as f64
    }
}

impl fmt::Display for WriteSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} processes, {} accesses, {} events, {} bytes ({:.3} bytes/access)",
            self.processes,
            self.accesses,
            self.events,
            self.bytes_written,
            self.bytes_per_access()
        )
    }
}

/// Counts kept in the footer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Accesses by kind, indexed by `AccessKind as usize`.
    pub accesses: [u64; 4],
    /// Events by kind, indexed by [`event_index`].
    pub events: [u64; 7],
    /// Distinct (pid, 4 KiB virtual page) pairs touched by accesses.
    pub footprint_pages: u64,
}

impl Counts {
    /// All accesses (saturating at `u64::MAX`: a footer read from a file
    /// may hold any numbers; the reader rejects sums that overflow).
    pub fn total_accesses(&self) -> u64 {
        self.accesses.iter().fold(0, |a, &b| a.saturating_add(b))
    }
    /// All events (saturating, as [`Counts::total_accesses`]).
    pub fn total_events(&self) -> u64 {
        self.events.iter().fold(0, |a, &b| a.saturating_add(b))
    }
    /// All records (accesses and events), `None` when the sum overflows `u64`.
    pub fn checked_total(&self) -> Option<u64> {
        self.accesses
            .iter()
            .chain(&self.events)
            .try_fold(0u64, |a, &b| a.checked_add(b))
    }
}

/// The fixed header of a `.vmt` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version.
    pub version: u16,
    /// `FLAG_*` bits.
    pub flags: u16,
    /// Recorded exit code; meaningful when `flags & FLAG_EXIT_CODE`.
    pub exit_code: i32,
    /// The program that wrote the file.
    pub creator: String,
}

impl Header {
    /// The recorded exit code, if the recording completed with one.
    pub fn exit_status(&self) -> Option<i32> {
        (self.flags & FLAG_EXIT_CODE != 0).then_some(self.exit_code)
    }
    /// True when the writer finished with [`FinishStatus::Complete`].
    pub fn is_complete(&self) -> bool {
        self.flags & FLAG_COMPLETE != 0
    }
    /// True when the writer finished with [`FinishStatus::Truncated`].
    pub fn is_truncated(&self) -> bool {
        self.flags & FLAG_TRUNCATED != 0
    }
}

/// One entry of the block index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockIndex {
    /// File offset of the block's `'B'` tag, in bytes.
    pub offset: u64,
    /// Records (accesses and events) in the block.
    pub records: u32,
}

/// One file of the footer's table of mapped files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileUse {
    /// The file.
    pub file: FileId,
    /// File-backed `mmap` events that mapped it.
    pub mmaps: u64,
}

/// The footer: index, counts and process table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Footer {
    /// Truncation reason (empty unless truncated).
    pub reason: String,
    /// Counts of all records in the file.
    pub counts: Counts,
    /// Every block, in file order.
    pub blocks: Vec<BlockIndex>,
    /// Final process table.
    pub processes: Vec<ProcessInfo>,
    /// Every file mapped, in order of its first mapping; `None` in a
    /// version 2 file (which recorded none).
    pub files: Option<Vec<FileUse>>,
}

pub(super) fn malformed(path: &Path, at: String, what: String) -> TraceError {
    TraceError::Malformed {
        path: path.to_path_buf(),
        at,
        what,
    }
}

/// Path of the in-progress file for `path`: `PATH.partial`.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}
