//! The `[esx]` section of a host configuration and each VM's `min_mib`,
//! `max_mib` and `shares`, resolved and checked by admission control
//! [ESX 6.1]. Without an `[esx]` section the manager is off (the host
//! behaves as before: no sampling, no ballooning, no states).

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::host::config::{invalid, HostSection, VmSection};

use super::states::Thresholds;

/// How the host reclaims memory from VMs above their target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reclaim {
    /// By state [ESX 6.2]: balloon in soft, swap in hard and low.
    States,
    /// Ballooning only (host swap only when the reserve is gone).
    Balloon,
    /// Host swapping only (no balloon driver).
    Swap,
}

/// Which clock idle sampling periods count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleClock {
    /// Host time (the furthest pCPU clock).
    Host,
    /// Each VM's own execution time, as ESX [ESX 5.3: "a configurable
    /// sampling period defined in units of VM execution time"].
    Vm,
}

/// How a VM is charged for a host frame shared (by content) with others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SharedCharge {
    /// A frame shared by `k` guest frames costs each `1/k`: a VM's
    /// allocation is its consumed memory (vSphere's "consumed": machine
    /// memory accounting for the savings of sharing), so frames sharing
    /// saved are reclaimed memory [ESX 4, 5].
    Fractional,
    /// Every guest frame backed costs a whole frame, shared or not
    /// (vSphere's "granted"): sharing lowers the host's free memory but no
    /// VM's allocation (the simulator's behaviour before this key).
    Full,
}

/// The `[esx]` section. Periods are the paper's, in its seconds; the
/// simulator runs them `time_scale` times shorter (see [`EsxSection::time_scale`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EsxSection {
    /// The manager runs (true when the section is present unless set false).
    pub enabled: bool,
    /// Idle memory tax rate tau, in [0, 1). Default 0.75 [ESX 5.2].
    pub idle_tax: f64,
    /// Guest frames sampled per VM per sampling period. Default 100 [ESX 5.3].
    pub sample_pages: u32,
    /// Sampling period, paper seconds. Default 30 [ESX 5.3].
    pub sample_period_s: f64,
    /// Balloon driver polling period, paper seconds. Default 1 [ESX 3.2].
    pub balloon_poll_s: f64,
    /// Target allocations are recomputed this often, paper seconds.
    /// Default 1 (UNVERIFIED: the paper does not give it; as the balloon poll).
    pub alloc_period_s: f64,
    /// Simulated seconds per paper second (one factor for every period).
    /// Default 1e-4 (UNVERIFIED: chosen so that the runs of a few million
    /// accesses the tests and examples use, a few milliseconds of
    /// simulated time, see several 30 s sampling periods; 30 s -> 3 ms).
    pub time_scale: f64,
    /// Weight of a new period in the slow EWMA of f. Default 0.1 (UNVERIFIED).
    pub slow_gain: f64,
    /// Weight of a new period in the fast EWMA of f. Default 0.5 (UNVERIFIED).
    pub fast_gain: f64,
    /// Free memory at which the host is back in `high`, % of host memory.
    /// Default 6 [ESX 6.2].
    pub high_pct: f64,
    /// Free memory below which the host is in `soft`, %. Default 4 [ESX 6.2].
    pub soft_pct: f64,
    /// Free memory below which the host is in `hard`, %. Default 2 [ESX 6.2].
    pub hard_pct: f64,
    /// Free memory below which the host is in `low`, %. Default 1 [ESX 6.2].
    pub low_pct: f64,
    /// Margin above a threshold before going up a state, percentage
    /// points. Default 1 (UNVERIFIED: the paper says "significantly").
    pub hysteresis_pct: f64,
    /// Reclamation mechanism: `states`, `balloon` or `swap`. Default `states` [ESX 6.2].
    pub reclaim: Reclaim,
    /// Largest balloon, % of a VM's max. Default 65 (ESX's
    /// `Mem.CtlMaxPercent` default, vSphere Resource Management guide).
    pub balloon_max_pct: f64,
    /// Guest cycles per page inflated or deflated (the driver allocates or
    /// frees the page and reports it to the host). Default 1200: one
    /// hypercall round trip per page [PVM Table 1] (UNVERIFIED: real
    /// drivers batch).
    pub balloon_page_cycles: u64,
    /// The clock of sampling periods: `host` or `vm`. Default `host`
    /// (not ESX's VM execution time: a VM's quantum here is a fixed
    /// number of instructions, so a VM in an idle loop gains execution
    /// time many times slower than a busy one, and the idle VM of
    /// experiment 1 ended before its first period: docs/esx.md).
    pub sample_clock: SampleClock,
    /// What a VM's allocation `P` counts of frames shared by content
    /// (`[sharing]`): `fractional` (default, ESX's consumed memory) or
    /// `full` (granted memory). No effect without sharing.
    pub shared_charge: SharedCharge,
}

impl Default for EsxSection {
    fn default() -> Self {
        EsxSection {
            enabled: true,
            idle_tax: 0.75,
            sample_pages: 100,
            sample_period_s: 30.0,
            balloon_poll_s: 1.0,
            alloc_period_s: 1.0,
            time_scale: 1e-4,
            slow_gain: 0.1,
            fast_gain: 0.5,
            high_pct: 6.0,
            soft_pct: 4.0,
            hard_pct: 2.0,
            low_pct: 1.0,
            hysteresis_pct: 1.0,
            reclaim: Reclaim::States,
            sample_clock: SampleClock::Host,
            shared_charge: SharedCharge::Fractional,
            balloon_max_pct: 65.0,
            balloon_page_cycles: 1200,
        }
    }
}

impl EsxSection {
    /// The manager off (no `[esx]` section).
    pub fn off() -> Self {
        EsxSection {
            enabled: false,
            ..EsxSection::default()
        }
    }

    /// Parse the `[esx]` table if present (off when absent).
    ///
    /// # Errors
    /// An unknown key or a wrongly typed value, naming it.
    pub fn parse(value: Option<toml::Value>) -> Result<Self, String> {
        match value {
            None => Ok(EsxSection::off()),
            Some(v) => v
                .try_into()
                .map_err(|e: toml::de::Error| format!("[esx]: {e}")),
        }
    }

    /// The state thresholds as fractions.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            high: self.high_pct / 100.0,
            soft: self.soft_pct / 100.0,
            hard: self.hard_pct / 100.0,
            low: self.low_pct / 100.0,
            hysteresis: self.hysteresis_pct / 100.0,
        }
    }

    /// Check every key.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first impossible key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, value: &dyn std::fmt::Display, why: &str| {
            Err(invalid(format!("esx.{key}"), value, why))
        };
        if !(0.0..1.0).contains(&self.idle_tax) {
            return bad(
                "idle_tax",
                &self.idle_tax,
                "in [0, 1) (1 would make an idle page infinitely expensive)",
            );
        }
        if self.sample_pages == 0 {
            return bad("sample_pages", &0, "at least 1");
        }
        for (k, v) in [
            ("sample_period_s", self.sample_period_s),
            ("balloon_poll_s", self.balloon_poll_s),
            ("alloc_period_s", self.alloc_period_s),
            ("time_scale", self.time_scale),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(k, &v, "a finite number > 0");
            }
        }
        for (k, v) in [("slow_gain", self.slow_gain), ("fast_gain", self.fast_gain)] {
            if !(v > 0.0 && v <= 1.0) {
                return bad(k, &v, "in (0, 1]");
            }
        }
        let pcts = [
            ("low_pct", self.low_pct),
            ("hard_pct", self.hard_pct),
            ("soft_pct", self.soft_pct),
            ("high_pct", self.high_pct),
        ];
        for (k, v) in pcts {
            if !(v > 0.0 && v < 100.0) {
                return bad(k, &v, "a percentage in (0, 100)");
            }
        }
        for w in pcts.windows(2) {
            if w[0].1 >= w[1].1 {
                return Err(invalid(
                    format!("esx.{}", w[0].0),
                    w[0].1,
                    format!(
                        "below esx.{} ({}): thresholds rise low < hard < soft < high",
                        w[1].0, w[1].1
                    ),
                ));
            }
        }
        if !(self.hysteresis_pct >= 0.0 && self.high_pct + self.hysteresis_pct < 100.0) {
            return bad(
                "hysteresis_pct",
                &self.hysteresis_pct,
                "a margin >= 0 with high_pct + hysteresis_pct below 100",
            );
        }
        if !(0.0..=100.0).contains(&self.balloon_max_pct) {
            return bad(
                "balloon_max_pct",
                &self.balloon_max_pct,
                "a percentage in [0, 100]",
            );
        }
        Ok(())
    }
}

/// One VM's allocation parameters, in 4 KiB frames.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VmAlloc {
    /// Guaranteed minimum, frames (`min_mib`, default 0).
    pub min: u64,
    /// Maximum = what the guest sees, frames (`max_mib` = `mem_mib`).
    pub max: u64,
    /// Shares. Default 10 per MiB of max (the "normal" share level of the
    /// vSphere Resource Management guide).
    pub shares: f64,
    /// Host frames reserved for the VM's virtualization overhead: its EPT
    /// (p2m) covering max (one 4 KiB table per 512 entries at each of the
    /// four levels). The paper's 32 MB (frame buffer, VMX data) is not
    /// modelled; shadow pages beyond it are not reserved.
    pub overhead: u64,
}

/// The tables an x86 4-level radix table needs to map `frames` frames.
pub fn table_overhead(frames: u64) -> u64 {
    (1..=4).map(|l| frames.div_ceil(512u64.pow(l)).max(1)).sum()
}

/// A VM's default shares per MiB of its max: the "normal" share level of
/// the vSphere Resource Management guide.
pub const DEFAULT_SHARES_PER_MIB: f64 = 10.0;

/// The resolved `[esx]` configuration with every VM's allocation.
#[derive(Clone, Debug)]
pub struct EsxConfig {
    /// `[esx]` as written (with defaults).
    pub section: EsxSection,
    /// Per VM, in `[[vm]]` order.
    pub vms: Vec<VmAlloc>,
}

fn mib(frames: u64) -> String {
    let m = frames as f64 / 256.0;
    if frames % 256 == 0 {
        format!("{m:.0}")
    } else {
        format!("{m:.2}")
    }
}

impl EsxConfig {
    /// Resolve `[esx]` and each VM's `min_mib`, `max_mib`, `shares`, then
    /// admission control [ESX 6.1]: the VMs' mins plus overhead plus the
    /// host reserve must fit in host memory, and, when the host may swap,
    /// host swap must hold every VM's max - min.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key (and, for admission, every
    /// VM with its numbers).
    pub fn resolve(
        section: EsxSection,
        host: &HostSection,
        vms: &[VmSection],
    ) -> Result<Self, ConfigError> {
        section.validate()?;
        let mut out = Vec::with_capacity(vms.len());
        for (i, v) in vms.iter().enumerate() {
            let key = |k: &str| format!("vm[{i}].{k}");
            if let Some(max) = v.max_mib {
                if max != v.mem_mib {
                    return Err(invalid(
                        key("max_mib"),
                        max,
                        format!(
                            "the max is what the guest sees: equal to mem_mib ({}) or left out",
                            v.mem_mib
                        ),
                    ));
                }
            }
            let min = v.min_mib.unwrap_or(0);
            if min > v.mem_mib {
                return Err(invalid(
                    key("min_mib"),
                    min,
                    format!("at most the VM's max, mem_mib = {}", v.mem_mib),
                ));
            }
            let shares = v
                .shares
                .unwrap_or(DEFAULT_SHARES_PER_MIB * v.mem_mib as f64);
            if !(shares.is_finite() && shares > 0.0) {
                return Err(invalid(key("shares"), shares, "a finite number > 0"));
            }
            let max = v.mem_mib * 256;
            out.push(VmAlloc {
                min: min * 256,
                max,
                shares,
                overhead: table_overhead(max),
            });
        }
        let cfg = EsxConfig { section, vms: out };
        if cfg.section.enabled {
            cfg.admit(host, vms)?;
        }
        Ok(cfg)
    }

    fn admit(&self, host: &HostSection, vms: &[VmSection]) -> Result<(), ConfigError> {
        let need: u64 =
            self.vms.iter().map(|a| a.min + a.overhead).sum::<u64>() + host.reserve_mib * 256;
        let have = host.mem_mib * 256;
        if need > have {
            let each: Vec<String> = vms
                .iter()
                .zip(&self.vms)
                .map(|(v, a)| {
                    format!(
                        "{}: min {} + overhead {} MiB",
                        v.name,
                        mib(a.min),
                        mib(a.overhead)
                    )
                })
                .collect();
            return Err(invalid(
                "vm[*].min_mib",
                format!("{} MiB needed", mib(need)),
                format!(
                    "admission control: the VMs' mins plus overhead ({}) plus host.reserve_mib ({}) exceed host.mem_mib ({}); lower a min_mib or raise host.mem_mib",
                    each.join(", "),
                    host.reserve_mib,
                    host.mem_mib
                ),
            ));
        }
        if self.section.reclaim != Reclaim::Balloon {
            let swap: u64 = self.vms.iter().map(|a| a.max - a.min).sum();
            if swap > host.swap_mib * 256 {
                let each: Vec<String> = vms
                    .iter()
                    .zip(&self.vms)
                    .map(|(v, a)| format!("{}: {} - {} MiB", v.name, mib(a.max), mib(a.min)))
                    .collect();
                return Err(invalid(
                    "host.swap_mib",
                    host.swap_mib,
                    format!(
                        "admission control: host swap must hold every VM's max - min ({} = {} MiB); raise host.swap_mib, raise min_mib, or set esx.reclaim = \"balloon\"",
                        each.join(", "),
                        mib(swap)
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(name: &str, mem: u64, min: Option<u64>) -> VmSection {
        VmSection {
            name: name.into(),
            workload: Some("seq".into()),
            trace: None,
            accesses: None,
            footprint_mib: None,
            seed: None,
            mode: "nested".into(),
            mem_mib: mem,
            min_mib: min,
            max_mib: None,
            shares: None,
            guest: None,
            snapshots: Vec::new(),
        }
    }

    #[test]
    fn overhead_is_the_ept_for_max() {
        // 256 MiB = 65536 frames: 128 PTs + 1 PD + 1 PDPT + 1 PML4.
        assert_eq!(table_overhead(65536), 131);
        assert_eq!(table_overhead(1), 4);
        assert_eq!(table_overhead(512 * 512 + 1), 513 + 2 + 1 + 1);
    }

    #[test]
    fn defaults_and_per_vm_keys() {
        let host = HostSection {
            mem_mib: 512,
            swap_mib: 512,
            ..HostSection::default()
        };
        let c = EsxConfig::resolve(
            EsxSection::default(),
            &host,
            &[vm("a", 256, Some(64)), vm("b", 128, None)],
        )
        .unwrap();
        assert_eq!(
            c.vms[0],
            VmAlloc {
                min: 64 * 256,
                max: 65536,
                shares: 2560.0,
                overhead: 131
            }
        );
        assert_eq!((c.vms[1].min, c.vms[1].shares), (0, 1280.0));
        assert!(!EsxSection::parse(None).unwrap().enabled);
        let s = EsxSection::parse(Some(toml::from_str("idle_tax = 0.0").unwrap())).unwrap();
        assert!(s.enabled && s.idle_tax == 0.0);
    }

    #[test]
    fn admission_control_names_the_vms_and_numbers() {
        let host = HostSection {
            mem_mib: 300,
            swap_mib: 1024,
            reserve_mib: 4,
            ..HostSection::default()
        };
        // 200 + 100 + overheads (131 + 67 frames = 0.77 MiB) + 4 > 300.
        let e = EsxConfig::resolve(
            EsxSection::default(),
            &host,
            &[vm("a", 256, Some(200)), vm("b", 128, Some(100))],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("admission control"), "{e}");
        assert!(e.contains("a: min 200 + overhead 0.51 MiB"), "{e}");
        assert!(e.contains("b: min 100 + overhead 0.26 MiB"), "{e}");
        assert!(e.contains("304.77 MiB needed"), "{e}");
        // Fits with a smaller min.
        assert!(EsxConfig::resolve(
            EsxSection::default(),
            &host,
            &[vm("a", 256, Some(190)), vm("b", 128, Some(100))]
        )
        .is_ok());
        // Off: no admission control.
        assert!(EsxConfig::resolve(
            EsxSection::off(),
            &host,
            &[vm("a", 256, Some(200)), vm("b", 128, Some(100))]
        )
        .is_ok());
        // Swap must hold max - min: 256 + 128 > 300.
        let small = HostSection {
            swap_mib: 300,
            ..host.clone()
        };
        let e = EsxConfig::resolve(
            EsxSection::default(),
            &small,
            &[vm("a", 256, None), vm("b", 128, None)],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("host.swap_mib") && e.contains("a: 256 - 0 MiB, b: 128 - 0 MiB = 384 MiB"),
            "{e}"
        );
        let balloon = EsxSection {
            reclaim: Reclaim::Balloon,
            ..EsxSection::default()
        };
        assert!(
            EsxConfig::resolve(balloon, &small, &[vm("a", 256, None), vm("b", 128, None)]).is_ok()
        );
    }

    #[test]
    fn impossible_keys_are_rejected_by_name() {
        let host = HostSection {
            mem_mib: 512,
            swap_mib: 512,
            ..HostSection::default()
        };
        type Set = Box<dyn Fn(&mut EsxSection)>;
        let cases: [(Set, &str); 7] = [
            (Box::new(|s| s.idle_tax = 1.0), "esx.idle_tax"),
            (Box::new(|s| s.sample_pages = 0), "esx.sample_pages"),
            (Box::new(|s| s.time_scale = 0.0), "esx.time_scale"),
            (Box::new(|s| s.fast_gain = 1.5), "esx.fast_gain"),
            (Box::new(|s| s.soft_pct = 7.0), "esx.soft_pct"),
            (Box::new(|s| s.hard_pct = 4.0), "esx.hard_pct"),
            (
                Box::new(|s| s.balloon_max_pct = 101.0),
                "esx.balloon_max_pct",
            ),
        ];
        for (set, key) in cases {
            let mut s = EsxSection::default();
            set(&mut s);
            let e = EsxConfig::resolve(s, &host, &[vm("a", 64, None)])
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
        let mut v = vm("a", 64, Some(65));
        let e = EsxConfig::resolve(EsxSection::default(), &host, &[v.clone()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("vm[0].min_mib"), "{e}");
        v.min_mib = None;
        v.max_mib = Some(32);
        let e = EsxConfig::resolve(EsxSection::default(), &host, &[v.clone()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("vm[0].max_mib") && e.contains("mem_mib (64)"),
            "{e}"
        );
        v.max_mib = None;
        v.shares = Some(0.0);
        let e = EsxConfig::resolve(EsxSection::default(), &host, &[v])
            .unwrap_err()
            .to_string();
        assert!(e.contains("vm[0].shares"), "{e}");
        let e = EsxSection::parse(Some(toml::from_str("idle_taxx = 0.5").unwrap())).unwrap_err();
        assert!(e.contains("idle_taxx"), "{e}");
    }

    #[test]
    fn host_config_reads_esx_and_round_trips() {
        use crate::host::config::HostConfig;
        let text = r#"
[host]
mem_mib = 360
swap_mib = 512
[esx]
idle_tax = 0.0
reclaim = "swap"
[[vm]]
name = "idle"
workload = "seq"
mode = "nested"
mem_mib = 256
min_mib = 32
shares = 1000
[[vm]]
name = "busy"
workload = "random"
mode = "shadow"
mem_mib = 256
max_mib = 256
"#;
        let p = std::path::Path::new(".");
        let h = HostConfig::from_toml(text, "h.toml", p).unwrap();
        assert!(h.esx.section.enabled);
        assert_eq!(
            (h.esx.section.idle_tax, h.esx.section.reclaim),
            (0.0, Reclaim::Swap)
        );
        assert_eq!((h.esx.vms[0].min, h.esx.vms[0].shares), (32 * 256, 1000.0));
        assert_eq!(h.esx.vms[1].shares, 2560.0);
        let again = HostConfig::from_toml(&h.to_toml(), "again", p).unwrap();
        assert_eq!(again.to_toml(), h.to_toml());
        assert_eq!(again.esx.section, h.esx.section);
        // Without [esx] the manager is off and the dump has no [esx].
        let off = HostConfig::from_toml(
            &text.replace("[esx]\nidle_tax = 0.0\nreclaim = \"swap\"\n", ""),
            "off",
            p,
        )
        .unwrap();
        assert!(!off.esx.section.enabled && !off.to_toml().contains("[esx]"));
        let e = HostConfig::from_toml(
            &text.replace("idle_tax = 0.0", "idle_tax = 2.0"),
            "h.toml",
            p,
        )
        .unwrap_err();
        assert!(e.to_string().contains("esx.idle_tax"), "{e}");
        let e = HostConfig::from_toml(
            &text.replace("reclaim = \"swap\"", "reclaim = \"zram\""),
            "h.toml",
            p,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("[esx]") && e.to_string().contains("zram"),
            "{e}"
        );
    }
}
