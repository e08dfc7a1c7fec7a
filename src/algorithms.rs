//! Which signature algorithms and key sizes the sidecar accepts, inbound and outbound: one
//! list for each fact, used by config validation, by JWKS parsing and by key loading.

use jsonwebtoken::Algorithm;

/// RSA keys shorter than this are refused, for signing and for verifying.
pub(crate) const MIN_RSA_BITS: usize = 2048;

/// Algorithms an RSA public key can verify.
pub(crate) const RSA_FAMILY: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// Algorithms of the elliptic-curve keys accepted from issuers: P-256, P-384 and Ed25519.
pub(crate) const CURVE_FAMILY: &[Algorithm] =
    &[Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA];

/// What an issuer may use when `trust[].algorithms` is not set: every asymmetric algorithm
/// the sidecar can verify.
pub(crate) fn default_inbound() -> Vec<Algorithm> {
    RSA_FAMILY.iter().chain(CURVE_FAMILY).copied().collect()
}

/// Shared-secret algorithms: never accepted from an issuer that publishes public keys.
pub(crate) fn is_shared_secret(algorithm: Algorithm) -> bool {
    matches!(
        algorithm,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    )
}

/// Why an issuer's `algorithms` entry is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RefusedAlgorithm {
    /// `none`.
    #[error("`none` is never accepted")]
    None,
    /// Not a JWS algorithm name.
    #[error("unknown algorithm `{0}`")]
    Unknown(String),
    /// HS256/384/512.
    #[error("`{0}` is a shared-secret algorithm; JWKS issuers publish public keys")]
    SharedSecret(String),
}

/// Parses an issuer's allow-list; empty means [`default_inbound`]. `none` and HMAC are refused
/// because a JWKS carries public keys.
pub(crate) fn parse_inbound(names: &[String]) -> Result<Vec<Algorithm>, RefusedAlgorithm> {
    if names.is_empty() {
        return Ok(default_inbound());
    }
    names
        .iter()
        .map(|name| {
            if name.eq_ignore_ascii_case("none") {
                return Err(RefusedAlgorithm::None);
            }
            let algorithm = name
                .parse::<Algorithm>()
                .map_err(|_| RefusedAlgorithm::Unknown(name.clone()))?;
            if is_shared_secret(algorithm) {
                return Err(RefusedAlgorithm::SharedSecret(name.clone()));
            }
            Ok(algorithm)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_algorithm_is_asymmetric() {
        assert_eq!(default_inbound().len(), 9);
        assert!(default_inbound().iter().all(|a| !is_shared_secret(*a)));
    }

    #[test]
    fn allow_lists_refuse_none_hmac_and_unknown_names() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_inbound(&[]).unwrap(), default_inbound());
        assert_eq!(
            parse_inbound(&names(&["ES256"])).unwrap(),
            vec![Algorithm::ES256]
        );
        assert!(
            parse_inbound(&names(&["NONE"]))
                .unwrap_err()
                .to_string()
                .contains("never")
        );
        assert!(
            parse_inbound(&names(&["HS256"]))
                .unwrap_err()
                .to_string()
                .contains("shared-secret")
        );
        assert!(
            parse_inbound(&names(&["RS1"]))
                .unwrap_err()
                .to_string()
                .contains("unknown")
        );
    }
}
