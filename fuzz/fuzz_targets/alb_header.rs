//! AWS ALB's `x-amzn-mtls-clientcert` header (URL-encoded PEM). Asserts: a refusal's reason
//! carries no certificate material (no PEM armour, no run of 16 or more base64 characters: the
//! reasons are fixed words), and an accepted value yields a non-empty DER.
#![no_main]

use evs_token_vending::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match fuzzing::alb_certificate(data) {
        Ok(der) => assert!(!der.is_empty()),
        Err(reason) => {
            assert!(!reason.0.contains("-----"), "{reason}");
            let longest_base64_run = reason
                .0
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '='))
                .map(str::len)
                .max()
                .unwrap_or(0);
            assert!(longest_base64_run < 16, "{reason}");
        }
    }
});
