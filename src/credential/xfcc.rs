//! A parser for Envoy's `x-forwarded-client-cert` header.
//!
//! The header holds one element per proxy hop, separated by `,`; an element is `Key=Value`
//! pairs separated by `;`; keys are case-insensitive; a value containing `,`, `;` or `=` is
//! double-quoted, with `\"` and `\\` escapes inside. This module depends on nothing but `std`,
//! so the fuzz target (`fuzz/`) compiles it on its own.

/// Elements beyond this many are refused: real chains of proxies are short.
pub const MAX_ELEMENTS: usize = 16;
/// Headers longer than this are refused (a URL-encoded certificate with its chain fits easily).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// One hop's element.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XfccElement {
    /// `By`: the proxy's own certificate SAN.
    pub by: Option<String>,
    /// `Hash`: hex SHA-256 of the client certificate's DER.
    pub hash: Option<String>,
    /// `Cert`: the URL-encoded PEM client certificate.
    pub cert: Option<String>,
    /// `Chain`: the URL-encoded PEM chain.
    pub chain: Option<String>,
    /// `Subject`: the subject DN.
    pub subject: Option<String>,
    /// `URI`: URI SANs (one pair each).
    pub uri: Vec<String>,
    /// `DNS`: DNS SANs (one pair each).
    pub dns: Vec<String>,
}

/// Why a header is not a valid XFCC value. The descriptions never quote the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XfccError {
    /// Longer than [`MAX_HEADER_BYTES`].
    TooLarge,
    /// More than [`MAX_ELEMENTS`] elements.
    TooManyElements,
    /// A quote opened and never closed.
    UnbalancedQuote,
    /// Text after a closing quote, or a quote inside an unquoted value.
    StrayQuote,
    /// A pair without `=`, or with an empty key.
    MalformedPair,
    /// An element with no pairs.
    EmptyElement,
    /// `By`, `Hash`, `Cert`, `Chain` or `Subject` twice in one element.
    RepeatedKey,
}

impl XfccError {
    /// What is wrong, in words.
    pub fn describe(self) -> &'static str {
        match self {
            XfccError::TooLarge => "x-forwarded-client-cert is larger than 32 KiB",
            XfccError::TooManyElements => "x-forwarded-client-cert has more than 16 elements",
            XfccError::UnbalancedQuote => "x-forwarded-client-cert has an unbalanced quote",
            XfccError::StrayQuote => "x-forwarded-client-cert has a misplaced quote",
            XfccError::MalformedPair => "x-forwarded-client-cert has a pair without a key",
            XfccError::EmptyElement => "x-forwarded-client-cert has an empty element",
            XfccError::RepeatedKey => "x-forwarded-client-cert repeats a key in one element",
        }
    }
}

/// Parses a whole header into its elements, first hop first.
pub fn parse(header: &str) -> Result<Vec<XfccElement>, XfccError> {
    if header.len() > MAX_HEADER_BYTES {
        return Err(XfccError::TooLarge);
    }
    let mut elements = Vec::new();
    for element in split_top_level(header, ',')? {
        if elements.len() == MAX_ELEMENTS {
            return Err(XfccError::TooManyElements);
        }
        elements.push(parse_element(element)?);
    }
    Ok(elements)
}

fn parse_element(text: &str) -> Result<XfccElement, XfccError> {
    let mut element = XfccElement::default();
    let mut any = false;
    for pair in split_top_level(text, ';')? {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (key, value) = split_pair(pair)?;
        let value = unquote(value.trim())?;
        any = true;
        let single = |slot: &mut Option<String>| {
            if slot.is_some() {
                return Err(XfccError::RepeatedKey);
            }
            *slot = Some(value.clone());
            Ok(())
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "by" => single(&mut element.by)?,
            "hash" => single(&mut element.hash)?,
            "cert" => single(&mut element.cert)?,
            "chain" => single(&mut element.chain)?,
            "subject" => single(&mut element.subject)?,
            "uri" => element.uri.push(value),
            "dns" => element.dns.push(value),
            // Unknown keys are allowed by the format; ignore them.
            _ => {}
        }
    }
    if any {
        Ok(element)
    } else {
        Err(XfccError::EmptyElement)
    }
}

/// Byte offsets of `separator` outside quotes, checking that quotes balance.
fn top_level_positions(text: &str, separator: char) -> Result<Vec<usize>, XfccError> {
    let mut positions = Vec::new();
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == separator && !quoted {
            positions.push(i);
        }
    }
    if quoted || escaped {
        return Err(XfccError::UnbalancedQuote);
    }
    Ok(positions)
}

/// Splits at `separator` outside quotes.
fn split_top_level(text: &str, separator: char) -> Result<Vec<&str>, XfccError> {
    let mut parts = Vec::new();
    let mut start = 0;
    for i in top_level_positions(text, separator)? {
        parts.push(&text[start..i]);
        start = i + separator.len_utf8();
    }
    parts.push(&text[start..]);
    Ok(parts)
}

/// `Key=Value` at the first `=` outside quotes.
fn split_pair(pair: &str) -> Result<(&str, &str), XfccError> {
    let i = *top_level_positions(pair, '=')?
        .first()
        .ok_or(XfccError::MalformedPair)?;
    let key = &pair[..i];
    if key.trim().is_empty() || key.contains('"') {
        return Err(XfccError::MalformedPair);
    }
    Ok((key, &pair[i + 1..]))
}

/// Removes surrounding quotes and resolves `\"` and `\\`.
fn unquote(value: &str) -> Result<String, XfccError> {
    let Some(inner) = value.strip_prefix('"') else {
        if value.contains('"') {
            return Err(XfccError::StrayQuote);
        }
        return Ok(value.to_owned());
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => out.push(next),
                None => return Err(XfccError::UnbalancedQuote),
            },
            '"' => {
                return if chars.as_str().is_empty() {
                    Ok(out)
                } else {
                    Err(XfccError::StrayQuote)
                };
            }
            other => out.push(other),
        }
    }
    Err(XfccError::UnbalancedQuote)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_style_header_with_two_hops_and_quoted_values() {
        let header = r#"By=spiffe://mesh/gw;Hash=abc;Subject="CN=orders,O=Example";URI=spiffe://mesh/orders;DNS=a.example;DNS=b.example,by=spiffe://mesh/sidecar;HASH=def;cert="-----BEGIN%20CERTIFICATE-----%0A";Subject="CN=a \"quoted\" name""#;
        let elements = parse(header).unwrap();
        assert_eq!(elements.len(), 2);
        assert_eq!(elements[0].subject.as_deref(), Some("CN=orders,O=Example"));
        assert_eq!(elements[0].dns, vec!["a.example", "b.example"]);
        assert_eq!(elements[1].hash.as_deref(), Some("def"));
        assert_eq!(
            elements[1].cert.as_deref(),
            Some("-----BEGIN%20CERTIFICATE-----%0A")
        );
        assert_eq!(
            elements[1].subject.as_deref(),
            Some(r#"CN=a "quoted" name"#)
        );
    }

    #[test]
    fn malformed_headers_are_refused_with_a_reason() {
        assert_eq!(
            parse(r#"Hash=abc;Subject="CN=x"#),
            Err(XfccError::UnbalancedQuote)
        );
        assert_eq!(parse("Hash"), Err(XfccError::MalformedPair));
        assert_eq!(parse("=abc"), Err(XfccError::MalformedPair));
        assert_eq!(parse(r#"Hash="a"b"#), Err(XfccError::StrayQuote));
        assert_eq!(parse("Hash=a;Hash=b"), Err(XfccError::RepeatedKey));
        assert_eq!(parse("Hash=a,,Hash=b"), Err(XfccError::EmptyElement));
        let hundred = vec!["Hash=a"; 100].join(",");
        assert_eq!(parse(&hundred), Err(XfccError::TooManyElements));
        let huge = format!("Cert={}", "a".repeat(64 * 1024));
        assert_eq!(parse(&huge), Err(XfccError::TooLarge));
    }

    #[test]
    fn an_empty_cert_is_parsed_as_empty_for_the_caller_to_refuse() {
        let elements = parse("Hash=abc;Cert=;URI=").unwrap();
        assert_eq!(elements[0].cert.as_deref(), Some(""));
        assert_eq!(elements[0].uri, vec![""]);
    }
}
