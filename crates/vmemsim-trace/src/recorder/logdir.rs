//! The private directory Valgrind writes its logs into, and the removal of
//! those that killed recorders left behind.

use std::path::{Path, PathBuf};

use crate::TraceError;

/// Where the logs go unless `TMPDIR` is set: a tmpfs, on which Valgrind's
/// one `write(2)` per log line is cheaper than on a disk file system and no
/// log text is ever written back to disk.
const SHM_DIR: &str = "/dev/shm";

/// Remove the log directories that recorders killed outright (SIGKILL,
/// a crash) left in `base`: `vmemsim-record-PID-*` of a PID with no live
/// process (no `/proc/PID`). Such a recorder took its Valgrind processes
/// with it, so nothing reads these logs any more; under `/dev/shm` they
/// would hold RAM until reboot. Directories of live PIDs, of other users
/// (not removable) and anything else are left alone; without `/proc`
/// nothing is removed. Errors are ignored: this is housekeeping.
fn remove_stale_log_dirs(base: &Path) {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("vmemsim-record-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !proc.join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A fresh private directory for the logs: under `$TMPDIR` when it is set,
/// else under [`SHM_DIR`] when that is usable, else under the system
/// temporary directory.
pub(super) fn make_log_dir() -> Result<PathBuf, TraceError> {
    if std::env::var_os("TMPDIR").is_none() {
        if let Ok(d) = make_log_dir_in(Path::new(SHM_DIR)) {
            return Ok(d);
        }
    }
    make_log_dir_in(&std::env::temp_dir())
}

fn make_log_dir_in(base: &Path) -> Result<PathBuf, TraceError> {
    remove_stale_log_dirs(base);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for i in 0..100u32 {
        let d = base.join(format!(
            "vmemsim-record-{}-{nanos:x}-{i}",
            std::process::id()
        ));
        // Private: the logs show the program's addresses and file names.
        let made = {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().mode(0o700).create(&d)
        };
        match made {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(TraceError::io(&d, e)),
        }
    }
    Err(TraceError::io(
        base,
        std::io::Error::other("cannot create a private log directory"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_log_dir_removes_those_of_dead_recorders_only() {
        let base = std::env::temp_dir().join(format!("vmemsim-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        // A PID that has just exited: a child we waited for (not reused
        // this fast: Linux hands out PIDs in increasing order).
        let dead = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        let mut dead = dead;
        dead.wait().unwrap();
        let stale = base.join(format!("vmemsim-record-{dead_pid}-1a2b-0"));
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(stale.join("123.1"), b"log").unwrap();
        let live = base.join(format!("vmemsim-record-{}-1a2b-0", std::process::id()));
        std::fs::create_dir_all(&live).unwrap();
        let other = base.join("vmemsim-record-notapid");
        std::fs::create_dir_all(&other).unwrap();
        let made = make_log_dir_in(&base).unwrap();
        assert!(!stale.exists(), "the dead recorder's directory stays");
        assert!(live.exists() && other.exists() && made.exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
