//! The main job on real input: recorded programs run through every mode,
//! each access checked against the oracle.

mod common;

use std::path::PathBuf;

use vmemsim::config::Config;
use vmemsim::sched::{open_trace, RoundRobin};
use vmemsim_trace::{ProcEvent, Record};

use common::{all_modes_agree, collect, Replay};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data")
        .join(name)
}

#[test]
fn corpus_recordings_agree_in_every_mode() {
    // The corpus of tests/data/README.md (compressor, database, workers
    // forked by a shell): the first 300 000 records of each, every access
    // checked in every mode (the whole runs are pinned by the golden
    // reports of the CLI).
    for name in [
        "gzip-small.vmt",
        "xz-small.vmt",
        "sqlite-small.vmt",
        "fork-workers.vmt",
    ] {
        let cfg = Config::default();
        let mut records = collect(open_trace(&data(name), &cfg).expect("open").as_mut());
        records.truncate(300_000);
        let [native, ..] = all_modes_agree(&cfg, &records);
        assert!(native.guest_page_faults > 50, "{name}");
    }
}

#[test]
fn committed_recordings_agree_in_every_mode() {
    for name in ["sh-echo-wc.vmt", "sh-sort-uniq.vmt", "sh-ls-wc.vmt"] {
        let cfg = Config::default();
        let records = collect(open_trace(&data(name), &cfg).expect("open").as_mut());
        let forks = records
            .iter()
            .filter(|r| matches!(r, Record::Event(e) if matches!(e.kind, ProcEvent::Fork { .. })))
            .count();
        assert!(forks >= 2, "{name}: a multi-process recording");
        let [native, nested, shadow] = all_modes_agree(&cfg, &records);
        assert!(native.guest_page_faults > 100, "{name}");
        assert!(
            native.implicit_mappings > 0,
            "{name}: Valgrind-loaded images are implicit mappings"
        );
        assert_eq!(nested.forks as usize, forks, "{name}");
        assert!(
            shadow.total_exits() > nested.total_exits(),
            "{name}: fork/exec-heavy shells exit more under shadow paging"
        );
    }
}

#[test]
fn a_live_recording_agrees_in_every_mode() {
    if vmemsim_trace::recorder::find_valgrind(None).is_err() {
        eprintln!("SKIPPED: valgrind is not installed (apt-get install valgrind); cannot record a live program");
        return;
    }
    let dir = std::env::temp_dir().join(format!("vmemsim-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("live.vmt");
    let opts = vmemsim_trace::recorder::RecordOptions {
        output: out.clone(),
        command: vec![
            "sh".into(),
            "-c".into(),
            "echo hello | wc -c > /dev/null".into(),
        ],
        valgrind: None,
        tool: Default::default(),
    };
    let (summary, kept) = match vmemsim_trace::recorder::record_keeping(&opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("SKIPPED: valgrind cannot run here: {e}");
            return;
        }
    };
    assert!(summary.processes >= 2, "{summary}");
    let back = collect(vmemsim_trace::open(&out).unwrap().as_mut());
    assert_eq!(back, kept, "the trace round-trips exactly");
    let cfg = Config::default();
    let scheduled = collect(&mut RoundRobin::new(
        Replay(kept, 0),
        cfg.sched.quantum_instructions,
    ));
    assert_eq!(scheduled.len(), back.len(), "scheduling loses nothing");
    all_modes_agree(&cfg, &scheduled);
    std::fs::remove_dir_all(&dir).ok();
}
