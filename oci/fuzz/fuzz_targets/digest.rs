//! Fuzz target: `Digest` parsing never panics, accepts only what prints
//! back identically, and the encoded part of anything accepted is lowercase
//! hex (so it is safe as a path component).
#![no_main]

use berth_oci::Digest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = s.parse::<Digest>() {
        assert_eq!(d.to_string(), s);
        assert!(d.hex().bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(d.hex().len(), d.algorithm().hex_len());
    }
});
