//! What the CLI's integration tests share.

use std::process::{Command, Output};

/// Runs the `vmemsim` binary built for these tests with `args` and waits
/// for it (standard output and error captured).
pub fn vmemsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmemsim"))
        .args(args)
        .output()
        .expect("run vmemsim")
}
