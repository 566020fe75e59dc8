//! TLBs: split L1 (DTLB, ITLB; one array per page size) and a unified STLB,
//! all tagged with an address-space id (VPID and PCID).

use super::cache::{Key, SetAssoc};
use crate::addr::{PageSize, GIANT_SHIFT, HUGE_SHIFT, PAGE_SHIFT};
use crate::config::TlbConfig;

/// Address-space id that tags TLB and PWC entries: `vpid << 12 | pcid`,
/// 28 bits. Native execution uses VPID 0; a VM's vCPU uses its VPID (1 for
/// the first VM). The VPID is the full 16-bit field of the VMCS [SDM
/// 29.1]; PCID is the guest's 12-bit process-context id [SDM 4.10.1].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Asid(pub u32);

/// Bits of an [`Asid`]: 16 of VPID, 12 of PCID.
pub const ASID_BITS: u32 = 28;

impl Asid {
    /// Combine a VPID (any 16-bit value) and a PCID (0..4096).
    #[inline]
    pub fn new(vpid: u16, pcid: u16) -> Self {
        debug_assert!(pcid < 4096, "PCID {pcid} beyond 12 bits");
        Asid((u32::from(vpid) << 12) | u32::from(pcid & 0xfff))
    }
    /// The VPID part.
    #[inline]
    pub fn vpid(self) -> u16 {
        (self.0 >> 12) as u16
    }
}

/// What a TLB entry caches: the translation of one page and its rights.
///
/// 16 bytes (the rights ride in the top bits of the hPFN word, above any
/// 52-bit frame number): TLB sets are kept in recency order, so entries
/// move on every fill and a smaller entry is a cheaper move.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlbEntry {
    /// First gPFN of the page (the guest-physical view, kept for the oracle
    /// and reports; hardware in shadow mode would not know it).
    gpfn: u64,
    /// First hPFN of the page (what the hardware uses), with [`WRITE_OK`]
    /// and [`EXEC_OK`].
    hpfn_rights: u64,
}

/// A store may use the entry: writable and already dirty.
const WRITE_OK: u64 = 1 << 63;
/// An instruction fetch may use the entry (NX clear).
const EXEC_OK: u64 = 1 << 62;

impl TlbEntry {
    /// An entry for the page at `gpfn`/`hpfn` (first frames; `hpfn` below
    /// 2^52, as every x86 physical frame number is).
    #[inline]
    pub fn new(gpfn: u64, hpfn: u64, write_ok: bool, exec_ok: bool) -> Self {
        debug_assert!(hpfn < 1 << 52, "hPFN {hpfn:#x} beyond 52 bits");
        let rights = if write_ok { WRITE_OK } else { 0 } | if exec_ok { EXEC_OK } else { 0 };
        TlbEntry {
            gpfn,
            hpfn_rights: hpfn | rights,
        }
    }
    /// First gPFN of the page.
    #[inline]
    pub fn gpfn(&self) -> u64 {
        self.gpfn
    }
    /// First hPFN of the page.
    #[inline]
    pub fn hpfn(&self) -> u64 {
        self.hpfn_rights & !(WRITE_OK | EXEC_OK)
    }
    /// A store may use the entry.
    #[inline]
    pub fn write_ok(&self) -> bool {
        self.hpfn_rights & WRITE_OK != 0
    }
    /// An instruction fetch may use the entry.
    #[inline]
    pub fn exec_ok(&self) -> bool {
        self.hpfn_rights & EXEC_OK != 0
    }
}

/// Where a lookup was served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlbLevel {
    /// L1 DTLB or ITLB hit.
    L1,
    /// L1 miss, STLB hit.
    Stlb,
    /// Miss in both: a page walk follows.
    Miss,
}

/// The TLB hierarchy of one core. Its tags are 64-bit for 4-level paging
/// and 128-bit for 5-level paging (a 44-bit page number and a 28-bit ASID
/// do not fit 64 bits); the variant is chosen once, from the paging levels,
/// so a 4-level run compares 64-bit tags as before.
#[derive(Clone, Debug)]
pub enum Tlbs {
    /// 4-level paging: gVAs below 2^47.
    Four(TlbSet<u64>),
    /// 5-level paging: gVAs below 2^56.
    Five(TlbSet<u128>),
}

macro_rules! each {
    ($self:ident, $t:ident => $e:expr) => {
        match $self {
            Tlbs::Four($t) => $e,
            Tlbs::Five($t) => $e,
        }
    };
}

impl Tlbs {
    /// Empty TLBs with the configured geometries, for tables of `levels`
    /// paging levels (4 or 5).
    pub fn new(c: &TlbConfig, levels: u8) -> Self {
        if levels == 5 {
            Tlbs::Five(TlbSet::new(c))
        } else {
            Tlbs::Four(TlbSet::new(c))
        }
    }

    /// [`TlbSet::lookup`]. Not inlined, with the variant's lookup inlined
    /// in it: the per-access call is then one call, as before there were
    /// two tag widths (an inlined dispatch that calls the lookup costs the
    /// access loop about a dozen instructions, measured).
    #[inline(never)]
    pub fn lookup(
        &mut self,
        asid: Asid,
        va: u64,
        fetch: bool,
        write: bool,
    ) -> (TlbLevel, Option<TlbHit>) {
        each!(self, t => t.lookup(asid, va, fetch, write))
    }

    /// [`TlbSet::insert`] (one call, as [`Tlbs::lookup`]).
    #[inline(never)]
    pub fn insert(&mut self, asid: Asid, va: u64, size: PageSize, fetch: bool, e: TlbEntry) {
        each!(self, t => t.insert(asid, va, size, fetch, e))
    }

    /// [`TlbSet::invlpg`].
    pub fn invlpg(&mut self, asid: Asid, va: u64) {
        each!(self, t => t.invlpg(asid, va))
    }

    /// [`TlbSet::flush_asid`].
    pub fn flush_asid(&mut self, asid: Asid) {
        each!(self, t => t.flush_asid(asid))
    }

    /// [`TlbSet::flush_vpid`].
    pub fn flush_vpid(&mut self, vpid: u16) {
        each!(self, t => t.flush_vpid(vpid))
    }

    /// [`TlbSet::flush_all`].
    pub fn flush_all(&mut self) {
        each!(self, t => t.flush_all())
    }
}

/// The arrays of a TLB hierarchy with tags of type `K`.
#[derive(Clone, Debug)]
pub struct TlbSet<K: TlbKey> {
    /// By page size: 4 KiB, 2 MiB, 1 GiB.
    l1d: [SetAssoc<TlbEntry, K>; 3],
    l1i: [SetAssoc<TlbEntry, K>; 3],
    stlb: SetAssoc<TlbEntry, K>,
    /// A 2 MiB entry was ever inserted: until then lookups skip the 2 MiB probes.
    any_huge: bool,
    /// A 1 GiB entry was ever inserted: until then lookups skip the 1 GiB probes.
    any_giant: bool,
    /// The last lookup missed without finding its page at all (not even an
    /// entry lacking a right): `(asid, 4 KiB page number, fetch)`. The fill
    /// after the walk then needs no scan; any other change forgets it.
    clean_miss: Option<(u32, u64, bool)>,
}

/// A TLB tag: page number, page size and [`Asid`], packed.
pub trait TlbKey: Key {
    /// The tag of page `vpn` (in units of its size) of size class `size`
    /// (0 = 4 KiB, 1 = 2 MiB, 2 = 1 GiB), in `asid`.
    fn make(vpn: u64, size: u8, asid: Asid) -> Self;
    /// The ASID in the tag.
    fn asid(self) -> u32;
}

/// Where a 64-bit TLB tag keeps its [`Asid`]: above the 36 bits of page
/// number and size (a 4 KiB page number of a 4-level gVA below 2^47 has 35
/// bits; bit 35 marks a huge entry, whose page number has at most 26 bits,
/// and bit 34 a 1 GiB one among them, whose page number has 17).
const KEY_ASID_SHIFT: u32 = 64 - ASID_BITS;

impl TlbKey for u64 {
    #[inline]
    fn make(vpn: u64, size: u8, asid: Asid) -> Self {
        debug_assert!(vpn < 1 << 35, "page number {vpn:#x} beyond a 4-level gVA");
        let size_bits = match size {
            0 => 0,
            1 => 1 << 35,
            _ => 3 << 34,
        };
        vpn | size_bits | (u64::from(asid.0) << KEY_ASID_SHIFT)
    }
    #[inline]
    fn asid(self) -> u32 {
        (self >> KEY_ASID_SHIFT) as u32
    }
}

/// A 128-bit TLB tag (5-level paging): the page number (44 bits for a
/// 4 KiB page of a gVA below 2^56) in bits 0..44, the size class at bits
/// 44..46, the ASID from bit 64.
impl TlbKey for u128 {
    #[inline]
    fn make(vpn: u64, size: u8, asid: Asid) -> Self {
        debug_assert!(vpn < 1 << 44, "page number {vpn:#x} beyond a 5-level gVA");
        u128::from(vpn) | (u128::from(size) << 44) | (u128::from(asid.0) << 64)
    }
    #[inline]
    fn asid(self) -> u32 {
        (self >> 64) as u32
    }
}

#[inline]
fn key<K: TlbKey>(vpn: u64, size: u8, asid: Asid) -> K {
    K::make(vpn, size, asid)
}

#[inline]
fn asid_of<K: TlbKey>(key: K) -> u32 {
    key.asid()
}

/// Result of a hit: the 4 KiB frames of the accessed page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlbHit {
    /// gPFN of the 4 KiB frame holding the address.
    pub gpfn: u64,
    /// hPFN of the 4 KiB frame holding the address.
    pub hpfn: u64,
}

impl<K: TlbKey> TlbSet<K> {
    /// Empty TLBs with the configured geometries.
    pub fn new(c: &TlbConfig) -> Self {
        TlbSet {
            l1d: [
                SetAssoc::new(c.l1d_4k),
                SetAssoc::new(c.l1d_2m),
                SetAssoc::new(c.l1d_1g),
            ],
            l1i: [
                SetAssoc::new(c.l1i_4k),
                SetAssoc::new(c.l1i_2m),
                SetAssoc::new(c.l1i_1g),
            ],
            stlb: SetAssoc::new(c.stlb),
            any_huge: false,
            any_giant: false,
            clean_miss: None,
        }
    }

    /// Look `va` up for a fetch (`fetch`), a store (`write`) or a load.
    /// An entry that lacks the needed right counts as a miss (the walk that
    /// follows sets the dirty bit or raises the fault).
    #[inline(always)]
    pub fn lookup(
        &mut self,
        asid: Asid,
        va: u64,
        fetch: bool,
        write: bool,
    ) -> (TlbLevel, Option<TlbHit>) {
        let vpn = va >> PAGE_SHIFT;
        let hvpn = va >> HUGE_SHIFT;
        let gvpn = va >> GIANT_SHIFT;
        let usable = |e: &TlbEntry| (!write || e.write_ok()) && (!fetch || e.exec_ok());
        self.clean_miss = None;
        let mut found = false;
        let l1 = if fetch { &mut self.l1i } else { &mut self.l1d };
        if let Some(e) = l1[0].lookup(vpn, key::<K>(vpn, 0, asid)) {
            found = true;
            if usable(&e) {
                return (
                    TlbLevel::L1,
                    Some(TlbHit {
                        gpfn: e.gpfn(),
                        hpfn: e.hpfn(),
                    }),
                );
            }
        }
        if self.any_huge {
            if let Some(e) = l1[1].lookup(hvpn, key::<K>(hvpn, 1, asid)) {
                found = true;
                if usable(&e) {
                    return (TlbLevel::L1, Some(split(e, vpn, HUGE_SHIFT)));
                }
            }
        }
        if self.any_giant {
            if let Some(e) = l1[2].lookup(gvpn, key::<K>(gvpn, 2, asid)) {
                found = true;
                if usable(&e) {
                    return (TlbLevel::L1, Some(split(e, vpn, GIANT_SHIFT)));
                }
            }
        }
        if let Some(e) = self.stlb.lookup(vpn, key::<K>(vpn, 0, asid)) {
            found = true;
            if usable(&e) {
                l1[0].insert(vpn, key::<K>(vpn, 0, asid), e);
                return (
                    TlbLevel::Stlb,
                    Some(TlbHit {
                        gpfn: e.gpfn(),
                        hpfn: e.hpfn(),
                    }),
                );
            }
        }
        if self.any_huge {
            if let Some(e) = self.stlb.lookup(hvpn, key::<K>(hvpn, 1, asid)) {
                found = true;
                if usable(&e) {
                    l1[1].insert(hvpn, key::<K>(hvpn, 1, asid), e);
                    return (TlbLevel::Stlb, Some(split(e, vpn, HUGE_SHIFT)));
                }
            }
        }
        if self.any_giant {
            if let Some(e) = self.stlb.lookup(gvpn, key::<K>(gvpn, 2, asid)) {
                found = true;
                if usable(&e) {
                    l1[2].insert(gvpn, key::<K>(gvpn, 2, asid), e);
                    return (TlbLevel::Stlb, Some(split(e, vpn, GIANT_SHIFT)));
                }
            }
        }
        if !found {
            // Every probe missed (the huge ones are skipped only while no
            // entry of their size exists), so no page size is cached anywhere.
            self.clean_miss = Some((asid.0, vpn, fetch));
        }
        (TlbLevel::Miss, None)
    }

    /// Fill the STLB and the L1 TLB for the access kind after a walk.
    #[inline(always)]
    pub fn insert(&mut self, asid: Asid, va: u64, size: PageSize, fetch: bool, e: TlbEntry) {
        let class = size.leaf_level() - 1;
        self.any_huge |= class == 1;
        self.any_giant |= class == 2;
        let vpn = va >> size.shift();
        let k = key::<K>(vpn, class, asid);
        let l1 = if fetch { &mut self.l1i } else { &mut self.l1d };
        if self.clean_miss.take() == Some((asid.0, va >> PAGE_SHIFT, fetch)) {
            self.stlb.insert_new(vpn, k, e);
            l1[usize::from(class)].insert_new(vpn, k, e);
        } else {
            self.stlb.insert(vpn, k, e);
            l1[usize::from(class)].insert(vpn, k, e);
        }
    }

    /// INVLPG: drop the entries for `va` in `asid`, every page size.
    pub fn invlpg(&mut self, asid: Asid, va: u64) {
        self.clean_miss = None;
        for (class, shift) in [(0u8, PAGE_SHIFT), (1, HUGE_SHIFT), (2, GIANT_SHIFT)] {
            let i = usize::from(class);
            let vpn = va >> shift;
            let [d, ins, stlb] = [&mut self.l1d[i], &mut self.l1i[i], &mut self.stlb];
            for c in [d, ins, stlb] {
                c.remove(vpn, key::<K>(vpn, class, asid));
            }
        }
    }

    /// Drop every entry of one address space (CR3 write without PCID, INVPCID).
    pub fn flush_asid(&mut self, asid: Asid) {
        self.retain(|k| asid_of(k) != asid.0);
    }

    /// Drop every entry of one VPID (INVVPID single context).
    pub fn flush_vpid(&mut self, vpid: u16) {
        self.retain(|k| asid_of(k) >> 12 != u32::from(vpid));
    }

    /// Drop everything.
    pub fn flush_all(&mut self) {
        self.retain(|_| false);
    }

    fn retain(&mut self, keep: impl Fn(K) -> bool + Copy) {
        self.clean_miss = None;
        for c in self.l1d.iter_mut().chain(self.l1i.iter_mut()) {
            c.retain(keep);
        }
        self.stlb.retain(keep);
    }
}

/// The 4 KiB frames of page `vpn` in the huge entry `e` of `1 << shift` bytes.
#[inline]
fn split(e: TlbEntry, vpn: u64, shift: u32) -> TlbHit {
    let off = vpn & ((1 << (shift - PAGE_SHIFT)) - 1);
    TlbHit {
        gpfn: e.gpfn() + off,
        hpfn: e.hpfn() + off,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(f: u64) -> TlbEntry {
        TlbEntry::new(f, f + 100, true, true)
    }

    #[test]
    fn miss_then_l1_hit_then_stlb_hit_after_l1_eviction() {
        let mut t = Tlbs::new(&TlbConfig::default(), 4);
        let a = Asid::new(1, 5);
        assert_eq!(t.lookup(a, 0x1000, false, false).0, TlbLevel::Miss);
        t.insert(a, 0x1000, PageSize::Size4K, false, entry(7));
        assert_eq!(
            t.lookup(a, 0x1abc, false, false),
            (TlbLevel::L1, Some(TlbHit { gpfn: 7, hpfn: 107 }))
        );
        // 4-way L1 DTLB with 16 sets: 4 more pages in set 1 evict page 1 from L1, not the 128-set STLB.
        for i in 1..=4u64 {
            let va = (1 + 16 * i) << 12;
            t.insert(a, va, PageSize::Size4K, false, entry(i));
        }
        assert_eq!(t.lookup(a, 0x1000, false, false).0, TlbLevel::Stlb);
    }

    #[test]
    fn tags_separate_address_spaces_and_rights() {
        let mut t = Tlbs::new(&TlbConfig::default(), 4);
        let a = Asid::new(1, 1);
        let b = Asid::new(1, 2);
        let ro = TlbEntry::new(3, 103, false, true);
        assert_eq!(
            (ro.gpfn(), ro.hpfn(), ro.write_ok(), ro.exec_ok()),
            (3, 103, false, true)
        );
        t.insert(a, 0x5000, PageSize::Size4K, false, ro);
        assert_eq!(t.lookup(b, 0x5000, false, false).0, TlbLevel::Miss);
        assert_eq!(
            t.lookup(a, 0x5000, false, true).0,
            TlbLevel::Miss,
            "store needs write_ok"
        );
        assert_eq!(t.lookup(a, 0x5000, false, false).0, TlbLevel::L1);
        t.flush_asid(a);
        assert_eq!(t.lookup(a, 0x5000, false, false).0, TlbLevel::Miss);
    }

    #[test]
    fn vpid_tag_holds_all_16_bits() {
        // VPIDs 0x0001 and 0x1001 (and 0x8001) agree in their low 12 bits:
        // a tag narrower than 16 bits would alias them.
        let mut t = Tlbs::new(&TlbConfig::default(), 4);
        let vpids = [0x0001u16, 0x1001, 0x8001, 0xffff];
        for (i, &v) in vpids.iter().enumerate() {
            let a = Asid::new(v, 0xfff);
            assert_eq!(a.vpid(), v);
            t.insert(
                a,
                0x7fff_ffff_f000,
                PageSize::Size4K,
                false,
                entry(i as u64),
            );
        }
        for (i, &v) in vpids.iter().enumerate() {
            let a = Asid::new(v, 0xfff);
            let (lvl, hit) = t.lookup(a, 0x7fff_ffff_f000, false, false);
            assert_eq!(
                (lvl, hit.unwrap().gpfn),
                (TlbLevel::L1, i as u64),
                "VPID {v:#x}"
            );
        }
        t.flush_vpid(0x1001);
        let miss = |t: &mut Tlbs, v| {
            t.lookup(Asid::new(v, 0xfff), 0x7fff_ffff_f000, false, false)
                .0
        };
        assert_eq!(miss(&mut t, 0x1001), TlbLevel::Miss);
        assert_eq!(miss(&mut t, 0x0001), TlbLevel::L1);
        assert_eq!(miss(&mut t, 0xffff), TlbLevel::L1);
    }

    #[test]
    fn huge_entry_covers_2m_and_invlpg_drops_it() {
        let mut t = Tlbs::new(&TlbConfig::default(), 4);
        let a = Asid::new(0, 0);
        t.insert(a, 0x40_0000, PageSize::Size2M, false, entry(1024));
        let (lvl, hit) = t.lookup(a, 0x40_0000 + 5 * 4096 + 7, false, false);
        assert_eq!(lvl, TlbLevel::L1);
        assert_eq!(hit.unwrap().gpfn, 1029);
        t.invlpg(a, 0x41_0000);
        assert_eq!(t.lookup(a, 0x40_0000, false, false).0, TlbLevel::Miss);
    }

    #[test]
    fn giant_entry_covers_1g_apart_from_2m_entries_and_invlpg_drops_it() {
        for levels in [4, 5] {
            let mut t = Tlbs::new(&TlbConfig::default(), levels);
            let a = Asid::new(3, 7);
            let g = 0x7f00_0000_0000u64; // 1 GiB-aligned
            t.insert(a, g, PageSize::Size1G, false, entry(1 << 18));
            // A 2 MiB entry with the same page number in 2 MiB units as the
            // 1 GiB one has in 1 GiB units must not alias it.
            t.insert(a, (g >> 30) << 21, PageSize::Size2M, false, entry(7 << 9));
            let (lvl, hit) = t.lookup(a, g + (700 << 20) + 5 * 4096, false, false);
            assert_eq!(lvl, TlbLevel::L1);
            assert_eq!(hit.unwrap().gpfn, (1 << 18) + (700 << 8) + 5);
            assert_eq!(
                t.lookup(a, (g >> 30) << 21, false, false).1.unwrap().gpfn,
                7 << 9
            );
            // Evicted from the 4-entry L1 array by four more gigabytes, it is
            // found in the STLB.
            for i in 1..=4u64 {
                t.insert(a, g + (i << 30), PageSize::Size1G, false, entry(i << 18));
            }
            assert_eq!(t.lookup(a, g + 4096, false, false).0, TlbLevel::Stlb);
            // A fetch finds no 1 GiB ITLB array (0 entries) but the STLB.
            assert_eq!(t.lookup(a, g + 4096, true, false).0, TlbLevel::Stlb);
            t.invlpg(a, g + (3 << 28));
            assert_eq!(t.lookup(a, g, false, false).0, TlbLevel::Miss, "{levels}");
        }
    }
}
