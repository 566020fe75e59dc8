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
//!
//! Content-based sharing (`[sharing]` on a host, hostsim/scanner.rs).
//! A direct VM has no second translation the host could revoke quietly:
//! the machine entries are what the hardware walks, and a missing one is a
//! guest-visible #PF. So the host edits them, found through a reverse map
//! (kept only when the host's sharing scanner runs): guest frame gPFN -> the machine leaf
//! entries written for it (4 KiB leaves and splinter entries), kept lazily
//! and checked against the machine (and, at a COW break, the guest's)
//! entry when used.
//! - A frame that becomes shared loses RW in every machine entry mapping
//!   it ([`Mode::host_write_protect`]); the merged frame's entries are
//!   repointed at the shared frame, read-only
//!   ([`Mode::host_share_into`]); an update applied later, or a splinter
//!   built, gives no RW to a write-protected frame.
//! - A store that the guest's tables allow but a read-only machine entry
//!   of a write-protected frame refuses is a write fault Xen handles
//!   itself: one exit, counted as [`ExitReason::ShadowFault`] (the
//!   reason for a hidden fault, one the guest never sees; priced as a
//!   shadow fill), the COW break ([`Core::cow_store`]), then every machine
//!   entry whose guest entry maps that gPFN names the copy (RW as the
//!   guest's entry) and the walk is retried. The guest kernel's
//!   whole-frame writes break the same way. Xen itself ships sharing
//!   (`mem_sharing`) only for HVM guests with HAP: this is a model of the
//!   mechanism, not of a shipped hypervisor.

use rustc_hash::FxHashMap;

use super::{Core, Fill, GuestFault, Mode};
use crate::addr::{Gpa, Gva, PageSize, FRAMES_PER_HUGE};
use crate::addr::{Gpfn, Hpfn};
use crate::config::PvConfig;
use crate::guest::{softwalk, GuestMemory};
use crate::host::{HostMemory, HV_FRAME_BASE};
use crate::mem::PageStore;
use crate::mmu::walker::walk_1d;
use crate::mmu::{Dim, Rights, TableMem};
use crate::pte::x86;
use crate::stats::ExitReason;

/// Flags of a machine entry pointing at a splinter page.
const SPLINTER_FLAGS: u64 = x86::P | x86::RW | x86::US | x86::A;

/// [`MEntry::sub`] of a machine table entry itself (not in a splinter).
const WHOLE: u16 = u16::MAX;

/// A machine leaf entry written for a guest frame (a reverse-map record):
/// entry `idx` of the machine copy at hPFN `table` (the copy of guest table
/// `gtable`), or, when `sub` is not [`WHOLE`], entry `sub` of the splinter
/// page hanging from that entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MEntry {
    table: u64,
    gtable: u64,
    idx: u16,
    sub: u16,
}

impl MEntry {
    /// The guest's entry behind this machine entry, if it (still) maps
    /// guest frame `gpfn`: a 4 KiB leaf to it, or the 2 MiB leaf whose
    /// frame `sub` it is.
    fn guest_entry(&self, mem: &GuestMemory, gpfn: u64) -> Option<u64> {
        let ge = mem.read(self.gtable, self.idx as usize);
        let maps = ge & x86::P != 0
            && if self.sub == WHOLE {
                ge & x86::PS == 0 && x86::frame(ge) == gpfn
            } else {
                ge & x86::PS != 0 && x86::frame(ge) + u64::from(self.sub) == gpfn
            };
        maps.then_some(ge)
    }
}

/// Where record `e`'s machine entry is now: (page hPFN, index), or `None`
/// when its table was unpinned or its splinter freed.
fn locate(
    machine: &PageStore,
    splinters: &FxHashMap<(u64, usize), u64>,
    e: MEntry,
) -> Option<(u64, usize)> {
    if !machine.contains(e.table) {
        return None;
    }
    if e.sub == WHOLE {
        return Some((e.table, e.idx as usize));
    }
    let sp = splinters.get(&(e.table, e.idx as usize))?;
    Some((*sp, e.sub as usize))
}

/// `flags` of a machine leaf to host frame `h`, without RW when the frame
/// is write-protected for sharing ([`HostMemory::cow_protected`]).
fn leaf_rights(host: &HostMemory, h: u64, flags: u64) -> u64 {
    if host.cow_protected(Hpfn(h)) {
        flags & !x86::RW
    } else {
        flags
    }
}

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
    /// Reverse map, kept only when the sharing scanner runs: gPFN -> machine leaf entries
    /// written for it. Lazy: a record may be stale (entry overwritten,
    /// table unpinned, splinter freed); each is checked when used, and the
    /// stale ones are dropped then.
    rmap: FxHashMap<u64, Vec<MEntry>>,
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
            rmap: FxHashMap::default(),
        }
    }

    /// Number of machine table pages held (guest table copies plus splinters).
    pub fn machine_pages(&self) -> usize {
        self.machine.len() + self.splinters.len()
    }

    fn p2m(core: &Core, gpfn: u64) -> u64 {
        core.p2m(Gpfn(gpfn))
            .unwrap_or_else(|| panic!("direct: guest frame {gpfn:#x} used before it was touched"))
            .0
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
        // Only the sharing scanner reads the reverse map.
        let scanned = core.vm.scanned;
        if val & x86::PS != 0 {
            // A 2 MiB guest leaf: splinter into 512 machine PTEs.
            let sp = core.host.alloc_table();
            for i in 0..FRAMES_PER_HUGE {
                assert!(
                    !mem.contains(g + i) || val & x86::RW == 0,
                    "direct: page-table page mapped writable"
                );
                let h = Self::p2m(core, g + i);
                let f = leaf_rights(core.host, h, flags & !x86::PS);
                core.host.tables.write(sp, i as usize, x86::make(h, f));
                if scanned {
                    let e = MEntry {
                        table,
                        gtable: gpfn,
                        idx: idx as u16,
                        sub: i as u16,
                    };
                    self.record(mem, g + i, e);
                }
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
            self.machine.write(table, idx, x86::make(h, flags));
            return;
        }
        let f = leaf_rights(core.host, h, flags);
        self.machine.write(table, idx, x86::make(h, f));
        if scanned {
            let e = MEntry {
                table,
                gtable: gpfn,
                idx: idx as u16,
                sub: WHOLE,
            };
            self.record(mem, g, e);
        }
    }

    /// Note in the reverse map that machine entry `e` now maps guest frame
    /// `gpfn`. A list that reaches a power of two (from 8) first drops its
    /// stale records (whose guest entry no longer maps `gpfn`), so a frame
    /// mapped at many places over a run keeps only the live ones.
    fn record(&mut self, mem: &GuestMemory, gpfn: u64, e: MEntry) {
        let list = self.rmap.entry(gpfn).or_default();
        if list.contains(&e) {
            return;
        }
        if list.len() >= 8 && list.len().is_power_of_two() {
            list.retain(|r| r.guest_entry(mem, gpfn).is_some());
        }
        list.push(e);
    }

    /// Rewrite every live machine entry of guest frame `gpfn` that maps
    /// host frame `from` with `f(entry)`; drop the records that map
    /// nothing of `gpfn` any more (with `mem`, also those whose guest entry
    /// no longer maps `gpfn`: then `f` gets that guest entry). Returns the
    /// entries changed.
    fn rewrite(
        &mut self,
        host: &mut HostMemory,
        mem: Option<&GuestMemory>,
        gpfn: u64,
        from: u64,
        mut f: impl FnMut(u64, u64) -> u64,
    ) -> u64 {
        let Some(slot) = self.rmap.get_mut(&gpfn) else {
            return 0;
        };
        let mut list = std::mem::take(slot);
        let mut n = 0;
        list.retain(|&e| {
            let Some((page, i)) = locate(&self.machine, &self.splinters, e) else {
                return false;
            };
            let ge = match mem {
                Some(mem) => match e.guest_entry(mem, gpfn) {
                    Some(ge) => ge,
                    None => return false,
                },
                None => 0,
            };
            let mut view = MachineView {
                low: &mut self.machine,
                high: &mut host.tables,
            };
            let me = view.read(page, i);
            if me & x86::P == 0 || x86::frame(me) != from {
                return false;
            }
            let ne = f(me, ge);
            if ne != me {
                view.write(page, i, ne);
                n += 1;
            }
            true
        });
        if list.is_empty() {
            self.rmap.remove(&gpfn);
        } else {
            *self.rmap.get_mut(&gpfn).expect("taken above") = list;
        }
        n
    }

    /// A store to `gpfn`, write-protected for sharing, exited (the caller
    /// counted the exit): the COW break ([`Core::cow_store`]: a copy, or
    /// the frame made writable in place for its last owner), then every
    /// machine entry whose guest entry maps `gpfn` names the frame `gpfn`
    /// has now, with the guest entry's RW. Returns the entries rewritten.
    fn cow_break(&mut self, core: &mut Core, mem: &GuestMemory, gpfn: u64) -> u64 {
        let old = Self::p2m(core, gpfn);
        core.cow_store(Gpfn(gpfn));
        let new = Self::p2m(core, gpfn);
        self.rewrite(core.host, Some(mem), gpfn, old, |me, ge| {
            x86::make(new, (me & !(x86::FRAME | x86::RW)) | (ge & x86::RW))
        })
    }

    /// A write walk of `va` failed: if the guest's own tables allow the
    /// store and its frame is write-protected for sharing, the machine
    /// entry's missing RW is the host's, not the guest's (a write fault
    /// Xen handles): that frame's gPFN.
    fn cow_fault(core: &Core, mem: &GuestMemory, va: u64, r: Rights) -> Option<u64> {
        let path = softwalk::path(mem, core.vm.guest_root, core.hw.levels, va);
        let (_, _, leaf) = path.steps[path.len - 1];
        let allowed = x86::is_leaf(path.leaf_level(), leaf)
            && path.steps[..path.len].iter().all(|&(_, _, e)| {
                e & x86::P != 0 && e & x86::RW != 0 && !(r.fetch && e & x86::NX != 0)
            });
        if !allowed {
            return None;
        }
        let off = (va >> 12) & (x86::leaf_frames(path.leaf_level()) - 1);
        let gpfn = x86::frame(leaf) + off;
        core.cow_protected(Gpfn(gpfn)).then_some(gpfn)
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
        for _ in 0..4 {
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
                if let Some(gpfn) = r.write.then(|| Self::cow_fault(core, mem, va, r)).flatten() {
                    // A store to a frame shared by content: Xen's write
                    // fault, handled in the hypervisor (a COW break).
                    core.exit(ExitReason::ShadowFault);
                    self.cow_break(core, mem, gpfn);
                    continue;
                }
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
            // The m2p names no single owner of a shared frame.
            let gpfn = core.leaf_gpfn(mem, Hpfn(l.frame), va).0;
            return Ok(Fill {
                size: PageSize::Size4K,
                ..Fill::of_leaf(&l, gpfn, l.frame)
            });
        }
        panic!("direct fill of {va:#x} does not converge: COW model bug");
    }

    fn host_write_protect(&mut self, host: &mut HostMemory, gpfn: Gpfn, hpfn: Hpfn) -> u64 {
        debug_assert!(
            self.queue.is_empty(),
            "direct: host edit with updates queued"
        );
        self.rewrite(host, None, gpfn.0, hpfn.0, |me, _| me & !x86::RW)
    }

    fn host_share_into(&mut self, host: &mut HostMemory, gpfn: Gpfn, old: Hpfn, keep: Hpfn) -> u64 {
        debug_assert!(
            self.queue.is_empty(),
            "direct: host edit with updates queued"
        );
        // A missing machine entry would be a guest-visible #PF: repoint.
        self.rewrite(host, None, gpfn.0, old.0, |me, _| {
            x86::make(keep.0, me & !(x86::FRAME | x86::RW))
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

    fn touch_frame(&mut self, core: &mut Core, mem: &mut GuestMemory, gpfn: Gpfn) {
        core.back(gpfn);
        if core.cow_protected(gpfn) {
            // The kernel's store through its (read-only) direct map of a
            // shared frame: Xen's write fault, a COW break.
            core.exit(ExitReason::ShadowFault);
            self.cow_break(core, mem, gpfn.0);
        }
        let h = Self::p2m(core, gpfn.0);
        let was_table = self.machine.contains(h);
        let is_table = mem.contains(gpfn.0);
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
