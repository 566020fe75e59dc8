//! Hand-computed walks with exact reference counts.

mod common;

use vmemsim::config::{Config, HugePages, WalkCacheConfig};
use vmemsim::guest::softwalk;
use vmemsim::hv::{Agile, Direct, Mode, Native, Nested, Shadow};
use vmemsim::mmu::Dim;
use vmemsim::sim::Sim;
use vmemsim_trace::{AccessKind, ProcEvent};

use common::{acc, ev};

const A: u64 = 0x7f00_0000_0000;
const B: u64 = A + 0x1000;

/// Map a 4 MiB area for process 1 and touch pages A and B (faults included).
fn map_and_touch_a_and_b<M: Mode>(sim: &mut Sim<M>) {
    map_len_and_touch_a_and_b(sim, 4 << 20);
}

/// Map `len` bytes at `A` (1 GiB-aligned) for process 1 and touch pages A and B.
fn map_len_and_touch_a_and_b<M: Mode>(sim: &mut Sim<M>, len: u64) {
    let setup = [
        ev(
            1,
            ProcEvent::Mmap {
                addr: A,
                len,
                prot: 3,
                flags: 0x22,
                file: None,
            },
        ),
        acc(1, AccessKind::Load, A),
        acc(1, AccessKind::Load, B),
    ];
    for r in &setup {
        match r {
            vmemsim_trace::Record::Access(a) => sim.access(a, &mut |_, _| {}).unwrap(),
            vmemsim_trace::Record::Event(e) => sim.event(e.pid, &e.kind).unwrap(),
        }
    }
}

/// Map a 4 MiB area, touch pages A and B, flush every TLB and walk cache,
/// then return the walk references of one more access to `A`, and then of
/// one to `B` after flushing only the TLBs.
fn cold_then_warm<M: Mode>(mode: M, cfg: &Config) -> (u64, u64, [u64; 3]) {
    cold_then_warm_len(mode, cfg, 4 << 20)
}

/// [`cold_then_warm`] over a mapping of `len` bytes at `A`.
fn cold_then_warm_len<M: Mode>(mode: M, cfg: &Config, len: u64) -> (u64, u64, [u64; 3]) {
    let mut sim = Sim::new(mode, cfg);
    map_len_and_touch_a_and_b(&mut sim, len);
    sim.hw.flush_translation_caches();
    let before = sim.stats().clone();
    sim.access(&load(A), &mut |_, _| {}).unwrap();
    let cold = sim.stats().since(&before);
    assert_eq!(cold.walks, 1, "one walk, no fault");
    assert_eq!(cold.total_exits(), 0);
    sim.hw.tlbs.flush_all();
    let before = sim.stats().clone();
    sim.access(&load(B), &mut |_, _| {}).unwrap();
    let warm = sim.stats().since(&before);
    (cold.walk_refs(), warm.walk_refs(), cold.walk_refs_by_dim)
}

fn load(addr: u64) -> vmemsim_trace::Access {
    vmemsim_trace::Access {
        addr,
        pid: 1,
        size: 8,
        kind: AccessKind::Load,
    }
}

fn caches_off() -> Config {
    Config {
        walk_caches: WalkCacheConfig::all_off(),
        ..Config::default()
    }
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
    cfg.guest.huge_pages = HugePages::Huge2M;
    let (cold, _, dims) = cold_then_warm(Nested, &cfg);
    assert_eq!(cold, 19);
    assert_eq!(dims[Dim::Guest as usize], 3);
}

#[test]
fn native_2m_page_is_3_references() {
    let mut cfg = caches_off();
    cfg.guest.huge_pages = HugePages::Huge2M;
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
    cfg.guest.huge_pages = HugePages::Huge2M;
    assert_eq!(
        cold_then_warm(Direct::new(&cfg.pv, cfg.guest.mem_mib), &cfg).0,
        4
    );
}

/// Agile paging: set up as [`cold_then_warm`], then put the guest tables of
/// `A`'s path at the levels in `nested` (4 = the root, 1 = the PT) in nested
/// mode and the others in shadow mode, take the hidden faults once, flush
/// every TLB and walk cache, and return the references of one more access
/// to `A` (by dimension) with the agile walk counters.
fn agile_cold(cfg: &Config, nested: &[u8]) -> ([u64; 3], [u64; 5]) {
    let root_hpa = cfg.agile.root_hpa;
    let mut sim = Sim::new(Agile::new(cfg), cfg);
    map_and_touch_a_and_b(&mut sim);
    let root = sim.guest.current().unwrap().root;
    let path = softwalk::path(&sim.guest.mem, root, 4, A);
    assert_eq!(path.len, 4);
    let m = &mut sim.machine.on(&mut sim.hw, &mut sim.host);
    for (i, &(table, _, _)) in path.steps.iter().enumerate() {
        let level = 4 - i as u8;
        if nested.contains(&level) {
            m.mode.force_nested(&mut m.core, table);
        } else {
            m.mode.force_shadow(&mut m.core, table);
        }
        assert_eq!(m.mode.is_nested(table), nested.contains(&level));
    }
    sim.access(&load(A), &mut |_, _| {}).unwrap(); // hidden faults refill the shadow part
    sim.hw.flush_translation_caches();
    let before = sim.stats().clone();
    let by_switch = sim.stats().walks_by_switch;
    sim.access(&load(A), &mut |_, _| {}).unwrap();
    let cold = sim.stats().since(&before);
    assert_eq!(cold.walks, 1, "one walk, no fault");
    assert_eq!(cold.total_exits(), 0);
    let after = sim.stats().walks_by_switch;
    assert_eq!(
        refs_of(&sim),
        agile_refs(nested, root_hpa),
        "agile walk with levels {nested:?} nested"
    );
    (
        cold.walk_refs_by_dim,
        std::array::from_fn(|i| after[i] - by_switch[i]),
    )
}

fn dims(shadow: u64, guest: u64, nested: u64) -> [u64; 3] {
    let mut d = [0; 3];
    d[Dim::Shadow as usize] = shadow;
    d[Dim::Guest as usize] = guest;
    d[Dim::Nested as usize] = nested;
    d
}

#[test]
fn cold_agile_walk_fully_shadowed_is_4_references() {
    let (d, at) = agile_cold(&caches_off(), &[]);
    assert_eq!(d, dims(4, 0, 0));
    assert_eq!(at, [1, 0, 0, 0, 0]);
}

#[test]
fn cold_agile_walk_switched_at_the_root_is_20_references() {
    // The root is nested, so are the tables below it. The hypervisor put
    // the guest PML4's hPA in CR3 (`agile.root_hpa`, default): the guest
    // PML4E is read at its hPA without an EPT walk (1), the PDPT, PD and PT
    // each cost an EPT walk and the guest entry (3 x (4 + 1)), the data gPA
    // an EPT walk (4): 1 + 15 + 4 = 20 \[AP16\].
    let (d, at) = agile_cold(&caches_off(), &[4, 3, 2, 1]);
    assert_eq!(d, dims(0, 4, 16));
    assert_eq!(at, [0, 0, 0, 0, 1]);
    // Only the root nested: the walk never reaches the shadow below it.
    assert_eq!(agile_cold(&caches_off(), &[4]).0, dims(0, 4, 16));
}

#[test]
fn cold_agile_walk_switched_at_a_gpa_root_is_24_references() {
    // `root_hpa = false`: CR3 holds the guest root's gPA, so the root too
    // is translated through the EPT: a plain 2-D walk, 4 x (4 + 1) + 4.
    let mut cfg = caches_off();
    cfg.agile.root_hpa = false;
    let (d, at) = agile_cold(&cfg, &[4, 3, 2, 1]);
    assert_eq!(d, dims(0, 4, 20));
    assert_eq!(at, [0, 0, 0, 0, 1]);
}

#[test]
fn cold_agile_walks_are_4_8_12_16_20_or_24_references() {
    // Every place a walk can switch, cold, no walk cache [AP16]: fully
    // shadowed, switched at the PT, PD, PDPT, root (hPA in CR3), and the
    // root with its gPA in CR3.
    let total = |cfg: &Config, nested: &[u8]| agile_cold(cfg, nested).0.iter().sum::<u64>();
    let off = caches_off();
    let mut gpa_root = caches_off();
    gpa_root.agile.root_hpa = false;
    let got = [
        total(&off, &[]),
        total(&off, &[1]),
        total(&off, &[2, 1]),
        total(&off, &[3, 2, 1]),
        total(&off, &[4, 3, 2, 1]),
        total(&gpa_root, &[4, 3, 2, 1]),
    ];
    assert_eq!(got, [4, 8, 12, 16, 20, 24]);
}

#[test]
fn cold_agile_walk_switched_below_the_root_is_8_12_or_16_references() {
    // PT nested: shadow PML4E, PDPTE, PDE (3; the PDE is the switching
    // entry and holds the guest PT's hPA), the guest PTE read at that hPA
    // (1, no EPT walk), the data gPA through the EPT (4): 8.
    let (d, at) = agile_cold(&caches_off(), &[1]);
    assert_eq!(d, dims(3, 1, 4));
    assert_eq!(at, [0, 1, 0, 0, 0]);
    // PD nested: 2 shadow + 1 guest PDE at its hPA + (4 EPT + 1) for the
    // PT + 4 for the data: 12.
    let (d, at) = agile_cold(&caches_off(), &[2, 1]);
    assert_eq!(d, dims(2, 2, 8));
    assert_eq!(at, [0, 0, 1, 0, 0]);
    // PDPT nested: 1 + 1 + 2 x (4 + 1) + 4 = 16.
    let (d, at) = agile_cold(&caches_off(), &[3]);
    assert_eq!(d, dims(1, 3, 12));
    assert_eq!(at, [0, 0, 0, 1, 0]);
}

#[test]
fn agile_new_process_starts_nested() {
    // A new address space runs with its root nested for its first
    // interval: the measured walk is the 2-D walk from the guest PML4's
    // hPA in CR3, 20 references.
    let cfg = caches_off();
    let (cold, warm, d) = cold_then_warm(Agile::new(&cfg), &cfg);
    assert_eq!((cold, warm), (20, 20));
    assert_eq!(d, dims(0, 4, 16));
}

#[test]
fn agile_policy_moves_written_tables_to_nested_and_clean_ones_back() {
    // Intervals of 1000 instructions (fetches count as instructions).
    // Unsync off, so that every store to a shadowed PT exits (with it, the
    // first store would unsync the PT and the second not exit).
    let mut cfg = caches_off();
    cfg.agile.interval_instructions = 1000;
    cfg.shadow = vmemsim::config::ShadowConfig::strict();
    let mut sim = Sim::new(Agile::new(&cfg), &cfg);
    let run = |sim: &mut Sim<Agile>, recs: &[vmemsim_trace::Record]| {
        for r in recs {
            match r {
                vmemsim_trace::Record::Access(a) => sim.access(a, &mut |_, _| {}).unwrap(),
                vmemsim_trace::Record::Event(e) => sim.event(e.pid, &e.kind).unwrap(),
            }
        }
    };
    run(
        &mut sim,
        &[
            common::anon_mmap_prot(1, A, 4 << 20, 7),
            acc(1, AccessKind::Fetch, A),
        ],
    );
    let root = sim.guest.current().unwrap().root;
    assert!(
        sim.machine.mode.is_nested(root),
        "a new address space starts nested"
    );
    // Clean for whole intervals, but not yet for 100 refills of the root:
    // it has 1 present entry, one refill is an exit (1200 cycles) and a
    // fill (2500), so it must be clean for 100 x 3700 = 370 000 cycles,
    // i.e. instructions at CPI 1, counted from its last store (the PML4E
    // of the first fetch's fault, at instruction 1). Boundaries fall every
    // 1000 instructions: at 370 000 it has been clean for 369 999; at
    // 371 000 it returns.
    let fetch_until = |sim: &mut Sim<Agile>, n: u64| {
        while sim.stats().instructions < n {
            run(sim, &[acc(1, AccessKind::Fetch, A)]);
        }
    };
    fetch_until(&mut sim, 370_999);
    assert!(
        sim.machine.mode.is_nested(root),
        "clean for 369 intervals, not yet for 100 refills"
    );
    fetch_until(&mut sim, 371_001);
    assert!(
        !sim.machine.mode.is_nested(root),
        "clean for 100 refills: back to shadow"
    );
    sim.hw.flush_translation_caches();
    let before = sim.stats().clone();
    run(&mut sim, &[acc(1, AccessKind::Fetch, A)]);
    let d = sim.stats().since(&before);
    assert_eq!(
        d.walk_refs_by_dim[Dim::Shadow as usize],
        d.walk_refs(),
        "fully shadowed"
    );
    assert!(d.walk_refs() >= 4);
    // Two PTE stores to A's PT within an interval (demand faults on two
    // more pages): the PT goes nested, walks switch at the PDE: 8 refs.
    let pt = softwalk::path(&sim.guest.mem, root, 4, A).steps[3].0;
    let exits = sim.stats().exits_for(vmemsim::stats::ExitReason::PtWrite);
    run(
        &mut sim,
        &[
            acc(1, AccessKind::Load, B),
            acc(1, AccessKind::Load, B + 0x1000),
        ],
    );
    assert!(sim.machine.mode.is_nested(pt));
    assert_eq!(
        sim.stats().exits_for(vmemsim::stats::ExitReason::PtWrite) - exits,
        2,
        "both stores to the shadowed PT exit; the second moves it to nested"
    );
    sim.hw.flush_translation_caches();
    let before = sim.stats().clone();
    run(&mut sim, &[acc(1, AccessKind::Load, B)]);
    let d = sim.stats().since(&before);
    assert_eq!(d.walk_refs_by_dim, dims(3, 1, 4));
}

// Exact reference lists of cold walks: (hPA, level, dimension) in order.
//
// Where every table lives, fixed by the allocators (the same in every test
// below, since each maps the same area and touches A, then B):
// - guest frames come from 2 MiB chunks from gPFN 0x200 (0..0x200 is the
//   guest kernel's): A's PML4 0x200, PDPT 0x201, PD 0x202, PT 0x203, A's
//   data frame 0x204 (B's 0x205);
// - the host backs guest frames in order of first touch from hPFN 0:
//   0x200 -> 0, 0x201 -> 1, 0x202 -> 2, 0x203 -> 3, 0x204 -> 4;
// - hypervisor table pages come from hPFN HV_FRAME_BASE = 0x1000_0000
//   (hPA 1 TiB) on: the EPT root first, then the EPT PDPT, PD and PT that
//   backing gPFN 0x200 needed (0x1000_0001..3), then shadow pages in the
//   order the shadow of A's path was built: root 0x1000_0004, PDPT
//   0x1000_0005, PD 0x1000_0006, PT 0x1000_0007;
// - A = 0x7f00_0000_0000 has PML4 index 0xfe and index 0 below; the guest
//   frames 0x200..0x205 (gPA 2 MiB + n pages) have EPT indices 0, 0, 1
//   (PML4, PDPT, PD) and gPFN & 511 in the EPT PT.

type Ref = (u64, u8, Dim);

const HV: u64 = vmemsim::host::HV_FRAME_BASE;

/// The entry of table frame `frame` at `idx` (8-byte entries).
fn entry(frame: u64, idx: u64) -> u64 {
    (frame << 12) | (idx * 8)
}

/// The guest's table at `level` on A's path (0x200 is the PML4 .. 0x203 the
/// PT) and the index A uses in it.
fn guest_table(level: u8) -> (u64, u64) {
    (
        0x200 + u64::from(4 - level),
        if level == 4 { 0xfe } else { 0 },
    )
}

/// The 4 EPT references translating guest frame `gpfn` (root, PDPT, PD, PT).
fn ept_walk(gpfn: u64) -> [Ref; 4] {
    [
        (entry(HV, 0), 4, Dim::Nested),
        (entry(HV + 1, 0), 3, Dim::Nested),
        (entry(HV + 2, 1), 2, Dim::Nested),
        (entry(HV + 3, gpfn & 511), 1, Dim::Nested),
    ]
}

/// The guest-dimension reference of a 2-D walk at `level`: the guest entry
/// read at its hPA (guest frame 0x200 + n is backed by hPFN n).
fn guest_ref_2d(level: u8) -> Ref {
    let (table, idx) = guest_table(level);
    (entry(table - 0x200, idx), level, Dim::Guest)
}

/// The shadow-table reference at `level` (shadow pages 0x1000_0004 = the
/// root .. 0x1000_0007 = the PT).
fn shadow_ref(level: u8) -> Ref {
    let (_, idx) = guest_table(level);
    (
        entry(HV + 4 + u64::from(4 - level), idx),
        level,
        Dim::Shadow,
    )
}

/// A 2-D walk from the guest table at `from` (4 = the root) down, each
/// table translated through the EPT, then the data frame 0x204; `switched`:
/// the first table's hPA came from a switching entry (no EPT walk for it).
fn walk_2d_refs(from: u8, switched: bool) -> Vec<Ref> {
    let mut v = Vec::new();
    for level in (1..=from).rev() {
        if !(switched && level == from) {
            v.extend(ept_walk(guest_table(level).0));
        }
        v.push(guest_ref_2d(level));
    }
    v.extend(ept_walk(0x204));
    v
}

/// What agile's walk of A reads with the levels in `nested` walked nested:
/// shadow entries down to the first nested level, then 2-D (a nested root
/// is walked 2-D from the guest CR3: from its hPA with `root_hpa`, else
/// with an EPT walk for the root).
fn agile_refs(nested: &[u8], root_hpa: bool) -> Vec<Ref> {
    let Some(&top) = nested.iter().max() else {
        return (1..=4).rev().map(shadow_ref).collect();
    };
    let mut v: Vec<Ref> = (top + 1..=4).rev().map(shadow_ref).collect();
    v.extend(walk_2d_refs(top, top != 4 || root_hpa));
    v
}

/// The references of the last finished walk.
fn refs_of<M: Mode>(sim: &Sim<M>) -> Vec<Ref> {
    let dim = |d: u8| [Dim::Guest, Dim::Nested, Dim::Shadow][usize::from(d)];
    sim.hw
        .rec
        .last()
        .iter()
        .map(|r| (r.hpa, r.level, dim(r.dim)))
        .collect()
}

/// Set up as [`cold_then_warm`], flush every TLB and walk cache, access `A`
/// once: the references of that one walk.
fn cold_refs<M: Mode>(mode: M, cfg: &Config) -> Vec<Ref> {
    let mut sim = Sim::new(mode, cfg);
    map_and_touch_a_and_b(&mut sim);
    sim.hw.flush_translation_caches();
    let walks = sim.stats().walks;
    sim.access(&load(A), &mut |_, _| {}).unwrap();
    assert_eq!(sim.stats().walks, walks + 1, "one walk");
    refs_of(&sim)
}

#[test]
fn cold_native_and_direct_walks_read_the_guest_path() {
    // Native: the guest tables at their gPA (= hPA), PML4E .. PTE.
    let native: Vec<Ref> = (1..=4)
        .rev()
        .map(|l| {
            let (t, i) = guest_table(l);
            (entry(t, i), l, Dim::Guest)
        })
        .collect();
    assert_eq!(cold_refs(Native, &caches_off()), native);
    // Direct: the machine copies of the same tables, at the host frames
    // backing them (guest frame 0x200 + n -> hPFN n), 1-D.
    let cfg = caches_off();
    let direct: Vec<Ref> = (1..=4)
        .rev()
        .map(|l| {
            let (t, i) = guest_table(l);
            (entry(t - 0x200, i), l, Dim::Guest)
        })
        .collect();
    assert_eq!(
        cold_refs(Direct::new(&cfg.pv, cfg.guest.mem_mib), &cfg),
        direct
    );
}

#[test]
fn cold_shadow_walk_reads_the_shadow_path() {
    let want: Vec<Ref> = (1..=4).rev().map(shadow_ref).collect();
    assert_eq!(cold_refs(Shadow::new(), &caches_off()), want);
}

#[test]
fn cold_nested_walk_reads_guest_entries_at_their_hpa() {
    // 4 x (4 EPT + the guest entry at its hPA) + 4 EPT for the data frame.
    let want = walk_2d_refs(4, false);
    assert_eq!(want.len(), 24);
    assert_eq!(cold_refs(Nested, &caches_off()), want);
}

#[test]
fn cold_nested_walk_with_walk_caches_reads_12_entries() {
    // Default caches, flushed: the root's EPT walk fills the EPT PSCs, so
    // the PDPT, PD, PT and data frames (same 2 MiB of gPA, EPT PD index 1)
    // each take only their EPT PTE: 4 + 1 + 3 x (1 + 1) + 1 = 12.
    let ept_pte = |gpfn: u64| (entry(HV + 3, gpfn & 511), 1, Dim::Nested);
    let mut want = ept_walk(0x200).to_vec();
    want.push(guest_ref_2d(4));
    for level in (1..=3).rev() {
        want.push(ept_pte(guest_table(level).0));
        want.push(guest_ref_2d(level));
    }
    want.push(ept_pte(0x204));
    assert_eq!(cold_refs(Nested, &Config::default()), want);
}

#[test]
fn agile_new_process_walks_2d_from_the_guest_cr3() {
    // The root starts nested for the first interval: the nested walk
    // from the root's hPA in CR3; with its gPA in CR3, the full 2-D walk.
    assert_eq!(
        cold_refs(Agile::new(&caches_off()), &caches_off()),
        walk_2d_refs(4, true)
    );
    let mut cfg = caches_off();
    cfg.agile.root_hpa = false;
    assert_eq!(cold_refs(Agile::new(&cfg), &cfg), walk_2d_refs(4, false));
}

/// [`caches_off`] with `guest` paging levels and an EPT of `ept` levels.
fn levels(guest: u8, ept: u8) -> Config {
    let mut cfg = caches_off();
    cfg.guest.levels = guest;
    cfg.host.ept_levels = ept;
    cfg
}

#[test]
fn cold_native_5_level_walk_is_5_references() {
    // PML5E, PML4E, PDPTE, PDE, PTE.
    let (cold, warm, dims) = cold_then_warm(Native, &levels(5, 4));
    assert_eq!((cold, warm), (5, 5));
    assert_eq!(dims, [5, 0, 0]);
    // Shadow and PV direct tables mirror the guest's 5 levels.
    assert_eq!(cold_then_warm(Shadow::new(), &levels(5, 4)).0, 5);
    let cfg = levels(5, 4);
    assert_eq!(
        cold_then_warm(Direct::new(&cfg.pv, cfg.guest.mem_mib), &cfg).0,
        5
    );
}

#[test]
fn cold_2d_walks_with_5_levels_are_n_m_plus_n_plus_m() {
    // n guest levels, each read after an m-level EPT walk of its table's
    // gPA, then an m-level EPT walk of the data gPA: n*m + n + m [B08].
    for (n, m, want) in [(5u8, 5u8, 35u64), (5, 4, 29), (4, 5, 29), (4, 4, 24)] {
        let (cold, warm, dims) = cold_then_warm(Nested, &levels(n, m));
        assert_eq!(
            (cold, warm),
            (want, want),
            "{n}-level guest over {m}-level EPT"
        );
        assert_eq!(dims[Dim::Guest as usize], u64::from(n));
        assert_eq!(dims[Dim::Nested as usize], u64::from(n * m + m));
    }
}

#[test]
fn pml5e_cache_skips_the_root_of_5_level_walks() {
    // Walk caches on, TLBs flushed only: after the walk of A, every PSC
    // holds A's path, and B (same PT) resumes at its PTE: 1 reference, as
    // with 4 levels. With only the PML5E cache on, B's walk skips the
    // PML5E alone: 4 references, and the lookup counts as a PML5E hit.
    let (_, warm, _) = cold_then_warm(Native, &{
        let mut c = Config::default();
        c.guest.levels = 5;
        c
    });
    assert_eq!(warm, 1);
    let mut cfg = levels(5, 4);
    cfg.walk_caches.pml5e = vmemsim::config::Geometry::new(2, 2);
    let mut sim = Sim::new(Native, &cfg);
    map_and_touch_a_and_b(&mut sim);
    sim.hw.tlbs.flush_all();
    let before = sim.stats().clone();
    sim.access(&load(B), &mut |_, _| {}).unwrap();
    let d = sim.stats().since(&before);
    assert_eq!((d.walk_refs(), d.psc_pml5e_hits, d.psc_misses), (4, 1, 0));
}

#[test]
fn five_level_guest_maps_above_the_4_level_user_top() {
    // 2^47 and up is kernel space (or non-canonical) with 4 levels, user
    // space with 5 (below 2^56): the walk there reads PML5 index 1.
    let hi: u64 = 0x00ab_cdef_1234_5000;
    let recs = [
        ev(
            1,
            ProcEvent::Mmap {
                addr: hi,
                len: 1 << 20,
                prot: 3,
                flags: 0x22,
                file: None,
            },
        ),
        acc(1, AccessKind::Store, hi + 8),
        acc(1, AccessKind::Load, hi + 0x1000),
    ];
    common::all_modes_agree(&levels(5, 5), &recs);
    let mut sim = Sim::new(Nested, &levels(4, 4));
    let e = sim.event(
        1,
        &ProcEvent::Mmap {
            addr: hi,
            len: 1 << 20,
            prot: 3,
            flags: 0x22,
            file: None,
        },
    );
    assert!(e.is_err(), "beyond the 4-level user space");
}

/// [`caches_off`] with host pages of `host` and guest 2 MiB pages when `guest_2m`.
fn host_pages(host: vmemsim::addr::PageSize, guest_2m: bool) -> Config {
    let mut cfg = caches_off();
    cfg.host.page_size = host;
    cfg.guest.huge_pages = guest_2m.into();
    cfg
}

#[test]
fn cold_2d_walks_over_huge_host_pages() {
    use vmemsim::addr::PageSize::{Size1G, Size2M};
    // EPT leaves at the PDE (2 MiB host pages): each gPA takes 3 EPT
    // references. 4 KiB guest pages: 4 guest levels x (3 + 1) + 3 = 19.
    let (cold, warm, dims) = cold_then_warm(Nested, &host_pages(Size2M, false));
    assert_eq!((cold, warm), (19, 19));
    assert_eq!(dims[Dim::Nested as usize], 15);
    // 2 MiB guest pages over 2 MiB host pages: 3 x (3 + 1) + 3 = 15.
    let (cold, _, dims) = cold_then_warm(Nested, &host_pages(Size2M, true));
    assert_eq!(cold, 15);
    assert_eq!(dims[Dim::Guest as usize], 3);
    // EPT leaves at the PDPTE (1 GiB host pages): 2 EPT references per
    // gPA. 4 KiB guest pages: 4 x (2 + 1) + 2 = 14.
    let (cold, _, dims) = cold_then_warm(Nested, &host_pages(Size1G, false));
    assert_eq!(cold, 14);
    assert_eq!(dims[Dim::Nested as usize], 10);
    // 2 MiB guest pages over 1 GiB host pages: 3 x (2 + 1) + 2 = 11.
    assert_eq!(cold_then_warm(Nested, &host_pages(Size1G, true)).0, 11);
}

#[test]
fn tlb_entry_covers_the_smaller_of_guest_and_host_page() {
    use vmemsim::addr::PageSize::{Size2M, Size4K};
    // After the walk of A, an access 1 MiB further (same 2 MiB guest page,
    // another 4 KiB frame) hits the TLB only when the entry covers 2 MiB:
    // guest 2 MiB over host 2 MiB, in nested and in shadow mode (a 2 MiB
    // shadow leaf: 3 shadow references cold instead of 4). Over 4 KiB host
    // pages shadow walks twice: the direct page's entry for that frame is
    // filled by a hidden fault.
    let far = load(A + (1 << 20));
    for (host, walks, shadow_walks) in [(Size4K, 1u64, 2u64), (Size2M, 0, 0)] {
        let cfg = host_pages(host, true);
        let mut sim = Sim::new(Nested, &cfg);
        map_and_touch_a_and_b(&mut sim);
        let before = sim.stats().clone();
        sim.access(&far, &mut |_, _| {}).unwrap();
        assert_eq!(
            sim.stats().since(&before).walks,
            walks,
            "nested, host {host:?}"
        );
        let mut sim = Sim::new(Shadow::new(), &cfg);
        map_and_touch_a_and_b(&mut sim);
        let before = sim.stats().clone();
        sim.access(&far, &mut |_, _| {}).unwrap();
        assert_eq!(
            sim.stats().since(&before).walks,
            shadow_walks,
            "shadow, host {host:?}"
        );
    }
    assert_eq!(
        cold_then_warm(Shadow::new(), &host_pages(Size2M, true)).0,
        3
    );
    assert_eq!(
        cold_then_warm(Shadow::new(), &host_pages(Size4K, true)).0,
        4
    );
    // 4 KiB guest pages over 2 MiB host pages: 4 KiB entries.
    let mut sim = Sim::new(Nested, &host_pages(Size2M, false));
    map_and_touch_a_and_b(&mut sim);
    let before = sim.stats().clone();
    sim.access(&load(A + 0x2000), &mut |_, _| {}).unwrap();
    assert_eq!(
        sim.stats().since(&before).walks,
        2,
        "fault walk, then the walk after it"
    );
}

#[test]
fn huge_host_pages_back_whole_aligned_pages_and_count_the_bloat() {
    use vmemsim::addr::{Gpfn, PageSize::Size2M};
    // The first touch of a guest frame backs its whole 2 MiB host page:
    // 512 contiguous, aligned host frames, mapped by one EPT PDE (bit 7).
    let cfg = host_pages(Size2M, false);
    let mut sim = Sim::new(Nested, &cfg);
    map_and_touch_a_and_b(&mut sim);
    let s = sim.stats();
    assert_eq!(s.host_frames_backed % 512, 0);
    let root = sim.guest.current().unwrap().root;
    let g = softwalk::translate(&sim.guest.mem, root, 4, A)
        .unwrap()
        .gpfn;
    let vm = &sim.machine.vm;
    let h = vm.p2m(Gpfn(g)).unwrap().0;
    let base = g & !511;
    for i in 0..512 {
        assert_eq!(vm.p2m(Gpfn(base + i)).unwrap().0, (h & !511) + i);
    }
    let e = vm.ept_entry(&sim.host, Gpfn(g));
    assert_ne!(e & vmemsim::pte::ept::PS, 0, "a 2 MiB EPT leaf");
    // The guest wrote its page tables (root, PDPT, PD, PT) and 2 data frames,
    // all in gPA's first 2 MiB above the guest kernel's (gPFN 512..1024):
    // one host page backed, 512 - 6 frames of it never touched.
    assert_eq!((s.guest_frames_touched, s.host_frames_backed), (6, 512));
}

/// [`caches_off`] with host pages of `host` and guest 1 GiB pages.
fn giant_over(host: vmemsim::addr::PageSize) -> Config {
    let mut cfg = caches_off();
    cfg.host.page_size = host;
    cfg.guest.huge_pages = HugePages::Huge1G;
    cfg
}

const GIB: u64 = 1 << 30;

#[test]
fn cold_walks_of_1g_guest_pages() {
    use vmemsim::addr::PageSize::{Size1G, Size2M, Size4K};
    // A 1 GiB mapping at A (1 GiB-aligned) gets one 1 GiB guest page: the
    // guest walk reads the PML4E and the PDPTE (PS set), 2 levels.
    // Native: 2 references.
    let (cold, warm, dims) = cold_then_warm_len(Native, &giant_over(Size4K), GIB);
    assert_eq!((cold, warm, dims), (2, 2, [2, 0, 0]));
    // Nested, n guest levels over m EPT levels walked: n x (m + 1) + m.
    // Guest 1 GiB over host 1 GiB (EPT leaves at the PDPTE, m = 2): 2 x 3 + 2 = 8.
    let (cold, _, dims) = cold_then_warm_len(Nested, &giant_over(Size1G), GIB);
    assert_eq!((cold, dims), (8, [2, 6, 0]));
    // Over 2 MiB host pages (m = 3): 2 x 4 + 3 = 11.
    let (cold, _, dims) = cold_then_warm_len(Nested, &giant_over(Size2M), GIB);
    assert_eq!((cold, dims), (11, [2, 9, 0]));
    // Over 4 KiB host pages (m = 4): 2 x 5 + 4 = 14.
    let (cold, _, dims) = cold_then_warm_len(Nested, &giant_over(Size4K), GIB);
    assert_eq!((cold, dims), (14, [2, 12, 0]));
    // Shadow: the shadow leaf is the smaller of guest and host page, one
    // shadow level per size: 1 GiB leaf at the PDPTE (2), 2 MiB at a
    // direct PD (3), 4 KiB at a direct PT under it (4).
    for (host, refs) in [(Size1G, 2), (Size2M, 3), (Size4K, 4)] {
        let (cold, _, dims) = cold_then_warm_len(Shadow::new(), &giant_over(host), GIB);
        assert_eq!((cold, dims[Dim::Shadow as usize]), (refs, refs), "{host:?}");
    }
    // A mapping of 1 GiB - 4 KiB cannot hold the aligned gigabyte: 2 MiB
    // pages (the THP rule), natively 3 references.
    let (cold, _, _) = cold_then_warm_len(Native, &giant_over(Size4K), GIB - 4096);
    assert_eq!(cold, 3);
}

#[test]
fn tlb_entries_of_1g_guest_pages_cover_the_smaller_page() {
    use vmemsim::addr::PageSize::{Size1G, Size2M, Size4K};
    // After A and B, an access 512 MiB further (same 1 GiB guest page, another
    // host page unless host pages are 1 GiB) hits the TLB only when its
    // entry covers 1 GiB. Over smaller host pages nested walks once; shadow
    // takes a hidden fault for the new direct entry, then walks again.
    let far = load(A + (512 << 20));
    for (host, walks, shadow_walks) in [(Size1G, 0u64, 0u64), (Size2M, 1, 2), (Size4K, 1, 2)] {
        let cfg = giant_over(host);
        let mut sim = Sim::new(Nested, &cfg);
        map_len_and_touch_a_and_b(&mut sim, GIB);
        let before = sim.stats().clone();
        sim.access(&far, &mut |_, _| {}).unwrap();
        let d = sim.stats().since(&before);
        assert_eq!(
            (d.walks, d.guest_page_faults),
            (walks, 0),
            "nested {host:?}"
        );
        let mut sim = Sim::new(Shadow::new(), &cfg);
        map_len_and_touch_a_and_b(&mut sim, GIB);
        let before = sim.stats().clone();
        sim.access(&far, &mut |_, _| {}).unwrap();
        assert_eq!(
            sim.stats().since(&before).walks,
            shadow_walks,
            "shadow {host:?}"
        );
    }
    // Natively one 1 GiB entry: no walk.
    let mut sim = Sim::new(Native, &giant_over(Size4K));
    map_len_and_touch_a_and_b(&mut sim, GIB);
    let before = sim.stats().clone();
    sim.access(&far, &mut |_, _| {}).unwrap();
    assert_eq!(sim.stats().since(&before).walks, 0);
}

#[test]
fn a_1g_guest_page_is_one_fault_and_splits_on_munmap() {
    // The first touch maps the whole gigabyte (262144 frames zeroed, one
    // demand fault); unmapping its first 4 KiB splits it into 2 MiB pages
    // and the first of those into 4 KiB pages: the rest stays mapped.
    let mut sim = Sim::new(Native, &giant_over(vmemsim::addr::PageSize::Size4K));
    map_len_and_touch_a_and_b(&mut sim, GIB);
    let s = sim.stats().clone();
    // Zeroed: the root and the PDPT (one table each) and the 1 GiB page.
    assert_eq!((s.demand_faults, s.frames_zeroed), (1, 2 + 262144));
    let root = sim.guest.current().unwrap().root;
    let m = softwalk::translate(&sim.guest.mem, root, 4, B).unwrap();
    assert_eq!(m.level, 3);
    sim.event(1, &ProcEvent::Munmap { addr: A, len: 4096 })
        .unwrap();
    assert!(softwalk::translate(&sim.guest.mem, root, 4, A).is_none());
    let m2 = softwalk::translate(&sim.guest.mem, root, 4, B).unwrap();
    assert_eq!(
        (m2.level, m2.gpfn),
        (1, m.gpfn),
        "same frame, now a 4 KiB leaf"
    );
    let far = softwalk::translate(&sim.guest.mem, root, 4, A + (512 << 20)).unwrap();
    assert_eq!(far.level, 2);
}

#[test]
fn direct_paging_rejects_1g_guest_pages() {
    let cfg = giant_over(vmemsim::addr::PageSize::Size4K);
    let e = vmemsim::ModeKind::Direct
        .check(&cfg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("guest.huge_pages") && e.contains("PV"), "{e}");
    assert!(!vmemsim::ModeKind::Direct.runs_with(&cfg));
    assert!(vmemsim::ModeKind::Nested.runs_with(&cfg));
}

/// The public `walker::nested_translate`, on A's data frame (gPFN 0x204,
/// backed by hPFN 4) after the caches are flushed: the first call walks
/// the EPT (its 4 references) and returns the hPFN with the EPT leaf's
/// rights; the second hits the nested TLB and makes no reference. (Kills
/// `nested_translate -> Ok((0, 0))`, shard 6: the walkers themselves call
/// the generic `nested_translate_in`.)
#[test]
fn nested_translate_walks_the_ept_once_then_hits_the_nested_tlb() {
    use vmemsim::mmu::walker::nested_translate;
    use vmemsim::pte::ept;
    let mut sim = Sim::new(Nested, &Config::default());
    map_and_touch_a_and_b(&mut sim);
    sim.hw.flush_translation_caches();
    let vm = &sim.machine.vm;
    let ept_of = |host| vmemsim::mmu::walker::EptRef {
        tables: host,
        root: vm.eptp,
        levels: vm.ept_levels,
        leaf_level: vm.host_page.leaf_level(),
        tag: vm.ept_tag,
    };
    let dim = |d: u8| [Dim::Guest, Dim::Nested, Dim::Shadow][usize::from(d)];
    for want in [ept_walk(0x204).to_vec(), Vec::new()] {
        sim.hw.rec.clear();
        let got = nested_translate(&mut sim.hw, ept_of(&sim.host.tables), 0x204, ept::R);
        assert_eq!(got, Ok((4, ept::RWX)));
        let refs: Vec<Ref> = (sim.hw.rec.refs().iter())
            .map(|r| (r.hpa, r.level, dim(r.dim)))
            .collect();
        assert_eq!(refs, want);
    }
}
