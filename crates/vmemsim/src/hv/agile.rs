//! Agile paging \[AP16\]: one walk uses shadow and nested paging. The
//! hardware CR3 holds the shadow root and the walk starts 1-D in the shadow
//! table; a shadow entry with the switching bit ([`SWITCH`], bit 52) holds
//! the hPFN of the guest's next-level table, and the rest of the walk is
//! 2-D from there: the guest entries read, every further guest table and the
//! final gPA translated through the EPT. Cold, with no walk cache, a walk is
//! 4 references fully shadowed, 8 switching to the guest PT, 12 to the PD,
//! 16 to the PDPT, and 20 when the switch is at the root: the hypervisor
//! traps CR3 writes and puts the guest PML4's hPA in the hardware CR3, so
//! the guest root is read without an EPT walk (1 + 3 x 5 + 4) \[AP16\]. With
//! `[agile] root_hpa = false` CR3 holds the guest root's gPA and a root
//! switch is the full 2-D walk, 24.
//!
//! The shadow part is [`Shadow`]'s machinery: shadowed guest table pages are
//! write-protected (a guest PTE store exits and is emulated), a missing
//! shadow entry is a hidden fault (exit, fill from the guest tables), a
//! guest fault found in the shadow part exits and is injected. Guest table
//! pages in nested mode ([`Shadow`]'s `nested` set) have no shadow page and
//! no write protection; in the nested part stores and guest faults do not
//! exit, missing host frames are EPT violations. CR3 writes exit (the
//! hypervisor supplies the shadow root), INVLPG and INVPCID exit as in
//! shadow mode.
//!
//! Policy \[AP16\], per guest table page, on intervals of `[agile]
//! interval_instructions` guest instructions:
//! - two PTE stores to the page within an interval move it to nested mode:
//!   its parent shadow entry becomes a switching entry, so the page's level
//!   and everything below it in that subtree are walked nested; its shadow
//!   page and those below it are dropped and unprotected;
//! - a nested page with no store during a whole interval, and clean for
//!   at least `[agile] clean_refill_costs` (default 100) times the cycles of refilling
//!   its shadow (one hidden fault per present entry), returns to shadow:
//!   \[AP16\]'s interval is ~1 s, against which one table's refill is
//!   negligible; our interval of 1e5 instructions is shorter than one PT's
//!   refill, so without the second condition tables flip back after every
//!   quiet interval and pay the refill again and again (docs/modes.md);
//! - a new address space (a root frame first loaded into CR3 since it was
//!   allocated) starts with its root nested: a short-lived process runs
//!   nested for at least its first interval.
//!
//! Stores to pages that are not write-protected do not exit; the hypervisor
//! sees them as \[AP16\] does, through dirty bits (here: counted for free in
//! `writes`). A frame first touched while the current root is nested is
//! backed in an EPT violation (the kernel's store walks 2-D), otherwise in
//! a hidden fault, as in shadow mode. Every change of mode flushes the VPID's TLB entries and the
//! PSCs, at no exit of its own (decisions are made in an exit or timer tick
//! that happens anyway). The PSCs hold shadow frames, guest table hPFNs
//! behind switching entries ([`PSC_SWITCHED`]) and guest table gPFNs of the
//! nested part ([`PSC_GUEST`]), told apart by tag bits.

use rustc_hash::{FxHashMap, FxHashSet};

use super::shadow::NO_ROOT;
use super::{Core, Fill, GuestFault, Mode, Shadow};
use crate::addr::{Gpa, Gpfn, Gva, Hpfn};
use crate::config::Config;
use crate::guest::GuestMemory;
use crate::mmu::walker::{
    walk_2d_tagged, walk_shadow_part, EptRef, ShadowStep, PSC_GUEST, PSC_SWITCHED, SWITCH,
};
use crate::mmu::TableMem;
use crate::mmu::{Rights, WalkFault};
use crate::pte::x86;
use crate::stats::ExitReason;

const TAGS: u64 = PSC_GUEST | PSC_SWITCHED;

/// Agile paging mode state.
#[derive(Debug)]
pub struct Agile {
    sh: Shadow,
    /// Policy interval, guest instructions.
    interval_instructions: u64,
    /// Index of the current interval.
    interval: u64,
    /// Instruction count ending the current interval.
    next: u64,
    /// PTE stores per guest table page in the current interval.
    writes: FxHashMap<u64, u32>,
    /// Guest roots loaded into CR3 since their frame was last allocated.
    seen_roots: FxHashSet<u64>,
    /// Nested guest table -> instruction count of its last store (or of
    /// its going nested).
    clean_since: FxHashMap<u64, u64>,
    /// Nested guest table -> its present entries, counted at a boundary
    /// while it stays clean (dropped on a store).
    present: FxHashMap<u64, u32>,
    /// Cycles of one hidden-fault refill (VM exit + shadow fill).
    fill_cycles: f64,
    /// Cycles per instruction of the cost model.
    base_cpi: f64,
    /// Clean time a nested table needs, in refills of it.
    clean_refill_costs: f64,
    /// A root switch starts from the guest PML4's hPA (`[agile] root_hpa`).
    root_hpa: bool,
}

impl Agile {
    /// Agile paging with the configured interval.
    pub fn new(cfg: &Config) -> Self {
        let n = cfg.agile.interval_instructions.max(1);
        Agile {
            sh: Shadow::with_config(&cfg.shadow),
            interval_instructions: n,
            interval: 0,
            next: n,
            writes: FxHashMap::default(),
            seen_roots: FxHashSet::default(),
            clean_since: FxHashMap::default(),
            present: FxHashMap::default(),
            fill_cycles: (cfg.cost.vm_exit_cycles + cfg.cost.shadow_fill_cycles) as f64,
            base_cpi: cfg.cost.base_cpi,
            clean_refill_costs: cfg.agile.clean_refill_costs,
            root_hpa: cfg.agile.root_hpa,
        }
    }

    /// Guest table `gpfn` goes nested now (the policy's decision).
    fn go_nested(&mut self, core: &mut Core, gpfn: u64) {
        self.sh.go_nested(core, gpfn, self.interval);
        self.sh.flush_hw(core);
        self.clean_since.insert(gpfn, core.vm.stats.instructions);
        self.present.remove(&gpfn);
    }

    /// True when nested table `g`, clean through the interval just ended,
    /// has been clean long enough against its refill to return to shadow.
    fn clean_long_enough(&mut self, mem: &GuestMemory, now: u64, g: u64) -> bool {
        let since = self.clean_since.get(&g).copied().unwrap_or(0);
        let clean_cycles = (now - since) as f64 * self.base_cpi;
        let n = *self
            .present
            .entry(g)
            .or_insert_with(|| (0..512).filter(|&i| mem.read(g, i) & x86::P != 0).count() as u32);
        clean_cycles >= self.clean_refill_costs * self.fill_cycles * f64::from(n)
    }

    /// Guest table pages currently walked in nested mode.
    pub fn nested_pages(&self) -> usize {
        self.sh.agile.nested.len()
    }

    /// True when guest table `gpfn` is walked in nested mode.
    pub fn is_nested(&self, gpfn: u64) -> bool {
        self.sh.agile.is_nested(gpfn)
    }

    /// Shadow pages held.
    pub fn shadow_pages(&self) -> usize {
        self.sh.shadow_pages()
    }

    /// Move guest table `gpfn` to nested mode now (the policy does this on
    /// the second store in an interval; tests use it to place the switch).
    pub fn force_nested(&mut self, core: &mut Core, gpfn: u64) {
        self.go_nested(core, gpfn);
    }

    /// Return guest table `gpfn` to shadow mode now.
    pub fn force_shadow(&mut self, core: &mut Core, gpfn: u64) {
        self.sh.go_shadow(core, gpfn);
        self.sh.flush_hw(core);
    }

    /// One hardware walk. `Err((fault, nested_part))`.
    fn walk(
        &mut self,
        core: &mut Core,
        mem: &mut GuestMemory,
        va: u64,
        r: Rights,
    ) -> Result<(Fill, usize), (WalkFault, bool)> {
        let asid = core.asid();
        // (level, guest table gPFN, its hPFN if a switching entry gave it)
        let nested_from: (u8, u64, Option<u64>);
        let start = core.hw.psc_lookup(asid, va);
        match start {
            Some((level, f)) if f & PSC_GUEST != 0 => nested_from = (level, f & !TAGS, None),
            Some((level, f)) if f & PSC_SWITCHED != 0 => {
                let h = f & !TAGS;
                let g = core.m2p(Hpfn(h)).expect("switched table is backed").0;
                nested_from = (level, g, Some(h));
            }
            None if self.sh.root == NO_ROOT => {
                // The hardware CR3 holds the guest root's hPA (root_hpa) or gPA.
                let root = core.vm.guest_root;
                let hpa = if self.root_hpa {
                    core.p2m(Gpfn(root)).map(|h| h.0)
                } else {
                    None
                };
                nested_from = (core.hw.levels, root, hpa);
            }
            _ => {
                let (level, table) = start.unwrap_or((core.hw.levels, self.sh.root));
                let step =
                    walk_shadow_part(core.hw, &mut core.host.tables, level, table, asid, va, r)
                        .map_err(|f| (f, false))?;
                match step {
                    ShadowStep::Leaf(l) => {
                        let gpfn = core.leaf_gpfn(mem, Hpfn(l.frame), va).0;
                        return Ok((Fill::of_leaf(&l, gpfn, l.frame), 0));
                    }
                    ShadowStep::Switch { level, hpfn } => {
                        let g = core.m2p(Hpfn(hpfn)).expect("switched table is backed").0;
                        nested_from = (level, g, Some(hpfn));
                    }
                }
            }
        }
        let (level, table, hpfn) = nested_from;
        let ept = EptRef {
            tables: &core.host.tables,
            root: core.vm.eptp,
            levels: core.vm.ept_levels,
            leaf_level: core.vm.host_page.leaf_level(),
            tag: core.vm.ept_tag,
        };
        let w = walk_2d_tagged(
            core.hw, mem, ept, level, table, hpfn, PSC_GUEST, asid, va, r,
        )
        .map_err(|f| (f, true))?;
        let l = w.leaf;
        let fill = Fill::of_leaf(&l, l.frame, w.hpfn);
        // The level of the first guest table walked 2-D (a PSC hit into the
        // nested part counts at the level it resumed; with 5-level tables a
        // switch at the PML5 or the PML4 counts as at the root).
        Ok((fill, usize::from(level).min(4)))
    }
}

impl Mode for Agile {
    fn name(&self) -> &'static str {
        "agile"
    }

    fn host_unmap(&mut self, host: &mut crate::host::HostMemory, gpfn: Gpfn, hpfn: Hpfn) -> u64 {
        self.sh.unmap_frame(host, gpfn, hpfn)
    }

    fn host_mapped(&self, host: &crate::host::HostMemory, gpfn: Gpfn, hpfn: Hpfn) -> bool {
        self.sh.maps_frame(host, gpfn, hpfn)
    }

    fn host_write_protect(
        &mut self,
        host: &mut crate::host::HostMemory,
        gpfn: Gpfn,
        hpfn: Hpfn,
    ) -> u64 {
        self.sh.write_protect_frame(host, gpfn, hpfn)
    }

    fn fill(
        &mut self,
        core: &mut Core,
        mem: &mut GuestMemory,
        va: u64,
        r: Rights,
    ) -> Result<Fill, GuestFault> {
        self.sh.serve_due(core, mem);
        for _ in 0..12 {
            let res = self.walk(core, mem, va, r);
            core.walk_done();
            match res {
                Ok((f, at)) => {
                    core.vm.stats.walks_by_switch[at] += 1;
                    return Ok(f);
                }
                Err((WalkFault::EptViolation { gpfn }, _)) => core.ept_violation(Gpfn(gpfn)),
                // Nested part: the guest's own tables fault, no exit.
                Err((_, true)) => return Err(GuestFault),
                // Shadow part: exit, as in shadow paging.
                Err((_, false)) => self.sh.shadow_fault(core, mem, va, r)?,
            }
        }
        panic!("agile fill of {va:#x} does not converge: agile model bug");
    }

    fn write_pte(&mut self, core: &mut Core, mem: &mut GuestMemory, gpa: Gpa, val: u64) {
        // Trapped and emulated as in shadow paging; then counted.
        self.sh.write_pte(core, mem, gpa, val);
        let gpfn = gpa.page_number();
        let n = self.writes.entry(gpfn).or_insert(0);
        *n += 1;
        if self.sh.agile.is_nested(gpfn) {
            self.clean_since.insert(gpfn, core.vm.stats.instructions);
            self.present.remove(&gpfn);
        } else if *n >= 2 {
            self.go_nested(core, gpfn);
        }
    }

    fn touch_frame(&mut self, core: &mut Core, _mem: &mut GuestMemory, gpfn: Gpfn) {
        let g = gpfn.0;
        // A freshly allocated frame: a root loaded later is a new address space.
        self.seen_roots.remove(&g);
        if self.sh.is_write_protected(g) {
            // A former shadowed table reused: the first store traps.
            core.exit(ExitReason::PtWrite);
            self.sh.unshadow(core, g);
        }
        if self.sh.agile.is_nested(g) {
            // A former nested table reused: no trap; forget it.
            self.sh.go_shadow(core, g);
            self.sh.flush_hw(core);
        }
        if self.sh.root == NO_ROOT {
            // The kernel's store walks 2-D: a missing host frame is an EPT violation.
            if core.p2m(gpfn).is_none() {
                core.ept_violation(gpfn);
            }
            self.sh.cow_touch(core, gpfn, ExitReason::EptViolation);
        } else {
            Shadow::back_on_first_touch(core, gpfn);
            self.sh.cow_touch(core, gpfn, ExitReason::ShadowFault);
        }
    }

    fn write_cr3(&mut self, core: &mut Core, mem: &mut GuestMemory, root: u64, pcid: u16) {
        core.exit(ExitReason::Cr3Write);
        self.sh.serve_due(core, mem);
        core.hw_write_cr3(root, pcid);
        if self.seen_roots.insert(root) {
            // A new address space starts nested [AP16].
            self.go_nested(core, root);
        }
        self.sh.root = if self.sh.agile.is_nested(root) {
            NO_ROOT
        } else {
            self.sh.shadow_page(core, root, core.hw.levels)
        };
        self.sh.resync_reachable(core, mem);
    }

    fn invlpg(&mut self, core: &mut Core, pcid: u16, va: Gva) {
        self.sh.invlpg(core, pcid, va);
    }

    fn flush_pcid(&mut self, core: &mut Core, pcid: u16) {
        self.sh.flush_pcid(core, pcid);
    }

    fn next_boundary(&self) -> u64 {
        self.next
    }

    fn boundary(&mut self, core: &mut Core, mem: &mut GuestMemory) {
        // Nested pages clean over the whole interval just ended, and for
        // long enough against their refill, return.
        let cur = self.interval;
        let now = core.vm.stats.instructions;
        let quiet: Vec<u64> = self
            .sh
            .agile
            .nested
            .iter()
            .filter(|&(g, &since)| since < cur && !self.writes.contains_key(g))
            .map(|(&g, _)| g)
            .collect();
        let back: Vec<u64> = quiet
            .into_iter()
            .filter(|&g| self.clean_long_enough(mem, now, g))
            .collect();
        for &g in &back {
            self.sh.go_shadow(core, g);
            self.clean_since.remove(&g);
            self.present.remove(&g);
        }
        if !back.is_empty() {
            self.sh.flush_hw(core);
        }
        self.writes.clear();
        self.interval += 1;
        while self.next <= core.vm.stats.instructions {
            self.next += self.interval_instructions;
        }
    }
}

/// Agile paging's state inside [`Shadow`]: which guest tables are walked
/// nested and the switching entries that point at them. Empty in shadow mode.
#[derive(Debug, Default)]
pub struct NestedTables {
    /// Guest table gPFNs walked in nested mode -> the policy interval in
    /// which they went nested.
    pub(super) nested: FxHashMap<u64, u64>,
    /// Guest table gPFN -> switching entries (shadow page hPFN, index)
    /// pointing at it.
    switch_of: FxHashMap<u64, Vec<(u64, usize)>>,
}

impl NestedTables {
    /// True when guest table `gpfn` is walked nested.
    #[inline]
    pub(super) fn is_nested(&self, gpfn: u64) -> bool {
        !self.nested.is_empty() && self.nested.contains_key(&gpfn)
    }

    /// Nothing nested (a switch of `selective` to nested paging drops all).
    pub(super) fn clear(&mut self) {
        self.nested.clear();
        self.switch_of.clear();
    }
}

/// Agile paging's additions to the shadow machinery: switching entries and
/// moving guest tables between shadow and nested mode.
impl Shadow {
    /// Switching entry (`sp`, `idx`) to guest table hPFN `hpfn` is gone.
    pub(super) fn forget_switch(&mut self, core: &Core, hpfn: u64, sp: u64, idx: usize) {
        let gpfn = core
            .m2p(Hpfn(hpfn))
            .expect("switching entry to a backed table")
            .0;
        if let Some(v) = self.agile.switch_of.get_mut(&gpfn) {
            v.retain(|&p| p != (sp, idx));
        }
    }

    /// Make shadow entry (`sp`, `idx`) a switching entry to guest table `gpfn`.
    pub(super) fn link_switch(&mut self, core: &mut Core, sp: u64, idx: usize, gpfn: u64) {
        let g = Gpfn(gpfn);
        core.back(g);
        let hpfn = core.p2m(g).expect("just backed").0;
        let se = core.host.tables.read(sp, idx);
        if se & x86::P != 0 && se & SWITCH != 0 && x86::frame(se) == hpfn {
            return;
        }
        if se & x86::P != 0 {
            self.zap(core, sp, idx);
        }
        core.host
            .tables
            .write(sp, idx, x86::make(hpfn, SHADOW_TABLE_FLAGS | SWITCH));
        self.agile
            .switch_of
            .entry(gpfn)
            .or_default()
            .push((sp, idx));
    }

    /// Walk guest table `gpfn` in nested mode from now on (`interval` is
    /// the policy's clock): its shadow page and every shadow page below it
    /// are dropped and unprotected, entries that pointed at them cleared
    /// (the next walk there takes a hidden fault and installs a switching
    /// entry). The caller flushes the TLB and PSCs.
    pub(super) fn go_nested(&mut self, core: &mut Core, gpfn: u64, interval: u64) {
        if self.agile.nested.insert(gpfn, interval).is_some() {
            return;
        }
        self.set_wp(gpfn, false);
        if let Some(sp) = self.sp_of.remove(&gpfn) {
            self.drop_subtree(core, sp);
        }
        if gpfn == core.vm.guest_root {
            self.root = NO_ROOT;
        }
    }

    /// Guest table `gpfn` returns to shadow mode: switching entries to it
    /// are cleared (refilled as ordinary shadow links on the next hidden
    /// fault). The caller flushes the TLB and PSCs.
    pub(super) fn go_shadow(&mut self, core: &mut Core, gpfn: u64) {
        if self.agile.nested.remove(&gpfn).is_none() {
            return;
        }
        for (sp, idx) in self.agile.switch_of.remove(&gpfn).unwrap_or_default() {
            core.host.tables.write(sp, idx, 0);
        }
        if gpfn == core.vm.guest_root {
            self.root = self.shadow_page(core, gpfn, core.hw.levels);
        }
    }

    /// Free shadow page `sp` and the (non-direct) shadow pages below it,
    /// lifting their write protection.
    fn drop_subtree(&mut self, core: &mut Core, sp: u64) {
        let mut children = Vec::new();
        if self.pages[&sp].level > 1 {
            for idx in 0..512 {
                let se = core.host.tables.read(sp, idx);
                if se & x86::P != 0 && se & SWITCH == 0 {
                    let c = x86::frame(se);
                    if self.pages.get(&c).is_some_and(|p| !p.direct) {
                        children.push(c);
                    }
                }
            }
        }
        self.free_page(core, sp);
        core.vm.stats.shadow_unshadows += 1;
        for c in children {
            let Some(g) = self.pages.get(&c).map(|p| p.gpfn) else {
                continue;
            };
            self.sp_of.remove(&g);
            self.set_wp(g, false);
            self.drop_subtree(core, c);
        }
    }
}

/// Flags of a shadow entry pointing at a lower table.
const SHADOW_TABLE_FLAGS: u64 = x86::P | x86::RW | x86::US | x86::A;

// Keep the switching bit's meaning next to its user.
const _: () = assert!(SWITCH & x86::FRAME == 0);
const _: () = assert!(TAGS & x86::FRAME == 0);
