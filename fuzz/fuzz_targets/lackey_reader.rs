//! Any bytes as Valgrind lackey output: never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmemsim_trace::RecordSource;

fuzz_target!(|data: &[u8]| {
    let mut r =
        vmemsim_trace::lackey::Reader::from_reader("fuzz", std::io::Cursor::new(data.to_vec()));
    let mut buf = Vec::new();
    while let Ok(n) = r.next_batch(&mut buf, 5) {
        if n == 0 {
            break;
        }
        buf.clear();
    }
});
