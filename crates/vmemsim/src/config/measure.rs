//! The measured window (`[measure]`).

use serde::{Deserialize, Serialize};

/// The measured window, as ChampSim, Sniper and gem5 runs use it: the
/// first `warmup_instructions` instructions run with every structure
/// working (TLBs, caches, shadow tables, policies warm up) but are not
/// counted; the next `sim_instructions` are measured. Counts are
/// instructions retired (one per fetch). Both default to the whole trace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeasureConfig {
    /// Instructions simulated before counting starts. Default 0.
    pub warmup_instructions: u64,
    /// Instructions measured after the warm-up; 0 = to the end of the
    /// input. Default 0.
    pub sim_instructions: u64,
}
