//! Hardware page walkers: the 1-D walk (native, shadow, Xen PV direct tables)
//! and the 2-D walk (guest table over EPT) [SDM Vol. 3 4.5, 29.3; B08].
//!
//! A walker reads real entries from table memory, sets accessed/dirty bits
//! as hardware does, uses and fills the walk caches, and appends every
//! memory reference to the [`WalkRecord`] in [`Hw`]. It does not price
//! anything: the cost model does, from the record.

use super::cache::SetAssoc;
use super::line_cache::PtCache;
use super::pwc::Pwc;
use super::tlb::{Asid, Tlbs};
use super::walk::{CacheLookups, Dim, TableMem, WalkRecord, WalkRef};
use crate::addr::{pt_index, PageSize, FRAMES_PER_HUGE};
use crate::config::Config;
use crate::pte::{ept, x86};

/// The translation hardware of one core: TLBs, walk caches, the line cache
/// for page-table entries, and the record of the current walk.
#[derive(Clone, Debug)]
pub struct Hw {
    /// L1 TLBs and STLB.
    pub tlbs: Tlbs,
    /// Paging-structure caches of the 1-D tables / the guest dimension.
    pub pwc: Pwc,
    /// Paging-structure caches of the EPT (nested dimension).
    pub ept_pwc: Pwc,
    /// Nested TLB: gPFN -> hPFN, keyed by VPID.
    pub ntlb: SetAssoc<u64>,
    /// Cache of page-table lines.
    pub ptcache: PtCache,
    /// References of the walk in progress (cleared by the caller).
    pub rec: WalkRecord,
    /// Paging levels of the running guest's tables: 4, or 5 with CR4.LA57
    /// [SDM 4.5] (`guest.levels`). Walks of guest, shadow and PV tables
    /// start at this level.
    pub levels: u8,
}

impl Hw {
    /// Cold hardware with the configured geometries.
    pub fn new(c: &Config) -> Self {
        let w = &c.walk_caches;
        Hw {
            tlbs: Tlbs::new(&c.tlb, c.guest.levels),
            pwc: Pwc::new(w.pml5e, w.pml4e, w.pdpte, w.pde),
            ept_pwc: Pwc::new(w.ept_pml5e, w.ept_pml4e, w.ept_pdpte, w.ept_pde),
            ntlb: SetAssoc::new(w.nested_tlb),
            ptcache: PtCache::new(&c.pt_cache),
            rec: WalkRecord::default(),
            levels: c.guest.levels,
        }
    }

    /// Empty every TLB and walk cache (the page-table line cache keeps its
    /// lines: it only decides latency, not reference counts).
    pub fn flush_translation_caches(&mut self) {
        self.tlbs.flush_all();
        self.pwc.flush_all();
        self.ept_pwc.flush_all();
        self.ntlb.clear();
    }

    /// The deepest PSC entry of the guest / 1-D tables for `va` (as
    /// [`Pwc::lookup`]), counted in the walk record.
    #[inline]
    pub fn psc_lookup(&mut self, asid: Asid, va: u64) -> Option<(u8, u64)> {
        self.psc_lookup_in(Runtime, asid, va)
    }

    /// [`Hw::psc_lookup`] with the paging levels of geometry `g`.
    #[inline]
    fn psc_lookup_in<G: Geometry>(&mut self, g: G, asid: Asid, va: u64) -> Option<(u8, u64)> {
        let hit = self.pwc.lookup(asid, va, g.levels(self));
        self.rec.lookups().psc[CacheLookups::slot(hit)] += 1;
        hit
    }

    /// INVVPID single-context: drop the linear and combined mappings (TLB
    /// and PSC entries) of one VPID, every PCID [SDM 29.4.3.3]. With VPIDs
    /// off every VM runs as VPID 0, so VPID 0 is what a VM exit or entry
    /// flushes [SDM 29.4.3.1].
    pub fn invvpid_single(&mut self, vpid: u16) {
        self.tlbs.flush_vpid(vpid);
        self.pwc.flush_vpid(vpid);
    }

    /// INVEPT single-context for the EPT tagged `ept_tag`, used by the VM
    /// whose VPID is `vpid`: its guest-physical mappings (nested TLB, EPT
    /// PSCs) and the combined mappings derived from them (that VPID's TLB
    /// and PSC entries) go [SDM 29.4.3.3].
    pub fn invept_single(&mut self, ept_tag: u16, vpid: u16) {
        self.ntlb
            .retain(|k| (k >> NTLB_TAG_SHIFT) as u16 != ept_tag);
        self.ept_pwc.flush_vpid(ept_tag);
        self.invvpid_single(vpid);
    }

    #[inline]
    fn reference(&mut self, hpa: u64, level: u8, dim: Dim) {
        let cache_hit = self.ptcache.access(hpa);
        self.rec.push(WalkRef {
            hpa,
            level,
            dim: dim as u8,
            cache_hit,
        });
    }
}

/// The EPT a 2-D walk translates through: its table pages, its root (the
/// EPTP's hPFN) and the tag of its guest-physical mappings in the nested
/// TLB and EPT PSCs (hardware tags them by EPTP).
#[derive(Debug)]
pub struct EptRef<'a, E> {
    /// Table pages holding the EPT.
    pub tables: &'a E,
    /// hPFN of the EPT root (PML4, or PML5 for a 5-level EPT).
    pub root: u64,
    /// Levels of the EPT (the EPTP's page-walk length): 4 or 5.
    pub levels: u8,
    /// Level of every leaf of this EPT: 1 (4 KiB host pages), 2 (2 MiB)
    /// or 3 (1 GiB); the host maps all guest memory in pages of one size.
    pub leaf_level: u8,
    /// Tag of this EPT's nested-TLB and EPT-PSC entries (16 bits).
    pub tag: u16,
}

// Manual impls: a shared reference is Copy whatever `E` is.
impl<E> Clone for EptRef<'_, E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E> Copy for EptRef<'_, E> {}

/// What an access needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Rights {
    /// A store or read-modify-write.
    pub write: bool,
    /// An instruction fetch.
    pub fetch: bool,
}

/// A successful walk: what goes into the TLB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// First frame of the mapped page in the walked tables' output space
    /// (gPFN for native and guest tables, hPFN for shadow and PV tables).
    pub frame: u64,
    /// Size of the mapping.
    pub size: PageSize,
    /// Writable and dirty after this walk.
    pub write_ok: bool,
    /// NX clear.
    pub exec_ok: bool,
}

impl Rights {
    /// The EPT rights the access needs at its final gPA: X for a fetch,
    /// W for a store, R for a load.
    #[inline]
    pub fn ept_bits(self) -> u64 {
        if self.fetch {
            ept::X
        } else if self.write {
            ept::W
        } else {
            ept::R
        }
    }
}

impl Leaf {
    /// The 4 KiB frame holding `va`.
    #[inline]
    pub fn frame_of(&self, va: u64) -> u64 {
        match self.size {
            PageSize::Size4K => self.frame,
            PageSize::Size2M => self.frame + ((va >> 12) & (FRAMES_PER_HUGE - 1)),
            PageSize::Size1G => self.frame + ((va >> 12) & (PageSize::Size1G.frames() - 1)),
        }
    }
}

/// Why a walk stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkFault {
    /// An entry at `level` is not present (#PF, or a hidden fault in shadow mode).
    NotPresent {
        /// Level of the missing entry.
        level: u8,
    },
    /// The entry at `level` forbids the access (write to read-only, fetch from NX).
    Protection {
        /// Level of the forbidding entry.
        level: u8,
    },
    /// The EPT does not map this guest frame with the rights the access
    /// needs (not present, or read-only for a store): a VM exit.
    EptViolation {
        /// The guest-physical frame.
        gpfn: u64,
    },
}

/// Walk an x86-64 table of `hw.levels` levels rooted at `root` for `va`, as the hardware
/// does on a TLB miss: continue from the deepest PWC hit, read one entry per
/// level through the line cache, check rights, set A (and D on a write).
///
/// # Errors
/// A [`WalkFault`] naming the level where the walk stopped.
#[inline]
pub fn walk_1d<T: TableMem>(
    hw: &mut Hw,
    tables: &mut T,
    dim: Dim,
    root: u64,
    asid: Asid,
    va: u64,
    r: Rights,
) -> Result<Leaf, WalkFault> {
    if hw.levels == 4 {
        walk_1d_in(Default4, hw, tables, dim, root, asid, va, r)
    } else {
        walk_1d_in(Runtime, hw, tables, dim, root, asid, va, r)
    }
}

/// [`walk_1d`] in geometry `g`.
#[inline]
#[allow(clippy::too_many_arguments)]
fn walk_1d_in<G: Geometry, T: TableMem>(
    g: G,
    hw: &mut Hw,
    tables: &mut T,
    dim: Dim,
    root: u64,
    asid: Asid,
    va: u64,
    r: Rights,
) -> Result<Leaf, WalkFault> {
    let (level, table) = hw
        .psc_lookup_in(g, asid, va)
        .unwrap_or((g.levels(hw), root));
    match walk_1d_from(hw, tables, dim, level, table, asid, va, r)? {
        ShadowStep::Leaf(l) => Ok(l),
        ShadowStep::Switch { .. } => {
            unreachable!("switching entries exist only in agile shadow tables")
        }
    }
}

/// A 2-D walk: the guest's table (rooted at gPFN `root`) is walked for `va`,
/// every guest table page and the final gPA translated through the EPT
/// `ept`, with the nested TLB and EPT PSCs in front \[B08\]. Guest table
/// references need EPT read rights; the final gPA needs what the access
/// needs ([`Rights::ept_bits`]); the TLB entry gets the rights both
/// dimensions grant.
/// The result's frame is the gPFN; [`Walk2d::hpfn`] the hPFN. The TLB entry
/// is 4 KiB: the EPT maps 4 KiB pages, so a 2 MiB guest page is splintered.
///
/// # Errors
/// A guest [`WalkFault::NotPresent`] / [`WalkFault::Protection`], or an
/// [`WalkFault::EptViolation`] for a guest frame the EPT lacks.
#[inline]
#[allow(clippy::too_many_arguments)]
pub fn walk_2d<G: TableMem, E: TableMem>(
    hw: &mut Hw,
    guest: &mut G,
    ept: EptRef<'_, E>,
    root: u64,
    asid: Asid,
    va: u64,
    r: Rights,
) -> Result<Walk2d, WalkFault> {
    if Default4::matches(hw, &ept) {
        let g = Default4;
        let (level, table) = hw
            .psc_lookup_in(g, asid, va)
            .unwrap_or((g.levels(hw), root));
        walk_2d_in(g, hw, guest, ept, level, table, None, 0, asid, va, r)
    } else {
        let g = Runtime;
        let (level, table) = hw
            .psc_lookup_in(g, asid, va)
            .unwrap_or((g.levels(hw), root));
        walk_2d_in(g, hw, guest, ept, level, table, None, 0, asid, va, r)
    }
}

/// The rest of a 2-D walk from guest table gPFN `table` at `level` (4 = the
/// PML4, 5 = the PML5) down: what [`walk_2d`] does after its PWC lookup, and what an agile
/// walk does once a switching entry sends it from the shadow table into the
/// guest's table \[AP16\].
///
/// # Errors
/// As [`walk_2d`].
#[inline]
#[allow(clippy::too_many_arguments)]
pub fn walk_2d_from<G: TableMem, E: TableMem>(
    hw: &mut Hw,
    guest: &mut G,
    ept: EptRef<'_, E>,
    level: u8,
    table: u64,
    asid: Asid,
    va: u64,
    r: Rights,
) -> Result<Walk2d, WalkFault> {
    walk_2d_tagged(hw, guest, ept, level, table, None, 0, asid, va, r)
}

/// Agile paging \[AP16\]: a shadow entry with this bit set (bit 52, ignored by
/// x86-64 paging and available to software [SDM 4.5]) is a *switching
/// entry*: its frame is the hPFN of the guest's next-level table, and the
/// rest of the walk is 2-D from there.
pub const SWITCH: u64 = 1 << 52;

/// Agile paging: tag on a PSC entry whose frame is the hPFN of a guest table
/// reached through a switching entry (the walk resumes 2-D there, the first
/// reference at that hPA).
pub const PSC_SWITCHED: u64 = 1 << 62;

/// Agile paging: tag on a PSC entry whose frame is the gPFN of a guest table
/// (the nested part of a walk; resuming translates it through the EPT).
pub const PSC_GUEST: u64 = 1 << 61;

/// Where the shadow part of an agile walk ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShadowStep {
    /// A shadow leaf: the whole walk was 1-D.
    Leaf(Leaf),
    /// A switching entry: continue 2-D in the guest table at `level` (1 =
    /// the PT), whose hPFN is `hpfn`.
    Switch {
        /// Level of the guest table the switching entry points to.
        level: u8,
        /// Its hPFN.
        hpfn: u64,
    },
}

/// The shadow part of an agile walk \[AP16\], from shadow table hPFN `table`
/// at `level`: as [`walk_1d`] without the PWC lookup (the caller did it),
/// stopping at a [`SWITCH`] entry, which it caches in the PSC tagged
/// [`PSC_SWITCHED`]. References count in the shadow dimension.
///
/// # Errors
/// A [`WalkFault`] naming the level where the walk stopped.
#[inline]
#[allow(clippy::too_many_arguments)]
pub fn walk_shadow_part<T: TableMem>(
    hw: &mut Hw,
    tables: &mut T,
    level: u8,
    table: u64,
    asid: Asid,
    va: u64,
    r: Rights,
) -> Result<ShadowStep, WalkFault> {
    walk_1d_from(hw, tables, Dim::Shadow, level, table, asid, va, r)
}

/// The 1-D walk loop shared by [`walk_1d`] and [`walk_shadow_part`]: from
/// table `table` at `level`, stopping at a leaf or at a [`SWITCH`] entry
/// (which only agile shadow tables contain).
#[inline]
#[allow(clippy::too_many_arguments)]
fn walk_1d_from<T: TableMem>(
    hw: &mut Hw,
    tables: &mut T,
    dim: Dim,
    level: u8,
    table: u64,
    asid: Asid,
    va: u64,
    r: Rights,
) -> Result<ShadowStep, WalkFault> {
    let (mut level, mut table) = (level, table);
    loop {
        let idx = pt_index(va, level);
        let e = tables.read(table, idx);
        hw.reference((table << 12) | (idx as u64 * 8), level, dim);
        let leaf = leaf_size(level, e);
        let e =
            check_and_mark(tables, table, idx, e, leaf.is_some(), r).map_err(|f| f.at(level))?;
        if let Some(size) = leaf {
            return Ok(ShadowStep::Leaf(leaf_of(e, size)));
        }
        let next = x86::frame(e);
        if e & SWITCH != 0 {
            hw.pwc.insert_new(asid, va, level, next | PSC_SWITCHED);
            return Ok(ShadowStep::Switch {
                level: level - 1,
                hpfn: next,
            });
        }
        hw.pwc.insert_new(asid, va, level, next);
        table = next;
        level -= 1;
    }
}

/// [`walk_2d_from`] with two agile-paging options: `table_hpfn`, the hPFN of
/// the first guest table when a switching entry gave it (no EPT walk for
/// it), and `psc_tag`, OR-ed into every PSC entry it inserts ([`PSC_GUEST`]
/// for agile, 0 otherwise).
///
/// # Errors
/// As [`walk_2d`].
#[inline]
#[allow(clippy::too_many_arguments)]
pub fn walk_2d_tagged<G: TableMem, E: TableMem>(
    hw: &mut Hw,
    guest: &mut G,
    ept: EptRef<'_, E>,
    level: u8,
    table: u64,
    table_hpfn: Option<u64>,
    psc_tag: u64,
    asid: Asid,
    va: u64,
    r: Rights,
) -> Result<Walk2d, WalkFault> {
    if Default4::matches(hw, &ept) {
        walk_2d_in(
            Default4, hw, guest, ept, level, table, table_hpfn, psc_tag, asid, va, r,
        )
    } else {
        walk_2d_in(
            Runtime, hw, guest, ept, level, table, table_hpfn, psc_tag, asid, va, r,
        )
    }
}

/// [`walk_2d_tagged`] in geometry `g`.
#[inline]
#[allow(clippy::too_many_arguments)]
fn walk_2d_in<G: Geometry, Gm: TableMem, E: TableMem>(
    g: G,
    hw: &mut Hw,
    guest: &mut Gm,
    ept: EptRef<'_, E>,
    level: u8,
    table: u64,
    table_hpfn: Option<u64>,
    psc_tag: u64,
    asid: Asid,
    va: u64,
    r: Rights,
) -> Result<Walk2d, WalkFault> {
    let (mut level, mut table, mut known) = (level, table, table_hpfn);
    loop {
        // Read the guest entry first: it depends only on the gPFN, so the
        // simulator's own cache miss on it overlaps the EPT walk below.
        let idx = pt_index(va, level);
        let e = guest.read(table, idx);
        let table_hpfn = match known.take() {
            Some(h) => h,
            None => nested_translate_in(g, hw, ept, table, ept::R)?.0,
        };
        hw.reference((table_hpfn << 12) | (idx as u64 * 8), level, Dim::Guest);
        let leaf = leaf_size(level, e);
        let e = check_and_mark(guest, table, idx, e, leaf.is_some(), r).map_err(|f| f.at(level))?;
        if let Some(size) = leaf {
            let l = leaf_of(e, size);
            let gpfn = l.frame_of(va);
            let (hpfn, granted) = nested_translate_in(g, hw, ept, gpfn, r.ept_bits())?;
            // The TLB entry covers the smaller of the guest page and the
            // host page backing it [B08].
            let ept_leaf = g.ept_leaf(&ept);
            let size = if size == PageSize::Size4K || ept_leaf == 1 {
                PageSize::Size4K
            } else {
                PageSize::of_level(size.leaf_level().min(ept_leaf))
            };
            let off = gpfn & (size.frames() - 1);
            return Ok(Walk2d {
                leaf: Leaf {
                    frame: gpfn - off,
                    size,
                    write_ok: l.write_ok && granted & ept::W != 0,
                    exec_ok: l.exec_ok && granted & ept::X != 0,
                },
                hpfn: hpfn - off,
            });
        }
        let next = x86::frame(e);
        hw.pwc.insert_new(asid, va, level, next | psc_tag);
        table = next;
        level -= 1;
    }
}

/// A successful 2-D walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walk2d {
    /// The guest translation, as large as both the guest page and the host
    /// page allow (a 2 MiB guest page over 4 KiB host pages is splintered
    /// to the 4 KiB frame holding the address); `frame` is its first gPFN.
    pub leaf: Leaf,
    /// First hPFN of that translation.
    pub hpfn: u64,
}

/// Translate a gPFN through the nested TLB or an EPT walk (up to 4
/// references, 5 for a 5-level EPT), needing the EPT rights `need` (bits of [`ept::RWX`]) at
/// every level. Returns the hPFN and the rights of its EPT leaf. The nested
/// TLB keeps the leaf's rights with the hPFN; a cached entry lacking a
/// right sends the walker to the EPT, as a TLB entry lacking one does.
///
/// # Errors
/// [`WalkFault::EptViolation`] when the EPT has no leaf for `gpfn` or an
/// entry on the way lacks a needed right.
#[inline]
pub fn nested_translate<E: TableMem>(
    hw: &mut Hw,
    ept: EptRef<'_, E>,
    gpfn: u64,
    need: u64,
) -> Result<(u64, u64), WalkFault> {
    if Default4::matches(hw, &ept) {
        nested_translate_in(Default4, hw, ept, gpfn, need)
    } else {
        nested_translate_in(Runtime, hw, ept, gpfn, need)
    }
}

/// [`nested_translate`] in geometry `g`: the nested-TLB lookup inline in
/// the walk, the EPT walk behind it out of line ([`ept_walk`]).
#[inline(always)]
fn nested_translate_in<G: Geometry, E: TableMem>(
    g: G,
    hw: &mut Hw,
    ept: EptRef<'_, E>,
    gpfn: u64,
    need: u64,
) -> Result<(u64, u64), WalkFault> {
    debug_assert!(gpfn < 1 << 40, "gPFN {gpfn:#x} beyond 52-bit gPAs");
    // The nested TLB caches EPT leaves of their size: one entry per host
    // page, keyed by its number.
    let shift = 9 * u32::from(g.ept_leaf(&ept) - 1);
    let hpn = gpfn >> shift;
    let off = gpfn & ((1 << shift) - 1);
    let key = hpn | (u64::from(ept.tag) << NTLB_TAG_SHIFT);
    let cached = hw.ntlb.lookup(hpn, key);
    if let Some(v) = cached {
        let rights = v >> NTLB_RIGHTS_SHIFT;
        if rights & need == need {
            hw.rec.lookups().nested_tlb_hits += 1;
            return Ok(((v & !(ept::RWX << NTLB_RIGHTS_SHIFT)) + off, rights));
        }
    }
    match ept_walk(g, hw, &ept, gpfn, need, cached.is_some()) {
        (_, EPT_DENIED) => Err(WalkFault::EptViolation { gpfn }),
        ok => Ok(ok),
    }
}

/// What [`ept_walk`] returns as the rights of a walk that found no leaf
/// with the needed rights (no real rights value: those are 3 bits).
const EPT_DENIED: u64 = u64::MAX;

/// The nested TLB missed `gpfn` (or, `stale`, held it without a right
/// `need` asks for): walk the EPT from the deepest EPT PSC hit, fill the
/// nested TLB and the EPT PSCs, and return `(hPFN, rights of the leaf)`,
/// or `(0, EPT_DENIED)` for an EPT violation. A pair, so the result comes
/// back in registers. `ept` by reference: the walk reads two of its
/// fields, a copy would cost more. Always inlined (since session 15; it
/// was a call): in nested `random` that saves 16 instructions and 0.4
/// mispredicted branches per access, the call's saves and set-up, and
/// under thin LTO the call went through the GOT (BENCHMARKS.md).
#[inline(always)]
fn ept_walk<G: Geometry, E: TableMem>(
    g: G,
    hw: &mut Hw,
    ept: &EptRef<'_, E>,
    gpfn: u64,
    need: u64,
    stale: bool,
) -> (u64, u64) {
    let tag = Asid::new(ept.tag, 0);
    let (ept_levels, ept_leaf) = (g.ept_levels(ept), g.ept_leaf(ept));
    let shift = 9 * u32::from(ept_leaf - 1);
    let hpn = gpfn >> shift;
    let off = gpfn & ((1 << shift) - 1);
    let key = hpn | (u64::from(ept.tag) << NTLB_TAG_SHIFT);
    hw.rec.lookups().nested_tlb_misses += 1;
    let gpa = gpfn << 12;
    let ept_hit = hw.ept_pwc.lookup_inlined(tag, gpa, ept_levels);
    hw.rec.lookups().ept_psc[CacheLookups::slot(ept_hit)] += 1;
    let (mut level, mut table) = ept_hit.unwrap_or((ept_levels, ept.root));
    // The first entry apart from the loop: most EPT walks resume at the
    // leaf level (the EPT PDE cache hit), and this straight-line path
    // pays none of the loop's set-up (the line cache's fields held in
    // registers or on the stack across iterations).
    let mut e = ept_read(hw, ept.tables, gpa, level, table);
    if level == ept_leaf && e & need == need {
        return ept_leaf_found(hw, level, e, hpn, key, off, stale);
    }
    loop {
        if e & need != need {
            return (0, EPT_DENIED);
        }
        if level == ept_leaf {
            return ept_leaf_found(hw, level, e, hpn, key, off, stale);
        }
        let next = x86::frame(e);
        hw.ept_pwc.insert_new(tag, gpa, level, next);
        table = next;
        level -= 1;
        e = ept_read(hw, ept.tables, gpa, level, table);
    }
}

/// The end of [`ept_walk`] at the EPT leaf `e` (at `level`, with the
/// rights the walk needs): fill the nested TLB (`hpn`, `key` as in
/// [`nested_translate_in`]; `stale`: it holds the key already) and return
/// `(hPFN of the 4 KiB frame, rights)`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn ept_leaf_found(
    hw: &mut Hw,
    level: u8,
    e: u64,
    hpn: u64,
    key: u64,
    off: u64,
    stale: bool,
) -> (u64, u64) {
    debug_assert!(level == 1 || e & ept::PS != 0, "EPT leaf at level {level}");
    let next = x86::frame(e);
    let rights = e & ept::RWX;
    let v = next | (rights << NTLB_RIGHTS_SHIFT);
    if stale {
        hw.ntlb.insert(hpn, key, v);
    } else {
        hw.ntlb.insert_new(hpn, key, v);
    }
    (next + off, rights)
}

/// Read the EPT entry for `gpa` in the EPT table `table` at `level`, as a
/// walk reference in the nested dimension.
#[inline(always)]
fn ept_read<E: TableMem>(hw: &mut Hw, tables: &E, gpa: u64, level: u8, table: u64) -> u64 {
    let idx = pt_index(gpa, level);
    let e = tables.read(table, idx);
    hw.reference((table << 12) | (idx as u64 * 8), level, Dim::Nested);
    e
}

/// The paging geometry of a walk: guest levels, EPT levels and the EPT
/// leaf level. The walkers are monomorphized per geometry, once with the
/// default's values as constants ([`Default4`]: 4-level guest tables over
/// a 4-level EPT of 4 KiB leaves) and once reading them at run time
/// ([`Runtime`]), so the default walk does no level or host-page
/// arithmetic for the 5-level and huge-host-page support. Each walk picks
/// one with a few compares ([`Default4::matches`]).
trait Geometry: Copy {
    /// Levels of the guest / 1-D tables.
    fn levels(self, hw: &Hw) -> u8;
    /// Levels of the EPT.
    fn ept_levels<E>(self, ept: &EptRef<'_, E>) -> u8;
    /// Level of the EPT's leaves (1 = 4 KiB host pages).
    fn ept_leaf<E>(self, ept: &EptRef<'_, E>) -> u8;
}

/// The default geometry, as constants.
#[derive(Clone, Copy)]
struct Default4;

impl Default4 {
    /// True when the hardware and `ept` have the default geometry.
    #[inline]
    fn matches<E>(hw: &Hw, ept: &EptRef<'_, E>) -> bool {
        hw.levels == 4 && ept.levels == 4 && ept.leaf_level == 1
    }
}

impl Geometry for Default4 {
    #[inline(always)]
    fn levels(self, hw: &Hw) -> u8 {
        debug_assert_eq!(hw.levels, 4);
        4
    }
    #[inline(always)]
    fn ept_levels<E>(self, _: &EptRef<'_, E>) -> u8 {
        4
    }
    #[inline(always)]
    fn ept_leaf<E>(self, _: &EptRef<'_, E>) -> u8 {
        1
    }
}

/// Any geometry, read from the hardware state and the EPT.
#[derive(Clone, Copy)]
struct Runtime;

impl Geometry for Runtime {
    #[inline(always)]
    fn levels(self, hw: &Hw) -> u8 {
        hw.levels
    }
    #[inline(always)]
    fn ept_levels<E>(self, ept: &EptRef<'_, E>) -> u8 {
        ept.levels
    }
    #[inline(always)]
    fn ept_leaf<E>(self, ept: &EptRef<'_, E>) -> u8 {
        ept.leaf_level
    }
}

/// Where a nested-TLB entry keeps its EPT rights (above any hPFN).
const NTLB_RIGHTS_SHIFT: u32 = 61;

/// Where a nested-TLB key keeps the EPT tag (16 bits, above a 40-bit gPFN
/// and its size bits).
const NTLB_TAG_SHIFT: u32 = 44;

pub(crate) enum Check {
    NotPresent,
    Protection,
}

impl Check {
    pub(crate) fn at(self, level: u8) -> WalkFault {
        match self {
            Check::NotPresent => WalkFault::NotPresent { level },
            Check::Protection => WalkFault::Protection { level },
        }
    }
}

/// Check rights on one entry; set A (and D on a leaf for a write) in memory.
#[inline]
pub(crate) fn check_and_mark<T: TableMem>(
    tables: &mut T,
    table: u64,
    idx: usize,
    e: u64,
    leaf: bool,
    r: Rights,
) -> Result<u64, Check> {
    if e & x86::P == 0 {
        return Err(Check::NotPresent);
    }
    if (r.write && e & x86::RW == 0) || (r.fetch && e & x86::NX != 0) {
        return Err(Check::Protection);
    }
    let mut set = x86::A;
    if leaf && r.write {
        set |= x86::D;
    }
    if e & set != set {
        tables.write(table, idx, e | set);
    }
    Ok(e | set)
}

/// The page size when entry `e` at `level` maps a page ([`x86::is_leaf`]);
/// `None` when it points to a next-level table.
#[inline]
pub(crate) fn leaf_size(level: u8, e: u64) -> Option<PageSize> {
    match level {
        _ if !x86::is_leaf(level, e) => None,
        1 => Some(PageSize::Size4K),
        2 => Some(PageSize::Size2M),
        _ => Some(PageSize::Size1G),
    }
}

#[inline]
pub(crate) fn leaf_of(e: u64, size: PageSize) -> Leaf {
    Leaf {
        frame: x86::frame(e),
        size,
        write_ok: e & x86::RW != 0 && e & x86::D != 0,
        exec_ok: e & x86::NX == 0,
    }
}
