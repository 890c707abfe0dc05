//! Fuzz target: `sniff` reads bytes an upstream chose; it must answer for any of them
//! and never panic (a panic on `/m/` would be a remote crash of the request task).
#![no_main]

use libfuzzer_sys::fuzz_target;
use medialink::sniff::{MediaType, sniff};

fuzz_target!(|data: &[u8]| {
    let verdict = sniff(data);
    if let Ok(media) = &verdict {
        // Whatever it names is served under its MIME type: never a document type,
        // and the name must come back as the same type (the store keeps the MIME).
        let mime = media.mime();
        assert!(
            mime.starts_with("image/") || mime.starts_with("audio/") || mime == "video/mp4",
            "{media:?}"
        );
        assert_eq!(MediaType::from_mime(mime), Some(*media));
    }
    // Same bytes, same verdict: the cache and the policy may sniff twice.
    assert_eq!(format!("{verdict:?}"), format!("{:?}", sniff(data)));
});
