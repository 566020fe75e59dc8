//! The measured window (`--warmup-instructions`, `--sim-instructions`):
//! counting starts after the warm-up with every structure warm, and a
//! window's counts are exactly the full run's minus its warm-up prefix's.

mod common;

use std::path::PathBuf;

use vmemsim::config::Config;
use vmemsim::sched::open_trace;
use vmemsim::workload::{WorkloadKind, WorkloadSpec};
use vmemsim::{run_mode, ModeKind, ModeResult};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data")
        .join(name)
}

fn windowed(cfg: &Config, warmup: u64, sim: u64) -> Config {
    let mut c = cfg.clone();
    c.measure.warmup_instructions = warmup;
    c.measure.sim_instructions = sim;
    c
}

/// One input: a real recording or a built-in workload.
enum Input {
    Trace(&'static str),
    Builtin(WorkloadSpec),
}

fn run(kind: ModeKind, cfg: &Config, input: &Input) -> ModeResult {
    let mut src: Box<dyn vmemsim_trace::RecordSource> = match input {
        Input::Trace(name) => open_trace(&data(name), cfg).expect("open"),
        Input::Builtin(spec) => Box::new(spec.source()),
    };
    run_mode(kind, cfg, src.as_mut(), &mut |_| {}).expect("run")
}

/// For every mode on a real recording and on `phases` (where
/// `selective-w11` switches): the window [W, W+M) equals the run stopped
/// at W+M minus the run stopped at W, counter by counter, and for
/// switching modes switch by switch and instruction by instruction (the
/// window changes what is counted, never what is simulated).
#[test]
fn window_is_the_difference_of_two_prefixes() {
    let cfg = common::short_periods(&Config::default());
    let phases = WorkloadSpec {
        accesses: 400_000,
        footprint_mib: 16,
        ..WorkloadSpec::default_for(WorkloadKind::Phases)
    };
    let mut switches_in_window = 0;
    for (input, w, m) in [
        (Input::Trace("sh-sort-uniq.vmt"), 30_000, 50_000),
        (Input::Builtin(phases), 40_000, 120_000),
    ] {
        for kind in ModeKind::ALL {
            let win = run(kind, &windowed(&cfg, w, m), &input);
            let long = run(kind, &windowed(&cfg, 0, w + m), &input);
            let short = run(kind, &windowed(&cfg, 0, w), &input);
            assert_eq!(short.stats.instructions, w, "{kind:?}: stops at the limit");
            assert_eq!(win.stats.instructions, m, "{kind:?}");
            assert_eq!(win.stats, long.stats.since(&short.stats), "{kind:?}");
            assert_eq!(
                (
                    win.window.warmup_instructions,
                    win.window.measured_instructions
                ),
                (w, m)
            );
            assert!(!win.window.input_ended_early);
            if let (Some(a), Some(b), Some(c)) = (&win.switching, &long.switching, &short.switching)
            {
                assert_eq!(a.switches, b.switches - c.switches, "{kind:?}");
                assert_eq!(
                    a.instructions_shadow,
                    b.instructions_shadow - c.instructions_shadow,
                    "{kind:?}"
                );
                assert_eq!(
                    a.instructions_nested,
                    b.instructions_nested - c.instructions_nested,
                    "{kind:?}"
                );
                assert_eq!(a.instructions_shadow + a.instructions_nested, m);
                let rules: Vec<u64> = (b.rules_fired.iter().zip(&c.rules_fired))
                    .map(|(x, y)| x - y)
                    .collect();
                assert_eq!(a.rules_fired, rules, "{kind:?}");
                if kind == ModeKind::SelectiveW11 {
                    // One rule decides at each period boundary in the window.
                    assert_eq!(rules.len(), 7);
                    assert!(rules.iter().sum::<u64>() > 0);
                }
                switches_in_window += a.switches;
            }
        }
    }
    assert!(
        switches_in_window > 0,
        "the switching reports were exercised"
    );
}

/// Built-in workloads get the window too; a warm-up beyond the input is an
/// error naming both counts, and a window beyond it says so.
#[test]
fn builtin_window_and_short_inputs() {
    let spec = WorkloadSpec {
        accesses: 20_480,
        footprint_mib: 4,
        ..WorkloadSpec::default_for(WorkloadKind::Random)
    };
    // `random`: one fetch and one read-modify-write per instruction, so
    // 20,480 accesses are 10,240 instructions.
    let cfg = windowed(&Config::default(), 4_000, 3_000);
    let r = run_mode(ModeKind::Nested, &cfg, &mut spec.source(), &mut |_| {}).unwrap();
    assert_eq!((r.stats.instructions, r.stats.accesses), (3_000, 6_000));
    assert_eq!(
        r.window.describe(),
        "instructions 4000..7000 (warm-up 4000, 3000 measured)"
    );

    let cfg = windowed(&Config::default(), 8_000, 5_000);
    let r = run_mode(ModeKind::Native, &cfg, &mut spec.source(), &mut |_| {}).unwrap();
    assert_eq!(r.stats.instructions, 2_240);
    assert!(r.window.input_ended_early);

    let cfg = windowed(&Config::default(), 20_000, 0);
    let e = run_mode(ModeKind::Native, &cfg, &mut spec.source(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("after 10240 instructions") && e.contains("warm-up of 20000"),
        "{e}"
    );
}
