// The simulator fuzz target's input decoding and check, shared (by
// `include!`) with `crates/vmemsim/tests/fuzz_regressions.rs`, which replays
// the committed crash inputs in `fuzz/regressions/simulator/`.

use vmemsim::{run_mode, Config, ModeKind};
use vmemsim_trace::{Access, AccessKind, ProcEvent, Record, RecordSource, TraceError};

/// Replays records from memory.
struct Records<'a>(&'a [Record]);

impl RecordSource for Records<'_> {
    fn next_batch(&mut self, buf: &mut Vec<Record>, max: usize) -> Result<usize, TraceError> {
        let n = max.min(self.0.len());
        buf.extend_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// Reads the fuzzer's bytes as numbers (zeros once they run out).
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |a, _| (a << 8) | u64::from(self.u8()))
    }
    /// An address: mostly in a few small regions (so pages, tables and
    /// huge pages get reused), sometimes any 64-bit value.
    fn addr(&mut self) -> u64 {
        let region = [0x40_0000u64, 0x7f00_0000_0000, 0x20_0000, 0xffff_ffff_ff60_0000];
        match self.u8() % 8 {
            7 => self.u64(),
            r => region[usize::from(r) % 4] + (u64::from(self.u8()) << 12) + u64::from(self.u8()),
        }
    }
    fn len(&mut self) -> u64 {
        match self.u8() % 8 {
            7 => self.u64(),
            r => u64::from(self.u8()) << (12 + r),
        }
    }
}

/// The record sequence the fuzzer's bytes stand for.
pub fn records(data: &[u8]) -> Vec<Record> {
    let mut b = Bytes(data);
    let mut out = Vec::new();
    while !b.0.is_empty() && out.len() < 4096 {
        let op = b.u8();
        let pid = u32::from(op >> 5) % 4 + 1;
        let kind = match op & 15 {
            0..=7 => {
                let k = [AccessKind::Fetch, AccessKind::Load, AccessKind::Store, AccessKind::Modify]
                    [usize::from(op & 3)];
                let addr = b.addr();
                out.push(Record::Access(Access {
                    addr,
                    pid,
                    size: u16::from(b.u8() % 65),
                    kind: k,
                }));
                continue;
            }
            8 => ProcEvent::Fork {
                child: u32::from(b.u8()) % 6,
            },
            9 => ProcEvent::Exec,
            10 => ProcEvent::Mmap {
                addr: b.addr(),
                len: b.len(),
                prot: u32::from(b.u8()),
                flags: 0x22,
                file: None,
            },
            11 => ProcEvent::Munmap {
                addr: b.addr(),
                len: b.len(),
            },
            12 => ProcEvent::Brk { addr: b.addr() },
            13 => ProcEvent::Mprotect {
                addr: b.addr(),
                len: b.len(),
                prot: u32::from(b.u8()),
            },
            _ => ProcEvent::Exit {
                code: i32::from(b.u8()),
            },
        };
        out.push(Record::event(pid, kind));
    }
    out
}

/// Run the records `data` decodes to through every mode: never a panic, and
/// every mode succeeds with the same accesses and guest faults, or every
/// mode fails with the same error.
pub fn check(data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let recs = records(&data[1..]);
    let mut cfg = Config::default();
    // Small guests run out of memory too; 2 MiB pages and PCIDs toggle.
    cfg.guest.mem_mib = 64;
    cfg.guest.huge_pages = (data[0] & 1 != 0).into();
    cfg.guest.pcid = data[0] & 2 != 0;
    cfg.selective.period_instructions = 64;
    cfg.agile.interval_instructions = 64;
    let mut outcomes = Vec::new();
    for mode in ModeKind::ALL {
        let r = run_mode(mode, &cfg, &mut Records(&recs), &mut |_| {});
        outcomes.push((
            mode,
            r.map(|m| (m.stats.accesses, m.stats.guest_page_faults))
                .map_err(|e| e.to_string()),
        ));
    }
    let (first, want) = &outcomes[0];
    for (mode, got) in &outcomes[1..] {
        assert_eq!(got, want, "{mode:?} disagrees with {first:?}");
    }
}
