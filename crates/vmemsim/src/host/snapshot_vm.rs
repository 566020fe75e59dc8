//! A VM that starts from snapshots of real processes (`vmemsim
//! snapshot`): each snapshot file's last snapshot becomes a guest process
//! that maps the snapshot's VMAs (file VMAs with their file identity) and
//! touches each present page once, and whose pages then hold the
//! snapshot's content hashes (an all-zero page is the model's zero
//! content). These processes never exit: they are the resident programs
//! of the VM, before and while its workload or trace runs.

use std::path::Path;
use std::sync::Arc;

use vmemsim_trace::snapshot::{self, Snapshot};
use vmemsim_trace::{
    Access, AccessKind, FileId, MappedFile, ProcEvent, ProcessInfo, Record, RecordSource,
    TraceError,
};

use crate::guest::content::ContentId;
use crate::SimError;

/// Pid of the process made from the `k`-th snapshot of a VM: far above
/// the pids of recordings (Linux's pid_max is at most 2^22).
pub const SNAPSHOT_PID_BASE: u32 = 1 << 30;

/// The records that build the snapshot processes, and the content of each
/// page they touch: ((pid, virtual page number), content).
pub type SnapshotStart = (Vec<Record>, Vec<((u32, u64), ContentId)>);

fn prot(perms: &str) -> u32 {
    let b = perms.as_bytes();
    u32::from(b.first() == Some(&b'r'))
        | u32::from(b.get(1) == Some(&b'w')) << 1
        | u32::from(b.get(2) == Some(&b'x')) << 2
}

/// Records and contents of one snapshot as process `pid`.
fn one(s: &Snapshot, pid: u32, recs: &mut Vec<Record>, pages: &mut Vec<((u32, u64), ContentId)>) {
    for v in &s.vmas {
        if v.end <= v.start || v.end > crate::guest::os::USER_TOP {
            continue; // [vsyscall] lies in the kernel half
        }
        let file = v.fingerprint.map(|fp| MappedFile {
            file: Arc::new(FileId {
                path: v.path.clone().unwrap_or_default(),
                fingerprint: Some(fp),
            }),
            offset: v.offset,
        });
        let flags = if file.is_some() { 0x02 } else { 0x22 };
        recs.push(Record::event(
            pid,
            ProcEvent::Mmap {
                addr: v.start,
                len: v.end - v.start,
                prot: prot(&v.perms),
                flags,
                file,
            },
        ));
        for &(i, h) in &v.pages {
            let va = v.start + i * 4096;
            recs.push(Record::Access(Access {
                addr: va,
                pid,
                size: 1,
                kind: AccessKind::Load,
            }));
            pages.push(((pid, va >> 12), h));
        }
    }
}

/// The start of a VM from `files` (the last snapshot of each).
///
/// # Errors
/// A file that cannot be read or is not a snapshot file, or one with no
/// snapshot, named.
pub fn load(files: &[impl AsRef<Path>]) -> Result<SnapshotStart, SimError> {
    let mut recs = Vec::new();
    let mut pages = Vec::new();
    for (k, p) in files.iter().enumerate() {
        let f = snapshot::read(p.as_ref()).map_err(SimError::from)?;
        let s = f.snapshots.last().ok_or_else(|| {
            SimError::Workload(format!("{}: holds no snapshot", p.as_ref().display()))
        })?;
        one(s, SNAPSHOT_PID_BASE + k as u32, &mut recs, &mut pages);
    }
    Ok((recs, pages))
}

/// `first`'s records, then `rest`'s.
pub struct Chain {
    first: Vec<Record>,
    pos: usize,
    rest: Box<dyn RecordSource>,
}

impl Chain {
    /// A source giving `first`, then `rest`.
    pub fn new(first: Vec<Record>, rest: Box<dyn RecordSource>) -> Self {
        Chain {
            first,
            pos: 0,
            rest,
        }
    }
}

impl RecordSource for Chain {
    fn next_batch(&mut self, buf: &mut Vec<Record>, max: usize) -> Result<usize, TraceError> {
        if self.pos < self.first.len() {
            let n = max.min(self.first.len() - self.pos);
            buf.extend_from_slice(&self.first[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        self.rest.next_batch(buf, max)
    }
    fn processes(&self) -> &[ProcessInfo] {
        self.rest.processes()
    }
    fn warnings(&self) -> Vec<String> {
        self.rest.warnings()
    }
}
