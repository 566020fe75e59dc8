//! Paging-structure caches (PSCs, "page walk caches"): they cache upper-level
//! entries so a walk can skip levels [SDM Vol. 3 4.10.3]. One instance caches
//! a 1-D table (guest or shadow tables, tagged by ASID) and another the EPT
//! (tagged by VPID) \[B08\].

use super::cache::SetAssoc;
use super::tlb::{Asid, ASID_BITS};
use crate::config::Geometry;

/// PML5E, PML4E, PDPTE and PDE caches of one table dimension.
#[derive(Clone, Debug)]
pub struct Pwc {
    /// Index 0: PDE cache (skips to level 1), 1: PDPTE (to level 2), 2:
    /// PML4E (to level 3), 3: PML5E (to level 4; 5-level tables only).
    caches: [SetAssoc<u64>; 4],
}

/// Where a PSC key keeps its [`Asid`]: above the 36 bits of the longest
/// prefix (a PDE prefix of a 57-bit gVA has 36 bits).
const KEY_ASID_SHIFT: u32 = 64 - ASID_BITS;

#[inline]
fn key(prefix: u64, asid: Asid) -> u64 {
    prefix | (u64::from(asid.0) << KEY_ASID_SHIFT)
}

impl Pwc {
    /// Caches for PML5E, PML4E, PDPTE and PDE entries with the given geometries.
    pub fn new(pml5e: Geometry, pml4e: Geometry, pdpte: Geometry, pde: Geometry) -> Self {
        Pwc {
            caches: [
                SetAssoc::new(pde),
                SetAssoc::new(pdpte),
                SetAssoc::new(pml4e),
                SetAssoc::new(pml5e),
            ],
        }
    }

    /// Deepest cached entry for `addr` in tables of `levels` levels (4 or
    /// 5): `(level to continue at, table frame)`. Level 1 means the PDE was
    /// cached and the walk reads only the PTE. `None`: start at the root.
    /// The PML5E cache is consulted only for 5-level tables.
    #[inline]
    pub fn lookup(&mut self, asid: Asid, addr: u64, levels: u8) -> Option<(u8, u64)> {
        match self.deepest(asid, addr, levels) {
            (0, _) => None,
            hit => Some(hit),
        }
    }

    /// [`Self::lookup`] with the caches' scan inlined into the caller: for
    /// a caller that is itself out of line and short (the EPT walk behind
    /// a nested-TLB miss), where the call, its register saves and the
    /// pair it returns are a large part of the lookup.
    #[inline(always)]
    pub fn lookup_inlined(&mut self, asid: Asid, addr: u64, levels: u8) -> Option<(u8, u64)> {
        match self.deepest_in(asid, addr, levels) {
            (0, _) => None,
            hit => Some(hit),
        }
    }

    /// [`Self::lookup`] as `(level, frame)`, level 0 for no hit: a pair
    /// the call returns in two registers (the `Option` would go through
    /// memory), and one call for all the caches.
    #[inline(never)]
    fn deepest(&mut self, asid: Asid, addr: u64, levels: u8) -> (u8, u64) {
        self.deepest_in(asid, addr, levels)
    }

    /// The body of [`Self::deepest`], for [`Self::lookup_inlined`].
    #[inline(always)]
    fn deepest_in(&mut self, asid: Asid, addr: u64, levels: u8) -> (u8, u64) {
        let [pde, pdpte, pml4e, pml5e] = &mut self.caches;
        for (i, c) in [pde, pdpte, pml4e].into_iter().enumerate() {
            let prefix = addr >> (21 + 9 * i as u32);
            if let Some(frame) = c.lookup(prefix, key(prefix, asid)) {
                return (i as u8 + 1, frame);
            }
        }
        if levels == 5 {
            let prefix = addr >> 48;
            if let Some(frame) = pml5e.lookup(prefix, key(prefix, asid)) {
                return (4, frame);
            }
        }
        (0, 0)
    }

    /// The cache holding entries of `level` (2 = PDE, 3 = PDPTE, 4 =
    /// PML4E, 5 = PML5E), and the set index and key of `addr` in it.
    #[inline]
    fn slot(&mut self, asid: Asid, addr: u64, level: u8) -> (&mut SetAssoc<u64>, u64, u64) {
        debug_assert!((2..=5).contains(&level));
        let i = usize::from(level - 2);
        let prefix = addr >> (21 + 9 * i as u32);
        (&mut self.caches[i], prefix, key(prefix, asid))
    }

    /// Remember that the entry at `level` (2 = PDE, 3 = PDPTE, 4 = PML4E, 5 = PML5E)
    /// for `addr` points to the table at `next_frame`.
    #[inline]
    pub fn insert(&mut self, asid: Asid, addr: u64, level: u8, next_frame: u64) {
        let (c, index, key) = self.slot(asid, addr, level);
        c.insert(index, key, next_frame);
    }

    /// [`Self::insert`] of an entry the caller knows is absent: the walker
    /// fills only levels below the one its [`Self::lookup`] resumed at, and
    /// that lookup missed every deeper cache.
    #[inline]
    pub fn insert_new(&mut self, asid: Asid, addr: u64, level: u8, next_frame: u64) {
        let (c, index, key) = self.slot(asid, addr, level);
        c.insert_new(index, key, next_frame);
    }

    /// Drop every entry of one address space (INVLPG drops them all for the
    /// current PCID [SDM 4.10.4.1]; so does a flushing CR3 write).
    pub fn flush_asid(&mut self, asid: Asid) {
        for c in &mut self.caches {
            c.retain(|k| (k >> KEY_ASID_SHIFT) as u32 != asid.0);
        }
    }

    /// Drop every entry of one VPID, whatever its PCID.
    pub fn flush_vpid(&mut self, vpid: u16) {
        for c in &mut self.caches {
            c.retain(|k| (k >> KEY_ASID_SHIFT) as u32 >> 12 != u32::from(vpid));
        }
    }

    /// Drop everything.
    pub fn flush_all(&mut self) {
        for c in &mut self.caches {
            c.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deepest_level_wins() {
        let mut p = Pwc::new(
            Geometry::new(2, 2),
            Geometry::new(2, 2),
            Geometry::new(4, 4),
            Geometry::new(32, 4),
        );
        let a = Asid::new(0, 1);
        let va = 0x7f12_3456_7000;
        assert_eq!(p.lookup(a, va, 4), None);
        p.insert(a, va, 4, 10);
        assert_eq!(p.lookup(a, va, 4), Some((3, 10)));
        p.insert(a, va, 2, 30);
        assert_eq!(p.lookup(a, va, 4), Some((1, 30)));
        assert_eq!(p.lookup(Asid::new(0, 2), va, 4), None);
        p.flush_asid(a);
        assert_eq!(p.lookup(a, va, 4), None);
        // The PML5E cache serves 5-level tables only.
        let va5 = 0x00ab_7f12_3456_7000;
        p.insert(a, va5, 5, 40);
        assert_eq!(p.lookup(a, va5, 4), None);
        assert_eq!(p.lookup(a, va5, 5), Some((4, 40)));
        p.insert(a, va5, 4, 41);
        assert_eq!(p.lookup(a, va5, 5), Some((3, 41)));
    }
}
