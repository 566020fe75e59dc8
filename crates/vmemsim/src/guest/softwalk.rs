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
