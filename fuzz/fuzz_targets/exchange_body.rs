//! `/exchange` bodies: the first byte chooses JSON (odd) or an OAuth form (even). Asserts: a
//! refusal is a 400 or 401 with an OAuth error code — never a 5xx — and an acceptance is one of
//! the grant types the endpoint serves.
#![no_main]

use evs_token_vending::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, body)) = data.split_first() else {
        return;
    };
    match fuzzing::exchange_body(body, choice % 2 == 1) {
        Ok(grant) => assert!(
            ["json", "token_exchange", "jwt_bearer", "client_credentials"].contains(&grant),
            "{grant}"
        ),
        Err((status, error)) => {
            assert!(matches!(status, 400 | 401), "{status} {error}");
            assert!(
                [
                    "invalid_request",
                    "unsupported_grant_type",
                    "invalid_grant",
                    "invalid_client"
                ]
                .contains(&error),
                "{error}"
            );
        }
    }
});
