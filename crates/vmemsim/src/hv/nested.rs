//! Nested paging (Intel EPT / AMD NPT): the guest manages its own tables
//! freely; the hardware walks them in 2-D, translating every guest table
//! reference and the final gPA through the EPT (24 references cold for
//! 4-level over 4-level \[B08\]). Guest page faults, PTE stores, CR3 writes
//! and INVLPG do not exit; only a guest frame with no host frame behind it
//! does (EPT violation).

use super::{Core, Fill, GuestFault, Mode};
use crate::addr::Gpfn;
use crate::guest::GuestMemory;
use crate::mmu::walker::{walk_2d, EptRef};
use crate::mmu::{Rights, WalkFault};

/// Nested-paging mode.
#[derive(Debug, Default)]
pub struct Nested;

impl Mode for Nested {
    fn name(&self) -> &'static str {
        "nested"
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
            let ept = EptRef {
                tables: &core.host.tables,
                root: core.vm.eptp,
                levels: core.vm.ept_levels,
                leaf_level: core.vm.host_page.leaf_level(),
                tag: core.vm.ept_tag,
            };
            let res = walk_2d(core.hw, mem, ept, core.vm.guest_root, asid, va, r);
            core.walk_done();
            match res {
                Ok(w) => return Ok(Fill::of_leaf(&w.leaf, w.leaf.frame, w.hpfn)),
                Err(WalkFault::EptViolation { gpfn }) => core.ept_violation(Gpfn(gpfn)),
                Err(_) => return Err(GuestFault),
            }
        }
        panic!("nested fill of {va:#x} does not converge: EPT model bug");
    }
    fn touch_frame(&mut self, core: &mut Core, _mem: &mut GuestMemory, gpfn: Gpfn) {
        if core.p2m(gpfn).is_none() {
            core.ept_violation(gpfn);
        } else {
            // A shared frame: the store exits and copies it.
            core.cow_touch(gpfn, crate::stats::ExitReason::EptViolation);
        }
    }
}
