//! Virtual memory areas of one process: non-overlapping page-aligned ranges
//! with protections, kept sorted.

use std::collections::BTreeMap;

use super::content::FileRef;

/// `PROT_READ`.
pub const PROT_READ: u32 = 1;
/// `PROT_WRITE`.
pub const PROT_WRITE: u32 = 2;
/// `PROT_EXEC`.
pub const PROT_EXEC: u32 = 4;
/// Read, write and execute: implicit mappings get this.
pub const PROT_RWX: u32 = 7;

/// One area `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vma {
    /// First byte (page aligned).
    pub start: u64,
    /// One past the last byte (page aligned).
    pub end: u64,
    /// `PROT_*` bits.
    pub prot: u32,
    /// Created for an access outside every recorded mapping.
    pub implicit: bool,
    /// The file it maps, with the file offset of `start` (`None`:
    /// anonymous, or a file the trace does not name).
    pub file: Option<FileRef>,
}

/// The VMAs of one address space.
#[derive(Clone, Debug, Default)]
pub struct Vmas {
    by_start: BTreeMap<u64, Vma>,
}

impl Vmas {
    /// The VMA containing `va`.
    pub fn find(&self, va: u64) -> Option<Vma> {
        let (_, v) = self.by_start.range(..=va).next_back()?;
        (va < v.end).then_some(*v)
    }

    /// The VMAs that overlap `[start, end)`, last first.
    fn overlapping(&self, start: u64, end: u64) -> Vec<Vma> {
        self.by_start
            .range(..end)
            .rev()
            .take_while(|(_, v)| v.end > start)
            .map(|(_, v)| *v)
            .collect()
    }

    /// Remove `[start, end)` from every VMA, splitting at the edges.
    pub fn remove(&mut self, start: u64, end: u64) {
        for v in self.overlapping(start, end) {
            self.by_start.remove(&v.start);
            if v.start < start {
                self.by_start.insert(v.start, Vma { end: start, ..v });
            }
            if v.end > end {
                let file = v.file.map(|f| f.advanced(end - v.start));
                self.by_start.insert(
                    end,
                    Vma {
                        start: end,
                        file,
                        ..v
                    },
                );
            }
        }
    }

    /// Map `[start, end)` with `prot`, replacing whatever was there.
    pub fn insert(&mut self, start: u64, end: u64, prot: u32, implicit: bool) {
        self.insert_file(start, end, prot, implicit, None);
    }

    /// [`Vmas::insert`] of a mapping of `file` (its offset at `start`).
    pub fn insert_file(
        &mut self,
        start: u64,
        end: u64,
        prot: u32,
        implicit: bool,
        file: Option<FileRef>,
    ) {
        if start >= end {
            return;
        }
        self.remove(start, end);
        // Grow a touching implicit area instead of adding one VMA per page.
        if implicit {
            if let Some(prev) = start.checked_sub(1).and_then(|p| self.find(p)) {
                if prev.implicit && prev.end == start && prev.prot == prot {
                    self.by_start.insert(prev.start, Vma { end, ..prev });
                    return;
                }
            }
        }
        self.by_start.insert(
            start,
            Vma {
                start,
                end,
                prot,
                implicit,
                file,
            },
        );
    }

    /// Set the protection of `[start, end)` (only where mapped).
    pub fn protect(&mut self, start: u64, end: u64, prot: u32) {
        for v in self.overlapping(start, end) {
            let (s, e) = (v.start.max(start), v.end.min(end));
            self.remove(s, e);
            self.by_start.insert(
                s,
                Vma {
                    start: s,
                    end: e,
                    prot,
                    implicit: v.implicit,
                    file: v.file.map(|f| f.advanced(s - v.start)),
                },
            );
        }
    }

    /// The parts of `[start, end)` that some VMA maps, in ascending order:
    /// what a range operation (munmap, mprotect) must visit, whatever the
    /// length of the range.
    pub fn mapped(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = self
            .overlapping(start, end)
            .into_iter()
            .map(|v| (v.start.max(start), v.end.min(end)))
            .collect();
        v.reverse();
        v
    }

    /// Number of VMAs.
    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_split_protect() {
        let mut v = Vmas::default();
        assert!(v.is_empty());
        v.insert(0x1000, 0x5000, 3, false);
        assert!(!v.is_empty());
        v.remove(0x2000, 0x3000);
        assert_eq!(v.len(), 2);
        assert!(v.find(0x2800).is_none());
        assert_eq!(v.find(0x4fff).unwrap().start, 0x3000);
        v.protect(0x1000, 0x4000, 1);
        assert_eq!(v.find(0x1000).unwrap().prot, 1);
        assert_eq!(v.find(0x4000).unwrap().prot, 3);
        assert_eq!(
            v.mapped(0, u64::MAX),
            [(0x1000, 0x2000), (0x3000, 0x4000), (0x4000, 0x5000)]
        );
        assert_eq!(
            v.mapped(0x1800, 0x3800),
            [(0x1800, 0x2000), (0x3000, 0x3800)]
        );
        v.insert(0x10000, 0x11000, 7, true);
        v.insert(0x11000, 0x12000, 7, true);
        assert_eq!(
            v.find(0x11800).unwrap().start,
            0x10000,
            "implicit areas merge"
        );
    }

    /// A VMA that ends where a range starts does not overlap it: mprotect
    /// or munmap of the gap after it leaves it alone and adds no empty
    /// VMA (mutation testing, shard 19: `v.end > start` as `>=` in
    /// `overlapping` left an empty `[0x2000, 0x2000)` behind).
    #[test]
    fn a_range_after_a_vma_does_not_touch_it() {
        let mut v = Vmas::default();
        v.insert(0x1000, 0x2000, 3, false);
        assert!(v.mapped(0x2000, 0x3000).is_empty());
        v.protect(0x2000, 0x3000, 1);
        v.remove(0x2000, 0x3000);
        assert_eq!(v.len(), 1);
        assert_eq!(v.mapped(0, u64::MAX), [(0x1000, 0x2000)]);
        assert_eq!(v.find(0x1800).unwrap().prot, 3);
    }

    /// Touching implicit areas merge only with the same rights: a
    /// read-only one after a read-write one stays a VMA of its own
    /// (mutation testing, shard 10: `prev.end == start && prev.prot ==
    /// prot` as `||` merged them, giving the second page RW).
    #[test]
    fn implicit_areas_with_other_rights_do_not_merge() {
        let mut v = Vmas::default();
        v.insert(0x10000, 0x11000, 3, true);
        v.insert(0x11000, 0x12000, 1, true);
        assert_eq!(v.len(), 2);
        assert_eq!(v.find(0x11800).unwrap().start, 0x11000);
        assert_eq!(v.find(0x11800).unwrap().prot, 1);
    }

    /// Removing the head of a VMA, or a whole one, leaves no empty VMA
    /// behind (mutation testing: `v.start < start` as `<=` kept an empty
    /// `[start, start)` where each head was).
    #[test]
    fn removing_a_head_or_a_whole_vma_leaves_no_empty_one() {
        let mut v = Vmas::default();
        v.insert(0x1000, 0x4000, 3, false);
        v.insert(0x8000, 0x9000, 3, false);
        v.remove(0x1000, 0x2000);
        v.remove(0x8000, 0x9000);
        assert_eq!(v.len(), 1);
        assert_eq!(v.mapped(0, u64::MAX), [(0x2000, 0x4000)]);
    }

    #[test]
    fn splits_keep_the_file_offset_of_each_part() {
        let mut v = Vmas::default();
        let f = FileRef {
            key: 9,
            offset: 0x1000,
        };
        v.insert_file(0x10000, 0x20000, 5, false, Some(f));
        v.remove(0x12000, 0x13000);
        v.protect(0x14000, 0x15000, 1);
        let off = |va| v.find(va).unwrap().file.unwrap().offset;
        assert_eq!(off(0x10000), 0x1000);
        // Right of the hole: 0x13000 is 0x3000 into the mapping.
        assert_eq!(off(0x13000), 0x4000);
        assert_eq!(off(0x14000), 0x5000);
        assert_eq!(off(0x15000), 0x6000);
    }
}
