//! Which URLs the sidecar may name or fetch: one rule for every outbound fetch (IdP discovery,
//! JWKS) and for URLs that only name something (the minted issuer).
//!
//! Fetches go to `https://` hosts, or to plain `http://` on loopback (tests, a local IdP).
//! URLs carrying credentials (`user@host`) are refused everywhere.

use std::net::IpAddr;

/// Why a URL is refused (the config key is said by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UrlError {
    /// No `scheme://`.
    #[error("must be an absolute URL")]
    NotAbsolute,
    /// `user@host`.
    #[error("must not carry credentials")]
    Credentials,
    /// `https://` with nothing after it.
    #[error("has no host")]
    NoHost,
    /// Neither http nor https.
    #[error("must be an http(s) URL")]
    NotHttp,
    /// A fetch over anything but https (or loopback http).
    #[error("must be an https:// URL")]
    NotHttps,
    /// Plain http to a host off loopback.
    #[error("must use https:// (plain http:// only for loopback hosts)")]
    PlainHttp,
}

/// A URL that names something (the minted issuer): any absolute http(s) URL.
pub(crate) fn check_url(text: &str) -> Result<(), UrlError> {
    let (scheme, _) = split_url(text)?;
    if scheme != "https" && scheme != "http" {
        return Err(UrlError::NotHttp);
    }
    Ok(())
}

/// A URL that is fetched: https, or plain http to a loopback host only.
pub(crate) fn check_fetch_url(text: &str) -> Result<(), UrlError> {
    let (scheme, host) = split_url(text)?;
    match scheme.as_str() {
        "https" => Ok(()),
        "http" if is_loopback_host(&host) => Ok(()),
        "http" => Err(UrlError::PlainHttp),
        _ => Err(UrlError::NotHttps),
    }
}

/// Splits `scheme://host[:port]/…` into the lowercase scheme and the host.
fn split_url(text: &str) -> Result<(String, String), UrlError> {
    let (scheme, rest) = text.split_once("://").ok_or(UrlError::NotAbsolute)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(UrlError::Credentials);
    }
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or("").to_owned()
    } else {
        authority.split(':').next().unwrap_or("").to_owned()
    };
    if host.is_empty() {
        return Err(UrlError::NoHost);
    }
    Ok((scheme.to_ascii_lowercase(), host.to_ascii_lowercase()))
}

/// `localhost`, 127.0.0.0/8 or ::1.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_http_is_allowed_for_fetching_and_nothing_else_is() {
        assert!(check_fetch_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_fetch_url("http://localhost/jwks").is_ok());
        assert!(check_fetch_url("http://[::1]:80/jwks").is_ok());
        assert!(check_fetch_url("https://idp.example.com/jwks").is_ok());
        assert!(check_fetch_url("http://127.0.0.1.evil.com/jwks").is_err());
        assert!(check_fetch_url("http://idp.example.com/jwks").is_err());
        assert!(check_fetch_url("https://user:pw@idp.example.com").is_err());
        assert!(check_fetch_url("ftp://idp.example.com").is_err());
        assert!(check_fetch_url("idp.example.com").is_err());
    }

    #[test]
    fn a_named_url_may_be_plain_http_but_must_be_absolute() {
        assert!(check_url("http://tv.example.com").is_ok());
        assert!(check_url("tv.example.com").is_err());
        assert!(check_url("https://").is_err());
    }
}
