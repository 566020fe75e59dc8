//! Binary translation vs trap-and-emulate \[AA06\]: `cpu.virtualization =
//! "bt"` turns shadow paging's VM exits into traps into the VMM and, once
//! adapted, call-outs; it is a clear config error with the modes that need
//! VT-x; and it changes cost, never meaning (the oracle, every mode it runs).

mod common;

use std::path::PathBuf;

use vmemsim::config::{Config, Virtualization};
use vmemsim::cost::CostModel;
use vmemsim::sched::open_trace;
use vmemsim::sim::ModeKind;
use vmemsim::stats::{ExitReason, Stats};
use vmemsim::workload::{WorkloadKind, WorkloadSpec};
use vmemsim_trace::{AccessKind, ProcEvent};

use common::{acc, all_modes, checked_stats, collect, ev, fork_cow_trace};

const A: u64 = 0x7f00_0000_0000;

fn bt() -> Config {
    let mut c = Config::default();
    c.cpu.virtualization = Virtualization::Bt;
    c
}

#[test]
fn shadow_under_bt_traps_then_calls_out_and_pays_system_calls() {
    // Under VT-x the default shadow takes, on this trace, the exits of
    // tests/exits.rs (`unsync_pt_exits_once...`): shadow_fault 17,
    // guest_fault 4, pt_write 1, cr3_write 3, invlpg 5. Under BT the same
    // interventions happen without a VM exit: faults always trap (17 + 4),
    // and each instruction traps `adapt_threshold` (2) times, then is a
    // call-out: pt_write 1 trap; cr3_write 2 traps + 1 call-out; invlpg 2
    // traps + 3 call-outs. The trace's 4 system calls (mmap, fork, munmap,
    // exit) each pay BT's extra.
    let t = fork_cow_trace(A);
    let vtx = checked_stats(ModeKind::Shadow, &Config::default(), &t);
    assert_eq!(vtx.vm_exits, [0, 17, 4, 1, 3, 5, 0]);
    let cfg = bt();
    let s = checked_stats(ModeKind::Shadow, &cfg, &t);
    assert_eq!(s.vm_exits, [0; 7], "no VM exit under binary translation");
    assert_eq!(s.bt_traps, [0, 17, 4, 1, 2, 2, 0]);
    assert_eq!(s.bt_callouts, [0, 0, 0, 0, 1, 3, 0]);
    assert_eq!((s.syscalls, s.bt_syscalls), (4, 4));
    assert_eq!(vtx.syscalls, 4);
    assert_eq!(vtx.bt_syscalls, 0);
    // Same guest behaviour, same shadow work.
    assert_eq!(
        (s.guest_page_faults, s.shadow_fills, s.shadow_resyncs),
        (vtx.guest_page_faults, vtx.shadow_fills, vtx.shadow_resyncs)
    );
    // The hypervisor's cycles, AA06's costs: a trap 2834 + the handler
    // (fill 2500, injection 1000, emulation 3000, CR3 500, INVLPG 300), a
    // call-out 390 (+ the CR3 / INVLPG handler), a system call 2066, and
    // the one resync 2500.
    let m = CostModel::new(&cfg.cost, &cfg.pt_cache);
    let want = 17 * (2834 + 2500)
        + 4 * (2834 + 1000)
        + (2834 + 3000)
        + 2 * (2834 + 500)
        + 2 * (2834 + 300)
        + (390 + 500)
        + 3 * (390 + 300)
        + 4 * 2066
        + 2500;
    assert_eq!(s.shadow_resyncs, 1);
    assert_eq!(m.price(&s).hypervisor, want);
}

#[test]
fn an_adapted_pte_store_costs_a_call_out_not_a_trap() {
    // Unsync off: the fork's stores to the parent's shadowed PT are
    // emulated (tests/exits.rs: pt_write 6 under VT-x). Threshold 2: 2
    // traps, 4 call-outs of 390 cycles each in all (no emulation).
    let mut cfg = bt();
    cfg.shadow.unsync = false;
    let s = checked_stats(ModeKind::Shadow, &cfg, &fork_cow_trace(A));
    let pt = ExitReason::PtWrite as usize;
    assert_eq!((s.bt_traps[pt], s.bt_callouts[pt]), (2, 4));
    let m = CostModel::new(&cfg.cost, &cfg.pt_cache);
    let mut one = Stats::default();
    one.bt_callouts[pt] = 1;
    assert_eq!(m.price(&one).hypervisor, 390);
    // Threshold 0: every instruction is translated from the start.
    cfg.cpu.adapt_threshold = 0;
    let s = checked_stats(ModeKind::Shadow, &cfg, &fork_cow_trace(A));
    assert_eq!((s.bt_traps[pt], s.bt_callouts[pt]), (0, 6));
}

#[test]
fn bt_with_nested_paging_is_a_config_error() {
    let cfg = bt();
    let spec = WorkloadSpec {
        accesses: 1000,
        ..WorkloadSpec::default_for(WorkloadKind::Seq)
    };
    for kind in ModeKind::ALL {
        let r = vmemsim::run_mode(kind, &cfg, &mut spec.source(), &mut |_| {});
        match kind {
            ModeKind::Native | ModeKind::Shadow | ModeKind::SwtlbNative => {
                assert!(r.is_ok(), "{}", kind.name())
            }
            _ => {
                let e = r.expect_err("an error").to_string();
                assert!(
                    e.starts_with("config key `cpu.virtualization` = \"bt\": mode")
                        && e.contains(kind.name()),
                    "{e}"
                );
                if kind == ModeKind::Nested {
                    assert!(
                        e.contains("nested paging needs hardware virtualization"),
                        "{e}"
                    );
                }
            }
        }
    }
}

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data")
        .join(name)
}

#[test]
fn bt_changes_cost_never_meaning() {
    // The oracle on every mode BT runs (native, shadow), with and without
    // unsync, on the process-heavy built-in and a real multi-process
    // recording; the same guest faults as under VT-x.
    let spec = WorkloadSpec {
        footprint_mib: 8,
        accesses: 60_000,
        ..WorkloadSpec::default_for(WorkloadKind::Procs)
    };
    let procs = collect(&mut spec.source());
    let ls = collect(
        open_trace(&data("sh-ls-wc.vmt"), &Config::default())
            .expect("open")
            .as_mut(),
    );
    for records in [&procs, &ls] {
        for unsync in [true, false] {
            let mut cfg = bt();
            cfg.shadow.unsync = unsync;
            let runs = all_modes(&cfg, records);
            let names: Vec<_> = runs.iter().map(|r| r.name).collect();
            assert_eq!(names, ["native", "shadow", "swtlb-native"]);
            let vtx = checked_stats(ModeKind::Native, &Config::default(), records);
            assert_eq!(runs[1].stats.guest_page_faults, vtx.guest_page_faults);
            assert_eq!(runs[1].stats.total_exits(), 0);
            assert!(runs[1].stats.total_bt_callouts() > 0);
        }
    }
}

#[test]
fn a_system_call_heavy_trace_runs_faster_under_vtx() {
    // [AA06]'s direction for system calls: 1000 brk calls growing the heap
    // by a page each, and 1000 loads of one already mapped page. Under VT-x
    // a system call does not exit (246 cycles against 242 native, taken as
    // equal); under BT each costs 2066 more. Nothing else differs after the
    // first page is mapped: the BT run costs exactly 1001 x 2066 more
    // cycles (1001 system calls: the 1000 brk and the mmap) plus the few
    // first-touch interventions, priced as traps instead of exits.
    let mut t = vec![ev(
        1,
        ProcEvent::Mmap {
            addr: A,
            len: 1 << 20,
            prot: 3,
            flags: 0x22,
            file: None,
        },
    )];
    t.push(acc(1, AccessKind::Store, A));
    let heap = 0x1000_0000u64;
    for i in 0..1000 {
        t.push(ev(
            1,
            ProcEvent::Brk {
                addr: heap + i * 4096,
            },
        ));
        t.push(acc(1, AccessKind::Load, A));
    }
    let vtx_cfg = Config::default();
    let bt_cfg = bt();
    let vtx = checked_stats(ModeKind::Shadow, &vtx_cfg, &t);
    let b = checked_stats(ModeKind::Shadow, &bt_cfg, &t);
    assert_eq!((vtx.syscalls, b.bt_syscalls), (1001, 1001));
    let price = |cfg: &Config, s: &Stats| CostModel::new(&cfg.cost, &cfg.pt_cache).price(s).total;
    // The interventions of the first touch (as in tests/exits.rs's
    // `first_touch`: shadow_fault 6, guest_fault 1, pt_write 1, cr3 1),
    // under BT all traps (the PTE store and CR3 write trapped once each).
    assert_eq!(vtx.vm_exits, [0, 6, 1, 1, 1, 0, 0]);
    assert_eq!(b.bt_traps, [0, 6, 1, 1, 1, 0, 0]);
    let trap_vs_exit = 9 * (2834 - 1200);
    assert_eq!(
        price(&bt_cfg, &b) - price(&vtx_cfg, &vtx),
        1001 * 2066 + trap_vs_exit
    );
}
