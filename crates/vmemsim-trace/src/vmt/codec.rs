//! The record encoding inside a block: tag bytes, size codes, varints,
//! the per-process address prediction, and the decoders of entries.

use super::*;

pub(super) const HEADER_FIXED: usize = 18;
pub(super) const BLOCK_HEADER: usize = 13;
pub(super) const TRAILER_LEN: u64 = 16;
/// Largest raw (decompressed) block the reader accepts, in bytes.
pub(super) const MAX_RAW_BLOCK: usize = 64 << 20;
/// The writer closes a block when its raw payload reaches this many bytes.
pub(super) const RAW_FLUSH: usize = 4 << 20;
/// Largest footer the reader accepts, in bytes.
pub(super) const MAX_FOOTER: u64 = 1 << 30;
/// Longest command string stored in a process entry, in bytes.
pub(super) const MAX_COMMAND: usize = 4096;
pub(super) const ZSTD_LEVEL: i32 = 3;
/// Recently counted pages the writer remembers (a power of two).
pub(super) const RECENT_PAGES: usize = 64;

/// Bytes of the fixed-width zigzag delta for each delta-length code
/// (tag bits 6-7) of an access with a table size.
pub(super) const DELTA_BYTES: [usize; 4] = [0, 1, 2, 4];
/// Mask selecting those bytes from a little-endian 8-byte window.
pub(super) const DELTA_MASK: [u64; 4] = [0, 0xff, 0xffff, 0xffff_ffff];
/// Zero bytes after a decoded payload, so the decoder can always read an
/// 8-byte window after a tag.
pub(super) const PAD: usize = 8;
pub(super) const TAG_EXPLICIT_SIZE: u8 = 0x00;
pub(super) const TAG_PID: u8 = 0x40;
pub(super) const TAG_EVENT: u8 = 0x80;
pub(super) const TAG_PROCESS: u8 = 0xC0;

/// Access size of each 4-bit size code; code 0 is an escape.
pub(super) const SIZE_OF_CODE: [u16; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 16, 32, 64];
pub(super) const KINDS: [AccessKind; 4] = [
    AccessKind::Fetch,
    AccessKind::Load,
    AccessKind::Store,
    AccessKind::Modify,
];

/// Access size of each 3-bit data size code; code 0 is an escape.
pub(super) const DATA_SIZE_OF_CODE: [u16; 8] = [0, 1, 2, 4, 8, 16, 32, 64];

/// What a tag byte says about an access entry.
#[derive(Clone, Copy)]
pub(super) struct TagInfo {
    /// Access size; 0 marks an escape tag.
    pub(super) size: u16,
    /// What the access adds to its address to predict the next one from
    /// the same base: the size for fetches, 0 for data.
    pub(super) adv: u16,
    /// `AccessKind as u8`.
    pub(super) kind: u8,
    /// Prediction base: 0 fetch, 1 or 2 the two data bases.
    pub(super) sel: u8,
}

pub(super) const fn tag_info(tag: u8) -> TagInfo {
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
pub(super) const TAG_INFO: [TagInfo; 256] = {
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
pub(super) fn data_size_code(size: u16) -> u8 {
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
pub(super) fn size_code(size: u16) -> u8 {
    match size {
        1..=12 => size as u8,
        16 => 13,
        32 => 14,
        64 => 15,
        _ => 0,
    }
}

#[inline]
pub(super) fn zigzag(v: u64) -> u64 {
    let s = v as i64;
    ((s << 1) ^ (s >> 63)) as u64
}

#[inline]
pub(super) fn unzigzag(v: u64) -> u64 {
    (v >> 1) ^ (v & 1).wrapping_neg()
}

#[inline]
pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Why decoding a block payload failed, at a payload offset.
#[derive(Debug)]
pub(super) enum PayloadError {
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
pub(super) fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64, PayloadError> {
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
pub(super) fn get_u32_varint(
    buf: &[u8],
    pos: &mut usize,
    what: &'static str,
) -> Result<u32, PayloadError> {
    let at = *pos;
    let v = get_varint(buf, pos)?;
    u32::try_from(v).map_err(|_| PayloadError::BadField(at, what))
}

/// Address prediction state of one process in one block.
#[derive(Clone, Copy, Default)]
pub(super) struct Predict {
    /// `[fetch, data0, data1]`: predicted next fetch address (end of the
    /// last fetch) and two recent data addresses (say stack and heap).
    pub(super) base: [u64; 3],
    /// Writer only: the data base (1 or 2) used least recently, replaced
    /// when neither is near.
    pub(super) lru: u8,
}

/// Per-block codec state shared by writer and reader.
pub(super) struct CodecState {
    pub(super) pid: u32,
    pub(super) cur: Predict,
    pub(super) saved: Vec<(u32, Predict)>,
}

impl CodecState {
    pub(super) fn new() -> Self {
        CodecState {
            pid: 0,
            cur: Predict::default(),
            saved: Vec::new(),
        }
    }
    pub(super) fn reset(&mut self) {
        self.pid = 0;
        self.cur = Predict::default();
        self.saved.clear();
    }
    pub(super) fn switch(&mut self, pid: u32) {
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

/// Where decoding stands in a block: offsets in the raw payload of the next
/// tag (tag stream) and of the next entry's bytes (body stream).
#[derive(Clone, Copy)]
pub(super) struct Cursor {
    pub(super) tag: usize,
    pub(super) body: usize,
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
pub(super) fn decode_accesses(
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
pub(super) fn decode_event(
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
pub(super) fn decode_mapped_file(
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

pub(super) fn decode_process(raw: &[u8], pos: &mut usize) -> Result<ProcessInfo, PayloadError> {
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
