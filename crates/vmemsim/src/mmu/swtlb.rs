//! The refill handler of a software-managed (MIPS-style) TLB: no hardware
//! walker; a TLB miss raises a refill exception and the kernel's handler
//! walks its page table with ordinary loads, then writes the entry with a
//! privileged TLB-write instruction (TLBWR) [MIPS R4000 User's Manual,
//! "TLB Refill Exception"; Linux `arch/mips/mm/tlbex.c`].
//!
//! The handler walks the same x86-layout tables the guest kernel model
//! builds, from the root every time (a MIPS core has no paging-structure
//! caches), one load per level through the data caches (the page-table
//! line cache). It sets the accessed and dirty bits in software, as MIPS
//! Linux's TLB exception handlers emulate `_PAGE_ACCESSED` and
//! `_PAGE_MODIFIED` (a store through a clean entry is a TLB Modified
//! exception: here one more refill). Only loads are counted, not priced:
//! the cost model does that.

use super::walk::TableMem;
use super::walker::{check_and_mark, leaf_of, leaf_size, Hw, Leaf, Rights, WalkFault};
use crate::addr::pt_index;
use crate::pte::x86;

/// The loads one handler run made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefillLoads {
    /// Page-table loads (one per level read).
    pub loads: u8,
    /// Of those, loads whose line was in the page-table line cache.
    pub hits: u8,
}

/// Why a refill handler run stopped before its TLB write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefillFault {
    /// The guest's table forbids the access (or lacks an entry): the
    /// handler goes to the kernel's page-fault path.
    Guest(WalkFault),
    /// Under a VMM: the table page at this gPFN has no machine frame (the
    /// host took it away); the handler's load traps into the VMM.
    Unbacked {
        /// The table page's gPFN.
        gpfn: u64,
    },
}

/// Run the refill handler for `va` over the table of `hw.levels` levels
/// rooted at frame `root` of `tables` (frames in the table space: gPFNs).
/// `machine_frame` gives the frame each table page's loads reference in
/// the caches (the frame itself natively; the machine frame behind a gPFN
/// under a VMM), or `None` for a table page with no machine frame.
/// Loads are added to `loads` as they are made (also those of a run that
/// faults).
///
/// # Errors
/// [`RefillFault::Guest`] naming the level where the guest's table
/// stopped the walk; [`RefillFault::Unbacked`] for a table page with no
/// machine frame.
#[inline]
pub fn refill_walk<T: TableMem>(
    hw: &mut Hw,
    tables: &mut T,
    root: u64,
    va: u64,
    r: Rights,
    machine_frame: impl Fn(u64) -> Option<u64>,
    loads: &mut RefillLoads,
) -> Result<Leaf, RefillFault> {
    let (mut level, mut table) = (hw.levels, root);
    loop {
        let frame = machine_frame(table).ok_or(RefillFault::Unbacked { gpfn: table })?;
        let idx = pt_index(va, level);
        let e = tables.read(table, idx);
        let hit = hw.ptcache.access((frame << 12) | (idx as u64 * 8));
        loads.loads += 1;
        loads.hits += u8::from(hit);
        let leaf = leaf_size(level, e);
        let e = check_and_mark(tables, table, idx, e, leaf.is_some(), r)
            .map_err(|f| RefillFault::Guest(f.at(level)))?;
        if let Some(size) = leaf {
            return Ok(leaf_of(e, size));
        }
        table = x86::frame(e);
        level -= 1;
    }
}
