//! The guest kernel's reverse map: for each gPFN, the (process, gVA) of
//! every 4 KiB leaf that maps it, so reclaim can find the PTE of a frame
//! it picks (Linux's rmap, `mm/rmap.c`; Linux finds anonymous mappers
//! through the `anon_vma` of the VMA, here each frame lists them).
//!
//! Kept only when the guest can reclaim (a swap device), and updated only
//! where the guest kernel writes leaves (faults, fork, unmap, exit), never
//! on the per-access path. Frames mapped by a 2 MiB leaf are not listed:
//! reclaim does not take huge pages (Linux splits a THP first; we leave
//! them resident).

use rustc_hash::FxHashMap;

const NONE: u32 = u32::MAX;

/// Mappers of every guest frame.
#[derive(Clone, Debug)]
pub struct Rmap {
    /// First mapper of each gPFN: (pid, gVA), pid `NONE` when unmapped.
    first: Vec<(u32, u64)>,
    /// Further mappers (frames shared copy-on-write after a fork).
    more: FxHashMap<u64, Vec<(u32, u64)>>,
}

impl Rmap {
    /// An empty map of `frames` gPFNs.
    pub fn new(frames: u64) -> Self {
        Rmap {
            first: vec![(NONE, 0); frames as usize],
            more: FxHashMap::default(),
        }
    }

    /// Process `pid` maps `gpfn` at page `va` with a 4 KiB leaf.
    pub fn add(&mut self, gpfn: u64, pid: u32, va: u64) {
        let f = &mut self.first[gpfn as usize];
        if f.0 == NONE {
            *f = (pid, va);
        } else {
            self.more.entry(gpfn).or_default().push((pid, va));
        }
    }

    /// The leaf of `pid` at `va` no longer maps `gpfn`.
    pub fn remove(&mut self, gpfn: u64, pid: u32, va: u64) {
        let f = &mut self.first[gpfn as usize];
        if *f == (pid, va) {
            *f = match self.more.get_mut(&gpfn) {
                Some(m) => {
                    let next = m.pop().expect("listed mappers are kept non-empty");
                    if m.is_empty() {
                        self.more.remove(&gpfn);
                    }
                    next
                }
                None => (NONE, 0),
            };
            return;
        }
        let m = self
            .more
            .get_mut(&gpfn)
            .unwrap_or_else(|| panic!("rmap: gPFN {gpfn:#x} not mapped by {pid} at {va:#x}"));
        let i = m
            .iter()
            .position(|&e| e == (pid, va))
            .unwrap_or_else(|| panic!("rmap: gPFN {gpfn:#x} not mapped by {pid} at {va:#x}"));
        m.swap_remove(i);
        if m.is_empty() {
            self.more.remove(&gpfn);
        }
    }

    /// The one mapper of `gpfn`, when exactly one 4 KiB leaf maps it.
    #[inline]
    pub fn sole(&self, gpfn: u64) -> Option<(u32, u64)> {
        let f = self.first[gpfn as usize];
        (f.0 != NONE && !self.more.contains_key(&gpfn)).then_some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappers_come_and_go() {
        let mut r = Rmap::new(8);
        assert_eq!(r.sole(3), None);
        r.add(3, 1, 0x1000);
        assert_eq!(r.sole(3), Some((1, 0x1000)));
        r.add(3, 2, 0x1000);
        assert_eq!(r.sole(3), None, "shared after a fork");
        r.remove(3, 1, 0x1000);
        assert_eq!(r.sole(3), Some((2, 0x1000)));
        r.remove(3, 2, 0x1000);
        assert_eq!(r.sole(3), None);
    }
}
