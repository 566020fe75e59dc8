//! The host's state of one VM: its VPID, its p2m (gPFN -> hPFN) and the EPT
//! that expresses it for the hardware, its vCPU's paging registers, and its
//! counters. One per VM; the modes' own state (shadow pages...) sits next
//! to it in [`crate::hv::Machine`].

use rustc_hash::FxHashMap;

use super::memory::{HostMemory, VmId};
use crate::addr::{pt_index, Gpfn, Hpfn, PageSize};
use crate::mmu::TableMem;
use crate::pte::{ept, x86};
use crate::stats::Stats;

const NONE: u64 = u64::MAX;
/// A p2m entry of a frame in host swap: this bit and the slot.
const SWAPPED: u64 = 1 << 62;

/// One VM as the host sees it.
#[derive(Clone, Debug)]
pub struct Vm {
    /// Index on the host (owner tag in the m2p map).
    pub id: VmId,
    /// VPID tagging this VM's TLB and PSC entries (0: VPIDs off, or a
    /// native run alone; a native VM on a host has its own, as every VM).
    pub vpid: u16,
    /// Tag of this VM's guest-physical mappings in the nested TLB and EPT
    /// PSCs (hardware tags them by EPTP [SDM 29.4.1]): `id + 1`.
    pub ept_tag: u16,
    /// VPIDs are off on this host: every VM exit and entry flushes the
    /// pCPU's TLBs and PSCs (VPID 0 mappings) [SDM 29.4.3.1].
    pub flush_on_exit: bool,
    /// The VM shares a host with others (`vmemsim host`): even a native
    /// guest then takes its frames from the host pool.
    pub hosted: bool,
    /// The host's page-sharing scanner may merge this VM's frames
    /// (`[sharing] enabled`): a mode that must then find every mapping of
    /// a guest frame (direct paging's reverse map) keeps what that needs.
    pub scanned: bool,
    /// The guest uses PCIDs: a CR3 write keeps the TLB.
    pub pcid: bool,
    /// gPFN of the guest's current PML4 (guest CR3).
    pub guest_root: u64,
    /// The guest's current PCID.
    pub guest_pcid: u16,
    /// hPFN of the EPT root (the EPTP's frame).
    pub eptp: u64,
    /// Levels of the EPT (`host.ept_levels`): 4, or 5 [SDM 29.3.2].
    pub ept_levels: u8,
    /// Size of the host pages backing the VM (`host.page_size`): the unit
    /// of backing and of EPT leaves.
    pub host_page: PageSize,
    /// Guest frames backed now.
    pub backed_frames: u64,
    /// Counters of this VM.
    pub stats: Stats,
    /// TLB and PSC flushes forced by VM exits with VPIDs off.
    pub exit_flushes: u64,
    /// Frames the host swapped out of this VM.
    pub host_swap_outs: u64,
    /// Frames read back from host swap (each an access that waited).
    pub host_swap_ins: u64,
    /// Frames in host swap now.
    pub swapped_frames: u64,
    /// Double paging: frames the host read back from its swap because the
    /// guest was writing them to the guest's swap (each also a swap-in).
    pub double_pagings: u64,
    /// Content-based sharing of this VM's frames (hostsim/scanner.rs).
    pub sharing: VmSharing,
    /// Binary translation of the guest kernel (`cpu.virtualization =
    /// "bt"`); `None`: VT-x, every intervention a VM exit.
    pub bt: Option<super::BinaryTranslator>,
    p2m: Vec<u64>,
    /// Guest frames the guest ever wrote, one bit each (kept with huge host
    /// pages only, to tell backed frames from used ones: the bloat).
    touched: Vec<u64>,
    /// Idle sampling's watched frames [ESX 5.3]: gPFN -> refilled since
    /// [`Vm::watch`] (at most `esx.sample_pages` entries, one period's).
    watched: FxHashMap<u64, bool>,
    /// Backed gPFNs (for random victim selection), kept once
    /// [`Vm::track_resident`] was called; `res_pos[g]` = index + 1.
    resident: Vec<u64>,
    res_pos: Vec<u32>,
}

impl Vm {
    /// VM `id` with `guest_frames` 4 KiB guest frames, tagged `vpid`; its
    /// EPT root comes from `host`.
    pub fn new(id: VmId, vpid: u16, guest_frames: u64, pcid: bool, host: &mut HostMemory) -> Self {
        Vm {
            id,
            vpid,
            ept_tag: u16::try_from(id + 1).expect("VM id fits a tag"),
            flush_on_exit: false,
            hosted: false,
            scanned: false,
            pcid,
            guest_root: 0,
            guest_pcid: 0,
            eptp: host.alloc_table(),
            ept_levels: 4,
            host_page: PageSize::Size4K,
            backed_frames: 0,
            stats: Stats::default(),
            exit_flushes: 0,
            host_swap_outs: 0,
            host_swap_ins: 0,
            swapped_frames: 0,
            double_pagings: 0,
            sharing: VmSharing::default(),
            bt: None,
            resident: Vec::new(),
            res_pos: Vec::new(),
            touched: Vec::new(),
            watched: FxHashMap::default(),
            p2m: vec![NONE; guest_frames as usize],
        }
    }

    /// The guest writes frame `gpfn` (zeroing or copying it): true the
    /// first time for that frame. Tracked with huge host pages only
    /// (always false with 4 KiB host pages, where every backed frame is one
    /// the guest wrote).
    pub fn note_touch(&mut self, gpfn: Gpfn) -> bool {
        if self.host_page == PageSize::Size4K {
            return false;
        }
        if self.touched.is_empty() {
            self.touched = vec![0; self.p2m.len().div_ceil(64)];
        }
        let (w, b) = ((gpfn.0 / 64) as usize, gpfn.0 % 64);
        let new = self.touched[w] & (1 << b) == 0;
        self.touched[w] |= 1 << b;
        new
    }

    /// Idle sampling invalidated `gpfn`'s mappings: note from now on
    /// whether the host maps it again ([`Vm::back`], which every refill
    /// calls: an EPT violation, a shadow or direct fill). ESX counts the
    /// access at that trap [ESX 5.3], so a frame touched and then unmapped
    /// again within the period (munmap, a guest swap-out) still counts.
    pub fn watch(&mut self, gpfn: Gpfn) {
        self.watched.insert(gpfn.0, false);
    }

    /// True when watched `gpfn` was refilled since [`Vm::watch`].
    pub fn refilled(&self, gpfn: Gpfn) -> bool {
        self.watched.get(&gpfn.0).copied().unwrap_or(false)
    }

    /// The sampling period is over: stop watching its frames.
    pub fn unwatch_all(&mut self) {
        self.watched.clear();
    }

    /// Guest frames of the VM.
    pub fn guest_frames(&self) -> u64 {
        self.p2m.len() as u64
    }

    /// The hPFN backing `gpfn`, if any (none while it is in host swap).
    #[inline]
    pub fn p2m(&self, gpfn: Gpfn) -> Option<Hpfn> {
        match self.p2m.get(gpfn.0 as usize) {
            Some(&h) if h != NONE && h & SWAPPED == 0 => Some(Hpfn(h)),
            _ => None,
        }
    }

    /// True while `gpfn` is in host swap.
    pub fn is_swapped(&self, gpfn: Gpfn) -> bool {
        self.p2m
            .get(gpfn.0 as usize)
            .is_some_and(|&h| h != NONE && h & SWAPPED != 0)
    }

    /// Keep the list of backed frames from now on (a VM on a shared host,
    /// whose frames the host may swap out).
    pub fn track_resident(&mut self) {
        self.res_pos = vec![0; self.p2m.len()];
        for g in 0..self.p2m.len() as u64 {
            if self.p2m(Gpfn(g)).is_some() {
                self.resident.push(g);
                self.res_pos[g as usize] = self.resident.len() as u32;
            }
        }
    }

    /// Backed frames, in no particular order (empty unless tracked).
    pub fn resident(&self) -> &[u64] {
        &self.resident
    }

    fn resident_add(&mut self, g: u64) {
        if !self.res_pos.is_empty() {
            self.resident.push(g);
            self.res_pos[g as usize] = self.resident.len() as u32;
        }
    }

    fn resident_remove(&mut self, g: u64) {
        if self.res_pos.is_empty() {
            return;
        }
        let i = self.res_pos[g as usize] as usize - 1;
        self.resident.swap_remove(i);
        if let Some(&moved) = self.resident.get(i) {
            self.res_pos[moved as usize] = i as u32 + 1;
        }
        self.res_pos[g as usize] = 0;
    }

    /// Hypervisor swapping: write backed `gpfn` to host swap, clear its
    /// EPT entry and free its host frame. Returns the frame it had, or
    /// `None` when the swap device is full. The caller drops the mode's
    /// mappings (shadow reverse map) and flushes (INVEPT).
    pub fn swap_out(&mut self, host: &mut HostMemory, gpfn: Gpfn) -> Option<Hpfn> {
        let h = self.p2m(gpfn).expect("swap-out of an unbacked frame");
        let slot = host.swap_alloc()?;
        self.p2m[gpfn.0 as usize] = SWAPPED | slot;
        self.ept_set(host, gpfn, 0);
        host.release_owner(h, self.id, gpfn);
        self.resident_remove(gpfn.0);
        self.backed_frames -= 1;
        self.swapped_frames += 1;
        self.host_swap_outs += 1;
        Some(h)
    }

    /// The guest gave `gpfn` up (its balloon holds it): free its host frame
    /// (or its host swap slot) and clear its EPT entry; the next touch, after
    /// the balloon deflates, backs a fresh frame. Returns the host frame
    /// that backed it, if it was backed, and whether that frame was freed
    /// (not when it is shared: the other owners keep it). The caller drops
    /// the mode's mappings and flushes.
    pub fn release(&mut self, host: &mut HostMemory, gpfn: Gpfn) -> Option<(Hpfn, bool)> {
        let e = *self.p2m.get(gpfn.0 as usize)?;
        if e == NONE {
            return None;
        }
        self.p2m[gpfn.0 as usize] = NONE;
        self.ept_set(host, gpfn, 0);
        if e & SWAPPED != 0 {
            host.swap_release(e & !SWAPPED);
            self.swapped_frames -= 1;
            return None;
        }
        let freed = host.release_owner(Hpfn(e), self.id, gpfn);
        self.resident_remove(gpfn.0);
        self.backed_frames -= 1;
        Some((Hpfn(e), freed))
    }

    /// Back `gpfn` with a frame from `host` if it has none, mapping it RWX
    /// in the EPT. Returns the hPFN and whether it was newly allocated.
    /// A frame in host swap is read back (counted in `host_swap_ins`).
    pub fn back(&mut self, host: &mut HostMemory, gpfn: Gpfn) -> (Hpfn, bool) {
        if !self.watched.is_empty() {
            if let Some(r) = self.watched.get_mut(&gpfn.0) {
                *r = true;
            }
        }
        if let Some(h) = self.p2m(gpfn) {
            return (h, false);
        }
        if self.is_swapped(gpfn) {
            host.swap_release(self.p2m[gpfn.0 as usize] & !SWAPPED);
            self.swapped_frames -= 1;
            self.host_swap_ins += 1;
        }
        if self.host_page != PageSize::Size4K {
            return (self.back_region(host, gpfn), true);
        }
        let h = host.alloc_data(self.id, gpfn);
        self.resident_add(gpfn.0);
        self.p2m[gpfn.0 as usize] = h.0;
        self.backed_frames += 1;
        self.ept_set(host, gpfn, x86::make(h.0, ept::RWX | ept::WB));
        (h, true)
    }

    /// Back the whole host page holding `gpfn` (huge host pages): the
    /// aligned run of guest frames gets one contiguous run of host frames
    /// and one EPT leaf of the host page's size. Returns `gpfn`'s hPFN.
    /// A huge host page is backed whole or not at all.
    fn back_region(&mut self, host: &mut HostMemory, gpfn: Gpfn) -> Hpfn {
        let n = self.host_page.frames();
        let first = gpfn.0 & !(n - 1);
        let base = host.alloc_data_run(self.id, Gpfn(first), n);
        for i in 0..n {
            let e = &mut self.p2m[(first + i) as usize];
            assert_eq!(
                *e,
                NONE,
                "gPFN {:#x} of a huge host page backed alone",
                first + i
            );
            *e = base.0 + i;
            self.resident_add(first + i);
        }
        self.backed_frames += n;
        let leaf = x86::make(base.0, ept::RWX | ept::WB | ept::PS);
        self.ept_set_at(host, Gpfn(first), self.host_page.leaf_level(), leaf);
        Hpfn(base.0 + (gpfn.0 - first))
    }

    /// Map backed `gpfn` in the EPT again, RWX, from the p2m (after its
    /// entry was cleared or made read-only); with huge host pages, the
    /// whole page holding it. A frame write-protected for sharing
    /// ([`HostMemory::cow_protected`]) is mapped read-only (R and X).
    pub fn ept_restore(&mut self, host: &mut HostMemory, gpfn: Gpfn) {
        let n = self.host_page.frames();
        let first = Gpfn(gpfn.0 & !(n - 1));
        let h = self.p2m(first).expect("EPT restore of an unbacked frame");
        let ps = if n > 1 { ept::PS } else { 0 };
        let rights = if host.cow_protected(h) {
            ept::R | ept::X
        } else {
            ept::RWX
        };
        let leaf = x86::make(h.0, rights | ept::WB | ps);
        self.ept_set_at(host, first, self.host_page.leaf_level(), leaf);
    }

    /// Sharing: backed `gpfn` is now backed by shared frame `h` (its own
    /// frame was merged into it and freed by [`HostMemory::share`]): p2m
    /// and EPT entry (read-only: R and X) point at `h`. The caller drops
    /// the mode's mappings of the old frame and flushes.
    pub fn remap_shared(&mut self, host: &mut HostMemory, gpfn: Gpfn, h: Hpfn) {
        debug_assert_eq!(self.host_page, PageSize::Size4K);
        assert!(self.p2m(gpfn).is_some(), "sharing an unbacked frame");
        self.p2m[gpfn.0 as usize] = h.0;
        self.ept_set(host, gpfn, x86::make(h.0, ept::R | ept::X | ept::WB));
        self.sharing.merged += 1;
    }

    /// Sharing: the EPT entry of backed `gpfn`, if present, loses W (its
    /// frame just became shared). The caller flushes (INVEPT).
    pub fn ept_write_protect(&mut self, host: &mut HostMemory, gpfn: Gpfn) {
        let e = self.ept_entry(host, gpfn);
        if ept::present(e) && e & ept::W != 0 {
            self.ept_set(host, gpfn, e & !ept::W);
        }
    }

    /// A store to `gpfn`, whose frame is write-protected for sharing
    /// ([`HostMemory::cow_protected`]), exited: a frame still shared is
    /// copied to a private one (the COW break; the p2m and a writable EPT
    /// entry name the copy) and the old frame is returned, for the caller
    /// to drop the mode's mappings of it and flush; a frame whose other
    /// owners all left is made writable again in place (`None`).
    pub fn cow_store(&mut self, host: &mut HostMemory, gpfn: Gpfn) -> Option<Hpfn> {
        let h = self.p2m(gpfn).expect("a store to an unbacked frame");
        debug_assert!(host.cow_protected(h));
        if !host.is_shared(h) {
            host.cow_unprotect(h);
            self.ept_restore(host, gpfn);
            self.sharing.cow_reuses += 1;
            return None;
        }
        let zero = host
            .shared_frame(h)
            .is_some_and(|s| s.content == crate::guest::content::ZERO);
        let copy = host.unshare(h, self.id, gpfn);
        self.p2m[gpfn.0 as usize] = copy.0;
        self.ept_set(host, gpfn, x86::make(copy.0, ept::RWX | ept::WB));
        self.sharing.cow_breaks += 1;
        self.sharing.cow_zero_breaks += u64::from(zero);
        Some(h)
    }

    /// The EPT leaf entry mapping `gpfn` (0 when none): a PTE, or the PDE
    /// or PDPTE of a huge host page.
    pub fn ept_entry(&self, host: &HostMemory, gpfn: Gpfn) -> u64 {
        let gpa = gpfn.0 << 12;
        let mut table = self.eptp;
        for level in (2..=self.ept_levels).rev() {
            let e = host.tables.read(table, pt_index(gpa, level));
            if !ept::present(e) || e & ept::PS != 0 {
                return e;
            }
            table = x86::frame(e);
        }
        host.tables.read(table, pt_index(gpa, 1))
    }

    /// Store `leaf` as the EPT entry of `gpfn`, building the upper levels
    /// (permissive: RWX) as needed.
    pub fn ept_set(&mut self, host: &mut HostMemory, gpfn: Gpfn, leaf: u64) {
        self.ept_set_at(host, gpfn, 1, leaf);
    }

    /// Store `leaf` as the EPT entry at `leaf_level` (1 = PTE, 2 = PDE of
    /// a 2 MiB page, 3 = PDPTE of a 1 GiB page) for `gpfn`, building the
    /// levels above as needed.
    ///
    /// # Panics
    /// A huge leaf above `leaf_level` maps `gpfn` (a 4 KiB entry inside a
    /// huge host page: the configs that would ask for one are refused).
    fn ept_set_at(&mut self, host: &mut HostMemory, gpfn: Gpfn, leaf_level: u8, leaf: u64) {
        let gpa = gpfn.0 << 12;
        let mut table = self.eptp;
        for level in (leaf_level + 1..=self.ept_levels).rev() {
            let idx = pt_index(gpa, level);
            let e = host.tables.read(table, idx);
            assert!(
                !ept::present(e) || e & ept::PS == 0,
                "EPT entry of gPFN {:#x} at level {leaf_level} below a huge leaf at level {level}",
                gpfn.0
            );
            table = if ept::present(e) {
                x86::frame(e)
            } else {
                let t = host.alloc_table();
                host.tables.write(table, idx, x86::make(t, ept::RWX));
                t
            };
        }
        host.tables.write(table, pt_index(gpa, leaf_level), leaf);
    }
}

/// Per-VM counters of content-based sharing.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VmSharing {
    /// Guest frames of this VM merged into a shared frame (each freed its
    /// own host frame).
    pub merged: u64,
    /// Copy-on-write breaks: stores to a shared frame, each one exit and
    /// one 4 KiB copy.
    pub cow_breaks: u64,
    /// Of `cow_breaks`, breaks of zero-content frames.
    pub cow_zero_breaks: u64,
    /// Stores to a formerly shared frame whose other owners all left: one
    /// exit, made writable in place, no copy.
    pub cow_reuses: u64,
    /// Flushes of this VM on one pCPU (INVEPT single-context) after the
    /// scanner write-protected or remapped its frames (once per pCPU per
    /// scan burst; also counted in the host's `invepts`).
    pub scan_flushes: u64,
    /// Flushes of this VM on its pCPU after a COW break (one each).
    pub cow_flushes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backing_is_in_order_and_filled_in_ept() {
        let mut host = HostMemory::unlimited();
        let mut vm = Vm::new(0, 1, 1 << 20, true, &mut host);
        assert_eq!(vm.back(&mut host, Gpfn(777)), (Hpfn(0), true));
        assert_eq!(vm.back(&mut host, Gpfn(5)), (Hpfn(1), true));
        assert_eq!(vm.back(&mut host, Gpfn(777)), (Hpfn(0), false));
        assert_eq!(host.m2p(Hpfn(1)), Some((0, Gpfn(5))));
        assert_eq!(x86::frame(vm.ept_entry(&host, Gpfn(5))), 1);
        assert_eq!(vm.ept_entry(&host, Gpfn(6)), 0);
        // EPT root + PDPT + PD shared; gPFN 777 (PD index 1) and gPFN 5
        // (PD index 0) need one EPT PT each.
        assert_eq!(host.table_pages(), 5);
        assert_eq!(host.used(), 7);
    }
}
