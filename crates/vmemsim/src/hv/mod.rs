//! MMU virtualization modes, one file each behind the [`Mode`] trait, and
//! the [`Machine`] that runs a guest on one of them.
//!
//! A mode decides what the hardware walks on a TLB miss and what happens
//! when the guest kernel stores a PTE, writes a frame, loads CR3 or
//! invalidates: nothing, a VM exit, or a hypercall. It changes cost, never
//! meaning: every mode resolves each access to the same gPA.

pub mod agile;
pub mod direct;
pub mod native;
pub mod nested;
pub mod selective;
pub mod shadow;

pub use agile::Agile;
pub use direct::Direct;
pub use native::Native;
pub use nested::Nested;
pub use selective::{Selective, SwitchReport};
pub use shadow::Shadow;

use crate::addr::{Gpa, Gva, PageSize};
use crate::config::Config;
use crate::guest::{GuestMemory, GuestOs, Platform};
use crate::host::Host;
use crate::mmu::{Asid, Hw, Leaf, Rights, TlbEntry, TlbLevel};
use crate::stats::{ExitReason, Stats};
use crate::SimError;

/// Everything a mode works on besides its own state: the core's translation
/// hardware, host memory, counters, and the guest's current CR3.
#[derive(Debug)]
pub struct Core {
    /// TLBs, walk caches, walkers' record.
    pub hw: Hw,
    /// Host frames, p2m, EPT, hypervisor table pages.
    pub host: Host,
    /// Counters.
    pub stats: Stats,
    /// VPID tagging this guest's TLB entries (0 = native).
    pub vpid: u16,
    /// PCIDs on: a CR3 write keeps the TLB.
    pub pcid: bool,
    /// gPFN of the guest's current PML4 (guest CR3).
    pub guest_root: u64,
    /// The guest's current PCID.
    pub guest_pcid: u16,
}

impl Core {
    /// ASID of the running guest process.
    #[inline]
    pub fn asid(&self) -> Asid {
        Asid::new(self.vpid, self.guest_pcid)
    }

    /// Count the walk in the record and start a new record.
    #[inline]
    pub fn walk_done(&mut self) {
        self.stats.add_walk(&self.hw.rec);
        self.hw.rec.clear();
    }

    /// Count one VM exit.
    #[inline]
    pub fn exit(&mut self, r: ExitReason) {
        self.stats.exit(r);
    }

    /// The hardware side of a CR3 write: remember the root; without PCIDs
    /// the TLB and PSC entries of the address space are flushed.
    pub fn hw_write_cr3(&mut self, root: u64, pcid: u16) {
        self.guest_root = root;
        self.guest_pcid = pcid;
        if !self.pcid {
            let a = self.asid();
            self.hw.tlbs.flush_asid(a);
            self.hw.pwc.flush_asid(a);
        }
    }

    /// The hardware side of INVLPG: the page's TLB entries and every PSC
    /// entry of the PCID go [SDM 4.10.4.1].
    pub fn hw_invlpg(&mut self, pcid: u16, va: Gva) {
        let a = Asid::new(self.vpid, pcid);
        self.hw.tlbs.invlpg(a, va.0);
        self.hw.pwc.flush_asid(a);
    }

    /// The hardware side of INVPCID single-context.
    pub fn hw_flush_pcid(&mut self, pcid: u16) {
        let a = Asid::new(self.vpid, pcid);
        self.hw.tlbs.flush_asid(a);
        self.hw.pwc.flush_asid(a);
    }

    /// An EPT violation on `gpfn` (VM exit): the hypervisor backs it.
    pub fn ept_violation(&mut self, gpfn: u64) {
        self.exit(ExitReason::EptViolation);
        self.back(gpfn);
    }

    /// Back `gpfn` with a host frame if needed; true if one was allocated.
    pub fn back(&mut self, gpfn: u64) -> bool {
        let newly = self.host.back(gpfn).1;
        self.stats.host_frames_backed += u64::from(newly);
        newly
    }
}

/// What a successful miss handling puts in the TLB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fill {
    /// First gPFN of the page.
    pub gpfn: u64,
    /// First hPFN of the page.
    pub hpfn: u64,
    /// TLB entry size.
    pub size: PageSize,
    /// Stores may use the entry.
    pub write_ok: bool,
    /// Fetches may use the entry.
    pub exec_ok: bool,
}

impl Fill {
    /// The fill for a walk that ended at leaf `l`, whose page starts at
    /// `gpfn` in the guest and `hpfn` in the host; size and rights from `l`.
    #[inline]
    pub fn of_leaf(l: &Leaf, gpfn: u64, hpfn: u64) -> Self {
        Fill {
            gpfn,
            hpfn,
            size: l.size,
            write_ok: l.write_ok,
            exec_ok: l.exec_ok,
        }
    }
}

/// The guest's own tables do not allow the access: the guest OS must
/// handle a #PF (delivered directly, or injected by the hypervisor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestFault;

/// One MMU virtualization mode.
pub trait Mode {
    /// Name used in reports and on the command line.
    fn name(&self) -> &'static str;
    /// VPID of the guest (0 for native).
    fn vpid(&self) -> u16 {
        1
    }
    /// A TLB miss on `va`: walk what the hardware walks in this mode,
    /// resolving hidden faults and EPT violations (VM exits) on the way.
    /// Each hardware walk ends with `core.walk_done()`.
    ///
    /// # Errors
    /// [`GuestFault`] when the guest's tables forbid the access.
    fn fill(
        &mut self,
        core: &mut Core,
        mem: &mut GuestMemory,
        va: u64,
        r: Rights,
    ) -> Result<Fill, GuestFault>;
    // The defaults below are what happens when nothing traps (native,
    // nested): the store or instruction runs on the hardware as is.
    /// The guest kernel stores a PTE.
    fn write_pte(&mut self, _core: &mut Core, mem: &mut GuestMemory, gpa: Gpa, val: u64) {
        crate::guest::store_pte(mem, gpa, val);
    }
    /// The guest kernel writes a whole frame.
    fn touch_frame(&mut self, core: &mut Core, mem: &mut GuestMemory, gpfn: u64);
    /// The guest writes CR3.
    fn write_cr3(&mut self, core: &mut Core, _mem: &mut GuestMemory, root: u64, pcid: u16) {
        core.hw_write_cr3(root, pcid);
    }
    /// The guest issues INVLPG.
    fn invlpg(&mut self, core: &mut Core, pcid: u16, va: Gva) {
        core.hw_invlpg(pcid, va);
    }
    /// The guest issues INVPCID single-context.
    fn flush_pcid(&mut self, core: &mut Core, pcid: u16) {
        core.hw_flush_pcid(pcid);
    }
    /// The guest finished a batch of page-table changes.
    fn end_pt_update(&mut self, _core: &mut Core, _mem: &mut GuestMemory) {}
    /// Guest instruction count at which [`Mode::boundary`] is next due
    /// (`u64::MAX`: never). Modes with a policy (switching, agile) use it.
    fn next_boundary(&self) -> u64 {
        u64::MAX
    }
    /// Called between two accesses once `core.stats.instructions` reached
    /// [`Mode::next_boundary`]: the guest is between operations.
    fn boundary(&mut self, _core: &mut Core, _mem: &mut GuestMemory) {}
    /// The measured window opens now (after the warm-up; see
    /// [`crate::window`]): a mode that keeps its own report (switching
    /// modes) starts it afresh here, its decisions unchanged.
    fn window_start(&mut self, _core: &Core) {}
    /// The run ended: close the last interval.
    fn finish(&mut self, _core: &mut Core) {}
    /// What a switching mode did (`None` for static modes).
    fn switch_report(&self) -> Option<SwitchReport> {
        None
    }
}

/// Where one access resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// gPFN of the 4 KiB guest frame.
    pub gpfn: u64,
    /// hPFN of the 4 KiB host frame (equal to `gpfn` natively).
    pub hpfn: u64,
}

/// A guest running on one mode: the mode plus the core it drives.
#[derive(Debug)]
pub struct Machine<M: Mode> {
    /// The mode's own state.
    pub mode: M,
    /// Hardware, host, counters.
    pub core: Core,
    /// Instruction count at which the mode's next boundary is due.
    next_boundary: u64,
}

impl<M: Mode> Machine<M> {
    /// Cold hardware and an empty host for `mode`.
    pub fn new(mode: M, cfg: &Config) -> Self {
        let vpid = mode.vpid();
        let next_boundary = mode.next_boundary();
        Machine {
            next_boundary,
            mode,
            core: Core {
                hw: Hw::new(cfg),
                host: Host::new(cfg.guest.mem_mib * 256),
                stats: Stats::default(),
                vpid,
                pcid: cfg.guest.pcid,
                guest_root: 0,
                guest_pcid: 0,
            },
        }
    }

    /// One access of the running guest process: TLB lookup, walk on a miss,
    /// guest #PF handled by `guest` until the access completes.
    ///
    /// # Errors
    /// Guest out of memory while handling a fault.
    #[inline]
    pub fn access(
        &mut self,
        guest: &mut GuestOs,
        va: u64,
        r: Rights,
    ) -> Result<Translation, SimError> {
        if self.core.stats.instructions >= self.next_boundary {
            self.mode.boundary(&mut self.core, &mut guest.mem);
            self.next_boundary = self.mode.next_boundary();
        }
        let c = &mut self.core;
        c.stats.accesses += 1;
        c.stats.instructions += u64::from(r.fetch);
        let asid = c.asid();
        let (level, hit) = c.hw.tlbs.lookup(asid, va, r.fetch, r.write);
        match level {
            TlbLevel::L1 => {}
            TlbLevel::Stlb => {
                c.stats.l1_tlb_misses += 1;
                c.stats.itlb_misses += u64::from(r.fetch);
                c.stats.stlb_hits += 1;
            }
            TlbLevel::Miss => {
                c.stats.l1_tlb_misses += 1;
                c.stats.itlb_misses += u64::from(r.fetch);
                c.stats.tlb_misses += 1;
            }
        }
        if let Some(h) = hit {
            return Ok(Translation {
                gpfn: h.gpfn,
                hpfn: h.hpfn,
            });
        }
        for _ in 0..8 {
            match self.mode.fill(&mut self.core, &mut guest.mem, va, r) {
                Ok(f) => {
                    let e = TlbEntry::new(f.gpfn, f.hpfn, f.write_ok, f.exec_ok);
                    let asid = self.core.asid();
                    self.core.hw.tlbs.insert(asid, va, f.size, r.fetch, e);
                    let off = match f.size {
                        PageSize::Size4K => 0,
                        PageSize::Size2M => (va >> 12) & 511,
                    };
                    return Ok(Translation {
                        gpfn: f.gpfn + off,
                        hpfn: f.hpfn + off,
                    });
                }
                Err(GuestFault) => guest.page_fault(self, va, r)?,
            }
        }
        panic!("access to {va:#x} still faults after 8 guest page faults: guest model bug");
    }
}

impl<M: Mode> Machine<M> {
    /// End of the run: the mode closes its last interval; returns its
    /// switching report, if it has one.
    pub fn finish(&mut self) -> Option<SwitchReport> {
        self.mode.finish(&mut self.core);
        self.mode.switch_report()
    }
}

impl<M: Mode> Platform for Machine<M> {
    fn stats(&mut self) -> &mut Stats {
        &mut self.core.stats
    }
    fn write_pte(&mut self, mem: &mut GuestMemory, gpa: Gpa, val: u64) {
        self.mode.write_pte(&mut self.core, mem, gpa, val);
    }
    fn touch_frame(&mut self, mem: &mut GuestMemory, gpfn: u64) {
        self.mode.touch_frame(&mut self.core, mem, gpfn);
    }
    fn write_cr3(&mut self, mem: &mut GuestMemory, root: u64, pcid: u16) {
        self.mode.write_cr3(&mut self.core, mem, root, pcid);
    }
    fn invlpg(&mut self, pcid: u16, va: Gva) {
        self.mode.invlpg(&mut self.core, pcid, va);
    }
    fn flush_pcid(&mut self, pcid: u16) {
        self.mode.flush_pcid(&mut self.core, pcid);
    }
    fn end_pt_update(&mut self, mem: &mut GuestMemory) {
        self.mode.end_pt_update(&mut self.core, mem);
    }
}
