//! `vmemsim record` end to end (needs Valgrind; skipped without it): exit
//! statuses scripts can tell apart, SIGHUP handled like SIGTERM, and a
//! recorder killed outright takes the program with it and leaves a
//! `.partial` readable up to its last whole block (issue 12).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn valgrind_ok() -> bool {
    vmemsim_trace::recorder::valgrind_runs(None)
}

fn dir(test: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("record-{test}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

mod common;
use common::vmemsim;

fn spawn_record(out: &Path, program: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vmemsim"))
        .args(["record", "-o", out.to_str().unwrap(), "--"])
        .args(program)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait until `path` holds more than `bytes` bytes (the recording is under way).
fn wait_for_size(path: &Path, bytes: u64) {
    let t = Instant::now();
    while std::fs::metadata(path).map_or(0, |m| m.len()) <= bytes {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "{} never grew past {bytes} bytes",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(marker) {
                found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

#[test]
fn exit_status_tells_a_failed_program_from_a_good_one() {
    if !valgrind_ok() {
        return;
    }
    let d = dir("status");
    let ok = vmemsim(&[
        "record",
        "-o",
        d.join("t.vmt").to_str().unwrap(),
        "--",
        "true",
    ]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = d.join("f.vmt");
    let o = vmemsim(&[
        "record",
        "-o",
        bad.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "exit 5",
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains(
            "the recorded program failed with status 5; the trace is complete (exit status 1)"
        ),
        "{e}"
    );
    let info =
        String::from_utf8_lossy(&vmemsim(&["info", bad.to_str().unwrap()]).stdout).into_owned();
    assert!(
        info.contains("status:      complete, exit code 5"),
        "{info}"
    );
}

#[test]
fn sighup_finishes_a_truncated_trace_with_status_3() {
    // Before, SIGHUP (a closed terminal) killed the recorder: a 0-byte
    // `.partial`, everything recorded lost.
    if !valgrind_ok() {
        return;
    }
    let d = dir("sighup");
    let out = d.join("hup.vmt");
    let child = spawn_record(&out, &["sh", "-c", "while :; do sleep 0.1; done"]);
    wait_for_size(&PathBuf::from(format!("{}.partial", out.display())), 0);
    std::thread::sleep(Duration::from_secs(2));
    signal(&child, "-HUP");
    let o = child.wait_with_output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{e}");
    assert!(
        e.contains("truncated: recording interrupted by SIGHUP"),
        "{e}"
    );
    let info =
        String::from_utf8_lossy(&vmemsim(&["info", out.to_str().unwrap()]).stdout).into_owned();
    assert!(
        info.contains("status:      truncated: recording interrupted by SIGHUP"),
        "{info}"
    );
}

#[test]
fn sigkill_of_the_recorder_kills_the_program_and_keeps_whole_blocks() {
    // Before, the recorded program (under Valgrind) ran on after the
    // recorder was killed, and the `.partial` held only what a 1 MiB
    // buffer had let through.
    if !valgrind_ok() {
        return;
    }
    let d = dir("sigkill");
    let out = d.join("busy.vmt");
    let partial = PathBuf::from(format!("{}.partial", out.display()));
    let marker = format!("vmemsim-orphan-check-{}", std::process::id());
    // `sh -c SCRIPT NAME`: the marker is the shell's $0, on its command line.
    let child = spawn_record(&out, &["sh", "-c", "while :; do :; done", &marker]);
    // More than the header: at least one whole block is on disk.
    wait_for_size(&partial, 1000);
    signal(&child, "-KILL");
    let _ = child.wait_with_output();
    let t = Instant::now();
    while !processes_with(&marker).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "left running: {:?}",
            processes_with(&marker)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = vmemsim(&["info", partial.to_str().unwrap()]);
    let info = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(info.contains("status:      unfinished"), "{info}");
    assert!(!info.contains("accesses:    0 "), "{info}");
    // And it simulates, saying it read up to the last whole block.
    let o = vmemsim(&[
        "run",
        "--mode",
        "native",
        "--trace",
        partial.to_str().unwrap(),
    ]);
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        table.contains("reading up to the last whole block"),
        "{table}"
    );
}

#[test]
fn tool_option_picks_the_recording_tool_and_names_it_in_the_trace() {
    // A bad tool name is a usage error naming the value (no Valgrind needed).
    let d = dir("tool");
    let o = vmemsim(&[
        "record",
        "--tool",
        "cachegrind",
        "-o",
        d.join("x.vmt").to_str().unwrap(),
        "--",
        "true",
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("unknown recording tool `cachegrind`: expected auto, vmemsim or lackey"),
        "{e}"
    );
    assert!(!d.join("x.vmt").exists());
    if !valgrind_ok() {
        return;
    }
    let vmemsim_builds = vmemsim_trace::recorder::vmemsim_tool_dir(None).is_ok();
    if !vmemsim_builds {
        eprintln!("SKIPPED (vmemsim tool part): the vmemsim Valgrind tool cannot be built here");
    }
    for (tool, expect) in [
        ("lackey", "--tool=lackey"),
        (
            "auto",
            if vmemsim_builds {
                "--tool=vmemsim"
            } else {
                "--tool=lackey"
            },
        ),
    ] {
        let out = d.join(format!("{tool}.vmt"));
        let o = vmemsim(&[
            "record",
            "--tool",
            tool,
            "-o",
            out.to_str().unwrap(),
            "--",
            "true",
        ]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{tool}: {e}");
        let info =
            String::from_utf8_lossy(&vmemsim(&["info", out.to_str().unwrap()]).stdout).into_owned();
        assert!(info.contains(expect), "{tool}: {info}");
        assert!(
            info.contains("status:      complete, exit code 0"),
            "{tool}: {info}"
        );
    }
}
