//! Memory-trace formats for vmemsim.
//!
//! - [`record`]: the records every reader yields ([`Record`], [`Access`], [`Event`]).
//!
//! Every reader implements [`RecordSource`]; malformed input is a
//! [`TraceError`] that names the file, the byte offset or line, and what was
//! expected; readers never panic on input.

pub mod champsim;
pub mod error;
pub mod lackey;
pub mod record;
pub mod recorder;
pub mod snapshot;
pub mod vmt;

mod open;
pub use open::{
    convert, convert_as, info, info_with, is_same_file, open, open_as, Checked, Format, TraceInfo,
};

pub use error::TraceError;
pub use record::{
    Access, AccessKind, Event, FileId, Fingerprint, MappedFile, ProcEvent, ProcessInfo, Record,
    RecordSource, FINGERPRINT_BYTES,
};
