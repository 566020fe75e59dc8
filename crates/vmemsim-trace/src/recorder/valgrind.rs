//! Finding Valgrind, the program to record, and the vmemsim tool's
//! directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::tool;
use crate::TraceError;

/// Find the `valgrind` executable: `explicit` if given, else on `PATH`.
///
/// # Errors
/// [`TraceError::Io`] (not found) saying how to install Valgrind.
pub fn find_valgrind(explicit: Option<&Path>) -> Result<PathBuf, TraceError> {
    let missing = |path: PathBuf| {
        TraceError::Io {
        path,
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "valgrind not found: recording needs Valgrind (Debian/Ubuntu: `apt-get install valgrind`)",
        ),
    }
    };
    let name = explicit.unwrap_or(Path::new("valgrind"));
    which::which(name).map_err(|_| missing(name.to_path_buf()))
}

/// True when Valgrind (`explicit`, else `valgrind` on `PATH`) is installed
/// and can run a program here (`valgrind --tool=none -q /bin/true`); tests
/// that record skip themselves otherwise, saying so on standard error.
pub fn valgrind_runs(explicit: Option<&Path>) -> bool {
    let ok = find_valgrind(explicit).is_ok_and(|v| {
        Command::new(v)
            .args(["--tool=none", "-q", "/bin/true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !ok {
        eprintln!("SKIPPED: valgrind is missing or cannot run here (apt-get install valgrind)");
    }
    ok
}

/// The `VALGRIND_LIB` directory that holds the built `vmemsim` tool (and
/// links to Valgrind's own files), building it first if needed (see
/// [`RecordTool::Vmemsim`](super::RecordTool::Vmemsim)). For tests and
/// troubleshooting: running `VALGRIND_LIB=DIR valgrind --tool=vmemsim ...`
/// by hand gives the log the recorder reads, and running lackey with the
/// same `VALGRIND_LIB` gives the program the same environment (so the same
/// stack addresses) as under the vmemsim tool.
///
/// # Errors
/// [`TraceError::Io`] when Valgrind is missing or the tool cannot be built
/// here (the message says why).
pub fn vmemsim_tool_dir(valgrind: Option<&Path>) -> Result<PathBuf, TraceError> {
    let valgrind = find_valgrind(valgrind)?;
    let version = valgrind_version(&valgrind)?;
    tool::prepare(&valgrind, &version)
        .map(|t| t.lib)
        .map_err(|why| {
            TraceError::io(
                &valgrind,
                std::io::Error::other(format!("cannot use the vmemsim Valgrind tool: {why}")),
            )
        })
}

/// `valgrind --version`, trimmed (e.g. `valgrind-3.19.0`).
pub(super) fn valgrind_version(valgrind: &Path) -> Result<String, TraceError> {
    let version = Command::new(valgrind)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| TraceError::io(valgrind, e))?;
    if !version.status.success() {
        return Err(TraceError::io(
            valgrind,
            std::io::Error::other(format!(
                "`{} --version` failed: Valgrind cannot run here",
                valgrind.display()
            )),
        ));
    }
    Ok(String::from_utf8_lossy(&version.stdout).trim().to_string())
}

/// Find the program to record (a path, or a name on `PATH`), so a missing
/// program is an error before Valgrind starts rather than a trace of
/// Valgrind failing to exec it.
///
/// # Errors
/// [`TraceError::Io`] naming the program.
pub fn find_program(program: &std::ffi::OsStr) -> Result<PathBuf, TraceError> {
    which::which(program).map_err(|e| TraceError::Io {
        path: PathBuf::from(program),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "program to record not found ({e}): give a path to an executable or a name on PATH"
            ),
        ),
    })
}
