//! Decode speed of the `.vmt` reader (records per second on one core).
//!
//! `synthetic`: 4 Mi records shaped like a real program (loops of short
//! basic blocks with 1-to-9-byte instructions, stack and strided heap data).
//! Set `VMEMSIM_BENCH_VMT=path.vmt` to also time a real recording, or
//! `VMEMSIM_BENCH_INPUT=path` (any readable format) to convert one first
//! (the size it converts to is printed).

// `criterion_group!` generates an undocumented function.
#![allow(missing_docs)]

use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vmemsim_trace::vmt::{FinishStatus, Reader, Writer};
use vmemsim_trace::{Access, AccessKind, Record, RecordSource};

/// A small xorshift generator (benches need no `rand`).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Records shaped like a compiled loop nest: see the module docs.
fn synthetic(n: usize) -> Vec<Record> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::with_capacity(n);
    let code_base = 0x40_1000u64;
    let stack = 0x7ffd_1234_5000u64;
    let heap = 0x5555_5000_0000u64;
    let mut heap_i = 0u64;
    // A few loops, each a handful of basic blocks that repeat.
    let loops: Vec<Vec<(u64, Vec<u16>)>> = (0..64)
        .map(|_| {
            (0..4)
                .map(|_| {
                    let start = code_base + (rng.next() % 0x4_0000);
                    let sizes = (0..3 + rng.next() % 6)
                        .map(|_| 1 + (rng.next() % 9) as u16)
                        .collect();
                    (start, sizes)
                })
                .collect()
        })
        .collect();
    while out.len() < n {
        let l = &loops[(rng.next() % 64) as usize];
        let iters = 10 + rng.next() % 200;
        for _ in 0..iters {
            for (start, sizes) in l {
                let mut pc = *start;
                for &s in sizes {
                    out.push(Record::Access(Access {
                        addr: pc,
                        pid: 1,
                        size: s,
                        kind: AccessKind::Fetch,
                    }));
                    pc += u64::from(s);
                    match rng.next() % 8 {
                        0 | 1 => out.push(Record::Access(Access {
                            addr: stack - 8 * (rng.next() % 16),
                            pid: 1,
                            size: 8,
                            kind: AccessKind::Load,
                        })),
                        2 => out.push(Record::Access(Access {
                            addr: stack - 8 * (rng.next() % 16),
                            pid: 1,
                            size: 8,
                            kind: AccessKind::Store,
                        })),
                        3 => {
                            heap_i += 1;
                            out.push(Record::Access(Access {
                                addr: heap + 8 * (heap_i % (1 << 20)),
                                pid: 1,
                                size: 8,
                                kind: AccessKind::Load,
                            }))
                        }
                        4 => out.push(Record::Access(Access {
                            addr: heap + (rng.next() % (64 << 20)),
                            pid: 1,
                            size: 4,
                            kind: AccessKind::Modify,
                        })),
                        _ => {}
                    }
                }
            }
        }
    }
    out.truncate(n);
    out
}

fn write(path: &Path, recs: &[Record]) {
    let mut w = Writer::create(path, "bench").unwrap();
    for r in recs {
        w.push(r).unwrap();
    }
    let s = w
        .finish(FinishStatus::Complete { exit_code: Some(0) })
        .unwrap();
    eprintln!("{}: {s}", path.display());
}

fn decode_all(path: &Path, buf: &mut Vec<Record>) -> usize {
    let mut r = Reader::open(path).unwrap();
    let mut total = 0;
    loop {
        buf.clear();
        let n = r.next_batch(buf, 1 << 16).unwrap();
        if n == 0 {
            return total;
        }
        total += n;
    }
}

/// CPU time this thread has run, in ns (Linux `/proc/thread-self/schedstat`),
/// so a figure is not skewed by other processes on a shared machine.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Print decode speed per CPU-second (besides criterion's wall-clock figures).
fn report_cpu_speed(name: &str, path: &Path, buf: &mut Vec<Record>) {
    let Some(t0) = thread_cpu_ns() else { return };
    let mut n = 0;
    for _ in 0..10 {
        n += decode_all(path, buf);
    }
    let Some(t1) = thread_cpu_ns() else { return };
    eprintln!(
        "{name}: {:.1} M records per CPU-second",
        n as f64 / ((t1 - t0) as f64 / 1e9) / 1e6
    );
}

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("vmemsim-bench-{}.vmt", std::process::id()));
    let recs = synthetic(4 << 20);
    write(&path, &recs);
    let mut buf = Vec::with_capacity(1 << 16);
    report_cpu_speed("synthetic", &path, &mut buf);
    let mut g = c.benchmark_group("vmt_decode");
    g.sample_size(10);
    g.throughput(Throughput::Elements(recs.len() as u64));
    g.bench_function("synthetic", |b| b.iter(|| decode_all(&path, &mut buf)));
    let mut real = std::env::var_os("VMEMSIM_BENCH_VMT").map(PathBuf::from);
    if let Some(input) = std::env::var_os("VMEMSIM_BENCH_INPUT").map(PathBuf::from) {
        let out = dir.join(format!("vmemsim-bench-real-{}.vmt", std::process::id()));
        let s = vmemsim_trace::convert(&input, &out).unwrap();
        eprintln!("{} -> {}: {s}", input.display(), out.display());
        real = Some(out);
    }
    if let Some(real) = real {
        let n = decode_all(&real, &mut buf);
        report_cpu_speed("real", &real, &mut buf);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function("real", |b| b.iter(|| decode_all(&real, &mut buf)));
    }
    g.finish();
    std::fs::remove_file(&path).ok();
}

criterion_group!(benches, bench);
criterion_main!(benches);
