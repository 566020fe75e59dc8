//! Idle memory estimation by statistical sampling [ESX 5.3].
//!
//! Each sampling period the host picks `n` of a VM's backed guest frames
//! uniformly at random and invalidates their mappings (the EPT entry, or
//! the shadow entries through the reverse map, and the TLBs). The next
//! guest access to a sampled frame is intercepted and counted once as
//! touched; at the end of the period `f = t / n` estimates the VM's active
//! fraction. The estimates are smoothed as ESX does: the estimate used is
//! the max of a slow EWMA, a fast EWMA and the fast EWMA with the current
//! period's count so far folded in, so it rises quickly when a VM becomes
//! active and falls slowly when it goes idle.
//!
//! The paper names the three averages but not their gains (it cites
//! Kim and Noble's stability/agility filters, reference 11 of the paper); the
//! defaults (`[esx] slow_gain = 0.1`, `fast_gain = 0.5`) are UNVERIFIED.

use rand::Rng;

use crate::addr::Gpfn;

/// The smoothed active-fraction estimate of one VM.
#[derive(Clone, Debug, PartialEq)]
pub struct IdleEstimate {
    /// Weight of a new period in the slow average, in (0, 1].
    pub slow_gain: f64,
    /// Weight of a new period in the fast average, in (0, 1].
    pub fast_gain: f64,
    /// Slow EWMA of f.
    pub slow: f64,
    /// Fast EWMA of f.
    pub fast: f64,
    /// Sampling periods completed.
    pub periods: u64,
}

impl IdleEstimate {
    /// A VM not yet measured counts as fully active (f = 1) so the tax
    /// does not take its memory before the first sample (UNVERIFIED: the
    /// paper does not say how a new VM starts).
    pub fn new(slow_gain: f64, fast_gain: f64) -> Self {
        IdleEstimate {
            slow_gain,
            fast_gain,
            slow: 1.0,
            fast: 1.0,
            periods: 0,
        }
    }

    /// A period ended with `touched` of `sampled` frames touched.
    pub fn end_period(&mut self, touched: u32, sampled: u32) {
        let f = fraction(touched, sampled);
        self.slow += self.slow_gain * (f - self.slow);
        self.fast += self.fast_gain * (f - self.fast);
        self.periods += 1;
    }

    /// The estimate used by the allocator, in [0, 1]: the max of the slow
    /// EWMA, the fast EWMA and the fast EWMA updated with the current
    /// period's `touched` of `sampled` so far (a partial count: it can only
    /// raise the estimate, which is what makes it rise quickly).
    pub fn estimate(&self, touched: u32, sampled: u32) -> f64 {
        let current = self.fast + self.fast_gain * (fraction(touched, sampled) - self.fast);
        let with_current = if sampled == 0 { self.fast } else { current };
        self.slow.max(self.fast).max(with_current)
    }
}

fn fraction(touched: u32, sampled: u32) -> f64 {
    if sampled == 0 {
        0.0
    } else {
        f64::from(touched) / f64::from(sampled)
    }
}

/// The frames sampled in the current period of one VM and which of them
/// were touched. Lookups are by binary search: they happen on the
/// intercepted access (a VM exit or hidden fault), not on every access.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Sampled gPFNs, sorted, distinct.
    frames: Vec<u64>,
    touched: Vec<bool>,
    count: u32,
}

impl Sample {
    /// Start a period: pick `min(n, backed.len())` distinct frames of
    /// `backed` uniformly at random (partial Fisher-Yates on a copy of the
    /// indices; deterministic for a given `rng` state). Returns them
    /// sorted; the caller invalidates their mappings.
    pub fn start(&mut self, backed: &[u64], n: u32, rng: &mut impl Rng) -> &[u64] {
        self.frames.clear();
        let n = (n as usize).min(backed.len());
        let mut idx: Vec<usize> = (0..backed.len()).collect();
        for i in 0..n {
            let j = rng.gen_range(i..idx.len());
            idx.swap(i, j);
            self.frames.push(backed[idx[i]]);
        }
        self.frames.sort_unstable();
        self.touched.clear();
        self.touched.resize(n, false);
        self.count = 0;
        &self.frames
    }

    /// Frames sampled this period.
    pub fn sampled(&self) -> u32 {
        self.frames.len() as u32
    }

    /// Sampled frames touched so far this period.
    pub fn touched(&self) -> u32 {
        self.count
    }

    /// True when `gpfn` is sampled this period and not touched yet.
    pub fn is_pending(&self, gpfn: Gpfn) -> bool {
        self.frames
            .binary_search(&gpfn.0)
            .is_ok_and(|i| !self.touched[i])
    }

    /// The guest touched `gpfn`: counted once if it is sampled. Returns
    /// true when this was the first touch of a sampled frame.
    pub fn touch(&mut self, gpfn: Gpfn) -> bool {
        match self.frames.binary_search(&gpfn.0) {
            Ok(i) if !self.touched[i] => {
                self.touched[i] = true;
                self.count += 1;
                true
            }
            _ => false,
        }
    }

    /// The sampled frames, sorted.
    pub fn frames(&self) -> &[u64] {
        &self.frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    #[test]
    fn ewma_on_a_given_sample_sequence() {
        // Gains 0.1 (slow) and 0.5 (fast), both starting at 1.
        let mut e = IdleEstimate::new(0.1, 0.5);
        // Period 1: 0 of 100 touched. slow = 1 + 0.1 (0 - 1) = 0.9,
        // fast = 1 + 0.5 (0 - 1) = 0.5.
        e.end_period(0, 100);
        assert_eq!((e.slow, e.fast), (0.9, 0.5));
        assert_eq!(e.estimate(0, 100), 0.9, "the slow average holds it up");
        // Period 2: 0 again. slow = 0.81, fast = 0.25.
        e.end_period(0, 100);
        assert!((e.slow - 0.81).abs() < 1e-12 && e.fast == 0.25);
        // Mid period 3, 100 of 100 touched so far: fast with the current
        // period = 0.25 + 0.5 (1 - 0.25) = 0.625 < slow 0.81.
        assert!((e.estimate(100, 100) - 0.81).abs() < 1e-12);
        // Ten idle periods: slow = 0.9^12 = 0.2824, fast = 0.5^12.
        for _ in 0..10 {
            e.end_period(0, 100);
        }
        assert!((e.slow - 0.9f64.powi(12)).abs() < 1e-12);
        assert_eq!(e.fast, 0.5f64.powi(12));
        assert_eq!(e.periods, 12);
        // The VM becomes active: 60 of 100 touched in the current period
        // already give fast' = f + 0.5 (0.6 - f) = 0.3001..., above slow
        // 0.2824: the estimate rises before the period ends.
        let fast = 0.5f64.powi(12);
        let want = fast + 0.5 * (0.6 - fast);
        assert_eq!(e.estimate(60, 100), want);
        assert!(want > e.slow);
        // No sample (a VM with nothing backed): the averages alone.
        assert_eq!(e.estimate(0, 0), e.slow);
    }

    #[test]
    fn sample_is_distinct_uniform_and_counts_each_frame_once() {
        let backed: Vec<u64> = (1000..1010).collect();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let mut s = Sample::default();
        let picked = s.start(&backed, 4, &mut rng).to_vec();
        assert_eq!(picked.len(), 4);
        assert!(picked.windows(2).all(|w| w[0] < w[1]), "sorted, distinct");
        assert!(picked.iter().all(|g| backed.contains(g)));
        let g = Gpfn(picked[2]);
        assert!(s.is_pending(g));
        assert!(s.touch(g));
        assert!(!s.touch(g), "a second touch is not counted");
        assert!(!s.is_pending(g));
        let other = (1000..1010).find(|x| !picked.contains(x)).unwrap();
        assert!(!s.touch(Gpfn(other)));
        assert_eq!((s.touched(), s.sampled()), (1, 4));
        // More samples than frames: every frame once.
        assert_eq!(s.start(&backed, 100, &mut rng), &backed[..]);
        assert_eq!(s.touched(), 0);
        // Uniform: over many periods each of 10 frames is picked about
        // 4/10 of the time (2000 periods: 800 each, 3 sigma = 66).
        let mut hits = [0u32; 10];
        for _ in 0..2000 {
            for &g in s.start(&backed, 4, &mut rng) {
                hits[(g - 1000) as usize] += 1;
            }
        }
        assert!(hits.iter().all(|&h| (734..=866).contains(&h)), "{hits:?}");
    }
}
