//! The cache of 64-byte page-table lines ([`PtCache`]): decides whether a
//! walk reference hits (and so its latency in the cost model).
//!
//! It is consulted on every walk reference, more often than any TLB, and on
//! a random workload most references miss it, so it has its own layout
//! rather than the general [`super::cache::SetAssoc`]: each set is 8 u32
//! tags in half a 64-byte line when it has at most 8 ways (the default), 16
//! in a whole line otherwise (unused ways hold a tag that never matches), so
//! a lookup compares all ways at once without a loop the simulator's branch
//! predictor must guess, and each set's LRU order is one u64 of 4-bit way
//! numbers, so neither a hit nor a fill moves any tag. True LRU, the same
//! decisions as `SetAssoc`.
//!
//! Half-line sets keep the default's tags in 16 KiB of the simulator's
//! own memory instead of 32 KiB: on a random workload nearly every walk
//! reference reads a different set, so the tags compete with the TLBs and
//! table pages for the host core's 32 KiB L1 data cache (BENCHMARKS.md,
//! "host cache misses").

use crate::config::PtCacheConfig;

/// Most ways a [`PtCache`] supports (`Config::validate` enforces it).
pub const MAX_WAYS: usize = 16;

/// Fewest sets a [`PtCache`] supports: with at least 16 sets a tag (line
/// number without its set bits) of any hPA below 2^42 fits in 32 bits
/// (`Config::validate` enforces it; the simulator's hPAs stay below 2^41).
pub const MIN_SETS: u32 = 16;

/// Tag of an unused way: larger than any real tag.
const EMPTY: u32 = u32::MAX;

/// One in every nibble of an order word.
const NIBBLE_ONES: u64 = 0x1111_1111_1111_1111;

/// Tag slots of a set of at most 8 ways: half a line.
const HALF: usize = MAX_WAYS / 2;

/// One 64-byte line of the simulator's own cache holding tags: one set of
/// up to 16 ways, or two sets of up to 8.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct TagLine([u32; MAX_WAYS]);

/// Cache of 64-byte page-table lines, true LRU within a set.
#[derive(Clone, Debug)]
pub struct PtCache {
    set_mask: u64,
    set_bits: u32,
    ways: usize,
    /// Mask of the `ways` nibbles in use in an order word.
    order_mask: u64,
    /// True when a set has at most [`HALF`] ways and so takes half a line:
    /// set `s` is slots `8 * (s % 2)..` of line `s / 2`; otherwise set `s`
    /// is line `s`.
    half: bool,
    tags: Vec<TagLine>,
    /// Per set: way numbers in recency order, most recent in the low nibble,
    /// unused ways last.
    orders: Vec<u64>,
}

/// Bit `w` set when `tags[w] == tag`, for a half-line set.
#[cfg(target_arch = "x86_64")]
#[inline]
fn match_mask_half(tags: &[u32; HALF], tag: u32) -> u32 {
    #[target_feature(enable = "sse2")]
    fn sse2(tags: &[u32; HALF], tag: u32) -> u32 {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi32, _mm_loadu_si128, _mm_movemask_epi8, _mm_packs_epi16,
            _mm_packs_epi32, _mm_set1_epi32, _mm_setzero_si128,
        };
        let key = _mm_set1_epi32(tag as i32);
        let p = tags.as_ptr().cast::<__m128i>();
        // SAFETY: `tags` is 32 bytes, so the two unaligned 16-byte loads at
        // offsets 0 and 16 stay inside it.
        let [q0, q1] = unsafe { [_mm_loadu_si128(p), _mm_loadu_si128(p.add(1))] };
        let w = _mm_packs_epi32(_mm_cmpeq_epi32(q0, key), _mm_cmpeq_epi32(q1, key));
        _mm_movemask_epi8(_mm_packs_epi16(w, _mm_setzero_si128())) as u32
    }
    // SAFETY: SSE2 is part of the x86_64 baseline: every x86_64 CPU has it.
    unsafe { sse2(tags, tag) }
}

/// Bit `w` set when `tags[w] == tag`, for a half-line set.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn match_mask_half(tags: &[u32; HALF], tag: u32) -> u32 {
    let mut hits = 0;
    for (w, &t) in tags.iter().enumerate() {
        hits |= u32::from(t == tag) << w;
    }
    hits
}

/// Bit `w` set when `tags[w] == tag`.
#[cfg(target_arch = "x86_64")]
#[inline]
fn match_mask(tags: &[u32; MAX_WAYS], tag: u32) -> u32 {
    #[target_feature(enable = "sse2")]
    fn sse2(tags: &[u32; MAX_WAYS], tag: u32) -> u32 {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi32, _mm_loadu_si128, _mm_movemask_epi8, _mm_packs_epi16,
            _mm_packs_epi32, _mm_set1_epi32,
        };
        let key = _mm_set1_epi32(tag as i32);
        let p = tags.as_ptr().cast::<__m128i>();
        // SAFETY: `tags` is 64 bytes, so the four unaligned 16-byte loads
        // at offsets 0, 16, 32 and 48 stay inside it.
        let [q0, q1, q2, q3] = unsafe {
            [
                _mm_loadu_si128(p),
                _mm_loadu_si128(p.add(1)),
                _mm_loadu_si128(p.add(2)),
                _mm_loadu_si128(p.add(3)),
            ]
        };
        let lo = _mm_packs_epi32(_mm_cmpeq_epi32(q0, key), _mm_cmpeq_epi32(q1, key));
        let hi = _mm_packs_epi32(_mm_cmpeq_epi32(q2, key), _mm_cmpeq_epi32(q3, key));
        _mm_movemask_epi8(_mm_packs_epi16(lo, hi)) as u32
    }
    // SAFETY: SSE2 is part of the x86_64 baseline: every x86_64 CPU has it.
    unsafe { sse2(tags, tag) }
}

/// Bit `w` set when `tags[w] == tag`.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn match_mask(tags: &[u32; MAX_WAYS], tag: u32) -> u32 {
    let mut hits = 0;
    for (w, &t) in tags.iter().enumerate() {
        hits |= u32::from(t == tag) << w;
    }
    hits
}

/// Recency position of `way` in `order` (which must list it).
#[inline]
fn position(order: u64, way: usize) -> usize {
    // Zero-nibble search; the lowest flagged nibble is the first exact match.
    let x = order ^ (way as u64).wrapping_mul(NIBBLE_ONES);
    let zero = x.wrapping_sub(NIBBLE_ONES) & !x & (NIBBLE_ONES << 3);
    (zero.trailing_zeros() / 4) as usize
}

impl PtCache {
    /// Empty cache of the configured geometry.
    ///
    /// # Panics
    /// On a geometry `Config::validate` rejects (more than [`MAX_WAYS`]
    /// ways or fewer than [`MIN_SETS`] sets, unless off): a configuration
    /// built in code without validating it.
    pub fn new(c: &PtCacheConfig) -> Self {
        let g = c.lines;
        let sets = g.sets().max(1);
        let ways = if g.entries == 0 { 0 } else { g.ways as usize };
        assert!(
            ways == 0 || (ways <= MAX_WAYS && sets >= MIN_SETS),
            "pt_cache.lines: {} lines in {ways} ways; the line cache needs at most \
             {MAX_WAYS} ways and at least {MIN_SETS} sets (Config::validate checks this)",
            g.entries
        );
        let initial = (0..ways as u64).fold(0, |o, w| o | (w << (4 * w)));
        let half = ways <= HALF;
        let lines = if half {
            (sets as usize).div_ceil(2)
        } else {
            sets as usize
        };
        PtCache {
            set_mask: u64::from(sets) - 1,
            set_bits: sets.trailing_zeros(),
            ways,
            order_mask: u64::MAX >> (4 * (MAX_WAYS - ways.max(1))),
            half,
            tags: vec![TagLine([EMPTY; MAX_WAYS]); lines],
            orders: vec![initial; sets as usize],
        }
    }

    /// The tags of `set`, a half-line set.
    ///
    /// # Safety
    /// `self.half` and `set < sets` (the `orders` length).
    #[inline]
    unsafe fn half_set(&mut self, set: usize) -> &mut [u32; HALF] {
        debug_assert!(self.half && set / 2 < self.tags.len());
        // SAFETY: `new` made `tags` `sets.div_ceil(2)` lines long when
        // `half`, so line `set / 2` exists for every `set < sets`; a line is
        // 16 u32 with no padding (`repr(C)`), so the 8 slots from `8 * (set
        // % 2)` stay inside it, and `[u32; 8]` needs only u32 alignment.
        unsafe {
            let line = self.tags.get_unchecked_mut(set / 2);
            &mut *line
                .0
                .as_mut_ptr()
                .add(HALF * (set % 2))
                .cast::<[u32; HALF]>()
        }
    }

    /// Access the line holding `hpa`; true on a hit. The line becomes the
    /// most recently used of its set (filled on a miss, evicting the least
    /// recently used).
    #[inline]
    pub fn access(&mut self, hpa: u64) -> bool {
        if self.ways == 0 {
            return false;
        }
        let line = hpa >> 6;
        let set = (line & self.set_mask) as usize;
        let tag = line >> self.set_bits;
        debug_assert!(tag < u64::from(EMPTY), "hPA {hpa:#x} beyond the tag range");
        let tag = tag as u32;
        debug_assert!(set < self.orders.len());
        // SAFETY: `set` is `line & (sets - 1)`, at most `sets - 1`, and
        // `new` made `orders` `sets` long and `tags` long enough for `sets`
        // sets (whether or not `sets` is a power of two); neither vector
        // changes length.
        let order = unsafe { *self.orders.get_unchecked(set) };
        let (ways, order_mask) = (self.ways, self.order_mask);
        if self.half {
            // SAFETY: as above (`half_set`'s conditions).
            let tags = unsafe { self.half_set(set) };
            let hit = Self::access_set(tags, order, tag, ways, order_mask, match_mask_half);
            // SAFETY: as above.
            unsafe { *self.orders.get_unchecked_mut(set) = hit.1 };
            hit.0
        } else {
            debug_assert!(set < self.tags.len());
            // SAFETY: as above: with whole-line sets `tags` is `sets` long.
            let tags = &mut unsafe { self.tags.get_unchecked_mut(set) }.0;
            let hit = Self::access_set(tags, order, tag, ways, order_mask, match_mask);
            // SAFETY: as above.
            unsafe { *self.orders.get_unchecked_mut(set) = hit.1 };
            hit.0
        }
    }

    /// Access `tag` in a set of `ways` ways whose tags are `tags` and
    /// whose recency order is `order`: (hit, the new order); on a miss the
    /// least recent way takes `tag`.
    #[inline(always)]
    fn access_set<const N: usize>(
        tags: &mut [u32; N],
        order: u64,
        tag: u32,
        ways: usize,
        order_mask: u64,
        match_mask: impl Fn(&[u32; N], u32) -> u32,
    ) -> (bool, u64) {
        // A way number is below `ways` <= N, a power of two: the masks below
        // only spare the bounds checks.
        if tags[(order as usize) & (N - 1)] == tag {
            return (true, order);
        }
        // All compares at once; unused ways never match.
        let hits = match_mask(tags, tag);
        if hits != 0 {
            let way = hits.trailing_zeros() as usize;
            // Move `way` from recency position p (1..ways) to the front.
            let p = position(order, way);
            let above = u64::MAX << (4 * p);
            let before = order & !above;
            let after = order & (above << 4);
            (true, after | (before << 4) | way as u64)
        } else {
            // The least recent way takes `tag`; the order's nibbles above
            // `ways` stay 0.
            let way = (order >> (4 * (ways - 1))) & 0xf;
            tags[(way as usize) & (N - 1)] = tag;
            (false, ((order << 4) | way) & order_mask)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Geometry;

    fn cache(lines: u32, ways: u32) -> PtCache {
        PtCache::new(&PtCacheConfig {
            lines: Geometry::new(lines, ways),
            ..PtCacheConfig::default()
        })
    }

    /// hPA of line `tag` of set `set` in a cache of 16 sets.
    fn line(set: u64, tag: u64) -> u64 {
        ((tag << 4) | set) << 6
    }

    #[test]
    fn lru_within_a_set() {
        let mut c = cache(64, 4); // 16 sets x 4 ways
        for t in 0..4 {
            assert!(!c.access(line(3, t)));
        }
        assert!(c.access(line(3, 0))); // recency: 0 3 2 1
        assert!(!c.access(line(3, 4))); // evicts 1
        assert!(!c.access(line(3, 1))); // evicts 2
        assert!(c.access(line(3, 0)));
        assert!(c.access(line(3, 3)));
        assert!(c.access(line(3, 4)));
        assert!(!c.access(line(3, 2))); // 2 was evicted
                                        // Other sets are untouched; the same line in another set misses.
        assert!(!c.access(line(4, 0)));
        // A second access to a line in the same 64 bytes hits.
        assert!(c.access(line(4, 0) + 8));
    }

    #[test]
    fn sixteen_ways_and_off() {
        let mut c = cache(256, 16);
        for t in 0..16 {
            assert!(!c.access(line(0, t)));
        }
        for t in 0..16 {
            assert!(c.access(line(0, t)));
        }
        assert!(!c.access(line(0, 16))); // evicts 0, the least recent
        assert!(!c.access(line(0, 0)));
        let mut off = cache(0, 1);
        assert!(!off.access(0));
        assert!(!off.access(0));
    }

    /// Same hits and misses as the general `SetAssoc` on a pseudo-random
    /// sequence that mixes hits at every recency position with misses.
    #[test]
    fn agrees_with_set_assoc() {
        use crate::mmu::cache::SetAssoc;
        // Also many sets, and a set count that is not a power of two (the
        // unchecked set accesses must stay inside the vectors either way).
        for (lines, ways) in [
            (64, 1),
            (64, 2),
            (96, 6),
            (128, 8),
            (192, 12),
            (256, 16),
            (2048, 4),
            (1536, 16),
            // Half-line sets: the default geometry, an odd set count (the
            // last line holds one set) and one not a power of two.
            (4096, 8),
            (136, 8),
            (96, 4),
        ] {
            let mut c = cache(lines, ways);
            let mut r: SetAssoc<()> = SetAssoc::new(Geometry::new(lines, ways));
            let mut x = 0x2545_f491_4f6c_dd1du64;
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let hpa = (x % (u64::from(lines) * 3)) << 6;
                let l = hpa >> 6;
                assert_eq!(
                    c.access(hpa),
                    r.access(l, l, ()),
                    "{lines}/{ways} at {hpa:#x}"
                );
            }
        }
    }
}
