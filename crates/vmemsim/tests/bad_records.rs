//! Trace records no kernel could produce are clear errors in every mode,
//! never a panic or a silent wrap (issue 12); range operations cost what is
//! mapped, not the range's length.

use vmemsim::config::Config;
use vmemsim::{run_mode, ModeKind, ModeResult, SimError};
use vmemsim_trace::{Access, AccessKind, ProcEvent, Record, RecordSource, TraceError};

/// Replays records from memory.
struct Records(Vec<Record>, usize);

impl RecordSource for Records {
    fn next_batch(&mut self, buf: &mut Vec<Record>, max: usize) -> Result<usize, TraceError> {
        let n = max.min(self.0.len() - self.1);
        buf.extend_from_slice(&self.0[self.1..self.1 + n]);
        self.1 += n;
        Ok(n)
    }
}

fn acc(pid: u32, kind: AccessKind, addr: u64) -> Record {
    Record::Access(Access {
        addr,
        pid,
        size: 8,
        kind,
    })
}

fn run_all(records: &[Record]) -> Vec<Result<ModeResult, SimError>> {
    ModeKind::ALL
        .iter()
        .map(|&m| {
            run_mode(
                m,
                &Config::default(),
                &mut Records(records.to_vec(), 0),
                &mut |_| {},
            )
        })
        .collect()
}

/// Every mode fails with exactly `want`.
fn fails_with(records: &[Record], want: &str) {
    for (m, r) in ModeKind::ALL.iter().zip(run_all(records)) {
        let e = r.err().unwrap_or_else(|| panic!("{m:?} accepted it"));
        assert_eq!(e.to_string(), want, "{m:?}");
    }
}

#[test]
fn fork_with_the_parents_own_pid_is_an_error() {
    // Was "no entry found for key" at guest/os.rs (the child's old entry
    // was torn down, and it was the parent).
    fails_with(
        &[
            acc(5, AccessKind::Store, 0x1000),
            Record::event(5, ProcEvent::Fork { child: 5 }),
        ],
        "impossible event in the trace: pid 5 fork child 5: \
         a process cannot fork a child with its own pid",
    );
}

#[test]
fn mmap_past_the_top_of_the_address_space_is_an_error() {
    // addr + len wrapped past 2^64 (saturated before: an empty VMA).
    fails_with(
        &[Record::event(
            1,
            ProcEvent::Mmap {
                addr: 0xffff_ffff_ffff_f800,
                len: 0x1000,
                prot: 3,
                flags: 0x22,
                file: None,
            },
        )],
        "impossible event in the trace: pid 1 mmap 0xfffffffffffff800 len 0x1000: \
         the range ends beyond the top of the address space",
    );
}

#[test]
fn munmap_of_the_whole_address_space_is_an_error() {
    // Linux fails munmap(0, 2^64 - 4096) with EINVAL: it reaches past user space.
    fails_with(
        &[Record::event(
            1,
            ProcEvent::Munmap {
                addr: 0,
                len: 0xffff_ffff_ffff_f000,
            },
        )],
        "impossible event in the trace: pid 1 munmap 0x0 len 0xfffffffffffff000: \
         [0x0, 0xfffffffffffff000) ends beyond user space (gVAs from 0x800000000000 up \
         are the kernel's or non-canonical on x86-64)",
    );
}

const BEYOND: &str = "beyond user space (gVAs from 0x800000000000 up are the kernel's or \
                      non-canonical on x86-64)";

#[test]
fn access_beyond_user_space_is_an_error() {
    // The last page overflowed `page_down(va) + PAGE_SIZE` (a debug panic,
    // a wrap to 0 in release).
    fails_with(
        &[acc(3, AccessKind::Load, u64::MAX - 7)],
        &format!("impossible access in the trace: pid 3 gVA 0xfffffffffffffff8: {BEYOND}"),
    );
    // 2^50 aliased onto gVA 0x1000 through the 9-bit table indices.
    fails_with(
        &[
            acc(3, AccessKind::Load, 0x1000),
            acc(3, AccessKind::Fetch, (1 << 50) + 0x1000),
        ],
        &format!("impossible access in the trace: pid 3 gVA 0x4000000001000: {BEYOND}"),
    );
    // cargo-fuzz (simulator target): upper-half page numbers overlapped the
    // TLB tag's ASID bits, so pid 1 hit pid 4's entry in native mode and
    // shadow counted one guest fault more than native.
    fails_with(
        &[
            acc(4, AccessKind::Fetch, 0xffff_ffff_ff68_a004),
            acc(1, AccessKind::Fetch, 0xffff_ffff_ff68_a000),
        ],
        &format!("impossible access in the trace: pid 4 gVA 0xffffffffff68a004: {BEYOND}"),
    );
    // The bound itself: the last user byte is 2^47 - 1 with 4 levels, so
    // 2^47 is the first gVA refused (mutation testing: `va < top` as `<=`
    // accepted it).
    fails_with(
        &[acc(1, AccessKind::Load, 1 << 47)],
        &format!("impossible access in the trace: pid 1 gVA 0x800000000000: {BEYOND}"),
    );
    for r in run_all(&[acc(1, AccessKind::Load, (1 << 47) - 8)]) {
        assert_eq!(r.unwrap().stats.guest_page_faults, 1);
    }
}

#[test]
fn fork_over_the_running_process_switches_to_the_new_one() {
    // cargo-fuzz (simulator target): a fork naming a live, running pid as
    // its child (its exit never recorded) tore the old process down while
    // the loop still thought it ran: "page fault with no running process".
    let recs = [
        acc(2, AccessKind::Store, 0x5000),
        acc(1, AccessKind::Store, 0x1000),
        acc(2, AccessKind::Load, 0x5000),
        Record::event(1, ProcEvent::Fork { child: 2 }),
        acc(2, AccessKind::Load, 0x1000),
        acc(2, AccessKind::Load, 0x5000),
    ];
    for r in run_all(&recs) {
        let s = r.unwrap().stats;
        // 0x5000 (old pid 2), 0x1000 (pid 1), then the new pid 2 has
        // pid 1's 0x1000 (copied tables, no fault) but not 0x5000.
        assert_eq!(s.guest_page_faults, 3);
        assert_eq!(s.forks, 1);
    }
}

#[test]
fn range_operations_cost_what_is_mapped() {
    // Three pages touched at two places; munmap and mprotect over the whole
    // user half must do exactly what the same calls over the mapped pages
    // do (before, they walked 2^35 non-present PML4 spans for the range
    // [0, 2^64): seconds per mode).
    let touch = [
        acc(1, AccessKind::Store, 0x10_0000),
        acc(1, AccessKind::Store, 0x10_1000),
        acc(1, AccessKind::Store, 0x7fff_ffff_f000),
    ];
    let with = |ops: &[ProcEvent]| {
        let mut recs = touch.to_vec();
        recs.extend(ops.iter().map(|e| Record::event(1, e.clone())));
        recs.extend_from_slice(&touch);
        run_all(&recs)
            .into_iter()
            .map(|r| r.unwrap().stats)
            .collect::<Vec<_>>()
    };
    let whole = with(&[
        ProcEvent::Mprotect {
            addr: 0,
            len: 1 << 47,
            prot: 1,
        },
        ProcEvent::Munmap {
            addr: 0,
            len: 1 << 47,
        },
    ]);
    let exact = with(&[
        ProcEvent::Mprotect {
            addr: 0x10_0000,
            len: 0x2000,
            prot: 1,
        },
        ProcEvent::Mprotect {
            addr: 0x7fff_ffff_f000,
            len: 0x1000,
            prot: 1,
        },
        ProcEvent::Munmap {
            addr: 0x10_0000,
            len: 0x2000,
        },
        ProcEvent::Munmap {
            addr: 0x7fff_ffff_f000,
            len: 0x1000,
        },
    ]);
    for (w, x) in whole.iter().zip(&exact) {
        // Same PTE writes, faults and invalidations; the exact variant has
        // two more VMA events (four calls instead of two).
        assert_eq!(w.guest_pte_writes, x.guest_pte_writes);
        assert_eq!(w.guest_page_faults, x.guest_page_faults);
        assert_eq!(w.invlpgs, x.invlpgs);
        assert_eq!(w.vma_events + 2, x.vma_events);
        // Three pages faulted twice: demand-zero before and after the munmap.
        assert_eq!(w.demand_faults, 6);
    }
}
