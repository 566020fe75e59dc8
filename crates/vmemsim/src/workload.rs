//! Built-in workloads: generators that yield the same [`Record`]s a trace
//! reader does, including instruction fetches and process events.
//!
//! - `seq`: a sequential scan of a large array (one load per 64-byte line).
//! - `random`: GUPS-like random read-modify-write over a footprint far
//!   beyond TLB reach.
//! - `chase`: a pointer chase visiting every line of the footprint in a
//!   pseudo-random cyclic order (a full-period LCG, no table needed).
//! - `procs`: process-heavy: a parent forks many short-lived children that
//!   map, touch and unmap fresh memory, read and write (copy-on-write) the
//!   parent's heap, and exit.
//! - `phases`: alternating phases, two rounds of: a `procs`-like phase
//!   (3/10 of the round: fork, exec, demand faults, copy-on-write, exit; a
//!   16 MiB parent heap) then a `random`-like phase (7/10: GUPS updates over
//!   the footprint, default 128 MiB, populated once by the first such phase). Fault- and
//!   exit-heavy phases favour nested paging, TLB-miss-heavy ones shadow
//!   paging, so no single static mode is best.
//! - `idle` (for hosts, not in `compare`'s default set): a VM idle after
//!   start-up: it stores to every page of its footprint once, then loops
//!   over its first 16 pages (the idle VM of [ESX 5.4]'s experiment).

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;
use vmemsim_trace::{Access, AccessKind, ProcEvent, Record, RecordSource, TraceError};

use crate::SimError;

const TEXT: u64 = 0x40_0000;
const TEXT_LEN: u64 = 64 << 10;
const DATA: u64 = 0x7f00_0000_0000;
const HEAP: u64 = 0x1000_0000;
const CHILD_MAP: u64 = 0x7e00_0000_0000;
const ROOT_PID: u32 = 1;
/// Parent of the short-lived processes of `phases`' process phases.
const PHASE_PARENT: u32 = 2;
/// Heap of `PHASE_PARENT`, bytes.
const PHASE_HEAP: u64 = 16 << 20;
/// Rounds of (process phase, random phase) in `phases`.
const PHASE_ROUNDS: u64 = 2;
const PROT_RX: u32 = 5;
const PROT_RW: u32 = 3;

/// The file every built-in workload's text maps: `vmemsim:builtin-text`,
/// 64 KiB, with a fixed fingerprint.
pub fn builtin_binary() -> vmemsim_trace::FileId {
    vmemsim_trace::FileId {
        path: "vmemsim:builtin-text".into(),
        fingerprint: Some(vmemsim_trace::Fingerprint {
            size: TEXT_LEN,
            hash: xxhash_rust::xxh3::xxh3_64(b"vmemsim built-in workload text"),
        }),
    }
}

/// Which built-in workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// Sequential scan.
    Seq,
    /// GUPS-like random updates.
    Random,
    /// Pointer chase.
    Chase,
    /// Many short-lived processes.
    Procs,
    /// Alternating process-heavy and TLB-miss-heavy phases.
    Phases,
    /// Touches its footprint once, then loops over 16 pages.
    Idle,
}

impl WorkloadKind {
    /// The default set run by `vmemsim compare`.
    pub const ALL: [WorkloadKind; 5] = [
        WorkloadKind::Seq,
        WorkloadKind::Random,
        WorkloadKind::Chase,
        WorkloadKind::Procs,
        WorkloadKind::Phases,
    ];

    /// Name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Seq => "seq",
            WorkloadKind::Random => "random",
            WorkloadKind::Chase => "chase",
            WorkloadKind::Procs => "procs",
            WorkloadKind::Phases => "phases",
            WorkloadKind::Idle => "idle",
        }
    }

    /// Parse a name.
    ///
    /// # Errors
    /// A message listing the built-in names.
    pub fn parse(s: &str) -> Result<Self, SimError> {
        WorkloadKind::ALL
            .into_iter()
            .chain([WorkloadKind::Idle])
            .find(|w| w.name() == s)
            .ok_or_else(|| {
                SimError::Workload(format!(
                    "unknown workload `{s}`; built-in workloads: {}, idle (hosts)",
                    WorkloadKind::ALL.map(|w| w.name()).join(", ")
                ))
            })
    }
}

/// A built-in workload with its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct WorkloadSpec {
    /// Which generator.
    pub kind: WorkloadKind,
    /// Data footprint in MiB (for `procs`: the parent's heap).
    pub footprint_mib: u64,
    /// Accesses to generate (fetches included), exactly: the accesses of
    /// the last iteration beyond this number are dropped (its process
    /// events still run, so its processes unmap and exit).
    pub accesses: u64,
    /// PRNG seed.
    pub seed: u64,
}

impl WorkloadSpec {
    /// Default parameters: footprints of 256 MiB (far beyond the 2 MiB
    /// reach of a 512-entry STLB), 20 M accesses, seed 1.
    pub fn default_for(kind: WorkloadKind) -> Self {
        let footprint_mib = match kind {
            WorkloadKind::Procs => 16,
            WorkloadKind::Phases => 128,
            _ => 256,
        };
        WorkloadSpec {
            kind,
            footprint_mib,
            accesses: 20_000_000,
            seed: 1,
        }
    }

    /// A record source generating this workload.
    pub fn source(&self) -> Generator {
        Generator::new(*self)
    }

    /// A short description for reports.
    pub fn describe(&self) -> String {
        format!(
            "{} (footprint {} MiB, {} accesses, seed {})",
            self.kind.name(),
            self.footprint_mib,
            self.accesses,
            self.seed
        )
    }
}

/// Generates the records of one [`WorkloadSpec`].
#[derive(Debug)]
pub struct Generator {
    spec: WorkloadSpec,
    rng: Xoshiro256PlusPlus,
    pending: Vec<Record>,
    pos: usize,
    /// Accesses pushed to `pending`.
    emitted: u64,
    /// Accesses handed out (at most `spec.accesses`).
    delivered: u64,
    started: bool,
    finished: bool,
    pc: u64,
    cursor: u64,
    next_pid: u32,
    /// `phases`: the process-phase parent populated its heap.
    parent_ready: bool,
    /// `phases`: the random-phase data was populated.
    data_ready: bool,
}

impl Generator {
    fn new(spec: WorkloadSpec) -> Self {
        Generator {
            spec,
            rng: Xoshiro256PlusPlus::seed_from_u64(spec.seed),
            pending: Vec::new(),
            pos: 0,
            emitted: 0,
            delivered: 0,
            started: false,
            finished: false,
            pc: 0,
            cursor: 0,
            next_pid: PHASE_PARENT + 1,
            parent_ready: false,
            data_ready: false,
        }
    }

    fn footprint(&self) -> u64 {
        self.spec.footprint_mib << 20
    }

    fn push_access(&mut self, pid: u32, kind: AccessKind, addr: u64) {
        self.pending.push(Record::Access(Access {
            addr,
            pid,
            size: if kind == AccessKind::Fetch { 4 } else { 8 },
            kind,
        }));
        self.emitted += 1;
    }

    fn fetch(&mut self, pid: u32) {
        // A 16-instruction loop body.
        self.pc = (self.pc + 4) % 64;
        self.push_access(pid, AccessKind::Fetch, TEXT + self.pc);
    }

    fn event(&mut self, pid: u32, kind: ProcEvent) {
        self.pending.push(Record::event(pid, kind));
    }

    fn mmap(&mut self, pid: u32, addr: u64, len: u64, prot: u32) {
        self.event(
            pid,
            ProcEvent::Mmap {
                addr,
                len,
                prot,
                flags: 0x22,
                file: None,
            },
        );
    }

    /// The program text: a mapping of the built-in "binary", one file for
    /// every built-in workload (so page contents model it as a program
    /// image shared by every VM running a built-in: guest/content.rs).
    fn text_mmap(&mut self, pid: u32) {
        let file = vmemsim_trace::MappedFile {
            file: std::sync::Arc::new(builtin_binary()),
            offset: 0,
        };
        self.event(
            pid,
            ProcEvent::Mmap {
                addr: TEXT,
                len: TEXT_LEN,
                prot: PROT_RX,
                flags: 0x02,
                file: Some(file),
            },
        );
    }

    fn start(&mut self) {
        self.text_mmap(ROOT_PID);
        match self.spec.kind {
            WorkloadKind::Procs => self.mmap(ROOT_PID, HEAP, self.footprint(), PROT_RW),
            WorkloadKind::Phases => {
                self.mmap(ROOT_PID, DATA, self.footprint(), PROT_RW);
                self.text_mmap(PHASE_PARENT);
                self.mmap(PHASE_PARENT, HEAP, PHASE_HEAP, PROT_RW);
            }
            _ => self.mmap(ROOT_PID, DATA, self.footprint(), PROT_RW),
        }
    }

    /// Append one chunk of records to `pending`.
    fn iterate(&mut self) {
        let fp = self.footprint().max(64);
        match self.spec.kind {
            WorkloadKind::Seq => {
                for _ in 0..512 {
                    self.fetch(ROOT_PID);
                    let a = DATA + self.cursor;
                    self.push_access(ROOT_PID, AccessKind::Load, a);
                    self.cursor = (self.cursor + 64) % fp;
                }
            }
            WorkloadKind::Random => self.random_updates(fp),
            WorkloadKind::Phases => {
                let round = (self.spec.accesses / PHASE_ROUNDS).max(1);
                if self.emitted % round < round * 3 / 10 {
                    if !self.parent_ready {
                        self.parent_ready = true;
                        self.populate(PHASE_PARENT, HEAP, PHASE_HEAP);
                    }
                    self.child_lifecycle(PHASE_PARENT, PHASE_HEAP);
                } else {
                    if !self.data_ready {
                        self.data_ready = true;
                        self.populate(ROOT_PID, DATA, fp);
                    }
                    self.random_updates(fp);
                }
            }
            WorkloadKind::Chase => {
                // Full-period LCG over the lines of the largest power-of-two
                // prefix of the footprint (Hull-Dobell: a = 1 mod 4, c odd).
                let lines =
                    (fp / 64).next_power_of_two() / if (fp / 64).is_power_of_two() { 1 } else { 2 };
                for _ in 0..512 {
                    self.fetch(ROOT_PID);
                    self.cursor = (self
                        .cursor
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407))
                        & (lines - 1);
                    let a = DATA + self.cursor * 64;
                    self.push_access(ROOT_PID, AccessKind::Load, a);
                }
            }
            WorkloadKind::Idle => {
                if !self.data_ready {
                    self.data_ready = true;
                    self.populate(ROOT_PID, DATA, fp);
                }
                let pages = (fp / 4096).clamp(1, 16);
                for _ in 0..512 {
                    self.fetch(ROOT_PID);
                    let a = DATA + (self.cursor % pages) * 4096;
                    self.push_access(ROOT_PID, AccessKind::Load, a);
                    self.cursor += 1;
                }
            }
            WorkloadKind::Procs => {
                if self.cursor == 0 {
                    self.cursor = 1;
                    self.populate(ROOT_PID, HEAP, fp);
                }
                self.child_lifecycle(ROOT_PID, fp);
            }
        }
    }

    /// 512 GUPS-like read-modify-writes of `ROOT_PID` over the data area.
    fn random_updates(&mut self, fp: u64) {
        for _ in 0..512 {
            self.fetch(ROOT_PID);
            let a = DATA + ((self.rng.gen::<u64>() % fp) & !7);
            self.push_access(ROOT_PID, AccessKind::Modify, a);
        }
    }

    /// `pid` stores to every page of `[base, base + len)`.
    fn populate(&mut self, pid: u32, base: u64, len: u64) {
        for off in (0..len).step_by(4096) {
            self.fetch(pid);
            self.push_access(pid, AccessKind::Store, base + off);
        }
    }

    /// Parent forks a child; the child maps 256 KiB-2 MiB of fresh memory,
    /// writes every page, reads 32 random parent-heap lines, writes 8
    /// (copy-on-write), unmaps and exits; the parent then reads and writes
    /// its heap a little.
    fn child_lifecycle(&mut self, parent: u32, heap: u64) {
        let child = self.next_pid;
        self.next_pid += 1;
        self.event(parent, ProcEvent::Fork { child });
        self.event(child, ProcEvent::Exec);
        self.text_mmap(child);
        self.mmap(child, HEAP, heap, PROT_RW);
        let pages = self.rng.gen_range(64..=512u64);
        let len = pages * 4096;
        self.mmap(child, CHILD_MAP, len, PROT_RW);
        for p in 0..pages {
            for w in 0..4 {
                self.fetch(child);
                self.push_access(child, AccessKind::Store, CHILD_MAP + p * 4096 + w * 64);
            }
        }
        for i in 0..40 {
            self.fetch(child);
            let a = HEAP + ((self.rng.gen::<u64>() % heap) & !63);
            let kind = if i < 32 {
                AccessKind::Load
            } else {
                AccessKind::Store
            };
            self.push_access(child, kind, a);
        }
        self.event(
            child,
            ProcEvent::Munmap {
                addr: CHILD_MAP,
                len,
            },
        );
        self.event(child, ProcEvent::Exit { code: 0 });
        for _ in 0..256 {
            self.fetch(parent);
            let a = HEAP + ((self.rng.gen::<u64>() % heap) & !63);
            self.push_access(parent, AccessKind::Modify, a);
        }
    }
}

impl RecordSource for Generator {
    fn next_batch(&mut self, buf: &mut Vec<Record>, max: usize) -> Result<usize, TraceError> {
        let before = buf.len();
        while buf.len() - before < max {
            if self.pos == self.pending.len() {
                self.pending.clear();
                self.pos = 0;
                if !self.started {
                    self.started = true;
                    self.start();
                } else if self.emitted < self.spec.accesses {
                    self.iterate();
                } else if !self.finished {
                    self.finished = true;
                    if self.spec.kind == WorkloadKind::Phases {
                        self.event(PHASE_PARENT, ProcEvent::Exit { code: 0 });
                    }
                    self.event(ROOT_PID, ProcEvent::Exit { code: 0 });
                } else {
                    break;
                }
            }
            let r = self.pending[self.pos].clone();
            self.pos += 1;
            if matches!(r, Record::Access(_)) {
                if self.delivered == self.spec.accesses {
                    continue;
                }
                self.delivered += 1;
            }
            buf.push(r);
        }
        Ok(buf.len() - before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(spec: WorkloadSpec) -> Vec<Record> {
        let mut g = spec.source();
        let mut out = Vec::new();
        while g.next_batch(&mut out, 1000).unwrap() > 0 {}
        out
    }

    #[test]
    fn generators_are_deterministic_and_sized() {
        for kind in WorkloadKind::ALL.into_iter().chain([WorkloadKind::Idle]) {
            let spec = WorkloadSpec {
                accesses: 5000,
                footprint_mib: 4,
                ..WorkloadSpec::default_for(kind)
            };
            let a = all(spec);
            assert_eq!(a, all(spec), "{kind:?} not deterministic");
            let accesses = a.iter().filter(|r| matches!(r, Record::Access(_))).count() as u64;
            assert_eq!(accesses, 5000, "{kind:?}: exactly the accesses asked for");
            let fetches = a
                .iter()
                .filter(|r| matches!(r, Record::Access(x) if x.kind == AccessKind::Fetch))
                .count();
            assert!(
                fetches * 3 >= accesses as usize,
                "{kind:?}: instruction fetches are part of the workload"
            );
            assert!(matches!(
                a.last(),
                Some(Record::Event(e)) if matches!(e.kind, ProcEvent::Exit { .. })
            ));
        }
    }

    #[test]
    fn chase_visits_every_line_once_per_period() {
        let spec = WorkloadSpec {
            kind: WorkloadKind::Chase,
            footprint_mib: 1,
            accesses: 2 * 16384,
            seed: 1,
        };
        let lines: std::collections::HashSet<u64> = all(spec)
            .iter()
            .filter_map(|r| match r {
                Record::Access(a) if a.kind == AccessKind::Load => Some(a.addr),
                _ => None,
            })
            .collect();
        assert_eq!(lines.len(), 16384);
    }

    #[test]
    fn idle_touches_its_footprint_once_then_16_pages() {
        let spec = WorkloadSpec {
            accesses: 20000,
            footprint_mib: 1,
            ..WorkloadSpec::default_for(WorkloadKind::Idle)
        };
        let pages = |r: &[Record]| {
            r.iter()
                .filter_map(|r| match r {
                    Record::Access(a) if a.kind != AccessKind::Fetch => Some(a.addr >> 12),
                    _ => None,
                })
                .collect::<std::collections::BTreeSet<_>>()
        };
        let all = all(spec);
        // 1 MiB = 256 pages stored once (256 data accesses + 256 fetches),
        // then loads of the first 16 pages only.
        assert_eq!(pages(&all).len(), 256);
        let data: Vec<_> = all
            .iter()
            .filter(|r| matches!(r, Record::Access(a) if a.kind != AccessKind::Fetch))
            .collect();
        let after: std::collections::BTreeSet<_> = data[256..]
            .iter()
            .map(|r| match r {
                Record::Access(a) => a.addr >> 12,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(after.len(), 16);
        assert_eq!(*after.iter().next().unwrap(), DATA >> 12);
        assert!(WorkloadKind::parse("idle").is_ok());
        assert!(
            !WorkloadKind::ALL.contains(&WorkloadKind::Idle),
            "not in compare's set"
        );
    }
}
