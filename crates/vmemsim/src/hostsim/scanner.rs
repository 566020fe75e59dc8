//! The host's page-sharing scanner (Waldspurger, OSDI 2002, section 4;
//! Linux KSM is the same idea): it visits guest frames in a seeded random
//! order at a limited rate, hashes each frame's content into one global
//! table and, on a match, verifies the full content and maps both guest
//! frames to one host frame, read-only, freeing the other.
//!
//! - **Order and rate.** A *cycle* is one pass over every frame backed at
//!   its start, of every VM that can share (not native: no second
//!   translation to write-protect; 4 KiB host pages only; direct VMs are
//!   scanned although Xen ships sharing only for HAP guests, a model of
//!   the mechanism, see `hv/direct.rs`), sorted and then shuffled with the
//!   `[sharing] seed`. Frames no longer backed when their turn comes are
//!   skipped without counting. The scanner has visited at most
//!   `rate_pages_per_s x host seconds` frames at any moment: it runs after
//!   every quantum and catches up to that budget.
//! - **Table.** Content id -> a shared frame, or a *hint*: the (VM, gPFN)
//!   that last had that content unmatched. A hint is not write-protected;
//!   it is verified when a later frame matches it (still backed, same
//!   content, not a page table, not already the same host frame) and
//!   replaced when stale. Unmatched frames are visited again next cycle.
//! - **Sharing** a frame write-protects every mapping of it: the EPT entry
//!   loses W, the mode's shadow leaves (or direct paging's machine
//!   entries) lose RW (reverse map), and each VM
//!   whose mappings changed is flushed on every pCPU (INVEPT
//!   single-context), once per scan burst (no VM runs in between). The
//!   merged VM's own shadow leaves of its old frame are zapped (direct
//!   paging's machine entries of it are repointed at the shared frame,
//!   read-only: a direct VM has no hidden fault to refill them).
//! - **Cost** (charged to host time on the pCPU that ran last, and in the
//!   report): `hash_cycles` per frame hashed, `compare_cycles` per match
//!   verified; the flushes and reverse-map changes at
//!   `cost.invept_cycles` and `cost.rmap_zap_cycles` as the VM's host work.
//!   A COW break costs the VM `copy_cycles`.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::sharing_report::{SharingReport, SharingSample, VmSharingReport};
use super::HostSim;
use crate::addr::{Gpfn, Hpfn, PageSize};
use crate::config::ConfigError;
use crate::guest::content::{ContentId, ContentKind, ZERO};
use crate::host::VmId;

/// The `[sharing]` section of a host configuration. Without it, or with
/// `enabled = false`, nothing is scanned or shared and the host runs as
/// before.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SharingSection {
    /// The scanner runs (true when the section is present unless set false).
    pub enabled: bool,
    /// Guest frames visited per simulated second, over all VMs. Default
    /// 5000: Linux KSM's defaults, `pages_to_scan` 100 every
    /// `sleep_millisecs` 20 (Documentation/admin-guide/mm/ksm.rst). The
    /// runs the tests and examples make last milliseconds of simulated
    /// time: they set a higher rate.
    pub rate_pages_per_s: f64,
    /// Seed of the scan order. Default 1.
    pub seed: u64,
    /// Cycles to hash one 4 KiB frame. Default 1000 (UNVERIFIED: reading
    /// 4 KiB at about 10 GB/s at 2.5 GHz; the hash itself is faster).
    pub hash_cycles: u64,
    /// Cycles to verify one match (compare two 4 KiB frames). Default 2000
    /// (UNVERIFIED: two 4 KiB reads at about 10 GB/s at 2.5 GHz).
    pub compare_cycles: u64,
    /// Cycles of the host's copy at a COW break (read and write 4 KiB).
    /// Default 2000 (UNVERIFIED: as `compare_cycles`).
    pub copy_cycles: u64,
    /// A host below its reserve runs a whole scan cycle, beyond the rate,
    /// before it swaps (ESX: sharing is reclaimed memory, tried first).
    /// Default true.
    pub share_before_swap: bool,
}

impl Default for SharingSection {
    fn default() -> Self {
        SharingSection {
            enabled: true,
            rate_pages_per_s: 5000.0,
            seed: 1,
            hash_cycles: 1000,
            compare_cycles: 2000,
            copy_cycles: 2000,
            share_before_swap: true,
        }
    }
}

impl SharingSection {
    /// Sharing off (no `[sharing]` section).
    pub fn off() -> Self {
        SharingSection {
            enabled: false,
            ..SharingSection::default()
        }
    }

    /// Parse the `[sharing]` table if present (off when absent) and check it.
    ///
    /// # Errors
    /// An unknown key, a wrongly typed value or an impossible one, naming it.
    pub fn parse(value: Option<toml::Value>) -> Result<Self, ConfigError> {
        let s: SharingSection = match value {
            None => return Ok(SharingSection::off()),
            Some(v) => v
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: "[sharing]".into(),
                    message: e.to_string(),
                })?,
        };
        s.validate()?;
        Ok(s)
    }

    /// Check every key.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first impossible key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let r = self.rate_pages_per_s;
        if !(r.is_finite() && r > 0.0 && r <= 1e12) {
            return Err(ConfigError::Invalid {
                key: "sharing.rate_pages_per_s".into(),
                value: r.to_string(),
                why: "a finite number of pages per second in (0, 1e12]".into(),
            });
        }
        Ok(())
    }
}

/// What the scanner did, for the report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ScannerStats {
    /// Frames visited and hashed.
    pub visited: u64,
    /// Cycles begun (passes over the backed frames).
    pub cycles: u64,
    /// Table matches verified (each a full compare).
    pub compares: u64,
    /// Frames merged into a shared frame (each freed a host frame).
    pub shares: u64,
    /// Of `shares`, zero-content frames.
    pub zero_shares: u64,
    /// Matches that failed verification (a stale hint or shared entry).
    pub stale: u64,
    /// Frames the rate allowed at the last scan: `rate_pages_per_s` x the
    /// host seconds then, rounded down.
    pub budget: u64,
    /// Frames visited beyond the rate because the host was short of memory
    /// (share before swap).
    pub pressure_visits: u64,
    /// The scanner's CPU time: `hash_cycles` per visit plus
    /// `compare_cycles` per compare, cycles.
    pub cpu_cycles: u64,
}

/// An entry of the global content table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// The frame shared for this content.
    Shared(Hpfn),
    /// The last frame seen with this content, unmatched (not protected).
    Hint(VmId, Gpfn),
}

/// The scanner of one host.
#[derive(Debug)]
pub struct Scanner {
    cfg: SharingSection,
    rng: Xoshiro256PlusPlus,
    order: Vec<(VmId, u64)>,
    pos: usize,
    table: FxHashMap<ContentId, Slot>,
    /// Sharing over time.
    series: Vec<SharingSample>,
    /// `stats.cycles` when a share-before-swap pass last found nothing.
    futile_at: Option<u64>,
    /// Counters.
    pub stats: ScannerStats,
}

impl Scanner {
    /// A scanner with `cfg`'s rate, seed and costs.
    pub fn new(cfg: &SharingSection) -> Self {
        Scanner {
            cfg: cfg.clone(),
            rng: Xoshiro256PlusPlus::seed_from_u64(cfg.seed),
            order: Vec::new(),
            pos: 0,
            table: FxHashMap::default(),
            futile_at: None,
            series: Vec::new(),
            stats: ScannerStats::default(),
        }
    }

    /// Frames the rate allows by host time `seconds`.
    pub fn budget(&self, seconds: f64) -> u64 {
        (self.cfg.rate_pages_per_s * seconds) as u64
    }
}

impl HostSim {
    /// True when VM `v`'s frames may be shared: a virtualized VM (native
    /// ones have no second translation to write-protect) on 4 KiB host
    /// pages. Direct (Xen PV) VMs are admitted: the model write-protects
    /// and repoints their machine entries (`hv/direct.rs`); they stay
    /// unswappable (a PV domain's memory is pinned).
    fn can_share(&self, v: usize) -> bool {
        let spec = &self.cfg.vms[v];
        spec.mode.is_virtualized() && spec.cfg.host.page_size == PageSize::Size4K
    }

    /// The next frame of the scan order: (VM, gPFN), starting a new cycle
    /// at the end of one if `new_cycle`; `None` when nothing is backed or
    /// the cycle ended and no new one may begin.
    fn next_frame(&mut self, sc: &mut Scanner, new_cycle: bool) -> Option<(usize, Gpfn)> {
        loop {
            if sc.pos == sc.order.len() {
                if !new_cycle {
                    return None;
                }
                sc.order.clear();
                for v in 0..self.vms.len() {
                    if self.can_share(v) {
                        let vm = self.vms[v].vm();
                        sc.order
                            .extend(vm.resident().iter().map(|&g| (v as VmId, g)));
                    }
                }
                sc.order.sort_unstable();
                sc.order.shuffle(&mut sc.rng);
                sc.pos = 0;
                if sc.order.is_empty() {
                    return None;
                }
                sc.stats.cycles += 1;
            }
            let (v, g) = sc.order[sc.pos];
            sc.pos += 1;
            let (v, g) = (v as usize, Gpfn(g));
            if self.vms[v].vm().p2m(g).is_some() && !self.vms[v].is_table(g.0) {
                return Some((v, g));
            }
        }
    }

    /// The content of VM `v`'s frame `g`, unless it is a page table.
    fn content_of(&self, v: usize, g: Gpfn) -> Option<ContentId> {
        let c = self.vms[v].guest().contents()?;
        (c.kind(g.0) != ContentKind::PageTable && !self.vms[v].is_table(g.0)).then(|| c.get(g.0))
    }

    /// Run the scanner up to its budget at the current host time, then
    /// flush the VMs whose mappings changed; the scanner's CPU time goes
    /// on pCPU `p`'s clock. Returns the frames shared.
    pub(super) fn scan(&mut self, p: usize) -> u64 {
        let Some(mut sc) = self.scanner.take() else {
            return 0;
        };
        // A burst begins at most one new cycle: a rate beyond what there
        // is to scan does not revisit frames within one burst.
        let due = sc.budget(self.cfg.base.cpu.seconds(self.now()));
        sc.stats.budget = due;
        let shares = self.scan_frames(&mut sc, due, p, false);
        self.scanner = Some(sc);
        shares
    }

    /// Share before swap: visit one whole cycle's worth of frames beyond
    /// the rate (the host is short of memory), unless the last such pass
    /// shared nothing and the scanner has not begun a cycle since. Returns
    /// the frames shared.
    pub(super) fn scan_under_pressure(&mut self, p: usize) -> u64 {
        let Some(mut sc) = self.scanner.take() else {
            return 0;
        };
        let mut shares = 0;
        if sc.cfg.share_before_swap && sc.futile_at != Some(sc.stats.cycles) {
            let before = sc.stats.visited;
            shares = self.scan_frames(&mut sc, u64::MAX, p, true);
            sc.stats.pressure_visits += sc.stats.visited - before;
            sc.futile_at = (shares == 0).then_some(sc.stats.cycles);
        }
        self.scanner = Some(sc);
        shares
    }

    /// The pCPU with the least host time (where host work outside a
    /// VM's quantum runs).
    pub(super) fn idlest_pcpu(&self) -> usize {
        (0..self.pcpus.len())
            .min_by_key(|&p| self.pcpus[p].cycles)
            .unwrap_or(0)
    }

    /// One whole cycle now, beyond the rate (tests and experiments place
    /// a scan with it): every frame backed now visited once; the CPU time
    /// goes on pCPU 0. Returns the frames shared (0 without `[sharing]`).
    pub fn scan_cycle(&mut self) -> u64 {
        let Some(mut sc) = self.scanner.take() else {
            return 0;
        };
        let shares = self.scan_frames(&mut sc, u64::MAX, 0, true);
        self.scanner = Some(sc);
        shares
    }

    /// Visit frames until `until` visits in all, beginning at most one new
    /// cycle; `whole`: abandon the cycle under way and run one new cycle
    /// to its end.
    fn scan_frames(&mut self, sc: &mut Scanner, until: u64, p: usize, whole: bool) -> u64 {
        if whole {
            sc.pos = sc.order.len();
        }
        let c0 = sc.stats.cycles;
        let mut flush = vec![false; self.vms.len()];
        let cpu_before = sc.stats.cpu_cycles;
        let mut shares = 0;
        while sc.stats.visited < until {
            let Some((v, g)) = self.next_frame(sc, sc.stats.cycles == c0) else {
                break;
            };
            sc.stats.visited += 1;
            sc.stats.cpu_cycles += sc.cfg.hash_cycles;
            let Some(c) = self.content_of(v, g) else {
                continue;
            };
            let h = self.vms[v].vm().p2m(g).expect("visited frames are backed");
            if self.host.is_shared(h) {
                // Already shared: it is the table's frame for c.
                sc.table.insert(c, Slot::Shared(h));
                continue;
            }
            let slot = sc.table.get(&c).copied();
            if slot == Some(Slot::Hint(v as VmId, g)) {
                // Its own hint from an earlier cycle: still unmatched.
                continue;
            }
            if slot.is_some() {
                sc.stats.compares += 1;
                sc.stats.cpu_cycles += sc.cfg.compare_cycles;
            }
            let keep = match slot {
                None => None,
                Some(Slot::Shared(k)) => self
                    .host
                    .shared_frame(k)
                    .is_some_and(|s| s.content == c)
                    .then_some(k),
                Some(Slot::Hint(v2, g2)) => {
                    let v2 = v2 as usize;
                    let h2 = self.vms[v2].vm().p2m(g2).filter(|&h2| h2 != h);
                    h2.filter(|_| self.can_share(v2) && self.content_of(v2, g2) == Some(c))
                }
            };
            let Some(keep) = keep else {
                sc.stats.stale += u64::from(slot.is_some());
                sc.table.insert(c, Slot::Hint(v as VmId, g));
                continue;
            };
            if !self.host.is_shared(keep) {
                // The hint's frame becomes shared: write-protect its owner.
                let (v2, g2) = self.host.m2p(keep).expect("a private frame");
                let zaps = self.vms[v2 as usize].write_protect(&mut self.host, g2.0, keep);
                self.counters[v2 as usize].rmap_zaps += zaps;
                flush[v2 as usize] = true;
            }
            let kind = self.vms[v]
                .guest()
                .contents()
                .expect("scanned guests track contents")
                .kind(g.0);
            let moved = self.host.share(keep, c, kind, h);
            debug_assert_eq!(moved, (v as VmId, g));
            let zaps = self.vms[v].share_into(&mut self.host, g.0, h, keep);
            self.counters[v].rmap_zaps += zaps;
            flush[v] = true;
            sc.table.insert(c, Slot::Shared(keep));
            sc.stats.shares += 1;
            sc.stats.zero_shares += u64::from(c == ZERO);
            shares += 1;
        }
        for (v, f) in flush.into_iter().enumerate() {
            if f {
                self.flush_vm(v);
                self.counters[v].invepts += self.pcpus.len() as u64;
                self.vms[v].vm_mut().sharing.scan_flushes += self.pcpus.len() as u64;
            }
        }
        self.pcpus[p].cycles += sc.stats.cpu_cycles - cpu_before;
        shares
    }

    /// Record sharing at host time `now` (with each memory sample).
    pub(super) fn sharing_sample(&mut self, now: u64) {
        let Some(sc) = &mut self.scanner else {
            return;
        };
        let h = self.host.sharing(None);
        sc.series.push(SharingSample {
            seconds: self.cfg.base.cpu.seconds(now),
            saved_frames: h.saved_frames,
            saved_zero_frames: h.saved_zero_frames,
            vm_sharing_frames: (0..self.vms.len())
                .map(|v| self.host.sharing(Some(v as VmId)).sharing_guest_frames)
                .collect(),
            split: self.host.sharing_split(),
        });
    }

    /// The sharing report so far (`None` without `[sharing]`).
    pub(super) fn sharing_report(&self) -> Option<SharingReport> {
        let sc = self.scanner.as_ref()?;
        Some(SharingReport {
            host: self.host.sharing(None),
            split: self.host.sharing_split(),
            scanner: sc.stats.clone(),
            vms: (0..self.vms.len())
                .map(|v| VmSharingReport {
                    sharing_frames: self.host.sharing(Some(v as VmId)).sharing_guest_frames,
                    counters: self.vms[v].vm().sharing.clone(),
                })
                .collect(),
            series: sc.series.clone(),
        })
    }

    /// What the scanner did so far (`None` without `[sharing]`).
    pub fn scanner_stats(&self) -> Option<&ScannerStats> {
        self.scanner.as_ref().map(|s| &s.stats)
    }
}
