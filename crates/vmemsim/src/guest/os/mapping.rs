//! The VMA-changing system calls of the guest kernel: mmap, munmap, brk,
//! mprotect, and the leaf walks and huge-page splits they need.

use super::*;

impl GuestOs {
    /// mmap: a new VMA `[addr, addr+len)`; whatever was mapped there is unmapped first.
    ///
    /// # Errors
    /// Out of guest memory.
    pub fn mmap<P: Platform>(
        &mut self,
        plat: &mut P,
        pid: u32,
        addr: u64,
        len: u64,
        prot: u32,
    ) -> Result<(), SimError> {
        let (s, e) = self.range_event(plat, pid, "mmap", addr, len)?;
        self.unmap_range(plat, pid, s, e)?;
        self.vmas_mut(pid).insert(s, e, prot & PROT_RWX, false);
        plat.stats().vma_events += 1;
        Ok(())
    }

    /// munmap `[addr, addr+len)`.
    ///
    /// # Errors
    /// Out of guest memory (splitting a 2 MiB page needs a table).
    pub fn munmap<P: Platform>(
        &mut self,
        plat: &mut P,
        pid: u32,
        addr: u64,
        len: u64,
    ) -> Result<(), SimError> {
        let (s, e) = self.range_event(plat, pid, "munmap", addr, len)?;
        self.unmap_range(plat, pid, s, e)?;
        self.procs.get_mut(&pid).expect("spawned").vmas.remove(s, e);
        plat.stats().vma_events += 1;
        Ok(())
    }

    /// brk: the heap ends at `addr` (the first brk only sets where it starts).
    ///
    /// # Errors
    /// Out of guest memory.
    pub fn brk<P: Platform>(&mut self, plat: &mut P, pid: u32, addr: u64) -> Result<(), SimError> {
        if addr > self.user_top {
            return Err(SimError::BadEvent {
                pid,
                event: format!("brk {addr:#x}"),
                why: format!(
                    "the program break lies in the user half, below {:#x}",
                    self.user_top
                ),
            });
        }
        self.spawn(plat, pid)?;
        plat.stats().vma_events += 1;
        let p = self.procs.get_mut(&pid).expect("spawned");
        let Some((start, end)) = p.heap else {
            p.heap = Some((addr, addr));
            return Ok(());
        };
        let new_end = addr.max(start);
        if page_up(new_end) > page_up(end) {
            p.vmas.insert(
                page_up(end),
                page_up(new_end),
                PROT_READ | PROT_WRITE,
                false,
            );
        } else if page_up(new_end) < page_up(end) {
            let (s, e) = (page_up(new_end), page_up(end));
            self.unmap_range(plat, pid, s, e)?;
            self.procs.get_mut(&pid).expect("spawned").vmas.remove(s, e);
        }
        self.procs.get_mut(&pid).expect("spawned").heap = Some((start, new_end));
        Ok(())
    }

    /// mprotect `[addr, addr+len)` to `prot`: VMAs change, present leaves
    /// lose write (and gain or lose NX) at once; write is granted lazily by
    /// the next fault, as for copy-on-write.
    ///
    /// # Errors
    /// Out of guest memory (splitting a 2 MiB page needs a table).
    pub fn mprotect<P: Platform>(
        &mut self,
        plat: &mut P,
        pid: u32,
        addr: u64,
        len: u64,
        prot: u32,
    ) -> Result<(), SimError> {
        let (s, e) = self.range_event(plat, pid, "mprotect", addr, len)?;
        self.vmas_mut(pid).protect(s, e, prot & PROT_RWX);
        plat.stats().vma_events += 1;
        let ranges = self.vmas_mut(pid).mapped(s, e);
        self.for_leaves(plat, pid, &ranges, |e| {
            let mut n = e;
            if prot & PROT_WRITE == 0 {
                n &= !x86::RW;
            }
            if prot & PROT_EXEC == 0 {
                n |= x86::NX;
            } else {
                n &= !x86::NX;
            }
            Some(n)
        })
    }

    /// The page range `[s, e)` that a range system call (`call`: mmap,
    /// munmap, mprotect) of `[addr, addr+len)` covers, after checking it
    /// lies in user space; process `pid` is created if it is new.
    ///
    /// # Errors
    /// [`SimError::BadEvent`] naming the call and the range when it ends
    /// beyond user space; out of guest memory creating the process.
    fn range_event<P: Platform>(
        &mut self,
        plat: &mut P,
        pid: u32,
        call: &str,
        addr: u64,
        len: u64,
    ) -> Result<(u64, u64), SimError> {
        let range = event_range(
            pid,
            &|| format!("{call} {addr:#x} len {len:#x}"),
            addr,
            len,
            self.user_top,
        )?;
        self.spawn(plat, pid)?;
        Ok(range)
    }

    /// Clear every leaf in `[s, e)` and free what it mapped.
    fn unmap_range<P: Platform>(
        &mut self,
        plat: &mut P,
        pid: u32,
        s: u64,
        e: u64,
    ) -> Result<(), SimError> {
        let Some(p) = self.procs.get(&pid) else {
            return Ok(());
        };
        let ranges = p.vmas.mapped(s, e);
        self.for_leaves(plat, pid, &ranges, |_| None)
    }

    /// Rewrite every present leaf in the ascending, disjoint `ranges` with
    /// `f(entry)` (`None` clears it and frees its frames), splitting 2 MiB
    /// leaves that straddle a range, then invalidate: one INVLPG per page up
    /// to the ceiling, else a flush of the address space. The ranges are
    /// the mapped parts of the operation's range (every present leaf lies
    /// in a VMA), so the work follows what is mapped, not the range's length.
    fn for_leaves<P: Platform>(
        &mut self,
        plat: &mut P,
        pid: u32,
        ranges: &[(u64, u64)],
        f: impl Fn(u64) -> Option<u64>,
    ) -> Result<(), SimError> {
        let Some(p) = self.procs.get(&pid) else {
            return Ok(());
        };
        let (root, pcid) = (p.root, p.pcid);
        let ceiling = self.cfg.invlpg_ceiling_pages;
        let mut changed: u64 = 0;
        // Pages to INVLPG, kept only while under the ceiling.
        let mut to_invalidate: Vec<u64> = Vec::new();
        for &(s, e) in ranges {
            let mut va = s;
            while va < e {
                let path = softwalk::path(&self.mem, root, self.cfg.levels, va);
                let (table, idx, entry) = path.steps[path.len - 1];
                let level = path.leaf_level();
                if swap::is_swap(entry) {
                    // A page in swap: unmapping drops the slot; a change of
                    // rights applies when it is read back (from the VMA).
                    if f(entry).is_none() {
                        self.write_pte(plat, table, idx, 0);
                        self.swap_put(entry);
                    }
                    va += PAGE_SIZE;
                    continue;
                }
                if entry & x86::P == 0 {
                    let span = 1u64 << (12 + 9 * (u32::from(level) - 1));
                    va = (va & !(span - 1)).saturating_add(span);
                    continue;
                }
                let n = x86::leaf_frames(level);
                if level > 1 {
                    // A huge leaf: split it unless the range covers all of it.
                    let size = n * PAGE_SIZE;
                    let base = va & !(size - 1);
                    if base < s || e - base < size {
                        self.split_huge(plat, pid, pcid, table, idx, entry, base, level)?;
                        continue;
                    }
                }
                let new = f(entry);
                if new != Some(entry) {
                    match new {
                        Some(v) => self.write_pte(plat, table, idx, v),
                        None => {
                            self.write_pte(plat, table, idx, 0);
                            self.frames.put(x86::frame(entry), n);
                            if n == 1 {
                                self.rmap_remove(x86::frame(entry), pid, va);
                            }
                        }
                    }
                    changed += n;
                    if changed <= ceiling {
                        to_invalidate.push(va);
                    }
                }
                va += n * PAGE_SIZE;
            }
        }
        plat.end_pt_update(&mut self.mem);
        if changed > ceiling {
            plat.stats().tlb_flushes += 1;
            plat.flush_pcid(pcid);
        } else {
            for va in to_invalidate {
                plat.stats().invlpgs += 1;
                plat.invlpg(pcid, Gva(va));
            }
        }
        Ok(())
    }

    /// Replace the huge leaf `entry` at (`table`, `idx`, `level` 2 or 3)
    /// by a table of 512 leaves one level down mapping the same frames with
    /// the same rights: 4 KiB leaves for a 2 MiB page, 2 MiB leaves for a
    /// 1 GiB page (Linux `__split_huge_pud` then `__split_huge_pmd`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn split_huge<P: Platform>(
        &mut self,
        plat: &mut P,
        pid: u32,
        pcid: u16,
        table: u64,
        idx: usize,
        entry: u64,
        va: u64,
        level: u8,
    ) -> Result<(), SimError> {
        let t = self.alloc_table(plat)?;
        let base = x86::frame(entry);
        let step = x86::leaf_frames(level - 1);
        let flags = if level == 3 {
            entry & !x86::FRAME
        } else {
            entry & !x86::FRAME & !x86::PS
        };
        for i in 0..512u64 {
            self.write_pte(plat, t, i as usize, x86::make(base + i * step, flags));
            if level == 2 {
                self.rmap_add(base + i, pid, va + i * PAGE_SIZE);
            }
        }
        self.write_pte(plat, table, idx, x86::make(t, TABLE_FLAGS));
        // Like Linux's __split_huge_pmd (pmdp_invalidate + flush): the PDE
        // changed from a leaf to a table pointer, and whatever cached the old
        // translation structure (TLB, paging-structure caches, a
        // hypervisor's splinter page) must not be used again.
        plat.end_pt_update(&mut self.mem);
        plat.stats().tlb_flushes += 1;
        plat.flush_pcid(pcid);
        Ok(())
    }
}
