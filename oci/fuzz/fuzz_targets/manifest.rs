//! Fuzz target: `Manifest::parse` never panics on any body and content
//! type, and every digest a parsed manifest references is well formed.
#![no_main]

use berth_oci::{Manifest, media_type};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (selector, body) = data.split_first().unwrap_or((&0, &[]));
    let content_type = match selector % 4 {
        0 => None,
        1 => Some(media_type::OCI_MANIFEST),
        2 => Some(media_type::OCI_INDEX),
        _ => Some(media_type::DOCKER_MANIFEST),
    };
    if let Ok(m) = Manifest::parse(body, content_type) {
        for r in m.blobs().unwrap().iter().chain(&m.children().unwrap()) {
            assert!(r.digest.to_string().parse::<berth_oci::Digest>().is_ok());
        }
        let _ = m.subject().unwrap();
        let _ = m.artifact_type();
    }
});
