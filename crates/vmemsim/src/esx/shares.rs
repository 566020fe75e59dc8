//! Share-based allocation with the idle memory tax [ESX 5.1, 5.2].
//!
//! Each VM has shares `S`, an allocation of `P` pages of which a fraction
//! `f` is active, and the host a tax rate `tau` in [0, 1). Its adjusted
//! shares-per-page ratio is `rho = S / (P * (f + k * (1 - f)))` with
//! `k = 1 / (1 - tau)`: an idle page costs `k` times an active one (4x at
//! the default tau = 0.75). Min-funding revocation takes memory from the
//! VM with the lowest `rho`, never below its min.

/// The cost of an idle page relative to an active one: `k = 1 / (1 - tau)`
/// [ESX 5.2]. `tau` is in [0, 1) (validated by the config).
pub fn idle_cost(tau: f64) -> f64 {
    1.0 / (1.0 - tau)
}

/// Adjusted shares-per-page ratio `rho = S / (P * (f + k * (1 - f)))`
/// [ESX 5.2], shares per page. `pages` = P (4 KiB pages), `active` = f in
/// [0, 1]. A VM holding no pages has infinite `rho` (never a victim).
pub fn rho(shares: f64, pages: u64, active: f64, tau: f64) -> f64 {
    if pages == 0 {
        return f64::INFINITY;
    }
    shares / (pages as f64 * (active + idle_cost(tau) * (1.0 - active)))
}

/// What the allocator knows of one VM, in 4 KiB pages.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Claim {
    /// Shares `S`.
    pub shares: f64,
    /// Pages allocated now (`P`).
    pub pages: u64,
    /// Estimated active fraction `f` of those pages, in [0, 1].
    pub active: f64,
    /// Guaranteed minimum, pages.
    pub min: u64,
    /// Maximum (what the guest sees), pages.
    pub max: u64,
}

impl Claim {
    /// Active pages `f * P` (held fixed while a target is searched).
    fn active_pages(&self) -> f64 {
        self.active * self.pages as f64
    }

    /// `rho` of this VM if it held `p` pages with the same active pages:
    /// the fraction becomes `min(1, f * P / p)`, so cutting idle pages
    /// raises the fraction and the tax stops once only active pages are left.
    pub fn rho_at(&self, p: u64, tau: f64) -> f64 {
        if p == 0 {
            return f64::INFINITY;
        }
        let f = (self.active_pages() / p as f64).min(1.0);
        rho(self.shares, p, f, tau)
    }
}

/// The VM to reclaim from now: the lowest `rho` (at its current
/// allocation) among VMs whose allocation is above their min and for which
/// `eligible` holds; ties go to the lower index. `None` when none qualifies.
pub fn victim(claims: &[Claim], tau: f64, eligible: impl Fn(usize) -> bool) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, c) in claims.iter().enumerate() {
        if c.pages <= c.min || !eligible(i) {
            continue;
        }
        let r = rho(c.shares, c.pages, c.active, tau);
        if best.map_or(true, |(_, b)| r < b) {
            best = Some((i, r));
        }
    }
    best.map(|(i, _)| i)
}

/// Target allocations, pages, one per claim, summing to at most `available`
/// (the pages the host can give its VMs with free memory at the high
/// threshold). Every VM starts at its max; while the sum exceeds
/// `available`, one page is taken from the VM whose `rho` at its target is
/// lowest (min-funding revocation [ESX 5.1]; ties: lower index), never
/// below its min. When the mins alone exceed `available`, every target is
/// its min. Cost: one scan of the VMs per page taken (15 VMs at most).
pub fn targets(claims: &[Claim], tau: f64, available: u64) -> Vec<u64> {
    let mut t: Vec<u64> = claims.iter().map(|c| c.max.max(c.min)).collect();
    let mut sum: u64 = t.iter().sum();
    while sum > available {
        let mut best: Option<(usize, f64)> = None;
        for (i, c) in claims.iter().enumerate() {
            if t[i] <= c.min {
                continue;
            }
            let r = c.rho_at(t[i], tau);
            if best.map_or(true, |(_, b)| r < b) {
                best = Some((i, r));
            }
        }
        let Some((i, _)) = best else { break };
        t[i] -= 1;
        sum -= 1;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(shares: f64, pages: u64, active: f64) -> Claim {
        Claim {
            shares,
            pages,
            active,
            min: 0,
            max: pages,
        }
    }

    #[test]
    fn idle_page_costs_four_times_an_active_one_at_the_default_tax() {
        assert_eq!(idle_cost(0.75), 4.0);
        assert_eq!(idle_cost(0.0), 1.0);
        // S = 1000, P = 100: all active -> 1000 / 100 = 10; all idle ->
        // 1000 / (100 * 4) = 2.5; half active -> 1000 / (100 * 2.5) = 4.
        assert_eq!(rho(1000.0, 100, 1.0, 0.75), 10.0);
        assert_eq!(rho(1000.0, 100, 0.0, 0.75), 2.5);
        assert_eq!(rho(1000.0, 100, 0.5, 0.75), 4.0);
        // tau = 0: plain shares per page whatever f.
        assert_eq!(rho(1000.0, 100, 0.0, 0.0), 10.0);
        assert_eq!(rho(5.0, 0, 0.3, 0.75), f64::INFINITY);
    }

    #[test]
    fn victim_is_the_lowest_rho_above_its_min() {
        // rho at tau 0.75: a = 2000/(200*1) = 10, b = 2000/(200*4) = 2.5,
        // c = 1000/(200*1.75) = 2.857 (f = 0.75: 0.75 + 4 * 0.25 = 1.75).
        let mut c = [
            claim(2000.0, 200, 1.0),
            claim(2000.0, 200, 0.0),
            claim(1000.0, 200, 0.75),
        ];
        assert_eq!(victim(&c, 0.75, |_| true), Some(1));
        assert_eq!(victim(&c, 0.75, |i| i != 1), Some(2));
        // At its min, b is no victim.
        c[1].min = 200;
        assert_eq!(victim(&c, 0.75, |_| true), Some(2));
        // tau = 0: rho = S / P: c (5) below a (10).
        c[1].min = 0;
        assert_eq!(victim(&c, 0.0, |_| true), Some(2));
        assert_eq!(victim(&c, 0.0, |_| false), None);
        // Equal rho: the lower index.
        assert_eq!(
            victim(&[claim(1.0, 9, 1.0), claim(1.0, 9, 1.0)], 0.0, |_| true),
            Some(0)
        );
    }

    #[test]
    fn no_tax_splits_equally_and_the_default_tax_shifts_to_the_active_vm() {
        // The paper's experiment [ESX 5.4] in pages of 1 MiB: two VMs of
        // max 256 with equal shares, 360 for both. One idle (f = 0), one
        // active (f = 1), each holding its max.
        let vms = [
            Claim {
                shares: 2560.0,
                pages: 256,
                active: 0.0,
                min: 0,
                max: 256,
            },
            Claim {
                shares: 2560.0,
                pages: 256,
                active: 1.0,
                min: 0,
                max: 256,
            },
        ];
        // tau 0: rho = S / P, equalized: 180 each.
        assert_eq!(targets(&vms, 0.0, 360), vec![180, 180]);
        // tau 0.75: the idle VM's rho at p pages is S / (4p) against the
        // active one's S / 256 at its max: the active VM keeps its max and
        // the idle one gets the rest, 360 - 256 = 104 (its rho 2560/416 =
        // 6.15 stays below 10: it is the only victim).
        assert_eq!(targets(&vms, 0.75, 360), vec![104, 256]);
        // Enough for both maxes: untouched.
        assert_eq!(targets(&vms, 0.75, 600), vec![256, 256]);
    }

    #[test]
    fn targets_respect_mins_and_tax_only_idle_pages() {
        // Half-active VM (128 of 256 active) against a fully active one.
        // At p >= 128 pages its rho is S / (128 + 4 (p - 128)); equal to
        // the active VM's S / q when q = 4p - 384. p + q = 360 ->
        // 5p = 744 -> p = 148.8. The greedy's last step is at (149, 212),
        // sum 361, where both rho are S / 212 (4 * 149 - 384 = 212): the
        // tie goes to the lower index, so the half-active VM ends at 148.
        let half = |active| Claim {
            shares: 2560.0,
            pages: 256,
            active,
            min: 0,
            max: 256,
        };
        let vms = [half(0.5), half(1.0)];
        let t = targets(&vms, 0.75, 360);
        assert_eq!(t.iter().sum::<u64>(), 360);
        assert_eq!(t, vec![148, 212]);
        // A min of 200 on the half-active VM holds it there.
        let mut m = vms;
        m[0].min = 200;
        assert_eq!(targets(&m, 0.75, 360), vec![200, 160]);
        // Mins above what is available: every VM at its min.
        m[1].min = 200;
        assert_eq!(targets(&m, 0.75, 360), vec![200, 200]);
    }
}
