//! The ESX memory manager's experiments [ESX] at reduced size, run from
//! the shipped configurations in `examples/esx/`, checking the paper's
//! directions (not its numbers; docs/esx.md has the full-size runs):
//!
//! 1. The idle memory tax (paper 5.4): with tau = 0 two VMs of equal
//!    shares end with equal memory; with tau = 0.75 memory moves to the
//!    active VM and its throughput rises.
//! 2. Ballooning vs a statically smaller VM (paper 3.2): a VM ballooned
//!    from M to about M/2 runs about as fast as one booted with M/2 (small
//!    overhead); its balloon takes frames the guest uses, which the guest
//!    reclaims through its own swap.
//! 3. Swapping vs ballooning (paper 3, 6.2): double paging only where the
//!    host swaps without ballooning.
//! 4. Mode interaction: the same under nested and shadow paging, where
//!    idle sampling costs EPT violations or shadow faults.

use std::path::Path;

use vmemsim::host::config::HostConfig;
use vmemsim::hostsim::{HostReport, HostSim};
use vmemsim::stats::ExitReason;

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/esx")
}

/// Run `examples/esx/NAME` with each `(from, to)` replaced in its text.
fn run(name: &str, edits: &[(&str, &str)]) -> HostReport {
    let mut text = std::fs::read_to_string(examples().join(name)).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{name}: no `{from}`");
        text = text.replace(from, to);
    }
    let cfg = HostConfig::from_toml(&text, name, &examples()).unwrap();
    HostSim::new(&cfg).unwrap().run(&mut |_| {}).unwrap()
}

/// Accesses per simulated second of VM `v` over its own run.
fn throughput(r: &HostReport, v: usize) -> f64 {
    r.vms[v].stats.accesses as f64 / r.vms[v].seconds
}

/// Mean allocation (frames) of each VM over the second half of the run.
fn late_alloc(r: &HostReport) -> Vec<f64> {
    let s = &r.esx.as_ref().unwrap().manager.series;
    let late = &s[s.len() / 2..];
    (0..r.vms.len())
        .map(|v| late.iter().map(|p| p.vms[v].alloc as f64).sum::<f64>() / late.len() as f64)
        .collect()
}

#[test]
fn idle_memory_tax_moves_memory_to_the_active_vm_in_both_modes() {
    for mode in ["nested", "shadow"] {
        let reduced = [
            ("accesses = 3000000", "accesses = 1000000"),
            ("mode = \"nested\"", &*format!("mode = \"{mode}\"")),
        ];
        let at = |tau: &str| {
            let mut e = reduced.to_vec();
            e.push(("idle_tax = 0.75", tau));
            run("idle-tax.toml", &e)
        };
        let flat = at("idle_tax = 0.0");
        let taxed = at("idle_tax = 0.75");
        // VM 0 is idle, VM 1 active.
        let a0 = late_alloc(&flat);
        let a1 = late_alloc(&taxed);
        // tau = 0: equal shares, equal memory (within 5%).
        assert!(
            (a0[0] - a0[1]).abs() <= 0.05 * a0[0].max(a0[1]),
            "{mode}: tau 0 splits equally: {a0:?}"
        );
        // tau = 0.75: the active VM holds clearly more than the idle one.
        assert!(
            a1[1] > 1.3 * a1[0],
            "{mode}: tau 0.75 shifts memory: {a1:?}"
        );
        // ... and runs faster (paper: over 30% more throughput).
        let (t0, t1) = (throughput(&flat, 1), throughput(&taxed, 1));
        assert!(
            t1 > 1.3 * t0,
            "{mode}: active throughput {t0:.0} -> {t1:.0}"
        );
        // The idle VM's estimated active fraction fell; the active VM's did not.
        let last = |r: &HostReport, v: usize| {
            r.esx.as_ref().unwrap().manager.series.last().unwrap().vms[v].active
        };
        assert!(last(&taxed, 0) < 0.1 && last(&taxed, 1) > 0.3, "{mode}");
        // Experiment 4: every sampled frame the guest touched again trapped
        // once (nested: an EPT violation, shadow: a shadow fault).
        let reason = if mode == "nested" {
            ExitReason::EptViolation
        } else {
            ExitReason::ShadowFault
        };
        for r in [&flat, &taxed] {
            let e = r.esx.as_ref().unwrap();
            for (v, vm) in r.vms.iter().enumerate() {
                let touched = e.manager.counters[v].touched_frames;
                assert!(
                    vm.stats.exits_for(reason) >= touched && touched > 0,
                    "{mode}: {}: {} exits for {touched} touched samples",
                    vm.name,
                    vm.stats.exits_for(reason)
                );
            }
        }
    }
}

#[test]
fn a_ballooned_vm_runs_about_as_fast_as_a_small_one() {
    for mode in ["nested", "shadow"] {
        let reduced = [
            ("accesses = 3000000", "accesses = 1000000"),
            ("mode = \"nested\"", &*format!("mode = \"{mode}\"")),
        ];
        let b = run("balloon-vs-small.toml", &reduced);
        let s = run("small-vm.toml", &reduced);
        let (eb, es) = (
            &b.esx.as_ref().unwrap().vms[0],
            &s.esx.as_ref().unwrap().vms[0],
        );
        // The balloon really inflated, took frames the guest used (its
        // guest swapped them out) and so freed host frames.
        assert!(
            eb.inflated > 0 && eb.balloon_frames_freed > 0,
            "{mode}: balloon {eb:?}"
        );
        assert!(b.vms[0].stats.guest_swap_outs > 0, "{mode}");
        assert_eq!((es.inflated, es.balloon_frames_freed), (0, 0), "{mode}");
        // Its guest ends with about M/2: within 8 MiB of the small VM's.
        let mib = |f: u64| f as f64 / 256.0;
        assert!(
            (mib(b.vms[0].frames) - mib(s.vms[0].frames)).abs() < 8.0,
            "{mode}: {} vs {} MiB",
            mib(b.vms[0].frames),
            mib(s.vms[0].frames)
        );
        // Small overhead (paper: 1.4% to 4.4%): within 10% either way.
        let overhead = b.vms[0].seconds / s.vms[0].seconds - 1.0;
        assert!(overhead.abs() < 0.10, "{mode}: overhead {overhead:.3}");
    }
}

#[test]
fn double_paging_only_where_the_host_swaps_without_ballooning() {
    // Full size, but the real recording cut to 1.5 M instructions.
    let reduced = [("[host]", "[measure]\nsim_instructions = 1500000\n[host]")];
    let at = |reclaim: &str| {
        let mut e = reduced.to_vec();
        let to = format!("reclaim = \"{reclaim}\"");
        e.push(("reclaim = \"states\"", &to));
        run("swap-vs-balloon.toml", &e)
    };
    let dbl = |r: &HostReport| -> Vec<u64> { r.vms.iter().map(|v| v.double_pagings).collect() };
    let swap = at("swap");
    let balloon = at("balloon");
    let states = at("states");
    // Host swapping alone: the GUPS guest (it reclaims all the time)
    // picks frames the host swapped out: double paging.
    assert!(dbl(&swap)[0] > 0, "swap: {:?}", dbl(&swap));
    // Ballooning makes the guests page with their own policy: the host
    // never swapped their frames, so they never page twice.
    for r in [&balloon, &states] {
        assert!(dbl(r).iter().all(|&d| d == 0), "{:?}", dbl(r));
        let e = r.esx.as_ref().unwrap();
        assert!(e.vms.iter().any(|v| v.balloon_frames_freed > 0));
    }
    // The ESX table and JSON carry it per VM.
    let e = swap.esx.as_ref().unwrap();
    assert_eq!(
        e.vms.iter().map(|v| v.double_pagings).collect::<Vec<_>>(),
        dbl(&swap)
    );
    let names: Vec<&str> = swap.vms.iter().map(|v| v.name.as_str()).collect();
    assert!(e.to_table(&names).contains("dbl.page"));
}

#[test]
fn the_managers_own_flushes_and_zaps_are_counted_and_priced() {
    // Idle sampling invalidates frames and flushes each VM once a period
    // (INVEPT single-context on the one pCPU); in shadow mode it zaps
    // shadow leaves through the reverse map. Both are in the VM's host
    // counters and priced: with no host swapping (a host with room), the
    // host work is exactly invepts x 1000 + zaps x 100 (cost.invept_cycles,
    // cost.rmap_zap_cycles).
    for mode in ["nested", "shadow"] {
        let r = run(
            "small-vm.toml",
            &[
                ("accesses = 3000000", "accesses = 100000"),
                ("mode = \"nested\"", &*format!("mode = \"{mode}\"")),
            ],
        );
        let v = &r.vms[0];
        let e = &r.esx.as_ref().unwrap().vms[0];
        let periods = r.esx.as_ref().unwrap().manager.counters[0].sample_periods;
        assert!(periods > 0 && e.invepts >= periods, "{mode}: {e:?}");
        assert_eq!((v.host_swap_outs, v.host.invepts), (0, e.invepts), "{mode}");
        assert_eq!(v.host.rmap_zaps, e.rmap_zaps, "{mode}");
        assert_eq!(
            e.rmap_zaps > 0,
            mode == "shadow",
            "{mode}: zaps {}",
            e.rmap_zaps
        );
        assert_eq!(
            v.host.host_work_cycles,
            e.invepts * 1000 + e.rmap_zaps * 100,
            "{mode}"
        );
    }
}

#[test]
fn sampling_on_each_vms_own_clock_samples_a_busy_vm_more_often() {
    // esx.sample_clock = "vm": periods count each VM's own execution time
    // (ESX's choice). The active VM (GUPS, waiting for swap-ins) gains
    // execution time far faster than the idle one (a 16-page loop): more
    // of its periods end. On the host clock both end the same number.
    let reduced = ("accesses = 3000000", "accesses = 1000000");
    let periods = |clock: &str| {
        let r = run(
            "idle-tax.toml",
            &[
                reduced,
                (
                    "idle_tax = 0.75",
                    &*format!("idle_tax = 0.75\nsample_clock = \"{clock}\""),
                ),
            ],
        );
        let c = &r.esx.as_ref().unwrap().manager.counters;
        (c[0].sample_periods, c[1].sample_periods)
    };
    let (idle, active) = periods("vm");
    assert!(
        active > 2 * idle,
        "own clocks: idle {idle}, active {active}"
    );
    let (idle, active) = periods("host");
    assert!(
        idle.abs_diff(active) <= 1,
        "host clock: idle {idle}, active {active}"
    );
}

/// A guest without swap cannot give the balloon frames it uses: when its
/// workload then needs more frames than are free, it takes balloon pages
/// back (deflate on OOM, as virtio-balloon's DEFLATE_ON_OOM) instead of
/// failing, and the ESX report counts them apart from the driver's own
/// deflates. Experiment 2's ballooned VM (128 MiB, balloon target about
/// 60 MiB) with `[guest] swap_mib = 0` and GUPS over 110 MiB, cut to 1 M
/// accesses.
#[test]
fn a_guest_without_swap_takes_balloon_pages_back_on_oom() {
    let r = run(
        "balloon-vs-small.toml",
        &[
            ("accesses = 3000000", "accesses = 1000000"),
            ("[guest]\nswap_mib = 256", "[guest]\nswap_mib = 0"),
            ("footprint_mib = 80", "footprint_mib = 110"),
        ],
    );
    let e = &r.esx.as_ref().unwrap().vms[0];
    assert_eq!(r.vms[0].stats.guest_swap_outs, 0);
    assert!(e.inflated > 0, "{e:?}");
    assert!(e.oom_deflates > 0, "{e:?}");
    let names: Vec<&str> = r.vms.iter().map(|v| v.name.as_str()).collect();
    let table = r.esx.as_ref().unwrap().to_table(&names);
    assert!(table.contains("oom.defl"), "{table}");
}
