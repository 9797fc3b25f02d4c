//! Fuzz target: `Reference` parsing never panics, and whatever parses
//! prints back to a string that parses to the same reference, with a
//! repository name that passes the distribution-spec grammar.
#![no_main]

use berth_oci::{Reference, validate_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = s.parse::<Reference>() {
        assert!(validate_name(r.repository()).is_ok());
        let again: Reference = r.to_string().parse().expect("a printed reference parses");
        assert_eq!(again, r);
    }
});
