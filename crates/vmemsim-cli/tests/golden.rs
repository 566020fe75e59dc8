//! Golden reports: the full `compare` output (text table and JSON) on each
//! committed recording and on small built-in workloads, compared byte for
//! byte with `tests/golden/`. These pin what every mode costs, not only
//! what it means: a change to a walker, a TLB, an exit or a price that the
//! oracle cannot see (it checks translations) changes a golden report.
//!
//! When a change of results is intended, regenerate and commit the files,
//! and say in the commit why the numbers moved:
//!
//! ```sh
//! VMEMSIM_BLESS=1 cargo test -p vmemsim-cli --test golden
//! git diff --stat tests/golden
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `vmemsim ARGS --json TMP` from the repository root (so trace paths
/// in the report are relative and the same on every machine) and checks
/// standard output against `tests/golden/NAME.txt` and the JSON against
/// `tests/golden/NAME.json`.
fn golden(name: &str, args: &[&str]) {
    let tmp =
        std::env::temp_dir().join(format!("vmemsim-golden-{}-{name}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_vmemsim"))
        .current_dir(repo())
        .args(args)
        .arg("--json")
        .arg(&tmp)
        .output()
        .expect("run vmemsim");
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = std::fs::read_to_string(&tmp).expect("JSON written");
    std::fs::remove_file(&tmp).ok();
    let text = String::from_utf8(out.stdout).expect("UTF-8 table");
    let dir = repo().join("tests/golden");
    check(&dir.join(format!("{name}.txt")), &text);
    check(&dir.join(format!("{name}.json")), &json);
}

fn check(path: &Path, got: &str) {
    if std::env::var_os("VMEMSIM_BLESS").is_some() {
        std::fs::write(path, got).expect("write golden file");
        return;
    }
    let want = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `VMEMSIM_BLESS=1 cargo test -p vmemsim-cli --test golden` to create it",
            path.display()
        )
    });
    if want != got {
        let line = want
            .lines()
            .zip(got.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(want.lines().count().min(got.lines().count()));
        panic!(
            "{} differs from this run at line {}:\n  golden: {}\n  now:    {}\n\
             If the change of results is intended, regenerate with \
             `VMEMSIM_BLESS=1 cargo test -p vmemsim-cli --test golden` and say why in the commit.",
            path.display(),
            line + 1,
            want.lines().nth(line).unwrap_or("<end>"),
            got.lines().nth(line).unwrap_or("<end>"),
        );
    }
}

#[test]
fn recording_sh_echo_wc() {
    golden(
        "sh-echo-wc",
        &["compare", "--trace", "tests/data/sh-echo-wc.vmt"],
    );
}

#[test]
fn recording_sh_sort_uniq() {
    golden(
        "sh-sort-uniq",
        &["compare", "--trace", "tests/data/sh-sort-uniq.vmt"],
    );
}

#[test]
fn recording_sh_ls_wc() {
    golden(
        "sh-ls-wc",
        &["compare", "--trace", "tests/data/sh-ls-wc.vmt"],
    );
}

/// [`golden`] of `compare --trace tests/data/NAME.vmt`.
fn recording(name: &str) {
    let path = format!("tests/data/{name}.vmt");
    golden(name, &["compare", "--trace", &path]);
}

#[test]
fn recording_gzip_small() {
    recording("gzip-small");
}

#[test]
fn recording_xz_small() {
    recording("xz-small");
}

#[test]
fn recording_sqlite_small() {
    recording("sqlite-small");
}

#[test]
fn recording_fork_workers() {
    recording("fork-workers");
}

#[test]
fn builtin_workloads_small() {
    golden(
        "builtin-small",
        &[
            "compare",
            "--workload",
            "seq",
            "--workload",
            "random",
            "--workload",
            "chase",
            "--workload",
            "procs",
            "--workload",
            "phases",
            "--accesses",
            "40000",
            "--footprint-mib",
            "16",
            "--seed",
            "7",
        ],
    );
}

#[test]
fn builtin_huge_pages_no_pcid() {
    golden(
        "builtin-huge-nopcid",
        &[
            "compare",
            "--config",
            "tests/golden/huge-nopcid.toml",
            "--workload",
            "random",
            "--workload",
            "procs",
            "--accesses",
            "40000",
            "--footprint-mib",
            "16",
        ],
    );
}

/// `vmemsim host` on an over-committed host under the ESX manager
/// (`tests/golden/host-esx.toml`): a real recording under shadow paging
/// next to GUPS under nested paging, with idle sampling, the idle tax,
/// ballooning and host swapping all acting; the per-VM table, the
/// manager's table and the JSON time series are pinned.
#[test]
fn host_esx_overcommitted() {
    golden(
        "host-esx",
        &["host", "--config", "tests/golden/host-esx.toml"],
    );
}

/// `vmemsim host` with content-based page sharing
/// (`tests/golden/host-sharing.toml`): one real recording in three VMs
/// under nested, shadow and direct paging on two pCPUs; the per-VM table,
/// the sharing tables and the JSON are pinned.
#[test]
fn host_sharing_three_modes() {
    golden(
        "host-sharing",
        &["host", "--config", "tests/golden/host-sharing.toml"],
    );
}
