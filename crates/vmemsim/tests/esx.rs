//! The ESX memory manager's experiments [ESX] at reduced size, run from
//! the shipped configurations in `examples/esx/`, checking the paper's
//! directions (not its numbers; docs/esx.md has the full-size runs):
//!
//! 1. The idle memory tax (paper 5.4): with tau = 0 two VMs of equal
//!    shares end with equal memory; with tau = 0.75 memory moves to the
//!    active VM and its throughput rises.
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
