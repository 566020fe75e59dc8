//! The measured-window flags shared by `run`, `compare`, `sweep` (and any
//! command that simulates): they override the `[measure]` config keys.

use clap::Args;
use vmemsim::config::MeasureConfig;

/// `--warmup-instructions N` / `--sim-instructions M`: warm up N
/// instructions, then measure M (as ChampSim, Sniper and gem5 runs do).
#[derive(Args, Clone, Copy, Debug, Default)]
pub struct MeasureFlags {
    /// Instructions to run before counting starts (structures warm up,
    /// counters do not count); overrides `measure.warmup_instructions`.
    #[arg(long, value_name = "N")]
    pub warmup_instructions: Option<u64>,
    /// Instructions to measure after the warm-up (0 = to the end of the
    /// input); overrides `measure.sim_instructions`.
    #[arg(long, value_name = "M")]
    pub sim_instructions: Option<u64>,
}

impl MeasureFlags {
    /// Put the flags that were given into `m`; keys not given keep the
    /// config's values.
    pub fn apply(&self, m: &mut MeasureConfig) {
        if let Some(n) = self.warmup_instructions {
            m.warmup_instructions = n;
        }
        if let Some(n) = self.sim_instructions {
            m.sim_instructions = n;
        }
    }

    /// The flags as command-line words, for scripts that re-run vmemsim
    /// (the `--slurm` job script).
    pub fn to_args(self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(n) = self.warmup_instructions {
            v.extend(["--warmup-instructions".to_string(), n.to_string()]);
        }
        if let Some(n) = self.sim_instructions {
            v.extend(["--sim-instructions".to_string(), n.to_string()]);
        }
        v
    }
}
