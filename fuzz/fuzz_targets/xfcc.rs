//! Fuzzes the XFCC parser: any input must parse or be refused, never panic, and every element
//! it returns must respect the parser's limits. The parser depends on nothing but `std`, so it
//! is compiled here on its own rather than with the whole sidecar.
#![no_main]

#[path = "../../src/credential/xfcc.rs"]
#[allow(dead_code)]
mod xfcc;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(elements) = xfcc::parse(text) {
        assert!(elements.len() <= xfcc::MAX_ELEMENTS);
        assert!(text.len() <= xfcc::MAX_HEADER_BYTES);
    }
});
