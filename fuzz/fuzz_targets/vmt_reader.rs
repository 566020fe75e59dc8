//! Any bytes as a `.vmt` file: open, read every record, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmemsim_trace::RecordSource;

fuzz_target!(|data: &[u8]| {
    // The reader seeks (footer at the end), so it reads a real file: one
    // per fuzzing process, rewritten for each input.
    thread_local! {
        static PATH: std::path::PathBuf =
            std::env::temp_dir().join(format!("vmemsim-fuzz-{}.vmt", std::process::id()));
    }
    PATH.with(|path| {
        std::fs::write(path, data).unwrap();
        if let Ok(mut r) = vmemsim_trace::vmt::Reader::open(path) {
            let mut buf = Vec::new();
            // Odd batch sizes exercise resuming inside a block.
            while let Ok(n) = r.next_batch(&mut buf, 7) {
                if n == 0 {
                    break;
                }
                buf.clear();
            }
            let _ = r.processes();
            let _ = r.warnings();
        }
    });
});
