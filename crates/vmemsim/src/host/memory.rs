//! The host's pool of physical frames: one capacity shared by every VM's
//! guest frames and the hypervisor's own table pages (EPT, shadow pages,
//! PV splinters), a free list per kind, and the m2p map (which VM's gPFN a
//! host frame backs).
//!
//! Numbering. Guest-backing frames are hPFNs from 0 up, table pages hPFNs
//! from [`HV_FRAME_BASE`] up: both count against the one capacity, but the
//! two ranges keep a guest frame's hPFN independent of how many table pages
//! a mode allocates, so for the same guest behaviour every virtualized mode
//! backs every gPFN with the same hPFN (the oracle checks it). Fresh frames
//! are handed out in order first; freed frames are reused once a range has
//! handed out as many frames as the pool holds. An unlimited pool (a VM run
//! alone, `vmemsim run`) therefore never reuses a frame.
//!
//! Capacity. Allocation itself never fails: one guest operation (a fault,
//! a fork) takes the frames it needs, and the host's run loop keeps a
//! reserve free between operations (reclaiming, or stopping with an error
//! when it cannot). [`HostMemory::overdrawn`] tells when an operation took
//! more than the reserve held.

use crate::addr::{Gpfn, Hpfn};
use crate::mem::PageStore;

/// First hPFN of the hypervisor's own table pages (hPA 1 TiB): guest
/// frames are below it, so a host holds at most 1 TiB of guest frames.
pub const HV_FRAME_BASE: u64 = 1 << 28;

/// Index of a VM on its host (0 for a VM run alone).
pub type VmId = u32;

const NONE: u64 = u64::MAX;
const GPFN_BITS: u32 = 40;

/// Frames of one kind: the next never-used hPFN, the end of the range, and
/// freed frames waiting for reuse.
#[derive(Clone, Debug)]
struct FrameRange {
    next: u64,
    end: u64,
    free: Vec<u64>,
}

impl FrameRange {
    fn new(base: u64, frames: u64) -> Self {
        FrameRange {
            next: base,
            end: base.saturating_add(frames),
            free: Vec::new(),
        }
    }

    fn alloc(&mut self) -> u64 {
        if self.next >= self.end {
            if let Some(f) = self.free.pop() {
                return f;
            }
        }
        self.next += 1;
        self.next - 1
    }
}

/// The host-physical memory of one machine: `capacity` 4 KiB frames in all.
#[derive(Clone, Debug)]
pub struct HostMemory {
    capacity: u64,
    used: u64,
    data: FrameRange,
    table_frames: FrameRange,
    /// Owner of each guest-backing hPFN: `vm << 40 | gpfn`, or `NONE`.
    m2p: Vec<u64>,
    /// Contents of the hypervisor's table pages (EPT, shadow, splinters), by hPFN.
    pub tables: PageStore,
    swap: FrameRange,
    swap_used: u64,
}

impl HostMemory {
    /// A pool of `frames` 4 KiB frames (guest frames and table pages
    /// together); at most [`HV_FRAME_BASE`] of them can back guest frames.
    pub fn new(frames: u64) -> Self {
        HostMemory {
            capacity: frames,
            used: 0,
            data: FrameRange::new(0, frames.min(HV_FRAME_BASE)),
            table_frames: FrameRange::new(HV_FRAME_BASE, frames),
            m2p: Vec::new(),
            tables: PageStore::new(HV_FRAME_BASE),
            swap: FrameRange::new(0, 0),
            swap_used: 0,
        }
    }

    /// Give the host a swap device of `slots` 4 KiB slots.
    pub fn with_swap(mut self, slots: u64) -> Self {
        self.swap = FrameRange::new(0, slots);
        self
    }

    /// A free swap slot, or `None` when the swap device is full.
    pub fn swap_alloc(&mut self) -> Option<u64> {
        if self.swap_used == self.swap.end {
            return None;
        }
        self.swap_used += 1;
        Some(self.swap.alloc())
    }

    /// Swap slot `slot` is free again.
    pub fn swap_release(&mut self, slot: u64) {
        self.swap.free.push(slot);
        self.swap_used -= 1;
    }

    /// Swap slots in use.
    pub fn swap_used(&self) -> u64 {
        self.swap_used
    }

    /// A pool that never runs out (the host of a VM run alone).
    pub fn unlimited() -> Self {
        HostMemory::new(u64::MAX)
    }

    /// Frames in the pool.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Frames in use (guest frames backed plus table pages).
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Free frames (0 when overdrawn).
    pub fn free(&self) -> u64 {
        self.capacity.saturating_sub(self.used)
    }

    /// Table pages held by the hypervisor.
    pub fn table_pages(&self) -> u64 {
        self.tables.len() as u64
    }

    /// More frames in use than the pool holds: an operation took more than
    /// the reserve the host kept free.
    pub fn overdrawn(&self) -> bool {
        self.used > self.capacity
    }

    /// A zeroed hypervisor table page; returns its hPFN.
    pub fn alloc_table(&mut self) -> u64 {
        let f = self.table_frames.alloc();
        self.used += 1;
        self.tables.add(f);
        f
    }

    /// Table page `hpfn` is no longer used: its frame returns to the pool.
    pub fn free_table(&mut self, hpfn: u64) {
        if self.tables.contains(hpfn) {
            self.tables.remove(hpfn);
            self.table_frames.free.push(hpfn);
            self.used -= 1;
        }
    }

    /// A frame to back `vm`'s `gpfn`.
    pub fn alloc_data(&mut self, vm: VmId, gpfn: Gpfn) -> Hpfn {
        let h = self.data.alloc();
        self.used += 1;
        let i = h as usize;
        if i >= self.m2p.len() {
            self.m2p.resize((i + 1).next_power_of_two(), NONE);
        }
        debug_assert!(gpfn.0 < 1 << GPFN_BITS);
        self.m2p[i] = (u64::from(vm) << GPFN_BITS) | gpfn.0;
        Hpfn(h)
    }

    /// `n` (a power of two) contiguous frames aligned to `n`, backing
    /// `vm`'s gPFNs `first..first + n` (one huge host page). Fresh frames
    /// only: huge host pages are never freed (no host swapping with them).
    pub fn alloc_data_run(&mut self, vm: VmId, first: Gpfn, n: u64) -> Hpfn {
        let d = &mut self.data;
        // Like `alloc_data`, this never fails: the host's run loop sees an
        // overdrawn pool after the operation.
        let base = d.next.next_multiple_of(n);
        d.next = base + n;
        self.used += n;
        let end = (base + n) as usize;
        if end > self.m2p.len() {
            self.m2p.resize(end.next_power_of_two(), NONE);
        }
        for i in 0..n {
            debug_assert!(first.0 + i < 1 << GPFN_BITS);
            self.m2p[(base + i) as usize] = (u64::from(vm) << GPFN_BITS) | (first.0 + i);
        }
        Hpfn(base)
    }

    /// Guest frame backed by `hpfn` is no longer backed: the frame returns
    /// to the pool.
    pub fn free_data(&mut self, hpfn: Hpfn) {
        let e = &mut self.m2p[hpfn.0 as usize];
        assert_ne!(*e, NONE, "hPFN {:#x} freed twice", hpfn.0);
        *e = NONE;
        self.data.free.push(hpfn.0);
        self.used -= 1;
    }

    /// The VM and gPFN a guest-backing `hpfn` belongs to (the m2p map).
    #[inline]
    pub fn m2p(&self, hpfn: Hpfn) -> Option<(VmId, Gpfn)> {
        match self.m2p.get(hpfn.0 as usize) {
            Some(&e) if e != NONE => {
                Some(((e >> GPFN_BITS) as VmId, Gpfn(e & ((1 << GPFN_BITS) - 1))))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_capacity_for_guest_frames_and_tables_with_reuse() {
        let mut h = HostMemory::new(3);
        assert_eq!(h.alloc_data(0, Gpfn(9)), Hpfn(0));
        assert_eq!(h.alloc_table(), HV_FRAME_BASE);
        assert_eq!(h.alloc_data(1, Gpfn(4)), Hpfn(1));
        assert_eq!((h.free(), h.overdrawn()), (0, false));
        assert_eq!(h.m2p(Hpfn(1)), Some((1, Gpfn(4))));
        h.free_data(Hpfn(0));
        assert_eq!(h.m2p(Hpfn(0)), None);
        // The data range has a fresh frame left (hPFN 2), used before reuse.
        assert_eq!(h.alloc_data(0, Gpfn(5)), Hpfn(2));
        h.free_data(Hpfn(1));
        h.free_table(HV_FRAME_BASE);
        assert_eq!(h.free(), 2);
        assert_eq!(h.alloc_data(2, Gpfn(1)), Hpfn(1), "freed frame reused");
        assert_eq!(h.alloc_table(), HV_FRAME_BASE + 1);
        // A fourth frame overdraws the pool: the run loop must notice.
        h.alloc_table();
        assert!(h.overdrawn());
    }
}
