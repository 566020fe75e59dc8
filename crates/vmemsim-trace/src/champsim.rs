//! Reader of ChampSim instruction traces (plain, `.xz` or `.gz`).
//!
//! Two fixed-size little-endian layouts (C structs of ChampSim's
//! `inc/trace_instruction.h`, with natural alignment):
//!
//! Standard `input_instr`, 64 bytes:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 8     | `ip` |
//! | 8  | 1     | `is_branch` |
//! | 9  | 1     | `branch_taken` |
//! | 10 | 2×1   | `destination_registers[2]` |
//! | 12 | 4×1   | `source_registers[4]` |
//! | 16 | 2×8   | `destination_memory[2]` |
//! | 32 | 4×8   | `source_memory[4]` |
//!
//! CloudSuite `cloudsuite_instr`, 96 bytes:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 8     | `ip` |
//! | 8  | 1     | `is_branch` |
//! | 9  | 1     | `branch_taken` |
//! | 10 | 4×1   | `destination_registers[4]` |
//! | 14 | 4×1   | `source_registers[4]` |
//! | 18 | 6     | padding |
//! | 24 | 4×8   | `destination_memory[4]` |
//! | 56 | 4×8   | `source_memory[4]` |
//! | 88 | 2×1   | `asid[2]` |
//! | 90 | 6     | padding |
//!
//! Each instruction yields a [`AccessKind::Fetch`] of `ip`, then one
//! [`AccessKind::Load`] per nonzero `source_memory` entry, then one
//! [`AccessKind::Store`] per nonzero `destination_memory` entry, in array
//! order. ChampSim records no access sizes: fetches get size 4 and data
//! accesses size 8 ([`FETCH_SIZE`], [`DATA_SIZE`]). The pid is 0 for the
//! standard layout; for CloudSuite the fetch's pid is `asid[0]` and the data
//! accesses' pid is `asid[1]` (ChampSim's instruction and data ASIDs).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::record::{Access, AccessKind, Record, RecordSource};
use crate::TraceError;

/// Size given to instruction fetches (ChampSim records none), in bytes.
pub const FETCH_SIZE: u16 = 4;
/// Size given to loads and stores (ChampSim records none), in bytes.
pub const DATA_SIZE: u16 = 8;

/// Which ChampSim record layout a file uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `input_instr`: 64 bytes, 2 destination and 4 source memory operands.
    Standard,
    /// `cloudsuite_instr`: 96 bytes, 4 and 4 operands, and two ASIDs.
    CloudSuite,
}

impl Layout {
    /// Size of one record in bytes (64 or 96).
    pub fn record_size(self) -> usize {
        match self {
            Layout::Standard => 64,
            Layout::CloudSuite => 96,
        }
    }

    /// Short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Standard => "ChampSim",
            Layout::CloudSuite => "ChampSim CloudSuite",
        }
    }
}

/// Compression detected from the first bytes of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed.
    None,
    /// xz (`FD 37 7A 58 5A 00`).
    Xz,
    /// gzip (`1F 8B`).
    Gzip,
}

impl Compression {
    /// Short name ("none", "xz", "gzip").
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Xz => "xz",
            Compression::Gzip => "gzip",
        }
    }

    /// Detect from the first bytes of a file.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0]) {
            Compression::Xz
        } else if head.starts_with(&[0x1F, 0x8B]) {
            Compression::Gzip
        } else {
            Compression::None
        }
    }
}

/// Open `path` and undo its compression (detected from its magic bytes).
///
/// # Errors
/// [`TraceError::Io`] when the file cannot be opened or read.
pub fn open_decompressed(path: &Path) -> Result<(Box<dyn Read>, Compression), TraceError> {
    let io = |e| TraceError::io(path, e);
    let mut f = File::open(path).map_err(io)?;
    let mut head = [0u8; 6];
    let got = crate::vmt::read_full(&mut f, &mut head).map_err(io)?;
    let c = Compression::detect(&head[..got]);
    let chained = std::io::Cursor::new(head[..got].to_vec()).chain(f);
    let r: Box<dyn Read> = match c {
        Compression::None => Box::new(BufReader::with_capacity(1 << 20, chained)),
        Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(BufReader::new(
            chained,
        ))),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(chained))),
    };
    Ok((r, c))
}

/// Instructions read from the input per refill.
const CHUNK_RECORDS: usize = 4096;

/// Reads a ChampSim trace; implements [`RecordSource`].
pub struct Reader {
    path: PathBuf,
    layout: Layout,
    compression: Compression,
    input: Box<dyn Read>,
    buf: Vec<u8>,
    /// Valid bytes in `buf`.
    len: usize,
    /// Next unread byte in `buf`.
    pos: usize,
    /// Decompressed file offset of `buf[0]`.
    base: u64,
    eof: bool,
    done: bool,
    pending: VecDeque<Record>,
    pending_error: Option<TraceError>,
    instructions: u64,
    warnings: Vec<String>,
}

impl Reader {
    /// Open a ChampSim trace with the given layout; `.xz` and `.gz`
    /// compression is detected from the file's first bytes.
    ///
    /// # Errors
    /// [`TraceError::Io`] when the file cannot be opened.
    pub fn open(path: &Path, layout: Layout) -> Result<Reader, TraceError> {
        let (input, compression) = open_decompressed(path)?;
        Ok(Self::with_input(
            path.to_path_buf(),
            input,
            compression,
            layout,
        ))
    }

    /// Read an uncompressed ChampSim trace from any reader; `name` is used
    /// in messages.
    pub fn from_reader(name: &str, r: impl Read + 'static, layout: Layout) -> Reader {
        Self::with_input(PathBuf::from(name), Box::new(r), Compression::None, layout)
    }

    fn with_input(
        path: PathBuf,
        input: Box<dyn Read>,
        compression: Compression,
        layout: Layout,
    ) -> Reader {
        Reader {
            path,
            layout,
            compression,
            input,
            buf: vec![0; CHUNK_RECORDS * layout.record_size()],
            len: 0,
            pos: 0,
            base: 0,
            eof: false,
            done: false,
            pending: VecDeque::new(),
            pending_error: None,
            instructions: 0,
            warnings: Vec::new(),
        }
    }

    /// The record layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The compression detected.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Instructions (ChampSim records) decoded so far.
    pub fn instructions(&self) -> u64 {
        self.instructions
    }

    fn offset_text(&self, off: u64) -> String {
        match self.compression {
            Compression::None => format!("byte {off}"),
            _ => format!("byte {off} (decompressed)"),
        }
    }

    /// Move the partial record to the front and read more input.
    fn refill(&mut self) -> Result<(), TraceError> {
        let rest = self.len - self.pos;
        self.buf.copy_within(self.pos..self.len, 0);
        self.base += self.pos as u64;
        self.pos = 0;
        self.len = rest;
        while self.len < self.buf.len() {
            match self.input.read(&mut self.buf[self.len..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let off = self.base + self.len as u64;
                    return Err(match e.kind() {
                        std::io::ErrorKind::InvalidData
                        | std::io::ErrorKind::InvalidInput
                        | std::io::ErrorKind::UnexpectedEof => TraceError::Malformed {
                            path: self.path.clone(),
                            at: self.offset_text(off),
                            what: format!("corrupt {:?} stream: {e}", self.compression),
                        },
                        _ => TraceError::io(&self.path, e),
                    });
                }
            }
        }
        Ok(())
    }

    /// Decode whole records from `buf` into `out` until `out` holds `want`
    /// more records or the buffer has no whole record left.
    fn decode(&mut self, out: &mut Vec<Record>, want: usize) {
        let rs = self.layout.record_size();
        let start = out.len();
        while out.len() - start < want && self.len - self.pos >= rs {
            let r = &self.buf[self.pos..self.pos + rs];
            self.pos += rs;
            self.instructions += 1;
            let u64_at = |o: usize| {
                let mut a = [0u8; 8];
                a.copy_from_slice(&r[o..o + 8]);
                u64::from_le_bytes(a)
            };
            let (dst, src, ndst, ipid, dpid) = match self.layout {
                Layout::Standard => (16, 32, 2, 0, 0),
                Layout::CloudSuite => (24, 56, 4, u32::from(r[88]), u32::from(r[89])),
            };
            out.push(Record::Access(Access {
                addr: u64_at(0),
                pid: ipid,
                size: FETCH_SIZE,
                kind: AccessKind::Fetch,
            }));
            // Source operands are loads, destinations stores; 0 = unused.
            for (at, n, kind) in [(src, 4, AccessKind::Load), (dst, ndst, AccessKind::Store)] {
                for i in 0..n {
                    let a = u64_at(at + 8 * i);
                    if a != 0 {
                        out.push(Record::Access(Access {
                            addr: a,
                            pid: dpid,
                            size: DATA_SIZE,
                            kind,
                        }));
                    }
                }
            }
        }
        // One instruction yields several records: keep what exceeds `want`.
        if out.len() - start > want {
            self.pending.extend(out.drain(start + want..));
        }
    }
}

impl RecordSource for Reader {
    fn next_batch(&mut self, buf: &mut Vec<Record>, max: usize) -> Result<usize, TraceError> {
        let mut n = 0;
        while n < max {
            if let Some(r) = self.pending.pop_front() {
                buf.push(r);
                n += 1;
                continue;
            }
            if self.done {
                if n == 0 {
                    if let Some(e) = self.pending_error.take() {
                        return Err(e);
                    }
                }
                break;
            }
            let rs = self.layout.record_size();
            if self.len - self.pos < rs {
                if self.eof {
                    self.done = true;
                    let rest = self.len - self.pos;
                    if rest != 0 {
                        let off = self.base + self.pos as u64;
                        let what = format!(
                            "bad record size: input ends with {rest} bytes of a partial record; {} records are {rs} bytes ({} whole records read)",
                            self.layout.name(),
                            self.instructions
                        );
                        self.warnings.push(format!(
                            "{}: {}: {what}",
                            self.path.display(),
                            self.offset_text(off)
                        ));
                        self.pos = self.len;
                        let err = TraceError::Malformed {
                            path: self.path.clone(),
                            at: self.offset_text(off),
                            what,
                        };
                        if n > 0 {
                            // Deliver the whole records first; report on the next call.
                            self.pending_error = Some(err);
                            break;
                        }
                        return Err(err);
                    }
                    break;
                }
                self.refill()?;
                continue;
            }
            let before = buf.len();
            self.decode(buf, max - n);
            n += buf.len() - before;
        }
        Ok(n)
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// One standard record: ip, destination and source memory operands.
    pub(crate) fn standard(ip: u64, dst: [u64; 2], src: [u64; 4]) -> Vec<u8> {
        let mut r = vec![0u8; 64];
        r[..8].copy_from_slice(&ip.to_le_bytes());
        r[8] = 1;
        r[10] = 5;
        for (i, a) in dst.iter().enumerate() {
            r[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        for (i, a) in src.iter().enumerate() {
            r[32 + 8 * i..40 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        r
    }

    fn cloudsuite(ip: u64, dst: [u64; 4], src: [u64; 4], asid: [u8; 2]) -> Vec<u8> {
        let mut r = vec![0u8; 96];
        r[..8].copy_from_slice(&ip.to_le_bytes());
        for (i, a) in dst.iter().enumerate() {
            r[24 + 8 * i..32 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        for (i, a) in src.iter().enumerate() {
            r[56 + 8 * i..64 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        r[88..90].copy_from_slice(&asid);
        r
    }

    fn drain(r: &mut Reader, max: usize) -> (Vec<Record>, Option<TraceError>) {
        let mut out = Vec::new();
        loop {
            match r.next_batch(&mut out, max) {
                Ok(0) => return (out, None),
                Ok(_) => {}
                Err(e) => return (out, Some(e)),
            }
        }
    }

    fn a(kind: AccessKind, addr: u64, pid: u32, size: u16) -> Record {
        Record::Access(Access {
            addr,
            pid,
            size,
            kind,
        })
    }

    #[test]
    fn standard_records_map_to_fetch_loads_stores() {
        let mut bytes = standard(0x400000, [0x7000, 0], [0x8000, 0, 0x8008, 0]);
        bytes.extend(standard(0x400004, [0, 0], [0, 0, 0, 0]));
        for max in [1, 2, 3, 100] {
            let mut r =
                Reader::from_reader("t", std::io::Cursor::new(bytes.clone()), Layout::Standard);
            let (got, err) = drain(&mut r, max);
            assert!(err.is_none());
            assert_eq!(
                got,
                vec![
                    a(AccessKind::Fetch, 0x400000, 0, 4),
                    a(AccessKind::Load, 0x8000, 0, 8),
                    a(AccessKind::Load, 0x8008, 0, 8),
                    a(AccessKind::Store, 0x7000, 0, 8),
                    a(AccessKind::Fetch, 0x400004, 0, 4),
                ],
                "max {max}"
            );
            assert_eq!(r.instructions(), 2);
        }
    }

    #[test]
    fn cloudsuite_uses_asids() {
        let bytes = cloudsuite(0x1000, [0, 0, 0, 0x30], [0x20, 0, 0, 0], [3, 4]);
        let mut r = Reader::from_reader("t", std::io::Cursor::new(bytes), Layout::CloudSuite);
        let (got, err) = drain(&mut r, 64);
        assert!(err.is_none());
        assert_eq!(
            got,
            vec![
                a(AccessKind::Fetch, 0x1000, 3, 4),
                a(AccessKind::Load, 0x20, 4, 8),
                a(AccessKind::Store, 0x30, 4, 8)
            ]
        );
    }

    #[test]
    fn partial_record_is_error_after_whole_records() {
        let mut bytes = standard(0x10, [0, 0], [0, 0, 0, 0]);
        bytes.extend(standard(0x20, [0, 0], [0, 0, 0, 0]));
        bytes.extend([1, 2, 3]);
        let mut r =
            Reader::from_reader("x.champsim", std::io::Cursor::new(bytes), Layout::Standard);
        let (got, err) = drain(&mut r, 100);
        assert_eq!(got.len(), 2);
        let msg = err.unwrap().to_string();
        assert!(
            msg.starts_with("x.champsim: byte 128: bad record size"),
            "{msg}"
        );
        assert!(msg.contains("64 bytes"), "{msg}");
        assert_eq!(r.warnings().len(), 1);
    }

    #[test]
    fn xz_and_gz_are_detected() {
        let mut bytes = Vec::new();
        for i in 0..5000u64 {
            bytes.extend(standard(0x400000 + 4 * i, [0, 0], [0x9000 + i, 0, 0, 0]));
        }
        let dir = std::env::temp_dir().join(format!("vmemsim-champsim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let xz = dir.join("t.champsimtrace.xz");
        let mut e = xz2::write::XzEncoder::new(File::create(&xz).unwrap(), 1);
        e.write_all(&bytes).unwrap();
        e.finish().unwrap();
        let gz = dir.join("t.champsim.gz");
        let mut e =
            flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        e.write_all(&bytes).unwrap();
        e.finish().unwrap();
        for (p, c) in [(&xz, Compression::Xz), (&gz, Compression::Gzip)] {
            let mut r = Reader::open(p, Layout::Standard).unwrap();
            assert_eq!(r.compression(), c);
            let (got, err) = drain(&mut r, 1000);
            assert!(err.is_none());
            assert_eq!(got.len(), 10000);
        }
    }
}
