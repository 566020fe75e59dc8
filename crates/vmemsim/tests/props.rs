//! Property tests: random map / unmap / protect / fork / exit / access
//! sequences resolve identically in every mode and match the oracle.

mod common;

use proptest::prelude::*;
use vmemsim::addr::PageSize;
use vmemsim::config::{Config, HugePages, ShadowConfig};
use vmemsim_trace::{AccessKind, ProcEvent, Record};

use common::{acc, all_modes_agree, ev};

const BASE: u64 = 0x7f00_0000_0000;
const PAGES: u64 = 2048; // 8 MiB window: 2 MiB pages fit

#[derive(Clone, Debug)]
enum Op {
    Access {
        pid: u32,
        page: u64,
        kind: u8,
    },
    Map {
        pid: u32,
        page: u64,
        pages: u64,
        prot: u32,
    },
    Unmap {
        pid: u32,
        page: u64,
        pages: u64,
    },
    Protect {
        pid: u32,
        page: u64,
        pages: u64,
        prot: u32,
    },
    Fork {
        pid: u32,
    },
    Exit {
        pid: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let pid = 1u32..4;
    prop_oneof![
        6 => (pid.clone(), 0..PAGES, 0u8..4).prop_map(|(pid, page, kind)| Op::Access { pid, page, kind }),
        1 => (pid.clone(), 0..PAGES, 1u64..600, 1u32..8).prop_map(|(pid, page, pages, prot)| Op::Map { pid, page, pages, prot }),
        1 => (pid.clone(), 0..PAGES, 1u64..600).prop_map(|(pid, page, pages)| Op::Unmap { pid, page, pages }),
        1 => (pid.clone(), 0..PAGES, 1u64..64, 1u32..8).prop_map(|(pid, page, pages, prot)| Op::Protect { pid, page, pages, prot }),
        1 => pid.clone().prop_map(|pid| Op::Fork { pid }),
        1 => pid.prop_map(|pid| Op::Exit { pid }),
    ]
}

/// Turn ops into records; fork children get fresh pids that later ops address.
fn records(ops: &[Op]) -> Vec<Record> {
    records_at(ops, 1)
}

/// [`records`] with every page number and count scaled by `stride`: with
/// 128 the window is 1 GiB (1 GiB-aligned at `BASE`), so a guest with
/// 1 GiB pages maps it with one until a map, unmap or protect splits it.
fn records_at(ops: &[Op], stride: u64) -> Vec<Record> {
    let page_bytes = 4096 * stride;
    let mut next = 10u32;
    let mut alias = std::collections::HashMap::new();
    let mut out = vec![ev(
        1,
        ProcEvent::Mmap {
            addr: BASE,
            len: PAGES * page_bytes,
            prot: 3,
            flags: 0x22,
            file: None,
        },
    )];
    let real = |p: u32, alias: &std::collections::HashMap<u32, u32>| *alias.get(&p).unwrap_or(&p);
    for o in ops {
        match *o {
            Op::Access { pid, page, kind } => {
                let kind = AccessKind::from_u8(kind).unwrap();
                out.push(acc(real(pid, &alias), kind, BASE + page * page_bytes + 8));
            }
            Op::Map {
                pid,
                page,
                pages,
                prot,
            } => out.push(ev(
                real(pid, &alias),
                ProcEvent::Mmap {
                    addr: BASE + page * page_bytes,
                    len: pages * page_bytes,
                    prot,
                    flags: 0x22,
                    file: None,
                },
            )),
            Op::Unmap { pid, page, pages } => out.push(ev(
                real(pid, &alias),
                ProcEvent::Munmap {
                    addr: BASE + page * page_bytes,
                    len: pages * page_bytes,
                },
            )),
            Op::Protect {
                pid,
                page,
                pages,
                prot,
            } => out.push(ev(
                real(pid, &alias),
                ProcEvent::Mprotect {
                    addr: BASE + page * page_bytes,
                    len: pages * page_bytes,
                    prot,
                },
            )),
            Op::Fork { pid } => {
                let child = next;
                next += 1;
                out.push(ev(real(pid, &alias), ProcEvent::Fork { child }));
                // The child takes over a pid slot other than its parent's.
                alias.insert(pid % 3 + 1, child);
            }
            Op::Exit { pid } => {
                out.push(ev(real(pid, &alias), ProcEvent::Exit { code: 0 }));
                alias.remove(&pid);
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_mode_matches_the_oracle(ops in prop::collection::vec(op(), 1..120), huge in any::<bool>(), pcid in any::<bool>(), shadow in shadow_config()) {
        modes_agree_on_with(&ops, huge, pcid, shadow);
    }

    #[test]
    fn every_mode_matches_the_oracle_with_5_levels(
        ops in prop::collection::vec(op(), 1..80),
        huge in any::<bool>(),
        levels in prop::sample::select(vec![(5u8, 5u8), (5, 4), (4, 5)]),
    ) {
        modes_agree_at(&ops, huge.into(), true, levels, PageSize::Size4K, ShadowConfig::default());
    }

    #[test]
    fn every_mode_matches_the_oracle_over_huge_host_pages(
        ops in prop::collection::vec(op(), 1..80),
        huge in any::<bool>(),
        pcid in any::<bool>(),
        host in prop::sample::select(vec![PageSize::Size2M, PageSize::Size1G]),
        levels in prop::sample::select(vec![(4u8, 4u8), (5, 5)]),
        shadow in shadow_config(),
    ) {
        modes_agree_at(&ops, huge.into(), pcid, levels, host, shadow);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Under constant guest reclaim (the watermarks 40 frames below all
    /// of a 64 MiB guest's usable memory), swap-outs, major faults and
    /// accessed-bit clearing interleave with every other operation: every
    /// mode still resolves every access alike and sees the same swap.
    #[test]
    fn every_mode_matches_the_oracle_under_guest_reclaim(ops in prop::collection::vec(op(), 1..120), huge in any::<bool>(), pcid in any::<bool>()) {
        all_modes_agree(&reclaim_config(huge, pcid), &records(&ops));
    }
}

/// A 64 MiB guest with 64 MiB of swap whose watermarks lie 40 and 30
/// frames below its usable memory (15872 frames), so reclaim runs all the
/// time.
fn reclaim_config(huge_pages: bool, pcid: bool) -> Config {
    let mut cfg = Config::default();
    cfg.guest.huge_pages = huge_pages.into();
    cfg.guest.pcid = pcid;
    cfg.guest.mem_mib = 64;
    cfg.guest.swap_mib = 64;
    cfg.guest.watermark_low_pages = 15872 - 40;
    cfg.guest.watermark_high_pages = 15872 - 30;
    cfg
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A software-managed TLB (`cpu.tlb = "software"`: only `swtlb-native`
    /// and `swtlb-vmm` run) with tiny TLBs, so that entries are evicted all
    /// the time and the VMM refills from its copy of the guest's TLB
    /// (guest 2 MiB pages over 4 KiB host pages), over 4 KiB and 2 MiB host
    /// pages: both modes match the oracle and each other.
    #[test]
    fn software_tlb_modes_match_the_oracle(
        ops in prop::collection::vec(op(), 1..120),
        huge in any::<bool>(),
        pcid in any::<bool>(),
        host in prop::sample::select(vec![PageSize::Size4K, PageSize::Size2M]),
    ) {
        let mut cfg = Config::default();
        cfg.cpu.tlb = vmemsim::config::TlbManagement::Software;
        cfg.guest.huge_pages = huge.into();
        cfg.guest.pcid = pcid;
        cfg.guest.mem_mib = 256;
        cfg.host.page_size = host;
        let tiny = vmemsim::config::Geometry::new(4, 2);
        cfg.tlb.l1d_4k = tiny;
        cfg.tlb.l1d_2m = tiny;
        cfg.tlb.stlb = vmemsim::config::Geometry::new(8, 2);
        let runs = common::all_modes(&cfg, &records(&ops));
        let names: Vec<_> = runs.iter().map(|r| r.name).collect();
        prop_assert_eq!(names, vec!["swtlb-native", "swtlb-vmm"]);
    }
}

/// `[shadow]` settings: unsync and write flooding each on or off, flood
/// thresholds from 1 (every emulated store zaps) to 3 (KVM's).
fn shadow_config() -> impl Strategy<Value = ShadowConfig> {
    (any::<bool>(), any::<bool>(), 1u32..4).prop_map(|(unsync, write_flood, t)| ShadowConfig {
        unsync,
        write_flood,
        write_flood_threshold: t,
    })
}

/// Every mode matches the oracle on `ops` in a 256 MiB guest (default `[shadow]`).
fn modes_agree_on(ops: &[Op], huge_pages: bool, pcid: bool) {
    modes_agree_on_with(ops, huge_pages, pcid, ShadowConfig::default());
}

/// [`modes_agree_on`] with `[shadow]` settings `shadow`.
fn modes_agree_on_with(ops: &[Op], huge_pages: bool, pcid: bool, shadow: ShadowConfig) {
    modes_agree_at(
        ops,
        huge_pages.into(),
        pcid,
        (4, 4),
        PageSize::Size4K,
        shadow,
    );
}

/// [`modes_agree_on_with`] with a guest of `levels.0` paging levels over an
/// EPT of `levels.1` and host pages of `host`; a 5-level guest's window
/// lies above 2^47 (PML5 index 1), where only 5-level paging has user space.
fn modes_agree_at(
    ops: &[Op],
    huge_pages: HugePages,
    pcid: bool,
    levels: (u8, u8),
    host: PageSize,
    shadow: ShadowConfig,
) {
    let mut cfg = Config {
        shadow,
        ..Config::default()
    };
    cfg.guest.huge_pages = huge_pages;
    cfg.guest.pcid = pcid;
    // The smallest guest the host page size allows (a whole number of host pages).
    cfg.guest.mem_mib = 256.max(host.bytes() >> 20);
    cfg.host.page_size = host;
    cfg.guest.levels = levels.0;
    cfg.host.ept_levels = levels.1;
    let stride = if huge_pages == HugePages::Huge1G {
        // Room for a few 1 GiB pages and their copies on write.
        cfg.guest.mem_mib = cfg.guest.mem_mib.max(4096);
        128
    } else {
        1
    };
    let mut recs = records_at(ops, stride);
    if levels.0 == 5 {
        for r in &mut recs {
            match r {
                Record::Access(a) => a.addr += BASE_5 - BASE,
                Record::Event(e) => match &mut e.kind {
                    ProcEvent::Mmap { addr, .. }
                    | ProcEvent::Munmap { addr, .. }
                    | ProcEvent::Mprotect { addr, .. } => *addr += BASE_5 - BASE,
                    _ => {}
                },
            }
        }
    }
    all_modes_agree(&cfg, &recs);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// Guest 1 GiB pages (a 1 GiB window) over every host page size, 4 and
    /// 5 levels: 1 GiB leaves, their splits to 2 MiB and 4 KiB by map,
    /// unmap and protect, and their copy on write after a fork. Few cases:
    /// each touch of a 1 GiB page touches 262144 frames in every mode.
    #[test]
    fn every_mode_matches_the_oracle_with_1g_guest_pages(
        ops in prop::collection::vec(op(), 1..40),
        pcid in any::<bool>(),
        host in prop::sample::select(vec![PageSize::Size4K, PageSize::Size2M, PageSize::Size1G]),
        levels in prop::sample::select(vec![(4u8, 4u8), (5, 5), (4, 5)]),
    ) {
        modes_agree_at(&ops, HugePages::Huge1G, pcid, levels, host, ShadowConfig::default());
    }
}

/// Base of the window of a 5-level guest: PML5 index 1, above 2^47.
const BASE_5: u64 = 0x0081_2300_0000_0000;

/// A sequence proptest found: a process exits, its freed PML4 frame is reused
/// as a lower-level table of a forked child.
#[test]
fn regression_freed_root_reused_as_lower_table() {
    let ops = [
        Op::Exit { pid: 1 },
        Op::Access {
            pid: 1,
            page: 3,
            kind: 0,
        },
        Op::Fork { pid: 3 },
        Op::Access {
            pid: 1,
            page: 0,
            kind: 0,
        },
        Op::Exit { pid: 1 },
        Op::Exit { pid: 2 },
        Op::Map {
            pid: 1,
            page: 0,
            pages: 4,
            prot: 1,
        },
        Op::Fork { pid: 1 },
        Op::Access {
            pid: 2,
            page: 0,
            kind: 0,
        },
    ];
    modes_agree_on(&ops, false, false);
}

/// A sequence proptest found: mprotect splits a copy-on-write-shared 2 MiB
/// page in a forked child (direct paging once faulted where others did not).
#[test]
fn regression_split_of_shared_huge_page() {
    let ops = [
        Op::Access {
            pid: 1,
            page: 1536,
            kind: 0,
        },
        Op::Fork { pid: 1 },
        Op::Access {
            pid: 1,
            page: 0,
            kind: 0,
        },
        Op::Access {
            pid: 2,
            page: 1536,
            kind: 0,
        },
        Op::Protect {
            pid: 2,
            page: 1525,
            pages: 12,
            prot: 4,
        },
        Op::Access {
            pid: 2,
            page: 1537,
            kind: 0,
        },
    ];
    modes_agree_on(&ops, true, false);
}

/// A case proptest found (2026-12-01): loads, maps, unmaps, forks and
/// exits with 2 MiB pages, no PCIDs, under guest reclaim. Shadow resolved
/// record 43 (a load of pid 13) through a stale shadow leaf. Guest PT
/// 0x20f (a frame of a split 2 MiB page, reused as a table) had an unsync
/// shadow page that had left the unsync list when it was unlinked; the
/// fill of record 40 linked it again (resynced, still unsync) but did not
/// put it back on the list, so reclaim's unprotected stores to the PT (A
/// cleared, then a swap entry, in another process's context, so no INVLPG)
/// were never resynced at pid 13's CR3 load. Fixed: a relinked unsync page
/// goes back on the list (KVM's `kvm_mmu_mark_parents_unsync`).
#[test]
fn reclaim_after_fork_and_partial_unmap_of_a_2m_page() {
    let ops = vec![
        Op::Access {
            pid: 3,
            page: 512,
            kind: 0,
        },
        Op::Access {
            pid: 1,
            page: 512,
            kind: 0,
        },
        Op::Access {
            pid: 2,
            page: 512,
            kind: 0,
        },
        Op::Access {
            pid: 2,
            page: 1024,
            kind: 0,
        },
        Op::Access {
            pid: 3,
            page: 1024,
            kind: 0,
        },
        Op::Access {
            pid: 2,
            page: 0,
            kind: 0,
        },
        Op::Access {
            pid: 2,
            page: 1536,
            kind: 0,
        },
        Op::Unmap {
            pid: 1,
            page: 301,
            pages: 530,
        },
        Op::Access {
            pid: 1,
            page: 512,
            kind: 0,
        },
        Op::Access {
            pid: 2,
            page: 0,
            kind: 0,
        },
        Op::Exit { pid: 3 },
        Op::Fork { pid: 1 },
        Op::Exit { pid: 2 },
        Op::Unmap {
            pid: 3,
            page: 0,
            pages: 1,
        },
        Op::Fork { pid: 1 },
        Op::Map {
            pid: 1,
            page: 0,
            pages: 1,
            prot: 1,
        },
        Op::Access {
            pid: 2,
            page: 513,
            kind: 0,
        },
        Op::Exit { pid: 1 },
        Op::Access {
            pid: 3,
            page: 0,
            kind: 0,
        },
        Op::Access {
            pid: 1,
            page: 512,
            kind: 0,
        },
        Op::Access {
            pid: 1,
            page: 0,
            kind: 0,
        },
        Op::Access {
            pid: 2,
            page: 1536,
            kind: 0,
        },
        Op::Exit { pid: 3 },
        Op::Access {
            pid: 2,
            page: 0,
            kind: 0,
        },
        Op::Access {
            pid: 1,
            page: 0,
            kind: 0,
        },
        Op::Exit { pid: 1 },
        Op::Map {
            pid: 2,
            page: 1503,
            pages: 545,
            prot: 1,
        },
        Op::Access {
            pid: 2,
            page: 1024,
            kind: 0,
        },
        Op::Access {
            pid: 1,
            page: 0,
            kind: 0,
        },
        Op::Fork { pid: 1 },
        Op::Exit { pid: 2 },
        Op::Access {
            pid: 2,
            page: 1539,
            kind: 3,
        },
        Op::Access {
            pid: 3,
            page: 17,
            kind: 1,
        },
        Op::Access {
            pid: 3,
            page: 2032,
            kind: 0,
        },
        Op::Access {
            pid: 3,
            page: 1794,
            kind: 1,
        },
        Op::Access {
            pid: 1,
            page: 1008,
            kind: 1,
        },
        Op::Fork { pid: 1 },
        Op::Access {
            pid: 1,
            page: 1683,
            kind: 1,
        },
        Op::Access {
            pid: 3,
            page: 615,
            kind: 0,
        },
        Op::Access {
            pid: 2,
            page: 1717,
            kind: 0,
        },
        Op::Access {
            pid: 3,
            page: 1128,
            kind: 0,
        },
        Op::Access {
            pid: 1,
            page: 1808,
            kind: 2,
        },
        Op::Access {
            pid: 2,
            page: 1717,
            kind: 1,
        },
    ];
    all_modes_agree(&reclaim_config(true, false), &records(&ops));
}
