//! Any bytes as a ChampSim trace, in both layouts: never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmemsim_trace::champsim::{Layout, Reader};
use vmemsim_trace::RecordSource;

fuzz_target!(|data: &[u8]| {
    for layout in [Layout::Standard, Layout::CloudSuite] {
        let mut r = Reader::from_reader("fuzz", std::io::Cursor::new(data.to_vec()), layout);
        let mut buf = Vec::new();
        while let Ok(n) = r.next_batch(&mut buf, 5) {
            if n == 0 {
                break;
            }
            buf.clear();
        }
    }
});
