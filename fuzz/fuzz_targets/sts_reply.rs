//! STS's GetCallerIdentity reply and the ARN it names. Asserts, for any reply that parses: the
//! ARN's canonical form is idempotent (canonicalising it again gives itself), never changes the
//! account or the partition the reply's ARN names, and an assumed-role session becomes its
//! role in the same account; `UserId` checks never panic. Text inputs are also tried as ARNs.
#![no_main]

use evs_token_vending::fuzzing;
use libfuzzer_sys::fuzz_target;

fn check_arn(arn: &str, user_id: &str) {
    let _ = fuzzing::user_id_fits(user_id, arn);
    let Ok(principal) = fuzzing::canonical_arn(arn) else {
        return;
    };
    let fields: Vec<&str> = arn.splitn(6, ':').collect();
    assert_eq!(fields[1], principal.partition, "{arn}");
    assert_eq!(fields[4], principal.account, "{arn}");
    let again = fuzzing::canonical_arn(&principal.canonical_arn).expect("a canonical ARN is one");
    assert_eq!(again, principal, "not idempotent: {arn}");
    assert!(principal.canonical_arn.starts_with(&format!(
        "arn:{}:iam::{}:",
        principal.partition, principal.account
    )));
}

fuzz_target!(|data: &[u8]| {
    let (_throttled, identity) = fuzzing::sts_reply(data);
    if let Ok((_account, arn, user_id)) = identity {
        check_arn(&arn, &user_id);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let (arn, user_id) = text.split_once('\n').unwrap_or((text, ""));
        check_arn(arn, user_id);
    }
});
