//! Simulated physical memory that holds page-table pages.
//!
//! Only frames that hold tables (guest page tables, EPT, shadow tables) have
//! contents; data frames are tracked by number only. A [`PageStore`] maps a
//! frame number to a 4 KiB page of 512 entries through a dense index, so a
//! walk reference costs one array lookup.

use crate::mmu::TableMem;

/// Slot of a frame that holds no table: the zero page, `pages[0]`, which
/// nothing ever writes, so reading an entry of it gives 0 without a test.
const NO_SLOT: u32 = 0;

/// Table pages of one physical address space, frames counted from `base`.
///
/// Every frame of the index maps to a slot of `pages`: its table's, or
/// `NO_SLOT` (slot 0), the zero page. So a read ([`TableMem::read`], once per walk
/// reference) is one bounds test on the index and two loads, with no test
/// for "holds a table" and none on `pages`: every slot in `slot_of` is
/// below `pages.len()` (slots come only from `pages.len()` at a push or
/// from `free_slots`, and `pages` never shrinks), which the unchecked read
/// relies on.
#[derive(Clone, Debug)]
pub struct PageStore {
    base: u64,
    slot_of: Vec<u32>,
    /// `pages[0]` is the zero page; tables live in slots 1...
    pages: Vec<[u64; 512]>,
    free_slots: Vec<u32>,
}

impl Default for PageStore {
    fn default() -> Self {
        Self::new(0)
    }
}

impl PageStore {
    /// A store for frames `base..`; the index grows as frames are added.
    pub fn new(base: u64) -> Self {
        PageStore {
            base,
            slot_of: Vec::new(),
            pages: vec![[0; 512]],
            free_slots: Vec::new(),
        }
    }

    /// The slot of `frame`: its table's, or [`NO_SLOT`] (also for a frame
    /// outside the index).
    #[inline]
    fn slot_or_zero(&self, frame: u64) -> u32 {
        // A frame below `base` wraps to an index beyond any `slot_of`.
        let i = frame.wrapping_sub(self.base);
        if i < self.slot_of.len() as u64 {
            self.slot_of[i as usize]
        } else {
            NO_SLOT
        }
    }

    #[inline]
    fn slot(&self, frame: u64) -> Option<usize> {
        match self.slot_or_zero(frame) {
            NO_SLOT => None,
            s => Some(s as usize),
        }
    }

    /// True when `frame` holds a table page.
    #[inline]
    pub fn contains(&self, frame: u64) -> bool {
        self.slot(frame).is_some()
    }

    /// Make `frame` a zeroed table page (zeroing it if it already was one).
    pub fn add(&mut self, frame: u64) {
        assert!(
            frame >= self.base,
            "frame {frame:#x} below store base {:#x}",
            self.base
        );
        let i = (frame - self.base) as usize;
        if i >= self.slot_of.len() {
            self.slot_of.resize((i + 1).next_power_of_two(), NO_SLOT);
        }
        if self.slot_of[i] != NO_SLOT {
            self.pages[self.slot_of[i] as usize] = [0; 512];
            return;
        }
        let s = match self.free_slots.pop() {
            Some(s) => {
                self.pages[s as usize] = [0; 512];
                s
            }
            None => {
                self.pages.push([0; 512]);
                u32::try_from(self.pages.len() - 1).expect("more than 2^32 table pages")
            }
        };
        debug_assert_ne!(s, NO_SLOT);
        self.slot_of[i] = s;
    }

    /// `frame` no longer holds a table page.
    pub fn remove(&mut self, frame: u64) {
        if let Some(s) = self.slot(frame) {
            self.slot_of[(frame - self.base) as usize] = NO_SLOT;
            self.free_slots.push(s as u32);
        }
    }

    /// Number of table pages held.
    pub fn len(&self) -> usize {
        self.pages.len() - 1 - self.free_slots.len()
    }

    /// True when no table page is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The 512 entries of the table in `frame` (None if it holds no table).
    pub fn page(&self, frame: u64) -> Option<&[u64; 512]> {
        self.slot(frame).map(|s| &self.pages[s])
    }
}

impl TableMem for PageStore {
    #[inline]
    fn read(&self, frame: u64, idx: usize) -> u64 {
        let s = self.slot_or_zero(frame) as usize;
        debug_assert!(s < self.pages.len());
        // SAFETY: every slot `slot_or_zero` returns is below `pages.len()`
        // (the struct's invariant: a slot is `pages.len() - 1` after a
        // push, or a freed one, and `pages` never shrinks); NO_SLOT is 0,
        // the zero page, which `new` creates.
        let page = unsafe { self.pages.get_unchecked(s) };
        page[idx]
    }

    #[inline]
    fn write(&mut self, frame: u64, idx: usize, val: u64) {
        let s = self
            .slot(frame)
            .unwrap_or_else(|| panic!("write to frame {frame:#x} which holds no table"));
        self.pages[s][idx] = val;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_read_write_remove_reuse() {
        let mut s = PageStore::new(100);
        s.add(105);
        assert_eq!(s.read(105, 3), 0);
        s.write(105, 3, 42);
        assert_eq!(s.read(105, 3), 42);
        assert_eq!(s.read(104, 3), 0, "non-table frame reads as 0");
        s.remove(105);
        assert!(!s.contains(105));
        s.add(200);
        assert_eq!(s.read(200, 3), 0, "reused slot is zeroed");
        assert_eq!(s.len(), 1);
    }

    #[test]
    #[should_panic(expected = "holds no table")]
    fn write_to_a_non_table_frame_panics() {
        let mut s = PageStore::new(10);
        s.add(12);
        s.write(11, 0, 1);
    }

    /// The plain model: a map from frame to its 512 entries.
    #[derive(Default)]
    struct Model(std::collections::HashMap<u64, [u64; 512]>);

    /// The store (its unchecked read over the zero page) agrees with the
    /// plain map on a long pseudo-random mix of adds (new and re-added
    /// frames), removes, writes and reads of table frames, of frames
    /// holding no table, and of frames below the base and beyond the index.
    #[test]
    fn agrees_with_plain_model() {
        for base in [0u64, 1000, 1 << 40] {
            let mut s = PageStore::new(base);
            let mut m = Model::default();
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for step in 0..60_000u64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Frames from 8 below the base to 300 above (the index
                // grows by powers of two, so some lie beyond it).
                let frame = (base + (x >> 20) % 308).wrapping_sub(8);
                let idx = ((x >> 40) % 512) as usize;
                let ctx = format!("base {base:#x} step {step} frame {frame:#x} idx {idx}");
                match x % 10 {
                    // Frames below the base are never added (`add` asserts).
                    0 if frame.wrapping_sub(base) < 300 => {
                        s.add(frame);
                        m.0.insert(frame, [0; 512]);
                    }
                    1 => {
                        s.remove(frame);
                        m.0.remove(&frame);
                    }
                    2..=4 => {
                        if let Some(p) = m.0.get_mut(&frame) {
                            p[idx] = step + 1;
                            s.write(frame, idx, step + 1);
                        }
                    }
                    _ => {}
                }
                let want = m.0.get(&frame).map_or(0, |p| p[idx]);
                assert_eq!(s.read(frame, idx), want, "{ctx}");
                assert_eq!(s.contains(frame), m.0.contains_key(&frame), "{ctx}");
                assert_eq!(s.page(frame), m.0.get(&frame), "{ctx}");
                assert_eq!(s.len(), m.0.len(), "{ctx}");
            }
            // Every frame, read whole, at the end; the zero page stayed zero.
            for f in base.saturating_sub(8)..base + 300 {
                for idx in 0..512 {
                    let want = m.0.get(&f).map_or(0, |p| p[idx]);
                    assert_eq!(
                        s.read(f, idx),
                        want,
                        "base {base:#x} frame {f:#x} idx {idx}"
                    );
                }
            }
            assert!(s.pages[0].iter().all(|&e| e == 0));
        }
    }
}
