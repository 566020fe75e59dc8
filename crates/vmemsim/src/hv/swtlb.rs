//! A software-managed (MIPS-style) TLB, native and virtualized by
//! trap-and-emulate.
//!
//! There is no hardware walker. A TLB miss raises a refill exception; the
//! guest kernel's refill handler walks its page table with loads (through
//! the data caches) and writes the entry with a privileged TLB-write
//! instruction ([`crate::mmu::swtlb`]). Entries are tagged by ASID (the
//! process's PCID here) and, virtualized, by VM (the VPID).
//!
//! - [`SwTlbNative`]: the exception goes to the kernel; one miss of a page
//!   the guest's 4-level table maps costs 1 exception + 4 handler loads +
//!   1 TLB write.
//! - [`SwTlbVmm`]: the guest kernel runs deprivileged. The exception enters
//!   the VMM (a `tlb_miss` exit), which reflects it to the guest's handler;
//!   the handler's TLB write traps (a `tlb_write` exit) and the VMM
//!   translates the guest frame to a machine frame through the pmap (the
//!   p2m) before writing the real TLB, keeping a copy of the VM's guest
//!   TLB: 2 traps per miss [seed lectures, "TLB miss flow with a
//!   software-managed TLB"; Hennessy & Patterson, VM chapter: "any
//!   instruction that accesses the TLB must trap"; Bugnion et al., Disco,
//!   SOSP 1997: the pmap and the per-VM software TLB]. A miss whose entry
//!   the copy still holds (the real TLB dropped it: one 4 KiB piece of a
//!   guest 2 MiB page over 4 KiB host pages, or an entry another VM's
//!   refills evicted) is refilled by the VMM alone: 1 trap. The guest's ASID
//!   change on a context switch (an EntryHi write) and its TLB
//!   invalidations (TLBP + TLBWI) are privileged too: `cr3_write` and
//!   `invlpg` exits. Guest PTE stores do not trap: the hardware never reads
//!   the guest's tables, so there is nothing to keep in sync (unlike
//!   shadow paging).
//!
//! Simplifications: the handler's reads of the exception registers
//! (BadVAddr, Context) and its return (ERET) do not trap (Disco turned
//! such instructions into loads and stores of a page shared with the VMM;
//! the VMM completes the return when it emulates the TLB write); the guest
//! kernel's own mappings are not simulated except for the first store to a
//! frame with no machine frame, which traps for the VMM to back it. A guest
//! fault found by the handler goes to the kernel's page-fault path and the
//! access then misses again.

use super::native::{bare_metal_fill, bare_metal_touch};
use super::{Core, Fill, GuestFault, Mode};
use crate::addr::{Gpfn, Gva, PageSize};
use crate::config::Config;
use crate::guest::GuestMemory;
use crate::mmu::swtlb::{refill_walk, RefillFault, RefillLoads};
use crate::mmu::{Asid, Rights, TlbEntry, Tlbs};
use crate::stats::{ExitReason, Stats};

/// Count a handler run's loads.
#[inline]
fn count_loads(s: &mut Stats, l: RefillLoads) {
    s.tlb_refill_loads += u64::from(l.loads);
    s.tlb_refill_load_hits += u64::from(l.hits);
}

/// A software-managed TLB without a VMM: the guest kernel is the OS.
#[derive(Debug, Default)]
pub struct SwTlbNative;

impl Mode for SwTlbNative {
    const VIRTUALIZED: bool = false;
    fn name(&self) -> &'static str {
        "swtlb-native"
    }
    fn fill(
        &mut self,
        core: &mut Core,
        mem: &mut GuestMemory,
        va: u64,
        r: Rights,
    ) -> Result<Fill, GuestFault> {
        let mut loads = RefillLoads::default();
        let res = refill_walk(core.hw, mem, core.vm.guest_root, va, r, Some, &mut loads);
        let s = &mut core.vm.stats;
        s.tlb_refill_exceptions += 1;
        s.tlb_refills += 1;
        count_loads(s, loads);
        let l = match res {
            Ok(l) => l,
            Err(RefillFault::Guest(_)) => return Err(GuestFault),
            Err(RefillFault::Unbacked { .. }) => unreachable!("native tables are always there"),
        };
        s.tlb_writes += 1;
        Ok(bare_metal_fill(core, &l, va))
    }
    fn touch_frame(&mut self, core: &mut Core, _mem: &mut GuestMemory, gpfn: Gpfn) {
        bare_metal_touch(core, gpfn);
    }
}

/// Where the VMM's copy of a guest TLB entry keeps what the real TLB entry
/// does not need: the guest's rights and page size, above any gPFN (below
/// 2^40) in the entry's second frame field (the first holds the gPFN).
const COPY_WRITE: u64 = 1 << 51;
const COPY_EXEC: u64 = 1 << 50;
const COPY_SIZE_SHIFT: u32 = 48;

/// A software-managed TLB virtualized by trap-and-emulate.
#[derive(Debug)]
pub struct SwTlbVmm {
    /// The VMM's copy of the VM's guest TLB: what the guest wrote with its
    /// TLB-write instructions (gPFNs), of the configured TLB geometry,
    /// invalidated as the guest invalidates. Its entries keep the gPFN in
    /// both frame fields, the second with the rights and size
    /// ([`COPY_WRITE`], [`COPY_EXEC`], [`COPY_SIZE_SHIFT`]).
    guest_tlb: Tlbs,
}

impl SwTlbVmm {
    /// The mode for `cfg`: an empty copy of the guest's TLB, of the
    /// geometry of `[tlb]`.
    pub fn new(cfg: &Config) -> Self {
        SwTlbVmm {
            guest_tlb: Tlbs::new(&cfg.tlb, cfg.guest.levels),
        }
    }

    /// The real TLB entry for the access at `va`, whose guest page has
    /// `size` and holds `va` in 4 KiB frame `frame` (gPFN), with the
    /// guest's rights: it covers the smaller of the guest page and the host
    /// page; the pmap (p2m) gives the machine frame, backed first if the
    /// host took it away.
    fn machine_fill(
        core: &mut Core,
        frame: u64,
        size: PageSize,
        r: Rights,
        write_ok: bool,
        exec_ok: bool,
    ) -> Fill {
        let host = core.vm.host_page;
        let size = if size == PageSize::Size4K || host == PageSize::Size4K {
            PageSize::Size4K
        } else {
            PageSize::of_level(size.leaf_level().min(host.leaf_level()))
        };
        // Guest huge pages are aligned, so this is the first frame of the
        // real entry's page.
        let gpfn = frame & !(size.frames() - 1);
        let mut write_ok = write_ok;
        let frame = Gpfn(frame);
        if core.back(frame) {
            // Just backed (the host had taken it away): nothing to check.
        } else if core.cow_protected(frame) {
            // The frame is shared copy-on-write (`vmemsim host`'s
            // scanner): a store breaks the sharing in this trap; a load
            // gets an entry without the write right, so a later store
            // misses and comes back here.
            if r.write {
                core.cow_store(frame);
            } else {
                write_ok = false;
            }
        } else if core.vm.hosted {
            // On a shared host the host may have invalidated the frame's
            // pmap entry (kept in the VM's EPT: idle sampling): the VMM
            // makes it valid again, as an EPT violation would, and the
            // host sees the touch.
            let need = r.ept_bits();
            if core.vm.ept_entry(core.host, frame) & need != need {
                core.vm.ept_restore(core.host, frame);
            }
        }
        let hpfn = core.p2m(Gpfn(gpfn)).expect("backed").0;
        Fill {
            gpfn,
            hpfn,
            size,
            write_ok,
            exec_ok,
        }
    }
}

impl Mode for SwTlbVmm {
    fn name(&self) -> &'static str {
        "swtlb-vmm"
    }

    fn fill(
        &mut self,
        core: &mut Core,
        mem: &mut GuestMemory,
        va: u64,
        r: Rights,
    ) -> Result<Fill, GuestFault> {
        // The miss exception enters the VMM.
        core.exit(ExitReason::TlbMiss);
        let asid = core.asid();
        if let (_, Some(h)) = self.guest_tlb.lookup(asid, va, r.fetch, r.write) {
            // The guest's TLB still holds the entry: refill without
            // reflecting. `h.gpfn` is the 4 KiB frame of `va`.
            core.vm.stats.vmm_tlb_refills += 1;
            core.vm.stats.tlb_writes += 1;
            let size = PageSize::of_level(((h.hpfn >> COPY_SIZE_SHIFT) & 3) as u8 + 1);
            let write_ok = h.hpfn & COPY_WRITE != 0;
            let exec_ok = h.hpfn & COPY_EXEC != 0;
            return Ok(Self::machine_fill(core, h.gpfn, size, r, write_ok, exec_ok));
        }
        // Reflected to the guest's refill handler.
        core.vm.stats.tlb_refills += 1;
        let l = loop {
            let mut loads = RefillLoads::default();
            let vm = &*core.vm;
            let res = refill_walk(
                core.hw,
                mem,
                vm.guest_root,
                va,
                r,
                |g| vm.p2m(Gpfn(g)).map(|h| h.0),
                &mut loads,
            );
            count_loads(&mut core.vm.stats, loads);
            match res {
                Ok(l) => break l,
                Err(RefillFault::Guest(_)) => return Err(GuestFault),
                Err(RefillFault::Unbacked { gpfn }) => {
                    // The handler's load of a table page the host took
                    // away traps; the VMM backs it and the handler resumes.
                    core.exit(ExitReason::TlbMiss);
                    core.back(Gpfn(gpfn));
                }
            }
        };
        // The handler's TLB write traps; the VMM keeps the guest's entry
        // and writes the real TLB with the machine frame.
        core.exit(ExitReason::TlbWrite);
        core.vm.stats.tlb_writes += 1;
        let code = u64::from(l.size.leaf_level() - 1) << COPY_SIZE_SHIFT;
        let rights =
            if l.write_ok { COPY_WRITE } else { 0 } | if l.exec_ok { COPY_EXEC } else { 0 };
        let e = TlbEntry::new(l.frame, l.frame | code | rights, l.write_ok, l.exec_ok);
        self.guest_tlb.insert(asid, va, l.size, r.fetch, e);
        Ok(Self::machine_fill(
            core,
            l.frame_of(va),
            l.size,
            r,
            l.write_ok,
            l.exec_ok,
        ))
    }

    fn touch_frame(&mut self, core: &mut Core, _mem: &mut GuestMemory, gpfn: Gpfn) {
        if core.p2m(gpfn).is_none() {
            // The kernel's first store to the frame misses in the TLB with
            // no machine frame behind it: the VMM backs it.
            core.exit(ExitReason::TlbMiss);
            core.back(gpfn);
        } else {
            // A frame shared copy-on-write: the store traps and copies it.
            core.cow_touch(gpfn, ExitReason::TlbMiss);
        }
    }

    fn write_cr3(&mut self, core: &mut Core, _mem: &mut GuestMemory, root: u64, pcid: u16) {
        // The ASID change (EntryHi write) is privileged.
        core.exit(ExitReason::Cr3Write);
        core.hw_write_cr3(root, pcid);
        if !core.vm.pcid {
            self.guest_tlb.flush_asid(core.asid());
        }
    }

    fn invlpg(&mut self, core: &mut Core, pcid: u16, va: Gva) {
        // TLBP + TLBWI of an invalid entry: privileged.
        core.exit(ExitReason::Invlpg);
        core.hw_invlpg(pcid, va);
        self.guest_tlb.invlpg(Asid::new(core.vm.vpid, pcid), va.0);
    }

    fn flush_pcid(&mut self, core: &mut Core, pcid: u16) {
        core.exit(ExitReason::Invlpg);
        core.hw_flush_pcid(pcid);
        self.guest_tlb.flush_asid(Asid::new(core.vm.vpid, pcid));
    }
}
