//! The ChampSim comparison as a test: small generated ChampSim traces (a
//! sequential and a random one) run natively with a warm-up, and every
//! per-structure count of the measured window checked against a count
//! derived by hand (derivations in the comments). These are the numbers a
//! ChampSim run with the same TLB geometry and window reports as DTLB,
//! ITLB and STLB accesses/hits/misses; docs/champsim.md maps the names.
//!
//! Default geometry (config/hardware.rs): L1 DTLB 64 entries 4-way (16 sets), L1
//! ITLB 128 4-way, STLB 512 4-way (128 sets), PDE cache 32 4-way, PDPTE 4,
//! PML4E 2; page-table line cache 4096 lines 8-way; all true LRU.

use std::path::{Path, PathBuf};

use vmemsim::config::Config;
use vmemsim::sched::open_trace;
use vmemsim::stats::Stats;
use vmemsim::{run_mode, ModeKind, ModeResult};

/// Code: a 16-instruction loop in one page.
const CODE: u64 = 0x40_0000;
/// Data: 2 MiB aligned, so the first 512 pages share one PT.
const DATA: u64 = 0x1000_0000;

/// One standard 64-byte ChampSim `input_instr` at `ip` loading `load`
/// (offsets as in vmemsim-trace's champsim.rs: ip at 0, source_memory[0] at 32).
fn instr(ip: u64, load: u64) -> [u8; 64] {
    let mut r = [0u8; 64];
    r[..8].copy_from_slice(&ip.to_le_bytes());
    r[32..40].copy_from_slice(&load.to_le_bytes());
    r
}

fn write_trace(name: &str, loads: impl Iterator<Item = u64>) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmemsim-champsim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.champsim"));
    let bytes: Vec<u8> = loads
        .enumerate()
        .flat_map(|(i, a)| instr(CODE + 4 * (i as u64 % 16), a))
        .collect();
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Remove a generated trace, and its directory once the last one is gone.
fn remove(path: &Path) {
    std::fs::remove_file(path).ok();
    std::fs::remove_dir(path.parent().expect("in a directory")).ok();
}

fn run(kind: ModeKind, path: &Path, warmup: u64, sim: u64) -> ModeResult {
    let mut cfg = Config::default();
    cfg.measure.warmup_instructions = warmup;
    cfg.measure.sim_instructions = sim;
    let mut src = open_trace(path, &cfg).unwrap();
    run_mode(kind, &cfg, src.as_mut(), &mut |_| {}).unwrap()
}

/// The ChampSim-named counts of a window:
/// (ITLB accesses, misses), (DTLB accesses, misses), (STLB accesses, hits, misses).
fn tlbs(s: &Stats) -> [u64; 7] {
    [
        s.itlb_accesses(),
        s.itlb_misses,
        s.dtlb_accesses(),
        s.dtlb_misses(),
        s.l1_tlb_misses,
        s.stlb_hits,
        s.tlb_misses,
    ]
}

/// Sequential: instruction i loads DATA + 64 i, so 64 instructions per
/// page. Warm-up 512 instructions (pages 0..8), measured 2048 (pages 8..40,
/// all in the first 2 MiB region).
#[test]
fn sequential_trace_window_counts() {
    let (w, m) = (512, 2048);
    let path = write_trace("seq", (0..w + m + 100).map(|i| DATA + 64 * i));
    let r = run(ModeKind::Native, &path, w, m);
    remove(&path);
    let s = &r.stats;
    assert_eq!((s.instructions, s.accesses), (2048, 4096));
    // ITLB: the code page has been in the ITLB since the first fetch: 2048
    // lookups, 0 misses. DTLB: 2048 loads; each of the 32 new pages misses
    // once (first touch), its other 63 loads hit. STLB: looked up by the 32
    // L1 misses; a page never seen is in no TLB: 0 hits, 32 misses.
    assert_eq!(tlbs(s), [2048, 0, 2048, 32, 32, 0, 32]);
    // The guest is demand paged (ChampSim is not): each new page's first
    // walk finds its PTE not present, the guest takes a #PF, maps it, and
    // the access walks again: 32 faults, 64 walks.
    assert_eq!(
        (s.guest_page_faults, s.demand_faults, s.walks),
        (32, 32, 64)
    );
    // Every walk hits the PDE cache (the region's PDE was cached in the
    // warm-up) and reads one PTE: 64 PDE-cache hits, 64 references.
    assert_eq!(
        (s.psc_hits, s.psc_misses, s.walk_refs()),
        ([64, 0, 0], 0, 64)
    );
    assert_eq!(s.refs_per_stlb_miss(), 2.0);
    // Line cache: 8 PTEs per 64-byte line; pages 8..40 use PTE lines 1..5,
    // untouched in the warm-up (pages 0..8 = line 0). The first walk to a
    // line (pages 8, 16, 24, 32) misses; the other 60 walks hit.
    assert_eq!(s.walk_ref_cache_hits, 60);
    assert_eq!(
        r.window.describe(),
        "instructions 512..2560 (warm-up 512, 2048 measured)"
    );
}

/// Random: 1024 pages (two 2 MiB regions) visited in the order of a
/// full-period LCG, x' = (421 x + 173) mod 1024 (Hull-Dobell: c odd, a = 1
/// mod 4), one load per instruction. Warm-up: one full cycle (every page
/// faulted in), measured: two more cycles.
#[test]
fn random_trace_window_counts() {
    let pages = 1024u64;
    let order: Vec<u64> = std::iter::successors(Some(0u64), |x| Some((421 * x + 173) % pages))
        .take(pages as usize)
        .collect();
    let mut seen = order.clone();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 1024, "a permutation of the pages");
    let loads = (0..4 * pages).map(|i| DATA + order[(i % pages) as usize] * 4096 + (i * 64) % 4096);
    let path = write_trace("random", loads);
    let (w, m) = (pages, 2 * pages);
    let r = run(ModeKind::Native, &path, w, m);
    let s = &r.stats;
    assert_eq!((s.instructions, s.accesses), (2048, 4096));
    // The 1024 pages fall 64 to each DTLB set and 8 to each STLB set, and
    // every cycle visits a set's pages in the same order: true LRU with
    // more pages than ways misses every time, in the DTLB and the STLB.
    // The code page stays in the ITLB (only fetches fill it).
    assert_eq!(tlbs(s), [2048, 0, 2048, 2048, 2048, 0, 2048]);
    // Every page was mapped in the warm-up: no fault, one walk per miss.
    assert_eq!((s.guest_page_faults, s.walks), (0, 2048));
    // Three PDEs in use (code, two data regions), in distinct PDE-cache
    // sets: every walk hits the PDE cache and reads only the PTE.
    assert_eq!(
        (s.psc_hits, s.psc_misses, s.walk_refs()),
        ([2048, 0, 0], 0, 2048)
    );
    // The two PTs are 128 lines, all read in the warm-up and never evicted
    // from the 4096-line cache: every reference hits.
    assert_eq!(s.walk_ref_cache_hits, 2048);
    assert_eq!(s.refs_per_stlb_miss(), 1.0);

    // The same window in nested mode: the guest-side counts are the same;
    // every guest table reference and every final gPA needs a gPA -> hPA
    // translation (nested TLB lookup), and each nested TLB miss one EPT
    // PSC lookup.
    let n = run(ModeKind::Nested, &path, w, m).stats;
    remove(&path);
    assert_eq!(tlbs(&n), tlbs(s));
    assert_eq!((n.walks, n.walk_refs_by_dim[0]), (2048, 2048));
    assert_eq!(n.nested_tlb_hits + n.nested_tlb_misses, 2048 + 2048);
    assert_eq!(
        n.ept_psc_hits.iter().sum::<u64>() + n.ept_psc_misses,
        n.nested_tlb_misses
    );
    assert!(n.nested_tlb_misses > 0 && n.nested_tlb_hits > 0);
}

/// The window's counts are those a cut trace would not give: without the
/// warm-up the same 2048 instructions include the cold faults.
#[test]
fn warm_up_is_what_removes_the_cold_start() {
    let path = write_trace("seq-cold", (0..2048).map(|i| DATA + 64 * i));
    let cold = run(ModeKind::Native, &path, 0, 0).stats;
    remove(&path);
    // Cold: the code page's ITLB miss too, and its fault (pages 0..32: 32
    // data faults + 1 code fault).
    assert_eq!((cold.itlb_misses, cold.guest_page_faults), (1, 33));
}
