//! The config file, through the loader `serve` and `check-config` use. Asserts: a refused config
//! lists at least one problem, each naming what it is about.
#![no_main]

use evs_token_vending::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(problems) = fuzzing::config(text) {
        assert!(!problems.is_empty());
        for problem in &problems {
            assert!(problem.len() > 2, "{problem:?}");
        }
    }
});
