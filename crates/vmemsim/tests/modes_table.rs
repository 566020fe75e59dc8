//! The issue-4 and issue-11 checks, run by hand in release mode:
//! `cargo test --release -p vmemsim --test modes_table -- --ignored --nocapture`.
//! Prints total cycles of every mode on every built-in workload and every
//! recording of the corpus, and checks that `selective` is within 1% of the
//! better of nested and shadow, better than both on `phases`, and no worse
//! than `selective-w11`.
//!
//! The corpus: every `.vmt` in `tests/data`, and, when `VMEMSIM_CORPUS` names
//! a directory, every recording there that `tests/data/corpus.tsv` lists
//! (made by `scripts/record-corpus.sh large DIR`); for those the table also
//! fixes which static mode is the better one.

use std::path::{Path, PathBuf};

use vmemsim::config::Config;
use vmemsim::sched::open_trace;
use vmemsim::sim::{run_mode, ModeKind};
use vmemsim::workload::{WorkloadKind, WorkloadSpec};
use vmemsim_trace::RecordSource;

/// Every mode but native (the baseline), in report order.
fn modes() -> &'static [ModeKind] {
    &ModeKind::ALL[1..]
}

/// Run every mode of [`modes`] on the records `open` gives, print a row,
/// and return what fails the checks (`strictly_better`: selective must
/// beat both static modes; `better`: the static mode that must be the
/// better one).
fn check_row(
    name: &str,
    cfg: &Config,
    open: &dyn Fn() -> Box<dyn RecordSource>,
    strictly_better: bool,
    better: Option<ModeKind>,
) -> Vec<String> {
    let mut cyc = std::collections::HashMap::new();
    let mut sw = std::collections::HashMap::new();
    for &m in modes() {
        let r = run_mode(m, cfg, open().as_mut(), &mut |_| {}).expect("run");
        cyc.insert(m, r.cycles.total as f64);
        sw.insert(m, r.switching.map(|s| s.switches));
    }
    let c = |m| cyc[&m];
    println!(
        "{name:<14} {}",
        modes()
            .iter()
            .map(|&m| format!("{:>15.4e}", c(m)))
            .collect::<String>()
    );
    let best = c(ModeKind::Nested).min(c(ModeKind::Shadow));
    let (w11, ours) = (c(ModeKind::SelectiveW11), c(ModeKind::Selective));
    println!(
        "{:14} agile/best {:.4} (not checked), selective/best {:.4}, w11/best {:.4}, switches w11 {:?} ours {:?}",
        "",
        c(ModeKind::Agile) / best,
        ours / best,
        w11 / best,
        sw[&ModeKind::SelectiveW11],
        sw[&ModeKind::Selective]
    );
    let mut failures = Vec::new();
    if ours > best * 1.01 {
        failures.push(format!(
            "{name}: selective {:.4} x the best static",
            ours / best
        ));
    }
    if ours > w11 {
        failures.push(format!(
            "{name}: selective worse than w11 ({:.4})",
            ours / w11
        ));
    }
    if strictly_better && ours >= best {
        failures.push(format!("{name}: selective not strictly better than both"));
    }
    if let Some(b) = better {
        if c(b) != best {
            failures.push(format!(
                "{name}: {} is not the better static mode",
                b.name()
            ));
        }
    }
    failures
}

fn header() {
    println!(
        "{:<14} {}",
        "workload",
        modes()
            .iter()
            .map(|m| format!("{:>15}", m.name()))
            .collect::<String>()
    );
}

#[test]
#[ignore = "minutes in debug; run in release"]
fn selective_against_static_modes() {
    let cfg = Config::default();
    header();
    let mut failures = Vec::new();
    for w in WorkloadKind::ALL {
        let spec = WorkloadSpec::default_for(w);
        let open = || -> Box<dyn RecordSource> { Box::new(spec.source()) };
        failures.extend(check_row(
            w.name(),
            &cfg,
            &open,
            w == WorkloadKind::Phases,
            None,
        ));
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data")
}

/// Rows of `tests/data/corpus.tsv`: (recording name, the better static mode).
fn corpus_table() -> Vec<(String, ModeKind)> {
    let text = std::fs::read_to_string(data_dir().join("corpus.tsv")).expect("corpus.tsv");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<_> = l.split('\t').collect();
            let mode = ModeKind::parse(f[1]).expect("a mode name in corpus.tsv");
            (f[0].to_string(), mode)
        })
        .collect()
}

fn check_recording(path: &Path, cfg: &Config, better: Option<ModeKind>) -> Vec<String> {
    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    let open = || open_trace(path, cfg).expect("open the recording");
    check_row(&name, cfg, &open, false, better)
}

#[test]
#[ignore = "minutes in release; run by hand"]
fn selective_on_the_corpus() {
    let cfg = Config::default();
    header();
    let table = corpus_table();
    let better = |name: &str| table.iter().find(|r| r.0 == name).map(|r| r.1);
    let mut failures = Vec::new();
    let mut committed: Vec<_> = std::fs::read_dir(data_dir())
        .expect("tests/data")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "vmt"))
        .collect();
    committed.sort();
    for p in &committed {
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        failures.extend(check_recording(p, &cfg, better(&name)));
    }
    if let Some(dir) = std::env::var_os("VMEMSIM_CORPUS") {
        for (name, mode) in &table {
            let p = Path::new(&dir).join(format!("{name}.vmt"));
            if committed.iter().any(|c| c.file_stem() == p.file_stem()) {
                continue;
            }
            if !p.exists() {
                failures.push(format!(
                    "{}: missing (record it with scripts/record-corpus.sh)",
                    p.display()
                ));
                continue;
            }
            failures.extend(check_recording(&p, &cfg, Some(*mode)));
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
