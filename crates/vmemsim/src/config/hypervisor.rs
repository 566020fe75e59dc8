//! Hypervisor mechanisms and policies: scheduling, paravirtual paging,
//! selective and agile switching, shadow paging.

use serde::{Deserialize, Serialize};

/// Scheduling of the processes of a trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedConfig {
    /// Round-robin quantum in instructions (fetches) when a trace interleaves
    /// processes. Default 100000 (UNVERIFIED: about 40 us at 2.5 GHz and CPI 1).
    pub quantum_instructions: u64,
}

impl Default for SchedConfig {
    fn default() -> Self {
        SchedConfig {
            quantum_instructions: 100_000,
        }
    }
}

/// Paravirtual direct paging (Xen PV).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PvConfig {
    /// Queued PTE updates (mmu_update requests) flushed by one hypercall when
    /// the queue is full. Default 32 (UNVERIFIED: Linux's Xen PV multicall
    /// buffer, `arch/x86/xen/multicalls.c`, holds 32 entries (MC_BATCH); the
    /// guest also flushes whenever it leaves lazy-MMU mode, i.e. at the end of
    /// every page-table operation).
    pub batch_size: u32,
}

impl Default for PvConfig {
    fn default() -> Self {
        PvConfig { batch_size: 32 }
    }
}

/// Dynamic switching between nested and shadow paging \[W11\].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelectiveConfig {
    /// Sampling period, guest instructions. Default 100000. \[W11\] samples
    /// every 5 s (2 s and 10 s gave similar results), i.e. about 1e10
    /// instructions on their Core i7 - longer than any trace we run. 1e5
    /// gives 10 samples on a 1e6-instruction trace and 1000 on a 1e8 one.
    pub period_instructions: u64,
    /// `selective` (ours): how many future periods a predicted per-period
    /// saving is assumed to last when weighed against the cost of switching.
    /// Default 16 (our choice; see docs/modes.md).
    pub horizon_periods: u64,
    /// `selective-w11`: a \[W11\] sample spans as many periods as it takes
    /// for its cycles to reach this many times the estimated cost of one
    /// switch (a refill), so that switching after every sample costs at
    /// most 1/this of the run. Default 1 (our choice, see docs/modes.md):
    /// \[W11\]'s 5 s samples are hundreds of switch costs long, but on
    /// traces of 1e7-1e9 instructions a refill of the working set is a
    /// tenth of the whole run, and at 10 no sample closes on `random`. 0:
    /// every period is a sample.
    pub w11_sample_switch_costs: f64,
}

impl Default for SelectiveConfig {
    fn default() -> Self {
        SelectiveConfig {
            period_instructions: 100_000,
            horizon_periods: 16,
            w11_sample_switch_costs: 1.0,
        }
    }
}

/// Agile paging \[AP16\].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgileConfig {
    /// Policy interval, guest instructions. Two writes to one guest table
    /// page within an interval move it to nested; a nested page with no
    /// write during a whole interval returns to shadow; a new address space
    /// starts nested for one interval. \[AP16\] uses about 1 s; we scale it
    /// like `selective.period_instructions`. Default 100000.
    pub interval_instructions: u64,
    /// A nested table returns to shadow only once it has also been clean
    /// for this many times the cycles of refilling its shadow (one hidden
    /// fault per present entry; time at the base CPI). Default 100 (our
    /// choice, see docs/modes.md): \[AP16\]'s ~1 s interval is about 1600
    /// refills of a full PT (512 x 3700 cycles at ~3 GHz). 0: the interval
    /// alone decides (tables flip back after one quiet interval).
    pub clean_refill_costs: f64,
    /// When the switch is at the root (the guest root walked nested), the
    /// hypervisor, which traps every CR3 write, puts the guest PML4's hPA
    /// in the hardware CR3, so the walk reads the guest root without an EPT
    /// walk: 20 references cold instead of a full 2-D walk's 24 \[AP16\].
    /// Default true. false: CR3 holds the guest root's gPA (24).
    pub root_hpa: bool,
}

impl Default for AgileConfig {
    fn default() -> Self {
        AgileConfig {
            interval_instructions: 100_000,
            clean_refill_costs: 100.0,
            root_hpa: true,
        }
    }
}

/// Shadow paging as KVM does it today (KVM's mmu.rst, arch/x86/kvm/mmu/mmu.c).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShadowConfig {
    /// Unsync shadow pages: the first guest store to a shadowed last-level
    /// table (a PT, no shadow of it at another level) exits once, as a
    /// write-protection fault whose handler makes the table writable and
    /// marks its shadow page unsync; later stores do not exit. The shadow
    /// page is resynced (each present entry checked against the guest's,
    /// write protection restored) when the guest flushes its TLB or loads
    /// CR3 (every unsync page reachable from the root), when a walk of the
    /// hypervisor links it again, and entry by entry on INVLPG. Default
    /// true, as in KVM (`mmu_try_to_unsync_pages`, `kvm_mmu_sync_roots`).
    pub unsync: bool,
    /// Write-flood detection: `write_flood_threshold` emulated writes to a
    /// shadowed guest table since the hypervisor last used its shadow page
    /// (walked through it to fill a shadow entry) zap that shadow page and
    /// lift the write protection; the table is shadowed again the next time
    /// a walk needs it. Default true, as in KVM (`detect_write_flooding`).
    pub write_flood: bool,
    /// Emulated writes that make a flood. Default 3 (KVM's
    /// `detect_write_flooding`: `write_flooding_count >= 3`).
    pub write_flood_threshold: u32,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        ShadowConfig {
            unsync: true,
            write_flood: true,
            write_flood_threshold: 3,
        }
    }
}

impl ShadowConfig {
    /// Shadow paging without KVM's two mechanisms: every store to a
    /// shadowed table exits and is emulated (the model before issue 13).
    pub fn strict() -> Self {
        ShadowConfig {
            unsync: false,
            write_flood: false,
            ..ShadowConfig::default()
        }
    }
}
