//! The in-memory trace records every reader produces and every writer takes.
//!
//! One [`Record`] is either a memory [`Access`] of one process or a process
//! [`Event`] (mmap, munmap, brk, mprotect, fork, exec, exit). Records are in
//! global program order: the order in which the recorded processes issued
//! them, interleaved as the recorder saw them.

/// Kind of a memory access, as Valgrind's lackey reports it
/// (`I` fetch, `L` load, `S` store, `M` modify = load then store).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AccessKind {
    /// Instruction fetch (`I`). One fetch is one retired instruction.
    Fetch = 0,
    /// Data load (`L`).
    Load = 1,
    /// Data store (`S`).
    Store = 2,
    /// Read-modify-write of one location (`M`): needs write permission.
    Modify = 3,
}

impl AccessKind {
    /// True for accesses that need write permission (store, modify).
    #[inline]
    pub fn is_write(self) -> bool {
        matches!(self, AccessKind::Store | AccessKind::Modify)
    }

    /// Decode from the `repr(u8)` value; `None` for values above 3.
    #[inline]
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(AccessKind::Fetch),
            1 => Some(AccessKind::Load),
            2 => Some(AccessKind::Store),
            3 => Some(AccessKind::Modify),
            _ => None,
        }
    }
}

/// One memory access by one process: 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    /// Guest-virtual address (gVA) of the first byte.
    pub addr: u64,
    /// Recorded process id of the accessing process.
    pub pid: u32,
    /// Size of the access in bytes (lackey reports 1 to 64; ChampSim 0 = unknown).
    pub size: u16,
    /// Fetch, load, store or modify.
    pub kind: AccessKind,
}

/// A process event, with the result the kernel returned where that matters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProcEvent {
    /// `fork`/`clone`/`vfork` that created a new process (not a thread):
    /// the event's pid is the parent; `child` the new process id. The child
    /// starts with a copy-on-write copy of the parent's address space.
    Fork {
        /// Process id of the new child.
        child: u32,
    },
    /// Successful `execve`: the process's address space is replaced by a new,
    /// empty one (the new image's mappings follow as `Mmap` events or are
    /// discovered as implicit mappings on first touch).
    Exec,
    /// Successful `mmap`: `addr` is the address the kernel returned.
    Mmap {
        /// Start gVA of the new mapping (page aligned).
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// `PROT_*` bits (1 read, 2 write, 4 exec).
        prot: u32,
        /// `MAP_*` flags as passed by the program.
        flags: u32,
        /// The file mapped and the offset in it, for a mapping of a file
        /// the recorder could name (`None`: anonymous, or a file descriptor
        /// whose `open` the recorder did not see; always `None` in
        /// `.vmt` version 2).
        file: Option<MappedFile>,
    },
    /// Successful `munmap` of `[addr, addr + len)`.
    Munmap {
        /// Start gVA (page aligned).
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// `brk`: the program break after the call (the kernel's return value).
    Brk {
        /// New program break (gVA).
        addr: u64,
    },
    /// Successful `mprotect` of `[addr, addr + len)` to `prot`.
    Mprotect {
        /// Start gVA (page aligned).
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// New `PROT_*` bits.
        prot: u32,
    },
    /// The process exited (or was killed) with this status.
    Exit {
        /// Exit code, or 128 + signal number when killed by a signal.
        code: i32,
    },
}

/// What identifies a file's contents, measured when the recorder saw the
/// file opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    /// File size in bytes.
    pub size: u64,
    /// XXH3-64 of the file's first [`FINGERPRINT_BYTES`] bytes (all of it
    /// when smaller): equal files give equal fingerprints whatever their
    /// path, mtime or machine.
    pub hash: u64,
}

/// Bytes of a file hashed into its [`Fingerprint`] (64 MiB: every shared
/// library and program image whole; a bigger file by its head and size).
pub const FINGERPRINT_BYTES: u64 = 64 << 20;

/// A file as a recording names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    /// The path the program opened, as it passed it (possibly relative to
    /// its working directory); lossily UTF-8.
    pub path: String,
    /// The file's size and content hash, `None` when the file could not be
    /// read when it was opened (or the trace came from a log read offline).
    pub fingerprint: Option<Fingerprint>,
}

/// The file behind a file-backed `mmap`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MappedFile {
    /// The file (shared by every mapping of it in a trace).
    pub file: std::sync::Arc<FileId>,
    /// Offset in the file of the mapping's first byte (the `mmap` offset).
    pub offset: u64,
}

/// A process event tagged with the process it happened in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    /// Recorded process id.
    pub pid: u32,
    /// What happened.
    pub kind: ProcEvent,
}

/// One trace record: an access or a process event. Build an event record
/// with [`Record::event`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Record {
    /// A memory access.
    Access(Access),
    /// A process event (boxed: events are rare, and keeping them out of
    /// line makes a `Record` 24 bytes instead of 40, which decoding and the
    /// simulation loop move hundreds of millions of times).
    Event(Box<Event>),
}

impl Record {
    /// An event record for `pid`.
    pub fn event(pid: u32, kind: ProcEvent) -> Record {
        Record::Event(Box::new(Event { pid, kind }))
    }
}

/// One process that appears in a trace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct ProcessInfo {
    /// Recorded process id.
    pub pid: u32,
    /// Parent's recorded process id, `None` for the root process(es).
    pub parent: Option<u32>,
    /// Command line or image name as recorded (may be empty).
    pub command: String,
}

/// A source of trace records, decoded in bulk.
///
/// Readers of every format and the built-in workload generators implement it,
/// so the simulator takes any of them.
pub trait RecordSource {
    /// Append up to `max` records to `buf` (which the caller has cleared).
    /// Returns the number appended; 0 means the source is exhausted.
    ///
    /// # Errors
    /// A [`crate::TraceError`] naming the file and byte offset or line of
    /// malformed input.
    fn next_batch(&mut self, buf: &mut Vec<Record>, max: usize)
        -> Result<usize, crate::TraceError>;

    /// Processes known up front (from a header or process table); may be
    /// empty for formats that have none.
    fn processes(&self) -> &[ProcessInfo] {
        &[]
    }

    /// Warnings gathered while reading (for example "trace truncated after
    /// block 12"): shown to the user after the run.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

impl<T: RecordSource + ?Sized> RecordSource for Box<T> {
    fn next_batch(
        &mut self,
        buf: &mut Vec<Record>,
        max: usize,
    ) -> Result<usize, crate::TraceError> {
        (**self).next_batch(buf, max)
    }
    fn processes(&self) -> &[ProcessInfo] {
        (**self).processes()
    }
    fn warnings(&self) -> Vec<String> {
        (**self).warnings()
    }
}
