//! Putting the log streams in a causal order (a child after its parent's
//! fork, a process's streams one after another) and writing them.

use std::collections::{HashMap, HashSet, VecDeque};

use super::Msg;
use crate::vmt;
use crate::{ProcEvent, ProcessInfo, Record, TraceError};

/// One log stream in the writer.
struct StreamState {
    pid: u32,
    ended: bool,
    /// Records waiting until the stream becomes active.
    held: Vec<Record>,
    info: Option<ProcessInfo>,
    /// The process-table entry of this stream was written.
    announced: bool,
}

/// One process in the writer.
#[derive(Default)]
struct ProcState {
    /// Its streams in creation order; the front one is the current one.
    streams: VecDeque<usize>,
    /// Its records may be written: it is the root, or its parent's `Fork`
    /// event was written.
    released: bool,
    /// Parent from the fork event.
    parent: Option<u32>,
}

/// Puts the streams in a causal order and writes them.
pub(super) struct Order<'k> {
    root_pid: u32,
    streams: HashMap<usize, StreamState>,
    procs: HashMap<u32, ProcState>,
    /// Pids that appeared in any stream (to tell traced parents apart).
    seen: HashSet<u32>,
    keep: Option<&'k mut Vec<Record>>,
    pub(super) errors: Vec<TraceError>,
}

impl<'k> Order<'k> {
    pub(super) fn new(root_pid: u32, keep: Option<&'k mut Vec<Record>>) -> Self {
        Order {
            root_pid,
            streams: HashMap::new(),
            procs: HashMap::new(),
            seen: HashSet::new(),
            keep,
            errors: Vec::new(),
        }
    }

    pub(super) fn handle(&mut self, msg: Msg, w: &mut vmt::Writer) -> Result<(), TraceError> {
        match msg {
            Msg::Stream { id, pid } => {
                self.streams.insert(
                    id,
                    StreamState {
                        pid,
                        ended: false,
                        held: Vec::new(),
                        info: None,
                        announced: false,
                    },
                );
                self.seen.insert(pid);
                let root = pid == self.root_pid;
                let p = self.procs.entry(pid).or_default();
                p.streams.push_back(id);
                if root {
                    p.released = true;
                }
                self.advance(pid, w)?;
            }
            Msg::Info { id, info } => {
                let pid = match self.streams.get_mut(&id) {
                    Some(s) => {
                        s.info = Some(info.clone());
                        s.pid
                    }
                    None => return Ok(()),
                };
                // A process whose parent is not traced has no fork event.
                let untraced_parent = match info.parent {
                    Some(pp) => !self.seen.contains(&pp),
                    None => true,
                };
                if let Some(p) = self.procs.get_mut(&pid) {
                    if untraced_parent && !p.released && pid != self.root_pid {
                        p.released = true;
                    }
                }
                self.advance(pid, w)?;
            }
            Msg::Batch { id, records } => {
                if self.is_active(id) {
                    self.write(&records, w)?;
                } else if let Some(s) = self.streams.get_mut(&id) {
                    s.held.extend(records);
                }
            }
            Msg::End { id, error } => {
                if let Some(e) = error {
                    self.errors.push(e);
                }
                let Some(s) = self.streams.get_mut(&id) else {
                    return Ok(());
                };
                s.ended = true;
                let pid = s.pid;
                self.advance(pid, w)?;
            }
        }
        Ok(())
    }

    fn is_active(&self, id: usize) -> bool {
        let Some(s) = self.streams.get(&id) else {
            return false;
        };
        match self.procs.get(&s.pid) {
            Some(p) => p.released && p.streams.front() == Some(&id) && s.announced,
            None => false,
        }
    }

    /// Make the current stream of `pid` active if it may be: announce the
    /// process, write held records, move past ended streams.
    fn advance(&mut self, pid: u32, w: &mut vmt::Writer) -> Result<(), TraceError> {
        {
            while let Some(p) = self.procs.get(&pid) {
                if !p.released {
                    break;
                }
                let Some(&id) = p.streams.front() else { break };
                let fork_parent = p.parent;
                let Some(s) = self.streams.get_mut(&id) else {
                    break;
                };
                if !s.announced {
                    // Wait for the preamble unless the stream already ended.
                    let Some(info) = s.info.clone().or_else(|| {
                        s.ended.then(|| ProcessInfo {
                            pid,
                            ..Default::default()
                        })
                    }) else {
                        break;
                    };
                    s.announced = true;
                    let parent = if pid == self.root_pid {
                        None
                    } else {
                        fork_parent.or(info.parent)
                    };
                    w.add_process(ProcessInfo {
                        pid,
                        parent,
                        command: info.command,
                    });
                }
                let held = std::mem::take(&mut s.held);
                let ended = s.ended;
                self.write(&held, w)?;
                if !ended {
                    break;
                }
                self.streams.remove(&id);
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.streams.pop_front();
                }
            }
        }
        Ok(())
    }

    /// Write records; a written fork event lets the child's streams advance.
    fn write(&mut self, records: &[Record], w: &mut vmt::Writer) -> Result<(), TraceError> {
        let events_before = w.events_written();
        w.push_all(records)?;
        let mut children = Vec::new();
        // Most batches are accesses only: look for forks only in the others.
        let events = w.events_written() != events_before;
        for r in records.iter().filter(|_| events) {
            if let Record::Event(e) = r {
                let (pid, ProcEvent::Fork { child }) = (&e.pid, &e.kind) else {
                    continue;
                };
                let c = self.procs.entry(*child).or_default();
                c.released = true;
                c.parent = Some(*pid);
                children.push(*child);
            }
        }
        if let Some(k) = self.keep.as_deref_mut() {
            k.extend_from_slice(records);
        }
        for c in children {
            self.advance(c, w)?;
        }
        Ok(())
    }

    /// At the end: write whatever is still held, process by process in
    /// stream order (a child whose fork was never seen, for example).
    pub(super) fn flush_all(&mut self, w: &mut vmt::Writer) -> Result<(), TraceError> {
        let mut ids: Vec<usize> = self.streams.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            s.ended = true;
            let pid = s.pid;
            if let Some(p) = self.procs.get_mut(&pid) {
                p.released = true;
            }
            self.advance(pid, w)?;
        }
        Ok(())
    }
}
