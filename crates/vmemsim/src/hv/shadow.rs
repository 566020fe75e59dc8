//! Shadow paging: the hypervisor keeps shadow tables (gVA -> hPA) that the
//! hardware walks, 1-D, at most 4 references. Guest page-table pages that
//! are shadowed are write-protected, so guest PTE stores exit and are
//! emulated (the affected shadow entry is zapped and refilled on demand).
//! A TLB miss that finds no shadow entry while the guest maps the page is a
//! hidden fault: it exits and the hypervisor fills the shadow from the guest
//! tables, setting the guest's A/D bits as hardware would. A true guest
//! fault exits and is injected. CR3 writes and INVLPG exit.
//!
//! Shadow pages are keyed by the guest table they shadow (KVM keys them by
//! (gfn, role) [KVM mmu.rst]), so shadows stay cached per guest CR3 across
//! context switches. A shadow leaf is at most the smaller of the guest page
//! and the host page backing it: a guest 2 MiB page over 4 KiB host frames
//! is shadowed by a "direct" shadow page of 512 4 KiB entries, a 1 GiB one
//! by a direct PD (of 2 MiB leaves over 2 MiB host pages, or of direct PTs
//! over 4 KiB ones), as KVM's direct shadow pages.
//!
//! Two mechanisms of today's KVM, each switched by `[shadow]`
//! ([`ShadowConfig`], both on by default):
//! - *Unsync* (`mmu_try_to_unsync_pages`): the first store to a shadowed
//!   PT exits once (a write-protection fault, priced as a hidden fault) and
//!   makes the table writable; its shadow page is out of sync until the
//!   guest flushes its TLB or loads CR3 (every unsync page reachable from
//!   the root is resynced before the next walk, as KVM's `KVM_REQ_MMU_SYNC`
//!   at the next VM entry), or, entry by entry, the guest INVLPGs it. A
//!   hidden fault that links it again syncs its entries but leaves it
//!   unsync (KVM's `kvm_mmu_get_page`). A resync keeps the shadow entries whose guest entry still maps the same
//!   frame (rights recomputed), clears the others, and write-protects the
//!   table again.
//! - *Write flooding* (`detect_write_flooding`): the
//!   `write_flood_threshold`-th emulated store to a shadowed table since the
//!   hypervisor last walked through its shadow page (a hidden fault's fill)
//!   zaps the shadow page and unprotects the table.
//!
//! Agile paging ([`super::Agile`]) reuses this machinery: guest table pages
//! in its [`NestedTables`] get no shadow page and no write protection; the
//! shadow entry that would point at one becomes a switching entry
//! ([`SWITCH`]) holding the guest table's hPFN. That state and the code that
//! moves tables between the two modes live in `agile.rs`; plain shadow mode
//! never marks a page nested.

use rustc_hash::FxHashMap;

use super::agile::NestedTables;
use super::{Core, Fill, GuestFault, Mode};
use crate::addr::{pt_index, Gpa, Gpfn, Gva, Hpfn};
use crate::config::ShadowConfig;
use crate::guest::{softwalk, GuestMemory};
use crate::host::HostMemory;
use crate::mmu::walker::{walk_1d, SWITCH};
use crate::mmu::{Dim, Rights, TableMem};
use crate::pte::x86;
use crate::stats::ExitReason;

const SHADOW_TABLE_FLAGS: u64 = x86::P | x86::RW | x86::US | x86::A;

#[derive(Debug)]
pub(super) struct ShadowPage {
    /// Guest table it shadows (or, for a direct page, the first gPFN of the
    /// part of a guest huge page it maps).
    pub(super) gpfn: u64,
    /// Level of its entries (1 = PTEs).
    pub(super) level: u8,
    /// Maps part of a guest huge page with smaller entries (a direct page).
    pub(super) direct: bool,
    /// Shadow entries pointing at it: (shadow page hPFN, index).
    parents: Vec<(u64, usize)>,
    /// Out of sync with its guest table, which is not write-protected (KVM's `unsync`).
    unsync: bool,
    /// Emulated stores to its guest table since the hypervisor last walked
    /// through it (KVM's `write_flooding_count`).
    flood: u32,
}

impl ShadowPage {
    fn new(gpfn: u64, level: u8, direct: bool) -> Self {
        ShadowPage {
            gpfn,
            level,
            direct,
            parents: Vec::new(),
            unsync: false,
            flood: 0,
        }
    }
}

/// Shadow-paging mode state.
#[derive(Debug, Default)]
pub struct Shadow {
    /// Unsync and write-flood switches.
    cfg: ShadowConfig,
    /// Guest table gPFN -> shadow page hPFN.
    pub(super) sp_of: FxHashMap<u64, u64>,
    /// (first gPFN, level) of a direct shadow page -> its hPFN.
    direct_of: FxHashMap<(u64, u8), u64>,
    /// Shadow page hPFN -> what it shadows.
    pub(super) pages: FxHashMap<u64, ShadowPage>,
    /// Write-protected guest frames (shadowed guest tables), by gPFN.
    wp: Vec<bool>,
    /// Shadow root the hardware CR3 holds ([`NO_ROOT`] when the guest root
    /// itself is walked nested: agile paging's switch at the root).
    pub(super) root: u64,
    /// Agile paging's nested tables and switching entries (empty in shadow mode).
    pub(super) agile: NestedTables,
    /// Shadow pages made unsync since they were last resynced (some may
    /// have been resynced or freed since: checked when used).
    unsync: Vec<u64>,
    /// A guest TLB flush asked for the unsync pages reachable from the root
    /// to be resynced before the next walk.
    sync_due: bool,
    /// Unsync shadow entries (page, index) the guest INVLPGed, resynced
    /// before the next walk.
    invlpg_due: Vec<(u64, usize)>,
    /// Reverse map: guest frame gPFN -> shadow leaf entries (shadow page
    /// hPFN, index) filled with its host frame. Kept lazily: an entry may
    /// have been zapped or its page freed since; [`Shadow::unmap_frame`]
    /// checks each before clearing it.
    rmap: FxHashMap<u64, Vec<(u64, usize)>>,
}

/// [`Shadow::root`] when the guest root is walked nested.
pub(super) const NO_ROOT: u64 = u64::MAX;

impl Shadow {
    /// Empty shadow state with KVM's defaults (unsync and write-flood
    /// detection on).
    pub fn new() -> Self {
        Shadow::default()
    }

    /// Empty shadow state with the `[shadow]` switches of `cfg`.
    pub fn with_config(cfg: &ShadowConfig) -> Self {
        Shadow {
            cfg: cfg.clone(),
            ..Shadow::default()
        }
    }

    /// Shadow pages currently out of sync with their guest tables.
    pub fn unsync_pages(&self) -> usize {
        self.pages.values().filter(|p| p.unsync).count()
    }

    /// Number of shadow pages held.
    pub fn shadow_pages(&self) -> usize {
        self.pages.len()
    }

    /// True when guest frame `gpfn` is write-protected as a shadowed table.
    pub fn is_write_protected(&self, gpfn: u64) -> bool {
        self.wp.get(gpfn as usize).copied().unwrap_or(false)
    }

    /// Start shadowing the current guest CR3 with empty shadows, filled on
    /// demand (a switch from nested paging \[W11\]).
    pub fn activate(&mut self, core: &mut Core) {
        self.root = self.shadow_page(core, core.vm.guest_root, core.hw.levels);
    }

    /// Drop every shadow page and lift all write protection (a switch to
    /// nested paging \[W11\]). The caller flushes the TLB.
    pub fn drop_all(&mut self, core: &mut Core) {
        for (&sp, _) in self.pages.iter() {
            core.host.free_table(sp);
        }
        self.pages.clear();
        self.sp_of.clear();
        self.direct_of.clear();
        self.wp.iter_mut().for_each(|w| *w = false);
        self.agile.clear();
        self.rmap.clear();
        self.unsync.clear();
        self.sync_due = false;
        self.invlpg_due.clear();
        self.root = 0;
    }

    /// Shadow entry (`sp`, `idx`), if it is a live shadow leaf mapping host
    /// frame `hpfn` (a reverse-map record may outlive its entry: the page
    /// freed, the entry rewritten).
    fn live_leaf(&self, host: &HostMemory, sp: u64, idx: usize, hpfn: Hpfn) -> Option<u64> {
        let live = self.pages.get(&sp).is_some_and(|p| p.level == 1);
        let se = host.tables.read(sp, idx);
        (live && se & x86::P != 0 && x86::frame(se) == hpfn.0).then_some(se)
    }

    /// The host took guest frame `gpfn` (host frame `hpfn`) away: clear
    /// every shadow leaf that maps it, found through the reverse map.
    /// Returns the entries cleared. The caller flushes the VPID.
    pub fn unmap_frame(&mut self, host: &mut HostMemory, gpfn: Gpfn, hpfn: Hpfn) -> u64 {
        let mut n = 0;
        for (sp, idx) in self.rmap.remove(&gpfn.0).unwrap_or_default() {
            if self.live_leaf(host, sp, idx, hpfn).is_some() {
                host.tables.write(sp, idx, 0);
                n += 1;
            }
        }
        n
    }

    /// Guest frame `gpfn`'s host frame `hpfn` became shared: every live
    /// shadow leaf mapping it (through the reverse map) loses RW. Returns
    /// the entries changed. The caller flushes the VPID.
    pub fn write_protect_frame(&mut self, host: &mut HostMemory, gpfn: Gpfn, hpfn: Hpfn) -> u64 {
        let Some(r) = self.rmap.get(&gpfn.0) else {
            return 0;
        };
        let mut n = 0;
        for &(sp, idx) in r {
            let writable = self
                .live_leaf(host, sp, idx, hpfn)
                .filter(|se| se & x86::RW != 0);
            if let Some(se) = writable {
                host.tables.write(sp, idx, se & !x86::RW);
                n += 1;
            }
        }
        n
    }

    /// The guest kernel writes its whole frame `gpfn`, write-protected for
    /// sharing: the store exits (`reason`) and copies the frame
    /// ([`Core::cow_touch`]); the shadow leaves of the old frame go.
    pub(super) fn cow_touch(&mut self, core: &mut Core, gpfn: Gpfn, reason: ExitReason) {
        if let Some(old) = core.cow_touch(gpfn, reason) {
            self.unmap_frame(core.host, gpfn, old);
        }
    }

    /// True when a live shadow leaf maps guest frame `gpfn` to `hpfn`
    /// (through the reverse map, checking each entry as
    /// [`Shadow::unmap_frame`] does).
    pub fn maps_frame(&self, host: &HostMemory, gpfn: Gpfn, hpfn: Hpfn) -> bool {
        self.rmap.get(&gpfn.0).is_some_and(|r| {
            r.iter()
                .any(|&(sp, idx)| self.live_leaf(host, sp, idx, hpfn).is_some())
        })
    }

    pub(super) fn set_wp(&mut self, gpfn: u64, on: bool) {
        let i = gpfn as usize;
        if i >= self.wp.len() {
            self.wp.resize((i + 1).next_power_of_two(), false);
        }
        self.wp[i] = on;
    }

    /// The shadow page of guest table `gpfn` at `level`, created empty (and
    /// the guest page write-protected) if it has none.
    pub(super) fn shadow_page(&mut self, core: &mut Core, gpfn: u64, level: u8) -> u64 {
        if let Some(&sp) = self.sp_of.get(&gpfn) {
            let p = &self.pages[&sp];
            if p.level == level {
                return sp;
            }
            // A former PT, unsync (so its reuse did not trap), now a table
            // at another level: KVM zaps an unsync page when it needs the
            // gfn at a higher level.
            assert!(p.unsync, "guest table {gpfn:#x} used at two levels");
            self.sp_of.remove(&gpfn);
            self.free_page(core, sp);
            self.flush_hw(core);
        }
        let sp = core.host.alloc_table();
        self.pages.insert(sp, ShadowPage::new(gpfn, level, false));
        self.sp_of.insert(gpfn, sp);
        self.set_wp(gpfn, true);
        sp
    }

    fn direct_page(&mut self, core: &mut Core, base_gpfn: u64, level: u8) -> u64 {
        if let Some(&sp) = self.direct_of.get(&(base_gpfn, level)) {
            return sp;
        }
        let sp = core.host.alloc_table();
        self.pages
            .insert(sp, ShadowPage::new(base_gpfn, level, true));
        self.direct_of.insert((base_gpfn, level), sp);
        sp
    }

    /// Point shadow entry (`sp`, `idx`) at child shadow page `child`.
    pub(super) fn link(&mut self, core: &mut Core, sp: u64, idx: usize, child: u64) {
        let se = core.host.tables.read(sp, idx);
        if se & x86::P != 0 && x86::frame(se) == child {
            return;
        }
        if se & x86::P != 0 {
            self.zap(core, sp, idx);
        }
        core.host
            .tables
            .write(sp, idx, x86::make(child, SHADOW_TABLE_FLAGS));
        self.pages
            .get_mut(&child)
            .expect("child shadow page")
            .parents
            .push((sp, idx));
    }

    /// Clear shadow entry (`sp`, `idx`); a dropped link to a lower shadow page
    /// flushes the VPID's TLB and PSCs (they may cache it), as KVM does.
    pub(super) fn zap(&mut self, core: &mut Core, sp: u64, idx: usize) {
        let se = core.host.tables.read(sp, idx);
        if se & x86::P == 0 {
            return;
        }
        core.host.tables.write(sp, idx, 0);
        if se & SWITCH != 0 {
            self.forget_switch(core, x86::frame(se), sp, idx);
            self.flush_hw(core);
            return;
        }
        if self.pages[&sp].level > 1 && se & x86::PS == 0 {
            let child = x86::frame(se);
            let c = self.pages.get_mut(&child).expect("child shadow page");
            c.parents.retain(|&p| p != (sp, idx));
            if c.direct {
                let base = (c.gpfn, c.level);
                self.free_page(core, child);
                self.direct_of.remove(&base);
            }
            self.flush_hw(core);
        }
    }

    pub(super) fn flush_hw(&mut self, core: &mut Core) {
        core.invvpid();
    }

    /// Drop shadow page `sp`: unlink its parents and children, free its frame.
    pub(super) fn free_page(&mut self, core: &mut Core, sp: u64) {
        let page = self.pages.remove(&sp).expect("shadow page exists");
        for (p, i) in page.parents {
            core.host.tables.write(p, i, 0);
        }
        if page.level > 1 {
            for idx in 0..512 {
                let se = core.host.tables.read(sp, idx);
                if se & x86::P == 0 {
                    continue;
                }
                let child = x86::frame(se);
                if se & SWITCH != 0 {
                    self.forget_switch(core, child, sp, idx);
                    continue;
                }
                if let Some(c) = self.pages.get_mut(&child) {
                    c.parents.retain(|&p| p != (sp, idx));
                    if c.direct {
                        let base = (c.gpfn, c.level);
                        self.free_page(core, child);
                        self.direct_of.remove(&base);
                    }
                }
            }
        }
        core.host.free_table(sp);
    }

    /// Guest frame `gpfn` stops being a table: drop its shadow, lift write protection.
    pub(super) fn unshadow(&mut self, core: &mut Core, gpfn: u64) {
        self.set_wp(gpfn, false);
        if let Some(sp) = self.sp_of.remove(&gpfn) {
            self.free_page(core, sp);
            core.vm.stats.shadow_unshadows += 1;
            self.flush_hw(core);
            if sp == self.root {
                // Only a dead process's root is freed and reused; the guest
                // loads another CR3 before its next access. Re-shadowing the
                // frame here would protect it at level 4 while it is reused
                // at another level.
                self.root = NO_ROOT;
            }
        }
    }

    /// A guest frame's first write: the kernel's store through its
    /// (shadowed) direct map finds no shadow entry, exits, and the host backs
    /// the frame.
    pub(super) fn back_on_first_touch(core: &mut Core, gpfn: Gpfn) {
        if core.p2m(gpfn).is_none() {
            core.exit(ExitReason::ShadowFault);
            core.back(gpfn);
        }
    }

    /// A shadow walk faulted (VM exit): the hypervisor reads the guest
    /// tables. A true guest fault is reflected to the guest
    /// ([`GuestFault`]); a hidden one is fixed by syncing the shadow path.
    ///
    /// # Errors
    /// [`GuestFault`] when the guest's own tables forbid the access.
    pub(super) fn shadow_fault(
        &mut self,
        core: &mut Core,
        mem: &mut GuestMemory,
        va: u64,
        r: Rights,
    ) -> Result<(), GuestFault> {
        let path = softwalk::path(mem, core.vm.guest_root, core.hw.levels, va);
        if !Self::guest_allows(&path, r) {
            core.exit(ExitReason::GuestFault);
            return Err(GuestFault);
        }
        core.exit(ExitReason::ShadowFault);
        self.sync(core, mem, &path, va, r);
        Ok(())
    }

    /// The guest allows the access (every level present, write and NX rights).
    fn guest_allows(path: &softwalk::GuestPath, r: Rights) -> bool {
        let (_, _, leaf) = path.steps[path.len - 1];
        x86::is_leaf(path.leaf_level(), leaf)
            && path.steps[..path.len].iter().all(|&(_, _, e)| {
                e & x86::P != 0 && !(r.write && e & x86::RW == 0) && !(r.fetch && e & x86::NX != 0)
            })
    }

    /// Hidden-fault handler: set guest A/D as hardware would, then build the
    /// shadow path for `va` from the guest tables.
    fn sync(
        &mut self,
        core: &mut Core,
        mem: &mut GuestMemory,
        path: &softwalk::GuestPath,
        va: u64,
        r: Rights,
    ) {
        let mut sp = self.root;
        self.used(sp);
        for i in 0..path.len {
            let level = path.level(i);
            let (table, idx, e) = path.steps[i];
            let is_leaf = i == path.len - 1;
            let mut ne = e | x86::A;
            if is_leaf && r.write {
                ne |= x86::D;
            }
            if ne != e {
                mem.write(table, idx, ne); // the hypervisor's own store: no trap
            }
            if !is_leaf {
                if self.agile.is_nested(x86::frame(ne)) {
                    // Agile paging: the rest of the walk is nested.
                    self.link_switch(core, sp, idx, x86::frame(ne));
                    return;
                }
                let child = self.shadow_page(core, x86::frame(ne), level - 1);
                let se = core.host.tables.read(sp, idx);
                let linked = se & x86::P != 0 && x86::frame(se) == child;
                if !linked && self.pages[&child].unsync {
                    // KVM syncs an unsync page it links again, leaving it
                    // unsync and writable (`kvm_mmu_get_page`), and marks
                    // its new parents as having an unsync child
                    // (`kvm_mmu_mark_parents_unsync`), so the next TLB
                    // flush or CR3 load resyncs it again. Here: back on the
                    // unsync list, which left it when it was unlinked.
                    self.resync_page(core, mem, child, false);
                    if !self.unsync.contains(&child) {
                        self.unsync.push(child);
                    }
                }
                self.link(core, sp, idx, child);
                self.used(child);
                sp = child;
                continue;
            }
            let mut leaf_sp = sp;
            let mut leaf_idx = idx;
            let mut gpfn = x86::frame(ne);
            // A shadow leaf is at most the smaller of the guest page and
            // the host page: a huge guest page over smaller host pages gets
            // direct shadow pages down to the host page's level (a 1 GiB
            // guest page over 4 KiB host pages: a direct PD, then a direct
            // PT of 4 KiB entries), as KVM's direct shadow pages.
            let target = level.min(core.vm.host_page.leaf_level());
            let mut lvl = level;
            while lvl > target {
                let d = self.direct_page(core, gpfn, lvl - 1);
                self.link(core, leaf_sp, leaf_idx, d);
                leaf_sp = d;
                leaf_idx = pt_index(va, lvl - 1);
                gpfn +=
                    ((va >> 12) & (x86::leaf_frames(lvl) - 1)) & !(x86::leaf_frames(lvl - 1) - 1);
                lvl -= 1;
            }
            let ps = if target > 1 { x86::PS } else { 0 };
            let g = Gpfn(gpfn);
            core.back(g);
            let mut hpfn = core.p2m(g).expect("just backed").0;
            let mut flags = leaf_flags(ne) | ps;
            if core.cow_protected(g) {
                if r.write {
                    // A store to a shared frame: this exit breaks it.
                    if let Some(old) = core.cow_store(g) {
                        self.unmap_frame(core.host, g, old);
                        hpfn = core.p2m(g).expect("copied").0;
                    }
                } else {
                    flags &= !x86::RW;
                }
            }
            core.host
                .tables
                .write(leaf_sp, leaf_idx, x86::make(hpfn, flags));
            if core.vm.hosted {
                // Only a shared host takes frames away (hypervisor swapping).
                let r = self.rmap.entry(gpfn).or_default();
                if !r.contains(&(leaf_sp, leaf_idx)) {
                    r.push((leaf_sp, leaf_idx));
                }
            }
            core.vm.stats.shadow_fills += 1;
        }
    }
}

/// Unsync shadow pages and write flooding \[KVM\].
impl Shadow {
    /// The hypervisor walked through shadow page `sp` (a fill): its flood
    /// count starts again (KVM's `clear_sp_write_flooding_count`).
    fn used(&mut self, sp: u64) {
        if let Some(p) = self.pages.get_mut(&sp) {
            p.flood = 0;
        }
    }

    /// A write flood on guest table `gpfn`: its shadow page `sp` is zapped
    /// and the table unprotected (shadowed again when a walk needs it).
    /// A zapped root is replaced by a fresh one, as KVM reloads its MMU.
    fn flood_zap(&mut self, core: &mut Core, gpfn: u64, sp: u64) {
        self.sp_of.remove(&gpfn);
        self.set_wp(gpfn, false);
        self.free_page(core, sp);
        core.vm.stats.shadow_flood_zaps += 1;
        self.flush_hw(core);
        if sp == self.root {
            self.root = self.shadow_page(core, core.vm.guest_root, core.hw.levels);
        }
    }

    /// The guest INVLPGed `va` in address space `pcid`: if the current
    /// shadow tree maps it through an unsync PT, that entry is resynced
    /// before the next walk. Another address space's stale entries wait
    /// for its CR3 load.
    pub(super) fn note_invlpg(&mut self, core: &Core, pcid: u16, va: Gva) {
        if self.unsync.is_empty() || pcid != core.vm.guest_pcid || self.root == NO_ROOT {
            return;
        }
        let mut sp = self.root;
        for level in (2..=core.hw.levels).rev() {
            let se = core.host.tables.read(sp, pt_index(va.0, level));
            if se & x86::P == 0 || se & SWITCH != 0 {
                return;
            }
            sp = x86::frame(se);
        }
        if self.pages.get(&sp).is_some_and(|p| p.unsync) {
            self.invlpg_due.push((sp, pt_index(va.0, 1)));
        }
    }

    /// The guest flushed address space `pcid`: if it is the current one,
    /// the unsync pages reachable from the root are resynced before the
    /// next walk (another's wait for its CR3 load).
    pub(super) fn note_flush(&mut self, core: &Core, pcid: u16) {
        if !self.unsync.is_empty() && pcid == core.vm.guest_pcid {
            self.sync_due = true;
        }
    }

    /// Do the resyncs the guest's invalidations asked for.
    pub(super) fn serve_due(&mut self, core: &mut Core, mem: &GuestMemory) {
        if self.sync_due {
            self.sync_due = false;
            self.invlpg_due.clear();
            self.resync_reachable(core, mem);
            return;
        }
        while let Some((sp, idx)) = self.invlpg_due.pop() {
            if self.pages.get(&sp).is_some_and(|p| p.unsync) {
                self.resync_entry(core, mem, sp, idx);
            }
        }
    }

    /// Resync every unsync page reachable from the current root (KVM's
    /// `kvm_mmu_sync_roots`). Pages no longer linked anywhere leave the
    /// list; they are resynced when a fill links them again.
    pub(super) fn resync_reachable(&mut self, core: &mut Core, mem: &GuestMemory) {
        if self.unsync.is_empty() {
            return;
        }
        let root = self.root;
        let mut list = std::mem::take(&mut self.unsync);
        list.retain(|sp| {
            self.pages
                .get(sp)
                .is_some_and(|p| p.unsync && !p.parents.is_empty())
        });
        list.dedup();
        let mut keep = Vec::with_capacity(list.len());
        for sp in list {
            if root != NO_ROOT && self.reaches(sp, root) {
                self.resync_page(core, mem, sp, true);
            } else {
                keep.push(sp);
            }
        }
        self.unsync = keep;
    }

    /// True when shadow page `sp` is linked, through its parents, from `root`.
    fn reaches(&self, sp: u64, root: u64) -> bool {
        sp == root
            || self
                .pages
                .get(&sp)
                .is_some_and(|p| p.parents.iter().any(|&(q, _)| self.reaches(q, root)))
    }

    /// Resync unsync shadow page `sp` with its guest table; with `protect`,
    /// write-protect the table again and mark the page in sync.
    fn resync_page(&mut self, core: &mut Core, mem: &GuestMemory, sp: u64, protect: bool) {
        for idx in 0..512 {
            self.resync_entry(core, mem, sp, idx);
        }
        core.vm.stats.shadow_resyncs += 1;
        if protect {
            let p = self.pages.get_mut(&sp).expect("resynced page exists");
            p.unsync = false;
            let gpfn = p.gpfn;
            self.set_wp(gpfn, true);
        }
    }

    /// Shadow leaf (`sp`, `idx`) against its guest entry: kept with the
    /// guest's current rights if the guest still maps the same frame
    /// (accessed), cleared otherwise (KVM's `sync_spte`).
    fn resync_entry(&mut self, core: &mut Core, mem: &GuestMemory, sp: u64, idx: usize) {
        let se = core.host.tables.read(sp, idx);
        if se & x86::P == 0 {
            return;
        }
        let ge = mem.read(self.pages[&sp].gpfn, idx);
        let same = ge & x86::P != 0
            && ge & x86::A != 0
            && core.p2m(Gpfn(x86::frame(ge))) == Some(Hpfn(x86::frame(se)));
        let ne = if same {
            let mut f = leaf_flags(ge);
            if core.host.cow_protected(Hpfn(x86::frame(se))) {
                f &= !x86::RW;
            }
            x86::make(x86::frame(se), f)
        } else {
            0
        };
        if ne != se {
            core.host.tables.write(sp, idx, ne);
        }
    }
}

/// Flags of a shadow leaf for guest leaf `ge`: present, user, accessed; NX
/// and D as the guest's; writable only once the guest entry is dirty, so
/// that the first store takes a hidden fault that sets the guest's D.
fn leaf_flags(ge: u64) -> u64 {
    let mut f = x86::P | x86::US | x86::A | (ge & (x86::NX | x86::D));
    if ge & x86::RW != 0 && ge & x86::D != 0 {
        f |= x86::RW;
    }
    f
}

impl Mode for Shadow {
    fn name(&self) -> &'static str {
        "shadow"
    }

    fn host_unmap(&mut self, host: &mut HostMemory, gpfn: Gpfn, hpfn: Hpfn) -> u64 {
        self.unmap_frame(host, gpfn, hpfn)
    }

    fn host_mapped(&self, host: &HostMemory, gpfn: Gpfn, hpfn: Hpfn) -> bool {
        self.maps_frame(host, gpfn, hpfn)
    }

    fn host_write_protect(&mut self, host: &mut HostMemory, gpfn: Gpfn, hpfn: Hpfn) -> u64 {
        self.write_protect_frame(host, gpfn, hpfn)
    }

    fn fill(
        &mut self,
        core: &mut Core,
        mem: &mut GuestMemory,
        va: u64,
        r: Rights,
    ) -> Result<Fill, GuestFault> {
        self.serve_due(core, mem);
        for _ in 0..8 {
            let asid = core.asid();
            let res = walk_1d(
                core.hw,
                &mut core.host.tables,
                Dim::Shadow,
                self.root,
                asid,
                va,
                r,
            );
            core.walk_done();
            if let Ok(l) = res {
                let gpfn = core.leaf_gpfn(mem, Hpfn(l.frame), va).0;
                return Ok(Fill::of_leaf(&l, gpfn, l.frame));
            }
            self.shadow_fault(core, mem, va, r)?;
        }
        panic!("shadow fill of {va:#x} does not converge: shadow model bug");
    }

    fn write_pte(&mut self, core: &mut Core, mem: &mut GuestMemory, gpa: Gpa, val: u64) {
        let gpfn = gpa.page_number();
        let idx = (gpa.page_offset() / 8) as usize;
        mem.write(gpfn, idx, val);
        if !self.is_write_protected(gpfn) {
            return;
        }
        let sp = self.sp_of[&gpfn];
        let page = self.pages.get_mut(&sp).expect("shadowed table has a page");
        if self.cfg.unsync && page.level == 1 {
            // A write-protection fault on a PT: its handler makes the
            // table writable and the store runs; the shadow page is unsync.
            core.exit(ExitReason::ShadowFault);
            page.unsync = true;
            self.unsync.push(sp);
            self.set_wp(gpfn, false);
            core.vm.stats.shadow_unsyncs += 1;
            return;
        }
        core.exit(ExitReason::PtWrite);
        page.flood += 1;
        if self.cfg.write_flood && page.flood >= self.cfg.write_flood_threshold {
            self.flood_zap(core, gpfn, sp);
        } else {
            self.zap(core, sp, idx);
        }
    }

    fn touch_frame(&mut self, core: &mut Core, _mem: &mut GuestMemory, gpfn: Gpfn) {
        if self.is_write_protected(gpfn.0) {
            // A former table page reused: the first store traps.
            core.exit(ExitReason::PtWrite);
            self.unshadow(core, gpfn.0);
        }
        Self::back_on_first_touch(core, gpfn);
        self.cow_touch(core, gpfn, ExitReason::ShadowFault);
    }

    fn write_cr3(&mut self, core: &mut Core, mem: &mut GuestMemory, root: u64, pcid: u16) {
        core.exit(ExitReason::Cr3Write);
        self.serve_due(core, mem);
        core.hw_write_cr3(root, pcid);
        self.root = self.shadow_page(core, root, core.hw.levels);
        self.resync_reachable(core, mem);
    }

    fn invlpg(&mut self, core: &mut Core, pcid: u16, va: Gva) {
        core.exit(ExitReason::Invlpg);
        core.hw_invlpg(pcid, va);
        self.note_invlpg(core, pcid, va);
    }

    fn flush_pcid(&mut self, core: &mut Core, pcid: u16) {
        core.exit(ExitReason::Invlpg);
        core.hw_flush_pcid(pcid);
        self.note_flush(core, pcid);
    }
}
