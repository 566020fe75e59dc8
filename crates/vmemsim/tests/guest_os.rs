//! The guest kernel's own bookkeeping on small hand-built traces, exact:
//! faults, protection upgrades and VMA events, the same in every mode
//! (they are the guest's, not the hypervisor's). The oracle harness checks
//! that every mode resolves alike; these check what the guest itself does,
//! which the oracle cannot see (a guest that miscounts does so in every
//! mode). Mutation testing (TESTING.md) found these counts unguarded.

mod common;

use vmemsim::config::Config;
use vmemsim::sim::ModeKind;
use vmemsim::stats::Stats;
use vmemsim_trace::{AccessKind, ProcEvent, Record};

use common::{acc, checked_stats, ev};

const A: u64 = 0x7f00_0000_0000;
const B: u64 = 0x7f10_0000_0000;
const PAGE: u64 = 4096;

/// `pid` maps `pages` anonymous pages at `addr` with rights `prot`.
fn mmap(pid: u32, addr: u64, pages: u64, prot: u32) -> Record {
    ev(
        pid,
        ProcEvent::Mmap {
            addr,
            len: pages * PAGE,
            prot,
            flags: 0x22,
            file: None,
        },
    )
}

/// Every mode's counters on `trace` (default configuration), each access
/// checked against the oracle.
fn every_mode(trace: &[Record]) -> Vec<(ModeKind, Stats)> {
    every_mode_with(&Config::default(), trace)
}

fn every_mode_with(cfg: &Config, trace: &[Record]) -> Vec<(ModeKind, Stats)> {
    ModeKind::ALL
        .iter()
        .map(|&k| (k, checked_stats(k, cfg, trace)))
        .collect()
}

#[test]
fn protection_upgrades_and_vma_events_are_counted_exactly() {
    use AccessKind::{Load, Store};
    // A read-only VMA of 5 pages; a real program stored to it, so its
    // rights must have allowed the store: the guest upgrades the VMA to
    // R+W on the first store's fault (one upgrade), and every later fault
    // in it finds the rights it needs. mprotect back to read-only keeps
    // R: the next load's demand fault needs no upgrade.
    // Faults: one demand fault per first touch of pages 0-4 = 5 (the store
    // to page 1 is that page's first touch, so its upgrade rides on its
    // demand fault). VMA events: 2 mmaps + 1 mprotect = 3.
    let trace = vec![
        mmap(1, A, 5, 1),
        acc(1, Load, A),
        acc(1, Store, A + PAGE),
        acc(1, Store, A + 2 * PAGE),
        acc(1, Load, A + 3 * PAGE),
        ev(
            1,
            ProcEvent::Mprotect {
                addr: A,
                len: 5 * PAGE,
                prot: 1,
            },
        ),
        acc(1, Load, A + 4 * PAGE),
        acc(1, Store, A + 2 * PAGE),
        mmap(1, B, 1, 3),
    ];
    for (kind, s) in every_mode(&trace) {
        let got = (
            s.guest_page_faults,
            s.demand_faults,
            s.protection_upgrades,
            s.implicit_mappings,
            s.vma_events,
        );
        assert_eq!(
            got,
            (6, 5, 2, 0, 3),
            "{kind:?}: (faults, demand, upgrades, implicit, vma events)"
        );
    }
}

/// mprotect sets the VMA's rights to the ones asked: a R+W VMA made
/// read-only and then loaded from (a page not touched before) is a demand
/// fault with no upgrade. (Kills `mprotect`'s `prot & PROT_RWX` as `^`,
/// which left the VMA W+X, without the R the load needs: an upgrade; the
/// test above misses it because its later store upgrades anyway; shard 1.)
#[test]
fn mprotect_sets_the_vma_rights_it_is_given() {
    use AccessKind::Load;
    let trace = vec![
        mmap(1, A, 2, 3),
        ev(
            1,
            ProcEvent::Mprotect {
                addr: A,
                len: 2 * PAGE,
                prot: 1,
            },
        ),
        acc(1, Load, A + PAGE),
    ];
    for (kind, s) in every_mode(&trace) {
        let got = (s.guest_page_faults, s.protection_upgrades, s.vma_events);
        assert_eq!(got, (1, 0, 2), "{kind:?}: (faults, upgrades, vma events)");
    }
}

/// A fault's upgrade installs the page with the VMA's old rights and the
/// ones the access needs together. A write-only VMA (PROT_WRITE: no read,
/// which every access needs) stored to, and a write+exec one fetched from:
/// each first touch is one fault with one upgrade, to R+W and R+W+X, and
/// the second access finds its rights in the PTE (no fault). (Kills
/// `page_fault`'s `v.prot | need` as `^`, which dropped W, resp. X, from
/// the installed PTE, so the second access faulted again; shard 17.)
#[test]
fn an_upgrade_installs_the_old_rights_and_the_needed_ones() {
    use AccessKind::{Fetch, Store};
    let trace = vec![
        mmap(1, A, 1, 2),
        acc(1, Store, A),
        acc(1, Store, A),
        mmap(1, B, 1, 6),
        acc(1, Fetch, B),
        acc(1, Fetch, B),
    ];
    for (kind, s) in every_mode(&trace) {
        let got = (s.guest_page_faults, s.demand_faults, s.protection_upgrades);
        assert_eq!(got, (2, 2, 2), "{kind:?}: (faults, demand, upgrades)");
    }
}

/// Forks, exits and what they cost the guest's TLB, the same in every
/// mode. Process 1 stores to A, forks 2 (A's PTE write-protected for COW:
/// a flush of 1's PCID), 2 loads A through its copied tables (no fault:
/// one context switch, 1 to 2) and exits (a flush); 1 runs again (not
/// counted as a switch: 2 is gone), loads A + 4 KiB (a demand fault),
/// forks 3 (A + 4 KiB write-protected: a flush), 3 exits without running
/// (a flush), and 1's store to A is a COW fault with no copy left to make
/// (one INVLPG). So 3 processes, 2 forks, 2 exits, 4 flushes, 1 switch,
/// 1 INVLPG, 3 faults of which 1 COW. (Kills `exit`'s `tlb_flushes += 1`
/// as `*=`, shard 4.)
#[test]
fn process_lifecycle_is_counted_exactly() {
    use AccessKind::{Load, Store};
    let trace = vec![
        mmap(1, A, 2, 3),
        acc(1, Store, A),
        ev(1, ProcEvent::Fork { child: 2 }),
        acc(2, Load, A),
        ev(2, ProcEvent::Exit { code: 0 }),
        acc(1, Load, A + PAGE),
        ev(1, ProcEvent::Fork { child: 3 }),
        ev(3, ProcEvent::Exit { code: 0 }),
        acc(1, Store, A),
    ];
    for (kind, s) in every_mode(&trace) {
        let got = (
            (s.processes, s.forks, s.exits),
            (s.tlb_flushes, s.context_switches, s.invlpgs),
            (s.guest_page_faults, s.cow_faults),
        );
        assert_eq!(
            got,
            ((3, 2, 2), (4, 1, 1), (3, 1)),
            "{kind:?}: (processes, forks, exits), (flushes, switches, INVLPGs), (faults, COW)"
        );
    }
}

/// With 2 MiB guest pages, a fault maps a huge page only where the
/// aligned 2 MiB lies wholly in the VMA (Linux's rule): a 1 MiB mapping
/// at a 2 MiB boundary gets 4 KiB pages (two touches, two demand faults),
/// a 2 MiB one a single huge page (one fault for both touches). (Kills
/// the fit test's `v.end - base >= size` as `+`, which gave the 1 MiB
/// VMA a huge page reaching past its end; shard 5.)
#[test]
fn a_huge_page_needs_the_whole_aligned_range_in_the_vma() {
    use AccessKind::Load;
    let mut cfg = Config::default();
    cfg.guest.huge_pages = vmemsim::config::HugePages::Huge2M;
    for (pages, faults) in [(256, 2), (512, 1)] {
        let trace = [
            mmap(1, A, pages, 3),
            acc(1, Load, A),
            acc(1, Load, A + 8 * PAGE),
        ];
        for (kind, s) in every_mode_with(&cfg, &trace) {
            assert_eq!(
                (s.guest_page_faults, s.demand_faults),
                (faults, faults),
                "{kind:?}: {pages} pages"
            );
        }
    }
}

/// munmap of the second half of a 2 MiB guest page splits it and keeps
/// the first half mapped: loads there after the munmap take no fault.
/// The split flushes the process's TLB entries (1), and so does the
/// munmap of 256 pages (more than the flush ceiling: 1, no INVLPG).
/// Guest PTE stores: the demand fault's 3 (PML4E, PDPTE, the 2 MiB PDE),
/// the split's 512 + 1 (the new PT, then the PDE pointing at it) and the
/// munmap's 256: 772. (Kills `for_leaves`' `base < s` as `>`, which
/// unmapped the whole huge page: the load faulted; shard 5; and
/// `split_huge`'s `tlb_flushes += 1` as `*=`: 1 flush; shard 3.)
#[test]
fn munmap_of_half_a_huge_page_keeps_the_other_half() {
    use AccessKind::Load;
    let mut cfg = Config::default();
    cfg.guest.huge_pages = vmemsim::config::HugePages::Huge2M;
    let half = 256 * PAGE;
    let trace = [
        mmap(1, A, 512, 3),
        acc(1, Load, A + 8 * PAGE),
        ev(
            1,
            ProcEvent::Munmap {
                addr: A + half,
                len: half,
            },
        ),
        acc(1, Load, A),
        acc(1, Load, A + half - PAGE),
    ];
    for (kind, s) in every_mode_with(&cfg, &trace) {
        let got = (
            s.guest_page_faults,
            s.tlb_flushes,
            s.invlpgs,
            s.guest_pte_writes,
        );
        assert_eq!(
            got,
            (1, 2, 0, 772),
            "{kind:?}: (faults, flushes, INVLPGs, PTE stores)"
        );
    }
}
