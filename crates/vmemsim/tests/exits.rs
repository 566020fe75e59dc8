//! Exact VM exits by reason, per mode, on small hand-built traces: what
//! each mode charges for the same guest behaviour (cost, not meaning). Every
//! table lists every mode of `ModeKind::ALL`, in order, so a new mode cannot
//! be left out. Default configuration (PCIDs on, 4 KiB pages) with KVM's
//! unsync and write-flood detection off (`[shadow]`, [`ShadowConfig::strict`])
//! in the first three tables, on in the last ones; the traces
//! end long before the first policy period, so `selective-w11` and
//! `selective` stay in the mode they start in (nested) and agile's new root
//! stays nested for the whole trace.

mod common;

use vmemsim::config::{Config, ShadowConfig};
use vmemsim::sim::ModeKind;
use vmemsim::stats::{ExitReason, Stats};
use vmemsim_trace::{AccessKind, Record};

use common::{acc, anon_mmap, checked_stats, fork_cow_trace};

const A: u64 = 0x7f00_0000_0000;

/// Exits by reason, in `ExitReason::ALL` order.
type Exits = [u64; 7];
/// Index names for the tables below.
const REASONS: [&str; 7] = [
    "ept_violation",
    "shadow_fault",
    "guest_fault",
    "pt_write",
    "cr3_write",
    "invlpg",
    "hypercall",
];

/// Check every mode's exits on `trace` against `want` (one row per mode of
/// `ModeKind::ALL`, in order).
fn check(trace: &[Record], want: &[(ModeKind, Exits)]) {
    let cfg = Config {
        shadow: ShadowConfig::strict(),
        ..Config::default()
    };
    check_with(&cfg, trace, want);
}

/// [`check`] with configuration `cfg`.
fn check_with(cfg: &Config, trace: &[Record], want: &[(ModeKind, Exits)]) {
    assert_eq!(
        want.iter().map(|w| w.0).collect::<Vec<_>>(),
        ModeKind::ALL,
        "the table lists every mode, in order"
    );
    assert_eq!(
        ExitReason::ALL.map(|r| r.name()),
        REASONS,
        "column order of the tables"
    );
    let mut wrong = Vec::new();
    for &(kind, exits) in want {
        let s = checked_stats(kind, cfg, trace);
        if s.vm_exits != exits {
            wrong.push(format!(
                "{}: got {:?}, want {exits:?} ({REASONS:?})",
                kind.name(),
                s.vm_exits
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

fn mmap_a() -> Record {
    anon_mmap(1, A, 4 << 20)
}

use AccessKind::{Load, Store};
use ModeKind::*;

#[test]
fn first_touch() {
    // The mmap spawns process 1: its root table is allocated (frame 1).
    // The store's first walk finds nothing: a #PF; the guest allocates the
    // PDPT, PD and PT (frames 2-4) and the data frame (5) and stores 4
    // PTEs (PML4E, PDPTE, PDE, PTE) in one page-table operation.
    // - nested: each of the 5 frames exits once on its first touch (EPT
    //   violation); faults, PTE stores and the CR3 load do not exit.
    // - shadow: 5 frames backed in hidden faults + 1 hidden fault filling
    //   A's shadow path after the guest fixed its tables = 6; the #PF is
    //   intercepted and injected (1); the PML4E store hits the root, which
    //   is shadowed (write-protected) since the CR3 load (1; the new
    //   PDPT/PD/PT are not shadowed yet); the CR3 load exits (1).
    // - direct: the #PF bounces through Xen (1); hypercalls: pinning the
    //   root (1), the CR3 load (1), pinning PDPT, PD, PT (3), the fault's
    //   4 updates in one batch (1) = 6.
    // - agile: the root frame is touched at the spawn, before any CR3
    //   load, so outside any nested walk: backed in a hidden fault (1). The
    //   new root then starts nested, so the walk is 2-D: the #PF and PTE
    //   stores do not exit; the other 4 frames are touched by the kernel
    //   through nested tables: EPT violations (4); the CR3 load exits (1).
    let t = [mmap_a(), acc(1, Store, A)];
    check(
        &t,
        &[
            (Native, [0; 7]),
            (Nested, [5, 0, 0, 0, 0, 0, 0]),
            (Shadow, [0, 6, 1, 1, 1, 0, 0]),
            (Direct, [0, 0, 1, 0, 0, 0, 6]),
            (Agile, [4, 1, 0, 0, 1, 0, 0]),
            (SelectiveW11, [5, 0, 0, 0, 0, 0, 0]),
            (Selective, [5, 0, 0, 0, 0, 0, 0]),
            // The software-managed TLB's modes: nothing natively; under the
            // VMM the CR3 load (the ASID change) traps. Its TLB traps are
            // in tests/swtlb.rs.
            (SwtlbNative, [0; 7]),
            (SwtlbVmm, [0, 0, 0, 0, 1, 0, 0]),
        ],
    );
}

#[test]
fn second_page_in_the_same_table() {
    // As `first_touch`, then a store to the next page: one more #PF, one
    // data frame, one PTE store into the PT (shadowed since the hidden
    // fault of the first store filled A's path); a load of A hits the TLB.
    // - nested: +1 EPT violation.
    // - shadow: +1 backing and +1 hidden fill (8), +1 injected #PF, +1
    //   PTE store to the shadowed PT.
    // - direct: +1 bounced #PF, +1 batch of one update.
    // - agile: +1 EPT violation (the root is still nested).
    let t = [
        mmap_a(),
        acc(1, Store, A),
        acc(1, Store, A + 0x1000),
        acc(1, Load, A),
    ];
    check(
        &t,
        &[
            (Native, [0; 7]),
            (Nested, [6, 0, 0, 0, 0, 0, 0]),
            (Shadow, [0, 8, 2, 2, 1, 0, 0]),
            (Direct, [0, 0, 2, 0, 0, 0, 7]),
            (Agile, [5, 1, 0, 0, 1, 0, 0]),
            (SelectiveW11, [6, 0, 0, 0, 0, 0, 0]),
            (Selective, [6, 0, 0, 0, 0, 0, 0]),
            (SwtlbNative, [0; 7]),
            (SwtlbVmm, [0, 0, 0, 0, 1, 0, 0]),
        ],
    );
}

#[test]
fn fork_copy_on_write_munmap_and_exit() {
    // From `second_page_in_the_same_table`'s state, by step (shadow /
    // direct / agile increments; nested only exits on fresh frames):
    // 1. fork: 4 fresh child tables (nested and agile, whose roots are
    //    nested, +4 EPT violations; shadow +4 backing); 7 PTE stores: the child's 3 links, the parent's 2 leaves
    //    made read-only (shadow: its PT is shadowed, +2 pt_write) and the
    //    child's 2; the parent's PCID is flushed (INVPCID: shadow and agile
    //    +1 invlpg; direct +4 pins, +1 batch, +1 flush = +6).
    // 2. child stores A: CR3 load (shadow, agile +1 cr3; direct +1); a
    //    copy-on-write #PF: a fresh frame (nested and agile +1 EPT
    //    violation, shadow +1 backing), 1 PTE store into the child's unshadowed PT, INVLPG
    //    (shadow, agile +1; direct +1); shadow: injected #PF +1 and a
    //    hidden fill +1; direct: bounced #PF +1, batch +1.
    // 3. parent loads A+4K: CR3 load (+1 each); shadow: the fork's zap of
    //    that PTE's shadow entry costs a hidden fill (+1).
    // 4. munmap A+4K in the child: 1 PTE store (shadow: the child's PT
    //    is shadowed since step 2's fill, +1 pt_write; agile: the child's
    //    root is nested, none), INVLPG (+1 each; direct +1 batch).
    // 5. the child exits: its PCID is flushed (+1 each).
    // 6. parent stores A: a #PF on the read-only PTE, no copy (the child
    //    copied); 1 PTE store (shadow +1 pt_write), INVLPG (+1 each);
    //    shadow: injected +1, hidden refill +1; direct: bounced +1, batch +1.
    let t = fork_cow_trace(A);
    check(
        &t,
        &[
            (Native, [0; 7]),
            // 6 + 4 + 1
            (Nested, [11, 0, 0, 0, 0, 0, 0]),
            // shadow_fault 8 + 4 + 2 + 1 + 1; guest_fault 2 + 1 + 1;
            // pt_write 2 + 2 + 1 + 1; cr3 1 + 1 + 1; invlpg 1 + 1 + 1 + 1 + 1
            (Shadow, [0, 16, 4, 6, 3, 5, 0]),
            // guest_fault 2 + 1 + 1; hypercall 7 + 6 + 3 + 1 + 2 + 1 + 2
            (Direct, [0, 0, 4, 0, 0, 0, 22]),
            // ept_violation 5 + 4 + 1; cr3 1 + 1 + 1; invlpg 1 + 1 + 1 + 1 + 1
            (Agile, [10, 1, 0, 0, 3, 5, 0]),
            (SelectiveW11, [11, 0, 0, 0, 0, 0, 0]),
            (Selective, [11, 0, 0, 0, 0, 0, 0]),
            (SwtlbNative, [0; 7]),
            // cr3 1 + 1 + 1; invlpg (TLB invalidations) as shadow's.
            (SwtlbVmm, [0, 0, 0, 0, 3, 5, 0]),
        ],
    );
}

/// Shadow's exits and KVM counters on `trace` with `cfg`.
fn shadow_run(cfg: &Config, trace: &[Record]) -> Stats {
    checked_stats(ModeKind::Shadow, cfg, trace)
}

#[test]
fn unsync_pt_exits_once_and_resyncs_on_flush_and_cr3() {
    // Default config (unsync and write flooding on). Against the strict
    // table of `second_page_in_the_same_table`: the one PTE store into the
    // shadowed PT is a write-protection fault that unsyncs the PT (counted
    // as a hidden fault, 8 + 1 = 9) instead of an emulated pt_write (2 - 1).
    let t = [
        mmap_a(),
        acc(1, Store, A),
        acc(1, Store, A + 0x1000),
        acc(1, Load, A),
    ];
    let cfg = Config::default();
    let s = shadow_run(&cfg, &t);
    assert_eq!(s.vm_exits, [0, 9, 2, 1, 1, 0, 0]);
    assert_eq!(
        (s.shadow_unsyncs, s.shadow_resyncs, s.shadow_flood_zaps),
        (1, 0, 0)
    );
    // The fork trace, by step against the strict table
    // (`fork_copy_on_write_munmap_and_exit`: [0, 16, 4, 6, 3, 5, 0]):
    // - second store: the parent's PT unsyncs (pt_write -1, shadow_fault +1).
    // - fork: the 2 stores making the parent's leaves read-only go to the
    //   unsync PT without exiting (pt_write -2); the flush of the parent's
    //   (current) PCID resyncs its PT before the child's CR3 load: resync 1,
    //   A's shadow entry kept read-only, A+4K's kept too (rights from the
    //   guest: both read-only now), so step 3's parent load of A+4K needs
    //   no hidden refill (shadow_fault -1).
    // - child's COW store: its PT is not shadowed yet: no change.
    // - munmap in the child: its PT (shadowed by step 2's fill) unsyncs at
    //   the PTE store (pt_write -1, shadow_fault +1); the INVLPG syncs that
    //   entry only (the page stays unsync).
    // - parent's store of A: its PT, write-protected again since the resync,
    //   unsyncs a second time (pt_write -1, shadow_fault +1); the INVLPG of
    //   A resyncs its entry before the next walk, which now finds it
    //   writable (the guest's entry is RW and dirty): no hidden refill
    //   (shadow_fault -1).
    // pt_write 6 - 1 - 2 - 1 - 1 = 1 (the PML4E store of the first touch);
    // shadow_fault 16 + 1 - 1 + 1 + 1 - 1 = 17.
    let s = shadow_run(&cfg, &fork_cow_trace(A));
    assert_eq!(s.vm_exits, [0, 17, 4, 1, 3, 5, 0]);
    assert_eq!(
        (s.shadow_unsyncs, s.shadow_resyncs, s.shadow_flood_zaps),
        (3, 1, 0)
    );
}

#[test]
fn write_flood_zaps_the_third_emulated_store_since_last_use() {
    // Unsync off, so that PT stores are emulated; flooding on (threshold 3).
    // Emulated stores of the fork trace, per table, and the fills that walk
    // through the table's shadow page (resetting its count):
    // - parent's root: the first touch's PML4E store (1), then its fill (0);
    // - parent's PT: the second store's PTE store (1), its fill (0); the
    //   fork's 2 read-only stores (2); the parent's load of A+4K after the
    //   fork refills through it (0); the final COW store (1);
    // - child's PT: the munmap's store (1).
    // No count reaches 3: no flood, and the exits are the strict table's.
    let mut cfg = Config::default();
    cfg.shadow.unsync = false;
    let s = shadow_run(&cfg, &fork_cow_trace(A));
    assert_eq!(s.vm_exits, [0, 16, 4, 6, 3, 5, 0]);
    assert_eq!(s.shadow_flood_zaps, 0);
    // Threshold 2: the fork's second store to the parent's PT floods it:
    // the whole shadow PT is zapped (and the TLB flushed).
    cfg.shadow.write_flood_threshold = 2;
    let s = shadow_run(&cfg, &fork_cow_trace(A));
    assert_eq!(s.shadow_flood_zaps, 1);
}
