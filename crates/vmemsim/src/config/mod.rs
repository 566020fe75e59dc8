//! Simulator configuration: one struct per TOML section, unknown keys
//! rejected, impossible geometry rejected by [`Config::validate`].
//!
//! Every default names its source. "UNVERIFIED" marks a default no primary
//! source fixes (see `shared/reference/facts.md`): a documented placeholder,
//! not a validation target.

mod cost;
mod guest;
mod hardware;
mod hypervisor;
mod measure;
mod validate;

pub use cost::{CostConfig, MAX_BASE_CPI, MAX_EVENT_CYCLES};
pub use guest::{GuestConfig, HugePages};
pub use hardware::{
    CpuConfig, Geometry, HostPagingConfig, PtCacheConfig, TlbConfig, TlbManagement, Virtualization,
    WalkCacheConfig, MAX_GHZ,
};
pub use hypervisor::{AgileConfig, PvConfig, SchedConfig, SelectiveConfig, ShadowConfig};
pub use measure::MeasureConfig;

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Errors loading or validating a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not parse or names an unknown key (the message names it).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What the TOML parser reported (key, line and column).
        message: String,
    },
    /// A value is impossible, e.g. a TLB geometry whose sets are not a power of two.
    #[error("config key `{key}` = {value}: {why}")]
    Invalid {
        /// Dotted key, e.g. `tlb.stlb`.
        key: String,
        /// The offending value as written.
        value: String,
        /// What a valid value looks like.
        why: String,
    },
}

/// The whole configuration. `Config::default()` is the documented baseline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Guest OS model.
    pub guest: GuestConfig,
    /// TLBs.
    pub tlb: TlbConfig,
    /// Paging-structure caches, nested TLB, EPT walk caches.
    pub walk_caches: WalkCacheConfig,
    /// Cache for page-table lines touched by walks.
    pub pt_cache: PtCacheConfig,
    /// Cycle costs.
    pub cost: CostConfig,
    /// Scheduling of recorded processes.
    pub sched: SchedConfig,
    /// Paravirtual direct paging (`direct` mode).
    pub pv: PvConfig,
    /// Dynamic switching between nested and shadow paging (`selective`, `selective-w11`).
    pub selective: SelectiveConfig,
    /// Agile paging (`agile` mode).
    pub agile: AgileConfig,
    /// Shadow paging's KVM mechanisms (`shadow`, and the shadow part of
    /// `agile` and the `selective` modes).
    pub shadow: ShadowConfig,
    /// The measured window: warm-up and region of interest.
    pub measure: MeasureConfig,
    /// The simulated CPU (clock rate).
    pub cpu: CpuConfig,
    /// How the host maps guest memory: EPT levels (and, later, host page size).
    pub host: HostPagingConfig,
}

impl Config {
    /// Parse TOML text; `origin` names the file in errors.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for bad TOML or an unknown key, [`ConfigError::Invalid`]
    /// for impossible values.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read and parse a TOML file.
    ///
    /// # Errors
    /// As [`Config::from_toml`], plus [`ConfigError::Io`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::from_toml(&read_config_file(path)?, &path.display().to_string())
    }

    /// The resolved configuration as TOML (what `vmemsim config --dump` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serializes")
    }
}

/// The text of configuration file `path` (a VM's or a host's).
///
/// # Errors
/// [`ConfigError::Io`] naming the path.
pub(crate) fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
        path: path.display().to_string(),
        source: e,
    })
}

fn invalid(key: &str, value: impl std::fmt::Display, why: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.to_string(),
        why: why.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips_through_toml() {
        let c = Config::default();
        let back = Config::from_toml(&c.to_toml(), "dump").unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::from_toml("[tlb]\nstlb_entries = 5\n", "x.toml").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("x.toml") && msg.contains("stlb_entries"),
            "{msg}"
        );
    }

    #[test]
    fn partial_sections_keep_defaults() {
        let c = Config::from_toml("[guest]\nhuge_pages = true\n", "x").unwrap();
        assert_eq!(c.guest.huge_pages, HugePages::Huge2M);
        assert_eq!(c.guest.mem_mib, 8192);
        assert_eq!(c.tlb.stlb, Geometry::new(512, 4));
    }
}
