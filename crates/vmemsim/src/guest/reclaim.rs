//! Guest reclaim: when the guest's free frames fall below the low
//! watermark, the guest kernel frees frames until the high watermark by
//! swapping anonymous pages out to its swap device, and reads them back on
//! the next access (a major fault).
//!
//! The choice of victims is a clock (second chance) over the guest's
//! frames, using the PTE accessed bits: a frame whose leaf has A set gets
//! A cleared (a PTE store through the [`Platform`], so shadow paging traps
//! and emulates it and nested does not, then INVLPG so the next access
//! walks and sets A again) and is passed over; one whose A is clear is the
//! victim. This approximates Linux's active/inactive LRU for anonymous
//! memory, which also ages pages by their accessed bits
//! (`page_referenced` in `mm/rmap.c`, `shrink_active_list`,
//! `shrink_inactive_list` in `mm/vmscan.c`) with one list instead of two.
//! The reclaim is direct (the allocating operation waits for it), as
//! Linux's `__alloc_pages_direct_reclaim` when kswapd has not kept up.
//!
//! Victims: 4 KiB frames mapped by exactly one leaf (one process, frame
//! reference count 1). Page tables, frames shared copy-on-write and 2 MiB
//! pages stay resident. A victim's leaf becomes a swap entry
//! ([`super::swap::entry`]); the write to the device reads the frame
//! ([`Platform::read_frame`]: on a host that swapped the frame out, the
//! host must read it back first - double paging). Writes are asynchronous
//! (nothing waits); a major fault waits `guest.swap_latency_us` for its
//! read.

use rustc_hash::FxHashMap;

use super::content::{self, ContentId, ContentKind};
use super::os::{leaf_flags, pte_gpa, GuestOs};
use super::rmap::Rmap;
use super::softwalk;
use super::swap::{self, GuestSwap};
use super::Platform;
use crate::addr::Gva;
use crate::config::GuestConfig;
use crate::pte::x86;
use crate::SimError;

/// Reclaim state of a guest with a swap device.
#[derive(Clone, Debug)]
pub struct Reclaim {
    /// Mappers of every frame.
    pub rmap: Rmap,
    /// The swap device.
    pub swap: GuestSwap,
    /// The clock hand: the next gPFN to look at.
    hand: u64,
    /// Reclaim starts below this many free frames.
    pub low: u64,
    /// and stops at this many.
    pub high: u64,
    /// (PCID, gVA) to invalidate after a reclaim pass (kept to reuse its buffer).
    invalidate: Vec<(u16, u64)>,
    /// What each used slot holds, when the guest tracks frame contents.
    slot_contents: FxHashMap<u64, (ContentId, ContentKind)>,
}

impl Reclaim {
    /// Reclaim for a guest of `cfg`, or `None` without a swap device (the
    /// guest then cannot free anonymous memory: today's behaviour).
    pub fn new(cfg: &GuestConfig) -> Option<Self> {
        if cfg.swap_mib == 0 {
            return None;
        }
        let (low, high) = cfg.watermarks();
        Some(Reclaim {
            rmap: Rmap::new(cfg.mem_mib * 256),
            swap: GuestSwap::new(cfg.swap_mib * 256),
            hand: 0,
            low,
            high,
            invalidate: Vec::new(),
            slot_contents: FxHashMap::default(),
        })
    }
}

impl GuestOs {
    /// A free 4 KiB frame (reference count 1), reclaiming first when free
    /// frames are below the low watermark.
    ///
    /// # Errors
    /// [`SimError::GuestOutOfMemory`] naming the guest when none is left.
    pub(super) fn take_4k<P: Platform>(&mut self, plat: &mut P) -> Result<u64, SimError> {
        if self
            .reclaim
            .as_ref()
            .is_some_and(|r| self.frames.free_frames() < r.low)
        {
            self.reclaim(plat);
        }
        self.frames
            .alloc_4k()
            .or_else(|| self.deflate_on_oom())
            .ok_or_else(|| self.out_of_memory())
    }

    /// The guest's out-of-memory error.
    pub(super) fn out_of_memory(&self) -> SimError {
        SimError::GuestOutOfMemory {
            who: self.name.clone(),
            mem_mib: self.cfg.mem_mib,
            swap_mib: self.cfg.swap_mib,
        }
    }

    /// One reclaim pass: run the clock until the high watermark is free,
    /// the swap device is full, or two turns found nothing more.
    pub fn reclaim<P: Platform>(&mut self, plat: &mut P) {
        let Some(rc) = self.reclaim.as_mut() else {
            return;
        };
        let frames = self.frames.total();
        let mut budget = 2 * frames;
        let mut inv = std::mem::take(&mut rc.invalidate);
        let mut changed = false;
        while self.frames.free_frames() < rc.high && budget > 0 {
            budget -= 1;
            let g = rc.hand;
            rc.hand = if g + 1 == frames { 0 } else { g + 1 };
            if self.frames.refs(g) != 1 {
                continue;
            }
            let Some((pid, va)) = rc.rmap.sole(g) else {
                continue;
            };
            let Some(p) = self.procs.get(&pid) else {
                continue;
            };
            let (root, pcid) = (p.root, p.pcid);
            let path = softwalk::path(&self.mem, root, self.cfg.levels, va);
            let (table, idx, e) = path.steps[path.len - 1];
            debug_assert!(
                path.leaf_level() == 1 && e & x86::P != 0 && x86::frame(e) == g,
                "rmap: gPFN {g:#x} not mapped by {pid} at {va:#x}"
            );
            plat.stats().reclaim_scanned += 1;
            let new = if e & x86::A != 0 {
                plat.stats().accessed_bits_cleared += 1;
                e & !x86::A
            } else {
                let Some(slot) = rc.swap.alloc() else {
                    break;
                };
                // The write to the swap device reads the frame.
                plat.read_frame(&mut self.mem, g);
                if let Some(c) = &self.contents {
                    rc.slot_contents.insert(slot, (c.get(g), c.kind(g)));
                }
                self.frames.put(g, 1);
                rc.rmap.remove(g, pid, va);
                plat.stats().guest_swap_outs += 1;
                swap::entry(slot)
            };
            plat.stats().guest_pte_writes += 1;
            plat.write_pte(&mut self.mem, pte_gpa(table, idx), new);
            changed = true;
            // Without PCIDs another process's entries left the TLB at its
            // last CR3 load (Linux flushes only a loaded mm).
            if self.cfg.pcid || self.current == Some(pid) {
                inv.push((pcid, va));
            }
        }
        if changed {
            plat.end_pt_update(&mut self.mem);
        }
        for (pcid, va) in inv.drain(..) {
            plat.stats().invlpgs += 1;
            plat.invlpg(pcid, Gva(va));
        }
        if let Some(rc) = self.reclaim.as_mut() {
            rc.invalidate = inv;
        }
    }

    /// A major fault: the leaf (`table`, `idx`) of the running process at
    /// `va` holds swap entry `e`; read the page back into a new frame and
    /// map it with the VMA's rights `prot`.
    ///
    /// # Errors
    /// [`SimError::GuestOutOfMemory`].
    #[allow(clippy::too_many_arguments)]
    pub(super) fn swap_in<P: Platform>(
        &mut self,
        plat: &mut P,
        pid: u32,
        table: u64,
        idx: usize,
        e: u64,
        va: u64,
        prot: u32,
        write: bool,
    ) -> Result<(), SimError> {
        let f = self.take_4k(plat)?;
        // The read from the device writes the whole frame.
        plat.touch_frame(&mut self.mem, f);
        let rc = self
            .reclaim
            .as_mut()
            .expect("a swap entry needs a swap device");
        let slot = swap::slot_of(e);
        if let Some(c) = &mut self.contents {
            let (id, kind) = rc
                .slot_contents
                .get(&slot)
                .copied()
                .unwrap_or((content::ZERO, ContentKind::Zero));
            c.set(f, id, kind);
        }
        if rc.swap.put(slot) {
            rc.slot_contents.remove(&slot);
        }
        rc.rmap.add(f, pid, va & !0xfff);
        let s = plat.stats();
        s.guest_swap_ins += 1;
        s.major_faults += 1;
        s.guest_pte_writes += 1;
        plat.write_pte(
            &mut self.mem,
            pte_gpa(table, idx),
            x86::make(f, leaf_flags(prot, write)),
        );
        plat.end_pt_update(&mut self.mem);
        Ok(())
    }

    /// Pages in the guest's swap now (0 without a swap device).
    pub fn swapped_pages(&self) -> u64 {
        self.reclaim.as_ref().map_or(0, |r| r.swap.used())
    }

    /// The rmap hook of the guest kernel: `pid` maps `gpfn` at `va` with a
    /// 4 KiB leaf (nothing without reclaim).
    #[inline]
    pub(super) fn rmap_add(&mut self, gpfn: u64, pid: u32, va: u64) {
        if let Some(r) = self.reclaim.as_mut() {
            r.rmap.add(gpfn, pid, va & !0xfff);
        }
    }

    /// `pid`'s 4 KiB leaf at `va` no longer maps `gpfn`.
    #[inline]
    pub(super) fn rmap_remove(&mut self, gpfn: u64, pid: u32, va: u64) {
        if let Some(r) = self.reclaim.as_mut() {
            r.rmap.remove(gpfn, pid, va & !0xfff);
        }
    }

    /// A leaf holding swap entry `e` was dropped (unmap, exit).
    pub(super) fn swap_put(&mut self, e: u64) {
        let r = self
            .reclaim
            .as_mut()
            .expect("a swap entry needs a swap device");
        let slot = swap::slot_of(e);
        if r.swap.put(slot) {
            r.slot_contents.remove(&slot);
        }
    }

    /// A fork copied swap entry `e` into the child.
    pub(super) fn swap_dup(&mut self, e: u64) {
        let r = self
            .reclaim
            .as_mut()
            .expect("a swap entry needs a swap device");
        r.swap.dup(swap::slot_of(e));
    }
}
