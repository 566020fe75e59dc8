//! The footer: its encoding, decoding, and reading it from the trailer.

use super::*;

/// A path cut to at most [`MAX_PATH`] bytes on a character boundary.
pub(super) fn cut_path(p: &str) -> &str {
    let mut end = p.len().min(MAX_PATH);
    while !p.is_char_boundary(end) {
        end -= 1;
    }
    &p[..end]
}

/// The mapped-file part of a version 3 mmap event: LEB128 kind (0 none,
/// 1 path only, 2 path and fingerprint), then LEB128 offset, LEB128 path
/// length, path bytes and, for kind 2, LEB128 size and the u64 hash.
pub(super) fn put_mapped_file(r: &mut Vec<u8>, file: Option<&MappedFile>) {
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

pub(super) fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub(super) fn encode_footer(f: &Footer) -> Vec<u8> {
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
pub(super) struct Cur<'a> {
    pub(super) b: &'a [u8],
    pub(super) p: usize,
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

pub(super) fn decode_footer(b: &[u8], version: u16) -> Result<Footer, usize> {
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

/// Read the trailer and footer; `None` when the file has no valid trailer.
pub(super) fn read_footer(
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
