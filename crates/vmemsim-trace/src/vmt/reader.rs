//! [`Reader`]: reads a `.vmt` file block by block.

use super::*;

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
    pub(super) footer_offset: Option<u64>,
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
    pub(super) stream_processes: Vec<ProcessInfo>,
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
