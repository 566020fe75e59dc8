//! The guest kernel: processes, page-fault handling, fork, exec, exit and
//! the VMA-changing system calls, modeled on Linux's behaviour.

use std::collections::BTreeMap;

use super::content::{self, Contents, FileRef};
use super::frames::Frames;
use super::reclaim::Reclaim;
use super::softwalk;
use super::swap;
use super::vma::{Vmas, PROT_EXEC, PROT_READ, PROT_RWX, PROT_WRITE};
use super::{GuestMemory, Platform};
use crate::addr::{pt_index, Gpa, Gva, HUGE_SIZE, PAGE_SIZE};
use crate::config::GuestConfig;
use crate::mmu::{Rights, TableMem};
use crate::pte::x86;
use crate::SimError;

/// Flags of every non-leaf entry: the guest kernel (like Linux) puts the
/// rights on the leaves and leaves upper levels permissive.
const TABLE_FLAGS: u64 = x86::P | x86::RW | x86::US | x86::A;

/// One guest process.
#[derive(Clone, Debug)]
pub struct Process {
    /// Recorded process id.
    pub pid: u32,
    /// PCID of its address space (0 when PCIDs are off).
    pub pcid: u16,
    /// gPFN of its PML4 (what CR3 holds).
    pub root: u64,
    /// Its VMAs.
    pub vmas: Vmas,
    /// Heap `[start, end)` set by brk, once the first brk is seen.
    pub heap: Option<(u64, u64)>,
}

/// The guest kernel state.
#[derive(Debug)]
pub struct GuestOs {
    /// Guest-physical memory holding the page tables.
    pub mem: GuestMemory,
    pub(super) frames: Frames,
    pub(super) procs: BTreeMap<u32, Process>,
    free_pcids: Vec<u16>,
    pub(super) current: Option<u32>,
    pub(super) cfg: GuestConfig,
    /// Frames the balloon driver holds ([`super::balloon`]).
    balloon: Vec<u64>,
    /// Balloon frames given back to the guest because it ran out of memory.
    pub balloon_oom_deflates: u64,
    /// What each frame holds, when tracked (a host with page sharing).
    pub(super) contents: Option<Contents>,
    /// Reclaim and swap (`None` without a guest swap device).
    pub(super) reclaim: Option<Reclaim>,
    /// Who the guest is in errors: "the guest", or the VM's name on a host.
    pub(super) name: String,
    /// One past the last user gVA ([`user_top`] of `cfg.levels`).
    pub user_top: u64,
}

/// One past the last gVA of user space with 4-level paging: the lower
/// canonical half of 48-bit gVAs [SDM 3.3.7.1], Linux's `TASK_SIZE` on
/// x86-64. The upper (kernel) half is not modelled: a user-space trace
/// never touches it, and the TLB and walk-cache tags hold 35-bit page numbers.
pub const USER_TOP: u64 = 1 << 47;

/// One past the last gVA of user space with 5-level paging (LA57): the
/// lower half of 57-bit gVAs, Linux's `TASK_SIZE` with 5-level paging.
pub const USER_TOP_5: u64 = 1 << 56;

/// One past the last user gVA with `levels` paging levels (4 or 5).
#[inline]
pub fn user_top(levels: u8) -> u64 {
    if levels == 5 {
        USER_TOP_5
    } else {
        USER_TOP
    }
}

/// Check that a process may touch `va`: it lies below `top` ([`user_top`]).
///
/// # Errors
/// [`SimError::BadAccess`] naming the process and the gVA.
#[inline]
pub fn check_gva(pid: u32, va: u64, top: u64) -> Result<(), SimError> {
    if va < top {
        return Ok(());
    }
    Err(SimError::BadAccess {
        pid,
        addr: va,
        why: format!(
            "beyond user space (gVAs from {top:#x} up are the kernel's or \
             non-canonical on x86-64)"
        ),
    })
}

/// The page-aligned range `[s, e)` of an event on `[addr, addr + len)`,
/// checked to lie in user space: a kernel returns no other range (munmap
/// and mprotect fail with EINVAL/ENOMEM), so a trace holding one is
/// corrupt. `event` describes the event for the error.
fn event_range(
    pid: u32,
    event: &dyn Fn() -> String,
    addr: u64,
    len: u64,
    user_top: u64,
) -> Result<(u64, u64), SimError> {
    let bad = |why: String| SimError::BadEvent {
        pid,
        event: event(),
        why,
    };
    let end = addr
        .checked_add(len)
        .ok_or_else(|| bad("the range ends beyond the top of the address space".into()))?;
    if end > user_top {
        return Err(bad(format!(
            "[{addr:#x}, {end:#x}) ends beyond user space (gVAs from {user_top:#x} up \
             are the kernel's or non-canonical on x86-64)"
        )));
    }
    Ok((page_down(addr), page_up(end)))
}

fn page_down(a: u64) -> u64 {
    a & !(PAGE_SIZE - 1)
}

fn page_up(a: u64) -> u64 {
    a.saturating_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

pub(super) fn leaf_flags(prot: u32, write: bool) -> u64 {
    let mut f = x86::P | x86::US | x86::A;
    if prot & PROT_WRITE != 0 {
        f |= x86::RW;
    }
    if prot & PROT_EXEC == 0 {
        f |= x86::NX;
    }
    if write {
        f |= x86::D;
    }
    f
}

pub(super) fn pte_gpa(table: u64, idx: usize) -> Gpa {
    Gpa((table << 12) | (idx as u64 * 8))
}

impl GuestOs {
    /// A guest with `cfg.mem_mib` of memory and no process.
    pub fn new(cfg: &GuestConfig) -> Self {
        let frames = cfg.mem_mib * 256;
        GuestOs {
            mem: GuestMemory::new(0),
            frames: Frames::new(frames),
            procs: BTreeMap::new(),
            free_pcids: (1..4096u16).rev().collect(),
            current: None,
            cfg: cfg.clone(),
            balloon: Vec::new(),
            balloon_oom_deflates: 0,
            contents: None,
            reclaim: Reclaim::new(cfg),
            name: "the guest".into(),
            user_top: user_top(cfg.levels),
        }
    }

    /// Track what every frame holds from now on (guest/content.rs); call
    /// before the first event. Page-table frames already allocated are
    /// marked as such. Nothing changes when already tracking.
    pub fn track_contents(&mut self) {
        if self.contents.is_some() {
            return;
        }
        let mut c = Contents::new(self.frame_count());
        for f in 0..self.frame_count() {
            if self.mem.contains(f) {
                c.set(f, content::PAGE_TABLE, content::ContentKind::PageTable);
            }
        }
        self.contents = Some(c);
    }

    /// The frames' contents, when tracked.
    pub fn contents(&self) -> Option<&Contents> {
        self.contents.as_ref()
    }

    /// The frames' contents, when tracked (to preset snapshot pages).
    pub fn contents_mut(&mut self) -> Option<&mut Contents> {
        self.contents.as_mut()
    }

    /// Process `pid` stored `size` bytes at `offset` in frame `gpfn`: its
    /// content changes (nothing when contents are not tracked).
    #[inline]
    pub fn note_store(&mut self, pid: u32, gpfn: u64, offset: u64, size: u16) {
        if let Some(c) = &mut self.contents {
            c.store(pid, gpfn << 12 | (offset & 0xfff), size);
        }
    }

    /// The mapping `[addr, addr + len)` of `pid` maps `file` from byte
    /// `offset` (after its `mmap`): its pages fault in with the file's
    /// contents. Kept only when contents are tracked.
    pub fn map_file(&mut self, pid: u32, addr: u64, len: u64, file: FileRef) {
        if self.contents.is_none() {
            return;
        }
        let (s, e) = (page_down(addr), page_up(addr.saturating_add(len)));
        if let Some(p) = self.procs.get_mut(&pid) {
            if let Some(v) = p.vmas.find(s) {
                let e = e.min(v.end);
                p.vmas.insert_file(s, e, v.prot, v.implicit, Some(file));
            }
        }
    }

    /// New frames `f..f+n` for the page at `va` of a VMA starting at
    /// `start` and mapping `file`: zero, or the file's pages.
    fn fill(&mut self, f: u64, n: u64, va: u64, vma: Option<(u64, FileRef)>) {
        let Some(c) = &mut self.contents else { return };
        let pid = self.current.unwrap_or(0);
        for i in 0..n {
            let vpn = (va >> 12) + i;
            if let Some(id) = c.take_preset(pid, vpn) {
                let kind = if vma.is_some() {
                    content::ContentKind::SnapshotFile
                } else {
                    content::ContentKind::Snapshot
                };
                c.set(f + i, id, kind);
                continue;
            }
            let id = match vma {
                Some((start, file)) => {
                    let page = (va & !(PAGE_SIZE - 1)) + i * PAGE_SIZE;
                    content::file_page(file.key, file.offset.wrapping_add(page - start))
                }
                None => content::ZERO,
            };
            c.set(f + i, id, content::ContentKind::File);
        }
    }

    /// Name the guest in its errors, e.g. `VM "db"` on a host.
    pub fn named(mut self, name: String) -> Self {
        self.name = name;
        self
    }

    /// Paging levels of the guest's tables (4 or 5).
    #[inline]
    pub fn levels(&self) -> u8 {
        self.cfg.levels
    }

    /// Total guest frames.
    pub fn frame_count(&self) -> u64 {
        self.cfg.mem_mib * 256
    }

    /// The running process, if any.
    pub fn current(&self) -> Option<&Process> {
        self.current.and_then(|p| self.procs.get(&p))
    }

    /// A process by pid.
    pub fn process(&self, pid: u32) -> Option<&Process> {
        self.procs.get(&pid)
    }

    /// Live processes.
    pub fn process_count(&self) -> usize {
        self.procs.len()
    }

    /// Mappings of guest frame `gpfn` (0: free).
    pub fn frame_refs(&self, gpfn: u64) -> u16 {
        self.frames.refs(gpfn)
    }

    /// Free guest frames.
    pub fn free_frames(&self) -> u64 {
        self.frames.free_frames()
    }

    /// A frame for the balloon driver ([`super::balloon`]): allocated from
    /// the guest's allocator, not zeroed, mapped by no process. `None` when
    /// the guest's free frames are down to [`GuestOs::balloon_watermark`]:
    /// the balloon does not drive the guest out of memory (a balloon
    /// driver's allocations fail rather than trigger the OOM killer).
    pub fn balloon_alloc(&mut self) -> Option<u64> {
        if self.frames.free_frames() <= self.balloon_watermark() {
            return None;
        }
        let f = self.frames.alloc_4k()?;
        self.balloon.push(f);
        Some(f)
    }

    /// Free frames the balloon leaves the guest: 1% of its memory
    /// (UNVERIFIED: about Linux's `min_free_kbytes` for small guests).
    pub fn balloon_watermark(&self) -> u64 {
        self.frame_count() / 100
    }

    /// The balloon frame inflated last returns to the guest's allocator;
    /// `None` when the balloon is empty.
    pub fn balloon_free(&mut self) -> Option<u64> {
        let f = self.balloon.pop()?;
        self.frames.put(f, 1);
        Some(f)
    }

    /// Frames in the balloon.
    pub fn balloon_size(&self) -> u64 {
        self.balloon.len() as u64
    }

    /// When no frame is free (after reclaim): one taken back from the
    /// balloon (deflate on OOM, as Linux's virtio-balloon
    /// `VIRTIO_BALLOON_F_DEFLATE_ON_OOM`: the driver gives pages back
    /// rather than let the guest fail).
    pub(super) fn deflate_on_oom(&mut self) -> Option<u64> {
        let f = self.balloon.pop()?;
        self.balloon_oom_deflates += 1;
        Some(f)
    }

    fn alloc_frame<P: Platform>(&mut self, plat: &mut P) -> Result<u64, SimError> {
        let f = self.take_4k(plat)?;
        plat.stats().frames_zeroed += 1;
        plat.touch_frame(&mut self.mem, f);
        Ok(f)
    }

    fn alloc_table<P: Platform>(&mut self, plat: &mut P) -> Result<u64, SimError> {
        let f = self.take_4k(plat)?;
        self.mem.add(f);
        if let Some(c) = &mut self.contents {
            c.set(f, content::PAGE_TABLE, content::ContentKind::PageTable);
        }
        plat.stats().frames_zeroed += 1;
        plat.touch_frame(&mut self.mem, f);
        Ok(f)
    }

    fn write_pte<P: Platform>(&mut self, plat: &mut P, table: u64, idx: usize, val: u64) {
        plat.stats().guest_pte_writes += 1;
        plat.write_pte(&mut self.mem, pte_gpa(table, idx), val);
    }

    fn new_pcid(&mut self) -> Result<u16, SimError> {
        if !self.cfg.pcid {
            return Ok(0);
        }
        self.free_pcids
            .pop()
            .ok_or(SimError::TooManyProcesses { limit: 4095 })
    }

    /// Create process `pid` with an empty address space (a root process of a
    /// trace, or one seen without a fork).
    ///
    /// # Errors
    /// Out of guest memory or PCIDs.
    pub fn spawn<P: Platform>(&mut self, plat: &mut P, pid: u32) -> Result<(), SimError> {
        if self.procs.contains_key(&pid) {
            return Ok(());
        }
        let pcid = self.new_pcid()?;
        let root = self.alloc_table(plat)?;
        plat.end_pt_update(&mut self.mem);
        plat.stats().processes += 1;
        self.procs.insert(
            pid,
            Process {
                pid,
                pcid,
                root,
                vmas: Vmas::default(),
                heap: None,
            },
        );
        Ok(())
    }

    /// Make `pid` the running process (a CR3 write), spawning it if unknown.
    ///
    /// # Errors
    /// As [`GuestOs::spawn`].
    pub fn switch_to<P: Platform>(&mut self, plat: &mut P, pid: u32) -> Result<(), SimError> {
        if self.current == Some(pid) {
            return Ok(());
        }
        self.spawn(plat, pid)?;
        let p = &self.procs[&pid];
        let (root, pcid) = (p.root, p.pcid);
        if self.current.is_some() {
            plat.stats().context_switches += 1;
        }
        self.current = Some(pid);
        plat.write_cr3(&mut self.mem, root, pcid);
        Ok(())
    }

    /// Handle a #PF of the running process at `va`: demand-zero, copy on
    /// write, or widening a VMA the recorded program evidently had.
    ///
    /// # Errors
    /// [`SimError::GuestOutOfMemory`].
    pub fn page_fault<P: Platform>(
        &mut self,
        plat: &mut P,
        va: u64,
        r: Rights,
    ) -> Result<(), SimError> {
        let pid = self.current.expect("page fault with no running process");
        check_gva(pid, va, self.user_top)?;
        plat.stats().guest_page_faults += 1;
        let need =
            PROT_READ | if r.write { PROT_WRITE } else { 0 } | if r.fetch { PROT_EXEC } else { 0 };
        let p = self.procs.get_mut(&pid).expect("current process exists");
        let prot = match p.vmas.find(va) {
            Some(v) if v.prot & need == need => v.prot,
            Some(v) => {
                plat.stats().protection_upgrades += 1;
                p.vmas.protect(v.start, v.end, v.prot | need);
                v.prot | need
            }
            None => {
                plat.stats().implicit_mappings += 1;
                p.vmas
                    .insert(page_down(va), page_down(va) + PAGE_SIZE, PROT_RWX, true);
                PROT_RWX
            }
        };
        // The file the page comes from; an implicit mapping (an image
        // Valgrind's loader mapped, with no mmap event) is the "image"
        // file keyed by address (guest/content.rs).
        let file = self.contents.as_ref().and_then(|_| {
            let v = p.vmas.find(va)?;
            match (v.file, v.implicit) {
                (Some(f), _) => Some((v.start, f)),
                (None, true) => Some((v.start, content::image_ref(v.start))),
                (None, false) => None,
            }
        });
        // The largest page the VMA allows at `va` (Linux's rule, see
        // `HugePages`): its aligned range lies wholly in one recorded VMA.
        let fits = |level: u8| {
            let size = HUGE_SIZE << (9 * (u32::from(level) - 2));
            let base = va & !(size - 1);
            matches!(p.vmas.find(base), Some(v) if v.end - base >= size && !v.implicit)
        };
        let max_level = self.cfg.huge_pages.max_level();
        let huge_ok = [
            false,
            false,
            max_level >= 2 && fits(2),
            max_level >= 3 && fits(3),
        ];
        let (root, pcid) = (p.root, p.pcid);
        let mut table = root;
        for level in (2..=self.cfg.levels).rev() {
            let idx = pt_index(va, level);
            let e = self.mem.read(table, idx);
            if e & x86::P == 0 {
                if level <= 3 && huge_ok[usize::from(level)] {
                    let alloc = if level == 3 {
                        self.frames.alloc_1g()
                    } else {
                        self.frames.alloc_2m()
                    };
                    if let Some(base) = alloc {
                        let n = x86::leaf_frames(level);
                        for f in base..base + n {
                            plat.touch_frame(&mut self.mem, f);
                        }
                        self.fill(base, n, va & !(n * PAGE_SIZE - 1), file);
                        plat.stats().frames_zeroed += n;
                        plat.stats().demand_faults += 1;
                        self.write_pte(
                            plat,
                            table,
                            idx,
                            x86::make(base, leaf_flags(prot, r.write) | x86::PS),
                        );
                        plat.end_pt_update(&mut self.mem);
                        return Ok(());
                    }
                }
                let t = self.alloc_table(plat)?;
                self.write_pte(plat, table, idx, x86::make(t, TABLE_FLAGS));
                table = t;
                continue;
            }
            if x86::is_leaf(level, e) {
                return self.fault_on_present(plat, pid, pcid, table, idx, e, va, r, level);
            }
            table = x86::frame(e);
        }
        let idx = pt_index(va, 1);
        let e = self.mem.read(table, idx);
        if swap::is_swap(e) {
            return self.swap_in(plat, pid, table, idx, e, va, prot, r.write);
        }
        if e & x86::P == 0 {
            let f = self.alloc_frame(plat)?;
            self.fill(f, 1, va, file);
            plat.stats().demand_faults += 1;
            self.write_pte(plat, table, idx, x86::make(f, leaf_flags(prot, r.write)));
            self.rmap_add(f, pid, va);
            plat.end_pt_update(&mut self.mem);
            return Ok(());
        }
        self.fault_on_present(plat, pid, pcid, table, idx, e, va, r, 1)
    }

    /// A fault on a present leaf at `level` (1 = 4 KiB, 2 = 2 MiB, 3 =
    /// 1 GiB): copy-on-write, or a right the VMA now grants.
    #[allow(clippy::too_many_arguments)]
    fn fault_on_present<P: Platform>(
        &mut self,
        plat: &mut P,
        pid: u32,
        pcid: u16,
        table: u64,
        idx: usize,
        e: u64,
        va: u64,
        r: Rights,
        level: u8,
    ) -> Result<(), SimError> {
        let huge = level > 1;
        let n = x86::leaf_frames(level);
        let mut new = e | x86::A;
        if r.fetch {
            new &= !x86::NX;
        }
        if r.write && e & x86::RW == 0 {
            let old = x86::frame(e);
            plat.stats().cow_faults += 1;
            if self.frames.refs(old) > 1 {
                let copy = if huge {
                    let big = if level == 3 {
                        self.frames.alloc_1g()
                    } else {
                        self.frames.alloc_2m()
                    };
                    let Some(big) = big else {
                        // No free page of that size: split the shared leaf
                        // and copy the smaller page on the next fault (as
                        // Linux's huge-page write fault falls back to a split).
                        let base = va & !(n * PAGE_SIZE - 1);
                        return self.split_huge(plat, pid, pcid, table, idx, e, base, level);
                    };
                    big
                } else {
                    self.take_4k(plat)?
                };
                for f in copy..copy + n {
                    plat.touch_frame(&mut self.mem, f);
                }
                if let Some(c) = &mut self.contents {
                    c.copy(old, copy, n);
                }
                plat.stats().frames_copied += n;
                self.frames.put(old, n);
                if !huge {
                    self.rmap_remove(old, pid, va);
                    self.rmap_add(copy, pid, va);
                }
                new = x86::make(copy, new & !x86::FRAME);
            }
            new |= x86::RW | x86::D;
        }
        self.write_pte(plat, table, idx, new);
        plat.end_pt_update(&mut self.mem);
        if huge {
            // The TLB may hold a huge page as splintered smaller entries
            // (EPT or shadow maps smaller pages): one INVLPG would miss most.
            plat.stats().tlb_flushes += 1;
            plat.flush_pcid(pcid);
        } else {
            plat.stats().invlpgs += 1;
            plat.invlpg(pcid, Gva(va));
        }
        Ok(())
    }

    /// Fork: `child` gets a copy of `parent`'s VMAs and page tables; private
    /// writable pages become read-only in both (copy on write), then the
    /// parent's TLB entries are flushed (Linux `copy_page_range` +
    /// `flush_tlb_mm`).
    ///
    /// # Errors
    /// Out of guest memory or PCIDs.
    pub fn fork<P: Platform>(
        &mut self,
        plat: &mut P,
        parent: u32,
        child: u32,
    ) -> Result<(), SimError> {
        if child == parent {
            return Err(SimError::BadEvent {
                pid: parent,
                event: format!("fork child {child}"),
                why: "a process cannot fork a child with its own pid".into(),
            });
        }
        self.spawn(plat, parent)?;
        if self.procs.contains_key(&child) {
            self.exit(plat, child)?;
        }
        let pcid = self.new_pcid()?;
        let root = self.alloc_table(plat)?;
        let p = &self.procs[&parent];
        let (vmas, heap, proot, ppcid) = (p.vmas.clone(), p.heap, p.root, p.pcid);
        let protected = self.copy_table(plat, child, proot, root, self.cfg.levels, 0)?;
        plat.end_pt_update(&mut self.mem);
        if protected {
            plat.stats().tlb_flushes += 1;
            plat.flush_pcid(ppcid);
        }
        plat.stats().forks += 1;
        plat.stats().processes += 1;
        self.procs.insert(
            child,
            Process {
                pid: child,
                pcid,
                root,
                vmas,
                heap,
            },
        );
        Ok(())
    }

    /// Copy the subtree of table `src` (at `level`, mapping from gVA
    /// `base`) into the empty table `dst` of process `child`. Returns
    /// whether any parent entry was write-protected.
    fn copy_table<P: Platform>(
        &mut self,
        plat: &mut P,
        child: u32,
        src: u64,
        dst: u64,
        level: u8,
        base: u64,
    ) -> Result<bool, SimError> {
        let mut protected = false;
        for idx in 0..512 {
            let e = self.mem.read(src, idx);
            let va = base | (idx as u64) << (12 + 9 * (u32::from(level) - 1));
            if swap::is_swap(e) {
                // Both processes now hold the slot (Linux `swap_duplicate`).
                self.swap_dup(e);
                self.write_pte(plat, dst, idx, e);
                continue;
            }
            if e & x86::P == 0 {
                continue;
            }
            if x86::is_leaf(level, e) {
                let n = x86::leaf_frames(level);
                self.frames.get(x86::frame(e), n);
                if level == 1 {
                    self.rmap_add(x86::frame(e), child, va);
                }
                let ro = e & !x86::RW;
                if e & x86::RW != 0 {
                    self.write_pte(plat, src, idx, ro);
                    protected = true;
                }
                self.write_pte(plat, dst, idx, ro);
            } else {
                let t = self.alloc_table(plat)?;
                self.write_pte(plat, dst, idx, x86::make(t, TABLE_FLAGS));
                protected |= self.copy_table(plat, child, x86::frame(e), t, level - 1, va)?;
            }
        }
        Ok(protected)
    }

    /// Free every frame, swap slot and table of `pid`'s subtree at `table`
    /// (level `level`, mapping from gVA `base`), the table itself included.
    fn free_table(&mut self, pid: u32, table: u64, level: u8, base: u64) {
        for idx in 0..512 {
            let e = self.mem.read(table, idx);
            let va = base | (idx as u64) << (12 + 9 * (u32::from(level) - 1));
            if swap::is_swap(e) {
                self.swap_put(e);
                continue;
            }
            if e & x86::P == 0 {
                continue;
            }
            if x86::is_leaf(level, e) {
                let n = x86::leaf_frames(level);
                self.frames.put(x86::frame(e), n);
                if level == 1 {
                    self.rmap_remove(x86::frame(e), pid, va);
                }
            } else {
                self.free_table(pid, x86::frame(e), level - 1, va);
            }
        }
        self.mem.remove(table);
        self.frames.put(table, 1);
    }

    /// Process `pid` exits: its address space is torn down, frames freed,
    /// its PCID flushed and released.
    ///
    /// # Errors
    /// None today; `Result` for symmetry with the other events.
    pub fn exit<P: Platform>(&mut self, plat: &mut P, pid: u32) -> Result<(), SimError> {
        let Some(p) = self.procs.remove(&pid) else {
            return Ok(());
        };
        self.free_table(pid, p.root, self.cfg.levels, 0);
        plat.stats().tlb_flushes += 1;
        plat.flush_pcid(p.pcid);
        if self.cfg.pcid {
            self.free_pcids.push(p.pcid);
        }
        if self.current == Some(pid) {
            self.current = None;
        }
        plat.stats().exits += 1;
        Ok(())
    }

    /// execve: `pid` gets a new, empty address space.
    ///
    /// # Errors
    /// Out of guest memory.
    pub fn exec<P: Platform>(&mut self, plat: &mut P, pid: u32) -> Result<(), SimError> {
        self.spawn(plat, pid)?;
        let root = self.alloc_table(plat)?;
        plat.end_pt_update(&mut self.mem);
        let p = self.procs.get_mut(&pid).expect("spawned");
        let (old, pcid) = (p.root, p.pcid);
        p.root = root;
        p.vmas = Vmas::default();
        p.heap = None;
        if self.current == Some(pid) {
            plat.write_cr3(&mut self.mem, root, pcid);
        }
        self.free_table(pid, old, self.cfg.levels, 0);
        plat.stats().tlb_flushes += 1;
        plat.flush_pcid(pcid);
        plat.stats().execs += 1;
        Ok(())
    }

    /// The VMAs of a process that exists.
    fn vmas_mut(&mut self, pid: u32) -> &mut Vmas {
        &mut self.procs.get_mut(&pid).expect("spawned").vmas
    }

    /// mmap: a new VMA `[addr, addr+len)`; whatever was mapped there is unmapped first.
    ///
    /// # Errors
    /// Out of guest memory.
    pub fn mmap<P: Platform>(
        &mut self,
        plat: &mut P,
        pid: u32,
        addr: u64,
        len: u64,
        prot: u32,
    ) -> Result<(), SimError> {
        let (s, e) = event_range(
            pid,
            &|| format!("mmap {addr:#x} len {len:#x}"),
            addr,
            len,
            self.user_top,
        )?;
        self.spawn(plat, pid)?;
        self.unmap_range(plat, pid, s, e)?;
        self.vmas_mut(pid).insert(s, e, prot & PROT_RWX, false);
        plat.stats().vma_events += 1;
        Ok(())
    }

    /// munmap `[addr, addr+len)`.
    ///
    /// # Errors
    /// Out of guest memory (splitting a 2 MiB page needs a table).
    pub fn munmap<P: Platform>(
        &mut self,
        plat: &mut P,
        pid: u32,
        addr: u64,
        len: u64,
    ) -> Result<(), SimError> {
        let (s, e) = event_range(
            pid,
            &|| format!("munmap {addr:#x} len {len:#x}"),
            addr,
            len,
            self.user_top,
        )?;
        self.spawn(plat, pid)?;
        self.unmap_range(plat, pid, s, e)?;
        self.procs.get_mut(&pid).expect("spawned").vmas.remove(s, e);
        plat.stats().vma_events += 1;
        Ok(())
    }

    /// brk: the heap ends at `addr` (the first brk only sets where it starts).
    ///
    /// # Errors
    /// Out of guest memory.
    pub fn brk<P: Platform>(&mut self, plat: &mut P, pid: u32, addr: u64) -> Result<(), SimError> {
        if addr > self.user_top {
            return Err(SimError::BadEvent {
                pid,
                event: format!("brk {addr:#x}"),
                why: format!(
                    "the program break lies in the user half, below {:#x}",
                    self.user_top
                ),
            });
        }
        self.spawn(plat, pid)?;
        plat.stats().vma_events += 1;
        let p = self.procs.get_mut(&pid).expect("spawned");
        let Some((start, end)) = p.heap else {
            p.heap = Some((addr, addr));
            return Ok(());
        };
        let new_end = addr.max(start);
        if page_up(new_end) > page_up(end) {
            p.vmas.insert(
                page_up(end),
                page_up(new_end),
                PROT_READ | PROT_WRITE,
                false,
            );
        } else if page_up(new_end) < page_up(end) {
            let (s, e) = (page_up(new_end), page_up(end));
            self.unmap_range(plat, pid, s, e)?;
            self.procs.get_mut(&pid).expect("spawned").vmas.remove(s, e);
        }
        self.procs.get_mut(&pid).expect("spawned").heap = Some((start, new_end));
        Ok(())
    }

    /// mprotect `[addr, addr+len)` to `prot`: VMAs change, present leaves
    /// lose write (and gain or lose NX) at once; write is granted lazily by
    /// the next fault, as for copy-on-write.
    ///
    /// # Errors
    /// Out of guest memory (splitting a 2 MiB page needs a table).
    pub fn mprotect<P: Platform>(
        &mut self,
        plat: &mut P,
        pid: u32,
        addr: u64,
        len: u64,
        prot: u32,
    ) -> Result<(), SimError> {
        let (s, e) = event_range(
            pid,
            &|| format!("mprotect {addr:#x} len {len:#x}"),
            addr,
            len,
            self.user_top,
        )?;
        self.spawn(plat, pid)?;
        self.vmas_mut(pid).protect(s, e, prot & PROT_RWX);
        plat.stats().vma_events += 1;
        let ranges = self.vmas_mut(pid).mapped(s, e);
        self.for_leaves(plat, pid, &ranges, |e| {
            let mut n = e;
            if prot & PROT_WRITE == 0 {
                n &= !x86::RW;
            }
            if prot & PROT_EXEC == 0 {
                n |= x86::NX;
            } else {
                n &= !x86::NX;
            }
            Some(n)
        })
    }

    /// Clear every leaf in `[s, e)` and free what it mapped.
    fn unmap_range<P: Platform>(
        &mut self,
        plat: &mut P,
        pid: u32,
        s: u64,
        e: u64,
    ) -> Result<(), SimError> {
        let Some(p) = self.procs.get(&pid) else {
            return Ok(());
        };
        let ranges = p.vmas.mapped(s, e);
        self.for_leaves(plat, pid, &ranges, |_| None)
    }

    /// Rewrite every present leaf in the ascending, disjoint `ranges` with
    /// `f(entry)` (`None` clears it and frees its frames), splitting 2 MiB
    /// leaves that straddle a range, then invalidate: one INVLPG per page up
    /// to the ceiling, else a flush of the address space. The ranges are
    /// the mapped parts of the operation's range (every present leaf lies
    /// in a VMA), so the work follows what is mapped, not the range's length.
    fn for_leaves<P: Platform>(
        &mut self,
        plat: &mut P,
        pid: u32,
        ranges: &[(u64, u64)],
        f: impl Fn(u64) -> Option<u64>,
    ) -> Result<(), SimError> {
        let Some(p) = self.procs.get(&pid) else {
            return Ok(());
        };
        let (root, pcid) = (p.root, p.pcid);
        let ceiling = self.cfg.invlpg_ceiling_pages;
        let mut changed: u64 = 0;
        // Pages to INVLPG, kept only while under the ceiling.
        let mut to_invalidate: Vec<u64> = Vec::new();
        for &(s, e) in ranges {
            let mut va = s;
            while va < e {
                let path = softwalk::path(&self.mem, root, self.cfg.levels, va);
                let (table, idx, entry) = path.steps[path.len - 1];
                let level = path.leaf_level();
                if swap::is_swap(entry) {
                    // A page in swap: unmapping drops the slot; a change of
                    // rights applies when it is read back (from the VMA).
                    if f(entry).is_none() {
                        self.write_pte(plat, table, idx, 0);
                        self.swap_put(entry);
                    }
                    va += PAGE_SIZE;
                    continue;
                }
                if entry & x86::P == 0 {
                    let span = 1u64 << (12 + 9 * (u32::from(level) - 1));
                    va = (va & !(span - 1)).saturating_add(span);
                    continue;
                }
                let n = x86::leaf_frames(level);
                if level > 1 {
                    // A huge leaf: split it unless the range covers all of it.
                    let size = n * PAGE_SIZE;
                    let base = va & !(size - 1);
                    if base < s || e - base < size {
                        self.split_huge(plat, pid, pcid, table, idx, entry, base, level)?;
                        continue;
                    }
                }
                let new = f(entry);
                if new != Some(entry) {
                    match new {
                        Some(v) => self.write_pte(plat, table, idx, v),
                        None => {
                            self.write_pte(plat, table, idx, 0);
                            self.frames.put(x86::frame(entry), n);
                            if n == 1 {
                                self.rmap_remove(x86::frame(entry), pid, va);
                            }
                        }
                    }
                    changed += n;
                    if changed <= ceiling {
                        to_invalidate.push(va);
                    }
                }
                va += n * PAGE_SIZE;
            }
        }
        plat.end_pt_update(&mut self.mem);
        if changed > ceiling {
            plat.stats().tlb_flushes += 1;
            plat.flush_pcid(pcid);
        } else {
            for va in to_invalidate {
                plat.stats().invlpgs += 1;
                plat.invlpg(pcid, Gva(va));
            }
        }
        Ok(())
    }

    /// Replace the huge leaf `entry` at (`table`, `idx`, `level` 2 or 3)
    /// by a table of 512 leaves one level down mapping the same frames with
    /// the same rights: 4 KiB leaves for a 2 MiB page, 2 MiB leaves for a
    /// 1 GiB page (Linux `__split_huge_pud` then `__split_huge_pmd`).
    #[allow(clippy::too_many_arguments)]
    fn split_huge<P: Platform>(
        &mut self,
        plat: &mut P,
        pid: u32,
        pcid: u16,
        table: u64,
        idx: usize,
        entry: u64,
        va: u64,
        level: u8,
    ) -> Result<(), SimError> {
        let t = self.alloc_table(plat)?;
        let base = x86::frame(entry);
        let step = x86::leaf_frames(level - 1);
        let flags = if level == 3 {
            entry & !x86::FRAME
        } else {
            entry & !x86::FRAME & !x86::PS
        };
        for i in 0..512u64 {
            self.write_pte(plat, t, i as usize, x86::make(base + i * step, flags));
            if level == 2 {
                self.rmap_add(base + i, pid, va + i * PAGE_SIZE);
            }
        }
        self.write_pte(plat, table, idx, x86::make(t, TABLE_FLAGS));
        // Like Linux's __split_huge_pmd (pmdp_invalidate + flush): the PDE
        // changed from a leaf to a table pointer, and whatever cached the old
        // translation structure (TLB, paging-structure caches, a
        // hypervisor's splinter page) must not be used again.
        plat.end_pt_update(&mut self.mem);
        plat.stats().tlb_flushes += 1;
        plat.flush_pcid(pcid);
        Ok(())
    }
}
