//! A plain software walk of the guest's page tables: no caches, no side
//! effects. The oracle every mode is checked against, and what a hypervisor
//! uses to read guest tables.

use crate::addr::pt_index;
use crate::mmu::TableMem;
use crate::pte::x86;

/// The guest mapping of one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestMapping {
    /// gPFN of the 4 KiB frame holding the address.
    pub gpfn: u64,
    /// The leaf entry.
    pub pte: u64,
    /// Level of the leaf (1 = 4 KiB PTE, 2 = 2 MiB PDE, 3 = 1 GiB PDPTE).
    pub level: u8,
    /// gPFN of the table holding the leaf, and the index in it.
    pub table: u64,
    /// Index of the leaf in its table.
    pub idx: usize,
}

/// Walk the table of `levels` levels (4 or 5) rooted at gPFN `root` for
/// `va`. `None` if any level is not present.
pub fn translate<T: TableMem>(mem: &T, root: u64, levels: u8, va: u64) -> Option<GuestMapping> {
    let mut table = root;
    for level in (1..=levels).rev() {
        let idx = pt_index(va, level);
        let e = mem.read(table, idx);
        if e & x86::P == 0 {
            return None;
        }
        if x86::is_leaf(level, e) {
            let off = (va >> 12) & (x86::leaf_frames(level) - 1);
            return Some(GuestMapping {
                gpfn: x86::frame(e) + off,
                pte: e,
                level,
                table,
                idx,
            });
        }
        table = x86::frame(e);
    }
    None
}

/// Where a walk of `va` stops: every (table gPFN, index, entry) on the path
/// from the root, deepest last. Fixed size, no allocation.
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestPath {
    /// (table, index, entry) per level, `[0]` = the root's level.
    pub steps: [(u64, usize, u64); 5],
    /// Valid steps.
    pub len: usize,
    /// Level of the root (4 or 5).
    pub top: u8,
}

impl GuestPath {
    /// Level of step `i` (`top` for step 0).
    #[inline]
    pub fn level(&self, i: usize) -> u8 {
        self.top - i as u8
    }
    /// Level of the last step (the leaf, or the non-present entry).
    #[inline]
    pub fn leaf_level(&self) -> u8 {
        self.level(self.len - 1)
    }
}

/// The path of `va` through the table of `levels` levels at `root`, down
/// to the leaf or the first non-present entry (which is the last step).
pub fn path<T: TableMem>(mem: &T, root: u64, levels: u8, va: u64) -> GuestPath {
    let mut p = GuestPath {
        top: levels,
        ..GuestPath::default()
    };
    let mut table = root;
    for level in (1..=levels).rev() {
        let idx = pt_index(va, level);
        let e = mem.read(table, idx);
        p.steps[p.len] = (table, idx, e);
        p.len += 1;
        if e & x86::P == 0 || x86::is_leaf(level, e) {
            break;
        }
        table = x86::frame(e);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Tables as a map of (frame, index) to entry; 0 elsewhere.
    #[derive(Default)]
    struct Tables(HashMap<(u64, usize), u64>);

    impl TableMem for Tables {
        fn read(&self, frame: u64, idx: usize) -> u64 {
            self.0.get(&(frame, idx)).copied().unwrap_or(0)
        }
        fn write(&mut self, frame: u64, idx: usize, val: u64) {
            self.0.insert((frame, idx), val);
        }
    }

    const T: u64 = x86::P | x86::RW | x86::US;

    /// Root 1 -> PDPT 2 -> PD 3 -> PT 4 -> frame 0x50 for `va`, and at
    /// PD index +1 a non-present entry whose frame bits (a swap entry's
    /// slot) name frame 9, which holds a present entry at every index a
    /// walk could read.
    fn tables(va: u64) -> Tables {
        let mut t = Tables::default();
        t.write(1, pt_index(va, 4), x86::make(2, T));
        t.write(2, pt_index(va, 3), x86::make(3, T));
        t.write(3, pt_index(va, 2), x86::make(4, T));
        t.write(4, pt_index(va, 1), x86::make(0x50, T | x86::A));
        t.write(3, pt_index(va, 2) + 1, x86::make(9, 0));
        for idx in 0..512 {
            t.write(9, idx, x86::make(0x60, T));
        }
        t
    }

    #[test]
    fn a_walk_stops_at_the_first_non_present_entry() {
        let va = 0x7f00_0000_0000u64;
        let t = tables(va);
        // Mapped: 4 steps down to the PTE, which is the leaf.
        let p = path(&t, 1, 4, va + 8);
        assert_eq!((p.len, p.leaf_level()), (4, 1));
        assert_eq!(
            p.steps[3],
            (4, pt_index(va, 1), x86::make(0x50, T | x86::A))
        );
        let m = translate(&t, 1, 4, va + 8).expect("mapped");
        assert_eq!(
            (m.gpfn, m.level, m.table, m.idx),
            (0x50, 1, 4, pt_index(va, 1))
        );
        // The next 2 MiB: the PDE is not present (its frame bits are not a
        // table): the path ends there, at level 2, after 3 steps, and the
        // walk does not read frame 9.
        let next = va + (2 << 20);
        let p = path(&t, 1, 4, next);
        assert_eq!((p.len, p.leaf_level()), (3, 2));
        assert_eq!(p.steps[2], (3, pt_index(va, 2) + 1, x86::make(9, 0)));
        assert_eq!(translate(&t, 1, 4, next), None);
        // Nothing mapped under the root at all: one step.
        let p = path(&t, 1, 4, 0x1000);
        assert_eq!((p.len, p.leaf_level(), p.steps[0]), (1, 4, (1, 0, 0)));
    }
}
