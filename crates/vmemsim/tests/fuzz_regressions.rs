//! Every crash input cargo-fuzz found in the simulator target
//! (`fuzz/regressions/simulator/`), replayed through the target's own
//! check: no panic, and every mode agrees on meaning (see TESTING.md).

#[allow(dead_code)]
mod input {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/fuzz_targets/simulator_input.rs"
    ));
}

#[test]
fn simulator_crash_inputs_pass() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/regressions/simulator"
    );
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("regressions directory") {
        let path = e.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        eprintln!("replaying {}", path.display());
        input::check(&data);
        n += 1;
    }
    assert!(n >= 2, "the committed inputs are there");
}
