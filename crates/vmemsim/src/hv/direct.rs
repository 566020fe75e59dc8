//! Paravirtual direct paging, as in Xen PV: the page tables the hardware
//! walks map gVA straight to hPA, 1-D, at most 4 references. The guest may
//! not write them: every PTE store is an `mmu_update` request the
//! hypervisor validates (the frame belongs to the VM; a page-table page is
//! never mapped writable) and applies.
//!
//! Model. The guest OS model keeps its tables in gPA terms (what a PV guest
//! sees through its p2m). This mode keeps the *machine* tables the hardware
//! walks: one machine page per guest table page, at that page's hPFN, each
//! entry the guest's with its frame translated through the p2m. They are
//! kept exactly in sync through the guest's own updates:
//! - each [`Mode::write_pte`] queues one update (counted in
//!   `pv_pte_updates`, priced as validation); a full queue
//!   (`[pv] batch_size`) or the end of the guest's page-table operation
//!   (Linux leaving lazy-MMU mode) flushes it as one hypercall;
//! - CR3 loads, INVLPG and TLB flushes are `mmuext_op` hypercalls, one
//!   each; a pending update batch rides in the same multicall, as Linux's
//!   Xen PV code batches an MMU op behind queued updates;
//! - a guest frame that becomes a page-table page is pinned (made read-only
//!   in the guest's direct map), one hypercall; one that stops being a
//!   table is made writable again when reused, one hypercall (Linux
//!   `xen_alloc_pte` / `xen_release_pte`);
//! - the hardware sets A/D in the machine tables; as the guest's view is the
//!   same table, they are copied back into the guest's entries (no cost).
//!
//! Guest huge pages: Xen does not give PV guests superpages. Its CPUID
//! policy hides PSE from PV guests (marked `S`, HVM only, in
//! `xen/include/public/arch-x86/cpufeatureset.h`) and 1 GiB pages
//! (`PAGE1GB`, marked `H`, HVM with HAP only); 2 MiB PV superpages existed
//! only behind the `allowsuperpage` boot option (Xen 4.0 to 4.6, needing
//! machine-contiguous frames) and were then removed. The model keeps the
//! guest's 2 MiB pages so that every mode runs the same guest: the
//! hypervisor splinters a guest PDE with PS into a machine page of 512
//! 4 KiB entries (a hypervisor frame), so machine tables map 4 KiB pages
//! only, whatever `[host] page_size` is. A guest with 1 GiB pages
//! (`guest.huge_pages = "1g"`) does not exist under PV: `direct` rejects
//! that config ([`crate::sim::ModeKind::check`]).
//!
//! Guest page faults have no hidden part (no shadow to fill) but a PV guest
//! receives #PF through Xen's trap bounce, so each counts as an exit
//! ([`ExitReason::GuestFault`], priced as an injection). Frames are backed
//! on first touch through [`Core::back`], in the same order as in the other
//! modes so hPAs agree; no exit is charged, as a PV domain's memory is
//! populated when it is built.

use rustc_hash::FxHashMap;

use super::{Core, Fill, GuestFault, Mode};
use crate::addr::{Gpa, Gva, PageSize, FRAMES_PER_HUGE};
use crate::config::PvConfig;
use crate::guest::{softwalk, GuestMemory};
use crate::host::HV_FRAME_BASE;
use crate::mem::PageStore;
use crate::mmu::walker::walk_1d;
use crate::mmu::{Dim, Rights, TableMem};
use crate::pte::x86;
use crate::stats::ExitReason;

/// Flags of a machine entry pointing at a splinter page.
const SPLINTER_FLAGS: u64 = x86::P | x86::RW | x86::US | x86::A;

/// The machine tables as the hardware sees them: guest-table copies at low
/// hPFNs, splinter pages among the hypervisor's frames.
struct MachineView<'a> {
    low: &'a mut PageStore,
    high: &'a mut PageStore,
}

impl TableMem for MachineView<'_> {
    #[inline]
    fn read(&self, frame: u64, idx: usize) -> u64 {
        if frame >= HV_FRAME_BASE {
            self.high.read(frame, idx)
        } else {
            self.low.read(frame, idx)
        }
    }
    #[inline]
    fn write(&mut self, frame: u64, idx: usize, val: u64) {
        if frame >= HV_FRAME_BASE {
            self.high.write(frame, idx, val)
        } else {
            self.low.write(frame, idx, val)
        }
    }
}

/// Paravirtual direct-paging mode state.
#[derive(Debug)]
pub struct Direct {
    /// Machine copies of guest table pages, by hPFN.
    machine: PageStore,
    /// (machine table hPFN, index) of a splintered 2 MiB guest leaf -> splinter page hPFN.
    splinters: FxHashMap<(u64, usize), u64>,
    /// Queued updates: (guest PTE address, value).
    queue: Vec<(Gpa, u64)>,
    batch: usize,
    /// Machine root (hPFN of the guest's PML4).
    root: u64,
    /// Guest frames of the VM (validation bound).
    guest_frames: u64,
}

impl Direct {
    /// Direct paging with the configured batch size for a guest of `guest_mem_mib`.
    pub fn new(pv: &PvConfig, guest_mem_mib: u64) -> Self {
        Direct {
            machine: PageStore::new(0),
            splinters: FxHashMap::default(),
            queue: Vec::with_capacity(pv.batch_size as usize),
            batch: pv.batch_size as usize,
            root: 0,
            guest_frames: guest_mem_mib * 256,
        }
    }

    /// Number of machine table pages held (guest table copies plus splinters).
    pub fn machine_pages(&self) -> usize {
        self.machine.len() + self.splinters.len()
    }

    fn p2m(core: &Core, gpfn: u64) -> u64 {
        core.p2m(gpfn)
            .unwrap_or_else(|| panic!("direct: guest frame {gpfn:#x} used before it was touched"))
    }

    /// Flush the queue as one hypercall (when `own_call`; otherwise it rides
    /// in the caller's multicall).
    fn flush(&mut self, core: &mut Core, mem: &GuestMemory, own_call: bool) {
        if self.queue.is_empty() {
            return;
        }
        if own_call {
            core.exit(ExitReason::Hypercall);
        }
        let q = std::mem::take(&mut self.queue);
        for &(gpa, val) in &q {
            self.apply(
                core,
                mem,
                gpa.page_number(),
                (gpa.page_offset() / 8) as usize,
                val,
            );
        }
        self.queue = q;
        self.queue.clear();
    }

    /// Validate and apply one update to the machine copy of guest table `gpfn`.
    fn apply(&mut self, core: &mut Core, mem: &GuestMemory, gpfn: u64, idx: usize, val: u64) {
        let table = Self::p2m(core, gpfn);
        assert!(
            self.machine.contains(table),
            "direct: update to {gpfn:#x}, not a pinned page table"
        );
        if let Some(sp) = self.splinters.remove(&(table, idx)) {
            core.host.free_table(sp);
        }
        if val & x86::P == 0 {
            self.machine.write(table, idx, 0);
            return;
        }
        let g = x86::frame(val);
        assert!(
            g < self.guest_frames,
            "direct: update maps frame {g:#x} outside the VM"
        );
        let flags = val & !x86::FRAME;
        if val & x86::PS != 0 {
            // A 2 MiB guest leaf: splinter into 512 machine PTEs.
            let sp = core.host.alloc_table();
            for i in 0..FRAMES_PER_HUGE {
                assert!(
                    !mem.contains(g + i) || val & x86::RW == 0,
                    "direct: page-table page mapped writable"
                );
                let h = Self::p2m(core, g + i);
                core.host
                    .tables
                    .write(sp, i as usize, x86::make(h, flags & !x86::PS));
            }
            self.splinters.insert((table, idx), sp);
            self.machine
                .write(table, idx, x86::make(sp, SPLINTER_FLAGS));
            return;
        }
        // A link to a lower table (the frame is a pinned table page) or a
        // 4 KiB leaf; Xen knows which from the page's type, the guest
        // model's table set plays that role here.
        let h = Self::p2m(core, g);
        if mem.contains(g) {
            assert!(
                self.machine.contains(h),
                "direct: link to an unpinned table"
            );
        }
        self.machine.write(table, idx, x86::make(h, flags));
    }

    /// Drop the machine copy at `hpfn` and its splinters.
    fn unpin(&mut self, core: &mut Core, hpfn: u64) {
        for idx in 0..512 {
            if let Some(sp) = self.splinters.remove(&(hpfn, idx)) {
                core.host.free_table(sp);
            }
        }
        self.machine.remove(hpfn);
    }
}

impl Mode for Direct {
    fn name(&self) -> &'static str {
        "direct"
    }

    fn fill(
        &mut self,
        core: &mut Core,
        mem: &mut GuestMemory,
        va: u64,
        r: Rights,
    ) -> Result<Fill, GuestFault> {
        debug_assert!(
            self.queue.is_empty(),
            "direct: walk with updates still queued"
        );
        let asid = core.asid();
        let res = {
            let mut view = MachineView {
                low: &mut self.machine,
                high: &mut core.host.tables,
            };
            walk_1d(core.hw, &mut view, Dim::Guest, self.root, asid, va, r)
        };
        core.walk_done();
        let Ok(l) = res else {
            // Trap bounce through the hypervisor.
            core.exit(ExitReason::GuestFault);
            return Err(GuestFault);
        };
        debug_assert_eq!(
            l.size,
            PageSize::Size4K,
            "machine tables map 4 KiB pages only"
        );
        // The guest's entries are the same table: copy A/D back.
        let path = softwalk::path(mem, core.vm.guest_root, core.hw.levels, va);
        for i in 0..path.len {
            let (t, idx, e) = path.steps[i];
            let mut ne = e | x86::A;
            if i == path.len - 1 && r.write {
                ne |= x86::D;
            }
            if ne != e {
                mem.write(t, idx, ne);
            }
        }
        let gpfn = core.m2p(l.frame).expect("machine leaf maps a guest frame");
        Ok(Fill {
            size: PageSize::Size4K,
            ..Fill::of_leaf(&l, gpfn, l.frame)
        })
    }

    fn write_pte(&mut self, core: &mut Core, mem: &mut GuestMemory, gpa: Gpa, val: u64) {
        crate::guest::store_pte(mem, gpa, val);
        core.vm.stats.pv_pte_updates += 1;
        self.queue.push((gpa, val));
        if self.queue.len() >= self.batch {
            self.flush(core, mem, true);
        }
    }

    fn touch_frame(&mut self, core: &mut Core, mem: &mut GuestMemory, gpfn: u64) {
        core.back(gpfn);
        let h = Self::p2m(core, gpfn);
        let was_table = self.machine.contains(h);
        let is_table = mem.contains(gpfn);
        if was_table {
            self.unpin(core, h);
        }
        if is_table {
            self.machine.add(h);
        }
        if was_table || is_table {
            // Make writable (release) or read-only and pinned (alloc).
            core.exit(ExitReason::Hypercall);
        }
    }

    fn write_cr3(&mut self, core: &mut Core, mem: &mut GuestMemory, root: u64, pcid: u16) {
        self.flush(core, mem, false);
        core.exit(ExitReason::Hypercall);
        core.hw_write_cr3(root, pcid);
        self.root = Self::p2m(core, root);
    }

    fn invlpg(&mut self, core: &mut Core, pcid: u16, va: Gva) {
        debug_assert!(self.queue.is_empty());
        core.exit(ExitReason::Hypercall);
        core.hw_invlpg(pcid, va);
    }

    fn flush_pcid(&mut self, core: &mut Core, pcid: u16) {
        debug_assert!(self.queue.is_empty());
        core.exit(ExitReason::Hypercall);
        core.hw_flush_pcid(pcid);
    }

    fn end_pt_update(&mut self, core: &mut Core, mem: &mut GuestMemory) {
        self.flush(core, mem, true);
    }
}
