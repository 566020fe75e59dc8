//! The host's pool of physical frames: one capacity shared by every VM's
//! guest frames and the hypervisor's own table pages (EPT, shadow pages,
//! PV splinters), a free list per kind, and the m2p map (which VM's gPFN a
//! host frame backs).
//!
//! Numbering. Guest-backing frames are hPFNs from 0 up, table pages hPFNs
//! from [`HV_FRAME_BASE`] up: both count against the one capacity, but the
//! two ranges keep a guest frame's hPFN independent of how many table pages
//! a mode allocates, so for the same guest behaviour every virtualized mode
//! backs every gPFN with the same hPFN (the oracle checks it). Fresh frames
//! are handed out in order first; freed frames are reused once a range has
//! handed out as many frames as the pool holds. An unlimited pool (a VM run
//! alone, `vmemsim run`) therefore never reuses a frame.
//!
//! Capacity. Allocation itself never fails: one guest operation (a fault,
//! a fork) takes the frames it needs, and the host's run loop keeps a
//! reserve free between operations (reclaiming, or stopping with an error
//! when it cannot). [`HostMemory::overdrawn`] tells when an operation took
//! more than the reserve held.

use rustc_hash::FxHashMap;

use crate::addr::{Gpfn, Hpfn};
use crate::guest::content::{ContentId, ContentKind, ZERO};
use crate::mem::PageStore;

/// First hPFN of the hypervisor's own table pages (hPA 1 TiB): guest
/// frames are below it, so a host holds at most 1 TiB of guest frames.
pub const HV_FRAME_BASE: u64 = 1 << 28;

/// Index of a VM on its host (0 for a VM run alone).
pub type VmId = u32;

const NONE: u64 = u64::MAX;
/// m2p entry of a frame shared copy-on-write: its owners are in `shared`.
const SHARED: u64 = u64::MAX - 1;
const GPFN_BITS: u32 = 40;

/// A host frame backing several guest frames read-only (content-based
/// page sharing [ESX 4]): the content they all hold and who they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedFrame {
    /// The content id every owner's guest frame holds (guest/content.rs).
    pub content: ContentId,
    /// What that content is (zero, file, anonymous, snapshot).
    pub kind: ContentKind,
    /// (VM, gPFN) of every guest frame it backs; two or more.
    pub owners: Vec<(VmId, Gpfn)>,
}

/// Where the saving of sharing comes from (computed on demand).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SharingSplit {
    /// Frames saved by kind of content: zero, file (or image), anonymous,
    /// snapshot.
    pub saved_by_kind: [u64; 4],
    /// Of `saved_by_kind[3]` (snapshot pages), those in VMAs mapping a
    /// file (the rest are anonymous memory of the real program).
    pub saved_snapshot_file: u64,
    /// Frames saved by equal frames of one VM.
    pub saved_within_vm: u64,
    /// The rest: equal frames in other VMs.
    pub saved_across_vms: u64,
}

/// Content-based sharing in one host's memory, counted per VM (index
/// [`VmId`]) and for the host.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SharingCounts {
    /// Host frames shared now (each backing two or more guest frames).
    pub shared_frames: u64,
    /// Guest frames backed by a shared frame now.
    pub sharing_guest_frames: u64,
    /// Host frames saved now: guest frames backed by shared frames minus
    /// the shared frames (ESX's "reclaimed").
    pub saved_frames: u64,
    /// Of `saved_frames`, those of zero-content frames.
    pub saved_zero_frames: u64,
}

/// Frames of one kind: the next never-used hPFN, the end of the range, and
/// freed frames waiting for reuse.
#[derive(Clone, Debug)]
struct FrameRange {
    next: u64,
    end: u64,
    free: Vec<u64>,
    /// Hand out fresh frames scrambled within each aligned block of
    /// [`SCATTER_BLOCK`] (see [`HostMemory::scatter_fresh_frames`]).
    scatter: bool,
}

/// Frames per block that a scattered pool scrambles: 512, one 2 MiB page.
const SCATTER_BLOCK: u64 = 512;

impl FrameRange {
    fn new(base: u64, frames: u64) -> Self {
        FrameRange {
            next: base,
            end: base.saturating_add(frames),
            free: Vec::new(),
            scatter: false,
        }
    }

    fn alloc(&mut self) -> u64 {
        if self.next >= self.end {
            if let Some(f) = self.free.pop() {
                return f;
            }
        }
        self.next += 1;
        let n = self.next - 1;
        if !self.scatter {
            return n;
        }
        let block = n & !(SCATTER_BLOCK - 1);
        if block.saturating_add(SCATTER_BLOCK) > self.end {
            return n;
        }
        // An odd multiplier is a bijection modulo a power of two, so the
        // block's frames are each handed out once, out of order.
        block | (((n - block) * 173 + 89) & (SCATTER_BLOCK - 1))
    }
}

/// The host-physical memory of one machine: `capacity` 4 KiB frames in all.
#[derive(Clone, Debug)]
pub struct HostMemory {
    capacity: u64,
    used: u64,
    data: FrameRange,
    table_frames: FrameRange,
    /// Owner of each guest-backing hPFN: `vm << 40 | gpfn`, or `NONE`.
    m2p: Vec<u64>,
    /// Contents of the hypervisor's table pages (EPT, shadow, splinters), by hPFN.
    pub tables: PageStore,
    swap: FrameRange,
    swap_used: u64,
    /// Owners of each shared frame (m2p entry [`SHARED`]), by hPFN.
    shared: FxHashMap<u64, SharedFrame>,
    /// Frames whose mappings are write-protected because they are or were
    /// shared, one bit per hPFN: a store to one exits and either copies it
    /// (still shared) or makes it writable again (its last owner).
    cow_wp: Vec<u64>,
    /// Guest frames of each VM backed by a shared frame now (by VM id).
    vm_sharing: Vec<u64>,
    counts: SharingCounts,
}

impl HostMemory {
    /// A pool of `frames` 4 KiB frames (guest frames and table pages
    /// together); at most [`HV_FRAME_BASE`] of them can back guest frames.
    pub fn new(frames: u64) -> Self {
        HostMemory {
            capacity: frames,
            used: 0,
            data: FrameRange::new(0, frames.min(HV_FRAME_BASE)),
            table_frames: FrameRange::new(HV_FRAME_BASE, frames),
            m2p: Vec::new(),
            tables: PageStore::new(HV_FRAME_BASE),
            swap: FrameRange::new(0, 0),
            swap_used: 0,
            shared: FxHashMap::default(),
            cow_wp: Vec::new(),
            vm_sharing: Vec::new(),
            counts: SharingCounts::default(),
        }
    }

    /// Give the host a swap device of `slots` 4 KiB slots.
    pub fn with_swap(mut self, slots: u64) -> Self {
        self.swap = FrameRange::new(0, slots);
        self
    }

    /// A free swap slot, or `None` when the swap device is full.
    pub fn swap_alloc(&mut self) -> Option<u64> {
        if self.swap_used == self.swap.end {
            return None;
        }
        self.swap_used += 1;
        Some(self.swap.alloc())
    }

    /// Swap slot `slot` is free again.
    pub fn swap_release(&mut self, slot: u64) {
        self.swap.free.push(slot);
        self.swap_used -= 1;
    }

    /// Swap slots in use.
    pub fn swap_used(&self) -> u64 {
        self.swap_used
    }

    /// From now on, hand out fresh guest-backing frames scrambled within
    /// each aligned block of 512 frames (2 MiB), as a fragmented host would,
    /// instead of in order. Costs do not depend on hPFN values, so results
    /// stay the same, but code that wrongly assumes a guest's consecutive
    /// frames have consecutive hPFNs (a 2 MiB TLB entry over 4 KiB host
    /// frames, say) now resolves accesses to the wrong hPFN, which the
    /// oracle sees: a check for tests ([`crate::hostsim::HostSim::scattered`]).
    /// Huge host pages ([`HostMemory::alloc_data_run`]) stay contiguous;
    /// a block's last frames are in order when the range ends inside it.
    pub fn scatter_fresh_frames(&mut self) {
        self.data.scatter = true;
    }

    /// A pool that never runs out (the host of a VM run alone).
    pub fn unlimited() -> Self {
        HostMemory::new(u64::MAX)
    }

    /// Frames in the pool.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Frames in use (guest frames backed plus table pages).
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Free frames (0 when overdrawn).
    pub fn free(&self) -> u64 {
        self.capacity.saturating_sub(self.used)
    }

    /// Table pages held by the hypervisor.
    pub fn table_pages(&self) -> u64 {
        self.tables.len() as u64
    }

    /// More frames in use than the pool holds: an operation took more than
    /// the reserve the host kept free.
    pub fn overdrawn(&self) -> bool {
        self.used > self.capacity
    }

    /// A zeroed hypervisor table page; returns its hPFN.
    pub fn alloc_table(&mut self) -> u64 {
        let f = self.table_frames.alloc();
        self.used += 1;
        self.tables.add(f);
        f
    }

    /// Table page `hpfn` is no longer used: its frame returns to the pool.
    pub fn free_table(&mut self, hpfn: u64) {
        if self.tables.contains(hpfn) {
            self.tables.remove(hpfn);
            self.table_frames.free.push(hpfn);
            self.used -= 1;
        }
    }

    /// A frame to back `vm`'s `gpfn`.
    pub fn alloc_data(&mut self, vm: VmId, gpfn: Gpfn) -> Hpfn {
        let h = self.data.alloc();
        self.used += 1;
        let i = h as usize;
        if i >= self.m2p.len() {
            self.m2p.resize((i + 1).next_power_of_two(), NONE);
        }
        debug_assert!(gpfn.0 < 1 << GPFN_BITS);
        self.m2p[i] = (u64::from(vm) << GPFN_BITS) | gpfn.0;
        Hpfn(h)
    }

    /// `n` (a power of two) contiguous frames aligned to `n`, backing
    /// `vm`'s gPFNs `first..first + n` (one huge host page). Fresh frames
    /// only: huge host pages are never freed (no host swapping with them).
    pub fn alloc_data_run(&mut self, vm: VmId, first: Gpfn, n: u64) -> Hpfn {
        let d = &mut self.data;
        // Like `alloc_data`, this never fails: the host's run loop sees an
        // overdrawn pool after the operation.
        let base = d.next.next_multiple_of(n);
        d.next = base + n;
        self.used += n;
        let end = (base + n) as usize;
        if end > self.m2p.len() {
            self.m2p.resize(end.next_power_of_two(), NONE);
        }
        for i in 0..n {
            debug_assert!(first.0 + i < 1 << GPFN_BITS);
            self.m2p[(base + i) as usize] = (u64::from(vm) << GPFN_BITS) | (first.0 + i);
        }
        Hpfn(base)
    }

    /// Guest frame backed by `hpfn` is no longer backed: the frame returns
    /// to the pool.
    pub fn free_data(&mut self, hpfn: Hpfn) {
        let e = &mut self.m2p[hpfn.0 as usize];
        assert_ne!(*e, NONE, "hPFN {:#x} freed twice", hpfn.0);
        assert_ne!(*e, SHARED, "shared hPFN {:#x} freed", hpfn.0);
        *e = NONE;
        if self.cow_protected(hpfn) {
            self.set_cow_wp(hpfn, false);
        }
        self.data.free.push(hpfn.0);
        self.used -= 1;
    }

    /// The VM and gPFN a guest-backing `hpfn` belongs to (the m2p map);
    /// `None` for a free frame and for a shared one (see
    /// [`HostMemory::shared_frame`]).
    #[inline]
    pub fn m2p(&self, hpfn: Hpfn) -> Option<(VmId, Gpfn)> {
        match self.m2p.get(hpfn.0 as usize) {
            Some(&e) if e < SHARED => Some(unpack(e)),
            _ => None,
        }
    }
}

fn unpack(e: u64) -> (VmId, Gpfn) {
    ((e >> GPFN_BITS) as VmId, Gpfn(e & ((1 << GPFN_BITS) - 1)))
}

fn pack(vm: VmId, g: Gpfn) -> u64 {
    (u64::from(vm) << GPFN_BITS) | g.0
}

/// Copy-on-write sharing of guest-backing frames [ESX 4; KSM]. The host
/// keeps, per shared frame, its content and its owners; the hypervisor
/// (hostsim) maps every owner read-only and flushes; a store exits and
/// [`HostMemory::unshare`] gives the writer a private copy.
impl HostMemory {
    /// True when `hpfn` backs two or more guest frames.
    #[inline]
    pub fn is_shared(&self, hpfn: Hpfn) -> bool {
        self.m2p.get(hpfn.0 as usize) == Some(&SHARED)
    }

    /// True when the mappings of `hpfn` are write-protected for sharing
    /// (it is shared, or was and its last owner has not written it since).
    /// One bit test: false on every host without sharing.
    #[inline]
    pub fn cow_protected(&self, hpfn: Hpfn) -> bool {
        self.cow_wp
            .get((hpfn.0 / 64) as usize)
            .is_some_and(|w| w & (1 << (hpfn.0 % 64)) != 0)
    }

    fn set_cow_wp(&mut self, hpfn: Hpfn, on: bool) {
        let w = (hpfn.0 / 64) as usize;
        if w >= self.cow_wp.len() {
            self.cow_wp.resize((w + 1).next_power_of_two(), 0);
        }
        if on {
            self.cow_wp[w] |= 1 << (hpfn.0 % 64);
        } else {
            self.cow_wp[w] &= !(1 << (hpfn.0 % 64));
        }
    }

    /// The last owner of write-protected `hpfn` stores to it: the frame is
    /// writable again, no copy (its mappings are the caller's to restore).
    pub fn cow_unprotect(&mut self, hpfn: Hpfn) {
        debug_assert!(!self.is_shared(hpfn));
        self.set_cow_wp(hpfn, false);
    }

    /// The shared frame `hpfn`'s content and owners, if it is shared.
    pub fn shared_frame(&self, hpfn: Hpfn) -> Option<&SharedFrame> {
        self.shared.get(&hpfn.0)
    }

    /// True when `hpfn` backs `vm`'s `gpfn` (alone or shared).
    pub fn backs(&self, hpfn: Hpfn, vm: VmId, gpfn: Gpfn) -> bool {
        if self.is_shared(hpfn) {
            self.shared[&hpfn.0].owners.contains(&(vm, gpfn))
        } else {
            self.m2p(hpfn) == Some((vm, gpfn))
        }
    }

    /// The one gPFN of `vm` that `hpfn` backs: the m2p entry, or, for a
    /// shared frame, `vm`'s only owner entry (`None` when `vm` has two or
    /// more guest frames on it: sharing within a VM; the caller must find
    /// the gPFN another way).
    #[inline]
    pub fn gpfn_of(&self, hpfn: Hpfn, vm: VmId) -> Option<Gpfn> {
        match self.m2p.get(hpfn.0 as usize) {
            Some(&e) if e < SHARED => {
                let (v, g) = unpack(e);
                (v == vm).then_some(g)
            }
            Some(&SHARED) => {
                let s = &self.shared[&hpfn.0];
                let mut it = s.owners.iter().filter(|o| o.0 == vm);
                let first = it.next()?.1;
                it.next().is_none().then_some(first)
            }
            _ => None,
        }
    }

    /// Sharing now, for the host (`None`) or one VM.
    pub fn sharing(&self, vm: Option<VmId>) -> SharingCounts {
        match vm {
            None => self.counts.clone(),
            Some(v) => SharingCounts {
                sharing_guest_frames: self.vm_sharing.get(v as usize).copied().unwrap_or(0),
                ..SharingCounts::default()
            },
        }
    }

    /// Frames saved now by kind of content and by where the owners are:
    /// a shared frame with `n` owners saves `n - 1`, of which
    /// `m_v - 1` for each VM `v` holding `m_v` of them are within that VM.
    pub fn sharing_split(&self) -> SharingSplit {
        let mut s = SharingSplit::default();
        for f in self.shared.values() {
            let n = f.owners.len() as u64;
            s.saved_by_kind[f.kind.index().min(3)] += n - 1;
            if f.kind == ContentKind::SnapshotFile {
                s.saved_snapshot_file += n - 1;
            }
            let mut vms: Vec<VmId> = f.owners.iter().map(|o| o.0).collect();
            vms.sort_unstable();
            vms.dedup();
            s.saved_within_vm += n - vms.len() as u64;
        }
        s.saved_across_vms = self.counts.saved_frames - s.saved_within_vm;
        s
    }

    /// Each VM's charge for the shared frames backing its guest frames,
    /// in frames, indexed by [`VmId`] (`vms` entries): a shared frame
    /// backing `k` guest frames charges each of them `1/k`, so a VM with
    /// `m` of them pays `m/k` and the charges of all VMs add up to the
    /// shared frames. This is ESX's consumed memory: "the amount of
    /// machine memory allocated to the VM, accounting for savings from
    /// shared memory" (vSphere Resource Management, "Measuring and
    /// Differentiating Types of Memory Usage": a shared block counts as
    /// `1/k` for each of its `k` sharers). One pass over the shared frames
    /// (none without sharing); deterministic (the map's order follows the
    /// run's history, not a random seed).
    pub fn shared_charges(&self, vms: usize) -> Vec<f64> {
        let mut c = vec![0.0; vms];
        for f in self.shared.values() {
            let k = f.owners.len() as f64;
            for o in &f.owners {
                if let Some(x) = c.get_mut(o.0 as usize) {
                    *x += 1.0 / k;
                }
            }
        }
        c
    }

    fn vm_sharing_add(&mut self, vm: VmId, n: i64) {
        let i = vm as usize;
        if i >= self.vm_sharing.len() {
            self.vm_sharing.resize(i + 1, 0);
        }
        self.vm_sharing[i] = self.vm_sharing[i].checked_add_signed(n).expect("count");
    }

    /// Back the guest frame that private frame `other` backs by `keep`
    /// instead (both hold `content`), and free `other`: `keep` becomes or
    /// stays a shared frame, write-protected. Returns the (VM, gPFN) moved.
    /// The caller remaps it (p2m, EPT, shadow) read-only and flushes, and
    /// write-protects `keep`'s first owner's mappings when `keep` was
    /// private.
    ///
    /// # Panics
    /// `other` is free or shared, `keep` is free, or they are the same frame.
    pub fn share(
        &mut self,
        keep: Hpfn,
        content: ContentId,
        kind: ContentKind,
        other: Hpfn,
    ) -> (VmId, Gpfn) {
        assert_ne!(keep, other, "a frame shared with itself");
        let moved = self.m2p(other).expect("the frame merged is private");
        if !self.is_shared(keep) {
            let first = self.m2p(keep).expect("the frame kept backs a guest frame");
            self.m2p[keep.0 as usize] = SHARED;
            self.shared.insert(
                keep.0,
                SharedFrame {
                    content,
                    kind,
                    owners: vec![first],
                },
            );
            self.set_cow_wp(keep, true);
            self.counts.shared_frames += 1;
            self.counts.sharing_guest_frames += 1;
            self.vm_sharing_add(first.0, 1);
        }
        let s = self.shared.get_mut(&keep.0).expect("shared");
        debug_assert_eq!(s.content, content, "frames of different content shared");
        s.owners.push(moved);
        self.counts.sharing_guest_frames += 1;
        self.counts.saved_frames += 1;
        if content == ZERO {
            self.counts.saved_zero_frames += 1;
        }
        self.vm_sharing_add(moved.0, 1);
        self.free_data(other);
        moved
    }

    /// `vm`'s `gpfn` leaves shared frame `hpfn` (a COW break, or the frame
    /// released or swapped by that VM): when one owner is left the frame is
    /// private again (still write-protected until that owner stores).
    fn leave(&mut self, hpfn: Hpfn, vm: VmId, gpfn: Gpfn) {
        let s = self.shared.get_mut(&hpfn.0).expect("a shared frame");
        let i = s
            .owners
            .iter()
            .position(|&o| o == (vm, gpfn))
            .expect("the frame backs that guest frame");
        s.owners.swap_remove(i);
        let zero = s.content == ZERO;
        let last = (s.owners.len() == 1).then(|| s.owners[0]);
        self.counts.saved_frames -= 1;
        self.counts.saved_zero_frames -= u64::from(zero);
        self.counts.sharing_guest_frames -= 1;
        self.vm_sharing_add(vm, -1);
        if let Some(last) = last {
            self.shared.remove(&hpfn.0);
            self.m2p[hpfn.0 as usize] = pack(last.0, last.1);
            self.counts.shared_frames -= 1;
            self.counts.sharing_guest_frames -= 1;
            self.vm_sharing_add(last.0, -1);
        }
    }

    /// Copy-on-write break: `vm`'s `gpfn` stores to shared `hpfn` and gets
    /// a private copy, returned (allocated as [`HostMemory::alloc_data`]).
    pub fn unshare(&mut self, hpfn: Hpfn, vm: VmId, gpfn: Gpfn) -> Hpfn {
        self.leave(hpfn, vm, gpfn);
        self.alloc_data(vm, gpfn)
    }

    /// `vm`'s `gpfn` no longer needs `hpfn` (released to a balloon, or
    /// swapped out): a private frame is freed (true); a shared one only
    /// loses that owner (false).
    pub fn release_owner(&mut self, hpfn: Hpfn, vm: VmId, gpfn: Gpfn) -> bool {
        if self.is_shared(hpfn) {
            self.leave(hpfn, vm, gpfn);
            return false;
        }
        self.free_data(hpfn);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scattered pool of 1 100 frames hands out blocks 0 and 1 (frames
    /// 0-1 023) each frame once and out of order, frame 89 first
    /// ((0 * 173 + 89) mod 512), and the partial block 1 024-1 099 in order.
    #[test]
    fn a_scattered_pool_hands_out_each_frame_once_scrambled_within_its_block() {
        let mut h = HostMemory::new(1100);
        h.scatter_fresh_frames();
        let got: Vec<u64> = (0..1100).map(|g| h.alloc_data(0, Gpfn(g)).0).collect();
        assert_eq!(&got[..3], &[89, 262, 435]);
        assert_eq!(got[512], 512 + 89);
        let mut blocks = got[..1024].to_vec();
        blocks.sort_unstable();
        assert_eq!(blocks, (0..1024).collect::<Vec<u64>>());
        assert!(got[..512].iter().all(|&f| f < 512));
        assert_eq!(&got[1024..], &(1024..1100).collect::<Vec<u64>>()[..]);
        assert_eq!(h.m2p(Hpfn(89)), Some((0, Gpfn(0))));
    }

    #[test]
    fn one_capacity_for_guest_frames_and_tables_with_reuse() {
        let mut h = HostMemory::new(3);
        assert_eq!(h.alloc_data(0, Gpfn(9)), Hpfn(0));
        assert_eq!(h.alloc_table(), HV_FRAME_BASE);
        assert_eq!(h.alloc_data(1, Gpfn(4)), Hpfn(1));
        assert_eq!((h.free(), h.overdrawn()), (0, false));
        assert_eq!(h.m2p(Hpfn(1)), Some((1, Gpfn(4))));
        h.free_data(Hpfn(0));
        assert_eq!(h.m2p(Hpfn(0)), None);
        // The data range has a fresh frame left (hPFN 2), used before reuse.
        assert_eq!(h.alloc_data(0, Gpfn(5)), Hpfn(2));
        h.free_data(Hpfn(1));
        h.free_table(HV_FRAME_BASE);
        assert_eq!(h.free(), 2);
        assert_eq!(h.alloc_data(2, Gpfn(1)), Hpfn(1), "freed frame reused");
        assert_eq!(h.alloc_table(), HV_FRAME_BASE + 1);
        // A fourth frame overdraws the pool: the run loop must notice.
        h.alloc_table();
        assert!(h.overdrawn());
    }
}
