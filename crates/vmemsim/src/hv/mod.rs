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
pub mod swtlb;

pub use agile::Agile;
pub use direct::Direct;
pub use native::Native;
pub use nested::Nested;
pub use selective::{Selective, SwitchReport};
pub use shadow::Shadow;
pub use swtlb::{SwTlbNative, SwTlbVmm};

use crate::addr::{Gpa, Gpfn, Gva, Hpfn, PageSize};
use crate::guest::{GuestMemory, GuestOs, Platform};
use crate::host::{HostMemory, Vm};
use crate::mem::PageStore;
use crate::mmu::walker::EptRef;
use crate::mmu::{Asid, Hw, Leaf, Rights, TlbEntry, TlbLevel};
use crate::stats::{ExitReason, Stats};
use crate::SimError;

/// Everything a mode works on besides its own state, borrowed for one
/// operation: the hardware of the pCPU the VM runs on, the host's memory
/// pool, and the host's state of the VM (VPID, p2m, EPT root, vCPU
/// registers, counters).
#[derive(Debug)]
pub struct Core<'a> {
    /// TLBs, walk caches, walkers' record of the pCPU.
    pub hw: &'a mut Hw,
    /// Host frames, m2p, hypervisor table pages.
    pub host: &'a mut HostMemory,
    /// The running VM.
    pub vm: &'a mut Vm,
}

impl Core<'_> {
    /// ASID of the running guest process.
    #[inline]
    pub fn asid(&self) -> Asid {
        Asid::new(self.vm.vpid, self.vm.guest_pcid)
    }

    /// The VM's EPT, as a 2-D walk uses it.
    #[inline]
    pub fn ept(&self) -> EptRef<'_, PageStore> {
        EptRef {
            tables: &self.host.tables,
            root: self.vm.eptp,
            levels: self.vm.ept_levels,
            leaf_level: self.vm.host_page.leaf_level(),
            tag: self.vm.ept_tag,
        }
    }

    /// Count the walk in the record and start a new record.
    #[inline]
    pub fn walk_done(&mut self) {
        self.vm.stats.add_walk(&self.hw.rec);
        self.hw.rec.clear();
    }

    /// Count one VM exit. Without VPIDs the exit and the entry that
    /// follows flush the pCPU's TLBs and PSCs [SDM 29.4.3.1]. Under binary
    /// translation the intervention is a trap or a call-out instead
    /// ([`crate::host::BinaryTranslator`]).
    #[inline]
    pub fn exit(&mut self, r: ExitReason) {
        if let Some(bt) = &mut self.vm.bt {
            // Binary translation: a trap into the VMM or a call-out, no
            // world switch (and so no flush). (A software-managed TLB is
            // virtualized by trap-and-emulate only: `ModeKind::check`.)
            debug_assert!(!ExitReason::SWTLB.contains(&r), "{r:?} under BT");
            bt.intervene(&mut self.vm.stats, r);
            return;
        }
        self.vm.stats.exit(r);
        if self.vm.flush_on_exit {
            self.vm.exit_flushes += 1;
            self.hw.invvpid_single(self.vm.vpid);
        }
    }

    /// The hardware side of a CR3 write: remember the root; without PCIDs
    /// the TLB and PSC entries of the address space are flushed.
    pub fn hw_write_cr3(&mut self, root: u64, pcid: u16) {
        self.vm.guest_root = root;
        self.vm.guest_pcid = pcid;
        if !self.vm.pcid {
            let a = self.asid();
            self.hw.tlbs.flush_asid(a);
            self.hw.pwc.flush_asid(a);
        }
    }

    /// The hardware side of INVLPG: the page's TLB entries and every PSC
    /// entry of the PCID go [SDM 4.10.4.1].
    pub fn hw_invlpg(&mut self, pcid: u16, va: Gva) {
        let a = Asid::new(self.vm.vpid, pcid);
        self.hw.tlbs.invlpg(a, va.0);
        self.hw.pwc.flush_asid(a);
    }

    /// The hardware side of INVPCID single-context.
    pub fn hw_flush_pcid(&mut self, pcid: u16) {
        let a = Asid::new(self.vm.vpid, pcid);
        self.hw.tlbs.flush_asid(a);
        self.hw.pwc.flush_asid(a);
    }

    /// INVVPID single-context for the running VM: its TLB and PSC entries
    /// (every PCID) go; other VMs' stay.
    pub fn invvpid(&mut self) {
        self.hw.invvpid_single(self.vm.vpid);
    }

    /// An EPT violation on `gpfn` (VM exit): the hypervisor backs a frame
    /// that has no host frame, or, for one that has, rewrites its EPT entry
    /// from the p2m with full rights (the entry was cleared or read-only).
    ///
    /// A present entry that still exits is read-only: the frame is
    /// write-protected for sharing and the access a store, a
    /// copy-on-write break ([`Core::cow_store`]).
    pub fn ept_violation(&mut self, gpfn: Gpfn) {
        self.exit(ExitReason::EptViolation);
        if !self.back(gpfn) {
            let cow = self.cow_protected(gpfn)
                && crate::pte::ept::present(self.vm.ept_entry(self.host, gpfn));
            if cow {
                self.cow_store(gpfn);
            } else {
                self.vm.ept_restore(self.host, gpfn);
            }
        }
    }

    /// The running VM stores to `gpfn`, whose frame is write-protected for
    /// sharing, in the exit that store caused (EPT violation or shadow
    /// fault): a still-shared frame is copied to a private one (the COW
    /// break) and the VM's TLB entries are flushed on this pCPU (INVEPT
    /// single-context: nested TLB and combined mappings), as KVM flushes
    /// after breaking a KSM page; returns the old frame, whose shadow
    /// entries the caller drops. A frame the VM is the last owner of is
    /// made writable in place (`None`).
    pub fn cow_store(&mut self, gpfn: Gpfn) -> Option<Hpfn> {
        let old = self.vm.cow_store(self.host, gpfn)?;
        self.hw.invept_single(self.vm.ept_tag, self.vm.vpid);
        self.vm.sharing.cow_flushes += 1;
        Some(old)
    }

    /// The guest kernel writes its whole frame `gpfn` ([`Mode::touch_frame`])
    /// and the frame is write-protected for sharing: the store exits
    /// (`reason`: an EPT violation, or a shadow write fault) and is a COW
    /// break ([`Core::cow_store`]); returns the old frame if copied.
    pub fn cow_touch(&mut self, gpfn: Gpfn, reason: ExitReason) -> Option<Hpfn> {
        if !self.cow_protected(gpfn) {
            return None;
        }
        self.exit(reason);
        self.cow_store(gpfn)
    }

    /// True when the running VM's backed `gpfn` is write-protected for
    /// sharing (a store to it must exit).
    #[inline]
    pub fn cow_protected(&self, gpfn: Gpfn) -> bool {
        self.vm
            .p2m(gpfn)
            .is_some_and(|h| self.host.cow_protected(h))
    }

    /// The gPFN a shadow (or PV) leaf to `hpfn` maps for `va`: the m2p's,
    /// or, when the VM has several guest frames on one shared frame
    /// (sharing within a VM), the guest's own tables' (in sync with the
    /// shadow at every fill).
    pub fn leaf_gpfn(&self, mem: &GuestMemory, hpfn: Hpfn, va: u64) -> Gpfn {
        if let Some(g) = self.m2p(hpfn) {
            return g;
        }
        debug_assert!(self.host.is_shared(hpfn), "leaf to a free frame");
        Gpfn(softwalk_gpfn(mem, self.vm.guest_root, self.hw.levels, va))
    }

    /// Back `gpfn` with a host frame if needed; true if one was allocated.
    pub fn back(&mut self, gpfn: Gpfn) -> bool {
        let before = self.vm.backed_frames;
        let (_, newly) = self.vm.back(self.host, gpfn);
        // A huge host page backs all its frames at once.
        self.vm.stats.host_frames_backed += self.vm.backed_frames.saturating_sub(before);
        newly
    }

    /// The hPFN backing the running VM's `gpfn`, if any.
    #[inline]
    pub fn p2m(&self, gpfn: Gpfn) -> Option<Hpfn> {
        self.vm.p2m(gpfn)
    }

    /// The running VM's gPFN that `hpfn` backs (the m2p map), if it backs one of its frames.
    #[inline]
    pub fn m2p(&self, hpfn: Hpfn) -> Option<Gpfn> {
        self.host.gpfn_of(hpfn, self.vm.id)
    }
}

/// The gPFN the guest's tables map `va` to (a leaf of a shared frame).
fn softwalk_gpfn(mem: &GuestMemory, root: u64, levels: u8, va: u64) -> u64 {
    crate::guest::softwalk::translate(mem, root, levels, va)
        .expect("a shadow leaf the guest does not map")
        .gpfn
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
pub trait Mode: 'static {
    /// False for native execution (no VM: the host gives it VPID 0); the
    /// host assigns every other VM its VPID.
    const VIRTUALIZED: bool = true;
    /// Name used in reports and on the command line.
    fn name(&self) -> &'static str;
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
    fn touch_frame(&mut self, core: &mut Core, mem: &mut GuestMemory, gpfn: Gpfn);
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
    /// The host took guest frame `gpfn` (host frame `hpfn`) away
    /// (hypervisor swapping): drop the mode's own mappings of it (shadow
    /// leaves, through the reverse map); returns how many were dropped.
    /// The EPT entry is the host's to clear; the caller flushes.
    fn host_unmap(&mut self, _host: &mut HostMemory, _gpfn: Gpfn, _hpfn: Hpfn) -> u64 {
        0
    }
    /// True when the mode holds a live mapping of guest frame `gpfn` to
    /// host frame `hpfn` of its own (a shadow leaf): with the refill
    /// record ([`crate::host::Vm::watch`]), how the host's idle sampling
    /// sees that the guest touched a frame it invalidated with
    /// [`Mode::host_unmap`]. The EPT entry is the host's to check.
    fn host_mapped(&self, _host: &HostMemory, _gpfn: Gpfn, _hpfn: Hpfn) -> bool {
        false
    }
    /// Guest frame `gpfn`'s host frame `hpfn` became shared: every mapping
    /// of the mode's own (shadow leaves, through the reverse map) loses its
    /// write right; returns how many. The EPT entry is the host's; the
    /// caller flushes.
    fn host_write_protect(&mut self, _host: &mut HostMemory, _gpfn: Gpfn, _hpfn: Hpfn) -> u64 {
        0
    }
    /// Guest frame `gpfn`'s own host frame `old` was merged into shared
    /// frame `keep` (p2m and EPT entry already name `keep`, read-only):
    /// the mode's mappings of `old` go; returns how many changed. By
    /// default they are dropped ([`Mode::host_unmap`]) to be refilled on
    /// demand; direct paging, which has no hidden fault to refill them,
    /// repoints them at `keep` instead. The caller flushes.
    fn host_share_into(
        &mut self,
        host: &mut HostMemory,
        gpfn: Gpfn,
        old: Hpfn,
        _keep: Hpfn,
    ) -> u64 {
        self.host_unmap(host, gpfn, old)
    }
    /// The guest finished a batch of page-table changes.
    fn end_pt_update(&mut self, _core: &mut Core, _mem: &mut GuestMemory) {}
    /// Guest instruction count at which [`Mode::boundary`] is next due
    /// (`u64::MAX`: never). Modes with a policy (switching, agile) use it.
    fn next_boundary(&self) -> u64 {
        u64::MAX
    }
    /// Called between two accesses once `core.vm.stats.instructions` reached
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

/// A guest running on one mode: the mode's own state plus the host's state
/// of the VM. The pCPU hardware and host memory it runs on are lent to it
/// per operation ([`Machine::on`]).
#[derive(Debug)]
pub struct Machine<M: Mode> {
    /// The mode's own state.
    pub mode: M,
    /// The host's state of the VM: VPID, p2m, EPT root, registers, counters.
    pub vm: Vm,
    /// Instruction count at which the mode's next boundary is due.
    next_boundary: u64,
}

impl<M: Mode> Machine<M> {
    /// `mode` running the VM `vm`.
    pub fn new(mode: M, vm: Vm) -> Self {
        Machine {
            next_boundary: mode.next_boundary(),
            mode,
            vm,
        }
    }

    /// The machine on pCPU hardware `hw` and host memory `host`, for one
    /// operation (an access, a guest event): what the guest kernel calls.
    #[inline]
    pub fn on<'a>(&'a mut self, hw: &'a mut Hw, host: &'a mut HostMemory) -> Running<'a, M> {
        Running {
            mode: &mut self.mode,
            core: Core {
                hw,
                host,
                vm: &mut self.vm,
            },
            next_boundary: &mut self.next_boundary,
        }
    }

    /// End of the run: the mode closes its last interval; returns its
    /// switching report, if it has one.
    pub fn finish(&mut self, hw: &mut Hw, host: &mut HostMemory) -> Option<SwitchReport> {
        let mut run = self.on(hw, host);
        run.mode.finish(&mut run.core);
        run.mode.switch_report()
    }
}

/// A [`Machine`] with the hardware and host memory it runs on: the
/// [`Platform`] its guest kernel talks to.
#[derive(Debug)]
pub struct Running<'a, M: Mode> {
    /// The mode's own state.
    pub mode: &'a mut M,
    /// Hardware, host memory and VM state.
    pub core: Core<'a>,
    next_boundary: &'a mut u64,
}

impl<M: Mode> Running<'_, M> {
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
        if self.core.vm.stats.instructions >= *self.next_boundary {
            self.mode.boundary(&mut self.core, &mut guest.mem);
            *self.next_boundary = self.mode.next_boundary();
        }
        let c = &mut self.core;
        let stats = &mut c.vm.stats;
        stats.accesses += 1;
        stats.instructions += u64::from(r.fetch);
        let asid = Asid::new(c.vm.vpid, c.vm.guest_pcid);
        let (level, hit) = c.hw.tlbs.lookup(asid, va, r.fetch, r.write);
        match level {
            TlbLevel::L1 => {}
            TlbLevel::Stlb => {
                stats.l1_tlb_misses += 1;
                stats.itlb_misses += u64::from(r.fetch);
                stats.stlb_hits += 1;
            }
            TlbLevel::Miss => {
                stats.l1_tlb_misses += 1;
                stats.itlb_misses += u64::from(r.fetch);
                stats.tlb_misses += 1;
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
                        PageSize::Size1G => (va >> 12) & (PageSize::Size1G.frames() - 1),
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

impl<M: Mode> Platform for Running<'_, M> {
    fn stats(&mut self) -> &mut Stats {
        &mut self.core.vm.stats
    }
    fn write_pte(&mut self, mem: &mut GuestMemory, gpa: Gpa, val: u64) {
        self.mode.write_pte(&mut self.core, mem, gpa, val);
    }
    fn touch_frame(&mut self, mem: &mut GuestMemory, gpfn: u64) {
        let gpfn = Gpfn(gpfn);
        let vm = &mut self.core.vm;
        vm.stats.guest_frames_touched += u64::from(vm.note_touch(gpfn));
        self.mode.touch_frame(&mut self.core, mem, gpfn);
    }
    fn read_frame(&mut self, _mem: &mut GuestMemory, gpfn: u64) {
        // Double paging: the host reads back a frame it swapped out only
        // for the guest to write it to its own swap (the VM waits for the
        // read, counted as a host swap-in).
        let gpfn = Gpfn(gpfn);
        if self.core.vm.is_swapped(gpfn) {
            self.core.vm.double_pagings += 1;
            self.core.back(gpfn);
        }
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
