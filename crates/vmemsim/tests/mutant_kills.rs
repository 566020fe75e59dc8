//! Exact tests written to kill mutants that the rest of the suite missed
//! (TESTING.md, "Mutation testing"): each names the mechanism it pins down
//! and the mutant it was checked against by hand.

mod common;

use std::sync::Arc;

use vmemsim::addr::{Gpfn, PageSize};
use vmemsim::config::{Config, CostConfig, HugePages, PtCacheConfig};
use vmemsim::cost::CostModel;
use vmemsim::guest::content::{file_key, file_page};
use vmemsim::guest::softwalk;
use vmemsim::host::config::HostConfig;
use vmemsim::hostsim::HostSim;
use vmemsim::hv::selective::{
    w11, w11_rules, Paging, Policy, PolicyInput, Predictive, W11Decision, W11Sample,
};
use vmemsim::hv::{Agile, Direct, Mode, Shadow};
use vmemsim::mmu::Dim;
use vmemsim::pte::x86;
use vmemsim::sim::{ModeKind, Sim};
use vmemsim::stats::{ExitReason, Stats};
use vmemsim_trace::{AccessKind, FileId, Fingerprint, MappedFile, ProcEvent, Record};

use common::{acc, anon_mmap, checked_stats, ev, replay, scanning_host, Alone};
use AccessKind::{Load, Store};

const A: u64 = 0x7f00_0000_0000;

fn run<M: Mode>(sim: &mut Sim<M>, records: &[Record]) {
    for r in records {
        match r {
            Record::Access(a) => sim.access(a, &mut |_, _| {}).unwrap(),
            Record::Event(e) => sim.event(e.pid, &e.kind).unwrap(),
        }
    }
}

/// gPFN of the 4 KiB frame holding `va` in the current process.
fn gpfn_of<M: Mode>(sim: &Sim<M>, va: u64) -> u64 {
    let g = &sim.guest;
    let root = g.current().unwrap().root;
    softwalk::translate(&g.mem, root, g.levels(), va)
        .expect("mapped")
        .gpfn
}

// ---------------------------------------------------------------------------
// hv/agile.rs `drop_subtree`

/// A guest PD going nested takes the shadow pages of the PD and of the PT
/// below it with it, and lifts the PT's write protection: a later guest
/// PTE store into that PT does not exit. (Kills `se & SWITCH == 0` with
/// `&` replaced by `|` or `^`, which keep the PT's shadow page: 1
/// unshadow instead of 2, and the PTE store exits as a PT write.)
#[test]
fn agile_pd_going_nested_drops_the_pt_below_it() {
    let cfg = Config::default();
    let mut sim = Sim::new(Agile::new(&cfg), &cfg);
    run(
        &mut sim,
        &[
            anon_mmap(1, A, 4 << 20),
            acc(1, Load, A),
            acc(1, Load, A + 0x1000),
        ],
    );
    let root = sim.guest.current().unwrap().root;
    let path = softwalk::path(&sim.guest.mem, root, 4, A);
    assert_eq!(path.len, 4);
    // Every table of A's path in shadow mode, its shadow filled by a walk.
    {
        let m = &mut sim.machine.on(&mut sim.hw, &mut sim.host);
        for &(table, _, _) in &path.steps[..4] {
            m.mode.force_shadow(&mut m.core, table);
            assert!(!m.mode.is_nested(table));
        }
    }
    sim.hw.flush_translation_caches();
    run(&mut sim, &[acc(1, Load, A)]);
    // Root, PDPT, PD and PT of A's path (no other table is mapped).
    assert_eq!(sim.machine.mode.shadow_pages(), 4);
    let before = sim.stats().clone();
    let pd = path.steps[2].0;
    {
        let m = &mut sim.machine.on(&mut sim.hw, &mut sim.host);
        m.mode.force_nested(&mut m.core, pd);
    }
    assert_eq!(sim.stats().since(&before).shadow_unshadows, 2, "PD and PT");
    assert_eq!(sim.machine.mode.shadow_pages(), 2, "root and PDPT remain");
    // A new page in the same PT: the guest's PTE store does not exit.
    let before = sim.stats().clone();
    run(&mut sim, &[acc(1, Store, A + 0x2000)]);
    let d = sim.stats().since(&before);
    assert_eq!(d.guest_page_faults, 1);
    assert_eq!(d.exits_for(ExitReason::PtWrite), 0);
    assert_eq!(sim.machine.mode.shadow_pages(), 2);
}

// ---------------------------------------------------------------------------
// hv/agile.rs `link_switch`

/// A shadow page that loses its parent link but survives (its parent was
/// zapped by a write flood) keeps its switching entry: the hidden fault
/// that links it again finds the entry already switching to the same
/// nested table and leaves it, with no zap and no TLB flush, as KVM
/// leaves a present SPTE it would write unchanged. (Kills the early
/// return's `se & P != 0` as `== 0`: the entry is zapped and rewritten,
/// the zap flushes the VPID's TLB, and the next access to another page
/// misses the TLB.)
#[test]
fn agile_relinking_a_surviving_shadow_page_keeps_its_switching_entry() {
    let mut cfg = Config::default();
    // The first emulated store to a shadowed table floods it.
    cfg.shadow.write_flood_threshold = 1;
    let mut sim = Sim::new(Agile::new(&cfg), &cfg);
    let b = A + (1 << 30); // the same PDPT, its next entry
    run(&mut sim, &[anon_mmap(1, A, 2 << 30), acc(1, Load, A)]);
    let root = sim.guest.current().unwrap().root;
    let path = softwalk::path(&sim.guest.mem, root, 4, A);
    assert_eq!(path.len, 4);
    let pt = path.steps[3].0;
    // A's root, PDPT and PD in shadow mode, its PT nested: the shadow PD
    // holds a switching entry to the PT after the next walk.
    {
        let m = &mut sim.machine.on(&mut sim.hw, &mut sim.host);
        for &(table, _, _) in &path.steps[..3] {
            m.mode.force_shadow(&mut m.core, table);
        }
        m.mode.force_nested(&mut m.core, pt);
    }
    sim.hw.flush_translation_caches();
    run(&mut sim, &[acc(1, Load, A)]);
    assert!(sim.machine.mode.is_nested(pt));
    assert_eq!(sim.machine.mode.shadow_pages(), 3, "root, PDPT, PD");
    // B's first touch: the guest writes the PDPT entry for B's new PD, a
    // trapped store that floods the PDPT's shadow page: it is dropped and
    // the PDPT goes nested; the shadow PD below it survives, unlinked.
    let before = sim.stats().clone();
    run(&mut sim, &[acc(1, Load, b)]);
    let d = sim.stats().since(&before);
    assert_eq!(d.guest_page_faults, 1);
    assert_eq!(d.shadow_flood_zaps, 1);
    let pdpt = path.steps[1].0;
    assert!(sim.machine.mode.is_nested(pdpt));
    assert_eq!(sim.machine.mode.shadow_pages(), 2, "root, A's PD");
    // The PDPT back in shadow mode (a flush); B's walk shadows it again.
    {
        let m = &mut sim.machine.on(&mut sim.hw, &mut sim.host);
        m.mode.force_shadow(&mut m.core, pdpt);
    }
    run(&mut sim, &[acc(1, Load, b)]);
    // A: a hidden fault at the PDPT links the surviving shadow PD, whose
    // switching entry stands. B stays in the TLB.
    let before = sim.stats().clone();
    run(&mut sim, &[acc(1, Load, A), acc(1, Load, b)]);
    let d = sim.stats().since(&before);
    assert_eq!(d.guest_page_faults, 0);
    assert_eq!(d.exits_for(ExitReason::ShadowFault), 1, "A's hidden fault");
    assert_eq!(d.tlb_misses, 1, "A misses, B hits");
    assert_eq!(d.walks, 2, "A's walk, again after its fill");
    assert!(sim.machine.mode.is_nested(pt));
}

// ---------------------------------------------------------------------------
// hv/shadow.rs `unmap_frame`

/// The host taking a frame away clears exactly the shadow leaves mapping
/// it, and returns their number: 1 for a page mapped once, 0 for a frame
/// the shadow does not map at that hPFN, 0 a second time. The next access
/// takes a hidden fault. (Kills `unmap_frame -> 0` and `-> 1`.)
#[test]
fn shadow_unmap_frame_counts_the_leaves_it_clears() {
    let cfg = Config::default();
    let mut sim = Sim::new(Shadow::new(), &cfg);
    // Only a shared host takes frames away, so only then is there a
    // reverse map.
    sim.machine.vm.hosted = true;
    run(
        &mut sim,
        &[
            anon_mmap(1, A, 4 << 20),
            acc(1, Load, A),
            acc(1, Load, A + 0x1000),
        ],
    );
    let g = Gpfn(gpfn_of(&sim, A));
    let h = {
        let m = sim.machine.on(&mut sim.hw, &mut sim.host);
        m.core.p2m(g).expect("backed")
    };
    let g_b = Gpfn(gpfn_of(&sim, A + 0x1000));
    let wrong = {
        let m = sim.machine.on(&mut sim.hw, &mut sim.host);
        m.core.p2m(g_b).unwrap()
    };
    assert_ne!(wrong, h);
    assert_eq!(sim.machine.mode.unmap_frame(&mut sim.host, g, h), 1);
    assert_eq!(
        sim.machine.mode.unmap_frame(&mut sim.host, g, h),
        0,
        "already cleared"
    );
    sim.hw.flush_translation_caches();
    let before = sim.stats().clone();
    run(&mut sim, &[acc(1, Load, A)]);
    let d = sim.stats().since(&before);
    assert_eq!(d.exits_for(ExitReason::ShadowFault), 1, "the leaf is gone");
    assert_eq!(d.guest_page_faults, 0);
    // Not the hPFN the refilled leaf holds: nothing cleared, no fault.
    assert_eq!(sim.machine.mode.unmap_frame(&mut sim.host, g, wrong), 0);
    sim.hw.flush_translation_caches();
    let before = sim.stats().clone();
    run(&mut sim, &[acc(1, Load, A)]);
    assert_eq!(
        sim.stats().since(&before).total_exits(),
        0,
        "the leaf is kept"
    );
}

// ---------------------------------------------------------------------------
// hv/swtlb.rs: the VMM's copy of the guest TLB

fn sw_vmm(cfg: &Config, before: &[Record], more: &[Record]) -> [u64; 4] {
    let mut after = before.to_vec();
    after.extend_from_slice(more);
    let s0 = checked_stats(ModeKind::SwtlbVmm, cfg, before);
    let d = checked_stats(ModeKind::SwtlbVmm, cfg, &after).since(&s0);
    [
        d.tlb_misses,
        d.tlb_refills,
        d.vmm_tlb_refills,
        d.exits_for(ExitReason::TlbMiss),
    ]
}

/// Guest 2 MiB pages over 4 KiB host pages: a load of A+4K after a store
/// to A is a VMM refill from the guest-TLB copy, which keeps the guest's
/// write right: the store to A+4K that follows hits the TLB. (Kills
/// `COPY_WRITE = 1 << 51` as `1 >> 51`: the refilled entry has no write
/// right, and the store misses again.)
#[test]
fn a_vmm_refill_keeps_the_guest_write_right() {
    let mut cfg = Config::default();
    cfg.guest.huge_pages = HugePages::Huge2M;
    let before = [anon_mmap(1, A, 4 << 20), acc(1, Store, A)];
    assert_eq!(
        sw_vmm(&cfg, &before, &[acc(1, Load, A + 0x1000)]),
        [1, 0, 1, 1]
    );
    assert_eq!(
        sw_vmm(
            &cfg,
            &before,
            &[acc(1, Load, A + 0x1000), acc(1, Store, A + 0x1000)]
        ),
        [1, 0, 1, 1]
    );
}

/// The same for the execute right: in a read-write-execute mapping, a
/// load of A+4K after a fetch of A is a VMM refill from the copy, which
/// keeps the guest's execute right, so the fetch of A+4K that follows
/// hits. (Kills `COPY_EXEC = 1 << 50` as `1 >> 50`, shard 18: the
/// refilled entry could not execute, and the fetch missed again.)
#[test]
fn a_vmm_refill_keeps_the_guest_execute_right() {
    let mut cfg = Config::default();
    cfg.guest.huge_pages = HugePages::Huge2M;
    let before = [
        common::anon_mmap_prot(1, A, 4 << 20, 7),
        acc(1, AccessKind::Fetch, A),
    ];
    let more = [
        acc(1, Load, A + 0x1000),
        acc(1, AccessKind::Fetch, A + 0x1000),
    ];
    assert_eq!(sw_vmm(&cfg, &before, &more[..1]), [1, 0, 1, 1]);
    assert_eq!(sw_vmm(&cfg, &before, &more), [1, 0, 1, 1]);
}

/// Guest 1 GiB pages over 2 MiB host pages: the guest-TLB copy's entry is
/// 1 GiB, the real one 2 MiB. A store to A+2M misses the real TLB and is a
/// VMM refill whose real entry is 2 MiB (the copy's size field says 1
/// GiB, the host page is 2 MiB), so A+2M+4K hits. (Kills the size field
/// read with `<<` instead of `>>`: a 4 KiB entry, and A+2M+4K misses.)
#[test]
fn a_vmm_refill_reads_the_guest_page_size_from_its_copy() {
    let mut cfg = Config::default();
    cfg.guest.huge_pages = HugePages::Huge1G;
    cfg.guest.mem_mib = 2048;
    cfg.host.page_size = PageSize::Size2M;
    let before = [anon_mmap(1, A, 1 << 30), acc(1, Store, A)];
    assert_eq!(
        sw_vmm(&cfg, &before, &[acc(1, Store, A + (2 << 20))]),
        [1, 0, 1, 1]
    );
    assert_eq!(
        sw_vmm(
            &cfg,
            &before,
            &[
                acc(1, Store, A + (2 << 20)),
                acc(1, Store, A + (2 << 20) + 0x1000)
            ]
        ),
        [1, 0, 1, 1]
    );
}

// ---------------------------------------------------------------------------
// guest/os.rs `fill`: file pages of a huge page

/// A file mapped with 2 MiB guest pages: each 4 KiB frame of the huge page
/// holds the file page at its own offset (start offset + distance from the
/// VMA start). (Kills `+ i * PAGE_SIZE` as `-`, and `*` as `+` or `/`.)
#[test]
fn a_file_huge_page_holds_each_file_page_at_its_offset() {
    const LIB: u64 = 0x4000_0000;
    let file = MappedFile {
        file: Arc::new(FileId {
            path: "/lib/libbig.so".into(),
            fingerprint: Some(Fingerprint {
                size: 8 << 20,
                hash: 0x1234,
            }),
        }),
        offset: 0x10_0000,
    };
    let key = file_key(&file.file);
    let recs = vec![
        ev(
            1,
            ProcEvent::Mmap {
                addr: LIB,
                len: 4 << 20,
                prot: 5,
                flags: 2,
                file: Some(file),
            },
        ),
        acc(1, Load, LIB + 0x3000),
    ];
    let text = "[host]\nmem_mib = 1024\n[[vm]]\nname = \"vm0\"\nworkload = \"seq\"\n\
                mode = \"nested\"\nmem_mib = 128\n[vm.guest]\nhuge_pages = true\n";
    let cfg = HostConfig::from_toml(
        text,
        "test.toml",
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
    )
    .unwrap();
    let mut sim = HostSim::with_sources(&cfg, vec![replay(&recs)]).track_contents();
    sim.run(&mut |_| {}).unwrap();
    let g = sim.guest(0);
    let p = g.process(1).expect("alive");
    let m = softwalk::translate(&g.mem, p.root, g.levels(), LIB).expect("mapped");
    assert_eq!(m.level, 2, "one 2 MiB page");
    let c = g.contents().unwrap();
    for i in [0u64, 1, 3, 511] {
        assert_eq!(
            c.get(m.gpfn + i),
            file_page(key, 0x10_0000 + i * 0x1000),
            "frame {i} of the huge page"
        );
    }
}

// ---------------------------------------------------------------------------
// hv/selective.rs `Predictive`

/// Round costs: a page-table reference 100 cycles (no line-cache hit in
/// these counts), exits at their default prices: EPT violation 1200 +
/// 2000, shadow fill 1200 + 2500, injected fault 1200 + 1000, PT write
/// 1200 + 3000, CR3 1200 + 500, INVLPG 1200 + 300.
fn cost() -> CostModel {
    let pt = PtCacheConfig {
        hit_cycles: 10,
        miss_cycles: 100,
        ..PtCacheConfig::default()
    };
    CostModel::new(&CostConfig::default(), &pt)
}

fn input<'a>(
    cur: Paging,
    d: &'a Stats,
    c: &'a CostModel,
    backed: u64,
    periods: u64,
) -> PolicyInput<'a> {
    PolicyInput {
        cur,
        period: d,
        cost: c,
        backed_frames: backed,
        periods_in_mode: periods,
    }
}

fn walk_refs(guest: u64, nested: u64, shadow: u64) -> [u64; 3] {
    let mut d = [0; 3];
    d[Dim::Guest as usize] = guest;
    d[Dim::Nested as usize] = nested;
    d[Dim::Shadow as usize] = shadow;
    d
}

/// A nested period: 40 guest and 160 nested references (20,000 cycles),
/// 5 EPT violations (16,000), 3 guest faults (3279), 10 PTE stores (10),
/// 2 context switches (4000), 1 exec, 4 INVLPGs, 1 TLB flush, 5 frames
/// backed; 100,000 instructions. Total 143,289.
fn nested_period() -> Stats {
    let mut d = Stats {
        instructions: 100_000,
        guest_page_faults: 3,
        host_frames_backed: 5,
        guest_pte_writes: 10,
        context_switches: 2,
        execs: 1,
        invlpgs: 4,
        tlb_flushes: 1,
        ..Stats::default()
    };
    d.walk_refs_by_dim = walk_refs(40, 160, 0);
    d.vm_exits[ExitReason::EptViolation as usize] = 5;
    d
}

/// A shadow period: 50 shadow references (5000), 12 shadow faults
/// (44,400), 6 PT-write exits (25,200), 2 injected faults (4400), 8 PTE
/// stores (8), 2 guest faults (2186), 3 frames backed; 100,000
/// instructions. Total 181,194.
fn shadow_period() -> Stats {
    let mut d = Stats {
        instructions: 100_000,
        guest_page_faults: 2,
        host_frames_backed: 3,
        guest_pte_writes: 8,
        ..Stats::default()
    };
    d.walk_refs_by_dim = walk_refs(0, 0, 50);
    d.vm_exits[ExitReason::ShadowFault as usize] = 12;
    d.vm_exits[ExitReason::PtWrite as usize] = 6;
    d.vm_exits[ExitReason::GuestFault as usize] = 2;
    d
}

/// The estimates of both directions, and what each learns for the other,
/// by hand. (Kills the arithmetic and comparison mutants of
/// `Predictive::estimate`.)
#[test]
fn predictive_estimates_exactly() {
    let c = cost();
    let mut p = Predictive::new(2);
    let nested = nested_period();
    let shadow = shadow_period();
    assert_eq!(c.price(&nested).total, 143_289);
    assert_eq!(c.price(&shadow).total, 181_194);
    // Nested: shadow would walk only the guest's 40 references of the 200
    // (4000 cycles) and exit for 3 injected faults (6600), 3 + 5 hidden
    // faults (29,600), 10 x 0.5 PT writes (21,000), 2 + 1 CR3 loads (5100)
    // and 4 + 1 INVLPGs (7500): 69,800. 143,289 - 20,000 - 16,000 + 4000 +
    // 69,800 = 181,089. Learns 0.5 x 3 + 0.5 x 160/40 = 3.5 nested
    // references per guest reference.
    let e = p.estimate(&input(Paging::Nested, &nested, &c, 5, 1));
    assert_eq!(e, (143_289.0, 181_089.0));
    // Shadow, within the horizon (2 periods of 2): nested would walk 5000
    // x (1 + 3.5) = 22,500 and take 3 EPT violations (9600): 181,194 -
    // 5000 - 74,000 + 22,500 + 9600 = 134,294. The 12 - 2 - 3 = 7 refill
    // faults (25,900) are sunk. Learns 0.5 x 0.5 + 0.5 x 6/8 = 0.625 PT
    // writes per PTE store.
    let e = p.estimate(&input(Paging::Shadow, &shadow, &c, 3, 2));
    assert_eq!(e, (181_194.0 - 25_900.0, 134_294.0));
    // Past the horizon nothing is sunk. PT writes per PTE store move
    // again: 0.5 x 0.625 + 0.5 x 0.75 = 0.6875.
    let e = p.estimate(&input(Paging::Shadow, &shadow, &c, 3, 3));
    assert_eq!(e, (181_194.0, 134_294.0));
    // Nested again: 10 x 0.6875 PT writes (28,875) instead of 21,000.
    let e = p.estimate(&input(Paging::Nested, &nested, &c, 5, 1));
    assert_eq!(e, (143_289.0, 181_089.0 + 28_875.0 - 21_000.0));
    // Shadow: 0.5 x 3.5 + 0.5 x 4 = 3.75 nested references per guest
    // one: 5000 x 4.75 = 23,750.
    let e = p.estimate(&input(Paging::Shadow, &shadow, &c, 3, 3));
    assert_eq!(e, (181_194.0, 134_294.0 + 1250.0));
}

/// A nested period without guest references (no walk at all) teaches
/// nothing: the next shadow estimate still uses the initial 3 nested
/// references per guest one; 0 references give 0 other walks. (Kills
/// `g > 0.0` as `>=` (a 0/0 ratio), `==` and `<`, and `g + n > 0.0` as
/// `>=`.)
#[test]
fn predictive_learns_nothing_from_a_period_without_walks() {
    let c = cost();
    let mut p = Predictive::new(2);
    let mut quiet = nested_period();
    quiet.walk_refs_by_dim = [0; 3];
    // 143,289 - 20,000 = 123,289; other: 123,289 - 16,000 + 69,800.
    let e = p.estimate(&input(Paging::Nested, &quiet, &c, 5, 1));
    assert_eq!(e, (123_289.0, 177_089.0));
    // Shadow past the horizon: nested walks 5000 x (1 + 3) = 20,000.
    let shadow = shadow_period();
    let e = p.estimate(&input(Paging::Shadow, &shadow, &c, 3, 3));
    assert_eq!(e, (181_194.0, 134_294.0 - 2500.0));
}

/// A shadow period without guest PTE stores teaches nothing about PT
/// writes per store: the next nested estimate still uses 0.5. (Kills
/// `guest_pte_writes > 0` as `>=`, a 0/0 ratio.)
#[test]
fn predictive_learns_nothing_from_a_period_without_pte_stores() {
    let c = cost();
    let mut p = Predictive::new(2);
    let mut quiet = shadow_period();
    quiet.guest_pte_writes = 0;
    quiet.vm_exits[ExitReason::PtWrite as usize] = 0;
    // 181,194 - 8 - 25,200 = 155,986; other: 155,986 - 5000 - 48,800 +
    // 5000 x (1 + 3) + 9600.
    let e = p.estimate(&input(Paging::Shadow, &quiet, &c, 3, 3));
    assert_eq!(e, (155_986.0, 131_786.0));
    let e = p.estimate(&input(Paging::Nested, &nested_period(), &c, 5, 1));
    assert_eq!(e, (143_289.0, 181_089.0));
}

/// A nested period whose only cost is `guest + nested` walk references
/// (100 cycles each): shadow paging would save the nested ones, 100 x
/// `nested`.
fn walk_period(guest: u64, nested: u64) -> Stats {
    Stats {
        walk_refs_by_dim: walk_refs(guest, nested, 0),
        ..Stats::default()
    }
}

fn decide(p: &mut Predictive, d: &Stats, backed: u64, periods: u64) -> Paging {
    p.decide(&input(Paging::Nested, d, &cost(), backed, periods))
}

/// The switch rule at its bounds. One backed frame: a switch costs one
/// hidden fault, 3700 cycles. (Kills `>` as `>=` in each of the four
/// comparisons of `decide`, and `&&` as `||`.)
#[test]
fn predictive_switches_only_past_the_switch_cost() {
    // One period saving exactly the switch cost: no switch; 3800: switch.
    let mut p = Predictive::new(2);
    assert_eq!(decide(&mut p, &walk_period(10, 37), 1, 1), Paging::Nested);
    let mut p = Predictive::new(2);
    assert_eq!(decide(&mut p, &walk_period(10, 38), 1, 1), Paging::Shadow);
    // Two periods saving 1800 then 1900: smoothed 1850 x horizon 2 =
    // 3700, not above 3700: no switch; 1800 then 2000: switch.
    let mut p = Predictive::new(2);
    assert_eq!(decide(&mut p, &walk_period(10, 18), 1, 1), Paging::Nested);
    assert_eq!(decide(&mut p, &walk_period(10, 19), 1, 2), Paging::Nested);
    let mut p = Predictive::new(2);
    assert_eq!(decide(&mut p, &walk_period(10, 18), 1, 1), Paging::Nested);
    assert_eq!(decide(&mut p, &walk_period(10, 20), 1, 2), Paging::Shadow);
    // Smoothing needs both savings positive: a first saving of 3000 over
    // a horizon of 3 (smoothed 1500 x 3 = 4500 > 3700) does not switch,
    // the last saving alone being below the cost ...
    let mut p = Predictive::new(2);
    assert_eq!(decide(&mut p, &walk_period(10, 30), 1, 3), Paging::Nested);
    // ... nor does a saving of 0 after it (smoothed 1500 x 3 again).
    assert_eq!(decide(&mut p, &walk_period(10, 0), 1, 3), Paging::Nested);
    // Two positive savings of 3000: smoothed 3000 x 3 > 3700: switch.
    let mut p = Predictive::new(2);
    assert_eq!(decide(&mut p, &walk_period(10, 30), 1, 3), Paging::Nested);
    assert_eq!(decide(&mut p, &walk_period(10, 30), 1, 3), Paging::Shadow);
}

// ---------------------------------------------------------------------------
// guest/os/mapping.rs `for_leaves` and guest/reclaim.rs `swapped_pages`

fn munmap(pid: u32, addr: u64, len: u64) -> Record {
    ev(pid, ProcEvent::Munmap { addr, len })
}

/// munmap over a hole: the walk steps over a non-present 4 KiB PTE by 4
/// KiB (the span of a level-1 entry, `1 << (12 + 9 * (level - 1))`) and
/// still unmaps the page after it, in the same 2 MiB. (Kills that span's
/// `*` replaced by `+`: a 2 MiB step, leaving A + 8 KiB mapped and its
/// frame lost to the free list.)
#[test]
fn munmap_steps_over_a_hole_by_one_page() {
    let cfg = Config::default();
    let mut sim = Sim::new(vmemsim::hv::Native, &cfg);
    run(&mut sim, &[anon_mmap(1, A, 4 << 20), acc(1, Store, A)]);
    // Root, PDPT, PD, PT and A's frame are taken; A + 8 KiB's comes next.
    let free = sim.guest.free_frames();
    run(&mut sim, &[acc(1, Store, A + 0x2000)]);
    assert_eq!(sim.guest.free_frames(), free - 1);
    run(&mut sim, &[munmap(1, A, 0x3000)]);
    let g = &sim.guest;
    let root = g.current().unwrap().root;
    assert_eq!(softwalk::translate(&g.mem, root, 4, A + 0x2000), None);
    assert_eq!(softwalk::translate(&g.mem, root, 4, A), None);
    assert_eq!(g.free_frames(), free + 1, "both data frames freed");
}

/// munmap of exactly one 2 MiB page removes its PD leaf: one PTE store,
/// no split (no page-table frame zeroed, no 512 stores). (Kills
/// `base < s` as `base <= s`, which splits a huge page the range covers
/// from its first byte and then unmaps its 512 pieces one by one.)
#[test]
fn munmap_of_a_whole_huge_page_does_not_split_it() {
    let mut cfg = Config::default();
    cfg.guest.huge_pages = HugePages::Huge2M;
    let mut sim = Sim::new(vmemsim::hv::Native, &cfg);
    run(&mut sim, &[anon_mmap(1, A, 4 << 20), acc(1, Store, A)]);
    let g = &sim.guest;
    let root = g.current().unwrap().root;
    assert_eq!(softwalk::translate(&g.mem, root, 4, A).unwrap().level, 2);
    let before = sim.stats().clone();
    run(&mut sim, &[munmap(1, A, 2 << 20)]);
    let d = sim.stats().since(&before);
    assert_eq!((d.guest_pte_writes, d.frames_zeroed), (1, 0));
    let g = &sim.guest;
    assert_eq!(softwalk::translate(&g.mem, root, 4, A), None);
}

/// The guest's swap occupancy as the ESX report reads it: 0 with no swap
/// device, 0 before reclaim, 1 after it swapped one page out, 0 again
/// once that page is read back (the sequence of tests/guest_swap.rs's
/// `swap_out_then_touch`). (Kills `swapped_pages` returning 1.)
#[test]
fn swapped_pages_counts_the_pages_in_guest_swap() {
    let mut cfg = Config::default();
    let sim = Sim::new(vmemsim::hv::Native, &cfg);
    assert_eq!(sim.guest.swapped_pages(), 0, "no swap device");
    cfg.guest.mem_mib = 64;
    cfg.guest.swap_mib = 1;
    cfg.guest.watermark_low_pages = 15868;
    cfg.guest.watermark_high_pages = 15868;
    let mut sim = Sim::new(vmemsim::hv::Native, &cfg);
    run(&mut sim, &[anon_mmap(1, A, 4 << 20), acc(1, Load, A)]);
    assert_eq!(sim.guest.swapped_pages(), 0);
    run(&mut sim, &[acc(1, Load, A + 0x1000)]);
    assert_eq!(sim.stats().guest_swap_outs, 1);
    assert_eq!(sim.guest.swapped_pages(), 1);
    run(&mut sim, &[munmap(1, A + 0x1000, 0x1000), acc(1, Load, A)]);
    assert_eq!(sim.stats().guest_swap_ins, 1);
    assert_eq!(sim.guest.swapped_pages(), 0);
}

/// A 64 MiB guest (16384 frames, 15872 free to the kernel's allocator)
/// with 1 MiB of swap and both reclaim watermarks at `pages`.
fn swapping_guest(pages: u64) -> Config {
    let mut cfg = Config::default();
    cfg.guest.mem_mib = 64;
    cfg.guest.swap_mib = 1;
    cfg.guest.watermark_low_pages = pages;
    cfg.guest.watermark_high_pages = pages;
    cfg
}

/// Guest reclaim without PCIDs (`guest.pcid = false`): Linux flushes a
/// reclaimed page's entry from the TLB only for the address space that is
/// loaded; another process's entries left the TLB at its last CR3 load.
/// Here the running process's own page is reclaimed: as with PCIDs
/// (`tests/guest_swap.rs`), reclaim invalidates it twice (accessed bit
/// cleared, then swapped out) and the munmap once, in every mode.
/// Kills `guest/reclaim.rs` `self.current == Some(pid)` to `!=` (then
/// reclaim skips the running process: 1 INVLPG).
#[test]
fn reclaim_without_pcids_invalidates_the_running_process() {
    let mut cfg = swapping_guest(15868);
    cfg.guest.pcid = false;
    let records = [
        anon_mmap(1, A, 4 << 20),
        acc(1, Load, A),
        acc(1, Load, A + 0x1000),
        munmap(1, A + 0x1000, 0x1000),
        acc(1, Load, A),
    ];
    for m in common::all_modes(&cfg, &records) {
        let s = &m.stats;
        assert_eq!((s.guest_swap_outs, s.guest_swap_ins), (1, 1), "{}", m.name);
        assert_eq!(s.invlpgs, 3, "{}", m.name);
    }
}

/// ESX idle sampling sees an agile VM's touches through its shadow leaves
/// ([`Mode::host_mapped`]): the host invalidates a sampled frame's EPT
/// entry and shadow leaves; a fully shadowed walk refills only the shadow
/// leaf, so the EPT entry alone would call every such frame idle.
/// Experiment 1 (`examples/esx/idle-tax.toml`, 1 M accesses) with both VMs
/// agile and `agile.clean_refill_costs = 0` (a table clean for one interval
/// returns to shadow, so about half the active VM's walks are fully
/// shadowed): the idle VM is estimated idle and the active one active
/// (0.52; 0.02 when the mode's shadow leaves are not consulted). Kills
/// `hv/agile.rs` `host_mapped -> false` (shard 3).
#[test]
fn esx_sampling_sees_an_agile_vms_shadow_touches() {
    let r = idle_vm_idle_active_vm_active("agile", "[agile]\nclean_refill_costs = 0.0\n");
    let fully_shadowed = r.vms[1].stats.walks_by_switch[0];
    assert!(
        fully_shadowed > r.vms[1].stats.walks / 3,
        "a third of the walks fully shadowed: {:?}",
        r.vms[1].stats.walks_by_switch
    );
}

/// Experiment 1 in `mode` (see [`idle_tax_in`]): the idle VM estimated
/// idle (under 0.1 active), the active one active (over 0.3).
fn idle_vm_idle_active_vm_active(mode: &str, extra: &str) -> vmemsim::hostsim::HostReport {
    let (r, active) = idle_tax_in(mode, extra);
    assert!(
        active[0] < 0.1 && active[1] > 0.3,
        "{mode}: estimated active: {active:?}"
    );
    r
}

/// Experiment 1 (`examples/esx/idle-tax.toml`) at 1 M accesses with both
/// VMs in `mode` and `extra` appended to the host file: the report and
/// each VM's estimated active fraction at the end, once the active VM's
/// touched samples were seen at all.
fn idle_tax_in(mode: &str, extra: &str) -> (vmemsim::hostsim::HostReport, Vec<f64>) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/esx");
    let text = std::fs::read_to_string(dir.join("idle-tax.toml"))
        .unwrap()
        .replace("accesses = 3000000", "accesses = 1000000")
        .replace("mode = \"nested\"", &format!("mode = \"{mode}\""))
        + "\n"
        + extra;
    let cfg = HostConfig::from_toml(&text, "idle-tax.toml", &dir).unwrap();
    let r = HostSim::new(&cfg).unwrap().run(&mut |_| {}).unwrap();
    let e = r.esx.as_ref().unwrap();
    assert!(e.manager.counters[1].touched_frames > 0, "{mode}");
    let active = e
        .manager
        .series
        .last()
        .unwrap()
        .vms
        .iter()
        .map(|v| v.active)
        .collect();
    (r, active)
}

/// Page sharing over guest 2 MiB pages: two VMs on `random` and one on
/// `seq` (16 MiB each, so the guest maps 2 MiB pages and the host shares
/// and breaks their 4 KiB frames one by one) in every virtualized mode,
/// the scanner visiting every frame many times. Every access is checked
/// inside the host run (as in `tests/sharing.rs`), and every VM resolves
/// every access to the gPFNs, with the guest faults, of the VM alone.
/// Kills `hv/direct.rs` `MEntry::guest_entry`'s sub-frame test
/// `frame + sub == gpfn` with `*` (shard 3): a COW break then misses the
/// splinter entry of the broken frame, and the guest faults run away; and
/// `Direct::rewrite`'s present test `me & P == 0` with `!=` (no machine
/// entry is ever repointed: a shared frame then holds another VM's
/// content). The fast set had no sharing oracle in direct mode before.
#[test]
fn sharing_over_guest_huge_pages_keeps_each_vms_meaning() {
    for mode in ModeKind::ALL.into_iter().filter(|m| m.is_virtualized()) {
        let vm = |name: &str, workload: &str| {
            format!(
                "[[vm]]\nname = \"{name}\"\nworkload = \"{workload}\"\nfootprint_mib = 16\n\
                 accesses = 100000\nmode = \"{}\"\nmem_mib = 64\n",
                mode.name()
            )
        };
        let text = format!(
            "[guest]\nhuge_pages = \"2m\"\n[host]\nmem_mib = 256\nvm_quantum_instructions = 3000\n\
             pcpus = 2\n[sharing]\nrate_pages_per_s = 1e7\n{}{}{}",
            vm("a", "random"),
            vm("b", "random"),
            vm("c", "seq")
        );
        let cfg =
            HostConfig::from_toml(&text, "huge-sharing.toml", std::path::Path::new(".")).unwrap();
        let records: Vec<Vec<Record>> = cfg
            .vms
            .iter()
            .map(|s| common::collect(vmemsim::hostsim::open_input(s).unwrap().as_mut()))
            .collect();
        let sources = records.iter().map(|r| replay(r)).collect();
        let mut sim = HostSim::with_sources(&cfg, sources).checked();
        let report = sim.run(&mut |_| {}).unwrap();
        let shares = sim.scanner_stats().unwrap().shares;
        let breaks: u64 = (0..3).map(|i| sim.vm(i).sharing.cow_breaks).sum();
        assert!(
            shares > 1000 && breaks > 1000,
            "{mode:?}: {shares} shares, {breaks} breaks"
        );
        for (i, spec) in cfg.vms.iter().enumerate() {
            let (alone, alone_stats) = spec
                .mode
                .with_mode(&spec.cfg, Alone(&spec.cfg, &records[i]));
            // The gPFN of every access (the hPFNs differ: alone has its own host).
            let hosted: Vec<u64> = sim.resolutions(i).iter().map(|r| r.0).collect();
            let alone: Vec<u64> = alone.iter().map(|r| r.0).collect();
            assert!(hosted == alone, "{mode:?}: {}: gPFNs differ", spec.name);
            let s = &report.vms[i].stats;
            assert_eq!(
                (s.guest_page_faults, s.demand_faults),
                (alone_stats.guest_page_faults, alone_stats.demand_faults),
                "{mode:?}: {}",
                spec.name
            );
        }
    }
}

/// A guest copy-on-write fault on a frame the host shares is the guest's,
/// not a host COW break: two VMs store the same first value to page A and
/// both have a zero page Z; the scanner merges both pairs (quantum 1: each
/// VM runs to its first fetch, then the scanner's cycle). VM 0 then forks
/// and the child stores to Z, which its tables map read-only: the guest
/// copies Z (a guest fault), and the host breaks nothing (0 COW breaks in
/// every virtualized mode; the shared zero frame is only read). Kills
/// `hv/direct.rs` `cow_fault`'s "the guest allows the store" test (`&&`
/// to `||`: the leaf alone decides), which made the store a host COW break
/// first (shard 3).
#[test]
fn a_guest_cow_fault_on_a_shared_frame_breaks_no_host_sharing() {
    const Z: u64 = 0x7000_1000;
    const DATA: u64 = 0x7000_0000;
    let vm = |code: u64, fork: bool| {
        let mut r = vec![
            ev(
                1,
                ProcEvent::Mmap {
                    addr: DATA,
                    len: 1 << 20,
                    prot: 3,
                    flags: 0x22,
                    file: None,
                },
            ),
            acc(1, Store, DATA + 0x10),
            acc(1, Load, Z),
            acc(1, AccessKind::Fetch, code),
            acc(1, AccessKind::Fetch, code),
        ];
        if fork {
            r.push(ev(1, ProcEvent::Fork { child: 2 }));
            r.push(acc(2, Store, Z + 8));
            r.push(acc(2, AccessKind::Fetch, code));
        }
        r
    };
    for mode in ModeKind::ALL.into_iter().filter(|m| m.is_virtualized()) {
        let cfg = scanning_host(mode, 2, "");
        let inputs = [vm(0x40_0000, true), vm(0x80_0000, false)];
        let sources = inputs.iter().map(|r| replay(r)).collect();
        let mut s = HostSim::with_sources(&cfg, sources).checked();
        assert!(s.round().unwrap() && s.round().unwrap());
        assert_eq!(
            s.host().sharing(None).saved_frames,
            2,
            "{mode:?}: A and Z shared"
        );
        let faults_before = s.vm(0).stats.guest_page_faults;
        s.run(&mut |_| {}).unwrap();
        assert_eq!(s.vm(0).sharing.cow_breaks, 0, "{mode:?}");
        // The child's store: one guest (copy-on-write) fault.
        assert_eq!(
            s.vm(0).stats.guest_page_faults,
            faults_before + 1,
            "{mode:?}"
        );
    }
}

/// `selective` and `selective-w11` on `phases` (500 000 accesses over 16
/// MiB, 250 000 instructions) with `cfg`.
fn switching_modes_on_phases(cfg: &Config) -> Vec<(ModeKind, vmemsim::ModeResult)> {
    let spec = vmemsim::workload::WorkloadSpec {
        accesses: 500_000,
        footprint_mib: 16,
        ..vmemsim::workload::WorkloadSpec::default_for(vmemsim::workload::WorkloadKind::Phases)
    };
    [ModeKind::Selective, ModeKind::SelectiveW11]
        .into_iter()
        .map(|kind| {
            let r = vmemsim::run_mode(kind, cfg, &mut spec.source(), &mut |_| {}).unwrap();
            (kind, r)
        })
        .collect()
}

/// A switching mode closes one sampling period per
/// `selective.period_instructions` (default 100 000) guest instructions:
/// `phases` at 500 000 accesses retires 250 000 instructions (a fetch
/// every second access), so the report holds two full intervals and a
/// last one of 50 000, in both `selective` and `selective-w11`. Kills `hv/selective/mod.rs`
/// `next_boundary -> 1` (shard 3: a period closed at every access), and
/// the default `Policy::rules_fired -> [1]` (shard 19: the predictive
/// policy reported a rule).
#[test]
fn a_switching_mode_samples_once_per_period() {
    for (kind, r) in switching_modes_on_phases(&Config::default()) {
        let sw = r.switching.expect("a switching report");
        let lens: Vec<u64> = sw.intervals.iter().map(|i| i.instructions).collect();
        assert_eq!(r.stats.instructions, 250_000, "{kind:?}");
        // Only W11 has numbered rules (seven); the predictive policy none.
        let rules = if kind == ModeKind::SelectiveW11 { 7 } else { 0 };
        assert_eq!(sw.rules_fired.len(), rules, "{kind:?}");
        assert_eq!(sw.period_instructions, 100_000, "{kind:?}");
        assert_eq!(lens.len(), 3, "{kind:?}: periods closed");
        assert_eq!(lens, [100_000, 100_000, 50_000], "{kind:?}");
    }
}

/// The switching report of a measured window still gives the sampling
/// period: with a warm-up of 120 000 instructions, `phases` reports
/// `period_instructions` 100 000 and the intervals of the window only
/// (the 20 000 left of the second period, then the third). Kills
/// `hv/selective/mod.rs:291` (`window_start`'s `period_instructions`
/// deleted, shard 9: a report of 0).
#[test]
fn a_measured_window_reports_the_sampling_period() {
    let mut cfg = Config::default();
    cfg.measure.warmup_instructions = 120_000;
    for (kind, r) in switching_modes_on_phases(&cfg) {
        let sw = r.switching.expect("a switching report");
        let lens: Vec<u64> = sw.intervals.iter().map(|i| i.instructions).collect();
        assert_eq!(sw.period_instructions, 100_000, "{kind:?}");
        assert_eq!(lens, [80_000, 50_000], "{kind:?}");
    }
}

/// A guest table frame that stops being a table loses its shadow page:
/// process 1 loads A (its PML4, PDPT, PD and PT are shadowed by the walk),
/// process 2 is created, and process 1 exits before process 2 touches
/// anything: its four table frames are freed and each is unshadowed
/// (`shadow_unshadows` 4). Kills `hv/shadow.rs` `unshadow`'s
/// `shadow_unshadows += 1` with `*=` (shard 3).
#[test]
fn an_exiting_process_unshadows_each_of_its_tables() {
    let records = [
        anon_mmap(1, A, 4 << 20),
        acc(1, Load, A),
        anon_mmap(2, A, 4 << 20),
        ev(1, ProcEvent::Exit { code: 0 }),
        acc(2, Load, A + 0x1000),
    ];
    let s = checked_stats(ModeKind::Shadow, &Config::default(), &records);
    assert_eq!(s.shadow_unshadows, 4);
}

/// ESX idle sampling sees a `swtlb-vmm` VM's touches: the VMM keeps its
/// pmap in the VM's EPT, the host invalidates a sampled frame there, and
/// the next refill of that frame makes the entry valid again (as an EPT
/// violation would). Experiment 1 (`examples/esx/idle-tax.toml`, 1 M
/// accesses) with both VMs `swtlb-vmm`: the idle VM is estimated idle and
/// the active one active. Kills `hv/swtlb.rs` `machine_fill`'s
/// `& need != need` with `==` (shard 3: the entry is never restored).
#[test]
fn esx_sampling_sees_a_swtlb_vmm_vms_refills() {
    idle_vm_idle_active_vm_active("swtlb-vmm", "[cpu]\ntlb = \"software\"\n");
}

// ---------------------------------------------------------------------------
// hv/direct.rs `MEntry::guest_entry`: stale reverse-map records

/// Direct paging keeps a reverse map from each gPFN to the machine
/// entries written for it and drops a record lazily, when the guest entry
/// behind it no longer maps that gPFN. Three zero pages (frames a, b, c,
/// for P3, P1 and P2) are merged into one host frame; P2 and P1 are
/// unmapped, so the guest frees c, then b. P2 mapped again gets b (the
/// guest's free list is LIFO), which the guest zeroes (a COW break: b is
/// copied) and the next scan merges into the zero frame again. Now c's
/// stale record names P2's machine entry, whose guest entry maps b and
/// whose machine entry names the zero frame, c's old frame. P0's fault
/// takes c and zeroes it: c's COW break must leave P2's entry alone. The
/// host oracle checks every access's hPFN against the p2m. (Kills the
/// present test's `&&` as `||`: every present guest entry counts as
/// mapping c, P2's machine entry is repointed at c's copy and P2's load
/// resolves to it. Found by a seeded search over traces of mmap, munmap,
/// loads, stores and scans of four pages, then minimised.)
#[test]
fn direct_cow_break_skips_a_stale_record_whose_entry_maps_another_frame() {
    const D: u64 = 0x7000_0000;
    let p = |i: u64| D + i * 0x1000;
    let code = 0x40_0000;
    let page = |i: u64| anon_mmap(1, p(i), 0x1000);
    let unmap = |i: u64| {
        ev(
            1,
            ProcEvent::Munmap {
                addr: p(i),
                len: 0x1000,
            },
        )
    };
    let records = [
        page(3),
        acc(1, Load, p(3)),
        page(1),
        acc(1, Load, p(1)),
        page(2),
        acc(1, Load, p(2)),
        acc(1, AccessKind::Fetch, code),
        acc(1, AccessKind::Fetch, code),
        unmap(2),
        unmap(1),
        page(2),
        acc(1, Load, p(2)),
        acc(1, AccessKind::Fetch, code),
        page(0),
        acc(1, Load, p(0)),
        acc(1, Load, p(2)),
    ];
    let cfg = scanning_host(ModeKind::Direct, 1, "");
    let mut s = HostSim::with_sources(&cfg, vec![replay(&records)]).checked();
    s.run(&mut |_| {}).unwrap();
    let seen = s.resolutions(0);
    let gpfn = |k: usize| seen[k].0;
    // Accesses: P3, P1, P2, code, code, P2 (b), code, P0 (c), P2 (b).
    assert_eq!(seen.len(), 9);
    assert_eq!(gpfn(5), gpfn(1), "P2 mapped again gets b, P1's old frame");
    assert_eq!(gpfn(7), gpfn(2), "P0 gets c, P2's old frame");
    // The scans kept c's first host frame as the zero frame: b is on it
    // at the end, c on its own copy.
    assert_eq!(seen[8], (gpfn(1), seen[2].1));
    assert_ne!(seen[7].1, seen[2].1);
    assert_eq!(s.vm(0).sharing.cow_breaks, 2, "b's and c's zeroing");
}

// ---------------------------------------------------------------------------
// Accessed and dirty bits in the guest's tables, every mode

/// The guest's entries on each access's path, after `records`.
struct PathEntries<'a>(&'a Config, &'a [Record], &'a [u64]);

impl vmemsim::sim::ModeVisitor for PathEntries<'_> {
    type Output = Vec<Vec<u64>>;
    fn visit<M: Mode>(self, mode: M) -> Self::Output {
        let mut sim = Sim::new(mode, self.0);
        run(&mut sim, self.1);
        let root = sim.guest.current().unwrap().root;
        self.2
            .iter()
            .map(|&va| {
                let path = softwalk::path(&sim.guest.mem, root, 4, va);
                path.steps[..path.len].iter().map(|s| s.2).collect()
            })
            .collect()
    }
}

/// A user page's path is present and user-accessible at every level
/// (the guest maps user memory with U/S set [SDM 4.6]); a load sets the
/// accessed bit of every entry on it and the dirty bit of none; a store
/// also sets its leaf's dirty bit, and only the leaf's (x86 sets D in
/// leaf entries only [SDM 4.8]). The same in every mode: hardware sets
/// them in native and nested, the hypervisor in shadow, agile, direct and
/// the software-TLB modes. (Kills direct paging's fill with `leaf &&
/// write` as `||`: a load dirtied its page and a store every level; shard
/// 4. And the guest's `leaf_flags` with `US | A` as `US & A`: a leaf
/// without U/S; shard 5.)
#[test]
fn loads_set_accessed_bits_and_stores_dirty_only_their_leaf() {
    let cfg = Config::default();
    let records = [
        anon_mmap(1, A, 4 << 20),
        acc(1, Load, A),
        acc(1, Store, A + 0x1000),
    ];
    let vas = [A, A + 0x1000];
    for kind in ModeKind::ALL {
        let paths = kind.with_mode(&cfg, PathEntries(&cfg, &records, &vas));
        for (va, (path, store)) in vas.iter().zip(paths.iter().zip([false, true])) {
            assert_eq!(path.len(), 4, "{kind:?}");
            for (i, &e) in path.iter().enumerate() {
                let leaf = i == 3;
                // Present, user and accessed at every level.
                let pua = x86::P | x86::US | x86::A;
                assert_eq!(e & pua, pua, "{kind:?} {va:#x} level {}", 4 - i);
                assert_eq!(
                    e & x86::D != 0,
                    leaf && store,
                    "{kind:?} {va:#x} level {}",
                    4 - i
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// hv/shadow.rs `resync_entry`: a resynced leaf over a shared frame

/// Two shadow VMs on a scanning host. VM 0 loads P3 and P0 (zero pages),
/// then stores to P0 at offset 8; VM 1 stores to its P2 at offset 8 as
/// well, so after the next scan VM 0's P0 and VM 1's P2 hold the same
/// content and share one host frame, read-only. VM 0 forks: the guest
/// write-protects the parent's PTEs (its PT goes unsync) and the flush
/// that follows resyncs the PT. The resynced P0 leaf keeps the shared
/// frame, present and read-only, so the parent's load of P0 takes no
/// hidden fault: 22 shadow-fault exits and 5 fills in all. (Kills
/// `f &= !x86::RW` as `f &= x86::RW` in `resync_entry`: the leaf lost
/// every right but RW, the present bit among them, and the load took a
/// 23rd hidden fault and a 6th fill; shard 4. The oracle cannot see it: a
/// refill resolves the same.)
#[test]
fn a_resynced_leaf_over_a_shared_frame_stays_present_and_read_only() {
    use AccessKind::Fetch;
    const D: u64 = 0x7000_0000;
    let p = |i: u64| D + i * 0x1000;
    let code = |n: usize| vec![acc(1, Fetch, 0x40_0000); n];
    let page = |i: u64| anon_mmap(1, p(i), 0x1000);
    let mut vm0 = code(3);
    vm0.extend([
        page(3),
        acc(1, Load, p(3) + 8),
        page(0),
        acc(1, Load, p(0) + 8),
    ]);
    vm0.extend(code(4));
    vm0.push(acc(1, Store, p(0) + 8));
    vm0.extend(code(2));
    vm0.extend([ev(1, ProcEvent::Fork { child: 2 }), acc(1, Load, p(0))]);
    vm0.extend(code(1));
    let mut vm1 = code(1);
    vm1.extend([
        page(0),
        acc(1, Load, p(0) + 8),
        page(2),
        acc(1, Load, p(2) + 8),
        ev(
            1,
            ProcEvent::Munmap {
                addr: p(0),
                len: 0x1000,
            },
        ),
        acc(1, Load, p(2)),
        page(3),
        acc(1, Load, p(3)),
        acc(1, Store, p(2) + 8),
        acc(1, Load, p(3) + 8),
    ]);
    vm1.extend(code(5));
    let cfg = scanning_host(ModeKind::Shadow, 2, "");
    let mut s = HostSim::with_sources(&cfg, vec![replay(&vm0), replay(&vm1)]).checked();
    s.run(&mut |_| {}).unwrap();
    // VM 0's accesses: 3 fetches, P3, P0, 4 fetches, P0's store, 2
    // fetches, P0's load after the fork, a fetch.
    let seen = s.resolutions(0);
    assert_eq!(seen.len(), 14);
    let (store, load) = (seen[9], seen[12]);
    assert_eq!(store.0, load.0, "P0's gPFN");
    assert_ne!(store.1, load.1, "P0 moved to the shared frame");
    assert!(s.host().is_shared(vmemsim::addr::Hpfn(load.1)));
    let st = &s.vm(0).stats;
    assert_eq!(st.forks, 1);
    assert_eq!((st.shadow_unsyncs, st.shadow_resyncs), (2, 2));
    assert_eq!(st.exits_for(ExitReason::ShadowFault), 22);
    assert_eq!(st.shadow_fills, 5);
    assert_eq!(st.walks, 17);
}

// ---------------------------------------------------------------------------
// hv/shadow.rs `resync_reachable`: only pages the new root reaches

/// A CR3 load resyncs the unsync pages reachable from the new root and
/// keeps the others for their own process's CR3 load (KVM's
/// `kvm_mmu_sync_roots`). Process 1 loads A (its four tables are shadowed)
/// and then A + 4 KiB: the guest's demand fault stores a PTE into the
/// shadowed PT, which goes unsync. Process 2 runs: its root does not reach
/// process 1's PT, so nothing is resynced; process 1 runs again and its PT
/// is resynced, once (and unsynced again by its next demand fault). (Kills `root != NO_ROOT && self.reaches(..)` with
/// `||`, which resynced process 1's PT at process 2's CR3 load; shard 6.)
#[test]
fn a_cr3_load_resyncs_only_the_unsync_pages_its_root_reaches() {
    let first = [
        anon_mmap(1, A, 4 << 20),
        acc(1, Load, A),
        acc(1, Load, A + 0x1000),
        anon_mmap(2, A, 4 << 20),
        acc(2, Load, A),
    ];
    let s = checked_stats(ModeKind::Shadow, &Config::default(), &first);
    assert_eq!((s.shadow_unsyncs, s.shadow_resyncs), (1, 0));
    let mut again = first.to_vec();
    again.push(acc(1, Load, A + 0x2000));
    let s = checked_stats(ModeKind::Shadow, &Config::default(), &again);
    // The resync write-protects the PT again: process 1's next demand
    // fault unsyncs it a second time.
    assert_eq!((s.shadow_unsyncs, s.shadow_resyncs), (2, 1));
}

// ---------------------------------------------------------------------------
// hv/shadow.rs `write_protect_frame`: stale reverse-map records

/// A frame that becomes shared loses RW only in the shadow leaves that
/// still map it. One shadow VM on a scanning host: X is stored to (frame
/// g0, X's shadow leaf is recorded under g0), unmapped (the guest frees
/// g0) and Y loaded (the guest reuses g0, zeroed, for Y); X mapped again
/// gets a new frame and is stored to, RW. Z, another zero page, is
/// loaded and the scan shares g0 with it: g0's reverse map still holds
/// X's leaf, which now maps X's new frame and must keep RW, so the second
/// store to X takes no hidden fault: 17 shadow-fault exits, 6 fills. (Kills `write_protect_frame`'s last
/// `&&` as `||`, which took RW from every record's entry; shard 6.)
#[test]
fn sharing_a_frame_keeps_rw_in_a_stale_records_entry() {
    use AccessKind::Fetch;
    const D: u64 = 0x7000_0000;
    let p = |i: u64| D + i * 0x1000;
    let page = |i: u64| anon_mmap(1, p(i), 0x1000);
    let fetch = || acc(1, Fetch, 0x40_0000);
    let vm0 = vec![
        fetch(),
        page(0),
        acc(1, Store, p(0) + 8),
        fetch(),
        munmap(1, p(0), 0x1000),
        page(1),
        acc(1, Load, p(1)),
        fetch(),
        page(0),
        acc(1, Store, p(0) + 8),
        fetch(),
        page(2),
        acc(1, Load, p(2)),
        fetch(),
        fetch(),
        acc(1, Store, p(0) + 16),
        fetch(),
        acc(1, Load, p(1)),
        acc(1, Load, p(2)),
        fetch(),
    ];
    let cfg = scanning_host(ModeKind::Shadow, 1, "");
    let mut s = HostSim::with_sources(&cfg, vec![replay(&vm0)]).checked();
    s.run(&mut |_| {}).unwrap();
    // (gPFN, hPFN) of each access: X's first store g0 = 0x207 at h7, Y
    // reuses g0, X's second life 0x208 at h8, Z 0x209 at h9 until the scan
    // merges it onto h7 (the reloads of Y and Z at the end).
    let seen: Vec<(u64, u64)> = s.resolutions(0).iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(
        seen.iter().filter(|r| r.0 != 0x204).collect::<Vec<_>>(),
        [
            &(0x207, 7),
            &(0x207, 7),
            &(0x208, 8),
            &(0x209, 9),
            &(0x208, 8),
            &(0x207, 7),
            &(0x209, 7)
        ]
    );
    assert!(s.host().is_shared(vmemsim::addr::Hpfn(7)));
    let st = &s.vm(0).stats;
    // With the mutant: 18, 7 and 21 (X's second store faults, refills).
    assert_eq!(
        (
            st.exits_for(ExitReason::ShadowFault),
            st.shadow_fills,
            st.walks
        ),
        (17, 6, 20)
    );
}

// ---------------------------------------------------------------------------
// The fast set itself

/// `tests/fast_set.rs`, the mutation fast set in one binary, includes
/// every integration test file but the slow ones (`host`, `sharing`,
/// `real_traces`: the second pass) and the ignored tools (`modes_table`,
/// `mutant_search`), so a new test file cannot be left out of mutation
/// testing unnoticed.
#[test]
fn the_fast_set_includes_every_fast_test_file() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let not_fast = [
        "fast_set",
        "host",
        "sharing",
        "real_traces",
        "modes_table",
        "mutant_search",
    ];
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".rs").map(str::to_string)
        })
        .filter(|n| !not_fast.contains(&n.as_str()))
        .collect();
    files.sort();
    let set = std::fs::read_to_string(dir.join("fast_set.rs")).unwrap();
    let mut listed: Vec<String> = set
        .lines()
        .filter_map(|l| l.strip_prefix("mod ")?.strip_suffix(';'))
        .map(str::to_string)
        .collect();
    listed.sort();
    assert_eq!(listed, files);
}

// ---------------------------------------------------------------------------
// Mode names

/// The name a mode's state gives itself (`Mode::name`, used in reports).
struct NameOf;

impl vmemsim::sim::ModeVisitor for NameOf {
    type Output = &'static str;
    fn visit<M: Mode>(self, mode: M) -> &'static str {
        mode.name()
    }
}

/// Every mode's state names itself as its `ModeKind` does (the name in
/// `--modes`, reports and JSON). (Kills the software-TLB modes' `name ->
/// ""`, shard 6.)
#[test]
fn every_mode_names_itself_as_its_kind() {
    let cfg = Config::default();
    for kind in ModeKind::ALL {
        assert_eq!(kind.with_mode(&cfg, NameOf), kind.name(), "{kind:?}");
    }
}

/// A freed shadow page's host frame, reused by a new in-sync shadow page
/// before the next resync, is not resynced. One shadow VM of 64 MiB on a
/// host of 16 MiB (4096 frames, the rest in host swap, which these few
/// frames never need): the host hands out never-used table frames until
/// 4096 have been, then reuses freed ones, the last freed first. First 330
/// short-lived processes, each shadowing 13 guest tables (its PML4 and a
/// PDPT, PD and PT in each of four 512 GiB regions) that the next process
/// unshadows as it reuses their frames, use up the fresh frames (4290).
/// Then process 1's PT goes unsync; process 2 runs (its CR3 load resyncs
/// nothing, process 1's PT stays on the unsync list); process 1 exits
/// (with PCIDs its flush asks no resync of process 2's tree) and process 2
/// takes the freed PT's gPFN as a PD: the unsync shadow page is freed for
/// the new level and its host frame at once reused by the new, in-sync PD
/// page, while the old page's entry is still on the unsync list. Process 3
/// runs and process 2 runs again: no CR3 load resyncs the in-sync page.
/// Unshadowed: the 330 x 13 tables and process 1's PML4, PDPT and PD (its
/// unsync PT is not write-protected, so its reuse does not trap).
/// (Kills `resync_reachable`'s `p.unsync && !p.parents.is_empty()` with
/// `||`, which resynced it: `shadow_resyncs` 1; shard 4.)
#[test]
fn a_freed_unsync_pages_reused_frame_is_not_resynced() {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    let region = |k: u64| 0x1000_0000_0000 + (k << 39);
    let mut records = Vec::new();
    for pid in 100..430 {
        for k in 0..4 {
            records.push(anon_mmap(pid, region(k), 0x1000));
            records.push(acc(pid, Load, region(k)));
        }
        records.push(ev(pid, ProcEvent::Exit { code: 0 }));
    }
    records.extend([
        anon_mmap(1, A, 4 * MIB),
        acc(1, Load, A),
        acc(1, Load, A + 0x1000),
        anon_mmap(2, A, 4 * GIB),
        acc(2, Load, A),
        ev(1, ProcEvent::Exit { code: 0 }),
        acc(2, Load, A + GIB),
        acc(2, Load, A + 2 * GIB),
        anon_mmap(3, A, 4 * MIB),
        acc(3, Load, A),
        acc(2, Load, A),
    ]);
    let text = "[host]\nmem_mib = 16\nswap_mib = 48\n\
                [[vm]]\nname = \"vm0\"\nworkload = \"seq\"\nmode = \"shadow\"\nmem_mib = 64\n";
    let cfg = HostConfig::from_toml(text, "small-host.toml", std::path::Path::new(".")).unwrap();
    let mut sim = HostSim::with_sources(&cfg, vec![replay(&records)]).checked();
    sim.run(&mut |_| {}).unwrap();
    let s = &sim.vm(0).stats;
    assert_eq!(
        (s.shadow_unsyncs, s.shadow_resyncs, s.shadow_unshadows),
        (1, 0, 330 * 13 + 3)
    );
}

/// A COW fault on a shared 2 MiB page when no free 2 MiB page is left
/// splits the child's leaf into 512 read-only 4 KiB leaves over the same
/// frames and copies only the page written (Linux falls back to
/// `__split_huge_pmd`). An 8 MiB guest (2048 frames; chunk 0 the
/// kernel's): process 1's root and tables take chunk 1, its two huge pages
/// chunks 2 and 3; process 2 forks and stores into the first one: the
/// split, then the copy of that one page. Process 1 exits (the split
/// frames are process 2's alone) and with both watermarks above all free
/// memory the next allocation reclaims: the clock finds the split leaves
/// through the reverse map at their own gVAs and swaps them out; process 2
/// loads two of them back. (Kills `fault.rs`'s split base `va & !mask`
/// with `|`, which recorded the split leaves at gVAs above the 64-bit
/// range; shard 5.)
#[test]
fn a_cow_split_without_free_huge_pages_maps_each_small_page_at_its_own_gva() {
    const MIB: u64 = 1 << 20;
    let mut cfg = Config::default();
    cfg.guest.mem_mib = 8;
    cfg.guest.swap_mib = 1;
    cfg.guest.huge_pages = vmemsim::config::HugePages::Huge2M;
    let records = [
        anon_mmap(1, A, 4 * MIB),
        acc(1, Store, A),
        acc(1, Store, A + 2 * MIB),
        ev(1, ProcEvent::Fork { child: 2 }),
        acc(2, Store, A + 0x5000),
        ev(1, ProcEvent::Exit { code: 0 }),
    ];
    let s = checked_stats(ModeKind::Nested, &cfg, &records);
    // Process 1's two demand faults; process 2's COW fault that splits and
    // the one that copies the page it stores to.
    assert_eq!(
        (
            s.guest_page_faults,
            s.demand_faults,
            s.cow_faults,
            s.frames_copied
        ),
        (4, 2, 2, 1)
    );
    let mut more = records.to_vec();
    more.extend([
        anon_mmap(2, A + 64 * MIB, MIB),
        acc(2, Load, A + 64 * MIB),
        acc(2, Load, A + 0x7000),
        acc(2, Load, A + 0x9000),
    ]);
    let mut pressed = cfg.clone();
    pressed.guest.watermark_low_pages = 2000;
    pressed.guest.watermark_high_pages = 2000;
    let t = checked_stats(ModeKind::Nested, &pressed, &more);
    // The new page's allocation fills the 1 MiB swap (256 slots) with
    // 4 KiB pages, the split ones among them; the two loads are major
    // faults, and the second one's allocation swaps out one more page into
    // the slot the first swap-in freed.
    assert_eq!(
        (t.guest_swap_outs, t.guest_swap_ins, t.major_faults),
        (257, 2, 2)
    );
}

/// Two fresh pages at [`ZERO_PAGES`], both zero, loaded by one VM in
/// `mode` on a scanning host (the scan merges the second into the
/// first's frame), then `more`, each record followed by a fetch.
fn two_zero_pages_scanned(mode: ModeKind, more: &[Record]) -> HostSim {
    let fetch = || acc(1, AccessKind::Fetch, 0x40_0000);
    let mut vm0 = vec![
        fetch(),
        anon_mmap(1, ZERO_PAGES, 0x2000),
        acc(1, Load, ZERO_PAGES),
        acc(1, Load, ZERO_PAGES + 0x1000),
        fetch(),
        fetch(),
    ];
    for r in more {
        vm0.extend([r.clone(), fetch()]);
    }
    if more.is_empty() {
        vm0.push(fetch());
    }
    let cfg = scanning_host(mode, 1, "");
    let mut s = HostSim::with_sources(&cfg, vec![replay(&vm0)]).checked();
    s.run(&mut |_| {}).unwrap();
    s
}

/// Where [`two_zero_pages_scanned`] maps its two pages.
const ZERO_PAGES: u64 = 0x7000_0000;

/// Sharing a frame of a nested VM zaps none of its mappings: the mode has
/// no mappings of its own (the EPT entry is the host's), so the scanner's
/// write protection of the hint's owner adds no rmap zaps and no host work
/// for them. One nested VM on a scanning host loads two fresh pages, both
/// zero: the second is merged into the first's frame. (Kills the default
/// `Mode::host_write_protect -> 1`; shard 24.)
#[test]
fn sharing_a_nested_vms_frame_zaps_no_mapping() {
    let s = two_zero_pages_scanned(ModeKind::Nested, &[]);
    let r = s.report();
    assert_eq!(s.vm(0).sharing.merged, 1);
    // One INVEPT (the scan's flush of the VM on its one pCPU), priced at
    // cost.invept_cycles = 1000, and no zaps (cost.rmap_zap_cycles each).
    let h = &r.vms[0].host;
    assert_eq!((h.invepts, h.rmap_zaps, h.host_work_cycles), (1, 0, 1000));
}

/// A direct VM's reverse map keeps the records of a 2 MiB guest page's
/// frames after the PDE that mapped it is cleared; such a record must not
/// match the huge page that PDE maps later. With 2 MiB guest pages,
/// process 1 maps and loads V (a huge page at gPFN G, zero) and forks
/// (process 2 maps G too, read-only), unmaps V (G stays, process 2's;
/// process 1's records of G go stale) and maps and loads V again (the
/// next 2 MiB chunk, H, zero). The scanner merges every zero frame, G's
/// and H's, into one host frame. Process 2's store to V is a guest COW
/// fault that reuses G in place (its last reference), then a COW break of
/// G + 0 on the host: G + 0's records are rewritten to its copy, and
/// process 1's stale one, whose PDE is now a 2 MiB leaf to H, is dropped
/// (H + 0 is not G + 0). Process 1's load of V after it must still reach
/// H + 0's (shared) frame, which the oracle checks. (Kills
/// `MEntry::guest_entry`'s `ge & PS != 0 && frame + sub == gpfn` with
/// `&&` as `||`, which took any 2 MiB leaf for G's and repointed H + 0's
/// splinter entry at G + 0's copy; shard 22.)
#[test]
fn a_direct_vms_stale_record_does_not_match_a_later_huge_page() {
    const V: u64 = ZERO_PAGES;
    let fetch = |pid| acc(pid, AccessKind::Fetch, 0x40_0000);
    let steps = [
        (1, anon_mmap(1, V, 2 << 20)),
        (1, acc(1, Load, V)),
        (1, ev(1, ProcEvent::Fork { child: 2 })),
        (1, munmap(1, V, 2 << 20)),
        (1, anon_mmap(1, V, 2 << 20)),
        (1, acc(1, Load, V)),
        (2, acc(2, Store, V)),
        (1, acc(1, Load, V)),
    ];
    let mut vm0 = vec![fetch(1)];
    for (pid, r) in steps {
        vm0.extend([r, fetch(pid)]);
    }
    let mut cfg = scanning_host(ModeKind::Direct, 1, "");
    cfg.vms[0].cfg.guest.huge_pages = HugePages::Huge2M;
    let mut s = HostSim::with_sources(&cfg, vec![replay(&vm0)]).checked();
    s.run(&mut |_| {}).unwrap();
    let sh = &s.vm(0).sharing;
    // G's 512 zero frames and H's merged into one: 1023 merges; one COW
    // break (process 2's store).
    assert_eq!((sh.merged, sh.cow_breaks), (1023, 1));
}

/// Guest reclaim stops as soon as the free frames reach the high
/// watermark. A 64 MiB guest (16384 frames, 15872 free to the kernel's
/// allocator) with 1 MiB of swap and both watermarks at 15867 pages:
/// process 1's root and A's tables and frame leave 15867 free, B's frame
/// 15866; C's allocation reclaims: the clock clears the accessed bits of
/// A's and B's frames, comes round to A's and swaps it out (15867 free,
/// the watermark): one swap-out, and B stays. (Kills `free_frames() <
/// rc.high` as `<=`, which swapped out B too; shard 24.)
#[test]
fn guest_reclaim_stops_at_the_high_watermark() {
    let cfg = swapping_guest(15867);
    let records = [
        anon_mmap(1, A, 4 << 20),
        acc(1, Load, A),
        acc(1, Load, A + 0x1000),
        acc(1, Load, A + 0x2000),
    ];
    let s = checked_stats(ModeKind::Native, &cfg, &records);
    assert_eq!(
        (
            s.guest_swap_outs,
            s.accessed_bits_cleared,
            s.reclaim_scanned
        ),
        (1, 2, 3)
    );
}

/// ESX idle sampling sees a selective VM's touches while it runs shadow
/// paging: in shadow paging no walk reads the EPT, so the sampled frame's
/// EPT entry stays invalid and only the mode's shadow leaf shows the touch
/// (as for agile above). Experiment 1 (1 M accesses) with both VMs
/// `selective`: the idle VM is estimated idle and the active one active
/// (0.60; 0.07 when the shadow leaves are not consulted). (Kills
/// `hv/selective` `host_mapped -> false`; shard 24.)
#[test]
fn esx_sampling_sees_a_selective_vms_shadow_touches() {
    idle_vm_idle_active_vm_active("selective", "");
}

/// Agile paging returns a nested table to shadow only once it has been
/// clean over a whole interval: a table that went nested during the
/// interval just ended stays nested at its end, and goes back at the end
/// of the next (with `clean_refill_costs = 0` any clean interval is long
/// enough). Intervals of 4 instructions, each boundary run before the
/// first access past it: A's PT, written when A was mapped in interval 0,
/// is forced nested in interval 1 (after the 5th instruction), stays
/// nested at the end of interval 1 (the boundary before the 9th) and
/// returns at the end of interval 2 (before the 13th). (Kills
/// `boundary`'s `since < cur` as `<=`, which returned it at the end of
/// interval 1; shard 24.)
/// Agile under `cfg`: A loaded, then 5 fetches; A's PT forced nested;
/// whether it is still nested after each of 9 more fetches (instructions
/// 6..=14).
fn nested_after_forcing_a_pt(cfg: &Config) -> Vec<bool> {
    nested_after_forcing_a_pt_of(cfg, 1, 9)
}

/// As [`nested_after_forcing_a_pt`], with `pages` pages of A loaded (so
/// A's PT has `pages` present entries; loads are no instructions) and
/// `fetches` fetches after the force (instructions 6..=5 + `fetches`).
fn nested_after_forcing_a_pt_of(cfg: &Config, pages: u64, fetches: usize) -> Vec<bool> {
    forcing_a_pt_nested(cfg, pages, fetches)
        .into_iter()
        .map(|(nested, _)| nested)
        .collect()
}

/// As [`nested_after_forcing_a_pt_of`], with the TLB misses of each fetch.
fn forcing_a_pt_nested(cfg: &Config, pages: u64, fetches: usize) -> Vec<(bool, u64)> {
    use AccessKind::Fetch;
    let mut sim = Sim::new(Agile::new(cfg), cfg);
    let fetch = acc(1, Fetch, 0x40_0000);
    run(&mut sim, &[anon_mmap(1, A, 4 << 20)]);
    for i in 0..pages {
        run(&mut sim, &[acc(1, Load, A + (i << 12))]);
    }
    run(&mut sim, &vec![fetch.clone(); 5]);
    let root = sim.guest.current().unwrap().root;
    let pt = softwalk::path(&sim.guest.mem, root, 4, A).steps[3].0;
    {
        let m = &mut sim.machine.on(&mut sim.hw, &mut sim.host);
        m.mode.force_nested(&mut m.core, pt);
    }
    let mut after = Vec::new();
    for _ in 0..fetches {
        let misses = sim.stats().tlb_misses;
        run(&mut sim, std::slice::from_ref(&fetch));
        let misses = sim.stats().tlb_misses - misses;
        after.push((sim.machine.mode.is_nested(pt), misses));
    }
    after
}

/// Agile flushes the VPID's TLB entries when tables return to shadow, and
/// only then. As above (intervals of 4 instructions, no refill threshold),
/// A's PT is forced nested after the 5th instruction (a flush: the 6th
/// instruction's fetch misses). The guest root, nested since the
/// process's first CR3 load, returns at the boundary before the 9th (a
/// flush: the 9th misses), A's PT at the one before the 13th (the 13th
/// misses); the boundary before the 17th returns nothing and flushes
/// nothing. (Kills `boundary`'s `!back.is_empty()` with the `!` deleted,
/// which flushed before the 17th only; shard 1.)
#[test]
fn agile_flushes_when_tables_return_to_shadow_and_only_then() {
    let mut cfg = Config::default();
    cfg.agile.interval_instructions = 4;
    cfg.agile.clean_refill_costs = 0.0;
    let misses: Vec<u64> = forcing_a_pt_nested(&cfg, 1, 13)
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    // Instructions 6..=18.
    assert_eq!(misses, [1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0]);
}

#[test]
fn agile_keeps_a_table_nested_through_the_interval_it_went_nested_in() {
    let mut cfg = Config::default();
    cfg.agile.interval_instructions = 4;
    cfg.agile.clean_refill_costs = 0.0;
    let nested = nested_after_forcing_a_pt(&cfg);
    // After instructions 6..=14.
    assert_eq!(
        nested,
        [true, true, true, true, true, true, true, false, false]
    );
}

/// A flush of another address space asks no resync of the current one's
/// unsync pages (with PCIDs, its stale entries wait for its own CR3 load):
/// process 2 runs, then process 1, whose PT goes unsync; process 2 exits
/// (its PCID flushed) and process 1 maps a third page. (Kills
/// `note_flush`'s `!unsync.is_empty() && pcid == current` with `||`,
/// which resynced process 1's PT before its next walk, so the third
/// page's PTE store unsynced it again: 1 resync and 2 unsyncs.)
#[test]
fn another_address_spaces_flush_resyncs_nothing() {
    let records = [
        anon_mmap(2, A, 4 << 20),
        acc(2, Load, A),
        anon_mmap(1, A, 4 << 20),
        acc(1, Load, A),
        acc(1, Load, A + 0x1000),
        ev(2, ProcEvent::Exit { code: 0 }),
        acc(1, Load, A + 0x2000),
    ];
    let s = checked_stats(ModeKind::Shadow, &Config::default(), &records);
    assert_eq!((s.shadow_unsyncs, s.shadow_resyncs), (1, 0));
}

/// Direct paging holds one machine table page per guest table it copies,
/// plus one splinter page per guest huge page it maps over 4 KiB host
/// pages: one load of A with 4 KiB guest pages holds the copies of the
/// root, PDPT, PD and PT (4); with 2 MiB guest pages, the copies of the
/// root, PDPT and PD and A's splinter (3 + 1). (Kills `machine_pages`'s
/// `+` as `*`: 0 and 3; shard 24.)
#[test]
fn direct_paging_counts_its_table_copies_and_splinters() {
    let mut pages = Vec::new();
    for huge in [HugePages::None, HugePages::Huge2M] {
        let mut cfg = Config::default();
        cfg.guest.huge_pages = huge;
        let mut sim = Sim::new(Direct::new(&cfg.pv, cfg.guest.mem_mib), &cfg);
        run(&mut sim, &[anon_mmap(1, A, 4 << 20), acc(1, Load, A)]);
        pages.push(sim.machine.mode.machine_pages());
    }
    assert_eq!(pages, [4, 4]);
}

/// A COW fault on a huge page flushes the address space's TLB entries
/// (they may be splintered smaller entries, which one INVLPG would
/// miss), where a 4 KiB page's takes one INVLPG. Process 1 stores into A
/// and forks (the fork's one flush: the parent's entries lost RW);
/// process 2 stores into A: with 2 MiB pages, the copy of the huge page
/// and a second flush; with 4 KiB pages, the copy of one page and one
/// INVLPG. (Kills `fault_on_present`'s `tlb_flushes += 1` with `*=`;
/// shard 24.)
#[test]
fn a_huge_cow_fault_flushes_the_address_space() {
    let records = [
        anon_mmap(1, A, 4 << 20),
        acc(1, Store, A),
        ev(1, ProcEvent::Fork { child: 2 }),
        acc(2, Store, A),
    ];
    let mut counts = Vec::new();
    for huge in [HugePages::None, HugePages::Huge2M] {
        let mut cfg = Config::default();
        cfg.guest.huge_pages = huge;
        let s = checked_stats(ModeKind::Nested, &cfg, &records);
        counts.push((s.cow_faults, s.frames_copied, s.tlb_flushes, s.invlpgs));
    }
    assert_eq!(counts, [(1, 1, 1, 1), (1, 512, 2, 0)]);
}

/// A fork write-protects only the parent's writable leaves, and flushes
/// only if it changed one: a read-only page, loaded, is forked with four
/// PTE stores (the child's PML4E, PDPTE, PDE and leaf) and no flush; a
/// read-write one with five (the parent's leaf made read-only too) and
/// one flush. (Kills `copy_table`'s `e & RW != 0` as `|`, which rewrote the
/// parent's read-only entry and flushed; shard 6.)
#[test]
fn a_fork_write_protects_and_flushes_only_writable_leaves() {
    let mut counts = Vec::new();
    for prot in [1, 3] {
        let mmap = ProcEvent::Mmap {
            addr: A,
            len: 0x1000,
            prot,
            flags: 0x22,
            file: None,
        };
        let records = [ev(1, mmap), acc(1, Load, A)];
        let before = checked_stats(ModeKind::Native, &Config::default(), &records);
        let mut forked = records.to_vec();
        forked.push(ev(1, ProcEvent::Fork { child: 2 }));
        let s = checked_stats(ModeKind::Native, &Config::default(), &forked);
        counts.push((
            s.guest_pte_writes - before.guest_pte_writes,
            s.tlb_flushes - before.tlb_flushes,
        ));
    }
    assert_eq!(counts, [(4, 0), (5, 1)]);
}

/// Direct paging drops the machine copy of a guest table whose frame is
/// reused as data. Process 2 is created (its root from fresh frames);
/// process 1, which loaded A, exits: its root, PDPT, PD, PT and A's frame
/// are freed, the root last. Process 2 loads A and A + 4 KiB: its PDPT,
/// PD and PT take process 1's root, PDPT and PD (copies dropped and
/// taken again), A's frame takes process 1's PT (its copy dropped), the
/// next page process 1's data frame: 4 copies, process 2's tables.
/// (Kills `Direct::unpin -> ()`, which kept the PT's copy: 5; shard 23.)
#[test]
fn direct_paging_drops_the_copies_of_reused_table_frames() {
    let cfg = Config::default();
    let mut sim = Sim::new(Direct::new(&cfg.pv, cfg.guest.mem_mib), &cfg);
    run(
        &mut sim,
        &[
            anon_mmap(1, A, 4 << 20),
            acc(1, Load, A),
            anon_mmap(2, A, 4 << 20),
            ev(1, ProcEvent::Exit { code: 0 }),
            acc(2, Load, A),
            acc(2, Load, A + 0x1000),
        ],
    );
    assert_eq!(sim.machine.mode.machine_pages(), 4);
}

/// Without VPIDs every VM exit flushes the pCPU's TLBs and PSCs, and the
/// host counts each flush. One nested VM on `seq` with `host.vpid =
/// false`. (Kills `Core::exit`'s `exit_flushes += 1` as `-=`; shard 7.)
#[test]
fn without_vpids_each_exit_flushes_once() {
    let text = "[host]\nmem_mib = 1024\nvpid = false\n\
                [[vm]]\nname = \"a\"\nworkload = \"seq\"\naccesses = 20000\n\
                footprint_mib = 4\nmode = \"nested\"\nmem_mib = 256\n";
    let cfg = HostConfig::from_toml(text, "no-vpid.toml", std::path::Path::new(".")).unwrap();
    let r = HostSim::new(&cfg).unwrap().run(&mut |_| {}).unwrap();
    let v = &r.vms[0];
    assert_eq!((v.host.no_vpid_flushes, v.stats.total_exits()), (165, 165));
}

/// The VMM's refill from its guest-TLB copy keeps a missing execute
/// right missing. Guest 2 MiB pages over 4 KiB host pages of a read-write
/// (not executable) mapping: A is loaded; a load of A + 4 KiB is a VMM
/// refill from the copy; a fetch from A + 4 KiB then misses the TLB for
/// its execute right (the model's guest then grants it: a protection
/// upgrade). (Kills the copy's `hpfn & COPY_EXEC` as `^`, which
/// made every refilled entry executable; shard 23.)
#[test]
fn a_vmm_refill_keeps_a_missing_execute_right_missing() {
    use AccessKind::Fetch;
    let mut cfg = Config::default();
    cfg.guest.huge_pages = HugePages::Huge2M;
    let before = [anon_mmap(1, A, 4 << 20), acc(1, Load, A)];
    let s0 = checked_stats(ModeKind::SwtlbVmm, &cfg, &before);
    let mut after = before.to_vec();
    after.extend([acc(1, Load, A + 0x1000), acc(1, Fetch, A + 0x1000)]);
    let d = checked_stats(ModeKind::SwtlbVmm, &cfg, &after).since(&s0);
    // The fetch's miss ends in the guest's fault for the execute right
    // (its upgrade of the page's protection) and a refill by the guest.
    assert_eq!(
        (
            d.tlb_misses,
            d.vmm_tlb_refills,
            d.tlb_refills,
            d.guest_page_faults
        ),
        (2, 1, 2, 1)
    );
}

/// The software TLB's refill handler loads each page-table entry at its
/// own address (table frame and entry offset) through the page-table line
/// cache. A cold load of A: the first refill loads the empty PML4E (1
/// load, a miss) and the guest's fault handler builds A's tables; the
/// second loads the PML4E again (a hit, the same line), then the PDPTE,
/// PDE and PTE (three misses): 2 refills, 5 loads, 1 hit. (Kills
/// `refill_walk`'s `frame << 12 | idx * 8` as `&`, which loaded every
/// entry at address 0: 4 hits; shard 23.)
#[test]
fn a_cold_software_refill_loads_each_entry_at_its_own_address() {
    let records = [anon_mmap(1, A, 4 << 20), acc(1, Load, A)];
    let s = checked_stats(ModeKind::SwtlbNative, &Config::default(), &records);
    assert_eq!(
        (s.tlb_refills, s.tlb_refill_loads, s.tlb_refill_load_hits),
        (2, 5, 1)
    );
}

/// An munmap that changes as many pages as the INVLPG ceiling invalidates
/// each with an INVLPG; one page more and it flushes the address space
/// instead (Linux's `tlb_single_page_flush_ceiling`). A ceiling of 4
/// pages: 4 touched pages unmapped take 4 INVLPGs and no flush, 5 take
/// one flush. (Kills `for_leaves`' `changed > ceiling` as `>=`, which
/// flushed at 4; shard 23.)
#[test]
fn munmap_invalidates_page_by_page_up_to_the_ceiling() {
    let mut cfg = Config::default();
    cfg.guest.invlpg_ceiling_pages = 4;
    let mut counts = Vec::new();
    for pages in [4u64, 5] {
        let mut records = vec![anon_mmap(1, A, 4 << 20)];
        records.extend((0..pages).map(|i| acc(1, Load, A + i * 0x1000)));
        let before = checked_stats(ModeKind::Native, &cfg, &records);
        records.push(munmap(1, A, 4 << 20));
        let s = checked_stats(ModeKind::Native, &cfg, &records).since(&before);
        counts.push((s.invlpgs, s.tlb_flushes));
    }
    assert_eq!(counts, [(4, 0), (0, 1)]);
}

/// A \[W11\] sample's rates are per 1000 instructions: 2000 instructions
/// with 3 guest page faults and 30 TLB misses are 1.5 and 15, a P-to-T
/// ratio of 0.1. (Kills `W11Sample::of`'s `1000.0 / instructions` as
/// `*`, shard 23, and `p2t`'s `pf / tlb` as `%`, shard 7.)
#[test]
fn w11_rates_are_per_thousand_instructions() {
    let d = Stats {
        instructions: 2000,
        guest_page_faults: 3,
        tlb_misses: 30,
        ..Stats::default()
    };
    let r = W11Sample::of(&d);
    assert_eq!(r, W11Sample { pf: 1.5, tlb: 15.0 });
    // The P-to-T ratio: page faults per TLB miss.
    assert_eq!(r.p2t(), 0.1);
}

/// \[W11\]'s first rule (shadow paging for a TLB-miss rate above the upper
/// bound) is strict: a rate of exactly 10 misses per 1000 instructions
/// with no page faults, after a history of the same, falls through to
/// rule 6. (Kills `cur.tlb > TLB_UPPER` as `>=`; shard 23.)
#[test]
fn w11_first_rule_needs_a_tlb_miss_rate_above_the_bound() {
    let at = W11Sample {
        pf: 0.0,
        tlb: w11::TLB_UPPER,
    };
    let above = W11Sample { pf: 0.0, tlb: 10.5 };
    assert_eq!(w11_rules(above, at), (1, W11Decision::Shadow));
    // Rules 2-5 do not apply (no faults; a history; a P-to-T ratio of 0);
    // rule 6 (a history and a current P-to-T ratio below the lower bound)
    // decides shadow too.
    assert_eq!(w11_rules(at, at), (6, W11Decision::Shadow));
}

/// \[W11\]'s third rule (stay for low fault and TLB-miss rates) is strict
/// on the TLB-miss rate too: no page faults and exactly 0.1 misses per
/// 1000 instructions (the lower bound), after a history of the same,
/// falls through rules 3-5 to rule 6 (a P-to-T ratio of 0: shadow); just
/// below the bound, rule 3 stays. (Kills `cur.tlb < TLB_LOWER` as `<=`;
/// shard 10.)
#[test]
fn w11_third_rule_needs_a_tlb_miss_rate_below_the_bound() {
    let at = W11Sample {
        pf: 0.0,
        tlb: w11::TLB_LOWER,
    };
    let below = W11Sample { pf: 0.0, tlb: 0.05 };
    assert_eq!(w11_rules(below, at), (3, W11Decision::Stay));
    assert_eq!(w11_rules(at, at), (6, W11Decision::Shadow));
}

/// \[W11\]'s first two rules bound the other rate strictly: rule 1 (shadow
/// for many TLB misses) needs a fault rate below 0.8 of its upper bound,
/// rule 2 (nested for many faults) a TLB-miss rate below 0.8 of its
/// upper bound. At exactly those bounds, after a history without faults
/// (a P-to-T ratio of 0, so rules 4-5 do not apply and rule 6 needs the
/// current ratio below the lower bound, which it is not), both fall
/// through to rule 7: stay. (Kills `w11_rules`' `cur.pf < 0.8 *
/// PF_UPPER` as `<=` (rule 1, shard 17) and `cur.tlb < 0.8 * TLB_UPPER`
/// as `<=` (rule 2, shard 1).)
#[test]
fn w11_first_two_rules_bound_the_other_rate_strictly() {
    let many_misses = W11Sample {
        pf: 0.8 * w11::PF_UPPER,
        tlb: 10.5,
    };
    let quiet = W11Sample { pf: 0.0, tlb: 10.5 };
    assert_eq!(w11_rules(many_misses, quiet), (7, W11Decision::Stay));
    let below = W11Sample {
        pf: 0.7 * w11::PF_UPPER,
        ..many_misses
    };
    assert_eq!(w11_rules(below, quiet), (1, W11Decision::Shadow));

    let many_faults = W11Sample {
        pf: 6000e-7,
        tlb: 0.8 * w11::TLB_UPPER,
    };
    let quiet = W11Sample { pf: 0.0, tlb: 8.0 };
    assert_eq!(w11_rules(many_faults, quiet), (7, W11Decision::Stay));
    let below = W11Sample {
        tlb: 7.5,
        ..many_faults
    };
    assert_eq!(w11_rules(below, quiet), (2, W11Decision::Nested));
}

/// An L1 DTLB miss that hits the STLB is counted as an STLB hit, not a
/// TLB miss. The L1 DTLB has 16 sets of 4 ways (64 entries), the STLB 128
/// sets of 4: A and four pages 16 pages apart share A's L1 set (and evict it)
/// but not its STLB set, so A's reload misses the L1 and hits the STLB.
/// (Kills `stlb_hits += 1` as `*=`; shard 22.)
#[test]
fn an_l1_miss_that_hits_the_stlb_counts_as_an_stlb_hit() {
    let mut records = vec![anon_mmap(1, A, 4 << 20), acc(1, Load, A)];
    records.extend((1..=4).map(|k| acc(1, Load, A + k * 16 * 0x1000)));
    let before = checked_stats(ModeKind::Native, &Config::default(), &records);
    records.push(acc(1, Load, A));
    let d = checked_stats(ModeKind::Native, &Config::default(), &records).since(&before);
    assert_eq!((d.l1_tlb_misses, d.stlb_hits, d.tlb_misses), (1, 1, 0));
}

/// A guest table that returns from nested to shadow takes its switching
/// entries with it. Every table of A's path in shadow, then A's PT forced
/// nested: a walk of A switches at the PT (`walks_by_switch[1]`); the PT
/// forced back to shadow: the next walk of A is fully shadowed (`[0]`).
/// (Written for shard 8's agile `SHADOW_TABLE_FLAGS` with its last `|`
/// as `&`, which it does not kill: that mutant only drops US and A from
/// switching entries, and the model's walker checks no US and sets A
/// without a cost, so it is equivalent. The test stays: nothing else
/// checks that a table's return to shadow removes its switching entries.)
#[test]
fn agile_drops_a_tables_switching_entries_when_it_returns_to_shadow() {
    let cfg = Config::default();
    let mut sim = Sim::new(Agile::new(&cfg), &cfg);
    run(&mut sim, &[anon_mmap(1, A, 4 << 20), acc(1, Load, A)]);
    let root = sim.guest.current().unwrap().root;
    let path = softwalk::path(&sim.guest.mem, root, 4, A);
    let pt = path.steps[3].0;
    {
        let m = &mut sim.machine.on(&mut sim.hw, &mut sim.host);
        for &(table, _, _) in &path.steps[..4] {
            m.mode.force_shadow(&mut m.core, table);
        }
    }
    let mut by_switch = Vec::new();
    for nested in [true, false] {
        {
            let m = &mut sim.machine.on(&mut sim.hw, &mut sim.host);
            if nested {
                m.mode.force_nested(&mut m.core, pt);
            } else {
                m.mode.force_shadow(&mut m.core, pt);
            }
        }
        sim.hw.flush_translation_caches();
        let before = sim.stats().clone();
        run(&mut sim, &[acc(1, Load, A)]);
        by_switch.push(sim.stats().since(&before).walks_by_switch);
    }
    assert_eq!(by_switch, [[0, 1, 0, 0, 0], [1, 0, 0, 0, 0]]);
}

/// Agile with intervals of 4 instructions, `cost.base_cpi = 2` and a
/// refill threshold of 10 cycles per present entry of a table.
fn agile_at_cpi_2_refilling_10_cycles_per_entry() -> Config {
    let mut cfg = Config::default();
    cfg.agile.interval_instructions = 4;
    cfg.cost.base_cpi = 2.0;
    let fill = (cfg.cost.vm_exit_cycles + cfg.cost.shadow_fill_cycles) as f64;
    cfg.agile.clean_refill_costs = 10.0 / fill;
    cfg
}

/// Agile's clean interval is measured in cycles: instructions times the
/// base CPI. With `cost.base_cpi = 2` and a refill cost of 10 cycles for
/// A's PT (one present entry), the PT forced nested after the 5th
/// instruction has been clean for 7 instructions, 14 cycles, at the
/// boundary before the 13th (the first that may return it): it returns
/// there. (Kills `clean_long_enough`'s `* base_cpi` as `/`: 3.5 cycles,
/// so it stayed nested until the boundary before the 29th; shard 8.)
#[test]
fn agile_counts_a_clean_interval_in_cycles() {
    let cfg = agile_at_cpi_2_refilling_10_cycles_per_entry();
    let nested = nested_after_forcing_a_pt(&cfg);
    // After instructions 6..=14, as in the test above.
    assert_eq!(
        nested,
        [true, true, true, true, true, true, true, false, false]
    );
}

/// Agile's refill cost scales with the table's present entries: A's PT
/// with 3 present entries, 10 cycles each at `cost.base_cpi = 2`, needs
/// 30 clean cycles, 15 instructions. Forced nested after the 5th
/// instruction, it is clean for 7, 11 and 15 instructions at the
/// boundaries before the 13th, 17th and 21st: it returns at the third.
/// (Kills `clean_long_enough`'s `* n` as `+` (13 cycles) and as `/`
/// (3.3 cycles), both of which returned it before the 13th; shards 15
/// and 16.)
#[test]
fn agile_refill_cost_counts_every_present_entry() {
    let cfg = agile_at_cpi_2_refilling_10_cycles_per_entry();
    let nested = nested_after_forcing_a_pt_of(&cfg, 3, 17);
    // After instructions 6..=22: nested through the 20th.
    let mut want = vec![true; 15];
    want.extend([false, false]);
    assert_eq!(nested, want);
}

/// Hypervisor swapping of a selective VM's frame while it runs nested
/// paging zaps no shadow leaf (there are none): the swap-out counts no
/// rmap zaps. (Kills selective's `host_unmap -> 1`; shard 22.)
#[test]
fn swapping_out_a_nested_selective_vms_frame_zaps_nothing() {
    let text = "[host]\nmem_mib = 1024\nswap_mib = 64\n\
                [[vm]]\nname = \"a\"\nworkload = \"seq\"\nmode = \"selective\"\nmem_mib = 64\n";
    let cfg = HostConfig::from_toml(text, "t.toml", std::path::Path::new(".")).unwrap();
    let records = [anon_mmap(1, A, 4 << 20), acc(1, Load, A)];
    let mut s = HostSim::with_sources(&cfg, vec![replay(&records)]).checked();
    s.run(&mut |_| {}).unwrap();
    let gpfn = s.resolutions(0).last().unwrap().0;
    assert!(s.swap_out(0, gpfn));
    let r = s.report();
    assert_eq!((r.vms[0].host_swap_outs, r.vms[0].host.rmap_zaps), (1, 0));
}

/// A store to a shared frame breaks the sharing with a copy and flushes
/// the VM's entries on its pCPU (INVEPT single-context, as KVM after a KSM
/// COW break), priced as host work: one nested VM on a scanning host
/// loads two zero pages (merged by the scan) and stores to the second:
/// one COW break, one COW flush, and host work of two INVEPTs (the scan's
/// and the break's) and the copy. (Kills `cow_store`'s `cow_flushes += 1` as `*=`;
/// shard 21.)
#[test]
fn a_cow_break_flushes_the_vm_once() {
    let s = two_zero_pages_scanned(ModeKind::Nested, &[acc(1, Store, ZERO_PAGES + 0x1000)]);
    let sh = &s.vm(0).sharing;
    assert_eq!((sh.merged, sh.cow_breaks, sh.cow_flushes), (1, 1, 1));
    // The scan's INVEPT and the break's, 1000 cycles each, and the copy
    // (`sharing.copy_cycles` = 2000).
    let h = &s.report().vms[0].host;
    assert_eq!((h.invepts, h.host_work_cycles), (1, 4000));
}

/// The shadow MMU counts its unsync pages: A's PT goes unsync at the
/// second demand fault into it. (Kills `Shadow::unsync_pages -> 0`;
/// shard 9.)
#[test]
fn shadow_counts_its_unsync_pages() {
    let cfg = Config::default();
    let mut sim = Sim::new(Shadow::with_config(&cfg.shadow), &cfg);
    run(&mut sim, &[anon_mmap(1, A, 4 << 20), acc(1, Load, A)]);
    assert_eq!(sim.machine.mode.unsync_pages(), 0);
    run(&mut sim, &[acc(1, Load, A + 0x1000)]);
    assert_eq!(sim.machine.mode.unsync_pages(), 1);
}

/// Page sharing repoints a direct-paging VM's machine entries at the kept
/// frame and counts each one: two zero pages merged by the scan: the
/// hint's entry loses RW and the merged page's entry is repointed, one
/// zap each. (Kills `Direct::rewrite`'s `n += 1` as `*=`; shard 9.)
#[test]
fn sharing_a_direct_vms_frames_counts_each_machine_entry() {
    let s = two_zero_pages_scanned(ModeKind::Direct, &[]);
    assert_eq!(s.vm(0).sharing.merged, 1);
    let h = &s.report().vms[0].host;
    // One INVEPT (1000 cycles) and two zaps (100 each).
    assert_eq!((h.invepts, h.rmap_zaps, h.host_work_cycles), (1, 2, 1200));
}

/// `Agile::nested_pages` counts the guest tables walked nested. After
/// one load of A, of the four tables on A's path only the root is
/// nested (the guest stored to it more than once while it built the
/// path); forcing A's PT and then its PD nested counts 2, then 3. Kills
/// `hv/agile.rs:140` (`nested_pages -> 1`, shard 20).
#[test]
fn agile_counts_its_nested_tables() {
    let cfg = Config::default();
    let mut sim = Sim::new(Agile::new(&cfg), &cfg);
    run(&mut sim, &[anon_mmap(1, A, 4 << 20), acc(1, Load, A)]);
    let root = sim.guest.current().unwrap().root;
    let path = softwalk::path(&sim.guest.mem, root, 4, A);
    let on_path = |sim: &Sim<Agile>| -> Vec<bool> {
        (0..4)
            .map(|i| sim.machine.mode.is_nested(path.steps[i].0))
            .collect()
    };
    assert_eq!(on_path(&sim), [true, false, false, false]);
    assert_eq!(sim.machine.mode.nested_pages(), 1);
    for (n, step) in [(2, 3), (3, 2)] {
        let m = &mut sim.machine.on(&mut sim.hw, &mut sim.host);
        m.mode.force_nested(&mut m.core, path.steps[step].0);
        assert_eq!(sim.machine.mode.nested_pages(), n, "step {step}");
    }
    assert_eq!(on_path(&sim), [true, false, true, true]);
}

/// Two VMs of `mode` that each store once at the same offset of a fresh
/// page and fetch the same code page, scanned: VM 1's two pages merged
/// into VM 0's frames. The host report.
fn two_vms_store_and_fetch_scanned(mode: ModeKind) -> vmemsim::hostsim::HostReport {
    let fetch = || acc(1, AccessKind::Fetch, 0x40_0000);
    let vm = vec![
        fetch(),
        anon_mmap(1, ZERO_PAGES, 0x1000),
        acc(1, AccessKind::Store, ZERO_PAGES),
        fetch(),
        fetch(),
        fetch(),
    ];
    let cfg = scanning_host(mode, 2, "");
    let mut s = HostSim::with_sources(&cfg, vec![replay(&vm), replay(&vm)]).checked();
    s.run(&mut |_| {}).unwrap();
    let merged: Vec<u64> = (0..2).map(|v| s.vm(v).sharing.merged).collect();
    assert_eq!(merged, [0, 2], "{mode:?}: VM 1's code and data pages");
    s.report()
}

/// (rmap zaps, INVEPTs) of each VM of a host report.
fn zaps_and_invepts(r: &vmemsim::hostsim::HostReport) -> Vec<(u64, u64)> {
    r.vms
        .iter()
        .map(|v| (v.host.rmap_zaps, v.host.invepts))
        .collect()
}

/// A selective VM starts in nested paging and holds no shadow leaf, so
/// the same merge write-protects none of VM 0's: no zap, only the INVEPT
/// (VM 1's two EPT entries are repointed, no zaps counted either).
/// (Kills selective's `host_write_protect -> 1`; shard 1.)
#[test]
fn sharing_a_nested_selective_vms_frame_write_protects_no_leaf() {
    let r = two_vms_store_and_fetch_scanned(ModeKind::Selective);
    let host = zaps_and_invepts(&r);
    assert_eq!(host, [(0, 1), (0, 1)]);
}

/// Page sharing write-protects a shadow VM's writable leaves and counts
/// each. Two shadow VMs each store once at the same offset of a fresh
/// page (the first store of each process, so the same content) and fetch
/// the same code page: the scan merges VM 1's two pages into VM 0's
/// frames. VM 0's writable data leaf (the store set its guest D bit, so
/// the leaf has RW) loses RW, one entry changed
/// (`Shadow::write_protect_frame`; its code leaf has no RW to lose), and
/// VM 1's two leaves are zapped. (Kills `hv/shadow.rs:208`
/// `write_protect_frame`'s `n += 1` as `*=`, shard 20.)
#[test]
fn sharing_a_shadow_vms_writable_leaf_counts_it() {
    let r = two_vms_store_and_fetch_scanned(ModeKind::Shadow);
    let host = zaps_and_invepts(&r);
    assert_eq!(host, [(1, 1), (2, 1)]);
    // Each: one INVEPT (1000 cycles) and its zaps (100 each).
    let work: Vec<u64> = r.vms.iter().map(|v| v.host.host_work_cycles).collect();
    assert_eq!(work, [1100, 1200]);
}

/// A 2 MiB guest page over 4 KiB host pages under shadow paging gets a
/// direct shadow PT of 4 KiB leaves (KVM's direct shadow pages): a load
/// of A shadows the guest's PML4, PDPT and PD and adds one direct PT (4
/// shadow pages), and A+20K resolves to the huge page's sixth frame
/// through the same direct PT (still 4). (Kills `hv/shadow.rs:483`
/// `lvl -= 1` as `/=`, shard 20: the descent never ends.)
#[test]
fn shadow_maps_a_huge_guest_page_with_a_direct_pt() {
    let mut cfg = Config::default();
    cfg.guest.huge_pages = HugePages::Huge2M;
    let mut sim = Sim::new(Shadow::with_config(&cfg.shadow), &cfg);
    run(&mut sim, &[anon_mmap(1, A, 4 << 20), acc(1, Load, A)]);
    assert_eq!(sim.machine.mode.shadow_pages(), 4);
    let Record::Access(a) = acc(1, Load, A + 0x5000) else {
        unreachable!()
    };
    let mut got = None;
    sim.access(&a, &mut |_, t| got = Some(t.gpfn)).unwrap();
    assert_eq!(sim.machine.mode.shadow_pages(), 4);
    let g = &sim.guest;
    let root = g.current().unwrap().root;
    let m = softwalk::translate(&g.mem, root, 4, A).unwrap();
    assert_eq!(m.level, 2, "a 2 MiB guest page");
    assert_eq!(got, Some(m.gpfn + 5));
}

/// With 5-level paging the TLB tag (`u128`) keeps the page size apart
/// from the page number: a 4 KiB page at 2 MiB and a 2 MiB page at 1 GiB
/// both have page number 0x200 in their size. After the 4 KiB page is
/// loaded, the load at 1 GiB must not hit its entry; the oracle checks
/// every access in every mode. (Kills `mmu/tlb.rs:227` `size << 44` as
/// `>>`, shard 10: the 2 MiB lookup hit the 4 KiB entry.)
#[test]
fn five_level_tlb_tags_tell_page_sizes_apart() {
    let mut cfg = Config::default();
    cfg.guest.levels = 5;
    cfg.guest.huge_pages = HugePages::Huge2M;
    let recs = [
        anon_mmap(1, 0x20_0000, 0x1000),
        anon_mmap(1, 0x4000_0000, 4 << 20),
        acc(1, Store, 0x20_0000),
        acc(1, Store, 0x4000_0000),
        acc(1, Load, 0x20_0008),
        acc(1, Load, 0x4000_0008),
    ];
    common::all_modes_agree(&cfg, &recs);
}

/// The 64-bit TLB tag (4-level paging) keeps entries of the three sizes
/// apart when their page numbers agree: 4 KiB pages at 8 KiB and at 2
/// MiB (page numbers 2 and 0x200), 2 MiB pages at 4 MiB and at 1 GiB (2
/// and 0x200) and a 1 GiB page at 2 GiB (2). Natively (the TLB holds huge
/// entries whole), after every page is stored to, no load may hit
/// another page's entry; the oracle checks every access. (Kills
/// `mmu/tlb.rs:209` `1 << 35` as `>>`, shard 20, the same for the 1 GiB
/// bits, and the 2 MiB match arm deleted, shard 19, which gave 2 MiB
/// entries the 1 GiB bits.)
#[test]
fn tlb_tags_tell_the_three_page_sizes_apart() {
    let mut cfg = Config::default();
    cfg.guest.huge_pages = HugePages::Huge1G;
    cfg.guest.mem_mib = 2048;
    cfg.host.page_size = PageSize::Size2M;
    let mut recs = vec![
        anon_mmap(1, 0x1000, 0x2000),
        anon_mmap(1, 0x20_0000, 0x1000),
        anon_mmap(1, 0x40_0000, 2 << 20),
        anon_mmap(1, 0x4000_0000, 4 << 20),
        anon_mmap(1, 0x8000_0000, 1 << 30),
    ];
    let pages = [0x2000, 0x20_0000, 0x40_0000, 0x4000_0000, 0x8000_0000];
    recs.extend(pages.map(|va| acc(1, Store, va)));
    recs.extend(pages.map(|va| acc(1, Load, va + 8)));
    let s = checked_stats(ModeKind::Native, &cfg, &recs);
    // Five stores miss; of the loads, only a tag collision would hit
    // another page's entry (and resolve to its frame).
    assert_eq!((s.accesses, s.tlb_misses), (10, 5));
}

/// A fetch from a data page shared copy-on-write after fork is not a
/// store: the model lifts the page's NX (a recording that missed an
/// mprotect) and copies nothing. Process 1 stores to A and forks; the
/// child fetches from A: one guest fault, no COW fault, no copy; then
/// the child's store to A is the COW break (one copy). (Kills
/// `guest/os/fault.rs:141` `r.write && e & RW == 0` as `||`, shard 20: the
/// fetch copied the page.)
#[test]
fn a_fetch_from_a_cow_page_copies_nothing() {
    use AccessKind::Fetch;
    let cfg = Config::default();
    let mut sim = Sim::new(vmemsim::hv::Native, &cfg);
    run(
        &mut sim,
        &[
            anon_mmap(1, A, 1 << 20),
            acc(1, Store, A),
            ev(1, ProcEvent::Fork { child: 2 }),
        ],
    );
    let before = sim.stats().clone();
    run(&mut sim, &[acc(2, Fetch, A)]);
    let d = sim.stats().since(&before);
    assert_eq!(
        (d.guest_page_faults, d.cow_faults, d.frames_copied),
        (1, 0, 0)
    );
    let before = sim.stats().clone();
    run(&mut sim, &[acc(2, Store, A + 8)]);
    let d = sim.stats().since(&before);
    assert_eq!(
        (d.guest_page_faults, d.cow_faults, d.frames_copied),
        (1, 1, 1)
    );
}

/// brk grows and shrinks the heap VMA: the first brk sets where the heap
/// starts, the second maps [start, start + 8K) read-write (not an
/// implicit area), the third shrinks it to 4K. (Kills
/// `guest/os/mapping.rs:49` `brk -> Ok(())`, shard 10.)
#[test]
fn brk_grows_and_shrinks_the_heap_vma() {
    const HEAP: u64 = 0x60_0000;
    let mut sim = Sim::new(vmemsim::hv::Native, &Config::default());
    let brk = |addr| ev(1, ProcEvent::Brk { addr });
    run(&mut sim, &[brk(HEAP), brk(HEAP + 0x2000)]);
    let p = sim.guest.process(1).expect("spawned");
    assert_eq!(p.heap, Some((HEAP, HEAP + 0x2000)));
    let v = p.vmas.find(HEAP + 0x1000).expect("the heap VMA");
    assert_eq!(
        (v.start, v.end, v.prot, v.implicit),
        (HEAP, HEAP + 0x2000, 3, false)
    );
    run(&mut sim, &[brk(HEAP + 0x1000)]);
    let p = sim.guest.process(1).unwrap();
    assert_eq!(p.vmas.find(HEAP).map(|v| v.end), Some(HEAP + 0x1000));
    assert!(p.vmas.find(HEAP + 0x1000).is_none());
    // Each brk is one VMA event, and the guest has one process. (Kills
    // `mapping.rs:60` `vma_events += 1` as `*=` and `process_count -> 0`,
    // shards 15 and 16.)
    assert_eq!(sim.stats().vma_events, 3);
    assert_eq!(sim.guest.process_count(), 1);
    run(&mut sim, &[ev(1, ProcEvent::Fork { child: 2 })]);
    assert_eq!(sim.guest.process_count(), 2);
}

/// mprotect to read-only takes the write right from present leaves at
/// once (the next store faults) and keeps them non-executable: after a
/// store to A and mprotect(A, 4K, PROT_READ), A's PTE has no RW and has
/// NX. (Kills `guest/os/mapping.rs:106` `prot & PROT_EXEC == 0` as `|`,
/// shard 10, which made the page executable, and the same at `:103` for
/// `PROT_WRITE`.)
#[test]
fn mprotect_read_only_clears_rw_and_keeps_nx() {
    let mut sim = Sim::new(vmemsim::hv::Native, &Config::default());
    run(&mut sim, &[anon_mmap(1, A, 1 << 20), acc(1, Store, A)]);
    let pte = |sim: &Sim<vmemsim::hv::Native>| {
        let g = &sim.guest;
        let root = g.current().unwrap().root;
        softwalk::path(&g.mem, root, 4, A).steps[3].2
    };
    assert_ne!(pte(&sim) & x86::RW, 0);
    run(
        &mut sim,
        &[ev(
            1,
            ProcEvent::Mprotect {
                addr: A,
                len: 0x1000,
                prot: 1,
            },
        )],
    );
    assert_eq!(pte(&sim) & (x86::RW | x86::NX), x86::NX);
}

/// A native VM on a shared host maps each 4 KiB frame from the pool
/// alone, even inside a 2 MiB guest page (the pool's frames are not
/// contiguous): loads of A and A+20K in a 2 MiB guest page resolve to
/// two pool frames, the oracle checking both. (Kills `hv/native.rs:41`,
/// the `size: 4K` of the hosted fill deleted, shard 11: A's 2 MiB TLB
/// entry gave A+20K the frame five after A's.)
#[test]
fn a_hosted_native_vm_maps_huge_guest_pages_frame_by_frame() {
    // Also swtlb-native's hosted refill (kills `hv/swtlb.rs:89`, its
    // `size: 4K` deleted, shard 15).
    for mode in ["native", "swtlb-native"] {
        hosted_native_huge_guest_pages(mode);
    }
}

fn hosted_native_huge_guest_pages(mode: &str) {
    let text = format!(
        "[host]\nmem_mib = 256\n[[vm]]\nname = \"a\"\nworkload = \"seq\"\n\
         mode = \"{mode}\"\nmem_mib = 64\n[vm.guest]\nhuge_pages = \"2m\"\n"
    );
    let cfg = HostConfig::from_toml(&text, "t.toml", std::path::Path::new(".")).unwrap();
    let recs = [
        anon_mmap(1, A, 4 << 20),
        acc(1, Store, A),
        acc(1, Load, A + 0x5000),
        acc(1, Load, A + 0x5008),
    ];
    let mut sim = HostSim::with_sources(&cfg, vec![replay(&recs)]).checked();
    sim.run(&mut |_| {}).unwrap();
    let r = sim.resolutions(0);
    assert_eq!(r[1].0, r[0].0 + 5, "{mode}: gPFNs of one 2 MiB guest page");
    assert_eq!(
        sim.vm(0).stats.tlb_misses,
        2,
        "{mode}: one 4 KiB entry each"
    );
}

/// An access outside every VMA (a page Valgrind's loader mapped without
/// an mmap event) maps that page implicitly, read-write-execute, and is
/// counted once. (Kills `guest/os/fault.rs:32` `implicit_mappings += 1`
/// as `*=`, shard 19.)
#[test]
fn an_access_outside_every_vma_is_one_implicit_mapping() {
    let mut sim = Sim::new(vmemsim::hv::Native, &Config::default());
    run(&mut sim, &[acc(1, Store, A), acc(1, Load, A + 8)]);
    let s = sim.stats();
    assert_eq!((s.implicit_mappings, s.guest_page_faults), (1, 1));
    let v = sim.guest.process(1).unwrap().vmas.find(A).unwrap();
    assert_eq!(
        (v.start, v.end, v.prot, v.implicit),
        (A, A + 0x1000, 7, true)
    );
}

/// brk refuses a program break above the user half (47 bits with 4-level
/// paging), naming the event, and accepts one at its top. (Kills
/// `guest/os/mapping.rs:49` `addr > self.user_top` as `==`, shard 11.)
#[test]
fn brk_above_the_user_half_is_an_error() {
    let mut sim = Sim::new(vmemsim::hv::Native, &Config::default());
    let top = 1u64 << 47;
    let e = sim
        .event(1, &ProcEvent::Brk { addr: top + 0x1000 })
        .unwrap_err();
    assert!(e.to_string().contains("brk 0x800000001000"), "{e}");
    sim.event(1, &ProcEvent::Brk { addr: top - 0x2000 })
        .unwrap();
    sim.event(1, &ProcEvent::Brk { addr: top }).unwrap();
}

/// execve gives the process a new, empty address space and flushes its
/// TLB entries once. (Kills `guest/os/process.rs:168` `tlb_flushes += 1`
/// as `*=`, shard 11.)
#[test]
fn exec_flushes_the_tlb_once() {
    let mut sim = Sim::new(vmemsim::hv::Native, &Config::default());
    run(&mut sim, &[anon_mmap(1, A, 1 << 20), acc(1, Store, A)]);
    let before = sim.stats().clone();
    run(&mut sim, &[ev(1, ProcEvent::Exec)]);
    let d = sim.stats().since(&before);
    assert_eq!((d.execs, d.tlb_flushes), (1, 1));
    assert!(sim.guest.process(1).unwrap().vmas.is_empty());
}

/// munmap walks every page of a long range: 4 352 touched pages (17
/// MiB) unmapped at once leave none mapped. (Kills
/// `guest/os/mapping.rs:225` `va += n * PAGE_SIZE` as `n + PAGE_SIZE`,
/// shard 19: steps of 4 097 bytes skip page 4 096, which stayed mapped.)
#[test]
fn munmap_of_a_long_range_unmaps_every_page() {
    const PAGES: u64 = 17 * 256;
    let mut sim = Sim::new(vmemsim::hv::Native, &Config::default());
    let mut recs = vec![anon_mmap(1, A, PAGES << 12)];
    recs.extend((0..PAGES).map(|i| acc(1, Store, A + (i << 12))));
    run(&mut sim, &recs);
    run(&mut sim, &[munmap(1, A, PAGES << 12)]);
    let g = &sim.guest;
    let root = g.current().unwrap().root;
    let left: Vec<u64> = (0..PAGES)
        .filter(|i| softwalk::translate(&g.mem, root, 4, A + (i << 12)).is_some())
        .collect();
    assert_eq!(left, [] as [u64; 0]);
}

/// A 2 MiB guest page that faults in over preset contents (a snapshot's
/// pages) gives each 4 KiB frame the content of its own page: frames 0,
/// 1 and 511 hold the ids preset for A's pages 0, 1 and 511. (Kills
/// `guest/os/mod.rs:236` `(va >> 12) + i` as `- i`, shard 12.)
#[test]
fn a_huge_page_over_presets_gives_each_frame_its_page() {
    let text = "[host]\nmem_mib = 256\n[[vm]]\nname = \"a\"\nworkload = \"seq\"\n\
                mode = \"nested\"\nmem_mib = 64\n[vm.guest]\nhuge_pages = \"2m\"\n";
    let cfg = HostConfig::from_toml(text, "t.toml", std::path::Path::new(".")).unwrap();
    let recs = [anon_mmap(1, A, 4 << 20), acc(1, Load, A)];
    let mut sim = HostSim::with_sources(&cfg, vec![replay(&recs)]).track_contents();
    let vpn = A >> 12;
    sim.preset_contents(
        0,
        &[
            ((1, vpn), 0x111),
            ((1, vpn + 1), 0x222),
            ((1, vpn + 511), 0x333),
        ],
    );
    sim.run(&mut |_| {}).unwrap();
    let g = sim.guest(0);
    let m = softwalk::translate(&g.mem, g.process(1).unwrap().root, 4, A).unwrap();
    assert_eq!(m.level, 2);
    let c = g.contents().unwrap();
    let got: Vec<u64> = [0, 1, 511].iter().map(|i| c.get(m.gpfn + i)).collect();
    assert_eq!(got, [0x111, 0x222, 0x333]);
}

/// The guest zeroes every frame it hands out: a first store in a fresh
/// address space zeroes the PDPT, PD and PT it builds (A's PML4 came with
/// the process) and the data frame: 4; a store to the next page of the
/// same PT zeroes only its data frame. (Kills `guest/os/mod.rs:344`
/// `alloc_frame`'s `frames_zeroed += 1` as `*=`, shard 18.)
#[test]
fn demand_faults_zero_each_new_frame() {
    let mut sim = Sim::new(vmemsim::hv::Native, &Config::default());
    run(&mut sim, &[anon_mmap(1, A, 1 << 20)]);
    let before = sim.stats().clone();
    run(&mut sim, &[acc(1, Store, A)]);
    assert_eq!(sim.stats().since(&before).frames_zeroed, 4);
    let before = sim.stats().clone();
    run(&mut sim, &[acc(1, Store, A + 0x1000)]);
    assert_eq!(sim.stats().since(&before).frames_zeroed, 1);
}

/// Write-protecting a frame for sharing keeps its shadow leaf present,
/// only without RW: after `Shadow::write_protect_frame` on A's frame (one
/// leaf changed) and a TLB flush, a load of A walks the shadow tables to
/// the read-only leaf without an exit. (Kills `hv/shadow.rs:207`
/// `se & !x86::RW` with the `!` deleted, shard 18: the leaf lost every bit
/// but RW, and the load took a hidden fault.)
#[test]
fn a_write_protected_shadow_leaf_stays_present() {
    let cfg = Config::default();
    let mut sim = Sim::new(Shadow::with_config(&cfg.shadow), &cfg);
    // The reverse map is kept for VMs on a shared host only.
    sim.machine.vm.hosted = true;
    run(&mut sim, &[anon_mmap(1, A, 1 << 20), acc(1, Store, A)]);
    let g = Gpfn(gpfn_of(&sim, A));
    let h = sim.machine.vm.p2m(g).unwrap();
    assert_eq!(sim.machine.mode.write_protect_frame(&mut sim.host, g, h), 1);
    sim.hw.tlbs.flush_all();
    let before = sim.stats().clone();
    run(&mut sim, &[acc(1, Load, A + 8)]);
    let d = sim.stats().since(&before);
    assert_eq!((d.tlb_misses, d.total_exits()), (1, 0));
}

/// A policy that always asks for shadow paging.
struct AlwaysShadow;

impl Policy for AlwaysShadow {
    const NAME: &'static str = "always-shadow";
    fn decide(&mut self, _: &PolicyInput<'_>) -> Paging {
        Paging::Shadow
    }
}

/// A hosted selective VM under [`AlwaysShadow`] with periods of one
/// instruction: two fetches (the first's boundary switches it to shadow
/// paging, checked: one switch), then A mapped and accessed by `kind`.
fn selective_in_shadow_after(
    kind: AccessKind,
) -> Sim<vmemsim::hv::selective::Selective<AlwaysShadow>> {
    let mut cfg = Config::default();
    cfg.selective.period_instructions = 1;
    let mode = vmemsim::hv::selective::Selective::with_policy(AlwaysShadow, &cfg);
    let mut sim = Sim::new(mode, &cfg);
    sim.machine.vm.hosted = true;
    run(
        &mut sim,
        &[
            acc(1, AccessKind::Fetch, 0x40_0000),
            acc(1, AccessKind::Fetch, 0x40_0000),
            anon_mmap(1, A, 1 << 20),
            acc(1, kind, A),
        ],
    );
    assert_eq!(sim.machine.mode.switch_report().unwrap().switches, 1);
    sim
}

/// A switching VM in shadow paging write-protects its shadow leaves for
/// sharing and counts them: periods of one instruction, so the first
/// fetch's boundary switches it to shadow; then A stored to (its shadow
/// leaf writable) and A's frame write-protected: one leaf changed. (Kills
/// selective's `host_write_protect -> 0`, shard 0; `-> 1` is killed by
/// `sharing_a_nested_selective_vms_frame_write_protects_no_leaf`.)
#[test]
fn a_selective_vm_in_shadow_paging_counts_the_leaves_it_write_protects() {
    let sim = &mut selective_in_shadow_after(Store);
    let g = gpfn_of(sim, A);
    let h = sim.machine.vm.p2m(Gpfn(g)).unwrap();
    let n = sim
        .machine
        .mode
        .host_write_protect(&mut sim.host, Gpfn(g), h);
    assert_eq!(n, 1);
}

/// A switching VM in shadow paging zaps the shadow leaves of a frame the
/// host swaps out and counts them: as the test above, then A loaded
/// (one shadow leaf for A's frame) and A's frame unmapped: one leaf
/// zapped, and a second unmap finds none. (Kills selective's
/// `host_unmap -> 0`, shard 21; `-> 1` is killed by
/// `swapping_out_a_nested_selective_vms_frame_zaps_nothing`.)
#[test]
fn a_selective_vm_in_shadow_paging_counts_the_leaves_a_swap_out_zaps() {
    let sim = &mut selective_in_shadow_after(Load);
    let g = Gpfn(gpfn_of(sim, A));
    let h = sim.machine.vm.p2m(g).unwrap();
    let zapped = [
        sim.machine.mode.host_unmap(&mut sim.host, g, h),
        sim.machine.mode.host_unmap(&mut sim.host, g, h),
    ];
    assert_eq!(zapped, [1, 0]);
}

/// A policy that never switches and writes down how many periods the
/// VM had spent in its mode at each decision.
struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<u64>>>);

impl Policy for Recorder {
    const NAME: &'static str = "recorder";
    fn decide(&mut self, input: &PolicyInput<'_>) -> Paging {
        self.0.lock().unwrap().push(input.periods_in_mode);
        input.cur
    }
}

/// A switching mode tells its policy how many periods it has spent in
/// the current mode, the one just closed included: 1, 2, 3, 4 over
/// `seq`'s 450 000 instructions (periods of 100 000). (Kills
/// `hv/selective/mod.rs:206` `periods_in_mode += 1` as `*=`, shard 12.)
#[test]
fn a_switching_mode_counts_its_periods_in_mode() {
    let cfg = Config::default();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mode = vmemsim::hv::selective::Selective::with_policy(Recorder(seen.clone()), &cfg);
    let mut sim = Sim::new(mode, &cfg);
    let recs: Vec<Record> = (0..450_000u64)
        .map(|i| acc(1, AccessKind::Fetch, 0x40_0000 + 4 * (i % 1024)))
        .collect();
    run(&mut sim, &recs);
    assert_eq!(sim.stats().instructions, 450_000);
    assert_eq!(*seen.lock().unwrap(), [1, 2, 3, 4]);
}

/// A direct shadow PT (a guest 2 MiB page splintered) shared by the two
/// shadow PDs of a parent and its forked child: after the child's load
/// links it from the child's PD too, the child's store breaks the COW
/// and the guest re-points the child's PDE, which zaps the child's link
/// and frees the direct page; the parent's link must go with it
/// (`free_page` clears every parent left in the page's list). The
/// parent's next load then refills through a new direct page, checked by
/// the oracle, in shadow and agile modes. (Kills `hv/shadow.rs:314`,
/// `zap`'s `p != (sp, idx)` as `==`, shard 13: the parent's link was
/// dropped from the list and left pointing at the freed page.)
#[test]
fn a_direct_shadow_pt_shared_after_fork_is_unlinked_from_every_parent() {
    let mut cfg = Config::default();
    cfg.guest.huge_pages = HugePages::Huge2M;
    let t = [
        anon_mmap(1, A, 4 << 20),
        acc(1, Store, A),
        ev(1, ProcEvent::Fork { child: 2 }),
        acc(1, Load, A + 0x5000),
        acc(2, Load, A + 0x1000),
        acc(2, Store, A),
        acc(1, Load, A + 0x2000),
        acc(2, Load, A + 0x3000),
        acc(1, Store, A + 0x4000),
    ];
    // Exits by reason (EPT violation, shadow fault, guest fault, PT write,
    // CR3 write, INVLPG, hypercall): the two COW breaks copy 2 MiB pages,
    // 512 frames each, the shadow faults of shadow mode and the EPT
    // violations of agile's nested part.
    for (kind, exits) in [
        (ModeKind::Shadow, [0, 1037, 3, 4, 5, 3, 0]),
        (ModeKind::Agile, [1029, 1, 0, 0, 5, 3, 0]),
    ] {
        let s = checked_stats(kind, &cfg, &t);
        assert_eq!(s.vm_exits, exits, "{kind:?}");
        assert_eq!((s.guest_page_faults, s.cow_faults), (3, 2), "{kind:?}");
    }
}

/// munmap of [A + 4K, A + 4M) when only A + 2M is mapped: the walk over
/// the range skips the absent PDE of A's 2 MiB from A + 4K to the next
/// PDE's start, A + 2M, and unmaps the page there. Mapped again and
/// loaded, A + 2M takes a fresh demand fault (2 in all, every mode).
/// (Kills `guest/os/mapping.rs:195`, `for_leaves`' skip `va & !(span -
/// 1)` with the `!` deleted (shard 15) and `span - 1` as `span + 1`
/// (shard 16): with either, this munmap no longer ends, which
/// cargo-mutants reports as a timeout.)
#[test]
fn munmap_skips_an_absent_pde_to_the_next_pde_start() {
    let t = [
        anon_mmap(1, A, 6 << 20),
        acc(1, Store, A + (2 << 20)),
        common::munmap(1, A + 0x1000, (4 << 20) - 0x1000),
        anon_mmap(1, A + 0x1000, (4 << 20) - 0x1000),
        acc(1, Load, A + (2 << 20)),
    ];
    for m in common::all_modes(&Config::default(), &t) {
        assert_eq!(
            (m.stats.demand_faults, m.stats.guest_page_faults),
            (2, 2),
            "{}",
            m.name
        );
    }
}

/// munmap of the middle page of three leaves the pages on either side
/// mapped: the loads of A and A + 8K after it hit what their faults
/// mapped (3 faults in all, every mode). (Kills `guest/os/mapping.rs:225`,
/// `for_leaves`' `va += n * PAGE_SIZE` as `-=`, shard 17: the walk went
/// back to A and unmapped it too.)
#[test]
fn munmap_of_a_middle_page_leaves_its_neighbours_mapped() {
    let t = [
        anon_mmap(1, A, 3 << 12),
        acc(1, Store, A),
        acc(1, Store, A + 0x1000),
        acc(1, Store, A + 0x2000),
        common::munmap(1, A + 0x1000, 0x1000),
        acc(1, Load, A),
        acc(1, Load, A + 0x2000),
    ];
    for m in common::all_modes(&Config::default(), &t) {
        assert_eq!(m.stats.guest_page_faults, 3, "{}", m.name);
    }
}
