//! Native execution: no VM. The hardware walks the guest's (the OS's) own
//! tables, 1-D, at most 4 references; gPA = hPA; nothing exits.
//!
//! On a shared host (`vmemsim host`) a native "VM" stands for a bare-metal
//! partition of the machine: its frames come from the host pool (a first
//! write takes one, no exit) and TLB entries map 4 KiB host frames; its
//! walks still reference the tables at their gPAs (a simplification: the
//! line cache may alias them with other VMs' hPAs).

use super::{Core, Fill, GuestFault, Mode};
use crate::addr::{Gpfn, PageSize};
use crate::guest::GuestMemory;
use crate::mmu::walker::walk_1d;
use crate::mmu::{Dim, Leaf, Rights};

/// Native mode (no VM: VPID 0; gPA = hPA).
#[derive(Debug, Default)]
pub struct Native;

impl Mode for Native {
    const VIRTUALIZED: bool = false;
    fn name(&self) -> &'static str {
        "native"
    }
    fn fill(
        &mut self,
        core: &mut Core,
        mem: &mut GuestMemory,
        va: u64,
        r: Rights,
    ) -> Result<Fill, GuestFault> {
        let asid = core.asid();
        let res = walk_1d(core.hw, mem, Dim::Guest, core.vm.guest_root, asid, va, r);
        core.walk_done();
        let l = res.map_err(|_| GuestFault)?;
        Ok(bare_metal_fill(core, &l, va))
    }
    fn touch_frame(&mut self, core: &mut Core, _mem: &mut GuestMemory, gpfn: Gpfn) {
        bare_metal_touch(core, gpfn);
    }
}

/// The fill of a mode without a VM (`native`, `swtlb-native`) for the
/// guest leaf `l` of `va`: gPA = hPA, or, on a shared host, the host
/// frame backing the gPFN. There the frames come from the pool, 4 KiB
/// each, so the TLB entry maps the one frame (not a contiguous 2 MiB
/// page). Inlined: it ends every TLB miss of these modes.
#[inline]
pub(super) fn bare_metal_fill(core: &Core, l: &Leaf, va: u64) -> Fill {
    if !core.vm.hosted {
        return Fill::of_leaf(l, l.frame, l.frame);
    }
    let g = l.frame_of(va);
    let h = core.p2m(Gpfn(g)).expect("a hosted native frame is backed");
    Fill {
        size: PageSize::Size4K,
        ..Fill::of_leaf(l, g, h.0)
    }
}

/// A mode without a VM writes a whole frame: on a shared host its first
/// write takes a frame from the pool (no exit).
pub(super) fn bare_metal_touch(core: &mut Core, gpfn: Gpfn) {
    if core.vm.hosted {
        core.back(gpfn);
    }
}
