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
//! context switches. A guest 2 MiB page is backed by 4 KiB host frames, so
//! its shadow is a "direct" shadow page of 512 4 KiB entries, as in KVM.
//! Not modeled (yet): unsync shadow pages, write-flood detection.
//!
//! Agile paging ([`super::Agile`]) reuses this machinery: guest table pages
//! in `Shadow::nested` get no shadow page and no write protection; the
//! shadow entry that would point at one becomes a switching entry
//! ([`SWITCH`]) holding the guest table's hPFN. Plain shadow mode never
//! marks a page nested.

use rustc_hash::FxHashMap;

use super::{Core, Fill, GuestFault, Mode};
use crate::addr::{pt_index, Gpa, Gva, PageSize, FRAMES_PER_HUGE};
use crate::guest::{softwalk, GuestMemory};
use crate::host::HostMemory;
use crate::mmu::walker::{walk_1d, SWITCH};
use crate::mmu::{Dim, Rights, TableMem};
use crate::pte::x86;
use crate::stats::ExitReason;

const SHADOW_TABLE_FLAGS: u64 = x86::P | x86::RW | x86::US | x86::A;

#[derive(Debug)]
struct ShadowPage {
    /// Guest table it shadows (or first gPFN of the 2 MiB page for a direct page).
    gpfn: u64,
    /// Level of its entries (1 = PTEs).
    level: u8,
    /// Shadows a guest 2 MiB page with 4 KiB entries.
    direct: bool,
    /// Shadow entries pointing at it: (shadow page hPFN, index).
    parents: Vec<(u64, usize)>,
}

/// Shadow-paging mode state.
#[derive(Debug, Default)]
pub struct Shadow {
    /// Guest table gPFN -> shadow page hPFN.
    sp_of: FxHashMap<u64, u64>,
    /// First gPFN of a guest 2 MiB page -> direct shadow page hPFN.
    direct_of: FxHashMap<u64, u64>,
    /// Shadow page hPFN -> what it shadows.
    pages: FxHashMap<u64, ShadowPage>,
    /// Write-protected guest frames (shadowed guest tables), by gPFN.
    wp: Vec<bool>,
    /// Shadow root the hardware CR3 holds ([`NO_ROOT`] when the guest root
    /// itself is walked nested: agile paging's switch at the root).
    pub(super) root: u64,
    /// Agile paging: guest table gPFNs walked in nested mode -> the policy
    /// interval in which they went nested. Empty in shadow mode.
    pub(super) nested: FxHashMap<u64, u64>,
    /// Agile paging: guest table gPFN -> switching entries (shadow page
    /// hPFN, index) pointing at it.
    switch_of: FxHashMap<u64, Vec<(u64, usize)>>,
    /// Reverse map: guest frame gPFN -> shadow leaf entries (shadow page
    /// hPFN, index) filled with its host frame. Kept lazily: an entry may
    /// have been zapped or its page freed since; [`Shadow::unmap_frame`]
    /// checks each before clearing it.
    rmap: FxHashMap<u64, Vec<(u64, usize)>>,
}

/// [`Shadow::root`] when the guest root is walked nested.
pub(super) const NO_ROOT: u64 = u64::MAX;

impl Shadow {
    /// Empty shadow state.
    pub fn new() -> Self {
        Shadow::default()
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
        self.root = self.shadow_page(core, core.vm.guest_root, 4);
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
        self.nested.clear();
        self.switch_of.clear();
        self.rmap.clear();
        self.root = 0;
    }

    /// The host took guest frame `gpfn` (host frame `hpfn`) away: clear
    /// every shadow leaf that maps it, found through the reverse map.
    /// Returns the entries cleared. The caller flushes the VPID.
    pub fn unmap_frame(&mut self, host: &mut HostMemory, gpfn: u64, hpfn: u64) -> u64 {
        let mut n = 0;
        for (sp, idx) in self.rmap.remove(&gpfn).unwrap_or_default() {
            let live = self.pages.get(&sp).is_some_and(|p| p.level == 1);
            let se = host.tables.read(sp, idx);
            if live && se & x86::P != 0 && x86::frame(se) == hpfn {
                host.tables.write(sp, idx, 0);
                n += 1;
            }
        }
        n
    }

    fn set_wp(&mut self, gpfn: u64, on: bool) {
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
            debug_assert_eq!(
                self.pages[&sp].level, level,
                "guest table {gpfn:#x} used at two levels"
            );
            return sp;
        }
        let sp = core.host.alloc_table();
        self.pages.insert(
            sp,
            ShadowPage {
                gpfn,
                level,
                direct: false,
                parents: Vec::new(),
            },
        );
        self.sp_of.insert(gpfn, sp);
        self.set_wp(gpfn, true);
        sp
    }

    fn direct_page(&mut self, core: &mut Core, base_gpfn: u64) -> u64 {
        if let Some(&sp) = self.direct_of.get(&base_gpfn) {
            return sp;
        }
        let sp = core.host.alloc_table();
        self.pages.insert(
            sp,
            ShadowPage {
                gpfn: base_gpfn,
                level: 1,
                direct: true,
                parents: Vec::new(),
            },
        );
        self.direct_of.insert(base_gpfn, sp);
        sp
    }

    /// Point shadow entry (`sp`, `idx`) at child shadow page `child`.
    fn link(&mut self, core: &mut Core, sp: u64, idx: usize, child: u64) {
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
        if self.pages[&sp].level > 1 {
            let child = x86::frame(se);
            let c = self.pages.get_mut(&child).expect("child shadow page");
            c.parents.retain(|&p| p != (sp, idx));
            if c.direct {
                let base = c.gpfn;
                self.free_page(core, child);
                self.direct_of.remove(&base);
            }
            self.flush_hw(core);
        }
    }

    /// Switching entry (`sp`, `idx`) to guest table hPFN `hpfn` is gone.
    fn forget_switch(&mut self, core: &Core, hpfn: u64, sp: u64, idx: usize) {
        let gpfn = core.m2p(hpfn).expect("switching entry to a backed table");
        if let Some(v) = self.switch_of.get_mut(&gpfn) {
            v.retain(|&p| p != (sp, idx));
        }
    }

    /// Agile paging: make shadow entry (`sp`, `idx`) a switching entry to
    /// guest table `gpfn`.
    fn link_switch(&mut self, core: &mut Core, sp: u64, idx: usize, gpfn: u64) {
        core.back(gpfn);
        let hpfn = core.p2m(gpfn).expect("just backed");
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
        self.switch_of.entry(gpfn).or_default().push((sp, idx));
    }

    /// Agile paging: walk guest table `gpfn` in nested mode from now on
    /// (`interval` is the policy's clock): its shadow page and every shadow
    /// page below it are dropped and unprotected, entries that pointed at
    /// them cleared (the next walk there takes a hidden fault and installs
    /// a switching entry). The caller flushes the TLB and PSCs.
    pub(super) fn go_nested(&mut self, core: &mut Core, gpfn: u64, interval: u64) {
        if self.nested.insert(gpfn, interval).is_some() {
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

    /// Agile paging: guest table `gpfn` returns to shadow mode: switching
    /// entries to it are cleared (refilled as ordinary shadow links on the
    /// next hidden fault). The caller flushes the TLB and PSCs.
    pub(super) fn go_shadow(&mut self, core: &mut Core, gpfn: u64) {
        if self.nested.remove(&gpfn).is_none() {
            return;
        }
        for (sp, idx) in self.switch_of.remove(&gpfn).unwrap_or_default() {
            core.host.tables.write(sp, idx, 0);
        }
        if gpfn == core.vm.guest_root {
            self.root = self.shadow_page(core, gpfn, 4);
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

    pub(super) fn flush_hw(&mut self, core: &mut Core) {
        core.invvpid();
    }

    /// Drop shadow page `sp`: unlink its parents and children, free its frame.
    fn free_page(&mut self, core: &mut Core, sp: u64) {
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
                        let base = c.gpfn;
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
    pub(super) fn back_on_first_touch(core: &mut Core, gpfn: u64) {
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
        let path = softwalk::path(mem, core.vm.guest_root, va);
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
        let level = 5 - path.len as u8;
        x86::is_leaf(level, leaf)
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
        for i in 0..path.len {
            let level = 4 - i as u8;
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
                if self.nested.contains_key(&x86::frame(ne)) {
                    // Agile paging: the rest of the walk is nested.
                    self.link_switch(core, sp, idx, x86::frame(ne));
                    return;
                }
                let child = self.shadow_page(core, x86::frame(ne), level - 1);
                self.link(core, sp, idx, child);
                sp = child;
                continue;
            }
            let mut leaf_sp = sp;
            let mut leaf_idx = idx;
            let mut gpfn = x86::frame(ne);
            if level == 2 {
                let d = self.direct_page(core, gpfn);
                self.link(core, sp, idx, d);
                leaf_sp = d;
                leaf_idx = pt_index(va, 1);
                gpfn += (va >> 12) & (FRAMES_PER_HUGE - 1);
            }
            core.back(gpfn);
            let hpfn = core.p2m(gpfn).expect("just backed");
            let mut f = x86::P | x86::US | x86::A | (ne & (x86::NX | x86::D));
            if ne & x86::RW != 0 && ne & x86::D != 0 {
                f |= x86::RW;
            }
            core.host
                .tables
                .write(leaf_sp, leaf_idx, x86::make(hpfn, f));
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

impl Mode for Shadow {
    fn name(&self) -> &'static str {
        "shadow"
    }

    fn host_unmap(&mut self, host: &mut HostMemory, gpfn: u64, hpfn: u64) -> u64 {
        self.unmap_frame(host, gpfn, hpfn)
    }

    fn fill(
        &mut self,
        core: &mut Core,
        mem: &mut GuestMemory,
        va: u64,
        r: Rights,
    ) -> Result<Fill, GuestFault> {
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
                let gpfn = core.m2p(l.frame).expect("shadow leaf maps a guest frame");
                debug_assert_eq!(l.size, PageSize::Size4K);
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
        if self.is_write_protected(gpfn) {
            core.exit(ExitReason::PtWrite);
            let sp = self.sp_of[&gpfn];
            self.zap(core, sp, idx);
        }
    }

    fn touch_frame(&mut self, core: &mut Core, _mem: &mut GuestMemory, gpfn: u64) {
        if self.is_write_protected(gpfn) {
            // A former table page reused: the first store traps.
            core.exit(ExitReason::PtWrite);
            self.unshadow(core, gpfn);
        }
        Self::back_on_first_touch(core, gpfn);
    }

    fn write_cr3(&mut self, core: &mut Core, _mem: &mut GuestMemory, root: u64, pcid: u16) {
        core.exit(ExitReason::Cr3Write);
        core.hw_write_cr3(root, pcid);
        self.root = self.shadow_page(core, root, 4);
    }

    fn invlpg(&mut self, core: &mut Core, pcid: u16, va: Gva) {
        core.exit(ExitReason::Invlpg);
        core.hw_invlpg(pcid, va);
    }

    fn flush_pcid(&mut self, core: &mut Core, pcid: u16) {
        core.exit(ExitReason::Invlpg);
        core.hw_flush_pcid(pcid);
    }
}
