//! Every mode resolves every access to the same gPA (and hPA) as an
//! uncached software walk, with the same guest faults.

mod common;

use vmemsim::config::{Config, HugePages};
use vmemsim::hv::selective::Paging;
use vmemsim::stats::ExitReason;
use vmemsim::workload::{WorkloadKind, WorkloadSpec};
use vmemsim_trace::{AccessKind, ProcEvent};

use common::{acc, all_modes_agree, collect, ev};

fn small(kind: WorkloadKind) -> Vec<vmemsim_trace::Record> {
    let spec = WorkloadSpec {
        footprint_mib: 8,
        accesses: 60_000,
        ..WorkloadSpec::default_for(kind)
    };
    collect(&mut spec.source())
}

#[test]
fn builtin_workloads_agree_in_every_mode() {
    for kind in WorkloadKind::ALL {
        let [n, e, s] = all_modes_agree(&Config::default(), &small(kind));
        assert!(n.guest_page_faults > 0, "{kind:?}");
        assert_eq!(n.total_exits(), 0, "native never exits");
        // Nested: only EPT violations exit.
        assert_eq!(
            e.total_exits(),
            e.exits_for(ExitReason::EptViolation),
            "{kind:?}"
        );
        assert!(
            s.exits_for(ExitReason::Cr3Write) > 0,
            "{kind:?}: CR3 writes exit in shadow"
        );
        assert_eq!(
            s.exits_for(ExitReason::GuestFault),
            n.guest_page_faults,
            "{kind:?}: every guest fault is intercepted"
        );
    }
}

#[test]
fn software_tlb_modes_agree_on_builtins() {
    // `cpu.tlb = "software"`: only the swtlb modes run, checked against
    // the oracle and each other, with 4 KiB and 2 MiB guest pages over 4
    // KiB and 2 MiB host pages and 5-level tables.
    use vmemsim::addr::PageSize;
    for (huge, host, levels) in [
        (false, PageSize::Size4K, 4),
        (true, PageSize::Size4K, 4),
        (true, PageSize::Size2M, 4),
        (false, PageSize::Size4K, 5),
    ] {
        let mut cfg = Config::default();
        cfg.cpu.tlb = vmemsim::config::TlbManagement::Software;
        cfg.guest.huge_pages = huge.into();
        cfg.host.page_size = host;
        cfg.guest.levels = levels;
        for kind in WorkloadKind::ALL {
            let runs = common::all_modes(&cfg, &small(kind));
            let [n, v] = [&runs[0], &runs[1]];
            assert_eq!((n.name, v.name), ("swtlb-native", "swtlb-vmm"));
            let (n, v) = (&n.stats, &v.stats);
            assert_eq!(n.total_exits(), 0, "{kind:?}: no VMM natively");
            assert_eq!(n.walks + v.walks, 0, "{kind:?}: no hardware walker");
            // Every refill the guest's handler runs ends in a TLB write or
            // a guest fault; under the VMM the write traps.
            assert_eq!(n.tlb_refills, n.tlb_refill_exceptions, "{kind:?}");
            assert_eq!(
                v.exits_for(ExitReason::TlbWrite),
                v.tlb_writes - v.vmm_tlb_refills,
                "{kind:?}"
            );
            assert_eq!(
                v.exits_for(ExitReason::PtWrite),
                0,
                "{kind:?}: PTE stores never trap"
            );
            assert_eq!(n.guest_page_faults, v.guest_page_faults);
        }
    }
}

#[test]
fn builtin_workloads_agree_with_5_level_guests_and_epts() {
    for (guest, ept) in [(5, 5), (5, 4), (4, 5)] {
        let mut cfg = Config::default();
        cfg.guest.levels = guest;
        cfg.host.ept_levels = ept;
        cfg.guest.huge_pages = (guest == ept).into();
        for kind in WorkloadKind::ALL {
            let [n, e, _] = all_modes_agree(&cfg, &small(kind));
            // The same guest behaviour whatever the levels; walks get longer.
            let [n4, e4, _] = all_modes_agree(
                &Config {
                    guest: vmemsim::config::GuestConfig {
                        huge_pages: cfg.guest.huge_pages,
                        ..Default::default()
                    },
                    ..Config::default()
                },
                &small(kind),
            );
            assert_eq!(n.guest_page_faults, n4.guest_page_faults, "{kind:?}");
            assert!(e.walk_refs() >= e4.walk_refs(), "{kind:?} {guest}/{ept}");
        }
    }
}

#[test]
fn builtin_workloads_agree_over_huge_host_pages() {
    use vmemsim::addr::PageSize;
    for host in [PageSize::Size2M, PageSize::Size1G] {
        for (huge, levels) in [(false, 4), (true, 4), (true, 5)] {
            let mut cfg = Config::default();
            cfg.host.page_size = host;
            cfg.guest.huge_pages = huge.into();
            cfg.guest.levels = levels;
            cfg.host.ept_levels = levels;
            for kind in WorkloadKind::ALL {
                let [n, e, s] = all_modes_agree(&cfg, &small(kind));
                assert_eq!(e.host_frames_backed % host.frames(), 0, "{kind:?} {host:?}");
                assert_eq!(e.host_frames_backed, s.host_frames_backed, "{kind:?}");
                assert!(e.guest_frames_touched <= e.host_frames_backed);
                assert!(n.guest_page_faults > 0);
            }
        }
    }
}

#[test]
fn builtin_workloads_agree_with_2m_pages_and_without_pcid() {
    let mut cfg = Config::default();
    cfg.guest.huge_pages = HugePages::Huge2M;
    cfg.guest.pcid = false;
    for kind in WorkloadKind::ALL {
        all_modes_agree(&cfg, &small(kind));
    }
}

#[test]
fn builtin_workloads_agree_without_unsync_and_with_eager_flood_zaps() {
    // KVM's mechanisms off, then a flood at every emulated store.
    let mut cfg = Config {
        shadow: vmemsim::config::ShadowConfig::strict(),
        ..Config::default()
    };
    for kind in [WorkloadKind::Procs, WorkloadKind::Phases] {
        all_modes_agree(&cfg, &small(kind));
    }
    cfg.shadow.write_flood = true;
    cfg.shadow.write_flood_threshold = 1;
    let [_, _, s] = all_modes_agree(&cfg, &small(WorkloadKind::Procs));
    assert!(s.shadow_flood_zaps > 0 && s.shadow_unsyncs == 0);
}

#[test]
fn pt_writes_exit_in_shadow_only() {
    let [_, e, s] = all_modes_agree(&Config::default(), &small(WorkloadKind::Procs));
    assert_eq!(e.exits_for(ExitReason::PtWrite), 0);
    assert_eq!(e.exits_for(ExitReason::Cr3Write), 0);
    assert!(s.exits_for(ExitReason::PtWrite) > 0);
    assert!(s.guest_pte_writes > 0);
}

const A: u64 = 0x7f00_0000_0000;

#[test]
fn cow_fork_and_munmap_are_the_same_in_every_mode() {
    use AccessKind::*;
    let recs = vec![
        ev(
            1,
            ProcEvent::Mmap {
                addr: A,
                len: 1 << 20,
                prot: 3,
                flags: 0x22,
                file: None,
            },
        ),
        acc(1, Store, A),
        acc(1, Store, A + 0x1000),
        acc(1, Load, A + 0x2000),
        ev(1, ProcEvent::Fork { child: 2 }),
        acc(2, Load, A),           // shared, read-only
        acc(2, Store, A),          // COW: child gets a copy
        acc(1, Load, A),           // parent still sees its frame
        acc(1, Store, A + 0x1000), // COW in the parent (refcount 2)
        acc(2, Store, A + 0x1000), // now sole owner: made writable in place
        ev(2, ProcEvent::Exit { code: 0 }),
        acc(1, Store, A), // sole owner again after the child exits
        ev(
            1,
            ProcEvent::Munmap {
                addr: A,
                len: 0x2000,
            },
        ),
        acc(1, Load, A), // fresh demand-zero page
        ev(
            1,
            ProcEvent::Mprotect {
                addr: A + 0x2000,
                len: 0x1000,
                prot: 1,
            },
        ),
        acc(1, Load, A + 0x2000),
        acc(1, Store, A + 0x2000), // protection upgrade: the trace wrote it
    ];
    let [n, _, _] = all_modes_agree(&Config::default(), &recs);
    // Write faults on write-protected pages: child A (copy), parent A+1 (copy),
    // child A+1 (sole owner: made writable), parent A after the child exited
    // (sole owner), and A+2 after mprotect(PROT_READ).
    assert_eq!(n.cow_faults, 5);
    assert_eq!(n.frames_copied, 2);
    assert_eq!(n.forks, 1);
    assert_eq!(n.protection_upgrades, 1);
}

#[test]
fn shadow_sees_a_remapped_page_after_invlpg() {
    use AccessKind::*;
    // The same gVA is unmapped (INVLPG) and faulted in again: shadow must
    // follow the guest to the new frame, not keep the stale shadow entry.
    let recs = vec![
        ev(
            1,
            ProcEvent::Mmap {
                addr: A,
                len: 0x10000,
                prot: 3,
                flags: 0x22,
                file: None,
            },
        ),
        acc(1, Store, A),
        acc(1, Store, A + 0x1000),
        ev(
            1,
            ProcEvent::Munmap {
                addr: A,
                len: 0x1000,
            },
        ),
        acc(1, Store, A + 0x3000), // takes the freed frame
        ev(
            1,
            ProcEvent::Mmap {
                addr: A,
                len: 0x1000,
                prot: 3,
                flags: 0x22,
                file: None,
            },
        ),
        acc(1, Load, A),
    ];
    let (res, s) = common::run_checked(vmemsim::hv::Shadow::new(), &Config::default(), &recs);
    assert_ne!(res[0].0, res[3].0, "the remapped gVA gets a new frame");
    assert_eq!(
        res[0].0, res[2].0,
        "the freed frame is reused by the next allocation"
    );
    assert!(s.exits_for(ExitReason::Invlpg) >= 1);
    all_modes_agree(&Config::default(), &recs);
}

#[test]
fn switching_modes_switch_on_phases_and_stay_exact() {
    let spec = WorkloadSpec {
        footprint_mib: 8,
        accesses: 120_000,
        ..WorkloadSpec::default_for(WorkloadKind::Phases)
    };
    let runs = common::all_modes(&Config::default(), &collect(&mut spec.source()));
    for m in &runs {
        let Some(r) = &m.report else { continue };
        // Ours weighs the refill cost and may rightly stay put on a trace
        // this short; it is checked on the full-size workload in `compare`.
        if m.name != "selective" {
            assert!(
                r.switches > 0,
                "{}: no switch on the phases workload",
                m.name
            );
        }
        assert_eq!(
            r.instructions_nested + r.instructions_shadow,
            m.stats.instructions,
            "{}",
            m.name
        );
        assert_eq!(
            r.intervals.iter().map(|i| i.instructions).sum::<u64>(),
            m.stats.instructions,
            "{}",
            m.name
        );
        assert_eq!(
            r.intervals.iter().map(|i| i.guest_faults).sum::<u64>(),
            m.stats.guest_page_faults,
            "{}",
            m.name
        );
        // Each paging's cycles are the sum of its periods' cycles.
        for (paging, total) in [
            (Paging::Nested, r.cycles_nested),
            (Paging::Shadow, r.cycles_shadow),
        ] {
            let periods = r.intervals.iter().filter(|i| i.mode == paging);
            assert_eq!(
                periods.map(|i| i.cycles).sum::<u64>(),
                total,
                "{} {paging:?}",
                m.name
            );
        }
        assert!(r.cycles_nested + r.cycles_shadow > 0, "{}", m.name);
    }
    let names: Vec<_> = runs
        .iter()
        .filter(|m| m.report.is_some())
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["selective-w11", "selective", "selective-alternate"]);
}

#[test]
fn direct_mode_batches_validated_updates() {
    let [n, ..] = all_modes_agree(&Config::default(), &small(WorkloadKind::Procs));
    let (_, d) = common::run_checked(
        vmemsim::hv::Direct::new(&Config::default().pv, Config::default().guest.mem_mib),
        &Config::default(),
        &small(WorkloadKind::Procs),
    );
    assert_eq!(
        d.pv_pte_updates, n.guest_pte_writes,
        "every PTE store is one validated update"
    );
    assert_eq!(d.exits_for(ExitReason::PtWrite), 0);
    assert_eq!(d.exits_for(ExitReason::ShadowFault), 0);
    assert_eq!(
        d.exits_for(ExitReason::GuestFault),
        n.guest_page_faults,
        "#PF bounces through the hypervisor"
    );
    assert!(d.exits_for(ExitReason::Hypercall) > 0);
    assert!(
        d.exits_for(ExitReason::Hypercall) < d.pv_pte_updates,
        "updates are batched"
    );
}

/// A process with 2 GiB of anonymous memory (two 1 GiB guest pages):
/// stores in both gigabytes, a fork whose stores copy a gigabyte on write,
/// an munmap and an mprotect that split a gigabyte (to 2 MiB, then 4 KiB
/// pages), and accesses after each.
fn giant_trace(base: u64) -> Vec<vmemsim_trace::Record> {
    const G: u64 = 1 << 30;
    let mmap = |addr, len| ProcEvent::Mmap {
        addr,
        len,
        prot: 3,
        flags: 0x22,
        file: None,
    };
    let mut r = vec![ev(1, mmap(base, 2 * G))];
    for off in [0, 8 << 20, G + 4096, G + (700 << 20)] {
        r.push(acc(1, AccessKind::Store, base + off));
    }
    r.push(ev(1, ProcEvent::Fork { child: 2 }));
    r.push(acc(2, AccessKind::Store, base + G + 64));
    r.push(acc(2, AccessKind::Load, base + 8));
    r.push(acc(1, AccessKind::Load, base + G + 64));
    r.push(ev(
        1,
        ProcEvent::Munmap {
            addr: base + (300 << 20),
            len: 4096,
        },
    ));
    r.push(ev(
        2,
        ProcEvent::Mprotect {
            addr: base + G + (2 << 20),
            len: 2 << 20,
            prot: 1,
        },
    ));
    for (pid, off) in [
        (1, 0),
        (1, 301 << 20),
        (1, 299 << 20),
        (2, G + (3 << 20)),
        (2, G + 4096),
    ] {
        r.push(acc(pid, AccessKind::Load, base + off));
        r.push(acc(pid, AccessKind::Store, base + off + 8));
    }
    r.push(ev(2, ProcEvent::Exit { code: 0 }));
    r.push(acc(1, AccessKind::Store, base + G + (900 << 20)));
    r
}

#[test]
fn one_gib_guest_pages_agree_in_every_mode() {
    use vmemsim::addr::PageSize;
    for host in [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G] {
        for levels in [4u8, 5] {
            let mut cfg = Config::default();
            cfg.guest.huge_pages = HugePages::Huge1G;
            cfg.guest.mem_mib = 6144;
            cfg.guest.levels = levels;
            cfg.host.ept_levels = levels;
            cfg.host.page_size = host;
            let base = if levels == 5 {
                1 << 50
            } else {
                0x7f00_0000_0000
            };
            let [n, e, s] = all_modes_agree(&cfg, &giant_trace(base));
            // Copies on write: the child's store in the second gigabyte
            // copies all of it (262144 frames); the munmap split the
            // parent's first gigabyte, still shared, into 2 MiB pages and
            // the one at 300 MiB into 4 KiB pages, so the parent's stores
            // at 0 and 299 MiB copy a 2 MiB page each (512 + 512) and at
            // 301 MiB one 4 KiB page; the child's own gigabyte, split by
            // its mprotect, and the parent's second gigabyte after the
            // child's exit are no longer shared: 262144 + 1025.
            assert_eq!(n.frames_copied, 262144 + 1025, "{host:?} {levels}");
            assert_eq!(e.frames_copied, n.frames_copied);
            assert_eq!(s.guest_page_faults, n.guest_page_faults);
        }
    }
}
