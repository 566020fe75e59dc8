//! Native execution: no VM. The hardware walks the guest's (the OS's) own
//! tables, 1-D, at most 4 references; gPA = hPA; nothing exits.

use super::{Core, Fill, GuestFault, Mode};
use crate::guest::GuestMemory;
use crate::mmu::walker::walk_1d;
use crate::mmu::{Dim, Rights};

/// Native mode (VPID 0, no host).
#[derive(Debug, Default)]
pub struct Native;

impl Mode for Native {
    fn name(&self) -> &'static str {
        "native"
    }
    fn vpid(&self) -> u16 {
        0
    }
    fn fill(
        &mut self,
        core: &mut Core,
        mem: &mut GuestMemory,
        va: u64,
        r: Rights,
    ) -> Result<Fill, GuestFault> {
        let asid = core.asid();
        let res = walk_1d(&mut core.hw, mem, Dim::Guest, core.guest_root, asid, va, r);
        core.walk_done();
        let l = res.map_err(|_| GuestFault)?;
        Ok(Fill::of_leaf(&l, l.frame, l.frame))
    }
    fn touch_frame(&mut self, _core: &mut Core, _mem: &mut GuestMemory, _gpfn: u64) {}
}
