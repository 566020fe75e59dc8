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

const HEADER_FIXED: usize = 18;
const BLOCK_HEADER: usize = 13;
const TRAILER_LEN: u64 = 16;
/// Largest raw (decompressed) block the reader accepts, in bytes.
const MAX_RAW_BLOCK: usize = 64 << 20;
/// The writer closes a block when its raw payload reaches this many bytes.
const RAW_FLUSH: usize = 4 << 20;
/// Largest footer the reader accepts, in bytes.
const MAX_FOOTER: u64 = 1 << 30;
/// Longest command string stored in a process entry, in bytes.
const MAX_COMMAND: usize = 4096;
const ZSTD_LEVEL: i32 = 3;
/// Recently counted pages the writer remembers (a power of two).
const RECENT_PAGES: usize = 64;

/// Bytes of the fixed-width zigzag delta for each delta-length code
/// (tag bits 6-7) of an access with a table size.
const DELTA_BYTES: [usize; 4] = [0, 1, 2, 4];
/// Mask selecting those bytes from a little-endian 8-byte window.
const DELTA_MASK: [u64; 4] = [0, 0xff, 0xffff, 0xffff_ffff];
/// Zero bytes after a decoded payload, so the decoder can always read an
/// 8-byte window after a tag.
const PAD: usize = 8;
const TAG_EXPLICIT_SIZE: u8 = 0x00;
const TAG_PID: u8 = 0x40;
const TAG_EVENT: u8 = 0x80;
const TAG_PROCESS: u8 = 0xC0;

/// Access size of each 4-bit size code; code 0 is an escape.
const SIZE_OF_CODE: [u16; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 16, 32, 64];
const KINDS: [AccessKind; 4] = [
    AccessKind::Fetch,
    AccessKind::Load,
    AccessKind::Store,
    AccessKind::Modify,
];

/// Access size of each 3-bit data size code; code 0 is an escape.
const DATA_SIZE_OF_CODE: [u16; 8] = [0, 1, 2, 4, 8, 16, 32, 64];

/// What a tag byte says about an access entry.
#[derive(Clone, Copy)]
struct TagInfo {
    /// Access size; 0 marks an escape tag.
    size: u16,
    /// What the access adds to its address to predict the next one from
    /// the same base: the size for fetches, 0 for data.
    adv: u16,
    /// `AccessKind as u8`.
    kind: u8,
    /// Prediction base: 0 fetch, 1 or 2 the two data bases.
    sel: u8,
}

const fn tag_info(tag: u8) -> TagInfo {
    let kind = tag & 3;
    if kind == 0 {
        let size = SIZE_OF_CODE[((tag >> 2) & 15) as usize];
        TagInfo {
            size,
            adv: size,
            kind,
            sel: 0,
        }
    } else {
        let size = DATA_SIZE_OF_CODE[((tag >> 2) & 7) as usize];
        TagInfo {
            size,
            adv: 0,
            kind,
            sel: 1 + ((tag >> 5) & 1),
        }
    }
}

/// [`TagInfo`] of every tag byte.
const TAG_INFO: [TagInfo; 256] = {
    let mut t = [TagInfo {
        size: 0,
        adv: 0,
        kind: 0,
        sel: 0,
    }; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = tag_info(i as u8);
        i += 1;
    }
    t
};

#[inline]
fn data_size_code(size: u16) -> u8 {
    match size {
        1 => 1,
        2 => 2,
        4 => 3,
        8 => 4,
        16 => 5,
        32 => 6,
        64 => 7,
        _ => 0,
    }
}

#[inline]
fn size_code(size: u16) -> u8 {
    match size {
        1..=12 => size as u8,
        16 => 13,
        32 => 14,
        64 => 15,
        _ => 0,
    }
}

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

#[inline]
fn zigzag(v: u64) -> u64 {
    let s = v as i64;
    ((s << 1) ^ (s >> 63)) as u64
}

#[inline]
fn unzigzag(v: u64) -> u64 {
    (v >> 1) ^ (v & 1).wrapping_neg()
}

#[inline]
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Why decoding a block payload failed, at a payload offset.
#[derive(Debug)]
enum PayloadError {
    /// Ran out of bytes in the middle of a record.
    Truncated(usize),
    /// A varint longer than 10 bytes or overflowing 64 bits.
    BadVarint(usize),
    /// An unknown tag byte.
    BadTag(usize, u8),
    /// A field out of range.
    BadField(usize, &'static str),
}

#[inline(always)]
fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64, PayloadError> {
    let start = *pos;
    let mut p = start;
    let mut result = 0u64;
    let mut shift = 0u32;
    loop {
        let Some(&b) = buf.get(p) else {
            return Err(PayloadError::Truncated(start));
        };
        p += 1;
        if shift == 63 && b > 1 {
            return Err(PayloadError::BadVarint(start));
        }
        result |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            *pos = p;
            return Ok(result);
        }
        shift += 7;
        if shift > 63 {
            return Err(PayloadError::BadVarint(start));
        }
    }
}

#[inline]
fn get_u32_varint(buf: &[u8], pos: &mut usize, what: &'static str) -> Result<u32, PayloadError> {
    let at = *pos;
    let v = get_varint(buf, pos)?;
    u32::try_from(v).map_err(|_| PayloadError::BadField(at, what))
}

/// Address prediction state of one process in one block.
#[derive(Clone, Copy, Default)]
struct Predict {
    /// `[fetch, data0, data1]`: predicted next fetch address (end of the
    /// last fetch) and two recent data addresses (say stack and heap).
    base: [u64; 3],
    /// Writer only: the data base (1 or 2) used least recently, replaced
    /// when neither is near.
    lru: u8,
}

/// Per-block codec state shared by writer and reader.
struct CodecState {
    pid: u32,
    cur: Predict,
    saved: Vec<(u32, Predict)>,
}

impl CodecState {
    fn new() -> Self {
        CodecState {
            pid: 0,
            cur: Predict::default(),
            saved: Vec::new(),
        }
    }
    fn reset(&mut self) {
        self.pid = 0;
        self.cur = Predict::default();
        self.saved.clear();
    }
    fn switch(&mut self, pid: u32) {
        let old = self.pid;
        let cur = self.cur;
        match self.saved.iter_mut().find(|(p, _)| *p == old) {
            Some(slot) => slot.1 = cur,
            None => self.saved.push((old, cur)),
        }
        self.cur = self
            .saved
            .iter()
            .find(|(p, _)| *p == pid)
            .map(|s| s.1)
            .unwrap_or_default();
        self.pid = pid;
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
        if self.accesses == 0 {
            0.0
        } else {
            self.bytes_written as f64 / self.accesses as f64
        }
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

fn malformed(path: &Path, at: String, what: String) -> TraceError {
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

/// Writes a `.vmt` file; see the module documentation.
pub struct Writer {
    final_path: PathBuf,
    partial: PathBuf,
    file: BufWriter<File>,
    pos: u64,
    block_records_target: u32,
    compressor: zstd::bulk::Compressor<'static>,
    /// The block's tag stream: one byte per entry.
    tags: Vec<u8>,
    /// The block's body stream: every entry's bytes after its tag.
    body: Vec<u8>,
    /// The assembled raw block (tag-stream length, tags, body).
    raw: Vec<u8>,
    comp: Vec<u8>,
    block_records: u32,
    state: CodecState,
    blocks: Vec<BlockIndex>,
    counts: Counts,
    /// Distinct (pid, page) pairs touched, for the footprint.
    pages: rustc_hash::FxHashSet<(u32, u64)>,
    /// The (pid, page) pairs inserted last, by page number modulo
    /// [`RECENT_PAGES`]: most accesses touch one of them, and skip the set.
    recent_pages: [(u32, u64); RECENT_PAGES],
    processes: Vec<ProcessInfo>,
    /// Files mapped so far, and where each is in `files`.
    files: Vec<FileUse>,
    file_index: HashMap<FileId, usize>,
    /// A write error from [`Writer::add_process`], returned by the next call.
    deferred_error: Option<TraceError>,
}

impl Writer {
    /// Create `PATH.partial` and write the header; `creator` names the
    /// program writing the trace (truncated to 65535 bytes).
    ///
    /// # Errors
    /// [`TraceError::Io`] when the file cannot be created or written.
    pub fn create(path: &Path, creator: &str) -> Result<Writer, TraceError> {
        let partial = partial_path(path);
        let file = File::create(&partial).map_err(|e| TraceError::io(&partial, e))?;
        let mut file = BufWriter::with_capacity(1 << 20, file);
        let mut creator_bytes = creator.as_bytes();
        if creator_bytes.len() > usize::from(u16::MAX) {
            creator_bytes = &creator_bytes[..usize::from(u16::MAX)];
        }
        let mut h = Vec::with_capacity(HEADER_FIXED + creator_bytes.len());
        h.extend_from_slice(&MAGIC);
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&(creator_bytes.len() as u16).to_le_bytes());
        h.extend_from_slice(creator_bytes);
        // On disk at once: a recorder killed before its first block still
        // leaves a readable (empty) `.partial`, not a 0-byte file.
        file.write_all(&h)
            .and_then(|()| file.flush())
            .map_err(|e| TraceError::io(&partial, e))?;
        let mut compressor =
            zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(|e| TraceError::io(&partial, e))?;
        compressor
            .set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
            .map_err(|e| TraceError::io(&partial, e))?;
        Ok(Writer {
            final_path: path.to_path_buf(),
            partial,
            file,
            pos: h.len() as u64,
            block_records_target: DEFAULT_BLOCK_RECORDS,
            compressor,
            tags: Vec::with_capacity(1 << 17),
            body: Vec::with_capacity(1 << 18),
            raw: Vec::new(),
            comp: Vec::new(),
            block_records: 0,
            state: CodecState::new(),
            blocks: Vec::new(),
            counts: Counts::default(),
            pages: rustc_hash::FxHashSet::default(),
            recent_pages: [(u32::MAX, u64::MAX); RECENT_PAGES],
            processes: Vec::new(),
            files: Vec::new(),
            file_index: HashMap::new(),
            deferred_error: None,
        })
    }

    /// Set how many records go into one block (at least 1; default
    /// [`DEFAULT_BLOCK_RECORDS`]). Smaller blocks lose less on truncation
    /// and compress worse.
    pub fn set_block_records(&mut self, records: u32) {
        self.block_records_target = records.max(1);
    }

    /// Append one record (encoded into the current block; a full block is
    /// compressed and written).
    ///
    /// # Errors
    /// [`TraceError::Io`] when writing a full block fails.
    pub fn push(&mut self, record: &Record) -> Result<(), TraceError> {
        self.push_all(std::slice::from_ref(record))
    }

    /// Append records in order, as [`Writer::push`] of each would (the same
    /// bytes), with the per-call work done once: the recorder's and
    /// `convert`'s way to write a batch.
    ///
    /// # Errors
    /// [`TraceError::Io`] when writing a full block fails (the records
    /// before it are in the trace).
    pub fn push_all(&mut self, records: &[Record]) -> Result<(), TraceError> {
        if let Some(e) = self.deferred_error.take() {
            return Err(e);
        }
        for record in records {
            match record {
                Record::Access(a) => self.push_access(a),
                Record::Event(e) => self.push_event(e),
            }
            self.block_records += 1;
            if self.block_records >= self.block_records_target || self.raw_len() >= RAW_FLUSH {
                self.flush_block()?;
            }
        }
        Ok(())
    }

    #[inline(always)]
    fn push_access(&mut self, a: &Access) {
        if a.pid != self.state.pid {
            self.state.switch(a.pid);
            self.tags.push(TAG_PID);
            put_varint(&mut self.body, u64::from(a.pid));
        }
        let kind = a.kind as u8;
        let cur = &mut self.state.cur;
        // Pick the prediction base and the size code.
        let (sel, code, sel_bits) = if kind == 0 {
            (0usize, size_code(a.size), 0u8)
        } else {
            let z1 = zigzag(a.addr.wrapping_sub(cur.base[1]));
            let z2 = zigzag(a.addr.wrapping_sub(cur.base[2]));
            let mut sel = if z2 < z1 { 2 } else { 1 };
            if z1.min(z2) > 0xffff {
                // Neither is near: a new region replaces the stale base.
                sel = usize::from(cur.lru.clamp(1, 2));
            }
            cur.lru = 3 - sel as u8;
            (sel, data_size_code(a.size), (sel as u8 - 1) << 5)
        };
        let z = zigzag(a.addr.wrapping_sub(cur.base[sel]));
        cur.base[sel] = if kind == 0 {
            a.addr.wrapping_add(u64::from(a.size))
        } else {
            a.addr
        };
        if code == 0 || z > u64::from(u32::MAX) {
            self.tags.push(TAG_EXPLICIT_SIZE | kind | sel_bits);
            put_varint(&mut self.body, u64::from(a.size));
            put_varint(&mut self.body, z);
        } else {
            let lc: u8 = if z == 0 {
                0
            } else if z <= 0xff {
                1
            } else if z <= 0xffff {
                2
            } else {
                3
            };
            self.tags.push(kind | code << 2 | sel_bits | lc << 6);
            self.body
                .extend_from_slice(&z.to_le_bytes()[..DELTA_BYTES[usize::from(lc)]]);
        }
        self.counts.accesses[kind as usize] += 1;
        let first = (a.pid, a.addr >> 12);
        self.note_page(first);
        let last = a.addr.saturating_add(u64::from(a.size.max(1)) - 1) >> 12;
        if last != first.1 {
            self.note_page((a.pid, last));
        }
    }

    /// Count `page` in the footprint (a set insert unless it was one of
    /// the recent ones).
    #[inline(always)]
    fn note_page(&mut self, page: (u32, u64)) {
        let slot = &mut self.recent_pages[(page.1 as usize) % RECENT_PAGES];
        if *slot != page {
            *slot = page;
            self.pages.insert(page);
        }
    }

    /// Events written so far.
    pub fn events_written(&self) -> u64 {
        self.counts.total_events()
    }

    #[inline(never)]
    fn push_event(&mut self, e: &Event) {
        self.tags.push(TAG_EVENT);
        let r = &mut self.body;
        let idx = event_index(&e.kind);
        r.push(idx as u8);
        put_varint(r, u64::from(e.pid));
        match e.kind {
            ProcEvent::Fork { child } => put_varint(r, u64::from(child)),
            ProcEvent::Exec => {}
            ProcEvent::Mmap {
                addr,
                len,
                prot,
                flags,
                ref file,
            } => {
                put_varint(r, addr);
                put_varint(r, len);
                put_varint(r, u64::from(prot));
                put_varint(r, u64::from(flags));
                put_mapped_file(r, file.as_ref());
                if let Some(m) = file {
                    let i = *self.file_index.entry((*m.file).clone()).or_insert_with(|| {
                        self.files.push(FileUse {
                            file: (*m.file).clone(),
                            mmaps: 0,
                        });
                        self.files.len() - 1
                    });
                    self.files[i].mmaps += 1;
                }
            }
            ProcEvent::Munmap { addr, len } => {
                put_varint(r, addr);
                put_varint(r, len);
            }
            ProcEvent::Brk { addr } => put_varint(r, addr),
            ProcEvent::Mprotect { addr, len, prot } => {
                put_varint(r, addr);
                put_varint(r, len);
                put_varint(r, u64::from(prot));
            }
            ProcEvent::Exit { code } => put_varint(r, zigzag(i64::from(code) as u64)),
        }
        self.counts.events[idx] += 1;
    }

    /// Add a process to the process table, or replace the entry with the
    /// same pid (for example after an exec changed its command). The entry
    /// is also written into the record stream, so a trace cut short still
    /// has it. Commands longer than 4096 bytes are cut. If this fills a
    /// block and writing it fails, the error is returned by the next
    /// [`Writer::push`] or [`Writer::finish`].
    pub fn add_process(&mut self, mut info: ProcessInfo) {
        if info.command.len() > MAX_COMMAND {
            let mut end = MAX_COMMAND;
            while !info.command.is_char_boundary(end) {
                end -= 1;
            }
            info.command.truncate(end);
        }
        self.tags.push(TAG_PROCESS);
        let r = &mut self.body;
        put_varint(r, u64::from(info.pid));
        put_varint(r, info.parent.map_or(0, |p| u64::from(p) + 1));
        put_varint(r, info.command.len() as u64);
        r.extend_from_slice(info.command.as_bytes());
        match self.processes.iter_mut().find(|p| p.pid == info.pid) {
            Some(p) => *p = info,
            None => self.processes.push(info),
        }
        // Keep blocks bounded even when many processes come without records.
        if self.raw_len() >= RAW_FLUSH && self.deferred_error.is_none() {
            self.deferred_error = self.flush_block().err();
        }
    }

    /// The process table so far.
    pub fn processes(&self) -> &[ProcessInfo] {
        &self.processes
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), TraceError> {
        self.file
            .write_all(bytes)
            .map_err(|e| TraceError::io(&self.partial, e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Raw bytes of the block so far.
    fn raw_len(&self) -> usize {
        4 + self.tags.len() + self.body.len()
    }

    #[inline(never)]
    fn flush_block(&mut self) -> Result<(), TraceError> {
        if self.tags.is_empty() {
            return Ok(());
        }
        self.raw.clear();
        self.raw
            .extend_from_slice(&(self.tags.len() as u32).to_le_bytes());
        self.raw.extend_from_slice(&self.tags);
        self.raw.extend_from_slice(&self.body);
        self.comp.clear();
        self.comp
            .reserve(zstd::zstd_safe::compress_bound(self.raw.len()));
        self.compressor
            .compress_to_buffer(&self.raw[..], &mut self.comp)
            .map_err(|e| TraceError::io(&self.partial, e))?;
        let mut h = [0u8; BLOCK_HEADER];
        h[0] = b'B';
        h[1..5].copy_from_slice(&(self.comp.len() as u32).to_le_bytes());
        h[5..9].copy_from_slice(&self.block_records.to_le_bytes());
        h[9..13].copy_from_slice(&(self.raw.len() as u32).to_le_bytes());
        self.blocks.push(BlockIndex {
            offset: self.pos,
            records: self.block_records,
        });
        self.write(&h)?;
        let comp = std::mem::take(&mut self.comp);
        let r = self.write(&comp);
        self.comp = comp;
        r?;
        // Each whole block reaches the file as it fills, so a writer killed
        // at any point (SIGKILL, a crash) leaves a `.partial` that reads up
        // to its last whole block.
        self.file
            .flush()
            .map_err(|e| TraceError::io(&self.partial, e))?;
        self.tags.clear();
        self.body.clear();
        self.block_records = 0;
        self.state.reset();
        Ok(())
    }

    /// Write the last block, the footer and the final header flags, then
    /// rename `PATH.partial` to `PATH`.
    ///
    /// # Errors
    /// [`TraceError::Io`] when writing, syncing or renaming fails (the
    /// `.partial` file is left behind).
    pub fn finish(mut self, status: FinishStatus) -> Result<WriteSummary, TraceError> {
        if let Some(e) = self.deferred_error.take() {
            return Err(e);
        }
        self.flush_block()?;
        self.counts.footprint_pages = self.pages.len() as u64;
        let (mut flags, exit_code, reason) = match status {
            FinishStatus::Complete { exit_code: Some(c) } => {
                (FLAG_COMPLETE | FLAG_EXIT_CODE, c, String::new())
            }
            FinishStatus::Complete { exit_code: None } => (FLAG_COMPLETE, 0, String::new()),
            FinishStatus::Truncated { reason } => (FLAG_TRUNCATED, 0, reason),
        };
        flags &= FLAG_COMPLETE | FLAG_TRUNCATED | FLAG_EXIT_CODE;
        let footer = Footer {
            reason,
            counts: self.counts.clone(),
            blocks: std::mem::take(&mut self.blocks),
            processes: self.processes.clone(),
            files: Some(std::mem::take(&mut self.files)),
        };
        let body = encode_footer(&footer);
        let footer_offset = self.pos;
        let mut f = Vec::with_capacity(body.len() + 5 + TRAILER_LEN as usize);
        f.push(b'F');
        f.extend_from_slice(&(body.len() as u32).to_le_bytes());
        f.extend_from_slice(&body);
        f.extend_from_slice(&footer_offset.to_le_bytes());
        f.extend_from_slice(&TRAILER_MAGIC);
        self.write(&f)?;
        let partial = self.partial.clone();
        let mut file = self
            .file
            .into_inner()
            .map_err(|e| TraceError::io(&partial, e.into_error()))?;
        file.seek(SeekFrom::Start(10))
            .map_err(|e| TraceError::io(&partial, e))?;
        let mut fx = [0u8; 6];
        fx[..2].copy_from_slice(&flags.to_le_bytes());
        fx[2..].copy_from_slice(&exit_code.to_le_bytes());
        file.write_all(&fx)
            .map_err(|e| TraceError::io(&partial, e))?;
        file.sync_all().map_err(|e| TraceError::io(&partial, e))?;
        drop(file);
        std::fs::rename(&partial, &self.final_path)
            .map_err(|e| TraceError::io(&self.final_path, e))?;
        Ok(WriteSummary {
            processes: footer.processes.len(),
            accesses: footer.counts.total_accesses(),
            events: footer.counts.total_events(),
            bytes_written: self.pos,
        })
    }
}

/// A path cut to at most [`MAX_PATH`] bytes on a character boundary.
fn cut_path(p: &str) -> &str {
    let mut end = p.len().min(MAX_PATH);
    while !p.is_char_boundary(end) {
        end -= 1;
    }
    &p[..end]
}

/// The mapped-file part of a version 3 mmap event: LEB128 kind (0 none,
/// 1 path only, 2 path and fingerprint), then LEB128 offset, LEB128 path
/// length, path bytes and, for kind 2, LEB128 size and the u64 hash.
fn put_mapped_file(r: &mut Vec<u8>, file: Option<&MappedFile>) {
    let Some(m) = file else {
        r.push(0);
        return;
    };
    r.push(if m.file.fingerprint.is_some() { 2 } else { 1 });
    put_varint(r, m.offset);
    let path = cut_path(&m.file.path);
    put_varint(r, path.len() as u64);
    r.extend_from_slice(path.as_bytes());
    if let Some(f) = m.file.fingerprint {
        put_varint(r, f.size);
        r.extend_from_slice(&f.hash.to_le_bytes());
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn encode_footer(f: &Footer) -> Vec<u8> {
    let mut o = Vec::with_capacity(128 + f.blocks.len() * 12);
    put_str(&mut o, &f.reason);
    for c in f.counts.accesses.iter().chain(f.counts.events.iter()) {
        o.extend_from_slice(&c.to_le_bytes());
    }
    o.extend_from_slice(&f.counts.footprint_pages.to_le_bytes());
    o.extend_from_slice(&(f.blocks.len() as u32).to_le_bytes());
    for b in &f.blocks {
        o.extend_from_slice(&b.offset.to_le_bytes());
        o.extend_from_slice(&b.records.to_le_bytes());
    }
    o.extend_from_slice(&(f.processes.len() as u32).to_le_bytes());
    for p in &f.processes {
        o.extend_from_slice(&p.pid.to_le_bytes());
        match p.parent {
            Some(pp) => {
                o.push(1);
                o.extend_from_slice(&pp.to_le_bytes());
            }
            None => {
                o.push(0);
                o.extend_from_slice(&0u32.to_le_bytes());
            }
        }
        put_str(&mut o, &p.command);
    }
    let files = f.files.as_deref().unwrap_or(&[]);
    o.extend_from_slice(&(files.len() as u32).to_le_bytes());
    for u in files {
        put_str(&mut o, cut_path(&u.file.path));
        let fp = u.file.fingerprint;
        o.push(u8::from(fp.is_some()));
        o.extend_from_slice(&fp.map_or(0, |f| f.size).to_le_bytes());
        o.extend_from_slice(&fp.map_or(0, |f| f.hash).to_le_bytes());
        o.extend_from_slice(&u.mmaps.to_le_bytes());
    }
    o
}

/// A little-endian cursor over the footer body that reports offsets.
struct Cur<'a> {
    b: &'a [u8],
    p: usize,
}

impl Cur<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], usize> {
        let end = self
            .p
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(self.p)?;
        let s = &self.b[self.p..end];
        self.p = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, usize> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, usize> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, usize> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    fn string(&mut self) -> Result<String, usize> {
        let at = self.p;
        let n = self.u32()? as usize;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| at)
    }
}

fn decode_footer(b: &[u8], version: u16) -> Result<Footer, usize> {
    let mut c = Cur { b, p: 0 };
    let reason = c.string()?;
    let mut counts = Counts::default();
    for a in counts.accesses.iter_mut() {
        *a = c.u64()?;
    }
    for e in counts.events.iter_mut() {
        *e = c.u64()?;
    }
    counts.footprint_pages = c.u64()?;
    let nb = c.u32()? as usize;
    if nb > b.len() / 12 {
        return Err(c.p - 4);
    }
    let mut blocks = Vec::with_capacity(nb);
    for _ in 0..nb {
        blocks.push(BlockIndex {
            offset: c.u64()?,
            records: c.u32()?,
        });
    }
    let np = c.u32()? as usize;
    if np > b.len() / 13 {
        return Err(c.p - 4);
    }
    let mut processes = Vec::with_capacity(np);
    for _ in 0..np {
        let pid = c.u32()?;
        let has = c.u8()?;
        let pp = c.u32()?;
        let command = c.string()?;
        processes.push(ProcessInfo {
            pid,
            parent: (has != 0).then_some(pp),
            command,
        });
    }
    let files = if version >= 3 {
        let nf = c.u32()? as usize;
        if nf > b.len() / 29 {
            return Err(c.p - 4);
        }
        let mut files = Vec::with_capacity(nf);
        for _ in 0..nf {
            let path = c.string()?;
            let at = c.p;
            let has = c.u8()?;
            let size = c.u64()?;
            let hash = c.u64()?;
            let mmaps = c.u64()?;
            let fingerprint = match has {
                0 => None,
                1 => Some(Fingerprint { size, hash }),
                _ => return Err(at),
            };
            files.push(FileUse {
                file: FileId { path, fingerprint },
                mmaps,
            });
        }
        Some(files)
    } else {
        None
    };
    if c.p != b.len() {
        return Err(c.p);
    }
    Ok(Footer {
        reason,
        counts,
        blocks,
        processes,
        files,
    })
}

/// Reads a `.vmt` file block by block; implements [`RecordSource`].
pub struct Reader {
    path: PathBuf,
    file: File,
    file_len: u64,
    /// File offset of the next unread byte.
    pos: u64,
    header: Header,
    header_len: u64,
    footer: Option<Footer>,
    footer_offset: Option<u64>,
    dec: zstd::bulk::Decompressor<'static>,
    comp: Vec<u8>,
    raw: Vec<u8>,
    /// Offset in `raw` of the next tag.
    tag_pos: usize,
    /// End of the tag stream in `raw` (start of the body stream).
    tag_end: usize,
    /// Offset in `raw` of the next body byte.
    body_pos: usize,
    /// Payload bytes in `raw` (before the padding).
    raw_end: usize,
    in_block: bool,
    done: bool,
    block_no: u64,
    block_offset: u64,
    block_declared: u32,
    block_seen: u32,
    records_read: u64,
    state: CodecState,
    stream_processes: Vec<ProcessInfo>,
    /// Mapped files decoded so far (each decoded once into one `Arc`).
    files: Vec<Arc<FileId>>,
    warnings: Vec<String>,
}

impl Reader {
    /// Open a `.vmt` file (or a `.vmt.partial` left by a crashed writer),
    /// read its header and, if present, its footer.
    ///
    /// # Errors
    /// [`TraceError::Io`] when the file cannot be opened or read;
    /// [`TraceError::Malformed`] with `what` starting "bad magic",
    /// "unknown version", "truncated header" or "bad footer".
    pub fn open(path: &Path) -> Result<Reader, TraceError> {
        let file = File::open(path).map_err(|e| TraceError::io(path, e))?;
        Reader::from_file(file, path)
    }

    /// Like [`Reader::open`], on a file already open for reading (for
    /// example an unlinked temporary file); `path` names it in errors.
    ///
    /// # Errors
    /// As [`Reader::open`].
    pub fn from_file(mut file: File, path: &Path) -> Result<Reader, TraceError> {
        file.seek(SeekFrom::Start(0))
            .map_err(|e| TraceError::io(path, e))?;
        let file_len = file.metadata().map_err(|e| TraceError::io(path, e))?.len();
        let mut fixed = [0u8; HEADER_FIXED];
        let got = read_full(&mut file, &mut fixed).map_err(|e| TraceError::io(path, e))?;
        if got < 8 || fixed[..8] != MAGIC {
            let found = &fixed[..got.min(8)];
            return Err(malformed(
                path,
                "byte 0".into(),
                format!(
                    "bad magic: found {found:02x?}, expected {MAGIC:02x?} (\\x89VMT\\r\\n\\x1a\\n)"
                ),
            ));
        }
        if got < HEADER_FIXED {
            return Err(malformed(
                path,
                format!("byte {got}"),
                format!("truncated header: file ends after {got} bytes, expected {HEADER_FIXED}"),
            ));
        }
        let version = u16::from_le_bytes([fixed[8], fixed[9]]);
        if !(MIN_VERSION..=VERSION).contains(&version) {
            return Err(malformed(
                path,
                "byte 8".into(),
                format!(
                    "unknown version {version}: this reader reads versions {MIN_VERSION} to {VERSION}"
                ),
            ));
        }
        let flags = u16::from_le_bytes([fixed[10], fixed[11]]);
        let exit_code = i32::from_le_bytes([fixed[12], fixed[13], fixed[14], fixed[15]]);
        let clen = usize::from(u16::from_le_bytes([fixed[16], fixed[17]]));
        let mut cbytes = vec![0u8; clen];
        let got = read_full(&mut file, &mut cbytes).map_err(|e| TraceError::io(path, e))?;
        if got < clen {
            return Err(malformed(
                path,
                format!("byte {}", HEADER_FIXED + got),
                format!("truncated header: creator string of {clen} bytes cut after {got}"),
            ));
        }
        let creator = String::from_utf8_lossy(&cbytes).into_owned();
        let header_len = (HEADER_FIXED + clen) as u64;
        let mut warnings = Vec::new();
        let (footer, footer_offset) = match read_footer(
            &mut file, path, file_len, header_len, version,
        )? {
            Some((f, off)) => (Some(f), Some(off)),
            None => {
                warnings.push(format!(
                    "{}: no footer (file cut short or writer did not finish): reading up to the last whole block",
                    path.display()
                ));
                (None, None)
            }
        };
        file.seek(SeekFrom::Start(header_len))
            .map_err(|e| TraceError::io(path, e))?;
        let dec = zstd::bulk::Decompressor::new().map_err(|e| TraceError::io(path, e))?;
        Ok(Reader {
            path: path.to_path_buf(),
            file,
            file_len,
            pos: header_len,
            header: Header {
                version,
                flags,
                exit_code,
                creator,
            },
            header_len,
            footer,
            footer_offset,
            dec,
            comp: Vec::new(),
            raw: Vec::new(),
            tag_pos: 0,
            tag_end: 0,
            body_pos: 0,
            raw_end: 0,
            in_block: false,
            done: false,
            block_no: 0,
            block_offset: 0,
            block_declared: 0,
            block_seen: 0,
            records_read: 0,
            state: CodecState::new(),
            stream_processes: Vec::new(),
            files: Vec::new(),
            warnings,
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The footer, `None` when the file has none (cut short).
    pub fn footer(&self) -> Option<&Footer> {
        self.footer.as_ref()
    }

    /// Length of the header in bytes (offset of the first block).
    pub fn header_len(&self) -> u64 {
        self.header_len
    }

    /// Records (accesses and events) returned so far.
    pub fn records_read(&self) -> u64 {
        self.records_read
    }

    fn at_block(&self) -> String {
        format!("byte {} (block {})", self.block_offset, self.block_no)
    }

    fn truncated(&mut self, what: String) {
        self.warnings.push(format!(
            "{}: byte {}: {what}; read {} whole blocks ({} records), the rest is lost",
            self.path.display(),
            self.block_offset,
            self.block_no,
            self.records_read
        ));
        self.done = true;
    }

    /// Read the next block into `raw`. Returns false at the end.
    fn load_block(&mut self) -> Result<bool, TraceError> {
        if self.done {
            return Ok(false);
        }
        self.block_offset = self.pos;
        if Some(self.pos) == self.footer_offset {
            self.finish_stream()?;
            return Ok(false);
        }
        let mut h = [0u8; BLOCK_HEADER];
        let got =
            read_full(&mut self.file, &mut h[..1]).map_err(|e| TraceError::io(&self.path, e))?;
        if got == 0 {
            // End of file exactly at a block boundary: no footer.
            self.done = true;
            self.warnings.push(format!(
                "{}: byte {}: file ends after block {} ({} records) without a footer",
                self.path.display(),
                self.pos,
                self.block_no,
                self.records_read
            ));
            return Ok(false);
        }
        match h[0] {
            b'B' => {}
            b'F' => {
                // A footer whose trailer was lost.
                self.warnings.push(format!(
                    "{}: byte {}: footer present but cut short; counts come from the records read",
                    self.path.display(),
                    self.pos
                ));
                self.done = true;
                return Ok(false);
            }
            t => {
                return Err(malformed(
                    &self.path,
                    format!("byte {}", self.pos),
                    format!("bad block tag 0x{t:02x}: expected 'B' (0x42) for a block or 'F' (0x46) for the footer"),
                ))
            }
        }
        let got =
            read_full(&mut self.file, &mut h[1..]).map_err(|e| TraceError::io(&self.path, e))?;
        if got < BLOCK_HEADER - 1 {
            self.truncated(format!(
                "truncated block header: expected {BLOCK_HEADER} bytes, file ends after {}",
                got + 1
            ));
            return Ok(false);
        }
        let comp_len = u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize;
        let records = u32::from_le_bytes([h[5], h[6], h[7], h[8]]);
        let raw_len = u32::from_le_bytes([h[9], h[10], h[11], h[12]]) as usize;
        if raw_len > MAX_RAW_BLOCK || comp_len > zstd::zstd_safe::compress_bound(MAX_RAW_BLOCK) {
            return Err(malformed(
                &self.path,
                self.at_block(),
                format!(
                    "bad block length: {comp_len} compressed / {raw_len} raw bytes, expected at most {MAX_RAW_BLOCK} raw"
                ),
            ));
        }
        let data_start = self.pos + BLOCK_HEADER as u64;
        if data_start + comp_len as u64 > self.file_len {
            self.truncated(format!(
                "truncated block: expected {comp_len} compressed bytes, file has {}",
                self.file_len.saturating_sub(data_start)
            ));
            return Ok(false);
        }
        self.comp.resize(comp_len, 0);
        let got =
            read_full(&mut self.file, &mut self.comp).map_err(|e| TraceError::io(&self.path, e))?;
        if got < comp_len {
            self.truncated(format!(
                "truncated block: expected {comp_len} compressed bytes, file has {got}"
            ));
            return Ok(false);
        }
        self.raw.clear();
        self.raw.reserve(raw_len + PAD);
        let n = match self.dec.decompress_to_buffer(&self.comp[..], &mut self.raw) {
            Ok(n) => n,
            Err(e) => {
                return Err(malformed(
                    &self.path,
                    format!("byte {}", data_start),
                    format!(
                        "corrupt zstd frame in block {}: {e} (expected {comp_len} bytes decompressing to {raw_len})",
                        self.block_no
                    ),
                ))
            }
        };
        if n != raw_len {
            return Err(malformed(
                &self.path,
                format!("byte {}", data_start),
                format!(
                    "corrupt zstd frame in block {}: decompressed to {n} bytes, expected {raw_len}",
                    self.block_no
                ),
            ));
        }
        let tags_len = match self.raw.get(..4) {
            Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize,
            None => usize::MAX,
        };
        if tags_len > raw_len.saturating_sub(4) {
            return Err(malformed(
                &self.path,
                format!("{}, payload offset 0", self.at_block()),
                format!(
                    "bad block payload: a tag stream of {} bytes does not fit the {raw_len}-byte payload",
                    tags_len.min(u32::MAX as usize)
                ),
            ));
        }
        self.pos = data_start + comp_len as u64;
        self.raw_end = raw_len;
        self.raw.extend_from_slice(&[0u8; PAD]);
        self.tag_pos = 4;
        self.tag_end = 4 + tags_len;
        self.body_pos = self.tag_end;
        self.block_declared = records;
        self.block_seen = 0;
        self.state.reset();
        self.in_block = true;
        Ok(true)
    }

    fn finish_stream(&mut self) -> Result<(), TraceError> {
        self.done = true;
        if let Some(f) = &self.footer {
            let total = f.counts.checked_total().unwrap_or(u64::MAX);
            if total != self.records_read {
                return Err(malformed(
                    &self.path,
                    format!("byte {}", self.pos),
                    format!(
                        "bad footer: counts say {total} records, the blocks hold {}",
                        self.records_read
                    ),
                ));
            }
        }
        Ok(())
    }

    fn payload_error(&self, e: PayloadError) -> TraceError {
        let (off, what) = match e {
            PayloadError::Truncated(o) => (
                o,
                format!(
                    "truncated block: payload ends inside a record after {} of {} records",
                    self.block_seen, self.block_declared
                ),
            ),
            PayloadError::BadVarint(o) => (o, "bad varint: more than 64 bits, expected a LEB128 of at most 10 bytes".to_string()),
            PayloadError::BadTag(o, t) => (
                o,
                format!("bad tag 0x{t:02x}: expected an access tag or an escape 0x00-0x03, 0x40, 0x80, 0xc0"),
            ),
            PayloadError::BadField(o, f) => (o, format!("bad field: {f}")),
        };
        malformed(
            &self.path,
            format!("{}, payload offset {off}", self.at_block()),
            what,
        )
    }

    /// Decode records of the current block into `buf`, at most `max`.
    fn decode(&mut self, buf: &mut Vec<Record>, max: usize) -> Result<usize, TraceError> {
        let left = (self.block_declared - self.block_seen.min(self.block_declared)) as usize;
        buf.reserve(max.min(left));
        let (tag_end, end) = (self.tag_end, self.raw_end);
        let padded = &self.raw[..];
        let raw = &self.raw[..end];
        let mut at = Cursor {
            tag: self.tag_pos,
            body: self.body_pos,
        };
        let mut pid = self.state.pid;
        let mut base = self.state.cur.base;
        let mut n = 0usize;
        let mut err = None;
        while n < max && at.tag < tag_end {
            let (c, k, e) = decode_accesses(padded, tag_end, end, at, pid, &mut base, buf, max - n);
            at = c;
            n += k;
            if e.is_some() {
                err = e;
                break;
            }
            if n >= max || at.tag >= tag_end {
                break;
            }
            // An escape tag.
            let tag_at = at.tag;
            let tag = raw[tag_at];
            at.tag += 1;
            let pos = &mut at.body;
            let r = match tag & 0xC0 {
                TAG_EXPLICIT_SIZE => (|| {
                    // Size code 0 with bits 7-6 clear: kind in bits 1-0,
                    // data base in bit 5 (a fetch's tag is exactly 0).
                    let info = TAG_INFO[usize::from(tag)];
                    let kind = info.kind;
                    let sat = *pos;
                    let size = get_varint(raw, pos)?;
                    let size = u16::try_from(size)
                        .map_err(|_| PayloadError::BadField(sat, "access size above 65535"))?;
                    let delta = unzigzag(get_varint(raw, pos)?);
                    let sel = usize::from(info.sel);
                    let addr = base[sel].wrapping_add(delta);
                    base[sel] = if kind == 0 {
                        addr.wrapping_add(u64::from(size))
                    } else {
                        addr
                    };
                    Ok(Some(Record::Access(Access {
                        addr,
                        pid,
                        size,
                        kind: KINDS[kind as usize],
                    })))
                })(),
                TAG_PID => (|| {
                    if tag != TAG_PID {
                        return Err(PayloadError::BadTag(tag_at, tag));
                    }
                    let new = get_u32_varint(raw, pos, "pid above u32")?;
                    self.state.cur.base = base;
                    self.state.switch(new);
                    pid = new;
                    base = self.state.cur.base;
                    Ok(None)
                })(),
                TAG_EVENT => {
                    if tag != TAG_EVENT {
                        Err(PayloadError::BadTag(tag_at, tag))
                    } else {
                        decode_event(raw, pos, self.header.version, &mut self.files)
                            .map(|e| Some(Record::Event(Box::new(e))))
                    }
                }
                _ => {
                    if tag != TAG_PROCESS {
                        Err(PayloadError::BadTag(tag_at, tag))
                    } else {
                        match decode_process(raw, pos) {
                            Ok(p) => {
                                match self.stream_processes.iter_mut().find(|q| q.pid == p.pid) {
                                    Some(q) => *q = p,
                                    None => self.stream_processes.push(p),
                                }
                                Ok(None)
                            }
                            Err(e) => Err(e),
                        }
                    }
                }
            };
            match r {
                Ok(Some(rec)) => {
                    buf.push(rec);
                    n += 1;
                }
                Ok(None) => {}
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        self.tag_pos = at.tag;
        self.body_pos = at.body;
        self.state.pid = pid;
        self.state.cur.base = base;
        self.block_seen = self.block_seen.saturating_add(n as u32);
        self.records_read += n as u64;
        if let Some(e) = err {
            return Err(self.payload_error(e));
        }
        if self.block_seen > self.block_declared {
            return Err(malformed(
                &self.path,
                self.at_block(),
                format!(
                    "bad block: holds more than the {} records its header declares",
                    self.block_declared
                ),
            ));
        }
        if at.tag >= tag_end {
            if at.body != end {
                return Err(self.payload_error(PayloadError::BadField(
                    at.body,
                    "bytes after the last entry of the block",
                )));
            }
            self.in_block = false;
            // Name this block (not the next) in the error.
            if self.block_seen != self.block_declared {
                return Err(malformed(
                    &self.path,
                    self.at_block(),
                    format!(
                        "truncated block: payload holds {} records, header declares {}",
                        self.block_seen, self.block_declared
                    ),
                ));
            }
            self.block_no += 1;
        }
        Ok(n)
    }
}

/// Where decoding stands in a block: offsets in the raw payload of the next
/// tag (tag stream) and of the next entry's bytes (body stream).
#[derive(Clone, Copy)]
struct Cursor {
    tag: usize,
    body: usize,
}

/// The hot loop: decode accesses with a table size (tag size code not 0)
/// into `buf`, at most `max`, stopping at the first escape tag. Tags are
/// `padded[at.tag..tag_end]`, their deltas `padded[at.body..end]`;
/// `padded` has [`PAD`] bytes after `end`, so an 8-byte window is always
/// there and a delta (0, 1, 2 or 4 bytes) is read without branching on
/// its length. Returns the new cursor, the records decoded and the error
/// that stopped it, if any.
///
/// Speed (docs/trace-format.md): with tags in a stream of their own, where
/// the next tag is does not depend on this one; only the body offset
/// (one add) and the prediction bases carry from record to record.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn decode_accesses(
    padded: &[u8],
    tag_end: usize,
    end: usize,
    at: Cursor,
    pid: u32,
    base: &mut [u64; 3],
    buf: &mut Vec<Record>,
    max: usize,
) -> (Cursor, usize, Option<PayloadError>) {
    let tags = &padded[at.tag..tag_end];
    let mut pos = at.body;
    // Indexed, not selected with branches: fetch and data entries
    // interleave unpredictably. (Size 4 so `sel & 3` needs no bounds check.)
    let mut b = [base[0], base[1], base[2], 0];
    buf.reserve(max);
    let out = &mut buf.spare_capacity_mut()[..max];
    let mut n = 0;
    let mut err = None;
    for (&tag, slot) in tags.iter().zip(out.iter_mut()) {
        let info = TAG_INFO[usize::from(tag)];
        if info.size == 0 {
            break;
        }
        let Some(win) = padded.get(pos..pos + PAD) else {
            err = Some(PayloadError::Truncated(pos));
            break;
        };
        let mut w = [0u8; 8];
        w.copy_from_slice(win);
        // Length code 0, 1, 2, 3 -> 0, 1, 2, 4 bytes ([`DELTA_BYTES`]).
        let lc = usize::from(tag >> 6);
        let next = pos + ((1 << lc) >> 1);
        if next > end {
            err = Some(PayloadError::Truncated(pos));
            break;
        }
        pos = next;
        let delta = unzigzag(u64::from_le_bytes(w) & DELTA_MASK[lc]);
        let sel = usize::from(info.sel & 3);
        let addr = b[sel].wrapping_add(delta);
        // A fetch predicts the next fetch at its end; data the same address.
        b[sel] = addr.wrapping_add(u64::from(info.adv));
        slot.write(Record::Access(Access {
            addr,
            pid,
            size: info.size,
            kind: KINDS[usize::from(info.kind)],
        }));
        n += 1;
    }
    // SAFETY: the first `n` spare slots were initialized in the loop.
    unsafe { buf.set_len(buf.len() + n) };
    *base = [b[0], b[1], b[2]];
    let at = Cursor {
        tag: at.tag + n,
        body: pos,
    };
    (at, n, err)
}

/// Decode one event; `version` says whether mmap events carry a file;
/// `files` interns the files decoded so far (one `Arc` per file).
fn decode_event(
    raw: &[u8],
    pos: &mut usize,
    version: u16,
    files: &mut Vec<Arc<FileId>>,
) -> Result<Event, PayloadError> {
    let at = *pos;
    let Some(&k) = raw.get(*pos) else {
        return Err(PayloadError::Truncated(at));
    };
    *pos += 1;
    let pid = get_u32_varint(raw, pos, "pid above u32")?;
    let kind = match k {
        0 => ProcEvent::Fork {
            child: get_u32_varint(raw, pos, "child pid above u32")?,
        },
        1 => ProcEvent::Exec,
        2 => ProcEvent::Mmap {
            addr: get_varint(raw, pos)?,
            len: get_varint(raw, pos)?,
            prot: get_u32_varint(raw, pos, "prot above u32")?,
            flags: get_u32_varint(raw, pos, "flags above u32")?,
            file: if version >= 3 {
                decode_mapped_file(raw, pos, files)?
            } else {
                None
            },
        },
        3 => ProcEvent::Munmap {
            addr: get_varint(raw, pos)?,
            len: get_varint(raw, pos)?,
        },
        4 => ProcEvent::Brk {
            addr: get_varint(raw, pos)?,
        },
        5 => ProcEvent::Mprotect {
            addr: get_varint(raw, pos)?,
            len: get_varint(raw, pos)?,
            prot: get_u32_varint(raw, pos, "prot above u32")?,
        },
        6 => {
            let vat = *pos;
            let v = unzigzag(get_varint(raw, pos)?) as i64;
            ProcEvent::Exit {
                code: i32::try_from(v)
                    .map_err(|_| PayloadError::BadField(vat, "exit code above i32"))?,
            }
        }
        _ => return Err(PayloadError::BadField(at, "event kind above 6")),
    };
    Ok(Event { pid, kind })
}

/// The inverse of [`put_mapped_file`].
fn decode_mapped_file(
    raw: &[u8],
    pos: &mut usize,
    files: &mut Vec<Arc<FileId>>,
) -> Result<Option<MappedFile>, PayloadError> {
    let kat = *pos;
    let kind = get_varint(raw, pos)?;
    if kind == 0 {
        return Ok(None);
    }
    if kind > 2 {
        return Err(PayloadError::BadField(kat, "mapped-file kind above 2"));
    }
    let offset = get_varint(raw, pos)?;
    let lat = *pos;
    let len = get_varint(raw, pos)?;
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l <= MAX_PATH)
        .ok_or(PayloadError::BadField(lat, "path longer than 4096 bytes"))?;
    let end = pos
        .checked_add(len)
        .filter(|&e| e <= raw.len())
        .ok_or(PayloadError::Truncated(lat))?;
    let path = String::from_utf8_lossy(&raw[*pos..end]).into_owned();
    *pos = end;
    let fingerprint = if kind == 2 {
        let size = get_varint(raw, pos)?;
        let h = raw
            .get(*pos..*pos + 8)
            .ok_or(PayloadError::Truncated(*pos))?;
        *pos += 8;
        let mut b = [0u8; 8];
        b.copy_from_slice(h);
        Some(Fingerprint {
            size,
            hash: u64::from_le_bytes(b),
        })
    } else {
        None
    };
    let id = FileId { path, fingerprint };
    let file = match files.iter().find(|f| ***f == id) {
        Some(f) => Arc::clone(f),
        None => {
            let f = Arc::new(id);
            // Bounded: a damaged file cannot make this grow without limit.
            if files.len() < 4096 {
                files.push(Arc::clone(&f));
            }
            f
        }
    };
    Ok(Some(MappedFile { file, offset }))
}

fn decode_process(raw: &[u8], pos: &mut usize) -> Result<ProcessInfo, PayloadError> {
    let pid = get_u32_varint(raw, pos, "pid above u32")?;
    let pat = *pos;
    let parent = get_varint(raw, pos)?;
    let parent = match parent {
        0 => None,
        p => Some(
            u32::try_from(p - 1)
                .map_err(|_| PayloadError::BadField(pat, "parent pid above u32"))?,
        ),
    };
    let lat = *pos;
    let len = get_varint(raw, pos)?;
    let len = usize::try_from(len).map_err(|_| PayloadError::BadField(lat, "command length"))?;
    let end = pos
        .checked_add(len)
        .filter(|&e| e <= raw.len())
        .ok_or(PayloadError::Truncated(lat))?;
    let command = String::from_utf8_lossy(&raw[*pos..end]).into_owned();
    *pos = end;
    Ok(ProcessInfo {
        pid,
        parent,
        command,
    })
}

/// Read until `buf` is full or end of file; returns the bytes read.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Read the trailer and footer; `None` when the file has no valid trailer.
fn read_footer(
    file: &mut File,
    path: &Path,
    file_len: u64,
    header_len: u64,
    version: u16,
) -> Result<Option<(Footer, u64)>, TraceError> {
    if file_len < header_len + 5 + TRAILER_LEN {
        return Ok(None);
    }
    let tpos = file_len - TRAILER_LEN;
    file.seek(SeekFrom::Start(tpos))
        .map_err(|e| TraceError::io(path, e))?;
    let mut t = [0u8; TRAILER_LEN as usize];
    if read_full(file, &mut t).map_err(|e| TraceError::io(path, e))? < t.len()
        || t[8..] != TRAILER_MAGIC
    {
        return Ok(None);
    }
    let mut o = [0u8; 8];
    o.copy_from_slice(&t[..8]);
    let off = u64::from_le_bytes(o);
    let bad = |at: u64, what: String| {
        malformed(path, format!("byte {at}"), format!("bad footer: {what}"))
    };
    if off < header_len || off.saturating_add(5) > tpos {
        return Err(bad(
            tpos,
            format!("footer offset {off} outside [{header_len}, {tpos})"),
        ));
    }
    file.seek(SeekFrom::Start(off))
        .map_err(|e| TraceError::io(path, e))?;
    let mut fh = [0u8; 5];
    read_full(file, &mut fh).map_err(|e| TraceError::io(path, e))?;
    let body_len = u64::from(u32::from_le_bytes([fh[1], fh[2], fh[3], fh[4]]));
    if fh[0] != b'F' {
        return Err(bad(
            off,
            format!("expected footer tag 'F' (0x46), found 0x{:02x}", fh[0]),
        ));
    }
    if off + 5 + body_len != tpos || body_len > MAX_FOOTER {
        return Err(bad(
            off + 1,
            format!("footer length {body_len} does not end at the trailer (byte {tpos})"),
        ));
    }
    let mut body = vec![0u8; body_len as usize];
    let got = read_full(file, &mut body).map_err(|e| TraceError::io(path, e))?;
    if got < body.len() {
        return Err(bad(off + 5 + got as u64, "footer cut short".into()));
    }
    match decode_footer(&body, version) {
        Ok(f) => {
            for (i, b) in f.blocks.iter().enumerate() {
                if b.offset < header_len || b.offset >= off {
                    return Err(bad(
                        off + 5,
                        format!("block {i} offset {} outside the block area", b.offset),
                    ));
                }
            }
            // The counts and the block index must agree (and not overflow):
            // a footer is only trusted when it is consistent with itself.
            let counted = f.counts.checked_total();
            let indexed = f
                .blocks
                .iter()
                .try_fold(0u64, |a, b| a.checked_add(u64::from(b.records)));
            match counted {
                None => Err(bad(
                    off + 5,
                    "the record counts add up to more than 2^64".into(),
                )),
                Some(c) if Some(c) != indexed => Err(bad(
                    off + 5,
                    format!(
                        "counts say {c} records, the block index {} in {} blocks",
                        indexed.unwrap_or(u64::MAX),
                        f.blocks.len()
                    ),
                )),
                Some(_) => Ok(Some((f, off))),
            }
        }
        Err(at) => Err(bad(off + 5 + at as u64, "footer body malformed".into())),
    }
}

impl RecordSource for Reader {
    fn next_batch(&mut self, buf: &mut Vec<Record>, max: usize) -> Result<usize, TraceError> {
        let mut n = 0;
        while n < max {
            if !self.in_block && !self.load_block()? {
                break;
            }
            n += self.decode(buf, max - n)?;
        }
        Ok(n)
    }

    fn processes(&self) -> &[ProcessInfo] {
        match &self.footer {
            Some(f) => &f.processes,
            None => &self.stream_processes,
        }
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vmemsim-vmt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn read_all(path: &Path) -> (Vec<Record>, Reader) {
        let mut r = Reader::open(path).unwrap();
        let mut out = Vec::new();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = r.next_batch(&mut buf, 1000).unwrap();
            if n == 0 {
                break;
            }
            assert_eq!(n, buf.len());
            out.extend_from_slice(&buf);
        }
        (out, r)
    }

    fn acc(pid: u32, kind: AccessKind, addr: u64, size: u16) -> Record {
        Record::Access(Access {
            addr,
            pid,
            size,
            kind,
        })
    }

    #[test]
    fn zigzag_round_trips() {
        for v in [0u64, 1, 2, u64::MAX, u64::MAX - 1, 1 << 63, 12345] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(u64::MAX), 1); // -1
    }

    /// A header followed by a footer with no blocks and the given counts.
    fn footer_only(name: &str, counts: Counts) -> PathBuf {
        let p = tmp(name);
        let w = Writer::create(&p, "test").unwrap();
        w.finish(FinishStatus::Complete { exit_code: None })
            .unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let r = Reader::open(&p).unwrap();
        let off = r.footer_offset.unwrap() as usize;
        let body = encode_footer(&Footer {
            counts,
            ..Footer::default()
        });
        let mut out = bytes[..off].to_vec();
        out.push(b'F');
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&(off as u64).to_le_bytes());
        out.extend_from_slice(&TRAILER_MAGIC);
        std::fs::write(&p, out).unwrap();
        p
    }

    #[test]
    fn footer_counts_that_overflow_are_a_bad_footer() {
        // cargo-fuzz found this (issue 12): fetch = u64::MAX, load = 1, no
        // blocks; summing the counts overflowed (a panic in debug builds, a
        // wrap to 0 = "matches the 0 records read" in release).
        let mut counts = Counts::default();
        counts.accesses[0] = u64::MAX;
        counts.accesses[1] = 1;
        let p = footer_only("overflow.vmt", counts.clone());
        assert_eq!(counts.total_accesses(), u64::MAX, "saturates");
        assert_eq!(counts.checked_total(), None);
        let e = Reader::open(&p).err().expect("rejected").to_string();
        assert!(
            e.contains("bad footer: the record counts add up to more than 2^64"),
            "{e}"
        );
    }

    #[test]
    fn footer_counts_must_match_the_block_index() {
        // Counts of 5 records, an index of no blocks: corrupt, caught at
        // open (before, `info` printed the 5 as fact).
        let mut counts = Counts::default();
        counts.accesses[2] = 5;
        let p = footer_only("mismatch.vmt", counts);
        let e = Reader::open(&p).err().expect("rejected").to_string();
        assert!(
            e.contains("bad footer: counts say 5 records, the block index 0 in 0 blocks"),
            "{e}"
        );
    }

    #[test]
    fn a_killed_writer_leaves_its_whole_blocks_readable() {
        // A SIGKILL runs no destructor: `forget` the writer the same way.
        // Before blocks were flushed as they filled, the 1 MiB write buffer
        // held them all and the `.partial` was empty (issue 12).
        let p = tmp("killed.vmt");
        let mut w = Writer::create(&p, "rec").unwrap();
        w.set_block_records(100);
        for i in 0..250u64 {
            w.push(&acc(1, AccessKind::Load, 0x1000 + 8 * i, 8))
                .unwrap();
        }
        std::mem::forget(w);
        let (recs, r) = read_all(&partial_path(&p));
        // Two whole blocks of 100; the 50 in the open block are lost.
        assert_eq!(recs.len(), 200);
        assert!(!r.header().is_complete() && !r.header().is_truncated());
        assert!(r.footer().is_none());
        let w = r.warnings().join("\n");
        assert!(w.contains("without a footer"), "{w}");
    }

    #[test]
    fn varint_edge_cases() {
        let mut b = Vec::new();
        put_varint(&mut b, u64::MAX);
        assert_eq!(b.len(), 10);
        let mut p = 0;
        assert_eq!(get_varint(&b, &mut p).unwrap(), u64::MAX);
        // 11-byte varint is bad.
        let bad = [0xffu8; 11];
        let mut p = 0;
        assert!(matches!(
            get_varint(&bad, &mut p),
            Err(PayloadError::BadVarint(0))
        ));
        let mut p = 0;
        assert!(matches!(
            get_varint(&[0x80, 0x80], &mut p),
            Err(PayloadError::Truncated(0))
        ));
    }

    #[test]
    fn sequential_fetch_is_one_byte() {
        let p = tmp("seq.vmt");
        let mut w = Writer::create(&p, "test").unwrap();
        for i in 0..1000u64 {
            w.push(&acc(1, AccessKind::Fetch, 0x40_0000 + 4 * i, 4))
                .unwrap();
        }
        // raw: pid switch (2 bytes) + first fetch (1 + varint) + 999 one-byte tags
        assert!(w.raw.len() < 1000 + 10, "{}", w.raw.len());
        let s = w
            .finish(FinishStatus::Complete { exit_code: Some(3) })
            .unwrap();
        assert_eq!(s.accesses, 1000);
        let (recs, r) = read_all(&p);
        assert_eq!(recs.len(), 1000);
        assert_eq!(r.header().exit_status(), Some(3));
        assert!(r.header().is_complete());
        assert!(r.warnings().is_empty());
        assert_eq!(r.footer().unwrap().counts.footprint_pages, 1);
        assert!(!partial_path(&p).exists());
    }

    #[test]
    fn finish_truncated_keeps_reason_and_processes() {
        let p = tmp("trunc-reason.vmt");
        let mut w = Writer::create(&p, "rec").unwrap();
        w.add_process(ProcessInfo {
            pid: 7,
            parent: None,
            command: "a.out".into(),
        });
        w.push(&acc(7, AccessKind::Store, 0x1000, 8)).unwrap();
        w.add_process(ProcessInfo {
            pid: 7,
            parent: None,
            command: "b.out".into(),
        });
        let s = w
            .finish(FinishStatus::Truncated {
                reason: "limit".into(),
            })
            .unwrap();
        assert_eq!(s.processes, 1);
        assert!(s.to_string().contains("1 accesses"));
        let (recs, r) = read_all(&p);
        assert_eq!(recs, vec![acc(7, AccessKind::Store, 0x1000, 8)]);
        assert!(r.header().is_truncated());
        assert_eq!(r.footer().unwrap().reason, "limit");
        assert_eq!(r.processes()[0].command, "b.out");
        assert_eq!(r.stream_processes[0].command, "b.out");
    }

    #[test]
    fn cut_file_reads_whole_blocks_with_warning() {
        let p = tmp("cut.vmt");
        let mut w = Writer::create(&p, "t").unwrap();
        w.set_block_records(100);
        w.add_process(ProcessInfo {
            pid: 1,
            parent: None,
            command: "x".into(),
        });
        let recs: Vec<Record> = (0..1000u64)
            .map(|i| acc(1, AccessKind::Load, 0x7fff_0000 + (i * 7919) % 4096, 8))
            .collect();
        for r in &recs {
            w.push(r).unwrap();
        }
        w.finish(FinishStatus::Complete { exit_code: Some(0) })
            .unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let r = Reader::open(&p).unwrap();
        let blocks = r.footer().unwrap().blocks.clone();
        // Cut in the middle of block 5.
        let cut = blocks[5].offset as usize + 20;
        let q = tmp("cut2.vmt");
        std::fs::write(&q, &bytes[..cut]).unwrap();
        let (got, r) = read_all(&q);
        assert_eq!(got, recs[..500].to_vec());
        let w = r.warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("no footer"));
        assert!(w[1].contains("truncated block"), "{w:?}");
        assert_eq!(r.processes()[0].command, "x");
        // Cut exactly at a block boundary.
        std::fs::write(&q, &bytes[..blocks[3].offset as usize]).unwrap();
        let (got, r) = read_all(&q);
        assert_eq!(got, recs[..300].to_vec());
        assert!(r.warnings()[1].contains("without a footer"));
    }

    #[test]
    fn every_prefix_and_byte_flip_never_panics() {
        let p = tmp("fuzzish.vmt");
        let mut w = Writer::create(&p, "t").unwrap();
        w.set_block_records(16);
        for i in 0..100u64 {
            w.push(&acc(
                (i % 3) as u32,
                KINDS[(i % 4) as usize],
                i * 4099,
                (i % 70) as u16,
            ))
            .unwrap();
            if i % 17 == 0 {
                w.push(&Record::Event(Box::new(Event {
                    pid: 1,
                    kind: ProcEvent::Mmap {
                        addr: i,
                        len: 4096,
                        prot: 3,
                        flags: 34,
                        file: None,
                    },
                })))
                .unwrap();
            }
        }
        w.finish(FinishStatus::Complete { exit_code: None })
            .unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let q = tmp("fuzzish2.vmt");
        let drain = |q: &Path| {
            if let Ok(mut r) = Reader::open(q) {
                let mut buf = Vec::new();
                while let Ok(n) = r.next_batch(&mut buf, 64) {
                    if n == 0 {
                        break;
                    }
                    buf.clear();
                }
            }
        };
        for cut in (0..bytes.len()).step_by(7) {
            std::fs::write(&q, &bytes[..cut]).unwrap();
            drain(&q);
        }
        for i in (0..bytes.len()).step_by(3) {
            let mut b = bytes.clone();
            b[i] ^= 0x5a;
            std::fs::write(&q, &b).unwrap();
            drain(&q);
        }
    }

    fn arb_file() -> impl Strategy<Value = Option<MappedFile>> {
        let fp = proptest::option::of(
            (any::<u64>(), any::<u64>()).prop_map(|(size, hash)| Fingerprint { size, hash }),
        );
        proptest::option::of(("(/[a-z.()]{0,12}){1,3}", fp, any::<u64>()).prop_map(
            |(path, fingerprint, offset)| MappedFile {
                file: Arc::new(FileId { path, fingerprint }),
                offset,
            },
        ))
    }

    fn arb_event() -> impl Strategy<Value = ProcEvent> {
        prop_oneof![
            any::<u32>().prop_map(|child| ProcEvent::Fork { child }),
            Just(ProcEvent::Exec),
            (
                any::<u64>(),
                any::<u64>(),
                any::<u32>(),
                any::<u32>(),
                arb_file()
            )
                .prop_map(|(addr, len, prot, flags, file)| ProcEvent::Mmap {
                    addr,
                    len,
                    prot,
                    flags,
                    file,
                }),
            (any::<u64>(), any::<u64>()).prop_map(|(addr, len)| ProcEvent::Munmap { addr, len }),
            any::<u64>().prop_map(|addr| ProcEvent::Brk { addr }),
            (any::<u64>(), any::<u64>(), any::<u32>())
                .prop_map(|(addr, len, prot)| ProcEvent::Mprotect { addr, len, prot }),
            any::<i32>().prop_map(|code| ProcEvent::Exit { code }),
        ]
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        let pid = prop_oneof![0u32..4, any::<u32>()];
        let addr = prop_oneof![0u64..0x10000, any::<u64>()];
        let size = prop_oneof![1u16..17, Just(32), Just(64), any::<u16>()];
        prop_oneof![
            8 => (pid.clone(), 0u8..4, addr, size)
                .prop_map(|(pid, k, addr, size)| Record::Access(Access { addr, pid, size, kind: KINDS[k as usize] })),
            1 => (pid, arb_event()).prop_map(|(pid, kind)| Record::event(pid, kind)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn round_trip(recs in proptest::collection::vec(arb_record(), 0..600), block in 1u32..200,
                      procs in proptest::collection::vec((any::<u32>(), proptest::option::of(any::<u32>()), ".{0,12}"), 0..5)) {
            let p = tmp(&format!("prop-{block}-{}.vmt", recs.len()));
            let mut w = Writer::create(&p, "proptest").unwrap();
            w.set_block_records(block);
            for (i, r) in recs.iter().enumerate() {
                if let Some((pid, parent, cmd)) = procs.get(i % 97) {
                    if i < procs.len() {
                        w.add_process(ProcessInfo { pid: *pid, parent: *parent, command: cmd.clone() });
                    }
                }
                w.push(r).unwrap();
            }
            let s = w.finish(FinishStatus::Complete { exit_code: Some(-1) }).unwrap();
            let (got, r) = read_all(&p);
            prop_assert_eq!(&got, &recs);
            prop_assert!(r.warnings().is_empty());
            let f = r.footer().unwrap();
            prop_assert_eq!(s.accesses + s.events, recs.len() as u64);
            prop_assert_eq!(f.counts.total_accesses(), s.accesses);
            // The footer's file table: each distinct file once, in order of
            // first mapping, with its number of mmaps.
            let mut files: Vec<FileUse> = Vec::new();
            for r in &recs {
                if let Record::Event(e) = r {
                    if let ProcEvent::Mmap { file: Some(m), .. } = &e.kind {
                        let mut file = (*m.file).clone();
                        file.path = cut_path(&file.path).to_string();
                        match files.iter_mut().find(|u| u.file == file) {
                            Some(u) => u.mmaps += 1,
                            None => files.push(FileUse { file, mmaps: 1 }),
                        }
                    }
                }
            }
            prop_assert_eq!(f.files.as_ref(), Some(&files));
            std::fs::remove_file(&p).unwrap();
        }

        /// Any decompressed block payload (the compression itself valid, so
        /// the bytes reach the payload decoder) gives records or an error,
        /// never a panic; a payload error names an offset inside the payload.
        #[test]
        fn any_block_payload_decodes_or_errs(tags in proptest::collection::vec(any::<u8>(), 0..64),
                                             body in proptest::collection::vec(any::<u8>(), 0..96),
                                             records in 0u32..80, skew in 0u32..3) {
            let mut raw = (tags.len() as u32 + skew / 2 * 200).to_le_bytes().to_vec();
            raw.extend(&tags);
            raw.extend(&body);
            let mut f = MAGIC.to_vec();
            f.extend(VERSION.to_le_bytes());
            f.extend([0u8; 6]);
            f.extend(1u16.to_le_bytes());
            f.push(b't');
            let comp = zstd::bulk::compress(&raw, 1).unwrap();
            f.push(b'B');
            f.extend((comp.len() as u32).to_le_bytes());
            f.extend(records.to_le_bytes());
            f.extend((raw.len() as u32).to_le_bytes());
            f.extend(comp);
            let p = tmp(&format!("payload-{}-{}-{records}.vmt", tags.len(), body.len()));
            std::fs::write(&p, &f).unwrap();
            let mut r = Reader::open(&p).unwrap();
            let mut buf = Vec::new();
            loop {
                match r.next_batch(&mut buf, 7) {
                    Ok(0) => {
                        // A clean end: exactly the declared records.
                        prop_assert_eq!(buf.len(), records as usize);
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let msg = e.to_string();
                        prop_assert!(msg.contains("byte 19 (block 0)"), "{}", msg);
                        break;
                    }
                }
            }
            std::fs::remove_file(&p).unwrap();
        }
    }
}
