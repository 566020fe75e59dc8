//! `vmemsim sweep` and `vmemsim merge` end to end on tests/sweeps/small.toml
//! (a built-in workload and a committed recording): a local run and the
//! same sweep in four shards merge to the same table, CSV and JSON; a
//! restart runs only what is missing; `--slurm` writes the array script.
//! The same comparison on a real Slurm cluster is tests/slurm/run.sh.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::vmemsim;

fn ok(args: &[&str]) -> Output {
    let o = vmemsim(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn sweep_file() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/sweeps/small.toml")
        .to_string_lossy()
        .into_owned()
}

fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vmemsim-sweep-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Merge `dir`; gives (table, CSV, JSON). `--force`: a test merges the
/// same directory again after a restart, into the same files.
fn merged(dir: &Path) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let csv = dir.with_extension("csv");
    let json = dir.with_extension("json");
    let o = ok(&[
        "merge",
        "--force",
        dir.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    (
        o.stdout,
        std::fs::read(csv).unwrap(),
        std::fs::read(json).unwrap(),
    )
}

fn lines_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .lines()
                .count()
        })
        .sum()
}

#[test]
fn shards_merge_to_the_local_run_and_restarts_skip_finished_runs() {
    let sweep = sweep_file();
    let local = fresh_dir("local");
    ok(&["sweep", &sweep, "--out", local.to_str().unwrap(), "-j", "2"]);
    // 2 STLB sizes x 2 inputs x 3 modes.
    assert_eq!(lines_in(&local), 12);
    let sharded = fresh_dir("sharded");
    for i in 0..4 {
        let shard = format!("{i}/4");
        ok(&[
            "sweep",
            &sweep,
            "--out",
            sharded.to_str().unwrap(),
            "--shard",
            &shard,
            "-j",
            "1",
        ]);
    }
    assert_eq!(
        std::fs::read_dir(&sharded).unwrap().count(),
        4,
        "one file per shard"
    );
    let a = merged(&local);
    let b = merged(&sharded);
    assert!(a.0 == b.0, "tables differ");
    assert!(a.1 == b.1, "CSV differs");
    assert!(a.2 == b.2, "JSON differs");
    let table = String::from_utf8(a.0).unwrap();
    assert_eq!(table.lines().count(), 13, "{table}");
    // Native against itself: 0 overhead on every native row.
    for row in table.lines().filter(|l| l.contains(" native ")) {
        assert!(row.contains(" 0.00 "), "{row}");
    }

    // A restart runs nothing; with a run's line cut short, only that run.
    let again = ok(&["sweep", &sweep, "--out", local.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("12 already done, 0 to run"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let file = local.join("runs-0-of-1.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    let last = text.trim_end().rfind('\n').unwrap();
    std::fs::write(&file, &text[..last + 40]).unwrap();
    let again = ok(&["sweep", &sweep, "--out", local.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("11 already done, 1 to run"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let c = merged(&local);
    assert!(c.1 == b.1, "CSV after the restart differs");
}

#[test]
fn slurm_script_runs_the_shards_and_is_never_overwritten() {
    let sweep = sweep_file();
    let out = fresh_dir("slurm-out");
    let script = out.with_extension("sbatch");
    let _ = std::fs::remove_file(&script);
    let args = [
        "sweep",
        &sweep,
        "--out",
        out.to_str().unwrap(),
        "--slurm",
        script.to_str().unwrap(),
        "--tasks",
        "4",
        "--time",
        "0:10:00",
    ];
    ok(&args);
    let s = std::fs::read_to_string(&script).unwrap();
    for want in [
        "#SBATCH --array=0-3\n",
        "#SBATCH --cpus-per-task=1\n",
        "#SBATCH --time=0:10:00\n",
        "--shard \"${SLURM_ARRAY_TASK_ID}/4\"",
    ] {
        assert!(s.contains(want), "{want}: {s}");
    }
    let again = vmemsim(&args);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("never replaced"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[test]
fn bad_shard_and_bad_sweep_are_clear_errors() {
    let sweep = sweep_file();
    let o = vmemsim(&["sweep", &sweep, "--shard", "4/4", "--out", "/nonexistent"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--shard 4/4"));
    let bad = fresh_dir("bad").with_extension("toml");
    std::fs::write(
        &bad,
        "workloads = [\"seq\"]\n[grid]\n\"tlb.stlb.entrys\" = [1]\n",
    )
    .unwrap();
    let o = vmemsim(&["sweep", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("`tlb.stlb.entrys`") && e.contains("no such configuration key"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn window_flags_give_every_run_the_measured_window_of_run() {
    // `seq` does one fetch and one load per instruction, so a window of 2000
    // instructions after 1000 of warm-up holds exactly 4000 accesses.
    let dir = fresh_dir("window");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("window.toml");
    std::fs::write(
        &file,
        "modes = [\"nested\"]\nworkloads = [\"seq\"]\naccesses = 20480\nfootprint_mib = 4\n",
    )
    .unwrap();
    let window = [
        "--warmup-instructions",
        "1000",
        "--sim-instructions",
        "2000",
    ];
    let out = dir.join("out");
    let f = file.to_str().unwrap();
    ok(&[&["sweep", f, "--out", out.to_str().unwrap()][..], &window].concat());
    let text = std::fs::read_to_string(out.join("runs-0-of-1.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(line["window"]["warmup_instructions"], 1000);
    assert_eq!(line["window"]["measured_instructions"], 2000);
    assert_eq!(line["accesses"], 4000);

    // The same counters as `vmemsim run` with the same window.
    let json = dir.join("run.json");
    let run = [
        "run",
        "--mode",
        "nested",
        "--workload",
        "seq",
        "--accesses",
        "20480",
        "--footprint-mib",
        "4",
        "--json",
        json.to_str().unwrap(),
    ];
    ok(&[&run[..], &window].concat());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(line["stats"], report["modes"][0]["stats"]);
    assert_eq!(line["cycles"], report["modes"][0]["cycles"]);

    // Another window is another run (its config hash differs): nothing is
    // skipped.
    let again = ok(&[
        "sweep",
        f,
        "--out",
        out.to_str().unwrap(),
        "--sim-instructions",
        "3000",
    ]);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("0 already done, 1 to run"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // The Slurm script passes the window to every task.
    let script = dir.join("job.sbatch");
    ok(&[
        &[
            "sweep",
            f,
            "--out",
            out.to_str().unwrap(),
            "--slurm",
            script.to_str().unwrap(),
        ][..],
        &window,
    ]
    .concat());
    let s = std::fs::read_to_string(&script).unwrap();
    assert!(
        s.contains(" --warmup-instructions 1000 --sim-instructions 2000\n"),
        "{s}"
    );
}
