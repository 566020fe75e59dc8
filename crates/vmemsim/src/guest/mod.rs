//! The guest OS model: processes with VMAs and x86-64 4-level page tables
//! kept in simulated guest-physical memory, demand paging, 2 MiB pages,
//! copy-on-write fork, munmap, exec, exit and context switches with PCIDs.
//!
//! Every page-table store, frame write, CR3 load and TLB invalidation goes
//! through a [`Platform`], so the hypervisor of the current mode sees exactly
//! what real hardware would let it see.

pub mod balloon;
pub mod content;
pub mod frames;
pub mod os;
pub mod reclaim;
pub mod rmap;
pub mod softwalk;
pub mod swap;
pub mod vma;

pub use os::GuestOs;

use crate::addr::{Gpa, Gva};
use crate::mem::PageStore;
use crate::stats::Stats;

/// Guest-physical memory: the contents of guest page-table pages, by gPFN.
pub type GuestMemory = PageStore;

/// Store `val` into the page-table entry at `gpa` (what the guest kernel's
/// store does once the platform lets it through).
#[inline]
pub fn store_pte(mem: &mut GuestMemory, gpa: Gpa, val: u64) {
    use crate::mmu::TableMem;
    mem.write(gpa.page_number(), (gpa.page_offset() / 8) as usize, val);
}

/// What the guest kernel does that a hypervisor can observe or must handle.
/// Each mode implements it: native does it directly, nested lets it run,
/// shadow traps and emulates, paravirtual turns it into hypercalls.
pub trait Platform {
    /// Counters the guest adds to.
    fn stats(&mut self) -> &mut Stats;
    /// The guest kernel stores `val` into the page-table entry at `gpa`.
    fn write_pte(&mut self, mem: &mut GuestMemory, gpa: Gpa, val: u64);
    /// The guest kernel writes a whole 4 KiB frame (zeroing a new frame or
    /// copying into it). First write to a frame: the host must back it.
    fn touch_frame(&mut self, mem: &mut GuestMemory, gpfn: u64);
    /// The guest reads a whole 4 KiB frame (writing it to its swap device).
    /// A host that swapped the frame out must read it back first (double
    /// paging). Nothing on a host that never takes frames away.
    fn read_frame(&mut self, _mem: &mut GuestMemory, _gpfn: u64) {}
    /// MOV to CR3: run on the table rooted at `root` with `pcid`.
    fn write_cr3(&mut self, mem: &mut GuestMemory, root: u64, pcid: u16);
    /// INVLPG of `va` in the address space `pcid` (INVPCID individual-address
    /// when `pcid` is not the current one).
    fn invlpg(&mut self, pcid: u16, va: Gva);
    /// INVPCID single-context: drop every TLB entry of `pcid`.
    fn flush_pcid(&mut self, pcid: u16);
    /// The guest kernel finished one operation that changed page tables
    /// (a fault, fork, munmap...). Paravirtual modes flush their batch here.
    fn end_pt_update(&mut self, _mem: &mut GuestMemory) {}
}
