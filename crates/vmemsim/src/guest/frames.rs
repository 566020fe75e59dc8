//! The guest kernel's physical frame allocator: 2 MiB chunks split on
//! demand into 4 KiB frames, with a reference count per 4 KiB frame for
//! copy-on-write sharing. Deterministic: same calls, same frames.

use crate::addr::FRAMES_PER_HUGE;

/// 4 KiB frames in one 1 GiB page.
pub const GIANT_FRAMES: u64 = 1 << 18;

/// Free lists and reference counts of guest-physical frames.
#[derive(Clone, Debug)]
pub struct Frames {
    free_4k: Vec<u64>,
    free_2m: Vec<u64>,
    refcount: Vec<u16>,
}

impl Frames {
    /// All `frames` (a multiple of 512) free; gPFN 0..512 is kept back as the
    /// guest kernel's own memory.
    pub fn new(frames: u64) -> Self {
        let chunks = frames / FRAMES_PER_HUGE;
        Frames {
            free_4k: Vec::new(),
            free_2m: (1..chunks).rev().map(|c| c * FRAMES_PER_HUGE).collect(),
            refcount: vec![0; frames as usize],
        }
    }

    /// A free 4 KiB frame with reference count 1, or `None` when memory is exhausted.
    pub fn alloc_4k(&mut self) -> Option<u64> {
        if self.free_4k.is_empty() {
            let base = self.free_2m.pop()?;
            self.free_4k
                .extend((1..FRAMES_PER_HUGE).rev().map(|i| base + i));
            self.refcount[base as usize] = 1;
            return Some(base);
        }
        let f = self.free_4k.pop()?;
        self.refcount[f as usize] = 1;
        Some(f)
    }

    /// A free 2 MiB-aligned run of 512 frames, each with reference count 1.
    pub fn alloc_2m(&mut self) -> Option<u64> {
        let base = self.free_2m.pop()?;
        self.refcount[base as usize..(base + FRAMES_PER_HUGE) as usize].fill(1);
        Some(base)
    }

    /// A free 1 GiB-aligned run of 262144 frames (512 free 2 MiB chunks),
    /// each with reference count 1: the lowest such run, or `None` when no
    /// aligned gigabyte is wholly free. Linux reserves 1 GiB pages in a
    /// hugetlbfs pool at boot because fragmentation makes them rare later;
    /// here a gigabyte the 4 KiB and 2 MiB allocations left whole is the
    /// pool. Scans the free 2 MiB list: O(chunks), once per 1 GiB fault.
    pub fn alloc_1g(&mut self) -> Option<u64> {
        const CHUNKS: usize = 512;
        let chunks = self.refcount.len() / FRAMES_PER_HUGE as usize;
        let mut free = vec![false; chunks];
        for &c in &self.free_2m {
            free[(c / FRAMES_PER_HUGE) as usize] = true;
        }
        let first =
            (0..chunks / CHUNKS).find(|g| free[g * CHUNKS..(g + 1) * CHUNKS].iter().all(|&f| f))?;
        let base = (first * CHUNKS) as u64 * FRAMES_PER_HUGE;
        let end = base + GIANT_FRAMES;
        self.free_2m.retain(|&c| c < base || c >= end);
        self.refcount[base as usize..end as usize].fill(1);
        Some(base)
    }

    /// Reference count of a frame.
    #[inline]
    pub fn refs(&self, f: u64) -> u16 {
        self.refcount[f as usize]
    }

    /// One more mapping shares frames `f..f+n`.
    pub fn get(&mut self, f: u64, n: u64) {
        for r in &mut self.refcount[f as usize..(f + n) as usize] {
            *r += 1;
        }
    }

    /// Drop one reference to each of `f..f+n`; frames reaching 0 are freed
    /// (for a 2 MiB or 1 GiB page, each whole 2 MiB run back to the 2 MiB
    /// list).
    pub fn put(&mut self, f: u64, n: u64) {
        if n >= FRAMES_PER_HUGE && n % FRAMES_PER_HUGE == 0 {
            for c in (0..n / FRAMES_PER_HUGE).rev() {
                self.put_run(f + c * FRAMES_PER_HUGE, FRAMES_PER_HUGE);
            }
        } else {
            self.put_run(f, n);
        }
    }

    fn put_run(&mut self, f: u64, n: u64) {
        let mut freed_all = true;
        for i in f..f + n {
            let r = &mut self.refcount[i as usize];
            assert!(*r > 0, "gPFN {i:#x} freed twice");
            *r -= 1;
            freed_all &= *r == 0;
        }
        if n == FRAMES_PER_HUGE && freed_all {
            self.free_2m.push(f);
        } else {
            for i in (f..f + n).rev() {
                if self.refcount[i as usize] == 0 {
                    self.free_4k.push(i);
                }
            }
        }
    }

    /// All frames, free or not.
    pub fn total(&self) -> u64 {
        self.refcount.len() as u64
    }

    /// Free 4 KiB frames (for tests and reports).
    pub fn free_frames(&self) -> u64 {
        self.free_4k.len() as u64 + self.free_2m.len() as u64 * FRAMES_PER_HUGE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_chunks_and_reuses_freed_frames() {
        let mut f = Frames::new(2048);
        assert_eq!(f.free_frames(), 1536);
        assert_eq!(f.alloc_4k(), Some(512));
        assert_eq!(f.alloc_4k(), Some(513));
        f.get(512, 1);
        f.put(512, 1);
        assert_eq!(f.refs(512), 1);
        f.put(512, 1);
        assert_eq!(f.alloc_4k(), Some(512), "freed frame reused first");
        assert_eq!(f.alloc_2m(), Some(1024));
        assert_eq!(f.alloc_2m(), Some(1536));
        assert_eq!(f.alloc_2m(), None);
        f.put(1024, 512);
        assert_eq!(f.alloc_2m(), Some(1024));
    }

    #[test]
    fn gigabytes_come_whole_and_aligned() {
        // 3 GiB: the first gigabyte holds the kernel's chunk 0, so the
        // 1 GiB pages are gPFN 2^18 and 2^19.
        let g = GIANT_FRAMES;
        let mut f = Frames::new(3 * g);
        assert_eq!(f.alloc_4k(), Some(512));
        assert_eq!(f.alloc_1g(), Some(g));
        assert_eq!(f.refs(g + 12345), 1);
        assert_eq!(f.alloc_1g(), Some(2 * g));
        assert_eq!(f.alloc_1g(), None, "the first gigabyte is not whole");
        // Free: 511 frames of chunk 1 and chunks 2..512 of gigabyte 0.
        assert_eq!(f.free_frames(), g - 513);
        f.put(g, g);
        assert_eq!(f.free_frames(), 2 * g - 513);
        assert_eq!(f.alloc_1g(), Some(g), "freed gigabyte whole again");
        // A 4 KiB frame taken from a gigabyte breaks it.
        f.put(g, g);
        while f.alloc_4k().is_some_and(|x| x < g) {}
        assert_eq!(f.alloc_1g(), None);
    }
}
