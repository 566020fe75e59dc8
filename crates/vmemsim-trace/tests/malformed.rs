//! The malformed-file corpus under `tests/malformed/`: each file gives the
//! exact error (kind, file, byte offset, what was expected), and a cut-short
//! trace is read up to its last whole block with a warning.
//!
//! The corpus is made by `regenerate` (run with
//! `cargo test -p vmemsim-trace --test malformed -- --ignored regenerate`).

use std::path::{Path, PathBuf};

use vmemsim_trace::vmt::{self, FinishStatus, Writer};
use vmemsim_trace::{Access, AccessKind, Record, RecordSource, TraceError};

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/malformed")
        .join(name)
}

/// Read everything; return the records and the first error.
fn drain(src: &mut dyn RecordSource) -> (Vec<Record>, Option<TraceError>) {
    let mut out = Vec::new();
    loop {
        match src.next_batch(&mut out, 1000) {
            Ok(0) => return (out, None),
            Ok(_) => {}
            Err(e) => return (out, Some(e)),
        }
    }
}

/// Open with format detection and read to the first error.
fn first_error(name: &str) -> (Vec<Record>, TraceError) {
    let path = corpus(name);
    match vmemsim_trace::open(&path) {
        Err(e) => (Vec::new(), e),
        Ok(mut src) => {
            let (recs, err) = drain(src.as_mut());
            (recs, err.unwrap_or_else(|| panic!("{name}: no error")))
        }
    }
}

/// Assert a `Malformed` error naming `name`, at a place starting with
/// `at`, and saying something starting with `what`.
fn assert_malformed(err: &TraceError, name: &str, at: &str, what: &str) {
    match err {
        TraceError::Malformed {
            path,
            at: got_at,
            what: got_what,
        } => {
            assert_eq!(path, &corpus(name), "{err}");
            assert!(
                got_at.starts_with(at),
                "{name}: at {got_at:?}, expected {at:?}"
            );
            assert!(
                got_what.starts_with(what),
                "{name}: what {got_what:?}, expected {what:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains(name) && msg.contains("byte "), "{msg}");
        }
        other => panic!("{name}: expected Malformed, got {other:?}"),
    }
}

#[test]
fn bad_magic() {
    let (_, e) = first_error("bad_magic.vmt");
    assert_malformed(&e, "bad_magic.vmt", "byte 0", "bad magic");
}

#[test]
fn unknown_version() {
    let (_, e) = first_error("unknown_version.vmt");
    assert_malformed(&e, "unknown_version.vmt", "byte 8", "unknown version 9");
}

#[test]
fn truncated_block() {
    let (recs, e) = first_error("truncated_block.vmt");
    assert_eq!(recs.len(), 1);
    assert_malformed(
        &e,
        "truncated_block.vmt",
        "byte 22 (block 0), payload offset 7",
        "truncated block",
    );
}

#[test]
fn corrupt_zstd() {
    let (_, e) = first_error("corrupt_zstd.vmt");
    assert_malformed(&e, "corrupt_zstd.vmt", "byte 35", "corrupt zstd frame");
}

#[test]
fn bad_varint() {
    let (_, e) = first_error("bad_varint.vmt");
    assert_malformed(
        &e,
        "bad_varint.vmt",
        "byte 22 (block 0), payload offset 5",
        "bad varint",
    );
}

#[test]
fn trailing_body_bytes() {
    let (recs, e) = first_error("trailing_body.vmt");
    assert_eq!(recs.len(), 1);
    assert_malformed(
        &e,
        "trailing_body.vmt",
        "byte 22 (block 0), payload offset 6",
        "bad field: bytes after the last entry of the block",
    );
}

#[test]
fn bad_tag_stream_length() {
    let (_, e) = first_error("bad_tags_len.vmt");
    assert_malformed(
        &e,
        "bad_tags_len.vmt",
        "byte 22 (block 0), payload offset 0",
        "bad block payload: a tag stream of 200 bytes does not fit the 7-byte payload",
    );
}

#[test]
fn bad_block_tag() {
    let (_, e) = first_error("bad_block_tag.vmt");
    assert_malformed(&e, "bad_block_tag.vmt", "byte 22", "bad block tag 0x58");
}

#[test]
fn bad_champsim_size() {
    let (recs, e) = first_error("bad_size.champsim");
    // Two whole instructions (fetch + one load each) come first.
    assert_eq!(recs.len(), 4);
    assert_malformed(&e, "bad_size.champsim", "byte 128", "bad record size");
    assert!(e.to_string().contains("64 bytes"), "{e}");
}

#[test]
fn cut_trace_reads_whole_blocks_with_warning() {
    let path = corpus("cut_in_block.vmt");
    let mut src = vmemsim_trace::open(&path).unwrap();
    let (recs, err) = drain(src.as_mut());
    assert!(err.is_none(), "{err:?}");
    assert_eq!(recs, sample_records()[..200].to_vec());
    let w = src.warnings();
    assert!(w.iter().any(|w| w.contains("no footer")), "{w:?}");
    assert!(
        w.iter()
            .any(|w| w.contains("truncated block") && w.contains("2 whole blocks")),
        "{w:?}"
    );
    // `info` scans it and reports the warnings.
    let info = vmemsim_trace::info(&path).unwrap();
    assert!(!info.from_footer);
    assert_eq!(info.counts.total_accesses(), 200);
    assert!(info.to_string().contains("warning:"));
}

/// 300 accesses of one process, 100 per block.
fn sample_records() -> Vec<Record> {
    (0..300u64)
        .map(|i| {
            Record::Access(Access {
                addr: if i % 2 == 0 {
                    0x40_0000 + 2 * i
                } else {
                    0x7fff_0000 - 8 * (i % 13)
                },
                pid: 1,
                size: if i % 2 == 0 { 4 } else { 8 },
                kind: if i % 2 == 0 {
                    AccessKind::Fetch
                } else {
                    AccessKind::Load
                },
            })
        })
        .collect()
}

/// Header of a current-version file with creator "test" (22 bytes) plus a
/// block whose payload holds the tag stream `tags` and the body stream
/// `body`, declaring `records` records.
fn file_with_block(tags: &[u8], body: &[u8], records: u32) -> Vec<u8> {
    let mut raw = (tags.len() as u32).to_le_bytes().to_vec();
    raw.extend(tags);
    raw.extend(body);
    file_with_raw_block(&raw, records)
}

/// [`file_with_block`] with the raw payload given whole.
fn file_with_raw_block(raw: &[u8], records: u32) -> Vec<u8> {
    let mut f = header(vmt::VERSION);
    let comp = zstd::bulk::compress(raw, 3).unwrap();
    f.push(b'B');
    f.extend((comp.len() as u32).to_le_bytes());
    f.extend(records.to_le_bytes());
    f.extend((raw.len() as u32).to_le_bytes());
    f.extend(comp);
    f
}

fn header(version: u16) -> Vec<u8> {
    let mut h = vmt::MAGIC.to_vec();
    h.extend(version.to_le_bytes());
    h.extend([0u8; 6]);
    h.extend(4u16.to_le_bytes());
    h.extend(b"test");
    h
}

#[test]
#[ignore = "writes the corpus"]
fn regenerate() {
    let dir = corpus("");
    std::fs::create_dir_all(&dir).unwrap();
    let w = |n: &str, b: &[u8]| std::fs::write(dir.join(n), b).unwrap();
    w("bad_magic.vmt", b"VMT1 this is not a vmemsim trace\n");
    let mut v = header(9);
    v.extend(b"B...");
    w("unknown_version.vmt", &v);
    // One fetch (size 4, 1-byte delta) then a load whose 2-byte delta is
    // cut: the body ends after the first delta byte (payload offset 7).
    w(
        "truncated_block.vmt",
        &file_with_block(&[0x10 | 0x40, 0x11 | 0x80], &[0x08, 0x10], 2),
    );
    // A pid switch with an 11-byte varint (the body starts at offset 5).
    w(
        "bad_varint.vmt",
        &file_with_block(
            &[0x40],
            &[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            0,
        ),
    );
    // One fetch whose body stream has a stray byte after its delta.
    w(
        "trailing_body.vmt",
        &file_with_block(&[0x50], &[0x08, 0x99], 1),
    );
    // A tag stream said to be longer than the whole payload.
    w(
        "bad_tags_len.vmt",
        &file_with_raw_block(&[200, 0, 0, 0, 0x50, 0x08, 0x00], 1),
    );
    let mut z = file_with_block(&[0x50, 0x51, 0x51, 0x51], &[0x08], 4);
    // Block header is bytes 22..35; the zstd frame starts at 35: break its
    // magic number.
    z[35] ^= 0xff;
    w("corrupt_zstd.vmt", &z);
    let mut t = header(vmt::VERSION);
    t.extend(b"XXXXXXXXXXXXXXXX");
    w("bad_block_tag.vmt", &t);
    let mut c = Vec::new();
    for i in 0..2u64 {
        let mut r = [0u8; 64];
        r[..8].copy_from_slice(&(0x40_0000 + 4 * i).to_le_bytes());
        r[32..40].copy_from_slice(&(0x1000 + 8 * i).to_le_bytes());
        c.extend(r);
    }
    c.extend([0xaa; 10]);
    w("bad_size.champsim", &c);
    // A complete 3-block trace cut in the middle of its third block.
    let tmp = std::env::temp_dir().join(format!("vmemsim-corpus-{}.vmt", std::process::id()));
    let mut wr = Writer::create(&tmp, "corpus").unwrap();
    wr.set_block_records(100);
    for r in sample_records() {
        wr.push(&r).unwrap();
    }
    wr.finish(FinishStatus::Complete { exit_code: Some(0) })
        .unwrap();
    let bytes = std::fs::read(&tmp).unwrap();
    let r = vmt::Reader::open(&tmp).unwrap();
    let cut = r.footer().unwrap().blocks[2].offset as usize + 30;
    w("cut_in_block.vmt", &bytes[..cut]);
    std::fs::remove_file(&tmp).unwrap();
}
