//! A set-associative, LRU, tagged lookup structure: the building block of
//! every TLB, paging-structure cache, nested TLB and the page-table line
//! cache. Flat arrays, no allocation after construction.

use crate::config::Geometry;

const EMPTY: u64 = u64::MAX;

/// A set-associative cache from 64-bit keys to `V`, true LRU within a set.
///
/// The caller supplies the set index (usually low bits of the page number)
/// and the full key (which must include everything that distinguishes
/// entries: ASID, page size, ...). A geometry with 0 entries is a cache that
/// never hits.
#[derive(Clone, Debug)]
pub struct SetAssoc<V: Copy + Default> {
    set_mask: u64,
    ways: usize,
    keys: Vec<u64>,
    vals: Vec<V>,
    stamps: Vec<u64>,
    clock: u64,
}

impl<V: Copy + Default> SetAssoc<V> {
    /// An empty cache of the given geometry (validated by `Config::validate`).
    pub fn new(g: Geometry) -> Self {
        let n = g.entries as usize;
        SetAssoc {
            set_mask: u64::from(g.sets().max(1)) - 1,
            ways: if n == 0 { 0 } else { g.ways as usize },
            keys: vec![EMPTY; n],
            vals: vec![V::default(); n],
            stamps: vec![0; n],
            clock: 0,
        }
    }

    /// True when the structure has no entries (configured off).
    #[inline]
    pub fn is_off(&self) -> bool {
        self.ways == 0
    }

    #[inline]
    fn set_range(&self, index: u64) -> std::ops::Range<usize> {
        let base = ((index & self.set_mask) as usize) * self.ways;
        base..base + self.ways
    }

    /// Look `key` up in set `index`; a hit becomes most recently used.
    #[inline]
    pub fn lookup(&mut self, index: u64, key: u64) -> Option<V> {
        if self.ways == 0 {
            return None;
        }
        let range = self.set_range(index);
        let base = range.start;
        let way = self.keys[range].iter().position(|&k| k == key)?;
        self.clock += 1;
        self.stamps[base + way] = self.clock;
        Some(self.vals[base + way])
    }

    /// Insert or overwrite `key` in set `index`, evicting the LRU way.
    #[inline]
    pub fn insert(&mut self, index: u64, key: u64, val: V) {
        if self.ways == 0 {
            return;
        }
        debug_assert_ne!(key, EMPTY);
        let range = self.set_range(index);
        let base = range.start;
        let keys = &self.keys[range.clone()];
        let stamps = &self.stamps[range];
        let way = keys.iter().position(|&k| k == key).unwrap_or_else(|| {
            // Least recently used way (empty ways have stamp 0).
            let mut v = 0;
            for (i, &s) in stamps.iter().enumerate() {
                if s < stamps[v] {
                    v = i;
                }
            }
            v
        });
        self.clock += 1;
        self.keys[base + way] = key;
        self.vals[base + way] = val;
        self.stamps[base + way] = self.clock;
    }

    /// Look `key` up; on a miss insert it with `val` (evicting the LRU way).
    /// One scan of the set. Returns true on a hit.
    #[inline]
    pub fn access(&mut self, index: u64, key: u64, val: V) -> bool {
        if self.ways == 0 {
            return false;
        }
        let range = self.set_range(index);
        let base = range.start;
        let keys = &self.keys[range.clone()];
        let stamps = &self.stamps[range];
        let mut victim = 0;
        let mut hit = None;
        for (i, &k) in keys.iter().enumerate() {
            if k == key {
                hit = Some(i);
                break;
            }
            if stamps[i] < stamps[victim] {
                victim = i;
            }
        }
        self.clock += 1;
        match hit {
            Some(w) => {
                self.stamps[base + w] = self.clock;
                true
            }
            None => {
                self.keys[base + victim] = key;
                self.vals[base + victim] = val;
                self.stamps[base + victim] = self.clock;
                false
            }
        }
    }

    /// Drop `key` from set `index` if present.
    #[inline]
    pub fn remove(&mut self, index: u64, key: u64) {
        if self.ways == 0 {
            return;
        }
        for i in self.set_range(index) {
            if self.keys[i] == key {
                self.keys[i] = EMPTY;
                self.stamps[i] = 0;
            }
        }
    }

    /// Drop every entry whose key satisfies `pred` (a full scan: for flushes).
    pub fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) {
        for i in 0..self.keys.len() {
            if self.keys[i] != EMPTY && !keep(self.keys[i]) {
                self.keys[i] = EMPTY;
                self.stamps[i] = 0;
            }
        }
    }

    /// Drop every entry.
    pub fn clear(&mut self) {
        self.keys.fill(EMPTY);
        self.stamps.fill(0);
    }

    /// Number of valid entries (for tests and reports).
    pub fn occupancy(&self) -> usize {
        self.keys.iter().filter(|&&k| k != EMPTY).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_least_recently_used_way() {
        let mut c: SetAssoc<u32> = SetAssoc::new(Geometry::new(4, 2)); // 2 sets x 2 ways
        c.insert(0, 10, 1);
        c.insert(0, 20, 2);
        assert_eq!(c.lookup(0, 10), Some(1)); // 10 is now MRU
        c.insert(0, 30, 3); // evicts 20
        assert_eq!(c.lookup(0, 20), None);
        assert_eq!(c.lookup(0, 10), Some(1));
        assert_eq!(c.lookup(0, 30), Some(3));
        // other set untouched
        c.insert(1, 11, 9);
        assert_eq!(c.occupancy(), 3);
    }

    #[test]
    fn off_never_hits() {
        let mut c: SetAssoc<u32> = SetAssoc::new(Geometry::new(0, 1));
        c.insert(0, 1, 1);
        assert_eq!(c.lookup(0, 1), None);
        assert!(c.is_off());
    }

    #[test]
    fn retain_and_remove() {
        let mut c: SetAssoc<u8> = SetAssoc::new(Geometry::new(8, 8));
        for k in 0..8 {
            c.insert(0, k, k as u8);
        }
        c.retain(|k| k % 2 == 0);
        assert_eq!(c.occupancy(), 4);
        c.remove(0, 2);
        assert_eq!(c.lookup(0, 2), None);
        assert_eq!(c.lookup(0, 4), Some(4));
    }
}
