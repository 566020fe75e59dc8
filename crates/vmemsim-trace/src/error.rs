//! Errors of trace reading and writing.

use std::path::{Path, PathBuf};

/// What went wrong reading or writing a trace. Every variant names the place.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// I/O failure on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Malformed input at a byte offset or line.
    #[error("{path}: {at}: {what}")]
    Malformed {
        /// The file (or `<stdin>`).
        path: PathBuf,
        /// Where: e.g. "byte 4096" or "line 17".
        at: String,
        /// What was found and what was expected.
        what: String,
    },
}

impl TraceError {
    /// [`TraceError::Io`] on `path`.
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        TraceError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
