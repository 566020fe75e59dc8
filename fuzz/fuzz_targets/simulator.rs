//! Arbitrary record sequences through every mode: never a panic, and a
//! mode changes cost, never meaning: every mode succeeds with the same
//! accesses and guest faults, or every mode fails with the same error.
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("simulator_input.rs");

fuzz_target!(|data: &[u8]| check(data));
