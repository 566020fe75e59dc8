//! Any bytes as a `.vmt` file: open, read every record, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Write;
use vmemsim_trace::RecordSource;

fuzz_target!(|data: &[u8]| {
    // The reader seeks (footer at the end), so it reads a real file: an
    // unlinked temporary one, gone when it closes, even after a crash.
    let mut file = tempfile::tempfile().expect("a temporary file");
    file.write_all(data).expect("written");
    let path = std::path::Path::new("fuzz.vmt");
    if let Ok(mut r) = vmemsim_trace::vmt::Reader::from_file(file, path) {
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
