//! The recorder's log-file path (used where log pipes are not available):
//! forced with `VMEMSIM_RECORD_LOG_FILES`, which this test binary sets for
//! its own process only.

use std::path::Path;

mod pipeline;

#[test]
fn records_a_shell_pipeline_through_log_files() {
    if !vmemsim_trace::recorder::valgrind_runs(None) {
        return;
    }
    std::env::set_var(vmemsim_trace::recorder::LOG_FILES_ENV, "1");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pipeline-files.vmt");
    let summary = pipeline::record_and_check_pipeline(&out);
    // The same four streams as through pipes, each a file.
    assert_eq!(
        (summary.log_pipes, summary.log_files),
        (0, 4),
        "{summary:?}"
    );
}
