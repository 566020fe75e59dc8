//! `vmemsim snapshot` end to end: a real program snapshot at exit, the
//! output never replaced without --force, bad arguments named.

mod common;

use common::vmemsim;

#[test]
fn snapshot_of_a_program_at_exit_and_no_overwrite() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("snapshot-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("true.json");
    let _ = std::fs::remove_file(&out);
    let o = out.to_str().unwrap();
    let r = vmemsim(&["snapshot", "-o", o, "--", "true"]);
    let err = String::from_utf8_lossy(&r.stderr);
    if !r.status.success() && err.contains("ptrace") {
        eprintln!("skipped: {err}");
        return;
    }
    assert!(r.status.success(), "{err}");
    assert!(err.contains("1 snapshot(s) of true"), "{err}");
    assert!(err.contains("at exit"), "{err}");
    let f = vmemsim_trace::snapshot::read(&out).unwrap();
    assert_eq!(f.snapshots.len(), 1);
    assert!(f.snapshots[0].present_pages() > 0);
    // Again without --force: refused, the file kept.
    let before = std::fs::read(&out).unwrap();
    let r = vmemsim(&["snapshot", "-o", o, "--", "true"]);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("refusing to overwrite"));
    assert_eq!(std::fs::read(&out).unwrap(), before);
    // Neither --pid nor a command; both; --every-ms 0.
    let r = vmemsim(&["snapshot", "-o", dir.join("x.json").to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("give --pid PID or -- COMMAND"));
    let r = vmemsim(&[
        "snapshot",
        "-o",
        dir.join("x.json").to_str().unwrap(),
        "--pid",
        "1",
        "--",
        "true",
    ]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("not both"));
    let r = vmemsim(&[
        "snapshot",
        "-o",
        dir.join("x.json").to_str().unwrap(),
        "--every-ms",
        "0",
        "--",
        "true",
    ]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("--every-ms 0"));
    assert!(!dir.join("x.json").exists());
}
