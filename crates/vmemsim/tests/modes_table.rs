//! The issue-4 check, run by hand in release mode:
//! `cargo test --release -p vmemsim --test modes_table -- --ignored --nocapture`.
//! Prints total cycles of every mode on every built-in workload and checks
//! that `selective` is within 1% of the better of nested and shadow, better
//! than both on `phases`, and no worse than `selective-w11`.

use vmemsim::config::Config;
use vmemsim::sim::{run_mode, ModeKind};
use vmemsim::workload::{WorkloadKind, WorkloadSpec};

#[test]
#[ignore = "minutes in debug; run in release"]
fn selective_against_static_modes() {
    let cfg = Config::default();
    let modes = [
        ModeKind::Nested,
        ModeKind::Shadow,
        ModeKind::Direct,
        ModeKind::SelectiveW11,
        ModeKind::Selective,
        ModeKind::Agile,
    ];
    let mut failures = Vec::new();
    println!(
        "{:<8} {}",
        "workload",
        modes.map(|m| format!("{:>15}", m.name())).join("")
    );
    for w in WorkloadKind::ALL {
        let spec = WorkloadSpec::default_for(w);
        let mut cyc = Vec::new();
        let mut sw = Vec::new();
        for m in modes {
            let r = run_mode(m, &cfg, &mut spec.source(), &mut |_| {}).expect("run");
            cyc.push(r.cycles.total as f64);
            sw.push(r.switching.map(|s| s.switches));
        }
        println!(
            "{:<8} {}",
            w.name(),
            cyc.iter()
                .map(|c| format!("{:>15.4e}", c))
                .collect::<String>()
        );
        let (nested, shadow, w11, ours) = (cyc[0], cyc[1], cyc[3], cyc[4]);
        let best = nested.min(shadow);
        println!("         agile/best = {:.4} (not checked)", cyc[5] / best);
        println!(
            "         selective/best = {:.4}, selective/w11 = {:.4}, switches w11 {:?} ours {:?}",
            ours / best,
            ours / w11,
            sw[3],
            sw[4]
        );
        if ours > best * 1.01 {
            failures.push(format!(
                "{}: selective {:.4} x the best static",
                w.name(),
                ours / best
            ));
        }
        if ours > w11 {
            failures.push(format!(
                "{}: selective worse than w11 ({:.4})",
                w.name(),
                ours / w11
            ));
        }
        if w == WorkloadKind::Phases && ours >= best {
            failures.push("phases: selective not strictly better than both".into());
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
#[ignore = "debug print"]
fn print_intervals() {
    let cfg = Config::default();
    let w = std::env::var("W").unwrap_or("random".into());
    let spec = WorkloadSpec::default_for(
        WorkloadKind::ALL
            .into_iter()
            .find(|k| k.name() == w)
            .unwrap(),
    );
    let m = if std::env::var("M").is_ok() {
        ModeKind::SelectiveW11
    } else {
        ModeKind::Selective
    };
    let r = run_mode(m, &cfg, &mut spec.source(), &mut |_| {}).expect("run");
    for (i, s) in r.switching.unwrap().intervals.iter().enumerate() {
        println!(
            "{i} {:?} tlb {} pf {} exits {} cyc {}",
            s.mode, s.tlb_misses, s.guest_faults, s.exits, s.cycles
        );
    }
}
