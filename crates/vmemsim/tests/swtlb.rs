//! The software-managed (MIPS-style) TLB: exact refills, handler loads, TLB
//! writes and traps of `swtlb-native` and `swtlb-vmm`, their prices, and
//! the `cpu.tlb` rules.

mod common;

use vmemsim::addr::PageSize;
use vmemsim::config::{Config, Geometry, TlbManagement, Virtualization};
use vmemsim::cost::CostModel;
use vmemsim::sim::ModeKind;
use vmemsim::stats::{ExitReason, Stats};
use vmemsim::workload::{WorkloadKind, WorkloadSpec};
use vmemsim_trace::{AccessKind, Record};

use common::{acc, anon_mmap, checked_stats, fork_cow_trace};
use AccessKind::{Load, Store};

const A: u64 = 0x7f00_0000_0000;

fn stats(kind: ModeKind, cfg: &Config, t: &[Record]) -> Stats {
    checked_stats(kind, cfg, t)
}

fn mmap_a(len: u64) -> Record {
    anon_mmap(1, A, len)
}

/// A one-entry L1 DTLB and STLB (walk caches irrelevant: there is no
/// walker), so the second page evicts the first.
fn tiny_tlb() -> Config {
    let mut c = Config::default();
    c.tlb.l1d_4k = Geometry::new(1, 1);
    c.tlb.stlb = Geometry::new(1, 1);
    c
}

/// The software-TLB counters of interest: (TLB misses, refill exceptions
/// delivered to the guest, handler runs, handler loads, of which line-cache
/// hits, real TLB writes, VMM refills from the guest-TLB copy).
fn sw(s: &Stats) -> [u64; 7] {
    [
        s.tlb_misses,
        s.tlb_refill_exceptions,
        s.tlb_refills,
        s.tlb_refill_loads,
        s.tlb_refill_load_hits,
        s.tlb_writes,
        s.vmm_tlb_refills,
    ]
}

/// Exits by reason, in `ExitReason::EVERY` order.
fn exits(s: &Stats) -> [u64; 9] {
    ExitReason::EVERY.map(|r| s.exits_for(r))
}

#[test]
fn cold_miss_on_a_mapped_page_costs_one_refill_exactly() {
    // Store A (faults in A's tables and frame), store A+4K (the next page:
    // its fill evicts A from the one-entry TLBs), then the measured access:
    // a load of A, whose 4-level table path is complete and whose lines the
    // earlier refills brought into the line cache.
    // - swtlb-native: 1 refill exception, the handler's 4 loads (PML4E,
    //   PDPTE, PDE, PTE; no paging-structure caches: it walks from the
    //   root), 4 line-cache hits, 1 TLB write; no exit.
    //   Cycles: 20 (exception) + 20 (handler) + 4 x 14 (loads) + 5 (write) = 101.
    // - swtlb-vmm: the miss traps into the VMM (1 tlb_miss exit); its
    //   copy of the guest's TLB (as small) dropped A too, so it reflects
    //   the miss to the guest's handler: the same 4 loads; the handler's TLB
    //   write traps (1 tlb_write exit): exactly 2 traps per miss.
    //   Cycles: (1200 + 300) + (1200 + 500) + 20 + 4 x 14 + 5 = 3281.
    let cfg = tiny_tlb();
    let before = [mmap_a(4 << 20), acc(1, Store, A), acc(1, Store, A + 0x1000)];
    let mut after = before.to_vec();
    after.push(acc(1, Load, A));
    let price = CostModel::for_config(&cfg);
    for (kind, want_sw, want_exits, want_cycles) in [
        (ModeKind::SwtlbNative, [1, 1, 1, 4, 4, 1, 0], [0; 9], 101),
        (
            ModeKind::SwtlbVmm,
            [1, 0, 1, 4, 4, 1, 0],
            [0, 0, 0, 0, 0, 0, 0, 1, 1],
            3281,
        ),
    ] {
        let s0 = stats(kind, &cfg, &before);
        let d = stats(kind, &cfg, &after).since(&s0);
        assert_eq!(sw(&d), want_sw, "{}", kind.name());
        assert_eq!(exits(&d), want_exits, "{}", kind.name());
        assert_eq!(d.walks, 0, "{}: no hardware walk", kind.name());
        assert_eq!(d.guest_page_faults, 0);
        // Base cycles: loads and stores retire no instruction (fetches do).
        assert_eq!(price.price(&d).total, want_cycles, "{}", kind.name());
        assert_eq!(
            d.swtlb_traps_per_miss(),
            (kind == ModeKind::SwtlbVmm) as u64 as f64 * 2.0
        );
    }
}

#[test]
fn exits_by_reason_on_first_touch_second_page_and_fork() {
    // The traces of tests/exits.rs, every reason (`ExitReason::EVERY`:
    // ept_violation, shadow_fault, guest_fault, pt_write, cr3_write,
    // invlpg, hypercall, tlb_miss, tlb_write) of swtlb-vmm; swtlb-native
    // never exits.
    // first touch: the spawn's root frame and the fault's 4 new frames
    // (PDPT, PD, PT, data) are backed on the kernel's first store (5
    // tlb_miss); the store misses twice (before the #PF, whose handler walk
    // stops at the empty PML4E, and after it): 2 more tlb_miss, 1
    // tlb_write; the CR3 load (ASID change) traps: 1 cr3_write.
    let first = [mmap_a(4 << 20), acc(1, Store, A)];
    // second page: +1 data frame (tlb_miss), +2 misses (tlb_miss), +1
    // TLB write; the load of A hits the TLB.
    let second = [
        mmap_a(4 << 20),
        acc(1, Store, A),
        acc(1, Store, A + 0x1000),
        acc(1, Load, A),
    ];
    let fork = fork_cow_trace(A);
    // fork trace, by step: the fork's 4 child tables (+4 tlb_miss backing)
    // and the parent's PCID flush (+1 invlpg); the child's store: CR3 load
    // (+1 cr3), a miss whose walk ends at the read-only leaf: a COW #PF
    // (+1 tlb_miss), a fresh frame (+1 tlb_miss), INVLPG (+1), the miss
    // again (+1 tlb_miss, +1 tlb_write); the parent's load of A+4K: CR3
    // load (+1 cr3), a miss (its PCID was flushed; +1 tlb_miss, +1
    // tlb_write); munmap: INVLPG (+1); the child's exit: PCID flush (+1
    // invlpg); the parent's store of A: the entry is read-only (the fork
    // made it so): a miss whose walk finds the read-only leaf, a #PF
    // (reuse, no copy), INVLPG (+1), the miss again (+2 tlb_miss, +1
    // tlb_write).
    // tlb_miss 10 + 4 + 3 + 1 + 2 = 20; tlb_write 2 + 1 + 1 + 1 = 5;
    // cr3 1 + 1 + 1 = 3; invlpg 1 + 1 + 1 + 1 + 1 = 5.
    let cfg = Config::default();
    for (t, want) in [
        (&first[..], [0, 0, 0, 0, 1, 0, 0, 7, 1]),
        (&second[..], [0, 0, 0, 0, 1, 0, 0, 10, 2]),
        (&fork[..], [0, 0, 0, 0, 3, 5, 0, 20, 5]),
    ] {
        assert_eq!(exits(&stats(ModeKind::SwtlbNative, &cfg, t)), [0; 9]);
        let v = stats(ModeKind::SwtlbVmm, &cfg, t);
        assert_eq!(exits(&v), want, "swtlb-vmm");
        // Natively the same refills and writes, as exceptions and no traps.
        let n = stats(ModeKind::SwtlbNative, &cfg, t);
        assert_eq!(n.tlb_refills, v.tlb_refills);
        assert_eq!(n.tlb_refill_exceptions, n.tlb_refills);
        assert_eq!(n.tlb_writes, v.exits_for(ExitReason::TlbWrite));
    }
}

#[test]
fn the_vmm_refills_a_splintered_huge_page_from_its_guest_tlb_copy() {
    // Guest 2 MiB pages over 4 KiB host pages: the guest's TLB entry for A
    // covers 2 MiB, the real one 4 KiB (a machine page is 4 KiB). A store
    // to A+4K after A misses in the real TLB but hits the VMM's copy of the
    // guest's TLB: 1 trap (tlb_miss), a VMM refill, no reflection, no
    // guest TLB write. Natively the TLB entry is 2 MiB: no miss at all.
    let mut cfg = Config::default();
    cfg.guest.huge_pages = vmemsim::config::HugePages::Huge2M;
    let before = [mmap_a(4 << 20), acc(1, Store, A)];
    let mut after = before.to_vec();
    after.push(acc(1, Store, A + 0x1000));
    let d = |kind, cfg: &Config| stats(kind, cfg, &after).since(&stats(kind, cfg, &before));
    let v = d(ModeKind::SwtlbVmm, &cfg);
    assert_eq!(sw(&v), [1, 0, 0, 0, 0, 1, 1]);
    assert_eq!(exits(&v), [0, 0, 0, 0, 0, 0, 0, 1, 0]);
    let n = d(ModeKind::SwtlbNative, &cfg);
    assert_eq!(sw(&n), [0; 7]);
    // With 2 MiB host pages the real entry is 2 MiB too: no miss.
    cfg.host.page_size = PageSize::Size2M;
    cfg.guest.mem_mib = 1024;
    assert_eq!(sw(&d(ModeKind::SwtlbVmm, &cfg)), [0; 7]);
}

#[test]
fn software_tlb_config_rules() {
    // Default: every mode runs; `compare` lists both families.
    let cfg = Config::default();
    assert!(ModeKind::ALL.iter().all(|m| m.runs_with(&cfg)));
    // A software-managed TLB: only the swtlb modes; the others are a
    // clear error naming the key.
    let text = "[cpu]\ntlb = \"software\"\n";
    let sw = Config::from_toml(text, "x.toml").unwrap();
    assert_eq!(sw.cpu.tlb, TlbManagement::Software);
    let runs: Vec<_> = ModeKind::ALL
        .into_iter()
        .filter(|m| m.runs_with(&sw))
        .collect();
    assert_eq!(runs, [ModeKind::SwtlbNative, ModeKind::SwtlbVmm]);
    assert_eq!(
        ModeKind::Nested.check(&sw).unwrap_err().to_string(),
        "config key `cpu.tlb` = \"software\": mode `nested` needs a hardware page walker \
         (x86); with a software-managed TLB the modes are `swtlb-native` and `swtlb-vmm`"
    );
    // The VMM virtualizes the TLB by trap-and-emulate, not binary translation.
    let mut bt = Config::default();
    bt.cpu.virtualization = Virtualization::Bt;
    assert!(ModeKind::SwtlbNative.runs_with(&bt));
    let e = ModeKind::SwtlbVmm.check(&bt).unwrap_err().to_string();
    assert!(
        e.starts_with("config key `cpu.virtualization` = \"bt\": mode `swtlb-vmm`")
            && e.contains("trap-and-emulate"),
        "{e}"
    );
    let bad = Config::from_toml("[cpu]\ntlb = \"mips\"\n", "x.toml")
        .unwrap_err()
        .to_string();
    assert!(bad.contains("x.toml") && bad.contains("mips"), "{bad}");
    // The dump shows the key.
    assert!(cfg.to_toml().contains("tlb = \"hardware\""));
}

#[test]
fn random_costs_more_under_the_vmm_and_pte_stores_never_trap() {
    // The guarded direction: on `random` (TLB-miss bound) every miss pays
    // 2 traps under the VMM, so it costs far more than swtlb-native; on
    // `procs` (fault and fork heavy) PTE stores never trap (no shadow to
    // keep in sync).
    for kind in [WorkloadKind::Random, WorkloadKind::Procs] {
        let spec = WorkloadSpec {
            accesses: 100_000,
            footprint_mib: 16,
            ..WorkloadSpec::default_for(kind)
        };
        let cfg = Config::default();
        let run = |m| vmemsim::run_mode(m, &cfg, &mut spec.source(), &mut |_| {}).unwrap();
        let (n, v) = (run(ModeKind::SwtlbNative), run(ModeKind::SwtlbVmm));
        assert_eq!(v.stats.exits_for(ExitReason::PtWrite), 0);
        assert_eq!(n.stats.tlb_misses, v.stats.tlb_misses, "{kind:?}");
        assert!(v.cycles.total > n.cycles.total, "{kind:?}");
        // Each TLB write the guest makes traps once, each miss at least once.
        assert!(v.stats.exits_for(ExitReason::TlbMiss) >= v.stats.tlb_misses);
        assert!(v.stats.swtlb_traps_per_miss() >= 2.0 - 1e-9, "{kind:?}");
    }
}

/// The handler's loads go through the page-table line cache at the
/// entry's own address: after A's refills brought in the line of PT
/// entries 0-7 (and the upper levels' lines), the first store to A + 32
/// KiB (PT entry 8, the next 64-byte line) is 1 TLB miss and 2 refill
/// exceptions (the entry is empty: a #PF; then again), 8 handler loads of
/// which 7 hit: the upper three levels twice and entry 8's line on the
/// second refill; the first refill's load of entry 8 misses. (Kills
/// `refill_walk`'s line address `idx * 8` as `idx + 8`, which put entries
/// 0-55 on one line: 8 hits; shard 1; and as `idx / 8`, shard 2.)
#[test]
fn a_refill_loads_the_line_of_its_own_entry() {
    let cfg = tiny_tlb();
    let before = [mmap_a(4 << 20), acc(1, Store, A)];
    let mut after = before.to_vec();
    after.push(acc(1, Store, A + 8 * 0x1000));
    let s0 = stats(ModeKind::SwtlbNative, &cfg, &before);
    let d = stats(ModeKind::SwtlbNative, &cfg, &after).since(&s0);
    assert_eq!(sw(&d), [1, 2, 2, 8, 7, 1, 0]);
}
