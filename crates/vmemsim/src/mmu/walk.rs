//! What a page walk touched: a [`WalkRecord`] of [`WalkRef`]s. The walkers
//! fill it, the statistics count it, the cost model prices it, tests check it.

/// Which table a walk reference read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Dim {
    /// The guest's own page table (native tables, the guest dimension of a
    /// 2-D walk, Xen PV direct tables).
    Guest = 0,
    /// The EPT/NPT (nested dimension of a 2-D walk).
    Nested = 1,
    /// A shadow page table kept by the hypervisor.
    Shadow = 2,
}

/// Number of [`Dim`] values.
pub const DIMS: usize = 3;

/// One memory reference made by a page walker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct WalkRef {
    /// Host-physical address of the entry read.
    pub hpa: u64,
    /// Level of the entry (4 = PML4E .. 1 = PTE).
    pub level: u8,
    /// Table dimension (a `Dim` as u8).
    pub dim: u8,
    /// The line was in the page-table line cache.
    pub cache_hit: bool,
}

/// Most references one walk can make: n*m + n + m for n guest levels
/// over m EPT levels, 35 for 5-level over 5-level \[B08\] (an agile walk
/// makes at most as many as the 2-D walk it shortens).
pub const MAX_REFS: usize = 35;

/// The references of one walk, in order. Fixed capacity: no allocation.
/// Keeps per-dimension and line-cache-hit tallies as references are pushed,
/// so counting a walk does not loop over it.
#[derive(Clone, Debug)]
pub struct WalkRecord {
    refs: [WalkRef; MAX_REFS],
    len: usize,
    /// Length of the walk before the last [`WalkRecord::clear`].
    last_len: usize,
    by_dim: [u32; DIMS],
    cache_hits: u32,
    lookups: CacheLookups,
}

/// The walk-cache lookups of one walk (paging-structure caches of the
/// first dimension, EPT PSCs, nested TLB), counted as the walker makes them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheLookups {
    /// PSC lookups of the guest / 1-D tables by the level the walk resumed
    /// at: `[0]` the PDE cache hit (resume at the PT), `[1]` the PDPTE
    /// cache, `[2]` the PML4E cache, `[3]` the PML5E cache, `[4]` no hit
    /// (walk from the root).
    pub psc: [u32; 5],
    /// EPT PSC lookups (one per nested TLB miss), indexed as `psc`.
    pub ept_psc: [u32; 5],
    /// Nested TLB (gPFN -> hPFN) hits.
    pub nested_tlb_hits: u32,
    /// Nested TLB misses (each followed by an EPT walk).
    pub nested_tlb_misses: u32,
}

impl CacheLookups {
    /// Index in [`CacheLookups::psc`] of a PSC lookup: the hit that
    /// resumed at `level` (1..=4), or [`CacheLookups::MISS`] for none.
    #[inline]
    pub fn slot(hit: Option<(u8, u64)>) -> usize {
        hit.map_or(Self::MISS, |(level, _)| usize::from(level - 1))
    }

    /// Index in [`CacheLookups::psc`] of a lookup that hit no cache.
    pub const MISS: usize = 4;
}

impl Default for WalkRecord {
    fn default() -> Self {
        WalkRecord {
            refs: [WalkRef::default(); MAX_REFS],
            len: 0,
            last_len: 0,
            by_dim: [0; DIMS],
            cache_hits: 0,
            lookups: CacheLookups::default(),
        }
    }
}

impl WalkRecord {
    /// Forget all references.
    #[inline]
    pub fn clear(&mut self) {
        self.last_len = self.len;
        self.len = 0;
        self.by_dim = [0; DIMS];
        self.cache_hits = 0;
        self.lookups = CacheLookups::default();
    }
    /// The walk-cache lookups of the walk so far (read and changed by the walkers).
    #[inline]
    pub fn lookups(&mut self) -> &mut CacheLookups {
        &mut self.lookups
    }
    /// The walk-cache lookups of the walk so far.
    #[inline]
    pub fn lookups_made(&self) -> &CacheLookups {
        &self.lookups
    }
    /// Append one reference.
    #[inline]
    pub fn push(&mut self, r: WalkRef) {
        assert!(
            self.len < MAX_REFS,
            "walk made more than {MAX_REFS} references"
        );
        self.refs[self.len] = r;
        self.len += 1;
        self.by_dim[usize::from(r.dim)] += 1;
        self.cache_hits += u32::from(r.cache_hit);
    }
    /// The references so far.
    #[inline]
    pub fn refs(&self) -> &[WalkRef] {
        &self.refs[..self.len]
    }
    /// The references of the walk finished by the last [`WalkRecord::clear`],
    /// while no new reference was pushed (empty once one is): how tests see
    /// the exact references of a walk that a mode counted and cleared.
    #[inline]
    pub fn last(&self) -> &[WalkRef] {
        if self.len == 0 {
            &self.refs[..self.last_len]
        } else {
            &[]
        }
    }
    /// Number of references.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when no reference was made.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// References in one dimension.
    #[inline]
    pub fn count(&self, dim: Dim) -> usize {
        self.by_dim[dim as usize] as usize
    }
    /// References per dimension, indexed by `Dim as usize`.
    #[inline]
    pub fn by_dim(&self) -> [u32; DIMS] {
        self.by_dim
    }
    /// References whose line was in the page-table line cache.
    #[inline]
    pub fn cache_hits(&self) -> u32 {
        self.cache_hits
    }
}

/// Storage of 4 KiB page-table pages, addressed by frame number in the
/// space the tables live in (gPFN for guest tables, hPFN for EPT and shadow).
pub trait TableMem {
    /// Entry `idx` (0..512) of the table in `frame`; 0 for a frame that
    /// holds no table.
    fn read(&self, frame: u64, idx: usize) -> u64;
    /// Store entry `idx` of the table in `frame` (which must hold a table).
    fn write(&mut self, frame: u64, idx: usize, val: u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record counts what it was given, per dimension and line-cache
    /// hits, and after `clear` shows the finished walk as `last` until the
    /// next reference.
    #[test]
    fn a_record_counts_its_references_and_keeps_the_last_walk() {
        let r = |hpa, level, dim: Dim, cache_hit| WalkRef {
            hpa,
            level,
            dim: dim as u8,
            cache_hit,
        };
        let mut w = WalkRecord::default();
        assert!(w.is_empty());
        let refs = [
            r(0x1000, 4, Dim::Nested, false),
            r(0x2008, 3, Dim::Nested, true),
            r(0x3010, 4, Dim::Guest, true),
        ];
        for &x in &refs {
            w.push(x);
        }
        assert_eq!(w.len(), 3);
        assert!(!w.is_empty());
        assert_eq!((w.count(Dim::Guest), w.count(Dim::Nested)), (1, 2));
        assert_eq!(w.cache_hits(), 2);
        assert_eq!(w.refs(), &refs);
        assert!(w.last().is_empty(), "a walk under way has no last walk");
        w.clear();
        assert_eq!((w.len(), w.cache_hits(), w.count(Dim::Nested)), (0, 0, 0));
        assert_eq!(w.last(), &refs);
        w.push(refs[0]);
        assert!(w.last().is_empty());
    }
}
