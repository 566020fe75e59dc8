//! The guest kernel's page-fault handler: demand-zero, copy on write,
//! swap-in, protection upgrades and VMA widening.

use super::*;

impl GuestOs {
    /// Handle a #PF of the running process at `va`: demand-zero, copy on
    /// write, or widening a VMA the recorded program evidently had.
    ///
    /// # Errors
    /// [`SimError::GuestOutOfMemory`].
    pub fn page_fault<P: Platform>(
        &mut self,
        plat: &mut P,
        va: u64,
        r: Rights,
    ) -> Result<(), SimError> {
        let pid = self.current.expect("page fault with no running process");
        check_gva(pid, va, self.user_top)?;
        plat.stats().guest_page_faults += 1;
        let need =
            PROT_READ | if r.write { PROT_WRITE } else { 0 } | if r.fetch { PROT_EXEC } else { 0 };
        let p = self.procs.get_mut(&pid).expect("current process exists");
        let prot = match p.vmas.find(va) {
            Some(v) if v.prot & need == need => v.prot,
            Some(v) => {
                plat.stats().protection_upgrades += 1;
                p.vmas.protect(v.start, v.end, v.prot | need);
                v.prot | need
            }
            None => {
                plat.stats().implicit_mappings += 1;
                p.vmas
                    .insert(page_down(va), page_down(va) + PAGE_SIZE, PROT_RWX, true);
                PROT_RWX
            }
        };
        // The file the page comes from; an implicit mapping (an image
        // Valgrind's loader mapped, with no mmap event) is the "image"
        // file keyed by address (guest/content.rs).
        let file = self.contents.as_ref().and_then(|_| {
            let v = p.vmas.find(va)?;
            match (v.file, v.implicit) {
                (Some(f), _) => Some((v.start, f)),
                (None, true) => Some((v.start, content::image_ref(v.start))),
                (None, false) => None,
            }
        });
        // The largest page the VMA allows at `va` (Linux's rule, see
        // `HugePages`): its aligned range lies wholly in one recorded VMA.
        let fits = |level: u8| {
            let size = HUGE_SIZE << (9 * (u32::from(level) - 2));
            let base = va & !(size - 1);
            matches!(p.vmas.find(base), Some(v) if v.end - base >= size && !v.implicit)
        };
        let max_level = self.cfg.huge_pages.max_level();
        let huge_ok = [
            false,
            false,
            max_level >= 2 && fits(2),
            max_level >= 3 && fits(3),
        ];
        let (root, pcid) = (p.root, p.pcid);
        let mut table = root;
        for level in (2..=self.cfg.levels).rev() {
            let idx = pt_index(va, level);
            let e = self.mem.read(table, idx);
            if e & x86::P == 0 {
                if level <= 3 && huge_ok[usize::from(level)] {
                    let alloc = if level == 3 {
                        self.frames.alloc_1g()
                    } else {
                        self.frames.alloc_2m()
                    };
                    if let Some(base) = alloc {
                        let n = x86::leaf_frames(level);
                        for f in base..base + n {
                            plat.touch_frame(&mut self.mem, f);
                        }
                        self.fill(base, n, va & !(n * PAGE_SIZE - 1), file);
                        plat.stats().frames_zeroed += n;
                        plat.stats().demand_faults += 1;
                        self.write_pte(
                            plat,
                            table,
                            idx,
                            x86::make(base, leaf_flags(prot, r.write) | x86::PS),
                        );
                        plat.end_pt_update(&mut self.mem);
                        return Ok(());
                    }
                }
                let t = self.alloc_table(plat)?;
                self.write_pte(plat, table, idx, x86::make(t, TABLE_FLAGS));
                table = t;
                continue;
            }
            if x86::is_leaf(level, e) {
                return self.fault_on_present(plat, pid, pcid, table, idx, e, va, r, level);
            }
            table = x86::frame(e);
        }
        let idx = pt_index(va, 1);
        let e = self.mem.read(table, idx);
        if swap::is_swap(e) {
            return self.swap_in(plat, pid, table, idx, e, va, prot, r.write);
        }
        if e & x86::P == 0 {
            let f = self.alloc_frame(plat)?;
            self.fill(f, 1, va, file);
            plat.stats().demand_faults += 1;
            self.write_pte(plat, table, idx, x86::make(f, leaf_flags(prot, r.write)));
            self.rmap_add(f, pid, va);
            plat.end_pt_update(&mut self.mem);
            return Ok(());
        }
        self.fault_on_present(plat, pid, pcid, table, idx, e, va, r, 1)
    }

    /// A fault on a present leaf at `level` (1 = 4 KiB, 2 = 2 MiB, 3 =
    /// 1 GiB): copy-on-write, or a right the VMA now grants.
    #[allow(clippy::too_many_arguments)]
    fn fault_on_present<P: Platform>(
        &mut self,
        plat: &mut P,
        pid: u32,
        pcid: u16,
        table: u64,
        idx: usize,
        e: u64,
        va: u64,
        r: Rights,
        level: u8,
    ) -> Result<(), SimError> {
        let huge = level > 1;
        let n = x86::leaf_frames(level);
        let mut new = e | x86::A;
        if r.fetch {
            new &= !x86::NX;
        }
        if r.write && e & x86::RW == 0 {
            let old = x86::frame(e);
            plat.stats().cow_faults += 1;
            if self.frames.refs(old) > 1 {
                let copy = if huge {
                    let big = if level == 3 {
                        self.frames.alloc_1g()
                    } else {
                        self.frames.alloc_2m()
                    };
                    let Some(big) = big else {
                        // No free page of that size: split the shared leaf
                        // and copy the smaller page on the next fault (as
                        // Linux's huge-page write fault falls back to a split).
                        let base = va & !(n * PAGE_SIZE - 1);
                        return self.split_huge(plat, pid, pcid, table, idx, e, base, level);
                    };
                    big
                } else {
                    self.take_4k(plat)?
                };
                for f in copy..copy + n {
                    plat.touch_frame(&mut self.mem, f);
                }
                if let Some(c) = &mut self.contents {
                    c.copy(old, copy, n);
                }
                plat.stats().frames_copied += n;
                self.frames.put(old, n);
                if !huge {
                    self.rmap_remove(old, pid, va);
                    self.rmap_add(copy, pid, va);
                }
                new = x86::make(copy, new & !x86::FRAME);
            }
            new |= x86::RW | x86::D;
        }
        self.write_pte(plat, table, idx, new);
        plat.end_pt_update(&mut self.mem);
        if huge {
            // The TLB may hold a huge page as splintered smaller entries
            // (EPT or shadow maps smaller pages): one INVLPG would miss most.
            plat.stats().tlb_flushes += 1;
            plat.flush_pcid(pcid);
        } else {
            plat.stats().invlpgs += 1;
            plat.invlpg(pcid, Gva(va));
        }
        Ok(())
    }
}
