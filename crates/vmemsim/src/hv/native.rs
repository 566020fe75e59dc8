//! Native execution: no VM. The hardware walks the guest's (the OS's) own
//! tables, 1-D, at most 4 references; gPA = hPA; nothing exits.

use super::{Core, Fill, GuestFault, Mode};
use crate::guest::GuestMemory;
use crate::mmu::walker::walk_1d;
use crate::mmu::{Dim, Rights};

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
        Ok(Fill::of_leaf(&l, l.frame, l.frame))
    }
    fn touch_frame(&mut self, _core: &mut Core, _mem: &mut GuestMemory, _gpfn: u64) {}
}
