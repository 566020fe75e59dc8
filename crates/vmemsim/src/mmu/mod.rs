//! The hardware MMU model: TLBs, paging-structure caches, nested TLB, a
//! cache for page-table lines, and the 1-D and 2-D page walkers. It knows
//! x86 paging and EPT, nothing of hypervisors.

pub mod cache;
pub mod line_cache;
pub mod pwc;
pub mod swtlb;
pub mod tlb;
pub mod walk;
pub mod walker;

pub use tlb::{Asid, TlbEntry, TlbLevel, Tlbs};
pub use walk::{CacheLookups, Dim, TableMem, WalkRecord, WalkRef};
pub use walker::{Hw, Leaf, Rights, WalkFault};
