//! SIGTERM during a recording: the trace is still finished, marked truncated,
//! and readable. The recording runs in a child process (this test binary
//! re-run with `VMEMSIM_RECORD_SIGNAL_CHILD` set) so the signal reaches only it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use vmemsim_trace::recorder::{record, RecordOptions};
use vmemsim_trace::{vmt, RecordSource};

const CHILD_ENV: &str = "VMEMSIM_RECORD_SIGNAL_CHILD";

fn out_path() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("sigterm.vmt")
}

/// The recording itself; does nothing unless run as the child.
#[test]
fn signal_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let opts = RecordOptions {
        output: out_path(),
        command: ["sh", "-c", "while :; do sleep 0.2; done"]
            .iter()
            .map(OsString::from)
            .collect(),
        valgrind: None,
        tool: Default::default(),
    };
    let s = record(&opts).unwrap();
    println!("SUMMARY: {s}");
}

#[test]
fn sigterm_finishes_a_truncated_trace() {
    if !vmemsim_trace::recorder::valgrind_runs(None) {
        return;
    }
    let _ = std::fs::remove_file(out_path());
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["signal_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("truncated: recording interrupted by SIGTERM"),
        "{text}"
    );

    let mut r = vmt::Reader::open(&out_path()).unwrap();
    assert!(r.header().is_truncated());
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        buf.clear();
        let got = r.next_batch(&mut buf, 4096).unwrap();
        if got == 0 {
            break;
        }
        n += got;
    }
    assert!(n > 0);
    assert!(r.processes().len() > 1, "{:?}", r.processes());
}
