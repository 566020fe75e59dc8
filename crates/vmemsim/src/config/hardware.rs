//! The simulated hardware: CPU, host paging, TLB, walk-cache and
//! page-table line cache sections.

use super::ConfigError;
use serde::{Deserialize, Serialize};

/// The simulated CPU. One definition for every command: `run`, `compare`
/// and `host` (whose `[cpu]` section is this one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CpuConfig {
    /// Clock rate turning cycles into seconds (and latencies given in
    /// microseconds, such as `guest.swap_latency_us`, into cycles), GHz.
    /// Default 2.5: the machine of [PVM Table 1], whose exit latency
    /// `cost.vm_exit_cycles` comes from. At most [`MAX_GHZ`].
    pub ghz: f64,
    /// How the CPU is virtualized for a VM: `"vtx"` (hardware-assisted,
    /// trap-and-emulate: every hypervisor intervention is a VM exit) or
    /// `"bt"` (binary translation of the guest kernel, VMware style \[AA06\]:
    /// faults trap into the VMM without a world switch, privileged
    /// instructions and page-table stores are translated, system calls cost
    /// more). `"bt"` needs shadow paging: nested paging (and the modes that
    /// use it: agile, selective) needs VT-x, and a paravirtual (`direct`)
    /// guest kernel is not translated. Default `"vtx"`.
    pub virtualization: Virtualization,
    /// Adaptive binary translation \[AA06\]: a guest kernel instruction that
    /// trapped this many times is retranslated into a call-out, which costs
    /// `cost.bt_callout_cycles` instead of a trap. The guest kernel's PTE
    /// store, CR3 write and INVLPG/INVPCID are one instruction each here.
    /// Default 2 (UNVERIFIED: \[AA06\] gives no number).
    pub adapt_threshold: u32,
    /// Who refills the TLB on a miss: `"hardware"` (an x86 page walker) or
    /// `"software"` (MIPS style: a miss raises an exception, the kernel's
    /// refill handler walks its table and writes the entry with a TLB-write
    /// instruction [MIPS R4000 User's Manual, ch. 4-5]). The `swtlb-native`
    /// and `swtlb-vmm` modes always run on a software-managed TLB; with
    /// `"software"` they are the only modes (the others need a hardware
    /// walker: a config error), so `compare` runs just them. Default
    /// `"hardware"`: every mode runs as its name says.
    pub tlb: TlbManagement,
}

/// Who refills the TLB on a miss (`cpu.tlb`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlbManagement {
    /// A hardware page walker (x86).
    Hardware,
    /// A software-managed TLB (MIPS style): no walker, a refill exception.
    Software,
}

/// CPU virtualization technique (`cpu.virtualization`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Virtualization {
    /// Hardware-assisted (Intel VT-x / AMD-V): trap-and-emulate.
    Vtx,
    /// Binary translation of the guest kernel \[AA06\].
    Bt,
}

/// Largest accepted `cpu.ghz`.
pub const MAX_GHZ: f64 = 100.0;

impl Default for CpuConfig {
    fn default() -> Self {
        CpuConfig {
            ghz: 2.5,
            virtualization: Virtualization::Vtx,
            adapt_threshold: 2,
            tlb: TlbManagement::Hardware,
        }
    }
}

impl CpuConfig {
    /// `us` microseconds in cycles at this clock, rounded to the nearest cycle.
    pub fn cycles_of_us(&self, us: f64) -> u64 {
        (us * 1e3 * self.ghz).round() as u64
    }

    /// `cycles` in seconds at this clock.
    pub fn seconds(&self, cycles: u64) -> f64 {
        cycles as f64 / (self.ghz * 1e9)
    }
}

/// The host side of translation: how the EPT/NPT that maps guest-physical
/// memory is built. `vmemsim host` reads the same keys from its `[host]`
/// section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostPagingConfig {
    /// Levels of the EPT: 4, or 5 for a 57-bit guest-physical space (the
    /// EPTP's page-walk length, 5-level EPT [SDM 29.3.2]). Default 4.
    pub ept_levels: u8,
    /// Size of the host pages backing guest memory: `4k`, `2m` (a host
    /// using transparent huge pages, as KVM hosts commonly do) or `1g`
    /// (hugetlbfs 1 GiB pages). The host backs a whole aligned page of that
    /// size on the first touch of any guest frame in it, and maps it with
    /// one EPT leaf of that size (a PDE or PDPTE with bit 7 set [SDM
    /// 29.3.2]). Default `4k`.
    pub page_size: crate::addr::PageSize,
}

impl Default for HostPagingConfig {
    fn default() -> Self {
        HostPagingConfig {
            ept_levels: 4,
            page_size: crate::addr::PageSize::Size4K,
        }
    }
}

/// Geometry of one set-associative structure. `entries = 0` turns it off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Geometry {
    /// Total entries (0 = structure absent).
    pub entries: u32,
    /// Associativity; `entries / ways` sets, which must be a power of two.
    pub ways: u32,
}

impl Geometry {
    /// `entries` entries in `ways` ways.
    pub const fn new(entries: u32, ways: u32) -> Self {
        Geometry { entries, ways }
    }
    /// Number of sets (0 when off).
    pub fn sets(self) -> u32 {
        if self.entries == 0 {
            0
        } else {
            self.entries / self.ways
        }
    }
    pub(super) fn validate(self, key: &str) -> Result<(), ConfigError> {
        if self.entries == 0 {
            return Ok(());
        }
        let ok = self.ways >= 1
            && self.ways <= 64
            && self.entries % self.ways == 0
            && (self.entries / self.ways).is_power_of_two()
            && self.entries <= 1 << 20;
        if ok {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                key: key.to_string(),
                value: format!("{{ entries = {}, ways = {} }}", self.entries, self.ways),
                why: "need 1..=64 ways, entries a multiple of ways, entries/ways a power of two, \
                      at most 2^20 entries (entries = 0 turns the structure off)"
                    .into(),
            })
        }
    }
}

/// TLB geometries. Defaults: Intel Sandy Bridge [AP16 Table III] for the
/// L1 DTLB and the 512-entry 4-way STLB; the STLB here holds 4 KiB and 2 MiB
/// entries (as on Skylake) rather than 4 KiB only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlbConfig {
    /// L1 DTLB for 4 KiB pages. Default 64 entries, 4-way \[AP16\].
    pub l1d_4k: Geometry,
    /// L1 DTLB for 2 MiB pages. Default 32 entries, 4-way \[AP16\].
    pub l1d_2m: Geometry,
    /// L1 ITLB for 4 KiB pages. Default 128 entries, 4-way (Sandy Bridge; UNVERIFIED).
    pub l1i_4k: Geometry,
    /// L1 ITLB for 2 MiB pages. Default 8 entries, fully associative (UNVERIFIED).
    pub l1i_2m: Geometry,
    /// Unified second-level TLB (STLB). Default 512 entries, 4-way \[AP16\].
    /// It holds 4 KiB, 2 MiB and 1 GiB entries (a simplification: Sandy
    /// Bridge's holds 4 KiB ones only, Skylake's 4 KiB and 2 MiB ones with
    /// 1 GiB ones in a separate array).
    pub stlb: Geometry,
    /// L1 DTLB for 1 GiB pages. Default 4 entries, fully associative
    /// (Sandy Bridge \[AP16\] Table III).
    pub l1d_1g: Geometry,
    /// L1 ITLB for 1 GiB pages. Default none (0 entries): Sandy Bridge's
    /// ITLB has no 1 GiB entries (UNVERIFIED); fetches from a 1 GiB page
    /// use STLB entries.
    pub l1i_1g: Geometry,
}

impl Default for TlbConfig {
    fn default() -> Self {
        TlbConfig {
            l1d_4k: Geometry::new(64, 4),
            l1d_2m: Geometry::new(32, 4),
            l1i_4k: Geometry::new(128, 4),
            l1i_2m: Geometry::new(8, 8),
            stlb: Geometry::new(512, 4),
            l1d_1g: Geometry::new(4, 4),
            l1i_1g: Geometry::new(0, 1),
        }
    }
}

/// Walk caches. Intel documents that paging-structure caches (PSCs) exist for
/// PML4E, PDPTE and PDE entries [SDM 4.10.3] but not their sizes: the
/// defaults are UNVERIFIED placeholders. The nested TLB caches gPA->hPA
/// translations for 2-D walks and the EPT PSCs cache upper EPT entries \[B08\].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalkCacheConfig {
    /// PML4E cache (gVA bits 47:39). Default 2 entries, fully associative (UNVERIFIED).
    pub pml4e: Geometry,
    /// PDPTE cache (gVA bits 47:30). Default 4 entries, fully associative (UNVERIFIED).
    pub pdpte: Geometry,
    /// PDE cache (gVA bits 47:21). Default 32 entries, 4-way (UNVERIFIED).
    pub pde: Geometry,
    /// PML5E cache (gVA bits 56:48), used by 5-level walks only. Default
    /// 2 entries, fully associative, as the PML4E cache (UNVERIFIED).
    pub pml5e: Geometry,
    /// Nested TLB, gPFN -> hPFN, used by 2-D walks. Default 64 entries, 4-way (UNVERIFIED).
    pub nested_tlb: Geometry,
    /// EPT PML4E cache (gPA bits 47:39). Default 2, fully associative (UNVERIFIED).
    pub ept_pml4e: Geometry,
    /// EPT PDPTE cache (gPA bits 47:30). Default 4, fully associative (UNVERIFIED).
    pub ept_pdpte: Geometry,
    /// EPT PDE cache (gPA bits 47:21). Default 32, 4-way (UNVERIFIED).
    pub ept_pde: Geometry,
    /// EPT PML5E cache (gPA bits 56:48), used with 5-level EPTs only.
    /// Default 2, fully associative (UNVERIFIED).
    pub ept_pml5e: Geometry,
}

impl WalkCacheConfig {
    /// Every walk cache off: walks cost their full architectural reference count.
    pub fn all_off() -> Self {
        let off = Geometry::new(0, 1);
        WalkCacheConfig {
            pml4e: off,
            pdpte: off,
            pde: off,
            pml5e: off,
            nested_tlb: off,
            ept_pml4e: off,
            ept_pdpte: off,
            ept_pde: off,
            ept_pml5e: off,
        }
    }
}

impl Default for WalkCacheConfig {
    fn default() -> Self {
        WalkCacheConfig {
            pml4e: Geometry::new(2, 2),
            pdpte: Geometry::new(4, 4),
            pde: Geometry::new(32, 4),
            pml5e: Geometry::new(2, 2),
            nested_tlb: Geometry::new(64, 4),
            ept_pml4e: Geometry::new(2, 2),
            ept_pdpte: Geometry::new(4, 4),
            ept_pde: Geometry::new(32, 4),
            ept_pml5e: Geometry::new(2, 2),
        }
    }
}

/// A cache of page-table lines: walk references that hit it cost
/// `hit_cycles`, the others `miss_cycles`. Models where page-walk loads are
/// served (the data cache hierarchy) as one level.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PtCacheConfig {
    /// Lines (64 bytes each) and ways; entries = 0 turns it off, so every
    /// reference costs `miss_cycles`. At most 16 ways and at least 16 sets
    /// (the simulator's line-cache layout). Default 4096 lines (256 KiB, the
    /// Skylake L2 per core is 256 KiB), 8-way.
    pub lines: Geometry,
    /// Latency of a hit, cycles. Default 14 (L2 hit; UNVERIFIED).
    pub hit_cycles: u64,
    /// Latency of a miss, cycles. Default 200 (DRAM; UNVERIFIED).
    pub miss_cycles: u64,
}

impl Default for PtCacheConfig {
    fn default() -> Self {
        PtCacheConfig {
            lines: Geometry::new(4096, 8),
            hit_cycles: 14,
            miss_cycles: 200,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn impossible_geometry_is_rejected() {
        let e =
            Config::from_toml("[tlb]\nstlb = { entries = 500, ways = 3 }\n", "x.toml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("tlb.stlb") && msg.contains("500"), "{msg}");
    }

    #[test]
    fn line_cache_geometry_limits() {
        for (lines, ways) in [(4096, 32), (64, 8)] {
            let toml = format!("[pt_cache.lines]\nentries = {lines}\nways = {ways}\n");
            let msg = Config::from_toml(&toml, "x.toml").unwrap_err().to_string();
            assert!(
                msg.contains("pt_cache.lines") && msg.contains("at most 16 ways"),
                "{msg}"
            );
        }
        let ok = "[pt_cache.lines]\nentries = 2048\nways = 16\n";
        assert_eq!(Config::from_toml(ok, "x").unwrap().pt_cache.lines.ways, 16);
        let off = "[pt_cache.lines]\nentries = 0\nways = 1\n";
        assert!(Config::from_toml(off, "x").is_ok());
    }

    #[test]
    fn cpu_clock_is_bounded_and_converts() {
        for bad in ["0.0", "-1.0", "nan", "101.0"] {
            let e = Config::from_toml(&format!("[cpu]\nghz = {bad}\n"), "x")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("config key `cpu.ghz`"), "{e}");
        }
        let c = Config::from_toml("[cpu]\nghz = 3.0\n", "x").unwrap().cpu;
        // 100 us at 3 GHz = 300,000 cycles; 6e9 cycles = 2 s.
        assert_eq!(c.cycles_of_us(100.0), 300_000);
        assert_eq!(c.seconds(6_000_000_000), 2.0);
        assert_eq!(Config::default().cpu.ghz, 2.5);
    }

    #[test]
    fn paging_levels_are_4_or_5() {
        let c = Config::from_toml("[guest]\nlevels = 5\n[host]\nept_levels = 5\n", "x").unwrap();
        assert_eq!((c.guest.levels, c.host.ept_levels), (5, 5));
        for (toml, want) in [
            (
                "[guest]\nlevels = 3\n",
                "config key `guest.levels` = 3: 4 or 5 (paging levels)",
            ),
            (
                "[host]\nept_levels = 6\n",
                "config key `host.ept_levels` = 6: 4 or 5 (paging levels)",
            ),
        ] {
            assert_eq!(Config::from_toml(toml, "x").unwrap_err().to_string(), want);
        }
    }
}
