//! Guest reclaim and swap: exact small cases in every mode (a mode changes
//! cost, never meaning: every mode sees the same swap-outs, swap-ins and
//! major faults), the accessed-bit clearing as each mode pays for it, and
//! the guest's out-of-memory error.

mod common;

use vmemsim::config::{Config, ShadowConfig};
use vmemsim::sim::{run_mode, ModeKind};
use vmemsim_trace::{AccessKind, ProcEvent, Record};

use common::{acc, all_modes, anon_mmap, checked_stats, ev};

const A: u64 = 0x7f00_0000_0000;

/// A 64 MiB guest (16384 frames; gPFN 0-511 the kernel's own, so 15872
/// free) with 1 MiB of swap and both watermarks at 15868 pages: reclaim
/// starts when fewer than 15868 frames are free and stops at 15868.
fn small_guest() -> Config {
    let mut c = Config::default();
    c.guest.mem_mib = 64;
    c.guest.swap_mib = 1;
    c.guest.watermark_low_pages = 15868;
    c.guest.watermark_high_pages = 15868;
    c
}

fn mmap_a() -> Record {
    anon_mmap(1, A, 4 << 20)
}

/// Page A is swapped out by reclaim and touched again:
/// 1. the mmap spawns process 1: its root (gPFN 512; 15871 free);
/// 2. load A: PDPT, PD, PT (513-515) and A's frame (516): 15867 free;
/// 3. load B = A + 4 KiB: allocating B's frame finds 15867 < 15868 free and
///    reclaims: the clock from gPFN 0 passes the kernel's frames (no
///    references) and the four tables (not in the reverse map), finds 516
///    with A set (step 2's fault mapped it accessed) and clears it (one PTE
///    store, one INVLPG), turns once round the free frames, finds 516 with
///    A still clear and swaps it out (one PTE store of the swap entry, one
///    INVLPG): 15868 free, reclaim stops; B gets gPFN 516;
/// 4. munmap B: 516 is free again (15868: no reclaim needed below);
/// 5. load A: the swap entry faults; the major fault reads A back into 516.
fn swap_out_then_touch() -> Vec<Record> {
    use AccessKind::Load;
    vec![
        mmap_a(),
        acc(1, Load, A),
        acc(1, Load, A + 0x1000),
        ev(
            1,
            ProcEvent::Munmap {
                addr: A + 0x1000,
                len: 0x1000,
            },
        ),
        acc(1, Load, A),
    ]
}

#[test]
fn swap_out_then_touch_is_one_major_fault_in_every_mode() {
    let runs = all_modes(&small_guest(), &swap_out_then_touch());
    assert_eq!(runs.len(), ModeKind::ALL.len() + 1);
    for m in &runs {
        let s = &m.stats;
        let got = (
            s.guest_swap_outs,
            s.guest_swap_ins,
            s.major_faults,
            s.reclaim_scanned,
            s.accessed_bits_cleared,
        );
        // One swap-out, one swap-in, one major fault; the clock looked at
        // gPFN 516 twice and cleared its accessed bit once.
        assert_eq!(got, (1, 1, 1, 2, 1), "{}", m.name);
        // Faults: A and B demand-zero, A major.
        assert_eq!((s.guest_page_faults, s.demand_faults), (3, 2), "{}", m.name);
        // INVLPGs: two by reclaim, one by the munmap.
        assert_eq!(s.invlpgs, 3, "{}", m.name);
        // Guest PTE stores: A's fault 4 (PML4E, PDPTE, PDE, PTE), B's 3
        // (A's accessed bit cleared, A's swap entry, B's PTE), the munmap
        // 1, the swap-in 1.
        assert_eq!(s.guest_pte_writes, 9, "{}", m.name);
    }
}

/// Exits by reason and mode of [`swap_out_then_touch`] with `with`'s
/// guest swap, less those of the same trace without swap.
fn exit_differences(with: &Config) -> Vec<(ModeKind, Vec<i64>)> {
    let mut without = with.clone();
    without.guest.swap_mib = 0;
    let t = swap_out_then_touch();
    let mut got = Vec::new();
    for kind in ModeKind::ALL {
        let a = checked_stats(kind, with, &t);
        let b = checked_stats(kind, &without, &t);
        let d: Vec<i64> = (0..7)
            .map(|i| a.vm_exits[i] as i64 - b.vm_exits[i] as i64)
            .collect();
        got.push((kind, d));
    }
    got
}

#[test]
fn clearing_accessed_bits_traps_in_shadow_not_in_nested() {
    // The same trace with and without guest swap (without, nothing is
    // reclaimed: 64 MiB hold it). The difference in exits is what reclaim
    // and the major fault cost each mode, by reason (ept_violation,
    // shadow_fault, guest_fault, pt_write, cr3_write, invlpg, hypercall):
    // - native: none (no exits at all).
    // - nested, selective-w11, selective (nested until their first
    //   period): reclaim's 2 PTE stores and 2 INVLPGs and the major fault
    //   run in the guest without exits. Without swap B's frame is a fresh
    //   gPFN (517), backed in an EPT violation; with swap B reuses 516,
    //   backed already: -1 ept_violation.
    // - shadow: the PT is shadowed (write-protected) since A's hidden
    //   fill: reclaim's 2 PTE stores trap (+2 pt_write) and zap A's shadow
    //   entry; its 2 INVLPGs exit (+2 invlpg). Without swap the last load
    //   of A hits the TLB; with swap it finds no shadow entry and the guest
    //   tables hold a swap entry: a true #PF (+1 guest_fault), whose PTE
    //   store traps (+1 pt_write); the load again: a hidden fill (+1
    //   shadow_fault). B's fresh frame is backed in a hidden fault without
    //   swap only (-1 shadow_fault): 0 shadow_fault in all.
    // - direct: reclaim's 2 PTE updates ride in one batch (+1 hypercall),
    //   its 2 INVLPGs are hypercalls (+2); the major fault bounces through
    //   Xen (+1 guest_fault) and its PTE update is a batch (+1 hypercall).
    // - agile: the new root is nested, so PTE stores and the major fault do
    //   not exit and B reuses a backed frame (-1 ept_violation), but agile
    //   intercepts INVLPG as shadow paging does (+2 invlpg).
    // - swtlb-native: none. swtlb-vmm: the guest's 2 TLB invalidations
    //   trap (+2 invlpg); PTE stores never do (its TLB traps, outside
    //   these seven reasons, are in tests/swtlb.rs).
    // (Shadow paging as trap-and-emulate, `ShadowConfig::strict`; the
    // default, KVM's unsync, follows in `..._with_unsync`.)
    let mut with = small_guest();
    with.shadow = ShadowConfig::strict();
    let got = exit_differences(&with);
    let want: Vec<(ModeKind, Vec<i64>)> = vec![
        (ModeKind::Native, vec![0; 7]),
        (ModeKind::Nested, vec![-1, 0, 0, 0, 0, 0, 0]),
        (ModeKind::Shadow, vec![0, 0, 1, 3, 0, 2, 0]),
        (ModeKind::Direct, vec![0, 0, 1, 0, 0, 0, 4]),
        (ModeKind::Agile, vec![-1, 0, 0, 0, 0, 2, 0]),
        (ModeKind::SelectiveW11, vec![-1, 0, 0, 0, 0, 0, 0]),
        (ModeKind::Selective, vec![-1, 0, 0, 0, 0, 0, 0]),
        (ModeKind::SwtlbNative, vec![0; 7]),
        (ModeKind::SwtlbVmm, vec![0, 0, 0, 0, 0, 2, 0]),
    ];
    assert_eq!(got, want);
}

#[test]
fn clearing_accessed_bits_with_unsync_shadow_pages() {
    // As above with KVM's unsync (the default): the first store to the
    // shadowed PT is one write-protection fault that makes it writable
    // (counted as a shadow_fault). With swap that store is reclaim's first
    // accessed-bit clear, without it B's PTE store: no difference. Every
    // later store lands in the unsynced PT without an exit: 0 pt_write
    // (strict: +3). The INVLPGs exit (+2) and resync A's entry; the major
    // fault is a true #PF (+1 guest_fault); A's refill (+1 shadow_fault)
    // replaces the hidden fault that backed B's fresh frame without swap
    // (-1). Other modes as in the strict case.
    let got = exit_differences(&small_guest());
    let want: Vec<(ModeKind, Vec<i64>)> = vec![
        (ModeKind::Native, vec![0; 7]),
        (ModeKind::Nested, vec![-1, 0, 0, 0, 0, 0, 0]),
        (ModeKind::Shadow, vec![0, 0, 1, 0, 0, 2, 0]),
        (ModeKind::Direct, vec![0, 0, 1, 0, 0, 0, 4]),
        (ModeKind::Agile, vec![-1, 0, 0, 0, 0, 2, 0]),
        (ModeKind::SelectiveW11, vec![-1, 0, 0, 0, 0, 0, 0]),
        (ModeKind::Selective, vec![-1, 0, 0, 0, 0, 0, 0]),
        (ModeKind::SwtlbNative, vec![0; 7]),
        (ModeKind::SwtlbVmm, vec![0, 0, 0, 0, 0, 2, 0]),
    ];
    assert_eq!(got, want);
}

#[test]
fn a_guest_that_cannot_reclaim_says_so() {
    // 64 MiB, no swap: random updates over 80 MiB (20480 pages, nearly
    // all touched by 200,000 accesses) run out, naming the guest, in
    // every mode (never a panic).
    let mut c = Config::default();
    c.guest.mem_mib = 64;
    let spec = vmemsim::workload::WorkloadSpec {
        footprint_mib: 80,
        accesses: 200_000,
        ..vmemsim::workload::WorkloadSpec::default_for(vmemsim::workload::WorkloadKind::Random)
    };
    for kind in ModeKind::ALL {
        let e = run_mode(kind, &c, &mut spec.source(), &mut |_| {})
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "the guest is out of memory: the workload needs more than guest.mem_mib = 64 MiB \
             and guest reclaim freed too little (guest.swap_mib = 0 MiB); raise either",
            "{}",
            kind.name()
        );
    }
}

#[test]
fn a_small_guest_with_swap_runs_what_it_cannot_hold() {
    // Random updates over 72 MiB in a 64 MiB guest with 64 MiB of swap:
    // it finishes, swapping, and every mode sees the same swap traffic
    // (checked access by access by the oracle).
    let mut c = Config::default();
    c.guest.mem_mib = 64;
    c.guest.swap_mib = 64;
    let spec = vmemsim::workload::WorkloadSpec {
        footprint_mib: 72,
        accesses: 150_000,
        ..vmemsim::workload::WorkloadSpec::default_for(vmemsim::workload::WorkloadKind::Random)
    };
    let records = common::collect(&mut spec.source());
    let runs = all_modes(&c, &records);
    let s = &runs[0].stats;
    assert!(s.guest_swap_outs > 0 && s.major_faults > 0, "{s:?}");
    for m in &runs {
        assert_eq!(m.stats.guest_swap_outs, s.guest_swap_outs, "{}", m.name);
        assert_eq!(m.stats.major_faults, s.major_faults, "{}", m.name);
    }
}

/// The low watermark is a strict bound: reclaim starts when *fewer* than
/// `watermark_low_pages` frames are free. Loading A leaves exactly 15867
/// free (see [`swap_out_then_touch`]). With the low watermark at 15867
/// (the high one at 15868), B's allocation does not reclaim and takes a
/// fresh frame; at 15868 it reclaims and swaps A out. In every mode.
#[test]
fn reclaim_starts_below_the_low_watermark_not_at_it() {
    use AccessKind::Load;
    let t = [mmap_a(), acc(1, Load, A), acc(1, Load, A + 0x1000)];
    for (low, swap_outs) in [(15867, 0), (15868, 1)] {
        let mut cfg = small_guest();
        cfg.guest.watermark_low_pages = low;
        cfg.guest.watermark_high_pages = 15868;
        for m in all_modes(&cfg, &t) {
            assert_eq!(m.stats.guest_swap_outs, swap_outs, "low {low}: {}", m.name);
        }
    }
}

/// Pages in the guest's swap after each record of `t`, run natively on
/// the small guest.
fn swapped_after_each(t: &[Record]) -> Vec<u64> {
    let mut sim = vmemsim::sim::Sim::new(vmemsim::hv::Native, &small_guest());
    t.iter()
        .map(|r| {
            match r {
                Record::Access(a) => sim.access(a, &mut |_, _| {}).unwrap(),
                Record::Event(e) => sim.event(e.pid, &e.kind).unwrap(),
            }
            sim.guest.swapped_pages()
        })
        .collect()
}

/// munmap of a swapped-out page frees its slot and leaves the page before
/// it mapped. Load A + 4K (gPFN 516, 15867 free), load A: reclaim swaps
/// A + 4K out and A takes 516; munmap A + 4K; load A hits (2 faults in
/// all, no swap-in), every mode, and no slot is left in use. (Kills
/// `guest/os/mapping.rs:190`, `for_leaves`' swap-entry step `va +=
/// PAGE_SIZE` as `-=`, shard 1: the walk went back to A and unmapped it;
/// and `guest/reclaim.rs:252` `swap_put -> ()`, shard 1: the slot stayed
/// in use.)
#[test]
fn munmap_of_a_swapped_page_frees_its_slot_and_leaves_its_neighbour() {
    use AccessKind::Load;
    let t = [
        mmap_a(),
        acc(1, Load, A + 0x1000),
        acc(1, Load, A),
        common::munmap(1, A + 0x1000, 0x1000),
        acc(1, Load, A),
    ];
    for m in all_modes(&small_guest(), &t) {
        let s = &m.stats;
        assert_eq!(
            (s.guest_swap_outs, s.guest_swap_ins, s.guest_page_faults),
            (1, 0, 2),
            "{}",
            m.name
        );
    }
    let swapped = swapped_after_each(&t[..4]);
    // In the swap after the second load; free again after the munmap.
    assert_eq!(swapped, [0, 0, 1, 0]);
}

/// munmap over two swapped-out pages frees both slots. Loads of A + 8K,
/// A + 4K and A, each below the watermark: the second swaps A + 8K out,
/// the third A + 4K. munmap of both; a load of A + 8K then finds no VMA
/// (an implicit mapping: a fresh page, no swap-in; its allocation swaps
/// A out). 3 swap-outs, 0 swap-ins, 4 faults, in every mode; no page in
/// swap right after the munmap. (Kills `for_leaves`' swap-entry step `va
/// += PAGE_SIZE` as `*=`, shard 2: the walk jumped past the range after
/// the first swapped page, left A + 8K's swap entry in place, and the
/// last load swapped it back in.)
#[test]
fn munmap_over_two_swapped_pages_frees_both_slots() {
    use AccessKind::Load;
    let t = [
        mmap_a(),
        acc(1, Load, A + 0x2000),
        acc(1, Load, A + 0x1000),
        acc(1, Load, A),
        common::munmap(1, A + 0x1000, 0x2000),
        acc(1, Load, A + 0x2000),
    ];
    for m in all_modes(&small_guest(), &t) {
        let s = &m.stats;
        let got = (
            s.guest_swap_outs,
            s.guest_swap_ins,
            s.guest_page_faults,
            s.implicit_mappings,
        );
        assert_eq!(
            got,
            (3, 0, 4, 1),
            "{}: (outs, ins, faults, implicit)",
            m.name
        );
    }
    let swapped = swapped_after_each(&t[..5]);
    assert_eq!(swapped, [0, 0, 1, 2, 0]);
}
