//! The `vmemsim` binary end to end: reports, determinism, and bad input
//! (clear message naming the place and value, exit status 2, no panic).

use std::path::PathBuf;
use std::process::{Command, Output};

mod common;
use common::vmemsim;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vmemsim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn compare_prints_every_mode_and_writes_json() {
    let json = tmp("seq.json");
    let o = vmemsim(&[
        "compare",
        "--workload",
        "seq",
        "--accesses",
        "20000",
        "--footprint-mib",
        "4",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8(o.stdout).unwrap();
    for m in vmemsim::sim::ModeKind::ALL.map(|m| m.name()) {
        assert!(table.contains(m), "table lacks {m}:\n{table}");
    }
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let modes = doc["modes"].as_array().expect("top-level modes array");
    assert_eq!(modes.len(), vmemsim::sim::ModeKind::ALL.len());
    for m in modes {
        for key in [
            "mode",
            "accesses",
            "tlb_misses",
            "walk_refs",
            "guest_page_faults",
            "cycles",
        ] {
            assert!(m.get(key).is_some(), "mode entry lacks {key}: {m}");
        }
        assert!(m["vm_exits"].is_object());
    }
    assert_eq!(modes[0]["mode"], "native");
    assert_eq!(modes[0]["vm_exits_total"], 0);
    assert!(
        doc["config"]["tlb"]["stlb"]["entries"].as_u64() == Some(512),
        "the report embeds the config"
    );
}

#[test]
fn same_input_same_report_bit_for_bit() {
    let run = |name: &str| {
        let p = tmp(name);
        let o = vmemsim(&[
            "compare",
            "--workload",
            "procs",
            "--workload",
            "phases",
            "--accesses",
            "30000",
            "--json",
            p.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        (o.stdout, std::fs::read(p).unwrap())
    };
    assert_eq!(run("a.json"), run("b.json"));
}

#[test]
fn run_on_a_committed_recording() {
    let trace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/sh-echo-wc.vmt");
    let o = vmemsim(&[
        "run",
        "--mode",
        "shadow",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("accesses") && out.contains("860385"), "{out}");
}

#[test]
fn bad_input_is_a_clear_error_with_status_2() {
    let bad = tmp("bad.toml");
    std::fs::write(&bad, "[tlb]\nstlb = { entries = 500, ways = 3 }\n").unwrap();
    let unknown = tmp("unknown.toml");
    std::fs::write(&unknown, "[guest]\nmem_gib = 4\n").unwrap();
    let garbage = tmp("garbage.vmt");
    std::fs::write(&garbage, b"VMTRACE\0garbage that is not a trace").unwrap();
    let cases: [(Vec<&str>, &str); 6] = [
        (
            vec!["compare", "--config", bad.to_str().unwrap()],
            "tlb.stlb",
        ),
        (
            vec!["config", "--dump", "--config", unknown.to_str().unwrap()],
            "mem_gib",
        ),
        (vec!["run", "--mode", "hybrid"], "hybrid"),
        (vec!["compare", "--workload", "nope"], "nope"),
        (
            vec!["compare", "--trace", garbage.to_str().unwrap()],
            "garbage.vmt",
        ),
        (
            vec!["record", "-o", "x.vmt", "--", "/no/such/program"],
            "/no/such/program",
        ),
    ];
    for (args, named) in cases {
        let o = vmemsim(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(named),
            "{args:?}: message does not name `{named}`: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn config_dump_round_trips() {
    let o = vmemsim(&["config", "--dump"]);
    assert!(o.status.success());
    let p = tmp("dump.toml");
    std::fs::write(&p, &o.stdout).unwrap();
    let again = vmemsim(&["config", "--dump", "--config", p.to_str().unwrap()]);
    assert_eq!(o.stdout, again.stdout);
}

#[test]
fn bench_prints_best_and_median_per_mode() {
    let o = vmemsim(&[
        "bench",
        "--accesses",
        "20000",
        "--workload",
        "seq",
        "--repeat",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), vmemsim::sim::ModeKind::ALL.len(), "{out}");
    for r in &rows {
        assert_eq!(r[0], "seq");
        let best: f64 = r[3].parse().unwrap();
        let median: f64 = r[4].parse().unwrap();
        assert!(best >= median && median > 0.0, "{r:?}");
        // The ratio column: the median over rounds of the mode's speed
        // over native's in the same round.
        let ratio: f64 = r[5].parse().unwrap();
        assert!(ratio > 0.0, "{r:?}");
    }
    assert_eq!(rows[0][1], "native");
    assert_eq!(rows[0][5], "1.00", "native against itself");
    let bad = vmemsim(&["bench", "--repeat", "0"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("--repeat"), "{}", stderr(&bad));
}

#[test]
fn closed_stdout_is_not_a_panic_and_the_json_is_still_written() {
    use std::process::Stdio;
    let json = tmp("pipe.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmemsim"))
        .args([
            "compare",
            "--workload",
            "seq",
            "--accesses",
            "50000",
            "--json",
        ])
        .arg(&json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away, like `| head -0`
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(report["modes"].is_array());
}

#[test]
fn warmup_and_sim_instructions_set_the_measured_window() {
    // `seq`: one fetch and one load per instruction.
    let flags = [
        "run",
        "--mode",
        "nested",
        "--workload",
        "seq",
        "--accesses",
        "20480",
        "--footprint-mib",
        "4",
        "--warmup-instructions",
        "1000",
        "--sim-instructions",
        "2000",
    ];
    let o = vmemsim(&flags);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(
        table.contains("measured: instructions 1000..3000 (warm-up 1000, 2000 measured)"),
        "{table}"
    );
    assert!(
        table.contains("\naccesses                              4000\n"),
        "{table}"
    );
    // The same window from the config file.
    let cfg = tmp("window.toml");
    std::fs::write(
        &cfg,
        "[measure]\nwarmup_instructions = 1000\nsim_instructions = 2000\n",
    )
    .unwrap();
    let o2 = vmemsim(&[&flags[..9], &["--config", cfg.to_str().unwrap()]].concat());
    assert!(o2.status.success(), "{}", stderr(&o2));
    let t2 = String::from_utf8(o2.stdout).unwrap();
    assert_eq!(
        t2.lines().take(3).collect::<Vec<_>>(),
        table.lines().take(3).collect::<Vec<_>>()
    );
    let o3 = vmemsim(&[&flags[..9], &["--warmup-instructions", "99999"]].concat());
    assert_eq!(o3.status.code(), Some(2));
    assert!(
        stderr(&o3).contains("within the warm-up of 99999"),
        "{}",
        stderr(&o3)
    );
}

/// `-j N` changes how many simulations run at once, never the output: the
/// tables and the JSON of `-j 1` and `-j 3` are identical byte for byte,
/// on a committed recording (several modes reading one trace) and on
/// several built-in workloads (results gathered back in input order).
#[test]
fn parallel_compare_is_identical_to_serial() {
    let trace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/sh-sort-uniq.vmt");
    let cases: [&[&str]; 2] = [
        &["compare", "--trace", trace.to_str().unwrap()],
        &[
            "compare",
            "--workload",
            "procs",
            "--workload",
            "random",
            "--workload",
            "phases",
            "--accesses",
            "30000",
            "--footprint-mib",
            "8",
        ],
    ];
    for (i, args) in cases.iter().enumerate() {
        let mut outputs = Vec::new();
        for j in ["1", "3"] {
            let json = tmp(&format!("par-{i}-{j}.json"));
            let mut a = args.to_vec();
            a.extend(["-j", j, "--json", json.to_str().unwrap()]);
            let o = vmemsim(&a);
            assert!(o.status.success(), "{}", stderr(&o));
            outputs.push((o.stdout, std::fs::read(&json).unwrap()));
        }
        assert!(!outputs[0].0.is_empty() && outputs[0].1.len() > 1000);
        assert!(outputs[0].0 == outputs[1].0, "tables differ for {args:?}");
        assert!(outputs[0].1 == outputs[1].1, "JSON differs for {args:?}");
    }
}

#[test]
fn a_software_managed_tlb_runs_only_its_modes() {
    // `[cpu] tlb = "software"`: compare runs swtlb-native and swtlb-vmm
    // only, on a committed recording; an x86 mode is an error naming the key.
    let cfg = tmp("swtlb.toml");
    std::fs::write(&cfg, "[cpu]\ntlb = \"software\"\n").unwrap();
    let trace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/sh-echo-wc.vmt");
    let o = vmemsim(&[
        "compare",
        "--trace",
        trace.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8(o.stdout).unwrap();
    let header = table
        .lines()
        .find(|l| l.contains("swtlb-native"))
        .expect("a header row");
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["swtlb-native", "swtlb-vmm"]
    );
    assert!(table.contains("traps per TLB miss"), "{table}");
    let o = vmemsim(&["run", "--mode", "nested", "--config", cfg.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            "config key `cpu.tlb` = \"software\": mode `nested` needs a hardware page walker"
        ),
        "{err}"
    );
}
