//! Round-robin scheduling of a trace's processes.
//!
//! A recorded trace holds each process's records in its own program order;
//! how the recorder interleaved processes is an accident of recording. The
//! [`RoundRobin`] adapter re-schedules them on one simulated CPU: it runs a
//! process for a quantum of instructions (fetches), then the next runnable
//! one, as a guest scheduler would. A process becomes runnable when the
//! `Fork` that creates it has run (a root process at once); it stops being
//! runnable after its `Exit`. Reading ahead is bounded, so memory stays
//! bounded on traces of any length.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use vmemsim_trace::{AccessKind, ProcEvent, ProcessInfo, Record, RecordSource, TraceError};

/// Open a recorded trace for simulation: the format is detected (`-` reads
/// a Valgrind lackey log from standard input), and the processes are
/// re-scheduled round robin with the configured quantum.
///
/// # Errors
/// The trace cannot be opened or its header is malformed.
pub fn open_trace(
    path: &std::path::Path,
    cfg: &crate::Config,
) -> Result<Box<dyn RecordSource>, crate::SimError> {
    open_trace_as(path, None, cfg)
}

/// [`open_trace`] reading the trace as `format` (`None`: detected from the
/// content; standard input is read as a lackey log unless `format` says
/// another streaming format, ChampSim).
///
/// # Errors
/// As [`open_trace`]; a `.vmt` on standard input (the reader seeks).
pub fn open_trace_as(
    path: &std::path::Path,
    format: Option<vmemsim_trace::Format>,
    cfg: &crate::Config,
) -> Result<Box<dyn RecordSource>, crate::SimError> {
    let src = if path.as_os_str() == "-" {
        stdin_source(format)?
    } else {
        match format {
            Some(f) => vmemsim_trace::open_as(path, f)?,
            None => vmemsim_trace::open(path)?,
        }
    };
    Ok(Box::new(RoundRobin::new(
        src,
        cfg.sched.quantum_instructions,
    )))
}

/// A reader of standard input in `format` (default lackey).
fn stdin_source(
    format: Option<vmemsim_trace::Format>,
) -> Result<Box<dyn RecordSource>, crate::SimError> {
    use vmemsim_trace::champsim::{Layout, Reader};
    use vmemsim_trace::Format;
    let stdin = std::io::BufReader::with_capacity(1 << 20, std::io::stdin());
    Ok(match format.unwrap_or(Format::Lackey) {
        Format::Lackey => Box::new(vmemsim_trace::lackey::Reader::from_reader("<stdin>", stdin)),
        Format::ChampSim => Box::new(Reader::from_reader("<stdin>", stdin, Layout::Standard)),
        Format::ChampSimCloudSuite => {
            Box::new(Reader::from_reader("<stdin>", stdin, Layout::CloudSuite))
        }
        Format::Vmt => {
            return Err(crate::SimError::Workload(
                "a .vmt trace cannot be read from standard input (its reader seeks): give its path"
                    .into(),
            ))
        }
    })
}

/// Copy a Valgrind lackey log from standard input into a temporary `.vmt`
/// file (compressed, about 0.3 bytes per access) so that several modes can
/// each read the same input. The caller removes the file.
///
/// # Errors
/// A malformed lackey line, or the temporary file cannot be written.
pub fn spool_stdin(dir: &std::path::Path) -> Result<std::path::PathBuf, crate::SimError> {
    spool_stdin_as(dir, None)
}

/// [`spool_stdin`] of standard input in `format` (default lackey). On
/// error nothing is left in `dir`.
///
/// # Errors
/// As [`spool_stdin`].
pub fn spool_stdin_as(
    dir: &std::path::Path,
    format: Option<vmemsim_trace::Format>,
) -> Result<std::path::PathBuf, crate::SimError> {
    let path = dir.join(format!("vmemsim-stdin-{}.vmt", std::process::id()));
    let r = spool_into(&path, format);
    if r.is_err() {
        let _ = std::fs::remove_file(vmemsim_trace::vmt::partial_path(&path));
    }
    r.map(|()| path)
}

fn spool_into(
    path: &std::path::Path,
    format: Option<vmemsim_trace::Format>,
) -> Result<(), crate::SimError> {
    let mut src = stdin_source(format)?;
    let mut w = vmemsim_trace::vmt::Writer::create(path, "vmemsim (from standard input)")?;
    let mut buf = Vec::with_capacity(1 << 16);
    loop {
        buf.clear();
        if src.next_batch(&mut buf, 1 << 16)? == 0 {
            break;
        }
        for r in &buf {
            w.push(r)?;
        }
    }
    for p in src.processes() {
        w.add_process(p.clone());
    }
    w.finish(vmemsim_trace::vmt::FinishStatus::Complete { exit_code: None })?;
    Ok(())
}

/// Records read ahead at most, across all queues (32 bytes each).
const LOOKAHEAD: usize = 1 << 22;

/// Round-robin re-scheduling of any [`RecordSource`].
pub struct RoundRobin<S: RecordSource> {
    src: S,
    quantum: u64,
    queues: BTreeMap<u32, VecDeque<Record>>,
    buffered: usize,
    /// Pids a Fork has named, until that Fork has run.
    unborn: BTreeSet<u32>,
    /// Pids that may run, in round-robin order.
    ready: VecDeque<u32>,
    current: Option<u32>,
    used: u64,
    exhausted: bool,
    scratch: Vec<Record>,
}

impl<S: RecordSource> RoundRobin<S> {
    /// Schedule `src` with a quantum of `quantum_instructions` (>= 1).
    pub fn new(src: S, quantum_instructions: u64) -> Self {
        RoundRobin {
            src,
            quantum: quantum_instructions.max(1),
            queues: BTreeMap::new(),
            buffered: 0,
            unborn: BTreeSet::new(),
            ready: VecDeque::new(),
            current: None,
            used: 0,
            exhausted: false,
            scratch: Vec::new(),
        }
    }

    fn pid_of(r: &Record) -> u32 {
        match r {
            Record::Access(a) => a.pid,
            Record::Event(e) => e.pid,
        }
    }

    /// Read one batch from the source into the per-process queues.
    fn refill(&mut self) -> Result<(), TraceError> {
        self.scratch.clear();
        if self.src.next_batch(&mut self.scratch, 1 << 16)? == 0 {
            self.exhausted = true;
            return Ok(());
        }
        for r in self.scratch.drain(..) {
            let pid = Self::pid_of(&r);
            if let Record::Event(e) = &r {
                if let ProcEvent::Fork { child } = e.kind {
                    if !self.ready.contains(&child) {
                        self.unborn.insert(child);
                    }
                }
            }
            let queue = match self.queues.entry(pid) {
                std::collections::btree_map::Entry::Occupied(q) => q.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    if !self.unborn.contains(&pid) && !self.ready.contains(&pid) {
                        self.ready.push_back(pid);
                    }
                    v.insert(VecDeque::new())
                }
            };
            queue.push_back(r);
            self.buffered += 1;
        }
        Ok(())
    }

    fn current_queue_len(&self) -> usize {
        self.current
            .and_then(|p| self.queues.get(&p))
            .map_or(0, VecDeque::len)
    }

    fn queue_len(&self, p: u32) -> usize {
        self.queues.get(&p).map_or(0, VecDeque::len)
    }

    /// Pick the next process with records, round robin. A live process whose
    /// records are not read yet is read ahead for (within the lookahead).
    fn pick(&mut self) -> Result<(), TraceError> {
        self.used = 0;
        for _ in 0..self.ready.len() {
            let Some(p) = self.ready.pop_front() else {
                break;
            };
            self.ready.push_back(p);
            if Some(p) == self.current {
                continue;
            }
            while self.queue_len(p) == 0 && !self.exhausted && self.buffered < LOOKAHEAD {
                self.refill()?;
            }
            if self.queue_len(p) > 0 {
                self.current = Some(p);
                return Ok(());
            }
        }
        if self.current_queue_len() == 0 && self.exhausted {
            // Records of processes whose Fork never came: run them anyway.
            for (&p, q) in &self.queues {
                if !q.is_empty() && !self.ready.contains(&p) {
                    self.ready.push_back(p);
                    self.unborn.remove(&p);
                }
            }
            self.current = self.ready.iter().copied().find(|&p| self.queue_len(p) > 0);
        }
        Ok(())
    }
}

impl<S: RecordSource> RecordSource for RoundRobin<S> {
    fn next_batch(&mut self, buf: &mut Vec<Record>, max: usize) -> Result<usize, TraceError> {
        let mut n = 0;
        while n < max {
            // Keep the running process fed before deciding to switch.
            while !self.exhausted && self.current_queue_len() == 0 && self.buffered < LOOKAHEAD {
                self.refill()?;
                if self.current.is_none() {
                    break;
                }
            }
            if self.current_queue_len() == 0 || self.used >= self.quantum {
                self.pick()?;
                if self.current_queue_len() == 0 {
                    if self.exhausted {
                        break;
                    }
                    self.refill()?;
                    continue;
                }
            }
            let pid = self.current.expect("picked");
            let r = self
                .queues
                .get_mut(&pid)
                .expect("queue")
                .pop_front()
                .expect("non-empty");
            self.buffered -= 1;
            match &r {
                Record::Access(a) if a.kind == AccessKind::Fetch => self.used += 1,
                Record::Event(e) => match e.kind {
                    ProcEvent::Fork { child } => {
                        self.unborn.remove(&child);
                        if !self.ready.contains(&child) {
                            self.ready.push_back(child);
                        }
                    }
                    ProcEvent::Exit { .. } => {
                        self.ready.retain(|&p| p != pid);
                        if self.queues.get(&pid).is_some_and(VecDeque::is_empty) {
                            self.queues.remove(&pid);
                        }
                        self.used = self.quantum;
                    }
                    _ => {}
                },
                _ => {}
            }
            buf.push(r);
            n += 1;
        }
        Ok(n)
    }

    fn processes(&self) -> &[ProcessInfo] {
        self.src.processes()
    }

    fn warnings(&self) -> Vec<String> {
        self.src.warnings()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmemsim_trace::Access;

    struct Vs(Vec<Record>, usize);
    impl RecordSource for Vs {
        fn next_batch(&mut self, buf: &mut Vec<Record>, max: usize) -> Result<usize, TraceError> {
            let n = max.min(self.0.len() - self.1).min(3);
            buf.extend_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    fn f(pid: u32, addr: u64) -> Record {
        Record::Access(Access {
            addr,
            pid,
            size: 4,
            kind: AccessKind::Fetch,
        })
    }
    fn e(pid: u32, kind: ProcEvent) -> Record {
        Record::event(pid, kind)
    }

    #[test]
    fn round_robin_keeps_each_process_order_and_forks_first() {
        // Recorded: all of 1, then all of 2 (forked by 1 midway).
        let mut recs = vec![
            f(1, 0),
            f(1, 1),
            e(1, ProcEvent::Fork { child: 2 }),
            f(1, 2),
            f(1, 3),
            f(1, 4),
        ];
        recs.extend([
            f(2, 10),
            f(2, 11),
            f(2, 12),
            e(2, ProcEvent::Exit { code: 0 }),
        ]);
        let mut rr = RoundRobin::new(Vs(recs.clone(), 0), 2);
        let mut out = Vec::new();
        while rr.next_batch(&mut out, 4).unwrap() > 0 {}
        assert_eq!(out.len(), recs.len(), "nothing lost");
        let order: Vec<u32> = out.iter().map(RoundRobin::<Vs>::pid_of).collect();
        // 1 runs f0 f1; no other process yet, so it goes on: Fork, f2 f3.
        // Then 2 (f10 f11), 1 (f4, its last), 2 (f12, Exit).
        assert_eq!(order, vec![1, 1, 1, 1, 1, 2, 2, 1, 2, 2]);
        for pid in [1, 2] {
            let mine: Vec<&Record> = out
                .iter()
                .filter(|r| RoundRobin::<Vs>::pid_of(r) == pid)
                .collect();
            let orig: Vec<&Record> = recs
                .iter()
                .filter(|r| RoundRobin::<Vs>::pid_of(r) == pid)
                .collect();
            assert_eq!(mine, orig, "per-process order kept");
        }
    }
}
