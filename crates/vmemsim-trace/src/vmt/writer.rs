//! [`Writer`]: encodes records into blocks and writes header, blocks,
//! footer and trailer.

use super::*;

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
    pub(super) raw: Vec<u8>,
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
