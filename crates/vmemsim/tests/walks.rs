//! Hand-computed walks with exact reference counts.

mod common;

use vmemsim::config::{Config, WalkCacheConfig};
use vmemsim::hv::{Direct, Mode, Native, Nested, Shadow};
use vmemsim::mmu::Dim;
use vmemsim::sim::Sim;
use vmemsim_trace::{AccessKind, ProcEvent};

use common::{acc, ev};

const A: u64 = 0x7f00_0000_0000;
const B: u64 = A + 0x1000;

/// Map a 4 MiB area, touch pages A and B, flush every TLB and walk cache,
/// then return the walk references of one more access to `A`, and then of
/// one to `B` after flushing only the TLBs.
fn cold_then_warm<M: Mode>(mode: M, cfg: &Config) -> (u64, u64, [u64; 3]) {
    let mut sim = Sim::new(mode, cfg);
    let setup = [
        ev(1, ProcEvent::Mmap { addr: A, len: 4 << 20, prot: 3, flags: 0x22 }),
        acc(1, AccessKind::Load, A),
        acc(1, AccessKind::Load, B),
    ];
    for r in &setup {
        match r {
            vmemsim_trace::Record::Access(a) => sim.access(a, &mut |_, _| {}).unwrap(),
            vmemsim_trace::Record::Event(e) => sim.event(e.pid, &e.kind).unwrap(),
        }
    }
    sim.machine.core.hw.flush_translation_caches();
    let before = sim.stats().clone();
    sim.access(&load(A), &mut |_, _| {}).unwrap();
    let cold = sim.stats().since(&before);
    assert_eq!(cold.walks, 1, "one walk, no fault");
    assert_eq!(cold.total_exits(), 0);
    sim.machine.core.hw.tlbs.flush_all();
    let before = sim.stats().clone();
    sim.access(&load(B), &mut |_, _| {}).unwrap();
    let warm = sim.stats().since(&before);
    (cold.walk_refs(), warm.walk_refs(), cold.walk_refs_by_dim)
}

fn load(addr: u64) -> vmemsim_trace::Access {
    vmemsim_trace::Access { addr, pid: 1, size: 8, kind: AccessKind::Load }
}

fn caches_off() -> Config {
    Config { walk_caches: WalkCacheConfig::all_off(), ..Config::default() }
}

#[test]
fn cold_native_walk_is_4_references() {
    let (cold, warm, dims) = cold_then_warm(Native, &caches_off());
    assert_eq!(cold, 4);
    assert_eq!(dims, [4, 0, 0]);
    assert_eq!(warm, 4, "no PWC: the neighbour walks all 4 levels too");
}

#[test]
fn cold_shadow_walk_is_4_references() {
    let (cold, _, dims) = cold_then_warm(Shadow::new(), &caches_off());
    assert_eq!(cold, 4);
    assert_eq!(dims[Dim::Shadow as usize], 4);
}

#[test]
fn cold_nested_walk_is_24_references() {
    // 4 guest levels x (4 EPT references + 1 guest reference) + 4 for the final gPA.
    let (cold, warm, dims) = cold_then_warm(Nested, &caches_off());
    assert_eq!(cold, 24);
    assert_eq!(dims[Dim::Guest as usize], 4);
    assert_eq!(dims[Dim::Nested as usize], 20);
    assert_eq!(warm, 24);
}

#[test]
fn nested_2m_guest_page_over_4k_ept_is_19_references() {
    // 3 guest levels x (4 + 1) + 4 for the final gPA.
    let mut cfg = caches_off();
    cfg.guest.huge_pages = true;
    let (cold, _, dims) = cold_then_warm(Nested, &cfg);
    assert_eq!(cold, 19);
    assert_eq!(dims[Dim::Guest as usize], 3);
}

#[test]
fn native_2m_page_is_3_references() {
    let mut cfg = caches_off();
    cfg.guest.huge_pages = true;
    assert_eq!(cold_then_warm(Native, &cfg).0, 3);
}

#[test]
fn warm_walk_caches_cut_references() {
    // After the cold walk of A: the PDE cache skips to the PT page; in
    // nested mode the nested TLB translates the PT page and the EPT PDE cache
    // leaves one EPT reference for B's data frame.
    let cfg = Config::default();
    let (cold, warm, _) = cold_then_warm(Native, &cfg);
    assert_eq!((cold, warm), (4, 1));
    // Cold, the EPT PDE cache already warms within the walk: the root's gPA
    // takes 4 EPT references, the PDPT, PD, PT and data frames (same 2 MiB
    // of gPA) 1 each: 4 + 1 + 3 x (1 + 1) + 1 = 12.
    let (cold, warm, _) = cold_then_warm(Nested, &cfg);
    assert_eq!((cold, warm), (12, 2));
    let (cold, warm, _) = cold_then_warm(Shadow::new(), &cfg);
    assert_eq!((cold, warm), (4, 1));
}

#[test]
fn cold_direct_walk_is_4_references() {
    // Xen PV direct paging: the machine tables are walked 1-D, in the guest dimension.
    let cfg = caches_off();
    let (cold, warm, dims) = cold_then_warm(Direct::new(&cfg.pv, cfg.guest.mem_mib), &cfg);
    assert_eq!(cold, 4);
    assert_eq!(dims, [4, 0, 0]);
    assert_eq!(warm, 4);
    let cfg = Config::default();
    let (cold, warm, _) = cold_then_warm(Direct::new(&cfg.pv, cfg.guest.mem_mib), &cfg);
    assert_eq!((cold, warm), (4, 1), "PDE cache as natively");
}

#[test]
fn direct_2m_guest_page_is_splintered_to_4_references() {
    let mut cfg = caches_off();
    cfg.guest.huge_pages = true;
    assert_eq!(cold_then_warm(Direct::new(&cfg.pv, cfg.guest.mem_mib), &cfg).0, 4);
}
