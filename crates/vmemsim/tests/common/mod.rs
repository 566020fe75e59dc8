//! The oracle harness: runs records through one mode access by access and
//! checks each against a plain, uncached software walk of the guest tables
//! and the host's p2m.

#![allow(dead_code)]

use vmemsim::guest::softwalk;
use vmemsim::hv::{Mode, Native, Nested, Shadow};
use vmemsim::pte::x86;
use vmemsim::sim::{rights, Sim};
use vmemsim::stats::Stats;
use vmemsim::Config;
use vmemsim_trace::{Access, Event, ProcEvent, Record};

/// Where each access resolved: (gPFN, hPFN), in order.
pub type Resolutions = Vec<(u64, u64)>;

/// Run `records` on `mode`, checking every access against the oracle.
pub fn run_checked<M: Mode>(mode: M, cfg: &Config, records: &[Record]) -> (Resolutions, Stats) {
    let native = mode.vpid() == 0;
    let name = mode.name();
    let mut sim = Sim::new(mode, cfg);
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        match r {
            Record::Access(a) => {
                let mut got = None;
                sim.access(a, &mut |_, t| got = Some(t)).expect("access");
                let t = got.expect("observer called");
                check(&sim, a, t.gpfn, t.hpfn, native, name, i);
                out.push((t.gpfn, t.hpfn));
            }
            Record::Event(Event { pid, kind }) => sim.event(*pid, kind).expect("event"),
        }
    }
    (out, sim.machine.core.stats.clone())
}

fn check<M: Mode>(sim: &Sim<M>, a: &Access, gpfn: u64, hpfn: u64, native: bool, mode: &str, i: usize) {
    let p = sim.guest.current().expect("a process runs");
    let m = softwalk::translate(&sim.guest.mem, p.root, a.addr)
        .unwrap_or_else(|| panic!("{mode}: record {i}: {a:?} resolved but the guest does not map it"));
    assert_eq!(gpfn, m.gpfn, "{mode}: record {i}: {a:?}: gPFN differs from the oracle");
    assert!(m.pte & x86::A != 0, "{mode}: record {i}: accessed bit not set in the guest PTE");
    if a.kind.is_write() {
        assert!(m.pte & x86::RW != 0 && m.pte & x86::D != 0, "{mode}: record {i}: store through a clean or read-only guest PTE");
    }
    if native {
        assert_eq!(hpfn, gpfn, "{mode}: native hPA must equal gPA");
    } else {
        assert_eq!(Some(hpfn), sim.machine.core.host.p2m(gpfn), "{mode}: record {i}: hPFN differs from the p2m");
    }
}

/// Run `records` through native, nested and shadow; assert they agree on
/// every gPA, on every hPA (nested vs shadow) and on the guest faults.
/// Returns the stats of each mode in that order.
pub fn all_modes_agree(cfg: &Config, records: &[Record]) -> [Stats; 3] {
    let (rn, sn) = run_checked(Native, cfg, records);
    let (re, se) = run_checked(Nested, cfg, records);
    let (rs, ss) = run_checked(Shadow::new(), cfg, records);
    assert_eq!(rn.len(), re.len());
    for (i, ((n, e), s)) in rn.iter().zip(&re).zip(&rs).enumerate() {
        assert_eq!(n.0, e.0, "access {i}: native and nested gPFN differ");
        assert_eq!(n.0, s.0, "access {i}: native and shadow gPFN differ");
        assert_eq!(e.1, s.1, "access {i}: nested and shadow hPFN differ");
    }
    for s in [&se, &ss] {
        assert_eq!(s.guest_page_faults, sn.guest_page_faults, "guest faults differ between modes");
        assert_eq!(s.demand_faults, sn.demand_faults);
        assert_eq!(s.cow_faults, sn.cow_faults);
        assert_eq!(s.guest_pte_writes, sn.guest_pte_writes);
    }
    [sn, se, ss]
}

/// An access record.
pub fn acc(pid: u32, kind: vmemsim_trace::AccessKind, addr: u64) -> Record {
    Record::Access(Access { addr, pid, size: 8, kind })
}

/// An event record.
pub fn ev(pid: u32, kind: ProcEvent) -> Record {
    Record::Event(Event { pid, kind })
}

/// Run `src` to completion into a vector.
pub fn collect(src: &mut dyn vmemsim_trace::RecordSource) -> Vec<Record> {
    let mut v = Vec::new();
    while src.next_batch(&mut v, 4096).expect("read") > 0 {}
    v
}

/// Silence "unused" for rights in some test binaries.
pub fn _r() -> vmemsim::mmu::Rights {
    rights(vmemsim_trace::AccessKind::Load)
}
