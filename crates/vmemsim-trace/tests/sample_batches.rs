//! The committed real recordings (`tests/data/*.vmt`) decode completely
//! through [`vmemsim_trace::open`] at any batch size, and what they decode
//! to agrees with their footers: accesses and events by kind, process
//! table and footprint (distinct pages, recomputed from the decoded
//! addresses and sizes), and every batch size gives the same records.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use vmemsim_trace::vmt::{self, Counts};
use vmemsim_trace::{Record, RecordSource};

/// The multi-process shell recordings of tests/data (`sh-*.vmt`; the
/// corpus recordings next to them are single programs, checked by the
/// simulator's tests and golden reports).
fn samples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "vmt"))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("sh-"))
        })
        .collect();
    v.sort();
    assert!(
        v.len() >= 3,
        "expected the sample recordings in {}",
        dir.display()
    );
    v
}

/// What a whole decode gives: counts recomputed from the records (the
/// footprint the way the writer counts it) and a hash of every record.
struct Decoded {
    counts: Counts,
    hash: u64,
    batches: u64,
    warnings: Vec<String>,
}

fn decode(path: &Path, max: usize, footprint: bool) -> Decoded {
    let mut src = vmemsim_trace::open(path).unwrap();
    let mut counts = Counts::default();
    let mut pages = HashSet::new();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut buf = Vec::new();
    let mut total = 0u64;
    let mut batches = 0u64;
    loop {
        buf.clear();
        let n = src.next_batch(&mut buf, max).unwrap_or_else(|e| {
            panic!(
                "{}: batch size {max}, after {total} records: {e}",
                path.display()
            )
        });
        if n == 0 {
            break;
        }
        assert_eq!(n, buf.len(), "{}: batch size {max}", path.display());
        assert!(n <= max, "{}: batch of {n} > {max}", path.display());
        total += n as u64;
        batches += 1;
        for r in &buf {
            match r {
                Record::Access(a) => {
                    counts.accesses[a.kind as usize] += 1;
                    (a.addr, a.pid, a.size, a.kind as u8).hash(&mut h);
                    if footprint {
                        let first = a.addr >> 12;
                        pages.insert((a.pid, first));
                        let last = a.addr.saturating_add(u64::from(a.size.max(1)) - 1) >> 12;
                        pages.insert((a.pid, last));
                    }
                }
                Record::Event(e) => {
                    counts.events[vmt::event_index(&e.kind)] += 1;
                    format!("{e:?}").hash(&mut h);
                }
            }
        }
    }
    counts.footprint_pages = pages.len() as u64;
    Decoded {
        counts,
        hash: h.finish(),
        batches,
        warnings: src.warnings(),
    }
}

#[test]
fn sample_recordings_decode_to_their_footer_counts_at_every_batch_size() {
    for path in samples() {
        let name = path.display();
        let r = vmt::Reader::open(&path).unwrap();
        assert!(r.header().is_complete(), "{name}");
        let footer = r.footer().unwrap_or_else(|| panic!("{name}: no footer"));
        let want = footer.counts.clone();
        let records = want.total_accesses() + want.total_events();
        assert!(want.total_accesses() > 100_000, "{name}");

        let full = decode(&path, 65536, true);
        assert_eq!(
            full.counts, want,
            "{name}: decoded counts and footprint vs footer"
        );
        assert!(full.warnings.is_empty(), "{name}: {:?}", full.warnings);
        // 65,536 records per block plus events: whole batches but the last.
        assert_eq!(full.batches, records.div_ceil(65536), "{name}");

        for max in [1usize, 7, 4096, 65537, 1 << 20] {
            let d = decode(&path, max, false);
            let mut counts = d.counts;
            counts.footprint_pages = want.footprint_pages;
            assert_eq!(counts, want, "{name}: batch size {max}");
            assert_eq!(
                d.hash, full.hash,
                "{name}: batch size {max} decodes differently"
            );
            assert_eq!(
                d.batches,
                records.div_ceil(max as u64),
                "{name}: batch size {max}"
            );
        }
    }
}

#[test]
fn sample_recordings_keep_their_process_tables() {
    for path in samples() {
        let r = vmt::Reader::open(&path).unwrap();
        let footer = r.footer().unwrap().processes.clone();
        let src = vmemsim_trace::open(&path).unwrap();
        assert_eq!(src.processes(), &footer[..], "{}", path.display());
        assert!(footer.len() >= 3, "{}", path.display());
    }
}
