//! What content-based page sharing could reclaim at one moment: a census
//! of the contents of every in-use guest frame of every VM on a host, as an
//! ideal scanner that had visited every frame just now would find them
//! (Waldspurger, OSDI 2002, section 4). Frames with equal contents could
//! all be backed by one host frame: each content held by `n` frames saves
//! `n - 1`. Savings are split by what the content is (zero, file page,
//! anonymous, snapshot) and by where the equal frames are (within one VM:
//! `n_vm - 1` per VM; the rest across VMs).
//!
//! This is the potential, not a scanner: no rate limit, no copy-on-write
//! breaks, no host frames freed (the scanner and sharing itself are not
//! implemented yet: docs/sharing.md). Guest page-table frames are never
//! counted as shareable.

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::guest::content::{ContentId, ContentKind};
use crate::guest::GuestOs;

/// The census of one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SharingCensus {
    /// Guest frames in use (mapped by some process), page tables excluded,
    /// summed over the VMs.
    pub frames_in_use: u64,
    /// Frames whose content another in-use frame also holds ("shared" in
    /// ESX's sense: they would map a shared frame).
    pub shared_frames: u64,
    /// Frames sharing would free (`n - 1` per content held by `n` frames):
    /// "reclaimed".
    pub frames_saved: u64,
    /// `frames_saved` by kind: zero, file, anonymous, snapshot.
    pub saved_by_kind: [u64; 4],
    /// Of `frames_saved`, those whose equal frames are in the same VM.
    pub saved_within_vm: u64,
    /// Of `frames_saved`, the rest (equal frames in other VMs).
    pub saved_across_vms: u64,
}

impl SharingCensus {
    /// `shared_frames` as a fraction of `frames_in_use` (0 when none).
    pub fn shared_fraction(&self) -> f64 {
        self.shared_frames as f64 / self.frames_in_use.max(1) as f64
    }
    /// `frames_saved` as a fraction of `frames_in_use` (0 when none).
    pub fn saved_fraction(&self) -> f64 {
        self.frames_saved as f64 / self.frames_in_use.max(1) as f64
    }
    /// `frames_saved` without the zero pages, as a fraction of `frames_in_use`.
    pub fn saved_fraction_without_zero(&self) -> f64 {
        (self.frames_saved - self.saved_by_kind[0]) as f64 / self.frames_in_use.max(1) as f64
    }
}

/// The census of `guests` (one per VM; each must track contents).
///
/// # Panics
/// A guest that does not track contents (a caller bug).
pub fn census(guests: &[&GuestOs]) -> SharingCensus {
    let mut total: FxHashMap<ContentId, (u64, ContentKind)> = FxHashMap::default();
    let mut per_vm: FxHashMap<(usize, ContentId), u64> = FxHashMap::default();
    let mut c = SharingCensus::default();
    for (v, g) in guests.iter().enumerate() {
        let contents = g
            .contents()
            .expect("census of a guest that tracks contents");
        for f in 0..contents.frames() {
            let kind = contents.kind(f);
            if kind == ContentKind::PageTable || g.frame_refs(f) == 0 {
                continue;
            }
            c.frames_in_use += 1;
            let id = contents.get(f);
            total.entry(id).or_insert((0, kind)).0 += 1;
            *per_vm.entry((v, id)).or_insert(0) += 1;
        }
    }
    for &(n, kind) in total.values() {
        if n >= 2 {
            c.shared_frames += n;
            c.frames_saved += n - 1;
            c.saved_by_kind[kind.index()] += n - 1;
        }
    }
    c.saved_within_vm = per_vm.values().map(|&n| n.saturating_sub(1)).sum();
    c.saved_across_vms = c.frames_saved - c.saved_within_vm;
    c
}
