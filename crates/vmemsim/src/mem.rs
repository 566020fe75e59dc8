//! Simulated physical memory that holds page-table pages.
//!
//! Only frames that hold tables (guest page tables, EPT, shadow tables) have
//! contents; data frames are tracked by number only. A [`PageStore`] maps a
//! frame number to a 4 KiB page of 512 entries through a dense index, so a
//! walk reference costs one array lookup.

use crate::mmu::TableMem;

const NO_SLOT: u32 = u32::MAX;

/// Table pages of one physical address space, frames counted from `base`.
#[derive(Clone, Debug, Default)]
pub struct PageStore {
    base: u64,
    slot_of: Vec<u32>,
    pages: Vec<[u64; 512]>,
    free_slots: Vec<u32>,
}

impl PageStore {
    /// A store for frames `base..`; the index grows as frames are added.
    pub fn new(base: u64) -> Self {
        PageStore {
            base,
            ..Default::default()
        }
    }

    #[inline]
    fn slot(&self, frame: u64) -> Option<usize> {
        let i = frame.checked_sub(self.base)? as usize;
        match self.slot_of.get(i) {
            Some(&s) if s != NO_SLOT => Some(s as usize),
            _ => None,
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
                (self.pages.len() - 1) as u32
            }
        };
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
        self.pages.len() - self.free_slots.len()
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
        match self.slot(frame) {
            Some(s) => self.pages[s][idx],
            None => 0,
        }
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
}
