//! Regenerates the sample recordings in `tests/data/` at the repository root
//! (see `tests/data/README.md`). Ignored by default because it rewrites
//! committed files:
//!
//! ```text
//! cargo test -p vmemsim-trace --test record_data -- --ignored --nocapture
//! ```

use std::ffi::OsString;
use std::path::Path;

use vmemsim_trace::recorder::{record, RecordOptions};

/// (file name, command) of every sample recording.
const SAMPLES: &[(&str, &[&str])] = &[
    ("sh-echo-wc.vmt", &["sh", "-c", "echo hello | wc -c"]),
    ("sh-ls-wc.vmt", &["sh", "-c", "ls /usr/bin | wc -l"]),
    (
        "sh-sort-uniq.vmt",
        &["sh", "-c", "printf 'b\\na\\nb\\n' | sort | uniq"],
    ),
];

#[test]
#[ignore = "rewrites tests/data/*.vmt; run explicitly"]
fn regenerate_sample_recordings() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data");
    std::fs::create_dir_all(&data).unwrap();
    let data = data.canonicalize().unwrap();
    for (name, cmd) in SAMPLES {
        let opts = RecordOptions {
            output: data.join(name),
            command: cmd.iter().map(OsString::from).collect(),
            valgrind: None,
            tool: Default::default(),
        };
        let s = record(&opts).unwrap();
        println!("{s}");
    }
}
