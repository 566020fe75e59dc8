//! The mutation-testing fast set (TESTING.md, "Mutation testing") as one
//! test binary: the integration tests that run in seconds, each included
//! as a module. One binary instead of twenty rebuilds in about a third of
//! the time after a change to the crate (a mutant), because each test
//! crate is recompiled and linked on every change of the library.
//!
//! Not run by `cargo test` (`test = false` in Cargo.toml: the same tests
//! run in their own binaries); `.cargo/mutants.toml` runs it with
//! `--test fast_set`. A new fast test file goes here too.

#[path = "bad_records.rs"]
mod bad_records;
#[path = "bt.rs"]
mod bt;
#[path = "champsim.rs"]
mod champsim;
#[path = "contents.rs"]
mod contents;
#[path = "ept_rights.rs"]
mod ept_rights;
#[path = "esx.rs"]
mod esx;
#[path = "exits.rs"]
mod exits;
#[path = "facts.rs"]
mod facts;
#[path = "fuzz_regressions.rs"]
mod fuzz_regressions;
#[path = "guest_os.rs"]
mod guest_os;
#[path = "guest_swap.rs"]
mod guest_swap;
#[path = "mutant_kills.rs"]
mod mutant_kills;
#[path = "oracle.rs"]
mod oracle;
#[path = "props.rs"]
mod props;
#[path = "sharing_census.rs"]
mod sharing_census;
#[path = "sharing_experiments.rs"]
mod sharing_experiments;
#[path = "sharing_props.rs"]
mod sharing_props;
#[path = "swtlb.rs"]
mod swtlb;
#[path = "walks.rs"]
mod walks;
#[path = "window.rs"]
mod window;
