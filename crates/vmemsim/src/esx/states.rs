//! Reclamation states by the host's free memory [ESX 6.2]: `high` (no
//! reclamation), `soft` (balloon; swap only where ballooning cannot),
//! `hard` (swap), `low` (swap, and block the VMs above their target).
//!
//! Going down is immediate and may skip states: free memory below the soft
//! threshold (default 4%) enters soft, below hard (2%) hard, below low (1%)
//! low. Going up is one state at a time and only once free memory exceeds
//! the next state's upper threshold by `hysteresis` ("significantly
//! exceeding the higher threshold" [ESX 6.2]; the margin is UNVERIFIED):
//! low -> hard above hard + h, hard -> soft above soft + h, soft -> high
//! above high + h (the high threshold, 6%, is only used on the way up).

use serde::Serialize;

/// A reclamation state, from most free memory to least.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Enough free memory: no reclamation.
    High,
    /// Reclaim by ballooning (host swap only for VMs that cannot balloon).
    Soft,
    /// Reclaim by host swapping.
    Hard,
    /// Swap and block VMs above their target until memory is freed.
    Low,
}

impl State {
    /// All states in order.
    pub const ALL: [State; 4] = [State::High, State::Soft, State::Hard, State::Low];

    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            State::High => "high",
            State::Soft => "soft",
            State::Hard => "hard",
            State::Low => "low",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Free-memory thresholds, fractions of host memory.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// Back to `high` above this (+ hysteresis). Default 0.06 [ESX 6.2].
    pub high: f64,
    /// `soft` below this. Default 0.04 [ESX 6.2].
    pub soft: f64,
    /// `hard` below this. Default 0.02 [ESX 6.2].
    pub hard: f64,
    /// `low` below this. Default 0.01 [ESX 6.2].
    pub low: f64,
    /// Margin above a threshold before going up a state. Default 0.01
    /// (UNVERIFIED).
    pub hysteresis: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            high: 0.06,
            soft: 0.04,
            hard: 0.02,
            low: 0.01,
            hysteresis: 0.01,
        }
    }
}

/// One change of state.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Transition {
    /// Host time, seconds.
    pub seconds: f64,
    /// State left.
    pub from: State,
    /// State entered.
    pub to: State,
    /// Free memory then, fraction of host memory.
    pub free: f64,
}

/// The state machine with its history: time in each state and every
/// transition.
#[derive(Clone, Debug)]
pub struct StateMachine {
    th: Thresholds,
    state: State,
    last_seconds: f64,
    time_in: [f64; 4],
    transitions: Vec<Transition>,
}

impl StateMachine {
    /// Starts in `high` at time 0.
    pub fn new(th: Thresholds) -> Self {
        StateMachine {
            th,
            state: State::High,
            last_seconds: 0.0,
            time_in: [0.0; 4],
            transitions: Vec::new(),
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Free memory is `free` (fraction of host memory) at host time
    /// `seconds` (not before the previous update): account the time since
    /// the last update to the state held, then move. Returns the new state.
    pub fn update(&mut self, free: f64, seconds: f64) -> State {
        self.account(seconds);
        let th = &self.th;
        let down = if free < th.low {
            State::Low
        } else if free < th.hard {
            State::Hard
        } else if free < th.soft {
            State::Soft
        } else {
            State::High
        };
        let next = if down > self.state {
            down
        } else {
            let up = match self.state {
                State::High => None,
                State::Soft => (free >= th.high + th.hysteresis).then_some(State::High),
                State::Hard => (free >= th.soft + th.hysteresis).then_some(State::Soft),
                State::Low => (free >= th.hard + th.hysteresis).then_some(State::Hard),
            };
            up.unwrap_or(self.state)
        };
        if next != self.state {
            self.transitions.push(Transition {
                seconds,
                from: self.state,
                to: next,
                free,
            });
            self.state = next;
        }
        next
    }

    /// Account the time up to `seconds` to the state held, without
    /// evaluating a transition (the end of a run).
    pub fn account(&mut self, seconds: f64) {
        let dt = (seconds - self.last_seconds).max(0.0);
        self.time_in[self.state.index()] += dt;
        self.last_seconds = self.last_seconds.max(seconds);
    }

    /// Seconds spent in each state, in [`State::ALL`] order, up to the last update.
    pub fn time_in(&self) -> [f64; 4] {
        self.time_in
    }

    /// Every transition so far.
    pub fn transitions(&self) -> &[Transition] {
        &self.transitions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    #[test]
    fn transitions_and_hysteresis_on_a_free_memory_sequence() {
        let mut m = StateMachine::new(Thresholds::default());
        // (free %, expected state). Down: 5% stays high (soft starts below
        // 4%), 3.9 soft, 1.5 hard (skips nothing: 1.5 < 2), 0.5 low. Up
        // needs the next threshold + 1: 2.5 stays low, 3.0 hard, 4.5 stays
        // hard, 5.0 soft, 6.5 stays soft, 7.0 high. From high straight to
        // low in one step: 0.9.
        let seq = [
            (5.0, High),
            (3.9, Soft),
            (1.5, Hard),
            (0.5, Low),
            (2.5, Low),
            (3.0, Hard),
            (4.5, Hard),
            (5.0, Soft),
            (6.5, Soft),
            (7.0, High),
            (0.9, Low),
            (10.0, Hard),
            (10.0, Soft),
            (10.0, High),
        ];
        for (t, (pct, want)) in seq.iter().enumerate() {
            assert_eq!(
                m.update(pct / 100.0, t as f64 + 1.0),
                *want,
                "step {t}: {pct}%"
            );
        }
        let tr: Vec<_> = m
            .transitions()
            .iter()
            .map(|t| (t.seconds, t.from, t.to))
            .collect();
        assert_eq!(
            tr,
            vec![
                (2.0, High, Soft),
                (3.0, Soft, Hard),
                (4.0, Hard, Low),
                (6.0, Low, Hard),
                (8.0, Hard, Soft),
                (10.0, Soft, High),
                (11.0, High, Low),
                (12.0, Low, Hard),
                (13.0, Hard, Soft),
                (14.0, Soft, High),
            ]
        );
        // Time accounted to the state held before each update: high 0-2
        // and 10-11 (3 s), soft 2-3, 8-10, 13-14 (4 s), hard 3-4, 6-8,
        // 12-13 (4 s), low 4-6, 11-12 (3 s).
        assert_eq!(m.time_in(), [3.0, 4.0, 4.0, 3.0]);
    }
}
