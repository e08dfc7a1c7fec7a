//! The bearer header and the JWS compact form read before any signature check. Asserts, not
//! just survives: an accepted bearer value is one visible-ASCII token without spaces at its ends
//! or commas; an accepted JWS has three non-empty segments, each the *canonical* base64url of
//! its bytes (re-encoding gives the same text, as the `base64` crate's URL-safe no-pad engine
//! writes it — so one token has one spelling, and a cache or a replay list keyed by its text
//! cannot be dodged), a payload whose `iss` is the issuer returned, a signature checked over
//! exactly `header.payload` and being the third segment's bytes, and never `none` or HS*.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use evs_token_vending::fuzzing;
use libfuzzer_sys::fuzz_target;

fn check_jws(token: &str) {
    let Ok(parts) = fuzzing::jws(token) else {
        return;
    };
    let segments: Vec<&str> = token.split('.').collect();
    assert_eq!(segments.len(), 3, "{token:?}");
    for segment in &segments {
        let bytes = URL_SAFE_NO_PAD
            .decode(segment)
            .expect("an accepted segment is base64url");
        assert_eq!(
            &URL_SAFE_NO_PAD.encode(&bytes),
            segment,
            "non-canonical base64url accepted"
        );
    }
    assert_eq!(URL_SAFE_NO_PAD.decode(segments[1]).unwrap(), parts.payload);
    assert_eq!(&token[..parts.signed_len], format!("{}.{}", segments[0], segments[1]));
    assert_eq!(URL_SAFE_NO_PAD.decode(segments[2]).unwrap(), parts.signature);
    // Read as the sidecar reads it: only `iss`, other members skipped unread.
    #[derive(serde::Deserialize)]
    struct Issuer {
        iss: String,
    }
    let payload: Issuer = serde_json::from_slice(&parts.payload).expect("an accepted payload");
    assert_eq!(payload.iss, parts.issuer);
    assert!(!parts.algorithm.starts_with("HS"), "{}", parts.algorithm);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = fuzzing::bearer(&[data]) {
        assert!(!token.is_empty());
        assert!(
            token
                .bytes()
                .all(|b| (b'!'..=b'~').contains(&b) || b == b' ' || b == b'\t')
        );
        assert!(!token.contains(','));
        assert_eq!(token.trim_matches([' ', '\t']), token);
        check_jws(&token);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        check_jws(text);
    }
});
