//! LDAP filter templates filled with caller-controlled values. Asserts, for the value put in
//! `(uid={subject})`: the escaped text holds no unescaped `*`, `(`, `)`, `\` or NUL (nor any
//! byte outside printable ASCII), so a value can never widen the search; and the server's
//! unescaping (RFC 4515 `\XX`) gives back exactly the value. Any template is filled without
//! panicking, and one without `{` comes back unchanged.
#![no_main]

use evs_token_vending::fuzzing;
use libfuzzer_sys::fuzz_target;

/// RFC 4515 unescaping, as a directory server does it.
fn unescape(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (template, value) = text.split_once('\0').unwrap_or(("(uid={subject})", text));
    let filled = fuzzing::ldap_filter("(uid={subject})", &[("subject", value)]);
    let escaped = filled
        .strip_prefix("(uid=")
        .and_then(|rest| rest.strip_suffix(')'))
        .expect("the template's text is kept");
    let bytes = escaped.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                assert!(
                    i + 2 < bytes.len()
                        && bytes[i + 1].is_ascii_hexdigit()
                        && bytes[i + 2].is_ascii_hexdigit(),
                    "a lone backslash in {escaped:?}"
                );
                i += 3;
            }
            b'*' | b'(' | b')' | 0 => panic!("unescaped special byte in {escaped:?}"),
            b if !(0x20..0x7f).contains(&b) => panic!("raw byte {b:#x} in {escaped:?}"),
            _ => i += 1,
        }
    }
    assert_eq!(unescape(escaped), value.as_bytes());
    let any = fuzzing::ldap_filter(template, &[("subject", value), ("group", value)]);
    if !template.contains('{') {
        assert_eq!(any, template);
    }
});
