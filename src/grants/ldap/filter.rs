//! LDAP filters from templates: `{name}` placeholders filled with values escaped per RFC 4515.

/// `template` with each `{name}` replaced by its value, escaped per RFC 4515.
pub(crate) fn fill_filter(template: &str, values: &[(&str, &str)]) -> String {
    let mut filter = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        filter.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after.find('}').and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, value)| (close, *value))
        });
        match value {
            Some((close, value)) => {
                escape_into(&mut filter, value);
                rest = &after[close + 1..];
            }
            None => {
                filter.push('{');
                rest = after;
            }
        }
    }
    filter.push_str(rest);
    filter
}

/// RFC 4515 assertion-value escaping: `*`, `(`, `)`, `\` and NUL always, and every byte
/// outside printable ASCII too (valid as escaped UTF-8, and nothing odd reaches the server).
fn escape_into(filter: &mut String, value: &str) {
    for byte in value.bytes() {
        if matches!(byte, b'*' | b'(' | b')' | b'\\') || !(0x20..0x7f).contains(&byte) {
            filter.push_str(&format!("\\{byte:02x}"));
        } else {
            filter.push(byte as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_are_escaped_so_an_identity_cannot_widen_the_search() {
        let template = "(|(uid={sub})(mail={email}))";
        let fill =
            |sub: &str, email: &str| fill_filter(template, &[("sub", sub), ("email", email)]);
        assert_eq!(
            fill("alice", "a@example.com"),
            "(|(uid=alice)(mail=a@example.com))"
        );
        assert_eq!(fill("*", ""), r"(|(uid=\2a)(mail=))");
        assert_eq!(fill("x)(uid=*", "y"), r"(|(uid=x\29\28uid=\2a)(mail=y))");
        assert_eq!(fill("a\0b", "c\\d"), r"(|(uid=a\00b)(mail=c\5cd))");
        assert_eq!(fill("é", "\u{7f}"), r"(|(uid=\c3\a9)(mail=\7f))");
        // An unknown placeholder is left as written (check-config refuses it).
        assert_eq!(fill_filter("(cn={x})", &[]), "(cn={x})");
    }
}
