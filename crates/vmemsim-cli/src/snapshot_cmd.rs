//! `vmemsim snapshot`: the contents of a live process's pages (hashes per
//! present page, with VMAs and file identities), for page-sharing
//! experiments on real programs (docs/sharing.md).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use vmemsim_trace::snapshot::{self, SnapshotFile};

use crate::output::Outputs;

/// Take the snapshot(s) and write them to `output` (never over an
/// existing file without `force`). Returns the exit code: the program's
/// for `-- CMD`, 0 for `--pid`.
pub fn snapshot(
    pid: Option<u32>,
    output: PathBuf,
    every_ms: Option<u64>,
    command: Vec<OsString>,
    force: bool,
) -> Result<i32> {
    let outputs = Outputs::new(force, []);
    outputs.check_file(&output, "output")?;
    if every_ms == Some(0) {
        bail!("--every-ms 0: give a period of at least 1 ms");
    }
    let every = every_ms.map(Duration::from_millis);
    let (file, code) = match (pid, command.is_empty()) {
        (Some(p), true) => (
            snapshot::watch_pid(p, every).with_context(|| format!("snapshot of pid {p}"))?,
            0,
        ),
        (None, false) => snapshot::run_and_snapshot(&command, every)
            .with_context(|| format!("snapshot of {}", command[0].to_string_lossy()))?,
        (Some(_), false) => bail!("give either --pid PID or -- COMMAND, not both"),
        (None, true) => bail!("give --pid PID or -- COMMAND"),
    };
    if file.snapshots.is_empty() {
        bail!("no snapshot taken (the program ended before it could be read)");
    }
    outputs.write(&output, &snapshot::to_json(&file))?;
    eprintln!("{}", summary(&file, &output));
    Ok(code)
}

/// One line per snapshot: pages present, zero pages, file-backed pages.
fn summary(f: &SnapshotFile, output: &std::path::Path) -> String {
    let mut s = format!(
        "{}: {} snapshot(s) of {}",
        output.display(),
        f.snapshots.len(),
        f.source
    );
    for x in &f.snapshots {
        let present = x.present_pages();
        let file: u64 = x
            .vmas
            .iter()
            .filter(|v| v.is_file())
            .map(|v| v.pages.len() as u64)
            .sum();
        s += &format!(
            "\n  {:>6} ms {:<9} pid {}: {} VMAs ({} unreadable), {} present pages, {} zero ({:.1}%), {} file-backed",
            x.time_ms,
            x.when,
            x.pid,
            x.vmas.len(),
            x.unreadable_vmas,
            present,
            x.zero_pages(),
            100.0 * x.zero_pages() as f64 / present.max(1) as f64,
            file
        );
    }
    s
}
