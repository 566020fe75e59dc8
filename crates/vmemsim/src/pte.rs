//! Entry layouts of x86-64 page tables [SDM Vol. 3 4.5, Table 4-19/20] and
//! EPT paging structures [SDM Vol. 3 29.3.2 (28.2.2 in older editions)].

/// x86-64 4-level paging entry bits.
pub mod x86 {
    /// Present.
    pub const P: u64 = 1 << 0;
    /// Read/write: writes allowed when set.
    pub const RW: u64 = 1 << 1;
    /// User/supervisor: user-mode access allowed when set.
    pub const US: u64 = 1 << 2;
    /// Accessed: set by the walker on first use.
    pub const A: u64 = 1 << 5;
    /// Dirty: set by the walker on the first write (leaf entries only).
    pub const D: u64 = 1 << 6;
    /// Page size: in a PDE, maps a 2 MiB page; in a PDPTE, a 1 GiB page.
    pub const PS: u64 = 1 << 7;
    /// Execute-disable.
    pub const NX: u64 = 1 << 63;
    /// Physical frame address bits 51:12.
    pub const FRAME: u64 = 0x000f_ffff_ffff_f000;

    /// True when entry `e` at `level` (1 = PTE .. 4 = PML4E) maps a page
    /// rather than a next-level table: every PTE, and a PDE (2 MiB) or
    /// PDPTE (1 GiB) with PS set [SDM Vol. 3 4.5, Tables 4-15 and 4-17].
    #[inline]
    pub fn is_leaf(level: u8, e: u64) -> bool {
        level == 1 || ((level == 2 || level == 3) && e & PS != 0)
    }

    /// 4 KiB frames mapped by one leaf at `level` (1, 512, 262144).
    #[inline]
    pub fn leaf_frames(level: u8) -> u64 {
        1 << (9 * (u32::from(level) - 1))
    }

    /// Frame number in the entry.
    #[inline]
    pub fn frame(e: u64) -> u64 {
        (e & FRAME) >> 12
    }
    /// Entry pointing at `frame` with `flags`.
    #[inline]
    pub fn make(frame: u64, flags: u64) -> u64 {
        (frame << 12) & FRAME | flags
    }
}

/// EPT paging-structure entry bits.
pub mod ept {
    /// Read access.
    pub const R: u64 = 1 << 0;
    /// Write access.
    pub const W: u64 = 1 << 1;
    /// Execute access.
    pub const X: u64 = 1 << 2;
    /// Write-back memory type (bits 5:3 = 6) for leaf entries.
    pub const WB: u64 = 6 << 3;
    /// Read, write and execute.
    pub const RWX: u64 = R | W | X;
    /// Frame bits as in [`super::x86::FRAME`].
    pub const FRAME: u64 = super::x86::FRAME;

    /// Page size: in an EPT PDE or PDPTE, maps a 2 MiB or 1 GiB page
    /// [SDM 29.3.2].
    pub const PS: u64 = 1 << 7;

    /// An entry is present when any of R, W, X is set.
    #[inline]
    pub fn present(e: u64) -> bool {
        e & RWX != 0
    }
}
