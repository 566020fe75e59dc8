//! A set-associative, LRU, tagged lookup structure: the building block of
//! every TLB, paging-structure cache, nested TLB and the page-table line
//! cache. Flat arrays, no allocation after construction.

use crate::config::Geometry;

/// A key of a [`SetAssoc`]: compared whole. `u64` for every structure but
/// the TLBs of 5-level paging, whose tags (a 44-bit page number, its size
/// and a 28-bit ASID) need `u128`.
pub trait Key: Copy + Eq + std::fmt::Debug {
    /// The key of an unused way; no real key equals it.
    const EMPTY: Self;
}

impl Key for u64 {
    const EMPTY: Self = u64::MAX;
}

impl Key for u128 {
    const EMPTY: Self = u128::MAX;
}

/// A set-associative cache from keys `K` (64-bit by default) to `V`, true
/// LRU within a set.
///
/// The caller supplies the set index (usually low bits of the page number)
/// and the full key (which must include everything that distinguishes
/// entries: ASID, page size, ...). A geometry with 0 entries is a cache that
/// never hits.
///
/// Each set keeps its ways in recency order (most recent first, empty ways
/// last), so LRU needs no timestamps: a hit moves its way to the front, a
/// fill takes the last way. That keeps the metadata to the keys alone, which
/// matters because the simulator's own cache misses dominate its speed.
#[derive(Clone, Debug)]
pub struct SetAssoc<V: Copy + Default, K: Key = u64> {
    set_mask: u64,
    ways: usize,
    keys: Vec<K>,
    vals: Vec<V>,
}

impl<V: Copy + Default, K: Key> SetAssoc<V, K> {
    /// An empty cache of the given geometry (validated by `Config::validate`).
    pub fn new(g: Geometry) -> Self {
        let n = g.entries as usize;
        let sets = g.sets().max(1);
        let ways = if n == 0 { 0 } else { g.ways as usize };
        // The unchecked set accesses rely on this: every set index is at
        // most `sets - 1`, so a set's ways end at or before `sets * ways`.
        assert!(
            sets as usize * ways <= n,
            "geometry of {n} entries in {ways} ways"
        );
        SetAssoc {
            set_mask: u64::from(sets) - 1,
            ways,
            keys: vec![K::EMPTY; n],
            vals: vec![V::default(); n],
        }
    }

    /// True when the structure has no entries (configured off).
    #[inline]
    pub fn is_off(&self) -> bool {
        self.ways == 0
    }

    /// First way of set `index`: at most `(sets - 1) * ways`, so the set's
    /// `ways` slots lie inside `keys` and `vals` (the invariant the
    /// unchecked accessors below rely on; `new` asserts `sets * ways <=
    /// entries`, and the arrays never change length).
    #[inline]
    fn base(&self, index: u64) -> usize {
        ((index & self.set_mask) as usize) * self.ways
    }

    /// The keys of the `W`-way set at `base`, without bounds checks.
    ///
    /// # Safety
    /// `W == self.ways` and `base` came from [`Self::base`].
    #[inline(always)]
    unsafe fn keys_at<const W: usize>(&self, base: usize) -> &[K; W] {
        debug_assert!(W == self.ways && base + W <= self.keys.len());
        // SAFETY: by the caller's contract and `base`'s invariant,
        // `base..base + W` is inside `keys`; `[K; W]` has `K`'s alignment.
        unsafe { &*self.keys.as_ptr().add(base).cast::<[K; W]>() }
    }

    /// The keys and values of the `W`-way set at `base`, mutable, without
    /// bounds checks.
    ///
    /// # Safety
    /// As [`Self::keys_at`].
    #[inline(always)]
    unsafe fn set_at_mut<const W: usize>(&mut self, base: usize) -> (&mut [K; W], &mut [V; W]) {
        debug_assert!(W == self.ways && base + W <= self.keys.len());
        debug_assert_eq!(self.keys.len(), self.vals.len());
        // SAFETY: as `keys_at`; `vals` has the length of `keys`, and the
        // two borrows are of different vectors.
        unsafe {
            (
                &mut *self.keys.as_mut_ptr().add(base).cast::<[K; W]>(),
                &mut *self.vals.as_mut_ptr().add(base).cast::<[V; W]>(),
            )
        }
    }

    /// The value in slot `base + way`, without a bounds check.
    ///
    /// # Safety
    /// `base` came from [`Self::base`] and `way < self.ways`.
    #[inline(always)]
    unsafe fn val_at(&self, base: usize, way: usize) -> V {
        debug_assert!(way < self.ways && base + way < self.vals.len());
        // SAFETY: `base + way < base + ways <= vals.len()` by the contract.
        unsafe { *self.vals.get_unchecked(base + way) }
    }

    /// Way of `key` in the set at `base` (from [`Self::base`]), if present.
    #[inline(always)]
    fn find(&self, base: usize, key: K) -> Option<usize> {
        if self.ways == 4 {
            // SAFETY: four ways, and `base` is a set's first way.
            return find_fixed::<K, 4>(unsafe { self.keys_at::<4>(base) }, key);
        }
        self.keys[base..base + self.ways]
            .iter()
            .position(|&k| k == key)
    }

    /// Make way `way` of the set at `base` the most recent, holding `key`/`val`.
    /// Always inlined: the 4- and 8-way rewrites are a few moves, less
    /// than the call the compiler otherwise makes (the walk caches' hits
    /// beyond way 0 paid it); other geometries call [`Self::make_recent_any`].
    #[inline(always)]
    fn make_recent(&mut self, base: usize, way: usize, key: K, val: V) {
        match self.ways {
            4 => self.make_recent_fixed::<4>(base, way, key, val),
            8 => self.make_recent_fixed::<8>(base, way, key, val),
            _ => self.make_recent_any(base, way, key, val),
        }
    }

    /// [`Self::make_recent`] for any number of ways.
    #[inline(never)]
    fn make_recent_any(&mut self, base: usize, way: usize, key: K, val: V) {
        let w = self.ways;
        // A plain shift over the set's slice: `rotate_right` would call
        // memmove.
        let keys = &mut self.keys[base..base + w];
        for j in (1..=way).rev() {
            keys[j] = keys[j - 1];
        }
        keys[0] = key;
        if std::mem::size_of::<V>() > 0 {
            let vals = &mut self.vals[base..base + w];
            for j in (1..=way).rev() {
                vals[j] = vals[j - 1];
            }
            vals[0] = val;
        }
    }

    /// [`Self::make_recent`] for a `W`-way set (the common geometries):
    /// every way is rewritten from its own or its predecessor's slot, a fixed
    /// amount of work the compiler turns into conditional moves, instead of a
    /// loop whose trip count depends on `way`.
    #[inline(always)]
    fn make_recent_fixed<const W: usize>(&mut self, base: usize, way: usize, key: K, val: V) {
        fn shift<T: Copy, const W: usize>(set: &mut [T; W], way: usize, first: T) {
            let old = *set;
            for j in 1..W {
                set[j] = if j <= way { old[j - 1] } else { old[j] };
            }
            set[0] = first;
        }
        // SAFETY: `make_recent` calls this for `W`-way sets only, with a
        // `base` from `Self::base`.
        let (keys, vals) = unsafe { self.set_at_mut::<W>(base) };
        shift::<K, W>(keys, way, key);
        if std::mem::size_of::<V>() > 0 {
            shift::<V, W>(vals, way, val);
        }
    }

    /// Look `key` up in set `index`; a hit becomes most recently used.
    /// Always inlined: every caller is a hot path, and as a call (which
    /// the compiler picks as soon as the body grows a little) the lookup
    /// costs its callers a call, spills and an `Option` through memory.
    #[inline(always)]
    pub fn lookup(&mut self, index: u64, key: K) -> Option<V> {
        if self.ways == 0 {
            return None;
        }
        let base = self.base(index);
        let way = self.find(base, key)?;
        // SAFETY: `base` from `Self::base`; `find` returns a way of the set.
        let val = unsafe { self.val_at(base, way) };
        if way > 0 {
            self.make_recent(base, way, key, val);
        }
        Some(val)
    }

    /// Insert or overwrite `key` in set `index`, evicting the LRU way.
    #[inline]
    pub fn insert(&mut self, index: u64, key: K, val: V) {
        if self.ways == 0 {
            return;
        }
        let base = self.base(index);
        match self.find(base, key) {
            Some(way) => self.make_recent(base, way, key, val),
            None => self.insert_new(index, key, val),
        }
    }

    /// Insert `key`, which the caller knows is absent (it just missed and
    /// nothing filled the set since), evicting the LRU way: [`Self::insert`]
    /// without the scan. The page walkers use it for the walk caches they
    /// fill after the lookup that sent them walking. Always inlined: as a
    /// call (which the compiler chose for the TLB and nested-TLB fills) it
    /// cost its callers the call, the argument moves and the `ways`
    /// dispatch again.
    #[inline(always)]
    pub fn insert_new(&mut self, index: u64, key: K, val: V) {
        if self.ways == 0 {
            return;
        }
        debug_assert_ne!(key, K::EMPTY);
        let base = self.base(index);
        debug_assert!(
            self.find(base, key).is_none(),
            "insert_new of a present key"
        );
        self.push_front(base, key, val);
    }

    /// Put `key`/`val` in way 0 of the set at `base`, evicting the LRU way.
    #[inline(always)]
    fn push_front(&mut self, base: usize, key: K, val: V) {
        match self.ways {
            4 => self.push_front_fixed::<4>(base, key, val),
            8 => self.push_front_fixed::<8>(base, key, val),
            w => self.make_recent(base, w - 1, key, val),
        }
    }

    /// [`Self::make_recent`] of the last way of a `W`-way set: every way
    /// moves down one and the LRU one falls out. With `way` fixed at `W -
    /// 1` the moves are straight-line code (no selects); most walk-cache
    /// and TLB fills of a TLB-missing workload take this path.
    #[inline]
    fn push_front_fixed<const W: usize>(&mut self, base: usize, key: K, val: V) {
        fn push<T: Copy, const W: usize>(set: &mut [T; W], first: T) {
            for j in (1..W).rev() {
                set[j] = set[j - 1];
            }
            set[0] = first;
        }
        // SAFETY: `push_front` calls this for `W`-way sets only, with a
        // `base` from `Self::base`.
        let (keys, vals) = unsafe { self.set_at_mut::<W>(base) };
        push::<K, W>(keys, key);
        if std::mem::size_of::<V>() > 0 {
            push::<V, W>(vals, val);
        }
    }

    /// Look `key` up; on a miss insert it with `val` (evicting the LRU way).
    /// One scan of the set. Returns true on a hit.
    #[inline]
    pub fn access(&mut self, index: u64, key: K, val: V) -> bool {
        if self.ways == 0 {
            return false;
        }
        let base = self.base(index);
        match self.find(base, key) {
            Some(way) => {
                if way > 0 {
                    // SAFETY: as in `lookup`.
                    let v = unsafe { self.val_at(base, way) };
                    self.make_recent(base, way, key, v);
                }
                true
            }
            None => {
                self.push_front(base, key, val);
                false
            }
        }
    }

    /// Drop `key` from set `index` if present.
    #[inline]
    pub fn remove(&mut self, index: u64, key: K) {
        if self.ways == 0 {
            return;
        }
        let base = self.base(index);
        if let Some(way) = self.find(base, key) {
            let end = base + self.ways;
            for j in base + way..end - 1 {
                self.keys[j] = self.keys[j + 1];
                self.vals[j] = self.vals[j + 1];
            }
            self.keys[end - 1] = K::EMPTY;
        }
    }

    /// Drop every entry whose key fails `keep` (a full scan: for flushes).
    pub fn retain(&mut self, mut keep: impl FnMut(K) -> bool) {
        for base in (0..self.keys.len()).step_by(self.ways.max(1)) {
            // Empty ways come last, so a set whose first way is empty is
            // empty: flushes of a mostly empty TLB touch one key per set.
            if self.keys[base] == K::EMPTY {
                continue;
            }
            let mut w = base;
            for r in base..base + self.ways {
                let k = self.keys[r];
                if k != K::EMPTY && keep(k) {
                    self.keys[w] = k;
                    self.vals[w] = self.vals[r];
                    w += 1;
                }
            }
            self.keys[w..base + self.ways].fill(K::EMPTY);
        }
    }

    /// Drop every entry.
    pub fn clear(&mut self) {
        self.keys.fill(K::EMPTY);
    }

    /// Number of valid entries (for tests and reports).
    pub fn occupancy(&self) -> usize {
        self.keys.iter().filter(|&&k| k != K::EMPTY).count()
    }
}

/// [`SetAssoc::find`] in a set of `W` ways (the common 4): the same
/// early-exit scan, but over an array of known length, so it compiles to
/// one compare and branch per way instead of a loop with three induction
/// variables (6 instructions per way, all paid on a miss).
#[inline(always)]
fn find_fixed<K: Key, const W: usize>(set: &[K; W], key: K) -> Option<usize> {
    (0..W).find(|&j| set[j] == key)
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
    fn remove_keeps_recency_order() {
        let mut c: SetAssoc<u8> = SetAssoc::new(Geometry::new(4, 4));
        for k in 1..=4 {
            c.insert(0, k, k as u8); // recency: 4 3 2 1
        }
        c.remove(0, 3); // 4 2 1 _
        c.insert(0, 5, 5); // fills the empty way: 5 4 2 1
        assert_eq!(c.occupancy(), 4);
        c.insert(0, 6, 6); // evicts 1
        assert_eq!(c.lookup(0, 1), None);
        assert_eq!(c.lookup(0, 2), Some(2));
    }

    #[test]
    fn access_hits_and_fills() {
        let mut c: SetAssoc<()> = SetAssoc::new(Geometry::new(2, 2));
        assert!(!c.is_off());
        assert!(!c.access(0, 7, ()));
        assert!(c.access(0, 7, ()));
        assert!(!c.access(0, 8, ()));
        assert!(!c.access(0, 9, ())); // evicts 7 (LRU)
        assert!(!c.access(0, 7, ()));
    }

    /// The plain model of a set-associative LRU cache: each set a list in
    /// recency order, every access bounds-checked.
    struct Model {
        sets: Vec<Vec<(u64, u32)>>,
        ways: usize,
    }

    impl Model {
        fn set(&mut self, index: u64) -> &mut Vec<(u64, u32)> {
            let n = self.sets.len() as u64;
            &mut self.sets[(index % n) as usize]
        }
        fn lookup(&mut self, index: u64, key: u64) -> Option<u32> {
            let set = self.set(index);
            let way = set.iter().position(|&(k, _)| k == key)?;
            let e = set.remove(way);
            set.insert(0, e);
            Some(e.1)
        }
        fn insert(&mut self, index: u64, key: u64, val: u32) {
            let ways = self.ways;
            let set = self.set(index);
            if let Some(way) = set.iter().position(|&(k, _)| k == key) {
                set.remove(way);
            }
            set.insert(0, (key, val));
            set.truncate(ways);
        }
        fn remove(&mut self, index: u64, key: u64) {
            self.set(index).retain(|&(k, _)| k != key);
        }
    }

    /// The unchecked set accesses (4- and 8-way fixed paths, the others
    /// generic) behave as the plain model on a long pseudo-random mix of
    /// lookups, inserts, `insert_new`s, `access`es and removes, with keys
    /// that collide in few sets so every recency position is exercised.
    #[test]
    fn agrees_with_plain_model() {
        for (entries, ways) in [(64, 4), (4, 4), (64, 8), (8, 8), (2, 2), (24, 6), (16, 1)] {
            let mut c: SetAssoc<u32> = SetAssoc::new(Geometry::new(entries, ways));
            let sets = entries / ways;
            let mut m = Model {
                sets: vec![Vec::new(); sets as usize],
                ways: ways as usize,
            };
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for step in 0..40_000u32 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Keys 0..3 * entries: about three candidates per way.
                let key = (x >> 8) % (3 * u64::from(entries));
                let index = key;
                let ctx = format!("{entries}/{ways} step {step} key {key}");
                match x % 8 {
                    0..=2 => assert_eq!(c.lookup(index, key), m.lookup(index, key), "{ctx}"),
                    3 | 4 => {
                        c.insert(index, key, step);
                        m.insert(index, key, step);
                    }
                    5 => {
                        if m.lookup(index, key).is_none() {
                            c.insert_new(index, key, step);
                            m.insert(index, key, step);
                        } else {
                            assert!(c.lookup(index, key).is_some(), "{ctx}");
                        }
                    }
                    6 => {
                        let hit = m.lookup(index, key).is_some();
                        if !hit {
                            m.insert(index, key, step);
                        }
                        assert_eq!(c.access(index, key, step), hit, "{ctx}");
                    }
                    _ => {
                        c.remove(index, key);
                        m.remove(index, key);
                    }
                }
                let occupied: usize = m.sets.iter().map(Vec::len).sum();
                assert_eq!(c.occupancy(), occupied, "{ctx}");
            }
            // Same contents, in the same recency order, at the end.
            for (i, set) in m.sets.iter().enumerate() {
                let base = i * ways as usize;
                for (w, &(k, v)) in set.iter().enumerate() {
                    assert_eq!(
                        (c.keys[base + w], c.vals[base + w]),
                        (k, v),
                        "{entries}/{ways} set {i} way {w}"
                    );
                }
                for w in set.len()..ways as usize {
                    assert_eq!(
                        c.keys[base + w],
                        u64::EMPTY,
                        "{entries}/{ways} set {i} way {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn odd_geometries_stay_in_bounds() {
        // Not a power-of-two set count, or entries not a multiple of the
        // ways (Config::validate rejects both; code may still build them):
        // the set index stays below `sets`, so every set is inside the arrays.
        for (entries, ways) in [(12, 4), (10, 4), (24, 8), (20, 8)] {
            let mut c: SetAssoc<u32> = SetAssoc::new(Geometry::new(entries, ways));
            for k in 0..1000u64 {
                c.insert(k, k, k as u32);
                assert_eq!(c.lookup(k, k), Some(k as u32), "{entries}/{ways} key {k}");
                c.insert_new(k, k + 5000, 1);
                assert!(!c.access(k, k + 9000, 2));
            }
        }
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
