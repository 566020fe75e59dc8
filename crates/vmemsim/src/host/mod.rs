//! The host side: host-physical frames backing guest frames (the p2m map)
//! and the EPT that expresses it for the hardware.
//!
//! Guest-backing frames are allocated on demand, in order, from hPFN 0, so
//! for the same guest behaviour every virtualized mode gets the same hPAs.
//! The hypervisor's own table pages (EPT, shadow tables) come from a
//! separate region starting at [`HV_FRAME_BASE`] so they never shift that
//! numbering.

use crate::mem::PageStore;
use crate::mmu::TableMem;
use crate::pte::{ept, x86};

/// First hPFN of the hypervisor's own table pages (hPA 1 TiB).
pub const HV_FRAME_BASE: u64 = 1 << 28;

const NONE: u64 = u64::MAX;

/// Host memory of one VM: p2m, m2p, EPT and the hypervisor's table pages.
#[derive(Clone, Debug)]
pub struct Host {
    p2m: Vec<u64>,
    m2p: Vec<u64>,
    /// Table pages owned by the hypervisor (EPT and shadow tables), by hPFN.
    pub tables: PageStore,
    next_hv_frame: u64,
    /// hPFN of the EPT root (the EPTP's frame).
    pub eptp: u64,
    /// Guest frames backed so far.
    pub backed_frames: u64,
}

impl Host {
    /// A host for a guest of `guest_frames` 4 KiB frames; the EPT root is allocated.
    pub fn new(guest_frames: u64) -> Self {
        let mut h = Host {
            p2m: vec![NONE; guest_frames as usize],
            m2p: Vec::new(),
            tables: PageStore::new(HV_FRAME_BASE),
            next_hv_frame: HV_FRAME_BASE,
            eptp: 0,
            backed_frames: 0,
        };
        h.eptp = h.alloc_table();
        h
    }

    /// Allocate a zeroed hypervisor table page; returns its hPFN.
    pub fn alloc_table(&mut self) -> u64 {
        let f = self.next_hv_frame;
        self.next_hv_frame += 1;
        self.tables.add(f);
        f
    }

    /// The hPFN backing `gpfn`, if any.
    #[inline]
    pub fn p2m(&self, gpfn: u64) -> Option<u64> {
        match self.p2m.get(gpfn as usize) {
            Some(&h) if h != NONE => Some(h),
            _ => None,
        }
    }

    /// The gPFN a guest-backing hPFN belongs to (the m2p map), if any.
    #[inline]
    pub fn m2p(&self, hpfn: u64) -> Option<u64> {
        self.m2p.get(hpfn as usize).copied()
    }

    /// Back `gpfn` with a host frame if it has none, filling the EPT.
    /// Returns the hPFN and whether it was newly allocated.
    pub fn back(&mut self, gpfn: u64) -> (u64, bool) {
        if let Some(h) = self.p2m(gpfn) {
            return (h, false);
        }
        let h = self.m2p.len() as u64;
        self.m2p.push(gpfn);
        self.p2m[gpfn as usize] = h;
        self.backed_frames += 1;
        self.ept_map(gpfn, h);
        (h, true)
    }

    fn ept_map(&mut self, gpfn: u64, hpfn: u64) {
        let gpa = gpfn << 12;
        let mut table = self.eptp;
        for level in (2..=4).rev() {
            let idx = crate::addr::pt_index(gpa, level);
            let e = self.tables.read(table, idx);
            table = if ept::present(e) {
                x86::frame(e)
            } else {
                let t = self.alloc_table();
                self.tables.write(table, idx, x86::make(t, ept::RWX));
                t
            };
        }
        let idx = crate::addr::pt_index(gpa, 1);
        self.tables
            .write(table, idx, x86::make(hpfn, ept::RWX | ept::WB));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backing_is_in_order_and_filled_in_ept() {
        let mut h = Host::new(1 << 20);
        assert_eq!(h.back(777), (0, true));
        assert_eq!(h.back(5), (1, true));
        assert_eq!(h.back(777), (0, false));
        assert_eq!(h.m2p(1), Some(5));
        // EPT root + PDPT + PD shared; gPFN 777 (PD index 1) and gPFN 5
        // (PD index 0) need one EPT PT each.
        assert_eq!(h.tables.len(), 5);
    }
}
