//! The grants file. Asserts: a file that parses renders back (as YAML, the way a grants file is
//! written) to text that parses to the same grants; a refusal names the file.
#![no_main]

use evs_token_vending::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match fuzzing::grants_file(text) {
        Ok(grants) => {
            let rendered = fuzzing::render_grants_file(&grants);
            let again = fuzzing::grants_file(&rendered)
                .unwrap_or_else(|e| panic!("rendered grants do not parse: {e}\n{rendered}"));
            assert_eq!(again, grants, "{rendered}");
        }
        Err(reason) => assert!(reason.0.contains("grants.yaml"), "{reason}"),
    }
});
