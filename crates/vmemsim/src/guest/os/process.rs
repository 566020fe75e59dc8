//! Process lifetime in the guest kernel: fork (copy on write), exit and
//! exec, with the page-table copies and frees they need.

use super::*;

impl GuestOs {
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
}
