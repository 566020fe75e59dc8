//! The measured window of a run: warm up N instructions, then measure M, as
//! ChampSim, Sniper and gem5 runs do (`[measure]` in the config).
//!
//! Nothing is reset in the machine: TLBs, caches, shadow tables and
//! policies carry their warm state into the window. The counters are
//! snapshotted when the window opens and the report gives the difference,
//! so a window's counts are exactly those of the full run minus those of
//! its warm-up prefix.

use serde::Serialize;

use crate::config::MeasureConfig;
use crate::stats::Stats;
use crate::SimError;

/// Which instructions a report covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WindowReport {
    /// Instructions run before counting started.
    pub warmup_instructions: u64,
    /// Instructions measured (retired inside the window).
    pub measured_instructions: u64,
    /// Instructions asked to measure (0 = to the end of the input).
    pub sim_instructions: u64,
    /// The input ended before `sim_instructions` were measured.
    pub input_ended_early: bool,
}

impl WindowReport {
    /// One line for the text report, e.g. `instructions 1000..6000 (warm-up
    /// 1000, 5000 measured)`, or `the whole input` without a window.
    pub fn describe(&self) -> String {
        if self.warmup_instructions == 0 && self.sim_instructions == 0 {
            return "the whole input".into();
        }
        let end = self.warmup_instructions + self.measured_instructions;
        let mut s = format!(
            "instructions {}..{} (warm-up {}, {} measured",
            self.warmup_instructions, end, self.warmup_instructions, self.measured_instructions
        );
        if self.input_ended_early {
            s += &format!(
                "; the input ended before the {} asked",
                self.sim_instructions
            );
        }
        s.push(')');
        s
    }
}

/// What [`Window::mark`] found due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// The warm-up is over: counting starts now.
    Start,
    /// The measured instructions are done: stop the run.
    Stop,
}

/// The window of one run, checked before every instruction fetch.
#[derive(Clone, Debug)]
pub struct Window {
    cfg: MeasureConfig,
    /// Counters when the window opened.
    start: Option<Stats>,
    /// Instruction count at which the next mark is due.
    next: u64,
}

impl Window {
    /// A window per `cfg`; without a warm-up it is open from the start.
    pub fn new(cfg: &MeasureConfig) -> Self {
        let mut w = Window {
            cfg: cfg.clone(),
            start: None,
            next: cfg.warmup_instructions,
        };
        if cfg.warmup_instructions == 0 {
            w.open(&Stats::default());
        }
        w
    }

    fn open(&mut self, now: &Stats) {
        self.start = Some(now.clone());
        self.next = match self.cfg.sim_instructions {
            0 => u64::MAX,
            m => now.instructions.saturating_add(m),
        };
    }

    /// True when a mark is due before the next instruction, `instructions`
    /// having retired.
    #[inline]
    pub fn due(&self, instructions: u64) -> bool {
        instructions >= self.next
    }

    /// Act on a due mark: open the window (snapshot `now`) or say stop.
    pub fn mark(&mut self, now: &Stats) -> Mark {
        if self.start.is_none() {
            self.open(now);
            Mark::Start
        } else {
            Mark::Stop
        }
    }

    /// The counts of the window, `now` being the counters at the end, and
    /// what it covered.
    ///
    /// # Errors
    /// [`SimError::Workload`] when the input ended within the warm-up.
    pub fn measured(&self, now: &Stats) -> Result<(Stats, WindowReport), SimError> {
        let Some(start) = &self.start else {
            return Err(SimError::Workload(format!(
                "the input ended after {} instructions, within the warm-up of {} \
                 (--warmup-instructions / measure.warmup_instructions): nothing was measured",
                now.instructions, self.cfg.warmup_instructions
            )));
        };
        let d = now.since(start);
        let asked = self.cfg.sim_instructions;
        let report = WindowReport {
            warmup_instructions: start.instructions,
            measured_instructions: d.instructions,
            sim_instructions: asked,
            input_ended_early: asked > 0 && d.instructions < asked,
        };
        Ok((d, report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(instructions: u64) -> Stats {
        Stats {
            instructions,
            accesses: 2 * instructions,
            ..Stats::default()
        }
    }

    #[test]
    fn warm_up_then_measure_then_stop() {
        let mut w = Window::new(&MeasureConfig {
            warmup_instructions: 10,
            sim_instructions: 5,
        });
        assert!(!w.due(9));
        assert!(w.due(10));
        assert_eq!(w.mark(&at(10)), Mark::Start);
        assert!(!w.due(14));
        assert!(w.due(15));
        assert_eq!(w.mark(&at(15)), Mark::Stop);
        let (d, r) = w.measured(&at(15)).unwrap();
        assert_eq!((d.instructions, d.accesses), (5, 10));
        assert_eq!(r.describe(), "instructions 10..15 (warm-up 10, 5 measured)");
    }

    #[test]
    fn no_window_is_the_whole_input() {
        let w = Window::new(&MeasureConfig::default());
        assert!(!w.due(u64::MAX - 1));
        let (d, r) = w.measured(&at(7)).unwrap();
        assert_eq!(d, at(7));
        assert_eq!(r.describe(), "the whole input");
    }

    #[test]
    fn short_input_is_said_or_refused() {
        let mut w = Window::new(&MeasureConfig {
            warmup_instructions: 2,
            sim_instructions: 100,
        });
        let e = w.measured(&at(1)).unwrap_err().to_string();
        assert!(
            e.contains("after 1 instructions") && e.contains("warm-up of 2"),
            "{e}"
        );
        w.mark(&at(2));
        let (_, r) = w.measured(&at(30)).unwrap();
        assert!(r.input_ended_early);
        assert!(r
            .describe()
            .ends_with("the input ended before the 100 asked)"));
    }
}
