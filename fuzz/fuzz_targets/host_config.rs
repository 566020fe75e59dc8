//! Any text as a `vmemsim host` configuration: a `HostConfig` or a
//! `ConfigError`, never a panic; an accepted configuration of built-in
//! workloads on a small host runs to its end or to a `SimError`, never a
//! panic, with the oracle checking every access of every VM.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vmemsim::host::config::{HostConfig, VmInput};
use vmemsim::hostsim::HostSim;

/// Bounds that keep one input's run short and its memory small.
const MAX_HOST_MIB: u64 = 256;
const MAX_VMS: usize = 4;
const MAX_VM_MIB: u64 = 128;
const MAX_ACCESSES: u64 = 4_000;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // No file is found from here: a trace or snapshot is an error.
    let Ok(cfg) = HostConfig::from_toml(&text, "fuzz.toml", Path::new("/nonexistent")) else {
        return;
    };
    if cfg.host.mem_mib > MAX_HOST_MIB || cfg.vms.len() > MAX_VMS {
        return;
    }
    for v in &cfg.vms {
        let VmInput::Builtin(w) = &v.input else {
            return;
        };
        if w.accesses > MAX_ACCESSES || v.cfg.guest.mem_mib > MAX_VM_MIB {
            return;
        }
    }
    if let Ok(sim) = HostSim::new(&cfg) {
        let _ = sim.checked().run(&mut |_| {});
    }
});
