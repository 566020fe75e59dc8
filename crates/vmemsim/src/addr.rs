//! Address and frame-number newtypes for the three address spaces.
//!
//! A guest-virtual address ([`Gva`]), guest-physical address ([`Gpa`]) and
//! host-physical address ([`Hpa`]) never convert into one another except
//! through a translation (a page walk, the p2m map); the types make mixing
//! them a compile error. Frame numbers ([`Gpfn`], [`Hpfn`]) count 4 KiB
//! frames.

/// log2 of the base page size (4 KiB).
pub const PAGE_SHIFT: u32 = 12;
/// Base page size in bytes (4 KiB).
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// log2 of the large page size (2 MiB).
pub const HUGE_SHIFT: u32 = 21;
/// Large page size in bytes (2 MiB).
pub const HUGE_SIZE: u64 = 1 << HUGE_SHIFT;
/// 4 KiB frames in one 2 MiB page.
pub const FRAMES_PER_HUGE: u64 = HUGE_SIZE / PAGE_SIZE;
/// log2 of the 1 GiB page size.
pub const GIANT_SHIFT: u32 = 30;

macro_rules! address_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl $name {
            /// Byte offset within the 4 KiB page.
            #[inline]
            pub fn page_offset(self) -> u64 {
                self.0 & (PAGE_SIZE - 1)
            }
            /// Page number (address >> 12).
            #[inline]
            pub fn page_number(self) -> u64 {
                self.0 >> PAGE_SHIFT
            }
            /// Address plus `bytes`, or `None` on overflow.
            #[inline]
            pub fn checked_add(self, bytes: u64) -> Option<Self> {
                self.0.checked_add(bytes).map($name)
            }
        }
    };
}

macro_rules! frame_type {
    ($(#[$doc:meta])* $name:ident, $addr:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl $name {
            /// Address of byte `offset` in this frame.
            #[inline]
            pub fn addr(self, offset: u64) -> $addr {
                debug_assert!(offset < PAGE_SIZE);
                $addr((self.0 << PAGE_SHIFT) | offset)
            }
            /// Frame containing `a`.
            #[inline]
            pub fn of(a: $addr) -> Self {
                $name(a.0 >> PAGE_SHIFT)
            }
        }
    };
}

address_type!(
    /// Guest-virtual address (gVA): what a guest process issues.
    Gva
);
address_type!(
    /// Guest-physical address (gPA): what the guest OS believes is physical.
    Gpa
);
address_type!(
    /// Host-physical address (hPA): machine memory.
    Hpa
);
frame_type!(
    /// Guest-physical frame number (gPFN), in 4 KiB frames.
    Gpfn,
    Gpa
);
frame_type!(
    /// Host-physical frame number (hPFN), in 4 KiB frames.
    Hpfn,
    Hpa
);

impl Gva {
    /// Index (0..512) into the page-table page at `level` (4 = PML4 .. 1 = PT).
    #[inline]
    pub fn pt_index(self, level: u8) -> usize {
        pt_index(self.0, level)
    }
}

impl Gpa {
    /// Index (0..512) into the EPT page at `level` (4 = EPT PML4 .. 1 = EPT PT).
    #[inline]
    pub fn pt_index(self, level: u8) -> usize {
        pt_index(self.0, level)
    }
}

/// Index (0..512) of `addr` into a radix table at `level` (1..=5).
#[inline]
pub fn pt_index(addr: u64, level: u8) -> usize {
    ((addr >> (PAGE_SHIFT + 9 * (level as u32 - 1))) & 511) as usize
}

/// Page size of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum PageSize {
    /// 4 KiB, mapped by a PT entry (level 1).
    #[serde(rename = "4k")]
    Size4K,
    /// 2 MiB, mapped by a PD entry with PS=1 (level 2).
    #[serde(rename = "2m")]
    Size2M,
    /// 1 GiB, mapped by a PDPT entry with PS=1 (level 3) [SDM 4.5].
    #[serde(rename = "1g")]
    Size1G,
}

impl PageSize {
    /// log2 of the size in bytes.
    #[inline]
    pub fn shift(self) -> u32 {
        match self {
            PageSize::Size4K => PAGE_SHIFT,
            PageSize::Size2M => HUGE_SHIFT,
            PageSize::Size1G => GIANT_SHIFT,
        }
    }
    /// Size in bytes.
    #[inline]
    pub fn bytes(self) -> u64 {
        1 << self.shift()
    }
    /// Page-table level whose entry maps a page of this size.
    #[inline]
    pub fn leaf_level(self) -> u8 {
        match self {
            PageSize::Size4K => 1,
            PageSize::Size2M => 2,
            PageSize::Size1G => 3,
        }
    }
    /// 4 KiB frames in one page of this size.
    #[inline]
    pub fn frames(self) -> u64 {
        1 << (self.shift() - PAGE_SHIFT)
    }
    /// The page size whose entries sit at `level` (1, 2 or 3).
    #[inline]
    pub fn of_level(level: u8) -> PageSize {
        match level {
            1 => PageSize::Size4K,
            2 => PageSize::Size2M,
            _ => PageSize::Size1G,
        }
    }
    /// Name as written in configs: `4k`, `2m`, `1g`.
    pub fn name(self) -> &'static str {
        match self {
            PageSize::Size4K => "4k",
            PageSize::Size2M => "2m",
            PageSize::Size1G => "1g",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_split_a_canonical_address() {
        // 0x0000_7fff_ffff_f000: PML4 255, PDPT 511, PD 511, PT 511.
        let va = Gva(0x0000_7fff_ffff_f123);
        assert_eq!(va.pt_index(4), 255);
        assert_eq!(va.pt_index(3), 511);
        assert_eq!(va.pt_index(2), 511);
        assert_eq!(va.pt_index(1), 511);
        assert_eq!(va.page_offset(), 0x123);
        assert_eq!(Gpfn(5).addr(8), Gpa(0x5008));
        assert_eq!(Hpfn::of(Hpa(0x3fff)), Hpfn(3));
    }

    #[test]
    fn page_sizes() {
        assert_eq!(PageSize::Size2M.bytes(), 2 * 1024 * 1024);
        assert_eq!(PageSize::Size4K.leaf_level(), 1);
        assert_eq!(FRAMES_PER_HUGE, 512);
    }
}
