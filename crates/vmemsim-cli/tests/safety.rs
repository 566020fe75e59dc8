//! Nothing a user recorded or wrote is lost, nothing wrong is reported as
//! right (issue 12): outputs checked before any work, no overwriting
//! without `--force`, no output naming an input, empty inputs refused,
//! `--trace -` named deterministically, formats detected by content.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::vmemsim;

/// A fresh directory for one test.
fn dir(test: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("safety-{test}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The command failed with status 2 and a message containing `want`.
fn fails(o: &Output, want: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains(want), "expected {want:?} in:\n{e}");
    assert!(!e.contains("panicked"), "{e}");
}

/// A small, fast run.
const SEQ_RUN: [&str; 7] = [
    "run",
    "--mode",
    "native",
    "--workload",
    "seq",
    "--accesses",
    "1000",
];

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/data/sh-echo-wc.vmt"
);

fn small_lackey() -> String {
    let mut t = String::from("==7== Command: x\n");
    for i in 0..200u64 {
        t.push_str(&format!(
            "I  {:08x},4\n S {:08x},8\n",
            0x40_0000 + 4 * i,
            0x10_0000 + 64 * i
        ));
    }
    t
}

#[test]
fn convert_never_replaces_its_input() {
    let d = dir("convert-self");
    let input = d.join("a.vmt");
    std::fs::copy(DATA, &input).unwrap();
    let before = std::fs::read(&input).unwrap();
    fails(&vmemsim(&["convert", s(&input), s(&input)]), "is the input");
    // Not even with --force, nor through another name for the same file.
    let link = d.join("link.vmt");
    std::fs::hard_link(&input, &link).unwrap();
    fails(
        &vmemsim(&["convert", "--force", s(&input), s(&link)]),
        "an output never replaces an input",
    );
    assert_eq!(std::fs::read(&input).unwrap(), before);
}

#[test]
fn convert_and_json_refuse_to_overwrite_without_force() {
    let d = dir("overwrite");
    let out = d.join("out.vmt");
    std::fs::write(&out, b"precious").unwrap();
    fails(
        &vmemsim(&["convert", DATA, s(&out)]),
        "exists: refusing to overwrite it (give --force to replace it)",
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    let o = vmemsim(&["convert", DATA, s(&out), "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json = d.join("r.json");
    std::fs::write(&json, b"keep").unwrap();
    let mut with_json = SEQ_RUN.to_vec();
    with_json.extend(["--json", s(&json)]);
    fails(&vmemsim(&with_json), "--json");
    assert_eq!(std::fs::read(&json).unwrap(), b"keep");
    with_json.push("--force");
    assert!(vmemsim(&with_json).status.success());
    assert!(std::fs::read_to_string(&json)
        .unwrap()
        .contains("\"modes\""));
}

#[test]
fn outputs_are_checked_before_any_work() {
    // Before, the whole simulation ran, then `--json` failed.
    let o = vmemsim(&[
        "compare",
        "--workload",
        "seq",
        "--json",
        "/nonexistent/x.json",
    ]);
    fails(
        &o,
        "--json /nonexistent/x.json: directory /nonexistent does not exist",
    );
    assert!(o.stdout.is_empty(), "no table: nothing was simulated");
    let d = dir("outputs-first");
    // A JSON report may not replace the trace or the config it reads.
    let trace = d.join("t.vmt");
    std::fs::copy(DATA, &trace).unwrap();
    fails(
        &vmemsim(&[
            "run",
            "--mode",
            "native",
            "--trace",
            s(&trace),
            "--json",
            s(&trace),
            "--force",
        ]),
        "is the input",
    );
    // --svg into a file, and over existing charts.
    let svgdir = d.join("svg");
    std::fs::create_dir_all(&svgdir).unwrap();
    std::fs::write(svgdir.join("seq.svg"), b"old").unwrap();
    let o = vmemsim(&[&SEQ_RUN[..], &["--svg", s(&svgdir)]].concat());
    fails(&o, "seq.svg exists: refusing to overwrite it");
    assert!(o.stdout.is_empty());
    fails(
        &vmemsim(&[
            "run",
            "--mode",
            "native",
            "--workload",
            "seq",
            "--svg",
            s(&trace),
        ]),
        "exists and is not a directory",
    );
    // merge checks its outputs before reading any input.
    let csv = d.join("m.csv");
    std::fs::write(&csv, b"keep").unwrap();
    fails(
        &vmemsim(&["merge", s(&d.join("no-such-dir")), "--csv", s(&csv)]),
        "--csv",
    );
    assert_eq!(std::fs::read(&csv).unwrap(), b"keep");
    // record -o DIR fails before recording anything (no Valgrind needed).
    fails(
        &vmemsim(&["record", "-o", s(&d), "--", "true"]),
        "is a directory; give a file name",
    );
    fails(
        &vmemsim(&["record", "-o", s(&trace), "--", "true"]),
        "exists: refusing to overwrite it",
    );
    // A .partial left by a killed recording holds data: kept too.
    let rec = d.join("rec.vmt");
    std::fs::write(d.join("rec.vmt.partial"), b"recorded").unwrap();
    fails(
        &vmemsim(&["record", "-o", s(&rec), "--", "true"]),
        "rec.vmt.partial exists",
    );
}

#[test]
fn empty_inputs_say_no_accesses_and_fail() {
    // Before: an all-zero table and "+320.00%" overhead, status 0.
    let d = dir("empty");
    let empty = d.join("empty.log");
    std::fs::write(&empty, b"").unwrap();
    let o = vmemsim(&["compare", "--trace", s(&empty)]);
    fails(&o, "no accesses: nothing to simulate");
    assert!(o.stdout.is_empty());
    fails(
        &vmemsim(&["compare", "--workload", "seq", "--accesses", "0"]),
        "no accesses: nothing to simulate",
    );
    // A trace of events only has no accesses either.
    let events = d.join("events.log");
    std::fs::write(
        &events,
        "SYSCALL[7,1](12) sys_brk ( 0x0 ) --> [pre-success] Success(0x4035000)\n",
    )
    .unwrap();
    fails(
        &vmemsim(&["run", "--mode", "shadow", "--trace", s(&events)]),
        "no accesses",
    );
}

/// `compare --trace -` of `input` with two modes, writing `json`, with the
/// temporary directory `tmp`.
fn from_stdin(input: &[u8], json: &Path, tmp: &Path) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmemsim"))
        .args([
            "compare",
            "--modes",
            "native,shadow",
            "--trace",
            "-",
            "--json",
            s(json),
            "--force",
        ])
        .env("TMPDIR", tmp)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(input).unwrap();
    c.wait_with_output().unwrap()
}

#[test]
fn stdin_is_named_stdin_and_leaves_no_spool() {
    let d = dir("stdin");
    let tmp = d.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let (a, b) = (d.join("a.json"), d.join("b.json"));
    for j in [&a, &b] {
        let o = from_stdin(small_lackey().as_bytes(), j, &tmp);
        assert!(o.status.success(), "{}", stderr(&o));
        let table = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            table.contains("workload: trace from standard input (lackey)"),
            "{table}"
        );
    }
    // Deterministic: the spool file's name is in neither report.
    let (ja, jb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(ja, jb);
    assert!(String::from_utf8_lossy(&ja).contains("\"workload\": \"stdin\""));
    // A bad line fails the spool: nothing is left in the temporary directory.
    let o = from_stdin(b"I  04000000,4\nnot lackey at all\n", &a, &tmp);
    fails(&o, "line 2");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn formats_are_detected_by_content_and_named() {
    let d = dir("formats");
    // A lackey log compressed with gzip and named like a ChampSim trace.
    let plain = d.join("log.txt");
    std::fs::write(&plain, small_lackey()).unwrap();
    let gz = d.join("x.champsim.gz");
    let o = Command::new("gzip")
        .args(["-c", s(&plain)])
        .output()
        .expect("gzip");
    std::fs::write(&gz, o.stdout).unwrap();
    let o = vmemsim(&["info", s(&gz)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        text.contains("format:      lackey (detected from content; gzip compressed)"),
        "{text}"
    );
    assert!(
        text.contains("accesses:    400  fetch 200  load 0  store 200"),
        "{text}"
    );
    let o = vmemsim(&["run", "--mode", "native", "--trace", s(&gz)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("(format lackey, detected, gzip compressed)"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // Binary data named `trace.xz`: ChampSim (standard layout); 96 records
    // of 64 bytes are also 64 of 96.
    let mut bin = Vec::new();
    for i in 0..96u64 {
        let mut r = [0u8; 64];
        r[..8].copy_from_slice(&(0x40_0000 + 4 * i).to_le_bytes());
        r[32..40].copy_from_slice(&(0x10_0000 + 4096 * i).to_le_bytes());
        bin.extend_from_slice(&r);
    }
    let raw = d.join("raw");
    std::fs::write(&raw, &bin).unwrap();
    let o = Command::new("xz")
        .args(["-c", s(&raw)])
        .output()
        .expect("xz");
    let xz = d.join("trace.xz");
    std::fs::write(&xz, o.stdout).unwrap();
    let text = String::from_utf8_lossy(&vmemsim(&["info", s(&xz)]).stdout).into_owned();
    assert!(
        text.contains("format:      champsim (detected from content; xz compressed)"),
        "{text}"
    );
    assert!(
        text.contains("accesses:    192  fetch 96  load 96"),
        "{text}"
    );
    // --format overrides: the same bytes as CloudSuite records (96 bytes).
    let text =
        String::from_utf8_lossy(&vmemsim(&["info", "--format", "cloudsuite", s(&raw)]).stdout)
            .into_owned();
    assert!(
        text.contains("format:      champsim-cloudsuite (as given by --format)"),
        "{text}"
    );
    fails(
        &vmemsim(&["info", "--format", "elf", s(&raw)]),
        "unknown trace format",
    );
}

#[test]
fn info_says_what_it_verified() {
    let d = dir("verify");
    let good = d.join("good.vmt");
    std::fs::copy(DATA, &good).unwrap();
    let text = String::from_utf8_lossy(&vmemsim(&["info", s(&good)]).stdout).into_owned();
    assert!(text.contains("counts from: the footer only"), "{text}");
    let o = vmemsim(&["info", "--verify", s(&good)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        text.contains("counts from: every block decoded and checked"),
        "{text}"
    );
    assert!(text.contains("status:      complete"), "{text}");
    // A flipped bit in the first block: plain info cannot know; --verify fails.
    let mut bytes = std::fs::read(&good).unwrap();
    let at = 400;
    bytes[at] ^= 0x10;
    let flipped = d.join("flipped.vmt");
    std::fs::write(&flipped, &bytes).unwrap();
    let text = String::from_utf8_lossy(&vmemsim(&["info", s(&flipped)]).stdout).into_owned();
    assert!(text.contains("blocks not decoded"), "{text}");
    fails(&vmemsim(&["info", "--verify", s(&flipped)]), "block 0");
    // A cut file is not "complete" (its header says so, its footer is gone).
    let bytes = std::fs::read(&good).unwrap();
    let cut = d.join("cut.vmt");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let o = vmemsim(&["info", s(&cut)]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(text.contains("status:      cut short"), "{text}");
    assert!(!text.contains("complete"), "{text}");
}
