//! Any text as a configuration file: a `Config` or a `ConfigError`, never a
//! panic; an accepted configuration round-trips through `config --dump`'s
//! TOML and runs a few records in every mode without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmemsim::{run_mode, Config, ModeKind};
use vmemsim_trace::{Access, AccessKind, ProcEvent, Record, RecordSource, TraceError};

struct Records(Vec<Record>);

impl RecordSource for Records {
    fn next_batch(&mut self, buf: &mut Vec<Record>, _max: usize) -> Result<usize, TraceError> {
        let n = self.0.len();
        buf.append(&mut self.0);
        Ok(n)
    }
}

fn workload() -> Vec<Record> {
    let mut v = Vec::new();
    for i in 0..40u64 {
        v.push(Record::Access(Access {
            addr: 0x40_0000 + 4 * i,
            pid: 1 + (i / 20) as u32,
            size: 4,
            kind: AccessKind::Fetch,
        }));
        v.push(Record::Access(Access {
            addr: 0x10_0000 + 4096 * (i % 7),
            pid: 1 + (i / 20) as u32,
            size: 8,
            kind: AccessKind::Store,
        }));
        if i == 10 {
            v.push(Record::event(1, ProcEvent::Fork { child: 2 }));
        }
    }
    v.push(Record::event(2, ProcEvent::Munmap { addr: 0x10_0000, len: 0x8000 }));
    v
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(cfg) = Config::from_toml(&text, "fuzz.toml") else {
        return;
    };
    let back = Config::from_toml(&cfg.to_toml(), "dump").expect("a dump parses");
    // NaN is the one value unequal to itself; compare the dumps then.
    assert_eq!(back.to_toml(), cfg.to_toml());
    let mut small = cfg;
    // Keep the fuzzer's memory bounded: frame tables grow with the guest.
    small.guest.mem_mib = small.guest.mem_mib.min(256);
    for mode in ModeKind::ALL {
        let _ = run_mode(mode, &small, &mut Records(workload()), &mut |_| {});
    }
});
