//! The recorder's fast paths against the plain ones, on real recordings
//! (`tests/data/*.vmt`): the one-pass access-line parser against
//! `LineParser::parse_line` line by line, and `Writer::push_all` against
//! `Writer::push` one record at a time. Each must give the same records
//! (and the writer the same bytes).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use vmemsim_trace::lackey::{self, LineParser};
use vmemsim_trace::vmt::{self, FinishStatus};
use vmemsim_trace::{AccessKind, Record, RecordSource};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data")
        .join(name)
}

fn read_vmt(path: &Path) -> Vec<Record> {
    let mut r = vmt::Reader::open(path).unwrap();
    let mut all = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if r.next_batch(&mut buf, 4096).unwrap() == 0 {
            break;
        }
        all.append(&mut buf);
    }
    all
}

/// The accesses of process `pid` in `records`, as lackey prints them
/// (`lk_main.c`: `"I  %08lx,%lu\n"`, `" L %08lx,%lu\n"`, ...).
fn lackey_text(records: &[Record], pid: u32) -> (Vec<u8>, Vec<Record>) {
    let mut text = Vec::new();
    let mut kept = Vec::new();
    for r in records {
        let Record::Access(a) = r else { continue };
        if a.pid != pid {
            continue;
        }
        let head = match a.kind {
            AccessKind::Fetch => "I ",
            AccessKind::Load => " L",
            AccessKind::Store => " S",
            AccessKind::Modify => " M",
        };
        writeln!(text, "{head} {:08x},{}", a.addr, a.size).unwrap();
        kept.push(r.clone());
    }
    (text, kept)
}

#[test]
fn the_one_pass_parser_reads_real_recordings_as_parse_line_does() {
    for name in ["gzip-small.vmt", "sh-ls-wc.vmt"] {
        let records = read_vmt(&data(name));
        let Some(Record::Access(first)) = records.iter().find(|r| matches!(r, Record::Access(_)))
        else {
            panic!("{name}: no access");
        };
        let (text, expected) = lackey_text(&records, first.pid);
        assert!(expected.len() > 10_000, "{name}: {}", expected.len());

        // Plain: every line through parse_line.
        let mut plain = Vec::new();
        let mut p = LineParser::new(Some(first.pid));
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            p.parse_line(line, &mut plain).unwrap();
        }
        assert_eq!(plain, expected, "{name}");

        // Fast, in chunks of awkward sizes (as reads from a pipe arrive),
        // the lines near each chunk's end through parse_line.
        let mut fast = Vec::new();
        let p = &mut LineParser::new(Some(first.pid));
        let (mut pos, mut fast_lines) = (0, 0u64);
        for chunk_end in (0..text.len()).step_by(4093).skip(1).chain([text.len()]) {
            loop {
                let (used, lines) =
                    p.parse_access_lines(&text[pos..chunk_end], &mut fast, usize::MAX);
                pos += used;
                fast_lines += lines;
                let Some(nl) = text[pos..chunk_end].iter().position(|&b| b == b'\n') else {
                    break;
                };
                p.parse_line(&text[pos..pos + nl], &mut fast).unwrap();
                pos += nl + 1;
            }
        }
        assert_eq!(pos, text.len());
        assert_eq!(fast, expected, "{name}");
        // Most lines take the fast path: all but those within a window of
        // a chunk's end (at most 48 bytes / 13-byte lines, ~4 per chunk).
        let chunks = text.len().div_ceil(4093) as u64;
        assert!(
            fast_lines >= expected.len() as u64 - 4 * chunks,
            "{name}: {fast_lines} of {}",
            expected.len()
        );

        // And the lackey reader (`convert`) on the same text.
        let mut r = lackey::Reader::with_pid(name, std::io::Cursor::new(text), first.pid);
        let mut read = Vec::new();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            if r.next_batch(&mut buf, 777).unwrap() == 0 {
                break;
            }
            read.append(&mut buf);
        }
        assert_eq!(read, expected, "{name}");
    }
}

#[test]
fn push_all_writes_the_bytes_push_writes() {
    let dir = std::env::temp_dir().join(format!("vmemsim-fast-paths-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["fork-workers.vmt", "sh-sort-uniq.vmt"] {
        let src = vmt::Reader::open(&data(name)).unwrap();
        let processes = src.processes().to_vec();
        drop(src);
        let records = read_vmt(&data(name));
        let write = |out: &Path, chunk: Option<usize>| {
            let mut w = vmt::Writer::create(out, "fast_paths test").unwrap();
            w.set_block_records(5000);
            for p in &processes {
                w.add_process(p.clone());
            }
            match chunk {
                None => records.iter().for_each(|r| w.push(r).unwrap()),
                Some(n) => records.chunks(n).for_each(|c| w.push_all(c).unwrap()),
            }
            w.finish(FinishStatus::Complete { exit_code: Some(0) })
                .unwrap();
            std::fs::read(out).unwrap()
        };
        let one = write(&dir.join("one.vmt"), None);
        for n in [1, 7, 65_536] {
            let all = write(&dir.join(format!("all-{n}.vmt")), Some(n));
            assert!(
                all == one,
                "{name}: push_all in chunks of {n} wrote other bytes"
            );
        }
        assert_eq!(read_vmt(&dir.join("one.vmt")), records, "{name}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
