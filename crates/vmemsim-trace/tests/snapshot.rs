//! Snapshots of real processes (skipped, with a message, where procfs
//! does not let the test read a traced child's memory).

use std::ffi::OsString;

use vmemsim_trace::snapshot::{self, Snapshot};

/// Run `cmd` under the snapshotter; `None` (with a message) where
/// ptrace or /proc/PID/mem is not available.
fn snap(cmd: &[&str]) -> Option<Snapshot> {
    let cmd: Vec<OsString> = cmd.iter().map(OsString::from).collect();
    match snapshot::run_and_snapshot(&cmd, None) {
        Ok((f, code)) => {
            assert_eq!(code, 0);
            assert_eq!(f.snapshots.len(), 1, "one snapshot, at exit");
            Some(f.snapshots.into_iter().next().unwrap())
        }
        Err(e) => {
            eprintln!("skipped: cannot snapshot a traced child here: {e}");
            None
        }
    }
}

/// Executable file-backed pages (text) of a snapshot: (fingerprint hash,
/// file offset of the page) -> content hash. (Read-only data is not
/// compared: the RELRO part of it holds pointers relocated at load time,
/// which differ between runs with ASLR.)
fn file_pages(s: &Snapshot) -> std::collections::HashMap<(u64, u64), u64> {
    let mut m = std::collections::HashMap::new();
    for v in &s.vmas {
        let (Some(fp), true) = (v.fingerprint, v.perms.starts_with("r-x")) else {
            continue;
        };
        for &(i, h) in &v.pages {
            m.insert((fp.hash, v.offset + i * 4096), h);
        }
    }
    m
}

/// `sleep 0` (a small C program: the dynamic loader, libc) at exit: a
/// plausible zero-page fraction (under half: a program that ran has
/// touched most pages it has; untouched ones are not present), libc's
/// pages present, and the text pages of two runs of the same program hold
/// the same bytes at the same file offsets.
#[test]
fn snapshot_of_a_real_process_at_exit() {
    let Some(a) = snap(&["sleep", "0"]) else {
        return;
    };
    let Some(b) = snap(&["sleep", "0"]) else {
        return;
    };
    let present = a.present_pages();
    let zero = a.zero_pages();
    println!(
        "sleep 0: {present} present pages, {zero} zero, {} VMAs, {} unreadable",
        a.vmas.len(),
        a.unreadable_vmas
    );
    assert!(present > 20, "{present} present pages");
    // Zero pages: the untouched parts of the stack and of bss/heap pages
    // the allocator zeroed; not most of memory for a program that ran.
    assert!(zero < present / 2, "{zero} of {present} pages zero");
    assert!(
        a.vmas.iter().any(
            |v| v.path.as_deref().is_some_and(|p| p.contains("libc.so")) && !v.pages.is_empty()
        ),
        "libc pages present"
    );
    let (fa, fb) = (file_pages(&a), file_pages(&b));
    let common: Vec<_> = fa.keys().filter(|k| fb.contains_key(k)).collect();
    assert!(common.len() > 10, "{} file pages in both", common.len());
    for k in common {
        assert_eq!(fa[k], fb[k], "file page {k:?} differs between two runs");
    }
    // Round trip through the file format.
    let file = snapshot::SnapshotFile {
        format: snapshot::FORMAT.into(),
        version: snapshot::SNAPSHOT_VERSION,
        source: "sleep 0".into(),
        snapshots: vec![a],
    };
    let p = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("snap.json");
    std::fs::write(&p, snapshot::to_json(&file)).unwrap();
    assert_eq!(snapshot::read(&p).unwrap(), file);
}

#[test]
fn snapshot_of_a_pid_that_does_not_exist_names_the_file() {
    let e = snapshot::snapshot_pid(u32::MAX - 1, "now", 0).unwrap_err();
    assert!(e.to_string().contains("/proc/4294967294/maps"), "{e}");
}

/// `--pid` of a process the caller may read (itself): a buffer of zeros
/// it touched shows up as that many zero pages, and one it filled as
/// non-zero pages with one content.
#[test]
fn snapshot_of_a_pid_sees_zero_and_written_pages() {
    // 64 pages of zeros (touched so they are present) and 64 of 0xab.
    let mut zeros = vec![0u8; 64 * 4096 + 4096];
    for i in (0..zeros.len()).step_by(4096) {
        zeros[i] = 1;
        zeros[i] = 0;
        std::hint::black_box(&mut zeros);
    }
    let ones = vec![0xabu8; 64 * 4096 + 4096];
    let s = match snapshot::snapshot_pid(std::process::id(), "now", 0) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipped: /proc/self/mem unreadable here: {e}");
            return;
        }
    };
    let ab = snapshot::page_hash(&[0xab; 4096]);
    let pages: Vec<u64> = s
        .vmas
        .iter()
        .flat_map(|v| v.pages.iter().map(|p| p.1))
        .collect();
    // At least the 63 whole pages inside each buffer.
    assert!(pages.iter().filter(|&&h| h == ab).count() >= 63);
    assert!(pages.iter().filter(|&&h| h == 0).count() >= 63);
    std::hint::black_box((&zeros, &ones));
}
