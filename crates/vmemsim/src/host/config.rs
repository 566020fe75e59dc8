//! The configuration of a multi-VM host (`vmemsim host --config host.toml`):
//! a `[host]` section, one `[[vm]]` table per VM, and
//! any section of the ordinary configuration ([`Config`]: `[cpu]`, `[tlb]`,
//! `[cost]`, `[guest]`...) as the machine-wide baseline. Unknown keys and
//! impossible settings are rejected naming the key and the value.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigError, GuestConfig, MeasureConfig};
use crate::esx::{EsxConfig, EsxSection};
use crate::hostsim::scanner::SharingSection;
use crate::workload::{WorkloadKind, WorkloadSpec};
use crate::ModeKind;

/// Most VMs on one host: one per non-zero 16-bit VPID (VPID 0 is the
/// host's [SDM 29.1]); TLB and PSC tags hold the full VPID.
pub const MAX_VMS: usize = u16::MAX as usize;

/// The `[host]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostSection {
    /// Host-physical memory, MiB: the pool every VM's frames and the
    /// hypervisor's tables come from. Default 1024.
    pub mem_mib: u64,
    /// Host swap space, MiB (hypervisor swapping). Default 0.
    pub swap_mib: u64,
    /// Physical CPUs the VMs are time-sliced on. Default 1.
    pub pcpus: u32,
    /// Time slice of a VM on a pCPU, guest instructions. Default 100000
    /// (UNVERIFIED: 40 us at 2.5 GHz and CPI 1, shorter than a real
    /// hypervisor's slice of a few ms, so that short traces interleave).
    pub vm_quantum_instructions: u64,
    /// Tag TLB entries with VPIDs. Off: every world switch and every VM
    /// exit flushes the pCPU's TLBs and PSCs [SDM 29.4.3.1]. Default true.
    pub vpid: bool,
    /// Latency of the host swap device per 4 KiB page, microseconds.
    /// Default 100 (UNVERIFIED: a SATA SSD random read).
    pub swap_latency_us: f64,
    /// Frames the host keeps free between guest operations, MiB (one
    /// operation, a 2 MiB fault or a fork, takes its frames from it).
    /// Default 4.
    pub reserve_mib: u64,
    /// A world switch between VMs on a pCPU (VM exit of one, VM entry of
    /// the other), cycles. Default 1200: an exit plus entry round trip
    /// [PVM Table 1]; loading the other VMCS is not included (UNVERIFIED).
    pub world_switch_cycles: u64,
    /// Time-series sampling period, host cycles. Default 10000000 (4 ms at 2.5 GHz).
    pub sample_cycles: u64,
    /// Seed of the host's random victim selection. Default 1.
    pub seed: u64,
    /// Levels of every VM's EPT, as `host.ept_levels` of a single-VM run
    /// ([`crate::config::HostPagingConfig`]). Default 4.
    pub ept_levels: u8,
    /// Host page size backing every VM, as `host.page_size` of a single-VM
    /// run. Default `4k`. Larger pages need `swap_mib = 0` (the host would
    /// have to split them to swap them out: not modelled).
    pub page_size: crate::addr::PageSize,
}

impl Default for HostSection {
    fn default() -> Self {
        HostSection {
            mem_mib: 1024,
            swap_mib: 0,
            pcpus: 1,
            vm_quantum_instructions: 100_000,
            vpid: true,
            swap_latency_us: 100.0,
            reserve_mib: 4,
            world_switch_cycles: 1200,
            sample_cycles: 10_000_000,
            seed: 1,
            ept_levels: 4,
            page_size: crate::addr::PageSize::Size4K,
        }
    }
}

/// One `[[vm]]` table as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSection {
    /// Name in reports (unique on the host).
    pub name: String,
    /// A built-in workload (`seq`, `random`, `chase`, `procs`, `phases`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// Or a recorded trace (any format `compare --trace` reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<PathBuf>,
    /// Built-in workload: accesses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accesses: Option<u64>,
    /// Built-in workload: footprint, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub footprint_mib: Option<u64>,
    /// Built-in workload: seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// MMU virtualization mode (any of `vmemsim compare`'s).
    pub mode: String,
    /// Guest-physical memory the VM is given, MiB.
    pub mem_mib: u64,
    /// Guaranteed memory, MiB (`[esx]`; see [`crate::esx::config`]). Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_mib: Option<u64>,
    /// Maximum memory, MiB: what the guest sees, so equal to `mem_mib`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_mib: Option<u64>,
    /// Memory shares (`[esx]`). Default 10 per MiB of `mem_mib`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shares: Option<f64>,
    /// Overrides of the `[guest]` baseline for this VM (`huge_pages`,
    /// `pcid`, `invlpg_ceiling_pages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<toml::Table>,
    /// Snapshots of real processes (`vmemsim snapshot`) the VM starts
    /// from: each file's last snapshot becomes a process whose present
    /// pages hold those contents (docs/sharing.md). Relative to the file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<PathBuf>,
}

/// What a VM runs.
#[derive(Clone, Debug, PartialEq)]
pub enum VmInput {
    /// A built-in workload.
    Builtin(WorkloadSpec),
    /// A recorded trace.
    Trace(PathBuf),
}

/// One VM, resolved and validated.
#[derive(Clone, Debug)]
pub struct VmSpec {
    /// Name.
    pub name: String,
    /// Mode.
    pub mode: ModeKind,
    /// What it runs.
    pub input: VmInput,
    /// Its whole configuration: the baseline with its guest overrides and
    /// `guest.mem_mib` = the VM's `mem_mib`.
    pub cfg: Config,
    /// Snapshot files it starts from (resolved paths).
    pub snapshots: Vec<PathBuf>,
}

impl VmSpec {
    /// What the VM runs, for reports.
    pub fn describe(&self) -> String {
        match &self.input {
            VmInput::Builtin(s) => s.describe(),
            VmInput::Trace(p) => format!("trace {}", p.display()),
        }
    }
}

/// A validated host configuration.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// `[host]`.
    pub host: HostSection,
    /// `[esx]` and each VM's min, max and shares (the memory manager).
    pub esx: EsxConfig,
    /// `[sharing]`: the content-based page-sharing scanner
    /// ([`crate::hostsim::scanner`]); off without the section.
    pub sharing: SharingSection,
    /// The machine-wide baseline (every other section, `[cpu]` included).
    pub base: Config,
    /// The VMs, in `[[vm]]` order.
    pub vms: Vec<VmSpec>,
    /// The `[[vm]]` tables as written (for the resolved config in reports).
    pub vm_sections: Vec<VmSection>,
}

/// [`ConfigError::Invalid`] naming `key`, its `value` and what it must be
/// (the host's and `[esx]`'s checks alike).
pub(crate) fn invalid(
    key: impl Into<String>,
    value: impl std::fmt::Display,
    why: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.to_string(),
        why: why.into(),
    }
}

impl HostConfig {
    /// Parse and validate host TOML; `origin` names the file in errors.
    /// Relative trace paths are taken from `base_dir`.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for bad TOML or an unknown key,
    /// [`ConfigError::Invalid`] naming the key and value otherwise.
    pub fn from_toml(text: &str, origin: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let parse = |message: String| ConfigError::Parse {
            path: origin.to_string(),
            message,
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| parse(e.to_string()))?;
        let take = |t: &mut toml::Table, k: &str| {
            t.remove(k)
                .unwrap_or(toml::Value::Table(toml::Table::new()))
        };
        let host: HostSection = take(&mut table, "host")
            .try_into()
            .map_err(|e: toml::de::Error| parse(format!("[host]: {e}")))?;
        let esx = EsxSection::parse(table.remove("esx")).map_err(parse)?;
        let sharing = SharingSection::parse(table.remove("sharing"))?;
        let vm_sections: Vec<VmSection> = match table.remove("vm") {
            None => Vec::new(),
            Some(v) => v
                .try_into()
                .map_err(|e: toml::de::Error| parse(format!("[[vm]]: {e}")))?,
        };
        let base: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| parse(e.to_string()))?;
        let mut cfg = Self::resolve(host, esx, base, vm_sections, base_dir)?;
        cfg.sharing = sharing;
        Ok(cfg)
    }

    /// Read, parse and validate a host configuration file.
    ///
    /// # Errors
    /// As [`HostConfig::from_toml`], plus [`ConfigError::Io`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = crate::config::read_config_file(path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, &path.display().to_string(), dir)
    }

    /// The built-in host `vmemsim host` runs without `--config`: three VMs
    /// of different workloads and modes, 128 MiB each with 128 MiB of
    /// guest swap, on a host with half the memory they were given (192
    /// MiB). `gups` updates 160 MiB at random, more than its guest holds:
    /// its guest reclaims and swaps; together the VMs touch more than the
    /// host holds: the host swaps too (and sees double paging).
    pub fn builtin() -> Self {
        let vm = |name: &str, workload: &str, mode: &str, footprint: u64| VmSection {
            name: name.into(),
            workload: Some(workload.into()),
            trace: None,
            accesses: Some(2_000_000),
            footprint_mib: Some(footprint),
            seed: None,
            mode: mode.into(),
            mem_mib: 128,
            min_mib: None,
            max_mib: None,
            shares: None,
            guest: None,
            snapshots: Vec::new(),
        };
        let vms = vec![
            vm("gups", "random", "nested", 160),
            vm("scan", "seq", "shadow", 96),
            vm("build", "procs", "agile", 16),
        ];
        let host = HostSection {
            mem_mib: 384 / 2,
            swap_mib: 1024,
            ..HostSection::default()
        };
        let mut base = Config::default();
        base.guest.swap_mib = 128;
        Self::resolve(host, EsxSection::off(), base, vms, Path::new("."))
            .expect("the built-in host is valid")
    }

    fn resolve(
        host: HostSection,
        esx: EsxSection,
        mut base: Config,
        vm_sections: Vec<VmSection>,
        base_dir: &Path,
    ) -> Result<Self, ConfigError> {
        // The host's paging keys live in `[host]` here.
        base.host.ept_levels = host.ept_levels;
        base.host.page_size = host.page_size;
        base.validate()?;
        if host.page_size != crate::addr::PageSize::Size4K && host.swap_mib > 0 {
            return Err(invalid(
                "host.page_size",
                host.page_size.name(),
                "4k with host swap (swap_mib > 0): swapping huge host pages out (splitting \
                 them) is not modelled",
            ));
        }
        if host.page_size != crate::addr::PageSize::Size4K && esx.enabled {
            return Err(invalid(
                "host.page_size",
                host.page_size.name(),
                "4k with the ESX memory manager ([esx]): idle sampling and the balloon take \
                 single 4 KiB frames from a VM, and splitting huge host pages is not modelled",
            ));
        }
        let h = &host;
        if h.mem_mib == 0 || h.mem_mib > 1 << 20 {
            return Err(invalid(
                "host.mem_mib",
                h.mem_mib,
                "between 1 MiB and 1 TiB",
            ));
        }
        if h.reserve_mib >= h.mem_mib {
            return Err(invalid(
                "host.reserve_mib",
                h.reserve_mib,
                format!("below host.mem_mib ({})", h.mem_mib),
            ));
        }
        if !(1..=64).contains(&h.pcpus) {
            return Err(invalid("host.pcpus", h.pcpus, "between 1 and 64"));
        }
        if h.vm_quantum_instructions == 0 {
            return Err(invalid("host.vm_quantum_instructions", 0, "at least 1"));
        }
        if h.sample_cycles == 0 {
            return Err(invalid("host.sample_cycles", 0, "at least 1"));
        }
        if !(h.swap_latency_us.is_finite() && h.swap_latency_us >= 0.0) {
            return Err(invalid(
                "host.swap_latency_us",
                h.swap_latency_us,
                "a finite number >= 0",
            ));
        }
        if vm_sections.is_empty() {
            return Err(invalid(
                "vm",
                "(none)",
                "a host needs at least one [[vm]] table",
            ));
        }
        if vm_sections.len() > MAX_VMS {
            return Err(invalid(
                "vm",
                format!("{} tables", vm_sections.len()),
                format!("at most {MAX_VMS} VMs (one per 16-bit VPID)"),
            ));
        }
        let mut vms = Vec::with_capacity(vm_sections.len());
        for (i, v) in vm_sections.iter().enumerate() {
            let key = |k: &str| format!("vm[{i}].{k}");
            if v.name.is_empty() {
                return Err(invalid(key("name"), "\"\"", "a non-empty name"));
            }
            if vm_sections[..i].iter().any(|o| o.name == v.name) {
                return Err(invalid(
                    key("name"),
                    &v.name,
                    "names must be unique on the host",
                ));
            }
            let mode = ModeKind::parse(&v.mode)
                .map_err(|e| invalid(key("mode"), &v.mode, e.to_string()))?;
            if v.mem_mib > h.mem_mib + h.swap_mib {
                return Err(invalid(
                    key("mem_mib"),
                    v.mem_mib,
                    format!(
                        "at most host memory plus swap ({} + {} MiB)",
                        h.mem_mib, h.swap_mib
                    ),
                ));
            }
            let mut cfg = base.clone();
            cfg.guest = guest_overrides(&base.guest, v.guest.as_ref(), &key("guest"))?;
            cfg.guest.mem_mib = v.mem_mib;
            if cfg.guest.levels != base.guest.levels {
                // The pCPUs' walkers and TLB tags are built for one paging mode.
                return Err(invalid(
                    key("guest.levels"),
                    cfg.guest.levels,
                    format!(
                        "every VM of a host has the paging levels of [guest] ({})",
                        base.guest.levels
                    ),
                ));
            }
            cfg.validate().map_err(|e| match e {
                ConfigError::Invalid { key: k, value, why } if k == "guest.mem_mib" => {
                    invalid(key("mem_mib"), value, why)
                }
                e => e,
            })?;
            if !mode.runs_with(&cfg) {
                let e = mode.check(&cfg).expect_err("mode does not run");
                return Err(invalid(key("mode"), &v.mode, e.to_string()));
            }
            let input = match (&v.workload, &v.trace) {
                (Some(w), None) => {
                    let kind = WorkloadKind::parse(w)
                        .map_err(|e| invalid(key("workload"), w, e.to_string()))?;
                    let mut s = WorkloadSpec::default_for(kind);
                    s.accesses = v.accesses.unwrap_or(s.accesses);
                    s.footprint_mib = v.footprint_mib.unwrap_or(s.footprint_mib);
                    s.seed = v.seed.unwrap_or(s.seed);
                    VmInput::Builtin(s)
                }
                (None, Some(t)) => {
                    if v.accesses.is_some() || v.footprint_mib.is_some() || v.seed.is_some() {
                        return Err(invalid(
                            key("trace"),
                            t.display(),
                            "accesses, footprint_mib and seed apply to built-in workloads only",
                        ));
                    }
                    VmInput::Trace(if t.is_absolute() || t.as_os_str() == "-" {
                        t.clone()
                    } else {
                        base_dir.join(t)
                    })
                }
                _ => {
                    return Err(invalid(
                        key("workload"),
                        "",
                        "give exactly one of `workload` and `trace`",
                    ))
                }
            };
            let snapshots = v
                .snapshots
                .iter()
                .map(|s| {
                    if s.is_absolute() {
                        s.clone()
                    } else {
                        base_dir.join(s)
                    }
                })
                .collect();
            vms.push(VmSpec {
                name: v.name.clone(),
                mode,
                input,
                cfg,
                snapshots,
            });
        }
        let esx = EsxConfig::resolve(esx, &host, &vm_sections)?;
        Ok(HostConfig {
            host,
            esx,
            sharing: SharingSection::off(),
            base,
            vms,
            vm_sections,
        })
    }

    /// Set every VM's measured window (`--warmup-instructions`,
    /// `--sim-instructions` over `[measure]`): each VM warms up and
    /// measures on its own instruction count.
    pub fn set_measure(&mut self, m: &MeasureConfig) {
        self.base.measure = m.clone();
        for v in &mut self.vms {
            v.cfg.measure = m.clone();
        }
    }

    /// Every key of a host configuration with its default, as TOML
    /// (`vmemsim config --dump --host`): `[host]`, `[esx]` (on, as when
    /// the section is written), one example `[[vm]]` whose optional keys
    /// show their defaults, and the ordinary sections, the baseline of
    /// every VM (their `[host]` keys are `[host]`'s here).
    pub fn defaults_toml() -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            host: HostSection,
            esx: EsxSection,
            vm: [VmSection; 1],
            #[serde(flatten)]
            base: &'a toml::Table,
        }
        let mut base = toml::Table::try_from(Config::default()).expect("config serializes");
        base.remove("host");
        let w = WorkloadSpec::default_for(WorkloadKind::Random);
        let mem_mib = 1024;
        let vm = VmSection {
            name: "vm0".into(),
            workload: Some(w.kind.name().into()),
            trace: None,
            accesses: Some(w.accesses),
            footprint_mib: Some(w.footprint_mib),
            seed: Some(w.seed),
            mode: ModeKind::Nested.name().into(),
            mem_mib,
            min_mib: Some(0),
            max_mib: Some(mem_mib),
            shares: Some(crate::esx::config::DEFAULT_SHARES_PER_MIB * mem_mib as f64),
            guest: None,
            snapshots: Vec::new(),
        };
        let body = toml::to_string(&Out {
            host: HostSection::default(),
            esx: EsxSection::default(),
            vm: [vm],
            base: &base,
        })
        .expect("host config serializes");
        format!(
            "# A host configuration's keys with their defaults (docs/host.md, docs/esx.md).\n\
             # [[vm]]: one table per VM; name, mode, mem_mib and one of workload / trace\n\
             # are required; accesses, footprint_mib and seed are the workload's defaults\n\
             # (random shown); min_mib 0, max_mib = mem_mib, shares 10 per MiB of mem_mib;\n\
             # [vm.guest] overrides [guest] for that VM; snapshots = [FILES] (none).\n\
             # [esx] is off unless written; with it, admission control needs host swap\n\
             # for every VM's max_mib - min_mib.\n{body}"
        )
    }

    /// The resolved configuration as TOML (embedded in the JSON report).
    pub fn to_toml(&self) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            host: &'a HostSection,
            #[serde(skip_serializing_if = "Option::is_none")]
            esx: Option<&'a EsxSection>,
            #[serde(skip_serializing_if = "Option::is_none")]
            sharing: Option<&'a SharingSection>,
            vm: &'a [VmSection],
            #[serde(flatten)]
            base: &'a toml::Table,
        }
        // The baseline's `[host]` keys are in `HostSection` here.
        let mut base = toml::Table::try_from(&self.base).expect("config serializes");
        base.remove("host");
        toml::to_string(&Out {
            host: &self.host,
            esx: self.esx.section.enabled.then_some(&self.esx.section),
            sharing: self.sharing.enabled.then_some(&self.sharing),
            vm: &self.vm_sections,
            base: &base,
        })
        .expect("host config serializes")
    }
}

/// `base` with the keys of `over` replaced.
fn guest_overrides(
    base: &GuestConfig,
    over: Option<&toml::Table>,
    key: &str,
) -> Result<GuestConfig, ConfigError> {
    let Some(over) = over else {
        return Ok(base.clone());
    };
    if over.contains_key("mem_mib") {
        return Err(invalid(
            format!("{key}.mem_mib"),
            &over["mem_mib"],
            "set the VM's memory with its `mem_mib`",
        ));
    }
    let mut t = toml::Table::try_from(base).expect("guest config serializes");
    for (k, v) in over {
        t.insert(k.clone(), v.clone());
    }
    toml::Value::Table(t)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: key.to_string(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HostConfig, String> {
        HostConfig::from_toml(text, "h.toml", Path::new(".")).map_err(|e| e.to_string())
    }

    const TWO: &str = r#"
[host]
mem_mib = 512
[[vm]]
name = "a"
workload = "seq"
mode = "nested"
mem_mib = 128
[vm.guest]
huge_pages = true
[[vm]]
name = "b"
workload = "random"
footprint_mib = 8
mode = "shadow"
mem_mib = 256
"#;

    #[test]
    fn parses_vms_with_overrides() {
        let h = parse(TWO).unwrap();
        assert_eq!(h.vms.len(), 2);
        use crate::config::HugePages;
        assert_eq!(h.vms[0].cfg.guest.huge_pages, HugePages::Huge2M);
        assert_eq!(h.vms[1].cfg.guest.huge_pages, HugePages::None);
        assert_eq!(h.vms[1].cfg.guest.mem_mib, 256);
        assert_eq!(h.vms[1].mode, ModeKind::Shadow);
        assert!(matches!(h.vms[1].input, VmInput::Builtin(s) if s.footprint_mib == 8));
        let again = parse(&h.to_toml()).unwrap();
        assert_eq!(again.to_toml(), h.to_toml());
        // [host] ept_levels reaches every VM; [guest] levels too, for all alike.
        let five = TWO.replace(
            "mem_mib = 512",
            "mem_mib = 512\nept_levels = 5\n[guest]\nlevels = 5",
        );
        let h = parse(&five).unwrap();
        assert!(h
            .vms
            .iter()
            .all(|v| (v.cfg.guest.levels, v.cfg.host.ept_levels) == (5, 5)));
    }

    #[test]
    fn rejects_bad_hosts_naming_the_key() {
        let cases = [
            (TWO.replace("huge_pages", "hugepages"), "hugepages"),
            (
                TWO.replace("mem_mib = 512", "mem_mib = 512\nswapp = 1"),
                "swapp",
            ),
            (TWO.replace("name = \"b\"", "name = \"a\""), "vm[1].name"),
            (
                TWO.replace("mem_mib = 256", "mem_mib = 4096"),
                "vm[1].mem_mib",
            ),
            (
                TWO.replace("mode = \"shadow\"", "mode = \"shadowy\""),
                "vm[1].mode",
            ),
            ("[host]\nmem_mib = 64\n".to_string(), "at least one [[vm]]"),
            (
                TWO.replace("huge_pages = true", "levels = 5"),
                "vm[0].guest.levels",
            ),
            (
                TWO.replace(
                    "mem_mib = 512",
                    "mem_mib = 512\nswap_mib = 64\npage_size = \"2m\"",
                ),
                "config key `host.page_size` = 2m: 4k with host swap",
            ),
            (
                TWO.replace("mem_mib = 512", "mem_mib = 512\npage_size = \"2m\"")
                    + "[esx]\nreclaim = \"balloon\"\n",
                "config key `host.page_size` = 2m: 4k with the ESX memory manager",
            ),
            (
                TWO.replace("mem_mib = 512", "mem_mib = 512\nept_levels = 3"),
                "config key `host.ept_levels` = 3",
            ),
            (
                TWO.replace(
                    "workload = \"seq\"",
                    "workload = \"seq\"\ntrace = \"x.vmt\"",
                ),
                "exactly one",
            ),
        ];
        for (text, want) in cases {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn defaults_dump_parses_back_to_the_defaults() {
        let text = HostConfig::defaults_toml();
        for key in [
            "[host]",
            "vm_quantum_instructions = 100000",
            "swap_latency_us = 100.0",
            "[esx]",
            "idle_tax = 0.75",
            "sample_pages = 100",
            "[[vm]]",
            "shares = 10240.0",
            "[guest]",
            "[measure]",
        ] {
            assert!(text.contains(key), "{key}: {text}");
        }
        // With [esx] on, admission control needs host swap for the VM's
        // max - min; otherwise the dump is a valid host.
        let h = parse(&text.replacen("swap_mib = 0", "swap_mib = 1024", 1)).unwrap();
        assert_eq!(
            h.host,
            HostSection {
                swap_mib: 1024,
                ..HostSection::default()
            }
        );
        assert_eq!(h.esx.section, EsxSection::default());
        assert_eq!(h.vms[0].cfg.guest.mem_mib, 1024);
    }

    #[test]
    fn builtin_host_has_half_the_memory_given() {
        let h = HostConfig::builtin();
        let given: u64 = h.vms.iter().map(|v| v.cfg.guest.mem_mib).sum();
        assert_eq!((given, h.host.mem_mib), (384, 192));
        assert!(h.vms.iter().all(|v| v.cfg.guest.swap_mib == 128));
        let modes: std::collections::HashSet<_> = h.vms.iter().map(|v| v.mode).collect();
        assert_eq!(modes.len(), 3);
    }
}
