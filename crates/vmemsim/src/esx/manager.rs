//! The ESX memory manager on a running host: it keeps each VM's sample
//! and idle estimate, recomputes target allocations, moves through the
//! reclamation states and decides, per VM, the balloon size and the host
//! swap-outs that bring it to its target [ESX 3, 4, 5, 6].
//!
//! The run loop calls [`Manager::tick`] between quanta with the host time;
//! the manager acts through the [`HostOps`] the loop implements (the
//! mechanics: invalidating a frame's mappings, swapping, ballooning), so the
//! policy can be tested on a fake host.
//!
//! Periods are the paper's times `[esx] time_scale`: sampling (30 s), the
//! balloon driver's poll (1 s) and the allocation period. When a tick comes
//! after more than one period (a long quantum), the period is handled once.

use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;

use super::config::{EsxConfig, Reclaim, SampleClock};
use super::idle::{IdleEstimate, Sample};
use super::shares::{self, Claim};
use super::states::{State, StateMachine, Transition};
use crate::addr::Gpfn;

/// What the manager reads of the host. Frame numbers are 4 KiB gPFNs of
/// VM `v` (index on the host).
pub trait HostView {
    /// Frames in the host pool.
    fn capacity(&self) -> u64;
    /// Free frames now.
    fn free_frames(&self) -> u64;
    /// Hypervisor table pages held now (EPT, shadow pages).
    fn table_frames(&self) -> u64;
    /// VMs on the host.
    fn vm_count(&self) -> usize;
    /// True for VMs the manager may sample, balloon and swap (not direct
    /// or native VMs: pinned memory, or no second translation).
    fn managed(&self, v: usize) -> bool;
    /// Guest frames backed now (ESX's "granted" memory), shared or not.
    fn backed(&self, v: usize) -> u64;
    /// Host frames the VM consumes now: the allocation `P` of its
    /// shares-per-page ratio, compared with its target. A frame shared by
    /// `k` guest frames counts `1/k` for each (ESX's consumed memory,
    /// rounded to a frame), so what sharing saved is memory reclaimed from
    /// the VM [ESX 4, 5]. Default: [`HostView::backed`] (no sharing).
    fn consumed(&self, v: usize) -> u64 {
        self.backed(v)
    }
    /// Backed frames that may be sampled or swapped (not guest page tables).
    fn candidates(&self, v: usize) -> Vec<u64>;
    /// True when the guest touched `gpfn` since [`HostOps::invalidate`]:
    /// the host mapped it again at a trap (even if it is unmapped again
    /// now), or read it back from swap.
    fn touched(&self, v: usize, gpfn: u64) -> bool;
    /// Pages in the VM's balloon now.
    fn balloon(&self, v: usize) -> u64;
    /// Guest memory accesses the VM made so far (for throughput).
    fn accesses(&self, v: usize) -> u64;
    /// Frames of the VM in host swap now.
    fn host_swapped(&self, v: usize) -> u64;
    /// Pages of the VM in its own (guest) swap now.
    fn guest_swapped(&self, v: usize) -> u64;
    /// The VM's own execution time so far, cycles (what it ran on a pCPU,
    /// swap-in waits included): its sampling periods count this ([ESX 5.3:
    /// "a configurable sampling period defined in units of VM execution
    /// time"], with `esx.sample_clock = "vm"`). `None` (the default):
    /// host time.
    fn vm_cycles(&self, _v: usize) -> Option<u64> {
        None
    }
}

/// What the manager does to the host.
pub trait HostOps: HostView {
    /// Drop every mapping of backed `gpfn` so the next access traps (the
    /// EPT entry, shadow entries through the reverse map); the frame stays.
    fn invalidate(&mut self, v: usize, gpfn: u64);
    /// Flush the VM's entries on every pCPU (INVEPT single-context).
    fn flush(&mut self, v: usize);
    /// VM `v`'s sampling period is over: stop watching the frames
    /// [`HostOps::invalidate`] invalidated for it.
    fn unwatch(&mut self, v: usize);
    /// Swap out up to `n` random frames of the VM (as ESX); returns how many.
    fn swap_out(&mut self, v: usize, n: u64) -> u64;
    /// The balloon driver's target, pages (applied when the VM runs next).
    fn set_balloon_target(&mut self, v: usize, pages: u64);
    /// Block (or unblock) the VM: a blocked VM does not run.
    fn set_blocked(&mut self, v: usize, blocked: bool);
}

/// The manager's state of one VM.
#[derive(Clone, Debug)]
struct VmState {
    est: IdleEstimate,
    sample: Sample,
    target: u64,
    blocked: bool,
    last_accesses: u64,
}

impl VmState {
    /// Count the sampled frames VM `v` touched so far this period
    /// ([`HostView::touched`]), each once.
    fn note_touches<H: HostView + ?Sized>(&mut self, v: usize, host: &H) {
        for i in 0..self.sample.frames().len() {
            let g = Gpfn(self.sample.frames()[i]);
            if self.sample.is_pending(g) && host.touched(v, g.0) {
                self.sample.touch(g);
            }
        }
    }
}

/// One VM at one point of the time series.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VmPoint {
    /// Frames backed (allocation, ESX's "granted"), 4 KiB.
    pub alloc: u64,
    /// Host frames consumed ([`HostView::consumed`]: shared frames count
    /// `1/k` per sharer), 4 KiB; `alloc` without sharing.
    pub consumed: u64,
    /// Target allocation, frames.
    pub target: u64,
    /// Estimated active fraction.
    pub active: f64,
    /// Balloon, pages.
    pub balloon: u64,
    /// Pages in the guest's own swap.
    pub guest_swapped: u64,
    /// Frames in host swap.
    pub host_swapped: u64,
    /// Accesses per simulated second since the previous point.
    pub throughput: f64,
    /// Blocked (low state, above target).
    pub blocked: bool,
}

/// One point of the time series (taken at each balloon poll).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    /// Host time, seconds.
    pub seconds: f64,
    /// Free host frames.
    pub free_frames: u64,
    /// Reclamation state.
    pub state: State,
    /// Per VM, in `[[vm]]` order.
    pub vms: Vec<VmPoint>,
}

/// Per-VM counters of the manager.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VmCounters {
    /// Sampling periods ended.
    pub sample_periods: u64,
    /// Frames invalidated for sampling.
    pub sampled_frames: u64,
    /// Sampled frames found touched.
    pub touched_frames: u64,
    /// Frames swapped out to reach the target (states or swap-only).
    pub target_swap_outs: u64,
    /// Polls at which the VM was blocked.
    pub blocked_polls: u64,
}

/// What the manager reports at the end of a run.
#[derive(Clone, Debug, Serialize)]
pub struct EsxReport {
    /// Idle memory tax rate.
    pub idle_tax: f64,
    /// Reclamation mechanism.
    pub reclaim: Reclaim,
    /// Seconds in each state (high, soft, hard, low).
    pub seconds_in: [f64; 4],
    /// Every state transition.
    pub transitions: Vec<Transition>,
    /// Per VM: min and max, frames, and shares.
    pub min: Vec<u64>,
    /// Max (what the guest sees), frames.
    pub max: Vec<u64>,
    /// Shares.
    pub shares: Vec<f64>,
    /// Per-VM counters.
    pub counters: Vec<VmCounters>,
    /// The time series.
    pub series: Vec<Point>,
}

/// The memory manager of one host.
#[derive(Clone, Debug)]
pub struct Manager {
    cfg: EsxConfig,
    sm: StateMachine,
    vms: Vec<VmState>,
    counters: Vec<VmCounters>,
    /// Host cycles per second (`[cpu] ghz` * 1e9).
    hz: f64,
    /// Periods in host cycles: sampling, allocation, balloon poll.
    periods: [u64; 3],
    /// Next allocation and poll, host cycles (`next[0]` unused).
    next: [u64; 3],
    /// Per VM: end of its sampling period, in its own execution time.
    next_sample: Vec<u64>,
    last_point: f64,
    rng: Xoshiro256PlusPlus,
    series: Vec<Point>,
}

impl Manager {
    /// The manager of a host with `cfg`'s VMs whose clock runs at `ghz`;
    /// `seed` drives sampling.
    pub fn new(cfg: &EsxConfig, seed: u64, ghz: f64) -> Self {
        let s = &cfg.section;
        let hz = ghz * 1e9;
        let cycles = |paper_s: f64| ((paper_s * s.time_scale * hz).round() as u64).max(1);
        Manager {
            hz,
            periods: [
                cycles(s.sample_period_s),
                cycles(s.alloc_period_s),
                cycles(s.balloon_poll_s),
            ],
            next: [0; 3],
            next_sample: vec![0; cfg.vms.len()],
            sm: StateMachine::new(s.thresholds()),
            vms: cfg
                .vms
                .iter()
                .map(|a| VmState {
                    est: IdleEstimate::new(s.slow_gain, s.fast_gain),
                    sample: Sample::default(),
                    target: a.max,
                    blocked: false,
                    last_accesses: 0,
                })
                .collect(),
            counters: vec![VmCounters::default(); cfg.vms.len()],
            last_point: 0.0,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5e5_0000),
            series: Vec::new(),
            cfg: cfg.clone(),
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.sm.state()
    }

    /// VM `v`'s target allocation, frames.
    pub fn target(&self, v: usize) -> u64 {
        self.vms[v].target
    }

    /// VM `v`'s estimated active fraction now.
    pub fn active(&self, v: usize) -> f64 {
        let s = &self.vms[v];
        s.est.estimate(s.sample.touched(), s.sample.sampled())
    }

    /// The VMs as the allocator sees them now.
    pub fn claims<H: HostView + ?Sized>(&self, host: &H) -> Vec<Claim> {
        self.cfg
            .vms
            .iter()
            .enumerate()
            .map(|(v, a)| Claim {
                shares: a.shares,
                pages: host.consumed(v),
                active: self.active(v),
                min: a.min,
                max: a.max,
            })
            .collect()
    }

    /// The VM to swap from under immediate pressure: the lowest `rho`
    /// among managed VMs above their min (for which `eligible` holds).
    pub fn victim<H: HostView + ?Sized>(
        &self,
        host: &H,
        eligible: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let c = self.claims(host);
        shares::victim(&c, self.cfg.section.idle_tax, |v| {
            host.managed(v) && eligible(v)
        })
    }

    /// Frames the VMs may hold together: what keeps free memory at the
    /// high threshold, less the hypervisor's tables.
    fn available<H: HostView + ?Sized>(&self, host: &H) -> u64 {
        let cap = host.capacity() as f64;
        let keep = (cap * self.cfg.section.high_pct / 100.0).ceil() as u64;
        host.capacity().saturating_sub(keep + host.table_frames())
    }

    /// Host time is `now` cycles: end and start sampling periods,
    /// recompute targets, poll (state, balloons, swapping, blocking) as due.
    pub fn tick(&mut self, now: u64, host: &mut dyn HostOps) {
        self.sample(now, host);
        if now >= self.next[1] {
            self.allocate(host);
            self.next[1] = now + self.periods[1];
        }
        if now >= self.next[2] {
            self.poll(now as f64 / self.hz, host);
            self.next[2] = now + self.periods[2];
        }
    }

    /// For every managed VM whose sampling period is over (in its own
    /// execution time; host time `now` when the host does not say), end
    /// the period and start the next.
    fn sample(&mut self, now: u64, host: &mut dyn HostOps) {
        let n = self.cfg.section.sample_pages;
        for v in 0..self.vms.len() {
            if !host.managed(v) {
                continue;
            }
            let t = match self.cfg.section.sample_clock {
                SampleClock::Vm => host.vm_cycles(v).unwrap_or(now),
                SampleClock::Host => now,
            };
            if t < self.next_sample[v] {
                continue;
            }
            self.next_sample[v] = t + self.periods[0];
            let s = &mut self.vms[v];
            if s.sample.sampled() > 0 {
                s.note_touches(v, host);
                host.unwatch(v);
                s.est.end_period(s.sample.touched(), s.sample.sampled());
                self.counters[v].sample_periods += 1;
                self.counters[v].touched_frames += u64::from(s.sample.touched());
            }
            let cand = host.candidates(v);
            let picked = s.sample.start(&cand, n, &mut self.rng).to_vec();
            for &g in &picked {
                host.invalidate(v, g);
            }
            if !picked.is_empty() {
                host.flush(v);
            }
            self.counters[v].sampled_frames += picked.len() as u64;
        }
    }

    /// Count what each managed VM touched so far this period, so the
    /// estimate's third average ("the fast average including the current
    /// period", [ESX 5.3]) sees it before the period ends.
    fn note_touches_so_far<H: HostView + ?Sized>(&mut self, host: &H) {
        for (v, s) in self.vms.iter_mut().enumerate() {
            if host.managed(v) {
                s.note_touches(v, host);
            }
        }
    }

    /// Recompute every VM's target (min-funding revocation with the idle tax).
    fn allocate(&mut self, host: &mut dyn HostOps) {
        self.note_touches_so_far(&*host);
        let claims = self.claims(host);
        let t = shares::targets(&claims, self.cfg.section.idle_tax, self.available(host));
        for (s, t) in self.vms.iter_mut().zip(t) {
            s.target = t;
        }
    }

    /// The balloon driver's poll and the state's reclamation.
    fn poll(&mut self, now: f64, host: &mut dyn HostOps) {
        let free = host.free_frames() as f64 / host.capacity().max(1) as f64;
        let state = self.sm.update(free, now);
        let sec = &self.cfg.section;
        let can_balloon = sec.reclaim != Reclaim::Swap;
        for v in 0..self.vms.len() {
            if !host.managed(v) {
                continue;
            }
            let a = self.cfg.vms[v];
            let cap = (a.max as f64 * sec.balloon_max_pct / 100.0) as u64;
            // Consumed, not granted: frames sharing saved are not excess.
            let p = host.consumed(v);
            let target = self.vms[v].target;
            let b = host.balloon(v);
            let excess = p.saturating_sub(target);
            // Ballooning: inflate by the excess in soft (and below, when it
            // is the only mechanism); deflate whenever the VM is below target.
            let inflate = can_balloon
                && excess > 0
                && match sec.reclaim {
                    Reclaim::States => state == State::Soft,
                    Reclaim::Balloon => state >= State::Soft,
                    Reclaim::Swap => false,
                };
            let want = if inflate {
                (b + excess).min(cap)
            } else if p < target {
                b - b.min(target - p)
            } else {
                b
            };
            if can_balloon && want != b {
                host.set_balloon_target(v, want);
            }
            // Swapping: what the balloon cannot take in soft, everything in
            // hard and low; swap-only hosts swap from soft down.
            let swap = match (sec.reclaim, state) {
                (_, State::High) | (Reclaim::Balloon, _) => 0,
                (Reclaim::States, State::Soft) => excess.saturating_sub(want.saturating_sub(b)),
                _ => excess,
            };
            if swap > 0 {
                self.counters[v].target_swap_outs += host.swap_out(v, swap);
            }
            let blocked = state == State::Low && host.consumed(v) > target;
            if blocked != self.vms[v].blocked {
                self.vms[v].blocked = blocked;
                host.set_blocked(v, blocked);
            }
            self.counters[v].blocked_polls += u64::from(blocked);
        }
        self.record(now, host);
    }

    fn record<H: HostView + ?Sized>(&mut self, now: f64, host: &H) {
        self.note_touches_so_far(host);
        let dt = now - self.last_point;
        let vms = (0..self.vms.len())
            .map(|v| {
                let acc = host.accesses(v);
                let s = &mut self.vms[v];
                let throughput = if dt > 0.0 {
                    (acc - s.last_accesses) as f64 / dt
                } else {
                    0.0
                };
                s.last_accesses = acc;
                VmPoint {
                    alloc: host.backed(v),
                    consumed: host.consumed(v),
                    target: s.target,
                    active: s.est.estimate(s.sample.touched(), s.sample.sampled()),
                    balloon: host.balloon(v),
                    guest_swapped: host.guest_swapped(v),
                    host_swapped: host.host_swapped(v),
                    throughput,
                    blocked: s.blocked,
                }
            })
            .collect();
        self.last_point = now;
        self.series.push(Point {
            seconds: now,
            free_frames: host.free_frames(),
            state: self.sm.state(),
            vms,
        });
    }

    /// Close the run at `now` cycles: account the last state's time, report.
    pub fn report<H: HostView + ?Sized>(&mut self, now: u64, host: &H) -> EsxReport {
        let now = now as f64 / self.hz;
        self.sm.account(now);
        self.record(now, host);
        EsxReport {
            idle_tax: self.cfg.section.idle_tax,
            reclaim: self.cfg.section.reclaim,
            seconds_in: self.sm.time_in(),
            transitions: self.sm.transitions().to_vec(),
            min: self.cfg.vms.iter().map(|a| a.min).collect(),
            max: self.cfg.vms.iter().map(|a| a.max).collect(),
            shares: self.cfg.vms.iter().map(|a| a.shares).collect(),
            counters: self.counters.clone(),
            series: self.series.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esx::config::{EsxSection, VmAlloc};

    /// A host of numbers: VM frames are 0..backed, nothing is a table.
    #[derive(Default)]
    struct Fake {
        capacity: u64,
        backed: Vec<u64>,
        balloon: Vec<u64>,
        balloon_target: Vec<Option<u64>>,
        /// VM v touches what is invalidated when `touches[v]`.
        touches: Vec<bool>,
        invalidated: Vec<Vec<u64>>,
        flushes: Vec<u32>,
        swapped: Vec<u64>,
        blocked: Vec<bool>,
        /// Swap slots left (unlimited when `None`).
        swap_left: Option<u64>,
        /// Consumed frames (sharing), when not the backed ones.
        consumed: Option<Vec<u64>>,
    }

    impl Fake {
        fn new(capacity: u64, backed: &[u64], touches: &[bool]) -> Self {
            let n = backed.len();
            Fake {
                capacity,
                backed: backed.to_vec(),
                balloon: vec![0; n],
                balloon_target: vec![None; n],
                touches: touches.to_vec(),
                invalidated: vec![Vec::new(); n],
                flushes: vec![0; n],
                swapped: vec![0; n],
                blocked: vec![false; n],
                swap_left: None,
                consumed: None,
            }
        }
    }

    impl HostView for Fake {
        fn capacity(&self) -> u64 {
            self.capacity
        }
        fn free_frames(&self) -> u64 {
            let used = (0..self.backed.len()).map(|v| self.consumed(v));
            self.capacity - used.sum::<u64>()
        }
        fn consumed(&self, v: usize) -> u64 {
            self.consumed.as_ref().map_or(self.backed[v], |c| c[v])
        }
        fn table_frames(&self) -> u64 {
            0
        }
        fn vm_count(&self) -> usize {
            self.backed.len()
        }
        fn managed(&self, _v: usize) -> bool {
            true
        }
        fn backed(&self, v: usize) -> u64 {
            self.backed[v]
        }
        fn candidates(&self, v: usize) -> Vec<u64> {
            (0..self.backed[v]).collect()
        }
        fn touched(&self, v: usize, _gpfn: u64) -> bool {
            self.touches[v]
        }
        fn balloon(&self, v: usize) -> u64 {
            self.balloon[v]
        }
        fn accesses(&self, _v: usize) -> u64 {
            0
        }
        fn host_swapped(&self, v: usize) -> u64 {
            self.swapped[v]
        }
        fn guest_swapped(&self, _v: usize) -> u64 {
            0
        }
    }

    impl HostOps for Fake {
        fn invalidate(&mut self, v: usize, gpfn: u64) {
            self.invalidated[v].push(gpfn);
        }
        fn flush(&mut self, v: usize) {
            self.flushes[v] += 1;
        }
        fn unwatch(&mut self, _v: usize) {}
        fn swap_out(&mut self, v: usize, n: u64) -> u64 {
            let n = self.swap_left.map_or(n, |l| l.min(n));
            if let Some(l) = &mut self.swap_left {
                *l -= n;
            }
            self.backed[v] -= n;
            self.swapped[v] += n;
            n
        }
        fn set_balloon_target(&mut self, v: usize, pages: u64) {
            self.balloon_target[v] = Some(pages);
        }
        fn set_blocked(&mut self, v: usize, blocked: bool) {
            self.blocked[v] = blocked;
        }
    }

    fn cfg(tau: f64, reclaim: Reclaim) -> EsxConfig {
        let vm = VmAlloc {
            min: 0,
            max: 1024,
            shares: 40.0,
            overhead: 0,
        };
        EsxConfig {
            section: EsxSection {
                idle_tax: tau,
                sample_pages: 10,
                reclaim,
                ..EsxSection::default()
            },
            vms: vec![vm, vm],
        }
    }

    #[test]
    fn sampling_estimates_and_targets_follow_the_touches() {
        // 2000 frames, high threshold 6% keeps 120: 1880 for the VMs.
        let mut host = Fake::new(2000, &[950, 950], &[true, false]);
        let mut m = Manager::new(&cfg(0.75, Reclaim::States), 1, 1.0);
        m.tick(0, &mut host);
        // 10 distinct frames invalidated per VM, one flush each.
        assert_eq!(host.invalidated[0].len(), 10);
        assert_eq!(host.flushes, vec![1, 1]);
        // Not measured yet (f = 1 for both): equal targets, 940 each.
        assert_eq!((m.target(0), m.target(1)), (940, 940));
        // Free 100 of 2000 = 5%: high, nothing reclaimed.
        assert_eq!(m.state(), State::High);
        assert_eq!(host.balloon_target, vec![None, None]);
        // (At 1 GHz a paper second is 1e-4 s = 100000 cycles.) The
        // sampling period (30 s * 1e-4 = 3 ms) ends: VM 0 touched all
        // 10, VM 1 none. VM 1: slow 0.9, fast 0.5 -> estimate 0.9.
        m.tick(3_000_000, &mut host);
        assert_eq!(m.active(0), 1.0);
        assert!((m.active(1) - 0.9).abs() < 1e-12);
        assert_eq!(host.invalidated[0].len(), 20, "next period sampled");
        // Targets: min-funding revocation on P = 950, f = 1 and 0.9.
        let want = shares::targets(
            &[
                Claim {
                    shares: 40.0,
                    pages: 950,
                    active: 1.0,
                    min: 0,
                    max: 1024,
                },
                Claim {
                    shares: 40.0,
                    pages: 950,
                    active: 0.9,
                    min: 0,
                    max: 1024,
                },
            ],
            0.75,
            1880,
        );
        assert_eq!(vec![m.target(0), m.target(1)], want);
        assert!(want[1] < want[0] && want[0] + want[1] == 1880);
        let c = &m.report(3_000_000, &host).counters;
        assert_eq!(
            (
                c[0].sample_periods,
                c[0].sampled_frames,
                c[0].touched_frames
            ),
            (1, 20, 10)
        );
        assert_eq!(c[1].touched_frames, 0);
    }

    #[test]
    fn soft_balloons_hard_swaps_low_blocks() {
        // Equal VMs, tau 0, all active: targets 940 each (1880 / 2).
        let mut host = Fake::new(2000, &[950, 970], &[true, true]);
        let mut m = Manager::new(&cfg(0.0, Reclaim::States), 1, 1.0);
        // Free 80 = 4%: still high (soft is below 4%).
        m.tick(0, &mut host);
        assert_eq!(
            (m.state(), m.target(0), m.target(1)),
            (State::High, 940, 940)
        );
        // 79 free (3.95%): soft. The balloons inflate by the excess:
        // VM 0 951 - 940 = 11, VM 1 970 - 940 = 30; nothing swapped.
        host.backed[0] = 951;
        m.tick(100_000, &mut host);
        assert_eq!(m.state(), State::Soft);
        assert_eq!(host.balloon_target, vec![Some(11), Some(30)]);
        assert_eq!(host.swapped, vec![0, 0]);
        // 59 free (2.95%): soft. The balloons took unbacked frames (P did
        // not drop): VM 0 inflates by its excess again, 11 + 11 = 22. VM 1
        // is at the cap (65% of 1024 = 665): its excess, 990 - 940 = 50,
        // is swapped even in soft.
        host.balloon = vec![11, 665];
        host.balloon_target = vec![None, None];
        host.backed = vec![951, 990];
        m.tick(200_000, &mut host);
        assert_eq!(m.state(), State::Soft);
        assert_eq!(host.balloon_target, vec![Some(22), None]);
        assert_eq!((host.swapped.clone(), host.backed[1]), (vec![0, 50], 940));
        // 29 free (1.45%): hard. Every excess is swapped (81 and 10), no
        // balloon changes.
        host.balloon_target = vec![None, None];
        host.backed = vec![1021, 950];
        m.tick(300_000, &mut host);
        assert_eq!(m.state(), State::Hard);
        assert_eq!(host.swapped, vec![81, 60]);
        assert_eq!(host.balloon_target, vec![None, None]);
        // 16 free (0.8%): low. Swap can take only 50 frames: VM 0 stays
        // above its target (1024 - 50 = 974 > 940), VM 1 too (960): both blocked.
        host.backed = vec![1024, 960];
        host.swap_left = Some(50);
        m.tick(400_000, &mut host);
        assert_eq!(m.state(), State::Low);
        assert_eq!(
            (host.backed.clone(), host.blocked.clone()),
            (vec![974, 960], vec![true, true])
        );
        // 200 free (10%): one step up, to hard; unblocked; below target,
        // the balloons deflate by the shortfall (940 - 900 = 40): VM 0's 11
        // to 0, VM 1's 665 to 625.
        host.backed = vec![900, 900];
        m.tick(500_000, &mut host);
        assert_eq!(m.state(), State::Hard);
        assert_eq!(host.blocked, vec![false, false]);
        assert_eq!(host.balloon_target, vec![Some(0), Some(625)]);
        let r = m.report(500_000, &host);
        let tr: Vec<_> = r.transitions.iter().map(|t| (t.from, t.to)).collect();
        use State::*;
        assert_eq!(
            tr,
            vec![(High, Soft), (Soft, Hard), (Hard, Low), (Low, Hard)]
        );
        assert_eq!(r.counters[0].blocked_polls, 1);
        assert_eq!(r.series.len(), 7, "a point per poll and one at the end");
    }

    /// Frames saved by sharing are reclaimed memory: the excess over the
    /// target, the shares-per-page ratio and the blocking test count
    /// consumed frames, not granted ones. Two equal VMs (tau 0, all
    /// active): targets 940 each, as in `soft_balloons_hard_swaps_low_blocks`
    /// (1880 / 2; at tau 0 equal shares give equal targets whatever P).
    /// VM 1 is granted 1010 guest frames but, sharing, consumes 970: free =
    /// 2000 - 951 - 970 = 79 (3.95%): soft. Balloons inflate by the
    /// excess: VM 0 951 - 940 = 11; VM 1 970 - 940 = 30 (70 by granted frames).
    #[test]
    fn sharing_savings_are_not_excess() {
        let mut host = Fake::new(2000, &[951, 1010], &[true, true]);
        host.consumed = Some(vec![951, 970]);
        let mut m = Manager::new(&cfg(0.0, Reclaim::States), 1, 1.0);
        m.tick(0, &mut host);
        assert_eq!(m.state(), State::Soft);
        assert_eq!((m.target(0), m.target(1)), (940, 940));
        assert_eq!(host.balloon_target, vec![Some(11), Some(30)]);
        // The victim: lowest rho = S / P at tau 0. P = consumed: 40 / 970
        // below 40 / 951, VM 1; with VM 0 at 980 consumed, VM 0 (granted
        // frames, 951 vs 1010, would still say VM 1).
        assert_eq!(m.victim(&host, |_| true), Some(1));
        host.consumed = Some(vec![980, 970]);
        assert_eq!(m.victim(&host, |_| true), Some(0));
        host.consumed = None;
        assert_eq!(m.victim(&host, |_| true), Some(1));
        // Low (free 2000 - 940 - 1045 = 15, 0.75%), no swap left: only
        // the VM consuming more than its target (1045 > 940) is blocked;
        // VM 0 is granted 1000 (> 940) but consumes 940.
        let mut low = Fake::new(2000, &[1000, 1000], &[true, true]);
        low.consumed = Some(vec![940, 1045]);
        low.swap_left = Some(0);
        let mut m = Manager::new(&cfg(0.0, Reclaim::States), 1, 1.0);
        m.tick(0, &mut low);
        assert_eq!(m.state(), State::Low);
        assert_eq!(low.blocked, vec![false, true]);
        let r = m.report(0, &low);
        let p = &r.series.last().unwrap().vms;
        assert_eq!((p[0].alloc, p[0].consumed), (1000, 940));
    }

    #[test]
    fn swap_only_and_balloon_only_hosts() {
        // Soft (79 free): swap-only swaps the excess; balloon-only inflates.
        for (reclaim, balloon, swapped) in [
            (Reclaim::Swap, vec![None, None], vec![11, 30]),
            (Reclaim::Balloon, vec![Some(11), Some(30)], vec![0, 0]),
        ] {
            let mut host = Fake::new(2000, &[951, 970], &[true, true]);
            let mut m = Manager::new(&cfg(0.0, reclaim), 1, 1.0);
            m.tick(0, &mut host);
            assert_eq!(m.state(), State::Soft);
            assert_eq!(host.balloon_target, balloon, "{reclaim:?}");
            assert_eq!(host.swapped, swapped, "{reclaim:?}");
        }
    }
}
