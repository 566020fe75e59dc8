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
