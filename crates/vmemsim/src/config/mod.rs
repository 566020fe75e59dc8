//! Simulator configuration: one struct per TOML section, unknown keys
//! rejected, impossible geometry rejected by [`Config::validate`].
//!
//! Every default names its source. "UNVERIFIED" marks a default no primary
//! source fixes (see `shared/reference/facts.md`): a documented placeholder,
//! not a validation target.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Errors loading or validating a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not parse or names an unknown key (the message names it).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What the TOML parser reported (key, line and column).
        message: String,
    },
    /// A value is impossible, e.g. a TLB geometry whose sets are not a power of two.
    #[error("config key `{key}` = {value}: {why}")]
    Invalid {
        /// Dotted key, e.g. `tlb.stlb`.
        key: String,
        /// The offending value as written.
        value: String,
        /// What a valid value looks like.
        why: String,
    },
}

/// The whole configuration. `Config::default()` is the documented baseline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Guest OS model.
    pub guest: GuestConfig,
    /// TLBs.
    pub tlb: TlbConfig,
    /// Paging-structure caches, nested TLB, EPT walk caches.
    pub walk_caches: WalkCacheConfig,
    /// Cache for page-table lines touched by walks.
    pub pt_cache: PtCacheConfig,
    /// Cycle costs.
    pub cost: CostConfig,
    /// Scheduling of recorded processes.
    pub sched: SchedConfig,
    /// Paravirtual direct paging (`direct` mode).
    pub pv: PvConfig,
    /// Dynamic switching between nested and shadow paging (`selective`, `selective-w11`).
    pub selective: SelectiveConfig,
    /// Agile paging (`agile` mode).
    pub agile: AgileConfig,
    /// Shadow paging's KVM mechanisms (`shadow`, and the shadow part of
    /// `agile` and the `selective` modes).
    pub shadow: ShadowConfig,
    /// The measured window: warm-up and region of interest.
    pub measure: MeasureConfig,
    /// The simulated CPU (clock rate).
    pub cpu: CpuConfig,
    /// How the host maps guest memory: EPT levels (and, later, host page size).
    pub host: HostPagingConfig,
}

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

/// Guest OS model settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuestConfig {
    /// Guest-physical memory in MiB. Default 8192.
    pub mem_mib: u64,
    /// Guest page sizes the kernel uses for anonymous memory
    /// ([`HugePages`]): `"none"` (4 KiB only, default), `"2m"` (2 MiB
    /// pages where a whole aligned 2 MiB range fits in the VMA, like Linux
    /// THP "always") or `"1g"` (also 1 GiB pages where a whole aligned
    /// 1 GiB range fits, as from a hugetlbfs pool). `true` / `false` are
    /// accepted for `"2m"` / `"none"`.
    pub huge_pages: HugePages,
    /// Tag TLB entries with PCIDs so a CR3 write need not flush (Linux
    /// since 4.14). Default true.
    pub pcid: bool,
    /// munmap of more pages than this flushes the whole TLB instead of one
    /// INVLPG per page. Default 33: Linux `tlb_single_page_flush_ceiling`.
    pub invlpg_ceiling_pages: u64,
    /// The guest's swap device, MiB. 0 (default): no swap, so the guest
    /// cannot reclaim and runs out of memory when its frames are used up.
    pub swap_mib: u64,
    /// Latency of one 4 KiB read from the guest's swap device (a virtual
    /// disk), microseconds: what a major fault waits. Default 100
    /// (UNVERIFIED: a SATA SSD random read; the same default as
    /// `host.swap_latency_us`).
    pub swap_latency_us: f64,
    /// Reclaim starts when free frames fall below this many pages. 0
    /// (default): Linux's low watermark for the guest's memory, min + min/4
    /// with min = sqrt(16 x KiB of memory) KiB (`min_free_kbytes`,
    /// `mm/page_alloc.c`): 320 pages for 64 MiB, 3620 for 8 GiB.
    pub watermark_low_pages: u64,
    /// Reclaim stops when this many pages are free. 0 (default): Linux's
    /// high watermark, min + min/2: 384 pages for 64 MiB, 4344 for 8 GiB.
    pub watermark_high_pages: u64,
    /// Paging levels of the guest's tables: 4 (48-bit gVAs, user space
    /// below 2^47) or 5 (LA57: 57-bit gVAs, user space below 2^56, as
    /// Linux's `TASK_SIZE` with 5-level paging) [SDM 4.5]. Default 4.
    pub levels: u8,
}

/// Which huge pages the guest kernel gives anonymous memory
/// (`guest.huge_pages`). Written as `"none"`, `"2m"` or `"1g"`; the
/// booleans of earlier configs stay accepted (`true` = `"2m"`, `false` =
/// `"none"`).
///
/// The rule for a page of each size is Linux's: a fault gets a 2 MiB page
/// when the 2 MiB-aligned range around it lies wholly in one recorded
/// (not implicit) VMA (THP "always": `transhuge_vma_suitable`,
/// `mm/huge_memory.c`), and with `"1g"` a 1 GiB page when the 1 GiB-aligned
/// range does. Linux has no 1 GiB THP for anonymous memory: 1 GiB pages
/// come from a hugetlbfs pool (`hugepagesz=1G hugepages=N`,
/// Documentation/admin-guide/mm/hugetlbpage.rst), whose mappings are
/// 1 GiB-aligned and sized; `"1g"` models a program whose large aligned
/// anonymous ranges come from such a pool (libhugetlbfs-style), the rest
/// from THP. A 1 GiB page that a munmap or mprotect cuts is split into
/// 2 MiB pages (then 4 KiB ones), as a PUD split does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
pub enum HugePages {
    /// 4 KiB pages only.
    #[default]
    #[serde(rename = "none")]
    None,
    /// 2 MiB pages where they fit, else 4 KiB.
    #[serde(rename = "2m")]
    Huge2M,
    /// 1 GiB pages where they fit, else 2 MiB, else 4 KiB.
    #[serde(rename = "1g")]
    Huge1G,
}

impl HugePages {
    /// The largest guest page level in use: 1 (4 KiB), 2 (2 MiB) or 3 (1 GiB).
    pub fn max_level(self) -> u8 {
        match self {
            HugePages::None => 1,
            HugePages::Huge2M => 2,
            HugePages::Huge1G => 3,
        }
    }
    /// As written in a config.
    pub fn name(self) -> &'static str {
        match self {
            HugePages::None => "none",
            HugePages::Huge2M => "2m",
            HugePages::Huge1G => "1g",
        }
    }
}

/// The boolean of earlier configs: `true` is 2 MiB pages.
impl From<bool> for HugePages {
    fn from(huge: bool) -> Self {
        if huge {
            HugePages::Huge2M
        } else {
            HugePages::None
        }
    }
}

impl<'de> Deserialize<'de> for HugePages {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HugePages;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"none\", \"2m\" or \"1g\" (or true / false for \"2m\" / \"none\")")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<HugePages, E> {
                Ok(v.into())
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HugePages, E> {
                match v {
                    "none" => Ok(HugePages::None),
                    "2m" => Ok(HugePages::Huge2M),
                    "1g" => Ok(HugePages::Huge1G),
                    _ => Err(E::custom(format!(
                        "guest.huge_pages = \"{v}\": expected \"none\", \"2m\" or \"1g\" \
                         (or true / false for \"2m\" / \"none\")"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl Default for GuestConfig {
    fn default() -> Self {
        GuestConfig {
            mem_mib: 8192,
            huge_pages: HugePages::None,
            pcid: true,
            invlpg_ceiling_pages: 33,
            swap_mib: 0,
            swap_latency_us: 100.0,
            watermark_low_pages: 0,
            watermark_high_pages: 0,
            levels: 4,
        }
    }
}

impl GuestConfig {
    /// The (low, high) reclaim watermarks, pages: the configured ones, or
    /// where 0, Linux's for the guest's memory before 4.6 (low = min +
    /// min/4, high = min + min/2, `__setup_per_zone_wmarks`), with min =
    /// `min_free_kbytes` = sqrt(16 x KiB), clamped to 128..=65536 KiB
    /// (`init_per_zone_wmark_min`, `mm/page_alloc.c`).
    pub fn watermarks(&self) -> (u64, u64) {
        let kib = (self.mem_mib * 1024 * 16) as f64;
        let min = (kib.sqrt() as u64).clamp(128, 65536) / 4;
        let low = match self.watermark_low_pages {
            0 => min + min / 4,
            n => n,
        };
        let high = match self.watermark_high_pages {
            0 => (min + min / 2).max(low),
            n => n,
        };
        (low, high)
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
    fn validate(self, key: &str) -> Result<(), ConfigError> {
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

/// Cycle costs of events. Defaults from facts.md where it gives a number.
/// [`Config::validate`] bounds every cycle cost to [`MAX_EVENT_CYCLES`] and
/// `base_cpi` to [`MAX_BASE_CPI`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostConfig {
    /// Cycles per instruction apart from address translation. Default 1.0 (UNVERIFIED baseline).
    pub base_cpi: f64,
    /// L1 TLB miss that hits the STLB, cycles. Default 7 (UNVERIFIED).
    pub stlb_hit_cycles: u64,
    /// VM exit plus VM entry round trip, cycles. Default 1200: 0.46-0.54 us
    /// at 2.5 GHz for a hypercall/CPUID exit [PVM Table 1].
    pub vm_exit_cycles: u64,
    /// Guest kernel page-fault handling (trap, handler, return), cycles.
    /// Default 1093: native page fault on a 3.8 GHz Pentium 4 \[AA06\].
    pub guest_fault_cycles: u64,
    /// Guest kernel zeroing one 4 KiB frame, cycles. Default 1000 (UNVERIFIED).
    pub zero_page_cycles: u64,
    /// Guest kernel copying one 4 KiB frame (copy-on-write), cycles. Default 2000 (UNVERIFIED).
    pub copy_page_cycles: u64,
    /// Guest kernel writing one PTE, cycles (native cost of a PTE store).
    /// Default 1 [AA06 "PTE modify" native].
    pub pte_write_cycles: u64,
    /// Guest context switch (scheduler work besides the CR3 write), cycles. Default 2000 (UNVERIFIED).
    pub context_switch_cycles: u64,
    /// Hypervisor handling of an EPT violation (allocate a host frame, fill
    /// the EPT), cycles beyond the exit. Default 2000 (UNVERIFIED).
    pub ept_violation_cycles: u64,
    /// Hypervisor shadow fill on a hidden fault (walk guest tables in
    /// software, build shadow entries), cycles beyond the exit. Default 2500 (UNVERIFIED).
    pub shadow_fill_cycles: u64,
    /// Hypervisor emulating one trapped write to a write-protected guest
    /// page-table page, cycles beyond the exit. Default 3000 (UNVERIFIED;
    /// \[AA06\] measured 12733 cycles in all for a trapped PTE write on a P4).
    pub pt_write_emulate_cycles: u64,
    /// Hypervisor resyncing one unsync shadow page (checking its present
    /// entries against the guest table, write-protecting it again), cycles,
    /// within an exit that happens anyway (CR3 write, INVLPG/flush, hidden
    /// fault). Default 2500 (UNVERIFIED: the cost of one shadow fill).
    pub shadow_resync_cycles: u64,
    /// Binary translation: a guest fault or a not yet adapted privileged
    /// instruction entering the VMM (a trap, no world switch), cycles,
    /// instead of `vm_exit_cycles`; the handler cycles come on top. Default
    /// 2834: page fault 3927 under BT minus 1093 native on a 3.8 GHz
    /// Pentium 4 \[AA06\].
    pub bt_trap_cycles: u64,
    /// Binary translation: one call-out of adapted (retranslated) code, in
    /// all for a page-table store, plus the handler for a CR3 write or an
    /// INVLPG. Default 390: PTE modify 391 under BT minus 1 native \[AA06\].
    pub bt_callout_cycles: u64,
    /// Binary translation: extra cycles of one system call. Default 2066:
    /// syscall 2308 under BT minus 242 native \[AA06\] (VT-x: 246, taken as
    /// native).
    pub bt_syscall_cycles: u64,
    /// Hypervisor injecting a true guest #PF, cycles beyond the exit. Default 1000 (UNVERIFIED).
    pub inject_fault_cycles: u64,
    /// Hypervisor handling a trapped CR3 write (find or build the shadow
    /// root), cycles beyond the exit. Default 500 (UNVERIFIED).
    pub cr3_exit_cycles: u64,
    /// Hypervisor handling a trapped INVLPG / INVPCID, cycles beyond the exit. Default 300 (UNVERIFIED).
    pub invlpg_exit_cycles: u64,
    /// Hypervisor handling of a hypercall (paravirtual modes), cycles beyond
    /// the exit. Default 300 (UNVERIFIED).
    pub hypercall_cycles: u64,
    /// Hypervisor validating one PTE update of a paravirtual batch, cycles.
    /// Default 100 (UNVERIFIED).
    pub pv_validate_cycles: u64,
    /// Guest kernel work to swap one page out (unmap through the reverse
    /// map, submit the write), cycles; the write itself is asynchronous.
    /// Default 5000 (UNVERIFIED).
    pub guest_swap_out_cycles: u64,
    /// Hypervisor work to swap one guest frame out (`vmemsim host`: pick
    /// it, clear its EPT entry, submit the write), cycles, beyond the INVEPT
    /// and reverse-map zaps priced below. Default 5000 (UNVERIFIED).
    pub host_swap_out_cycles: u64,
    /// One INVEPT single-context on one pCPU, cycles. Default 1000
    /// (UNVERIFIED; the SDM gives no latency).
    pub invept_cycles: u64,
    /// One INVVPID single-context on one pCPU, cycles. Default 1000
    /// (UNVERIFIED).
    pub invvpid_cycles: u64,
    /// Zapping one shadow entry found through the reverse map when the host
    /// takes a frame away, cycles. Default 100 (UNVERIFIED).
    pub rmap_zap_cycles: u64,
    /// Software-managed TLB: taking one TLB refill exception in the guest
    /// kernel natively (pipeline flush, vector, the ERET back), cycles.
    /// Default 20 (UNVERIFIED: an exception entry and return on a simple
    /// in-order pipeline; the MIPS R4000 manual gives the refill vector,
    /// not its latency).
    pub tlb_refill_exception_cycles: u64,
    /// Software-managed TLB: the refill handler's instructions besides its
    /// page-table loads (read BadVAddr, index each level, move the PTE to
    /// EntryLo), cycles; the loads are priced as page-walk references
    /// (`pt_cache`). Default 20 (UNVERIFIED: Linux's MIPS refill handler
    /// for a 4-level table is about 20 instructions, `arch/mips/mm/tlbex.c`).
    pub tlb_refill_handler_cycles: u64,
    /// Software-managed TLB: one TLB-write instruction (TLBWR) on the real
    /// TLB, cycles. Default 5 (UNVERIFIED).
    pub tlb_write_cycles: u64,
    /// `swtlb-vmm`: the VMM handling a trapped TLB miss (look it up in its
    /// copy of the guest's TLB, then refill from it or reflect the
    /// exception to the guest's refill handler), cycles beyond the trap
    /// round trip `vm_exit_cycles`. Default 300 (UNVERIFIED: as
    /// `invlpg_exit_cycles`, a small emulation).
    pub tlb_miss_trap_cycles: u64,
    /// `swtlb-vmm`: the VMM emulating the guest's trapped TLB write
    /// (decode it, keep the entry in its copy of the guest's TLB, translate
    /// the guest frame to a machine frame through the pmap, write the real
    /// TLB), cycles beyond the trap round trip. Default 500 (UNVERIFIED: as
    /// `cr3_exit_cycles`).
    pub tlb_write_trap_cycles: u64,
}

impl Default for CostConfig {
    fn default() -> Self {
        CostConfig {
            base_cpi: 1.0,
            stlb_hit_cycles: 7,
            vm_exit_cycles: 1200,
            guest_fault_cycles: 1093,
            zero_page_cycles: 1000,
            copy_page_cycles: 2000,
            pte_write_cycles: 1,
            context_switch_cycles: 2000,
            ept_violation_cycles: 2000,
            shadow_fill_cycles: 2500,
            pt_write_emulate_cycles: 3000,
            shadow_resync_cycles: 2500,
            bt_trap_cycles: 2834,
            bt_callout_cycles: 390,
            bt_syscall_cycles: 2066,
            inject_fault_cycles: 1000,
            cr3_exit_cycles: 500,
            invlpg_exit_cycles: 300,
            hypercall_cycles: 300,
            pv_validate_cycles: 100,
            guest_swap_out_cycles: 5000,
            host_swap_out_cycles: 5000,
            invept_cycles: 1000,
            invvpid_cycles: 1000,
            rmap_zap_cycles: 100,
            tlb_refill_exception_cycles: 20,
            tlb_refill_handler_cycles: 20,
            tlb_write_cycles: 5,
            tlb_miss_trap_cycles: 300,
            tlb_write_trap_cycles: 500,
        }
    }
}

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

/// The measured window, as ChampSim, Sniper and gem5 runs use it: the
/// first `warmup_instructions` instructions run with every structure
/// working (TLBs, caches, shadow tables, policies warm up) but are not
/// counted; the next `sim_instructions` are measured. Counts are
/// instructions retired (one per fetch). Both default to the whole trace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeasureConfig {
    /// Instructions simulated before counting starts. Default 0.
    pub warmup_instructions: u64,
    /// Instructions measured after the warm-up; 0 = to the end of the
    /// input. Default 0.
    pub sim_instructions: u64,
}

impl Config {
    /// Parse TOML text; `origin` names the file in errors.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for bad TOML or an unknown key, [`ConfigError::Invalid`]
    /// for impossible values.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read and parse a TOML file.
    ///
    /// # Errors
    /// As [`Config::from_toml`], plus [`ConfigError::Io`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        Config::from_toml(&text, &path.display().to_string())
    }

    /// The resolved configuration as TOML (what `vmemsim config --dump` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serializes")
    }

    /// Reject impossible values.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key and value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.tlb;
        for (k, g) in [
            ("tlb.l1d_4k", t.l1d_4k),
            ("tlb.l1d_2m", t.l1d_2m),
            ("tlb.l1i_4k", t.l1i_4k),
            ("tlb.l1i_2m", t.l1i_2m),
            ("tlb.stlb", t.stlb),
            ("tlb.l1d_1g", t.l1d_1g),
            ("tlb.l1i_1g", t.l1i_1g),
        ] {
            g.validate(k)?;
        }
        let w = &self.walk_caches;
        for (k, g) in [
            ("walk_caches.pml4e", w.pml4e),
            ("walk_caches.pdpte", w.pdpte),
            ("walk_caches.pde", w.pde),
            ("walk_caches.nested_tlb", w.nested_tlb),
            ("walk_caches.ept_pml4e", w.ept_pml4e),
            ("walk_caches.ept_pdpte", w.ept_pdpte),
            ("walk_caches.ept_pde", w.ept_pde),
            ("walk_caches.pml5e", w.pml5e),
            ("walk_caches.ept_pml5e", w.ept_pml5e),
        ] {
            g.validate(k)?;
        }
        let lines = self.pt_cache.lines;
        lines.validate("pt_cache.lines")?;
        if lines.entries > 0
            && (lines.ways as usize > crate::mmu::line_cache::MAX_WAYS
                || lines.sets() < crate::mmu::line_cache::MIN_SETS)
        {
            return Err(ConfigError::Invalid {
                key: "pt_cache.lines".into(),
                value: format!("{{ entries = {}, ways = {} }}", lines.entries, lines.ways),
                why: format!(
                    "the page-table line cache needs at most {} ways and at least {} sets \
                     (entries = 0 turns it off)",
                    crate::mmu::line_cache::MAX_WAYS,
                    crate::mmu::line_cache::MIN_SETS
                ),
            });
        }
        let mem = self.guest.mem_mib;
        if !(64..=1 << 20).contains(&mem) {
            return Err(invalid("guest.mem_mib", mem, "between 64 MiB and 1 TiB"));
        }
        for (key, v) in [
            ("guest.levels", self.guest.levels),
            ("host.ept_levels", self.host.ept_levels),
        ] {
            if !(4..=5).contains(&v) {
                return Err(invalid(key, v, "4 or 5 (paging levels)"));
            }
        }
        let host_page_mib = self.host.page_size.bytes() >> 20;
        if host_page_mib > 0 && mem % host_page_mib != 0 {
            return Err(invalid(
                "guest.mem_mib",
                mem,
                &format!(
                    "a multiple of host.page_size ({}): the host backs guest memory in pages \
                     of that size",
                    self.host.page_size.name()
                ),
            ));
        }
        self.validate_costs()?;
        if self.sched.quantum_instructions == 0 {
            return Err(invalid("sched.quantum_instructions", 0, "at least 1"));
        }
        if self.pv.batch_size == 0 {
            return Err(invalid("pv.batch_size", 0, "at least 1"));
        }
        if self.selective.period_instructions == 0 {
            return Err(invalid("selective.period_instructions", 0, "at least 1"));
        }
        if self.shadow.write_flood_threshold == 0 {
            return Err(invalid("shadow.write_flood_threshold", 0, "at least 1"));
        }
        if self.agile.interval_instructions == 0 {
            return Err(invalid("agile.interval_instructions", 0, "at least 1"));
        }
        let ghz = self.cpu.ghz;
        if !(ghz.is_finite() && ghz > 0.0 && ghz <= MAX_GHZ) {
            return Err(invalid(
                "cpu.ghz",
                format!("{ghz:?}"),
                &format!("a number above 0 and at most {MAX_GHZ}"),
            ));
        }
        self.validate_guest_swap()?;
        for (key, v) in [
            (
                "selective.w11_sample_switch_costs",
                self.selective.w11_sample_switch_costs,
            ),
            ("agile.clean_refill_costs", self.agile.clean_refill_costs),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(invalid(key, v, "a finite number >= 0"));
            }
        }
        Ok(())
    }
}

/// Largest accepted cost of one event, cycles: a second at 1 GHz, far
/// beyond any architectural event (a VM exit is about 10^3), and small
/// enough that no realistic count times it overflows 64 bits.
pub const MAX_EVENT_CYCLES: u64 = 1_000_000_000;
/// Largest accepted `cost.base_cpi`.
pub const MAX_BASE_CPI: f64 = 1000.0;

impl Config {
    /// Every cost key within its documented range: `cost.base_cpi` in
    /// `[0, MAX_BASE_CPI]`, every per-event cycle cost (and the page-table
    /// line latencies) in `[0, MAX_EVENT_CYCLES]`.
    fn validate_costs(&self) -> Result<(), ConfigError> {
        let cpi = self.cost.base_cpi;
        if !(cpi.is_finite() && (0.0..=MAX_BASE_CPI).contains(&cpi)) {
            // `{:?}` prints 1e300 as such, not as 301 digits.
            return Err(invalid(
                "cost.base_cpi",
                format!("{cpi:?}"),
                &format!("a finite number from 0 to {MAX_BASE_CPI}"),
            ));
        }
        let c = &self.cost;
        let keys = [
            ("cost.stlb_hit_cycles", c.stlb_hit_cycles),
            ("cost.vm_exit_cycles", c.vm_exit_cycles),
            ("cost.guest_fault_cycles", c.guest_fault_cycles),
            ("cost.zero_page_cycles", c.zero_page_cycles),
            ("cost.copy_page_cycles", c.copy_page_cycles),
            ("cost.pte_write_cycles", c.pte_write_cycles),
            ("cost.context_switch_cycles", c.context_switch_cycles),
            ("cost.ept_violation_cycles", c.ept_violation_cycles),
            ("cost.shadow_fill_cycles", c.shadow_fill_cycles),
            ("cost.pt_write_emulate_cycles", c.pt_write_emulate_cycles),
            ("cost.shadow_resync_cycles", c.shadow_resync_cycles),
            ("cost.bt_trap_cycles", c.bt_trap_cycles),
            ("cost.bt_callout_cycles", c.bt_callout_cycles),
            ("cost.bt_syscall_cycles", c.bt_syscall_cycles),
            ("cost.inject_fault_cycles", c.inject_fault_cycles),
            ("cost.cr3_exit_cycles", c.cr3_exit_cycles),
            ("cost.invlpg_exit_cycles", c.invlpg_exit_cycles),
            ("cost.hypercall_cycles", c.hypercall_cycles),
            ("cost.pv_validate_cycles", c.pv_validate_cycles),
            ("cost.guest_swap_out_cycles", c.guest_swap_out_cycles),
            ("cost.host_swap_out_cycles", c.host_swap_out_cycles),
            ("cost.invept_cycles", c.invept_cycles),
            ("cost.invvpid_cycles", c.invvpid_cycles),
            ("cost.rmap_zap_cycles", c.rmap_zap_cycles),
            (
                "cost.tlb_refill_exception_cycles",
                c.tlb_refill_exception_cycles,
            ),
            (
                "cost.tlb_refill_handler_cycles",
                c.tlb_refill_handler_cycles,
            ),
            ("cost.tlb_write_cycles", c.tlb_write_cycles),
            ("cost.tlb_miss_trap_cycles", c.tlb_miss_trap_cycles),
            ("cost.tlb_write_trap_cycles", c.tlb_write_trap_cycles),
            ("pt_cache.hit_cycles", self.pt_cache.hit_cycles),
            ("pt_cache.miss_cycles", self.pt_cache.miss_cycles),
        ];
        for (key, v) in keys {
            if v > MAX_EVENT_CYCLES {
                return Err(invalid(
                    key,
                    v,
                    &format!("at most {MAX_EVENT_CYCLES} cycles (a second at 1 GHz)"),
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// Guest swap keys: swap at most 1 TiB, a latency that is at most
    /// [`MAX_EVENT_CYCLES`] at `cpu.ghz`, low <= high watermark < the
    /// guest's usable frames.
    fn validate_guest_swap(&self) -> Result<(), ConfigError> {
        let g = &self.guest;
        if g.swap_mib > 1 << 20 {
            return Err(invalid("guest.swap_mib", g.swap_mib, "at most 1 TiB"));
        }
        let us = g.swap_latency_us;
        let max_us = MAX_EVENT_CYCLES as f64 / (self.cpu.ghz * 1e3);
        if !(us.is_finite() && (0.0..=max_us).contains(&us)) {
            return Err(invalid(
                "guest.swap_latency_us",
                format!("{us:?}"),
                &format!("from 0 to {max_us} us ({MAX_EVENT_CYCLES} cycles at cpu.ghz)"),
            ));
        }
        let (low, high) = g.watermarks();
        if low > high {
            return Err(invalid(
                "guest.watermark_low_pages",
                low,
                &format!("at most guest.watermark_high_pages ({high})"),
            ));
        }
        // The guest kernel keeps its first 2 MiB (512 frames) for itself.
        let usable = (g.mem_mib * 256).saturating_sub(512);
        if high >= usable {
            return Err(invalid(
                "guest.watermark_high_pages",
                high,
                &format!(
                    "below the guest's {usable} usable frames (guest.mem_mib = {} less 2 MiB)",
                    g.mem_mib
                ),
            ));
        }
        Ok(())
    }
}

fn invalid(key: &str, value: impl std::fmt::Display, why: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.to_string(),
        why: why.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips_through_toml() {
        let c = Config::default();
        let back = Config::from_toml(&c.to_toml(), "dump").unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::from_toml("[tlb]\nstlb_entries = 5\n", "x.toml").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("x.toml") && msg.contains("stlb_entries"),
            "{msg}"
        );
    }

    #[test]
    fn impossible_geometry_is_rejected() {
        let e =
            Config::from_toml("[tlb]\nstlb = { entries = 500, ways = 3 }\n", "x.toml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("tlb.stlb") && msg.contains("500"), "{msg}");
    }

    #[test]
    fn cost_keys_are_bounded() {
        // Found by a hostile run (issue 12): these wrapped or saturated
        // the totals instead of being rejected.
        for (toml, want) in [
            (
                "[cost]\nvm_exit_cycles = 9223372036854775807\n",
                "config key `cost.vm_exit_cycles` = 9223372036854775807: \
                 at most 1000000000 cycles (a second at 1 GHz)",
            ),
            (
                "[cost]\nbase_cpi = 1e300\n",
                "config key `cost.base_cpi` = 1e300: \
                 a finite number from 0 to 1000",
            ),
            (
                "[pt_cache]\nmiss_cycles = 1000000001\n",
                "config key `pt_cache.miss_cycles` = 1000000001: \
                 at most 1000000000 cycles (a second at 1 GHz)",
            ),
        ] {
            let e = Config::from_toml(toml, "x.toml").unwrap_err().to_string();
            assert_eq!(e, want);
        }
        // The bounds themselves are accepted.
        let ok = "[cost]\nbase_cpi = 1000.0\nvm_exit_cycles = 1000000000\n";
        Config::from_toml(ok, "x.toml").unwrap();
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
    fn guest_swap_keys_are_checked() {
        // Linux's watermarks for 64 MiB: min = sqrt(16 x 65536) = 1024 KiB
        // = 256 pages; low = 256 + 64, high = 256 + 128.
        let mut g = GuestConfig {
            mem_mib: 64,
            ..GuestConfig::default()
        };
        assert_eq!(g.watermarks(), (320, 384));
        // 8 GiB: sqrt(16 x 8388608) = 11585 KiB = 2896 pages.
        g.mem_mib = 8192;
        assert_eq!(g.watermarks(), (3620, 4344));
        for (toml, want) in [
            (
                "[guest]\nmem_mib = 64\nwatermark_low_pages = 500\nwatermark_high_pages = 400\n",
                "config key `guest.watermark_low_pages` = 500: at most guest.watermark_high_pages (400)",
            ),
            (
                "[guest]\nmem_mib = 64\nwatermark_high_pages = 15872\n",
                "config key `guest.watermark_high_pages` = 15872: below the guest's 15872 usable \
                 frames (guest.mem_mib = 64 less 2 MiB)",
            ),
            (
                "[guest]\nswap_latency_us = -1.0\n",
                "config key `guest.swap_latency_us` = -1.0: from 0 to 400000 us \
                 (1000000000 cycles at cpu.ghz)",
            ),
        ] {
            assert_eq!(Config::from_toml(toml, "x").unwrap_err().to_string(), want);
        }
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

    #[test]
    fn huge_pages_is_a_size_or_a_boolean() {
        for (v, want) in [
            ("\"none\"", HugePages::None),
            ("\"2m\"", HugePages::Huge2M),
            ("\"1g\"", HugePages::Huge1G),
            ("true", HugePages::Huge2M),
            ("false", HugePages::None),
        ] {
            let c = Config::from_toml(&format!("[guest]\nhuge_pages = {v}\n"), "x").unwrap();
            assert_eq!(c.guest.huge_pages, want, "{v}");
        }
        // Serialized as the size, so a dumped config reads back the same.
        let c = Config::from_toml("[guest]\nhuge_pages = \"1g\"\n", "x").unwrap();
        let dumped = toml::to_string(&c).unwrap();
        assert!(dumped.contains("huge_pages = \"1g\""), "{dumped}");
        assert_eq!(Config::from_toml(&dumped, "x").unwrap(), c);
        for bad in ["\"4m\"", "\"2M\"", "1"] {
            let e = Config::from_toml(&format!("[guest]\nhuge_pages = {bad}\n"), "x")
                .unwrap_err()
                .to_string();
            assert!(e.contains("huge_pages"), "{bad}: {e}");
            assert!(e.contains("\"none\", \"2m\" or \"1g\""), "{bad}: {e}");
        }
    }

    #[test]
    fn partial_sections_keep_defaults() {
        let c = Config::from_toml("[guest]\nhuge_pages = true\n", "x").unwrap();
        assert_eq!(c.guest.huge_pages, HugePages::Huge2M);
        assert_eq!(c.guest.mem_mib, 8192);
        assert_eq!(c.tlb.stlb, Geometry::new(512, 4));
    }
}
