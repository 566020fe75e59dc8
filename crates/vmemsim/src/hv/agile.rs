//! Agile paging [AP16] (work in progress).

use super::{Core, Fill, GuestFault, Mode, Nested};
use crate::addr::{Gpa, Gva};
use crate::config::Config;
use crate::guest::GuestMemory;
use crate::mmu::Rights;

/// Agile paging mode state.
#[derive(Debug)]
pub struct Agile {
    nested: Nested,
}

impl Agile {
    /// Agile paging with the configured interval.
    pub fn new(_cfg: &Config) -> Self {
        Agile { nested: Nested }
    }
}

impl Mode for Agile {
    fn name(&self) -> &'static str {
        "agile"
    }
    fn fill(
        &mut self,
        core: &mut Core,
        mem: &mut GuestMemory,
        va: u64,
        r: Rights,
    ) -> Result<Fill, GuestFault> {
        self.nested.fill(core, mem, va, r)
    }
    fn write_pte(&mut self, core: &mut Core, mem: &mut GuestMemory, gpa: Gpa, val: u64) {
        self.nested.write_pte(core, mem, gpa, val)
    }
    fn touch_frame(&mut self, core: &mut Core, mem: &mut GuestMemory, gpfn: u64) {
        self.nested.touch_frame(core, mem, gpfn)
    }
    fn write_cr3(&mut self, core: &mut Core, mem: &mut GuestMemory, root: u64, pcid: u16) {
        self.nested.write_cr3(core, mem, root, pcid)
    }
    fn invlpg(&mut self, core: &mut Core, pcid: u16, va: Gva) {
        self.nested.invlpg(core, pcid, va)
    }
    fn flush_pcid(&mut self, core: &mut Core, pcid: u16) {
        self.nested.flush_pcid(core, pcid)
    }
}
