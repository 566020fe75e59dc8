//! Sanity of the model against shared/reference/facts.md section 1
//! [W11]: neither nested nor shadow paging wins everywhere. On a TLB-miss-
//! heavy workload (random updates over a footprint far beyond TLB reach)
//! shadow paging costs less than nested paging; on a fault- and
//! process-heavy workload nested paging costs less than shadow paging.

use vmemsim::workload::{WorkloadKind, WorkloadSpec};
use vmemsim::{run_mode, Config, ModeKind};

fn cycles(
    cfg: &Config,
    kind: WorkloadKind,
    footprint_mib: u64,
    accesses: u64,
    mode: ModeKind,
) -> u64 {
    let spec = WorkloadSpec {
        footprint_mib,
        accesses,
        ..WorkloadSpec::default_for(kind)
    };
    run_mode(mode, cfg, &mut spec.source(), &mut |_| {})
        .unwrap()
        .cycles
        .total
}

#[test]
fn random_updates_favour_shadow_paging() {
    // The regime of the paper's TLB-bound runs (mcf, cactusADM): the page
    // tables do not fit in the cache, so the extra references of a 2-D walk
    // go to memory. Scaled down so the test runs quickly: a 32 KiB line cache
    // (an L1D) and a 32 MiB footprint (64 KiB of PTEs, 16x the STLB reach),
    // about 120 updates per page. With the page tables cache-resident
    // (small footprints under the default 256 KiB cache) nested paging's
    // extra references are cheap and shadow paging's one-time fills are not
    // repaid: that is the workload's regime, not a cost default.
    let mut cfg = Config::default();
    cfg.pt_cache.lines = vmemsim::config::Geometry::new(512, 8);
    let run = |mode| cycles(&cfg, WorkloadKind::Random, 32, 2_000_000, mode);
    let (native, nested, shadow) = (
        run(ModeKind::Native),
        run(ModeKind::Nested),
        run(ModeKind::Shadow),
    );
    assert!(
        shadow < nested,
        "shadow {shadow} should cost less than nested {nested}"
    );
    assert!(native < shadow, "native {native} is the floor");
}

#[test]
fn process_heavy_work_favours_nested_paging() {
    let cfg = Config::default();
    let nested = cycles(&cfg, WorkloadKind::Procs, 4, 400_000, ModeKind::Nested);
    let shadow = cycles(&cfg, WorkloadKind::Procs, 4, 400_000, ModeKind::Shadow);
    assert!(
        nested < shadow,
        "nested {nested} should cost less than shadow {shadow}"
    );
}
