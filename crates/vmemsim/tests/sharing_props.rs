//! Property tests of content-based page sharing: random map / unmap /
//! load / store / fork sequences over a handful of pages, in two VMs on
//! one host whose scanner runs between quanta of one instruction, so
//! frames are merged, broken, freed, reused and merged again within a few
//! dozen records. Every access of a hosted VM is checked by the host
//! oracle (gPFN from the guest's tables, hPFN from the p2m, content and
//! write protection of shared frames), and each VM resolves every access
//! to the same gPFN as alone. The search that found the stale
//! reverse-map case of `tests/mutant_kills.rs` (direct paging) grew into
//! this test.

mod common;

use proptest::prelude::*;
use vmemsim::hostsim::HostSim;
use vmemsim::sim::ModeKind;
use vmemsim_trace::{AccessKind, ProcEvent, Record};

use common::{acc, anon_mmap, ev, replay, scanning_host, Alone};

/// Four pages: few enough that freed frames are reused at once.
const BASE: u64 = 0x7000_0000;
const PAGES: u64 = 4;
/// A code page outside the window; its fetches end a quantum.
const CODE: u64 = 0x40_0000;
/// Agile's policy at its quickest: an interval of one instruction, and a
/// clean interval alone returns a table to shadow.
const AGILE_FLIPPING: &str = "[agile]\ninterval_instructions = 1\nclean_refill_costs = 0.0\n";

#[derive(Clone, Debug)]
enum Op {
    /// Load (kind 0) or store (kind 1, one of two values' offsets).
    Access {
        pid: u32,
        page: u64,
        kind: u8,
    },
    Unmap {
        pid: u32,
        page: u64,
    },
    /// Two fetches: a quantum ends and the scanner runs.
    Scan,
    /// Process 1 forks process 2 (once).
    Fork,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u32..3, 0..PAGES, prop_oneof![3 => Just(0u8), 1 => 1u8..3])
            .prop_map(|(pid, page, kind)| Op::Access { pid, page, kind }),
        2 => (1u32..3, 0..PAGES).prop_map(|(pid, page)| Op::Unmap { pid, page }),
        2 => Just(Op::Scan),
        1 => Just(Op::Fork),
    ]
}

/// Records of one VM: process 1 exists from the start; process 2 once
/// process 1 forks it (ops addressing it before are dropped). An access
/// to a page its process has not mapped maps it first, and only mapped
/// pages are unmapped, so most ops touch, free or reuse a frame.
fn records(ops: &[Op]) -> Vec<Record> {
    let mut r = vec![acc(1, AccessKind::Fetch, CODE)];
    // Pages mapped, per process (index pid - 1); None: not forked yet.
    let mut mapped: [Option<[bool; PAGES as usize]>; 2] = [Some([false; PAGES as usize]), None];
    for o in ops {
        match *o {
            Op::Access { pid, page, kind } => {
                let Some(m) = mapped[pid as usize - 1].as_mut() else {
                    continue;
                };
                let va = BASE + page * 0x1000;
                if !m[page as usize] {
                    r.push(anon_mmap(pid, va, 0x1000));
                    m[page as usize] = true;
                }
                r.push(match kind {
                    0 => acc(pid, AccessKind::Load, va),
                    k => acc(pid, AccessKind::Store, va + 8 * u64::from(k)),
                });
            }
            Op::Unmap { pid, page } => {
                let Some(m) = mapped[pid as usize - 1].as_mut() else {
                    continue;
                };
                if m[page as usize] {
                    r.push(ev(
                        pid,
                        ProcEvent::Munmap {
                            addr: BASE + page * 0x1000,
                            len: 0x1000,
                        },
                    ));
                    m[page as usize] = false;
                }
            }
            Op::Scan => {
                r.push(acc(1, AccessKind::Fetch, CODE));
                r.push(acc(1, AccessKind::Fetch, CODE));
            }
            Op::Fork => {
                if mapped[1].is_none() {
                    r.push(ev(1, ProcEvent::Fork { child: 2 }));
                    mapped[1] = mapped[0];
                }
            }
        }
    }
    r.push(acc(1, AccessKind::Fetch, CODE));
    r
}

/// Both VMs in `mode` (with config sections `extra`), the host checked at
/// every access, each VM against itself alone.
fn hosted_agrees_with_alone(mode: ModeKind, extra: &str, vms: &[Vec<Record>; 2]) {
    let cfg = scanning_host(mode, 2, extra);
    let sources = vms.iter().map(|r| replay(r)).collect();
    let mut sim = HostSim::with_sources(&cfg, sources).checked();
    sim.run(&mut |_| {}).unwrap();
    for (i, spec) in cfg.vms.iter().enumerate() {
        let (alone, alone_stats) = spec.mode.with_mode(&spec.cfg, Alone(&spec.cfg, &vms[i]));
        let hosted = sim.resolutions(i);
        assert_eq!(hosted.len(), alone.len(), "{mode:?}: vm{i}");
        for (k, (h, a)) in hosted.iter().zip(&alone).enumerate() {
            assert_eq!(h.0, a.0, "{mode:?}: vm{i}: access {k}");
        }
        let s = &sim.vm(i).stats;
        assert_eq!(
            s.guest_page_faults, alone_stats.guest_page_faults,
            "{mode:?}: vm{i}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn sharing_keeps_each_vms_meaning(
        a in prop::collection::vec(op(), 1..50),
        b in prop::collection::vec(op(), 1..50),
    ) {
        let vms = [records(&a), records(&b)];
        for mode in ModeKind::ALL.into_iter().filter(|m| m.is_virtualized()) {
            hosted_agrees_with_alone(mode, "", &vms);
        }
        // Agile with tables back in shadow after every quiet instruction
        // (by default these short runs stay nested): shared frames under
        // agile's shadow leaves.
        hosted_agrees_with_alone(ModeKind::Agile, AGILE_FLIPPING, &vms);
    }
}
