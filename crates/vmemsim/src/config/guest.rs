//! The guest OS model section (`[guest]`) and its huge-page setting.

use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

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
}
