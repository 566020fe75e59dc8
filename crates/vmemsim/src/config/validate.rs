//! Rejecting impossible values: [`Config::validate`] and its helpers.

use super::{invalid, Config, ConfigError, MAX_BASE_CPI, MAX_EVENT_CYCLES, MAX_GHZ};

impl Config {
    /// Reject impossible values.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key and value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.tlb;
        for (k, g) in [
            ("tlb.l1d_4k", t.l1d_4k),
            ("tlb.l1d_2m", t.l1d_2m),
            ("tlb.l1i_4k", t.l1i_4k),
            ("tlb.l1i_2m", t.l1i_2m),
            ("tlb.stlb", t.stlb),
            ("tlb.l1d_1g", t.l1d_1g),
            ("tlb.l1i_1g", t.l1i_1g),
        ] {
            g.validate(k)?;
        }
        let w = &self.walk_caches;
        for (k, g) in [
            ("walk_caches.pml4e", w.pml4e),
            ("walk_caches.pdpte", w.pdpte),
            ("walk_caches.pde", w.pde),
            ("walk_caches.nested_tlb", w.nested_tlb),
            ("walk_caches.ept_pml4e", w.ept_pml4e),
            ("walk_caches.ept_pdpte", w.ept_pdpte),
            ("walk_caches.ept_pde", w.ept_pde),
            ("walk_caches.pml5e", w.pml5e),
            ("walk_caches.ept_pml5e", w.ept_pml5e),
        ] {
            g.validate(k)?;
        }
        let lines = self.pt_cache.lines;
        lines.validate("pt_cache.lines")?;
        if lines.entries > 0
            && (lines.ways as usize > crate::mmu::line_cache::MAX_WAYS
                || lines.sets() < crate::mmu::line_cache::MIN_SETS)
        {
            return Err(ConfigError::Invalid {
                key: "pt_cache.lines".into(),
                value: format!("{{ entries = {}, ways = {} }}", lines.entries, lines.ways),
                why: format!(
                    "the page-table line cache needs at most {} ways and at least {} sets \
                     (entries = 0 turns it off)",
                    crate::mmu::line_cache::MAX_WAYS,
                    crate::mmu::line_cache::MIN_SETS
                ),
            });
        }
        let mem = self.guest.mem_mib;
        if !(64..=1 << 20).contains(&mem) {
            return Err(invalid("guest.mem_mib", mem, "between 64 MiB and 1 TiB"));
        }
        for (key, v) in [
            ("guest.levels", self.guest.levels),
            ("host.ept_levels", self.host.ept_levels),
        ] {
            if !(4..=5).contains(&v) {
                return Err(invalid(key, v, "4 or 5 (paging levels)"));
            }
        }
        let host_page_mib = self.host.page_size.bytes() >> 20;
        if host_page_mib > 0 && mem % host_page_mib != 0 {
            return Err(invalid(
                "guest.mem_mib",
                mem,
                &format!(
                    "a multiple of host.page_size ({}): the host backs guest memory in pages \
                     of that size",
                    self.host.page_size.name()
                ),
            ));
        }
        self.validate_costs()?;
        if self.sched.quantum_instructions == 0 {
            return Err(invalid("sched.quantum_instructions", 0, "at least 1"));
        }
        if self.pv.batch_size == 0 {
            return Err(invalid("pv.batch_size", 0, "at least 1"));
        }
        if self.selective.period_instructions == 0 {
            return Err(invalid("selective.period_instructions", 0, "at least 1"));
        }
        if self.shadow.write_flood_threshold == 0 {
            return Err(invalid("shadow.write_flood_threshold", 0, "at least 1"));
        }
        if self.agile.interval_instructions == 0 {
            return Err(invalid("agile.interval_instructions", 0, "at least 1"));
        }
        let ghz = self.cpu.ghz;
        if !(ghz.is_finite() && ghz > 0.0 && ghz <= MAX_GHZ) {
            return Err(invalid(
                "cpu.ghz",
                format!("{ghz:?}"),
                &format!("a number above 0 and at most {MAX_GHZ}"),
            ));
        }
        self.validate_guest_swap()?;
        for (key, v) in [
            (
                "selective.w11_sample_switch_costs",
                self.selective.w11_sample_switch_costs,
            ),
            ("agile.clean_refill_costs", self.agile.clean_refill_costs),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(invalid(key, v, "a finite number >= 0"));
            }
        }
        Ok(())
    }
}

impl Config {
    /// Every cost key within its documented range: `cost.base_cpi` in
    /// `[0, MAX_BASE_CPI]`, every per-event cycle cost (and the page-table
    /// line latencies) in `[0, MAX_EVENT_CYCLES]`.
    fn validate_costs(&self) -> Result<(), ConfigError> {
        let cpi = self.cost.base_cpi;
        if !(cpi.is_finite() && (0.0..=MAX_BASE_CPI).contains(&cpi)) {
            // `{:?}` prints 1e300 as such, not as 301 digits.
            return Err(invalid(
                "cost.base_cpi",
                format!("{cpi:?}"),
                &format!("a finite number from 0 to {MAX_BASE_CPI}"),
            ));
        }
        let c = &self.cost;
        let keys = [
            ("cost.stlb_hit_cycles", c.stlb_hit_cycles),
            ("cost.vm_exit_cycles", c.vm_exit_cycles),
            ("cost.guest_fault_cycles", c.guest_fault_cycles),
            ("cost.zero_page_cycles", c.zero_page_cycles),
            ("cost.copy_page_cycles", c.copy_page_cycles),
            ("cost.pte_write_cycles", c.pte_write_cycles),
            ("cost.context_switch_cycles", c.context_switch_cycles),
            ("cost.ept_violation_cycles", c.ept_violation_cycles),
            ("cost.shadow_fill_cycles", c.shadow_fill_cycles),
            ("cost.pt_write_emulate_cycles", c.pt_write_emulate_cycles),
            ("cost.shadow_resync_cycles", c.shadow_resync_cycles),
            ("cost.bt_trap_cycles", c.bt_trap_cycles),
            ("cost.bt_callout_cycles", c.bt_callout_cycles),
            ("cost.bt_syscall_cycles", c.bt_syscall_cycles),
            ("cost.inject_fault_cycles", c.inject_fault_cycles),
            ("cost.cr3_exit_cycles", c.cr3_exit_cycles),
            ("cost.invlpg_exit_cycles", c.invlpg_exit_cycles),
            ("cost.hypercall_cycles", c.hypercall_cycles),
            ("cost.pv_validate_cycles", c.pv_validate_cycles),
            ("cost.guest_swap_out_cycles", c.guest_swap_out_cycles),
            ("cost.host_swap_out_cycles", c.host_swap_out_cycles),
            ("cost.invept_cycles", c.invept_cycles),
            ("cost.invvpid_cycles", c.invvpid_cycles),
            ("cost.rmap_zap_cycles", c.rmap_zap_cycles),
            (
                "cost.tlb_refill_exception_cycles",
                c.tlb_refill_exception_cycles,
            ),
            (
                "cost.tlb_refill_handler_cycles",
                c.tlb_refill_handler_cycles,
            ),
            ("cost.tlb_write_cycles", c.tlb_write_cycles),
            ("cost.tlb_miss_trap_cycles", c.tlb_miss_trap_cycles),
            ("cost.tlb_write_trap_cycles", c.tlb_write_trap_cycles),
            ("pt_cache.hit_cycles", self.pt_cache.hit_cycles),
            ("pt_cache.miss_cycles", self.pt_cache.miss_cycles),
        ];
        for (key, v) in keys {
            if v > MAX_EVENT_CYCLES {
                return Err(invalid(
                    key,
                    v,
                    &format!("at most {MAX_EVENT_CYCLES} cycles (a second at 1 GHz)"),
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// Guest swap keys: swap at most 1 TiB, a latency that is at most
    /// [`MAX_EVENT_CYCLES`] at `cpu.ghz`, low <= high watermark < the
    /// guest's usable frames.
    fn validate_guest_swap(&self) -> Result<(), ConfigError> {
        let g = &self.guest;
        if g.swap_mib > 1 << 20 {
            return Err(invalid("guest.swap_mib", g.swap_mib, "at most 1 TiB"));
        }
        let us = g.swap_latency_us;
        let max_us = MAX_EVENT_CYCLES as f64 / (self.cpu.ghz * 1e3);
        if !(us.is_finite() && (0.0..=max_us).contains(&us)) {
            return Err(invalid(
                "guest.swap_latency_us",
                format!("{us:?}"),
                &format!("from 0 to {max_us} us ({MAX_EVENT_CYCLES} cycles at cpu.ghz)"),
            ));
        }
        let (low, high) = g.watermarks();
        if low > high {
            return Err(invalid(
                "guest.watermark_low_pages",
                low,
                &format!("at most guest.watermark_high_pages ({high})"),
            ));
        }
        // The guest kernel keeps its first 2 MiB (512 frames) for itself.
        let usable = (g.mem_mib * 256).saturating_sub(512);
        if high >= usable {
            return Err(invalid(
                "guest.watermark_high_pages",
                high,
                &format!(
                    "below the guest's {usable} usable frames (guest.mem_mib = {} less 2 MiB)",
                    g.mem_mib
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, GuestConfig};

    #[test]
    fn cost_keys_are_bounded() {
        // Found by a hostile run (issue 12): these wrapped or saturated
        // the totals instead of being rejected.
        for (toml, want) in [
            (
                "[cost]\nvm_exit_cycles = 9223372036854775807\n",
                "config key `cost.vm_exit_cycles` = 9223372036854775807: \
                 at most 1000000000 cycles (a second at 1 GHz)",
            ),
            (
                "[cost]\nbase_cpi = 1e300\n",
                "config key `cost.base_cpi` = 1e300: \
                 a finite number from 0 to 1000",
            ),
            (
                "[pt_cache]\nmiss_cycles = 1000000001\n",
                "config key `pt_cache.miss_cycles` = 1000000001: \
                 at most 1000000000 cycles (a second at 1 GHz)",
            ),
        ] {
            let e = Config::from_toml(toml, "x.toml").unwrap_err().to_string();
            assert_eq!(e, want);
        }
        // The bounds themselves are accepted.
        let ok = "[cost]\nbase_cpi = 1000.0\nvm_exit_cycles = 1000000000\n";
        Config::from_toml(ok, "x.toml").unwrap();
    }

    #[test]
    fn guest_swap_keys_are_checked() {
        // Linux's watermarks for 64 MiB: min = sqrt(16 x 65536) = 1024 KiB
        // = 256 pages; low = 256 + 64, high = 256 + 128.
        let mut g = GuestConfig {
            mem_mib: 64,
            ..GuestConfig::default()
        };
        assert_eq!(g.watermarks(), (320, 384));
        // 8 GiB: sqrt(16 x 8388608) = 11585 KiB = 2896 pages.
        g.mem_mib = 8192;
        assert_eq!(g.watermarks(), (3620, 4344));
        for (toml, want) in [
            (
                "[guest]\nmem_mib = 64\nwatermark_low_pages = 500\nwatermark_high_pages = 400\n",
                "config key `guest.watermark_low_pages` = 500: at most guest.watermark_high_pages (400)",
            ),
            (
                "[guest]\nmem_mib = 64\nwatermark_high_pages = 15872\n",
                "config key `guest.watermark_high_pages` = 15872: below the guest's 15872 usable \
                 frames (guest.mem_mib = 64 less 2 MiB)",
            ),
            (
                "[guest]\nswap_latency_us = -1.0\n",
                "config key `guest.swap_latency_us` = -1.0: from 0 to 400000 us \
                 (1000000000 cycles at cpu.ghz)",
            ),
        ] {
            assert_eq!(Config::from_toml(toml, "x").unwrap_err().to_string(), want);
        }
    }
}
