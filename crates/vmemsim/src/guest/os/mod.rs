//! The guest kernel: processes, page-fault handling, fork, exec, exit and
//! the VMA-changing system calls, modeled on Linux's behaviour.

mod fault;
mod mapping;
mod process;

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

    /// The VMAs of a process that exists.
    fn vmas_mut(&mut self, pid: u32) -> &mut Vmas {
        &mut self.procs.get_mut(&pid).expect("spawned").vmas
    }
}
