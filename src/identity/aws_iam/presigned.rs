//! The rules a `k8s-aws-v1.` token must meet before anything is sent to STS: its size, the
//! URL's scheme, host, port and path, the query's parameter names (each once, in any letter
//! case — CVE-2022-2385), the action, the signed `x-k8s-aws-id`, and the signing time.
//!
//! Nothing here contacts anything: a token that breaks a rule costs no STS call.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use url::Url;

use crate::identity::AuthError;

/// What every such token starts with.
pub(crate) const TOKEN_PREFIX: &str = "k8s-aws-v1.";
/// Longest token accepted; real ones are about 1–2 KiB with a session token.
const MAX_TOKEN_BYTES: usize = 4096;
/// How long after its `X-Amz-Date` a token is accepted (and STS honours it): 15 minutes.
pub(crate) const WINDOW_SECONDS: u64 = 15 * 60;
/// A signer's clock may run this far ahead of ours.
const CLOCK_AHEAD_LEEWAY: u64 = 60;
/// The query parameters a presigned GetCallerIdentity carries, lowercase.
const ALLOWED_PARAMETERS: &[&str] = &[
    "action",
    "version",
    "x-amz-algorithm",
    "x-amz-credential",
    "x-amz-date",
    "x-amz-expires",
    "x-amz-security-token",
    "x-amz-signature",
    "x-amz-signedheaders",
];
/// Present in every valid token.
const REQUIRED_PARAMETERS: &[&str] = &[
    "action",
    "x-amz-algorithm",
    "x-amz-credential",
    "x-amz-date",
    "x-amz-expires",
    "x-amz-signature",
    "x-amz-signedheaders",
];

/// A token that passed every local rule: the URL to send to STS, byte for byte as signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PresignedRequest {
    /// The presigned URL.
    pub url: String,
    /// Unix time at which STS stops honouring it; minted tokens never outlive it.
    pub window_end: u64,
    /// The partition of the AWS STS host it names (`None`: a configured endpoint).
    pub partition: Option<&'static str>,
}

/// The STS endpoints a token may point at.
#[derive(Debug, Clone)]
pub(crate) struct StsEndpoints {
    /// `(scheme, host, port)` of each configured endpoint.
    configured: Vec<(String, String, Option<u16>)>,
    /// Whether AWS's own regional hosts are accepted too (`aws_iam.sts_endpoints` unset).
    aws_hosts: bool,
    /// The partitions whose AWS hosts may be called.
    partitions: Vec<String>,
}

impl Default for StsEndpoints {
    fn default() -> Self {
        Self {
            configured: Vec::new(),
            aws_hosts: true,
            partitions: vec!["aws".to_owned()],
        }
    }
}

impl StsEndpoints {
    /// From `aws_iam:` (already validated): AWS's hosts of the served partitions plus
    /// `sts_endpoint`, or exactly `sts_endpoints` when that is set.
    pub(crate) fn new(config: &super::AwsIamConfig) -> Self {
        let parse = |text: &String| {
            Url::parse(text).ok().map(|url| {
                let host = url.host_str().unwrap_or("").to_ascii_lowercase();
                (url.scheme().to_owned(), host, url.port())
            })
        };
        let (configured, aws_hosts) = match &config.sts_endpoints {
            Some(only) => (only.iter().filter_map(parse).collect(), false),
            None => (config.sts_endpoint.iter().filter_map(parse).collect(), true),
        };
        Self {
            configured,
            aws_hosts,
            partitions: config.partitions.clone(),
        }
    }

    /// The partition the token's STS host belongs to (`None` for a configured endpoint, whose
    /// answers are checked against every served partition), or why it may not be called.
    fn allows(&self, url: &Url) -> Result<Option<&'static str>, &'static str> {
        let host = url.host_str().unwrap_or("").to_ascii_lowercase();
        let configured = self
            .configured
            .iter()
            .any(|(scheme, h, port)| url.scheme() == scheme && host == *h && url.port() == *port);
        if configured {
            return Ok(None);
        }
        if !self.aws_hosts {
            return Err("the URL's host is not one of aws_iam.sts_endpoints");
        }
        if url.scheme() != "https" {
            return Err("the URL is not https://");
        }
        if url.port().is_some() {
            return Err("the URL names a port");
        }
        let partition =
            aws_sts_partition(&host).ok_or("the URL's host is not an AWS STS endpoint")?;
        if !self.partitions.iter().any(|p| p == partition) {
            return Err("the URL's STS host is in a partition this sidecar does not serve");
        }
        Ok(Some(partition))
    }
}

/// The partition of an AWS STS host: `sts.amazonaws.com`,
/// `sts[-fips].<region>.amazonaws.com[.cn]`, `sts[-fips].<region>.api.aws`; `None` for any
/// other host. `us-gov-*` regions are `aws-us-gov`, `.amazonaws.com.cn` hosts `aws-cn`.
fn aws_sts_partition(host: &str) -> Option<&'static str> {
    if host == "sts.amazonaws.com" {
        return Some("aws");
    }
    let (service, rest) = host.split_once('.')?;
    if service != "sts" && service != "sts-fips" {
        return None;
    }
    let (region, domain) = rest.split_once('.')?;
    let region_ok = (4..=32).contains(&region.len())
        && region.starts_with(|c: char| c.is_ascii_lowercase())
        && region.ends_with(|c: char| c.is_ascii_digit())
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !region_ok {
        return None;
    }
    match domain {
        "amazonaws.com.cn" if region.starts_with("cn-") => Some("aws-cn"),
        "amazonaws.com" | "api.aws" if region.starts_with("us-gov-") => Some("aws-us-gov"),
        "amazonaws.com" | "api.aws" if !region.starts_with("cn-") => Some("aws"),
        _ => None,
    }
}

/// Applies every local rule to `token` (the whole bearer value, prefix included).
pub(crate) fn parse(
    token: &str,
    endpoints: &StsEndpoints,
    now: u64,
) -> Result<PresignedRequest, AuthError> {
    let refuse = AuthError::AwsToken;
    if token.len() > MAX_TOKEN_BYTES {
        return Err(refuse("larger than 4 KiB"));
    }
    let encoded = token
        .strip_prefix(TOKEN_PREFIX)
        .ok_or(refuse("missing the k8s-aws-v1. prefix"))?;
    // RawURL only, as aws-iam-authenticator decodes it: padded variants of one token would
    // each cost an STS call.
    let decoded = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| refuse("not base64url without padding"))?;
    let text = String::from_utf8(decoded).map_err(|_| refuse("not a URL"))?;
    let url = Url::parse(&text).map_err(|_| refuse("not a URL"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse("the URL carries user information"));
    }
    let partition = endpoints.allows(&url).map_err(refuse)?;
    if url.path() != "/" || url.fragment().is_some() {
        return Err(refuse("the URL's path is not /"));
    }

    let mut seen: Vec<(String, String)> = Vec::new();
    for (name, value) in url.query_pairs() {
        let lower = name.to_ascii_lowercase();
        if !ALLOWED_PARAMETERS.contains(&lower.as_str()) {
            return Err(refuse(
                "the URL has a query parameter GetCallerIdentity does not take",
            ));
        }
        if seen.iter().any(|(other, _)| *other == lower) {
            return Err(refuse("a query parameter appears twice"));
        }
        seen.push((lower, value.into_owned()));
    }
    let get = |name: &str| {
        seen.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if REQUIRED_PARAMETERS.iter().any(|name| get(name).is_none()) {
        return Err(refuse("the URL lacks a presigned request's parameters"));
    }
    if get("action") != Some("GetCallerIdentity") {
        return Err(refuse("the action is not GetCallerIdentity"));
    }
    if get("x-amz-algorithm") != Some("AWS4-HMAC-SHA256") {
        return Err(refuse("the signature algorithm is not AWS4-HMAC-SHA256"));
    }
    let signs_server_id = get("x-amz-signedheaders")
        .unwrap_or("")
        .split(';')
        .any(|h| h.eq_ignore_ascii_case("x-k8s-aws-id"));
    if !signs_server_id {
        return Err(refuse("x-k8s-aws-id is not among the signed headers"));
    }
    // Checked, not used: STS honours the request for the window from X-Amz-Date.
    get("x-amz-expires")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v <= WINDOW_SECONDS)
        .ok_or(refuse("X-Amz-Expires is not an integer from 0 to 900"))?;
    let signed_at = get("x-amz-date")
        .and_then(parse_amz_date)
        .ok_or(refuse("X-Amz-Date is malformed"))?;
    if signed_at > now + CLOCK_AHEAD_LEEWAY {
        return Err(refuse("X-Amz-Date is in the future"));
    }
    let window_end = signed_at + WINDOW_SECONDS;
    if window_end <= now {
        return Err(refuse("expired: signed more than 15 minutes ago"));
    }
    Ok(PresignedRequest {
        url: text,
        window_end,
        partition,
    })
}

/// `YYYYMMDDTHHMMSSZ` as Unix seconds.
fn parse_amz_date(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = text.get(range)?;
        digits
            .bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
    let (hour, minute, second) = (number(9..11)?, number(11..13)?, number(13..15)?);
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYYMMDDTHHMMSSZ` of Unix seconds (the inverse of [`parse_amz_date`], for tests and
/// the `iam-token` client's messages).
#[cfg(test)]
fn format_amz_date(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_000_000;

    fn url_with(host: &str, query: &str) -> String {
        format!("{host}/?{query}")
    }

    fn good_query(date: &str) -> String {
        format!(
            "Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAEXAMPLE%2F20261123%2Fus-east-1%2Fsts%2Faws4_request\
             &X-Amz-Date={date}&X-Amz-Expires=60&X-Amz-SignedHeaders=host%3Bx-k8s-aws-id\
             &X-Amz-Signature=abc123"
        )
    }

    fn token(url: &str) -> String {
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(url))
    }

    fn config(extra: &str) -> crate::identity::AwsIamConfig {
        serde_norway::from_str(extra).unwrap()
    }

    fn check(url: &str) -> Result<PresignedRequest, AuthError> {
        let endpoints = StsEndpoints::new(&config(
            "{ sts_endpoint: 'http://127.0.0.1:4566', partitions: [aws, aws-cn, aws-us-gov] }",
        ));
        parse(&token(url), &endpoints, NOW)
    }

    fn reason(url: &str) -> &'static str {
        match check(url) {
            Err(AuthError::AwsToken(reason)) => reason,
            other => panic!("{url}: {other:?}"),
        }
    }

    #[test]
    fn amz_dates_round_trip() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20261123T140502Z"), Some(1_795_442_702));
        assert_eq!(format_amz_date(1_795_442_702), "20261123T140502Z");
        for bad in [
            "2026-11-23T14:05:02Z",
            "20261323T140502Z",
            "20261123T140502",
            "",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_fresh_token_for_an_aws_endpoint_or_the_configured_one_passes() {
        let date = format_amz_date(NOW - 60);
        for host in [
            "https://sts.amazonaws.com",
            "https://sts.eu-west-1.amazonaws.com",
            "https://sts-fips.us-east-1.amazonaws.com",
            "https://sts.us-east-1.api.aws",
            "https://sts.cn-north-1.amazonaws.com.cn",
            "https://STS.AMAZONAWS.COM",
            "http://127.0.0.1:4566",
        ] {
            let url = url_with(host, &good_query(&date));
            let request = check(&url).unwrap_or_else(|e| panic!("{host}: {e}"));
            assert_eq!(request.url, url);
            assert_eq!(request.window_end, NOW - 60 + WINDOW_SECONDS);
        }
    }

    #[test]
    fn every_broken_rule_has_its_reason() {
        let date = format_amz_date(NOW - 60);
        let q = good_query(&date);
        let aws = "https://sts.amazonaws.com";
        let cases = [
            (
                url_with("https://sts.amazonaws.com.evil.test", &q),
                "not an AWS STS endpoint",
            ),
            (
                format!("https://evil.test/sts.amazonaws.com?{q}"),
                "not an AWS STS endpoint",
            ),
            (
                url_with("https://sts.amazonaws.com@evil.test", &q),
                "user information",
            ),
            (url_with("http://sts.amazonaws.com", &q), "not https"),
            (url_with("http://10.0.0.1:4566", &q), "not https"),
            (
                url_with("https://sts.amazonaws.com:8443", &q),
                "names a port",
            ),
            (format!("{aws}/x?{q}"), "path is not /"),
            (
                url_with(aws, &q.replace("GetCallerIdentity", "AssumeRole")),
                "not GetCallerIdentity",
            ),
            (
                url_with(aws, &format!("{q}&x-amz-credential=AKIAOTHER")),
                "appears twice",
            ),
            (
                url_with(aws, &format!("{q}&Action=GetCallerIdentity")),
                "appears twice",
            ),
            (url_with(aws, &format!("{q}&RoleArn=x")), "does not take"),
            (
                url_with(aws, &q.replace("host%3Bx-k8s-aws-id", "host")),
                "x-k8s-aws-id is not",
            ),
            (
                url_with(aws, &q.replace("X-Amz-Expires=60", "X-Amz-Expires=9999")),
                "X-Amz-Expires",
            ),
            (
                url_with(aws, &q.replace("X-Amz-Expires=60", "X-Amz-Expires=-1")),
                "X-Amz-Expires",
            ),
            (
                url_with(aws, &good_query(&format_amz_date(NOW - 20 * 60))),
                "expired",
            ),
            (
                url_with(aws, &good_query(&format_amz_date(NOW + 600))),
                "in the future",
            ),
            (
                url_with(aws, &good_query("2026-11-23")),
                "X-Amz-Date is malformed",
            ),
            (
                url_with(aws, &q.replace("&X-Amz-Signature=abc123", "")),
                "lacks",
            ),
        ];
        for (url, expected) in cases {
            let got = reason(&url);
            assert!(got.contains(expected), "{url}: {got}");
        }
    }

    #[test]
    fn encodings_sizes_and_prefixes_are_checked_first() {
        let endpoints = StsEndpoints::default();
        let refused = |t: &str| parse(t, &endpoints, NOW).unwrap_err();
        assert_eq!(
            refused("k8s-aws-v1.***"),
            AuthError::AwsToken("not base64url without padding")
        );
        // Upstream decodes RawURL only: `=` padding is refused, not trimmed.
        let date = format_amz_date(NOW - 60);
        let padded = format!(
            "{}==",
            token(&url_with("https://sts.amazonaws.com", &good_query(&date)))
        );
        assert_eq!(
            refused(&padded),
            AuthError::AwsToken("not base64url without padding")
        );
        assert_eq!(
            refused(&format!(
                "{TOKEN_PREFIX}{}",
                URL_SAFE_NO_PAD.encode("not a url")
            )),
            AuthError::AwsToken("not a URL")
        );
        assert_eq!(
            refused(&format!("{TOKEN_PREFIX}{}", "A".repeat(5000))),
            AuthError::AwsToken("larger than 4 KiB")
        );
    }

    #[test]
    fn hosts_are_limited_to_the_served_partitions_and_the_configured_list() {
        let date = format_amz_date(NOW - 60);
        let q = good_query(&date);
        let at = |endpoints: &StsEndpoints, host: &str| {
            parse(&token(&url_with(host, &q)), endpoints, NOW).map(|r| r.partition)
        };
        let default = StsEndpoints::new(&config("{}"));
        assert_eq!(
            at(&default, "https://sts.eu-west-1.amazonaws.com"),
            Ok(Some("aws"))
        );
        for other in [
            "https://sts.cn-north-1.amazonaws.com.cn",
            "https://sts.us-gov-west-1.amazonaws.com",
        ] {
            assert!(
                matches!(at(&default, other), Err(AuthError::AwsToken(r)) if r.contains("partition")),
                "{other}"
            );
        }
        assert_eq!(
            at(&default, "https://sts.cn-north-1.amazonaws.com"),
            Err(AuthError::AwsToken(
                "the URL's host is not an AWS STS endpoint"
            ))
        );
        let china = StsEndpoints::new(&config("{ partitions: [aws-cn] }"));
        assert_eq!(
            at(&china, "https://sts.cn-north-1.amazonaws.com.cn"),
            Ok(Some("aws-cn"))
        );
        let only = StsEndpoints::new(&config(
            "{ sts_endpoints: ['https://sts.eu-west-1.amazonaws.com'] }",
        ));
        assert_eq!(at(&only, "https://sts.eu-west-1.amazonaws.com"), Ok(None));
        assert_eq!(
            at(&only, "https://sts.us-east-1.amazonaws.com"),
            Err(AuthError::AwsToken(
                "the URL's host is not one of aws_iam.sts_endpoints"
            ))
        );
    }
}
