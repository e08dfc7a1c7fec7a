//! The `k8s-aws-v1.` token: base64url, then a presigned STS URL and its query. The fuzzer
//! mutates the URL itself (the target encodes it) unless the input already is a token.
//! Asserts: an accepted token decodes to the URL returned; that URL is HTTPS to an AWS STS host
//! of the `aws` partition (the default settings), path `/`, no user information; and its query,
//! read independently with `url::form_urlencoded`, names each parameter once (case-insensitively)
//! with `Action=GetCallerIdentity`; the window ends within 15 minutes of `now` plus the leeway.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use evs_token_vending::fuzzing;
use libfuzzer_sys::fuzz_target;

const PREFIX: &str = "k8s-aws-v1.";
/// 2023-11-14T22:13:20Z: seeds are signed around it.
const NOW: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let token = match std::str::from_utf8(data) {
        Ok(text) if text.starts_with(PREFIX) => text.to_owned(),
        _ => format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(data)),
    };
    let Ok(accepted) = fuzzing::iam_token(&token, NOW) else {
        return;
    };
    let decoded = URL_SAFE_NO_PAD.decode(&token[PREFIX.len()..]).unwrap();
    assert_eq!(decoded, accepted.url.as_bytes());
    let url = url::Url::parse(&accepted.url).unwrap();
    assert_eq!(url.scheme(), "https", "{url}");
    let host = url.host_str().unwrap().to_ascii_lowercase();
    assert!(
        host.starts_with("sts.")
            && (host.ends_with(".amazonaws.com") || host.ends_with(".api.aws")),
        "{host}"
    );
    assert_eq!(accepted.partition, Some("aws"));
    assert!(url.username().is_empty() && url.password().is_none());
    assert_eq!(url.path(), "/");
    let mut names: Vec<String> = Vec::new();
    let mut action = None;
    for (name, value) in url::form_urlencoded::parse(url.query().unwrap_or("").as_bytes()) {
        let lower = name.to_ascii_lowercase();
        assert!(!names.contains(&lower), "{lower} twice in an accepted URL");
        if lower == "action" {
            action = Some(value.into_owned());
        }
        names.push(lower);
    }
    assert_eq!(action.as_deref(), Some("GetCallerIdentity"));
    assert!(accepted.window_end > NOW && accepted.window_end <= NOW + 900 + 300);
});
