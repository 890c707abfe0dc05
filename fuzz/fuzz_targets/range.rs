//! Fuzz target: `Range` headers come from anyone on `/m/`; a `Partial` answer must
//! always lie inside the body, or the slice that serves it would panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medialink::media::range::{RangeReq, parse};

fuzz_target!(|input: (&str, u64, bool)| {
    let (header, len, present) = input;
    // Small lengths too, where the edge cases live (0, 1, a few bytes).
    for len in [len, len % 64] {
        match parse(present.then_some(header), len) {
            RangeReq::Partial { start, end } => {
                assert!(start <= end && end < len, "{header:?} len {len}: {start}-{end}");
            }
            RangeReq::Full | RangeReq::Unsatisfiable => {}
        }
        if !present {
            assert_eq!(parse(None, len), RangeReq::Full);
        }
    }
});
