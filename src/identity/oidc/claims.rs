//! The claims of an IdP token, read once after its signature verified, and their checks
//! (RFC 7519 §4.1): `exp` required and in the future, `nbf` and `iat` not ahead of the clock by
//! more than the issuer's leeway, `sub` required, and `aud` naming a configured audience when
//! audiences are configured.

use serde::Deserialize;

use super::AuthError;
use super::kubernetes::KubernetesIo;

/// The IdP token claims we use.
#[derive(Deserialize)]
pub(super) struct IdpClaims {
    #[serde(default)]
    pub sub: Option<String>,
    pub iss: String,
    #[serde(default)]
    exp: Option<NumericDate>,
    #[serde(default)]
    nbf: Option<NumericDate>,
    #[serde(default)]
    iat: Option<NumericDate>,
    #[serde(default)]
    aud: Option<AudienceClaim>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub jti: Option<String>,
    /// A service-account token's namespace, service account and pod.
    #[serde(default, rename = "kubernetes.io")]
    pub kubernetes: Option<KubernetesIo>,
}

/// RFC 7519 NumericDate: seconds, possibly fractional.
#[derive(Deserialize, Clone, Copy)]
#[serde(transparent)]
struct NumericDate(f64);

impl NumericDate {
    fn as_unix(self) -> Option<u64> {
        (self.0.is_finite() && self.0 >= 0.0 && self.0 < 1e15).then_some(self.0 as u64)
    }
}

/// `aud`: one audience or several (RFC 7519 §4.1.3); anything else names none.
#[derive(Deserialize)]
#[serde(untagged)]
enum AudienceClaim {
    One(String),
    Several(Vec<String>),
    Other(serde::de::IgnoredAny),
}

impl AudienceClaim {
    fn names_one_of(&self, accepted: &[String]) -> bool {
        match self {
            Self::One(aud) => accepted.contains(aud),
            Self::Several(auds) => auds.iter().any(|aud| accepted.contains(aud)),
            Self::Other(_) => false,
        }
    }
}

/// What a token's claims are checked against.
pub(super) struct ClaimRules<'a> {
    /// Now, in Unix seconds.
    pub now: u64,
    /// The issuer's allowance for clock skew, in seconds.
    pub leeway: u64,
    /// The audiences the token must name one of; empty: `aud` is not checked.
    pub audiences: &'a [String],
}

impl IdpClaims {
    /// Reads the claims from a verified payload.
    pub fn parse(payload: &[u8]) -> Result<Self, AuthError> {
        serde_json::from_slice(payload)
            .map_err(|_| AuthError::InvalidClaim("a claim has the wrong type"))
    }

    /// Checks the claims; returns the token's expiry (Unix seconds) and its subject.
    pub fn check(&mut self, rules: &ClaimRules<'_>) -> Result<(u64, String), AuthError> {
        let expires_at = self
            .exp
            .ok_or(AuthError::InvalidClaim("exp is required"))?
            .as_unix()
            .ok_or(AuthError::InvalidClaim("a claim has the wrong type"))?;
        // Strict, without leeway: a minted token may not outlive this one, and one already
        // expired would produce a minted token that is dead on arrival.
        if expires_at <= rules.now {
            return Err(AuthError::Expired);
        }
        let latest_start = rules.now.saturating_add(rules.leeway);
        if let Some(nbf) = self.nbf {
            let nbf = nbf
                .as_unix()
                .ok_or(AuthError::InvalidClaim("a claim has the wrong type"))?;
            if nbf > latest_start {
                return Err(AuthError::NotYetValid);
            }
        }
        if let Some(iat) = self.iat {
            let iat = iat.as_unix().ok_or(AuthError::InvalidClaim("iat"))?;
            if iat > latest_start {
                return Err(AuthError::IssuedInFuture);
            }
        }
        let subject = self
            .sub
            .take()
            .filter(|sub| !sub.is_empty())
            .ok_or(AuthError::InvalidClaim("sub is required"))?;
        if !rules.audiences.is_empty() {
            let aud = self
                .aud
                .as_ref()
                .ok_or(AuthError::InvalidClaim("wrong audience: aud is required"))?;
            if !aud.names_one_of(rules.audiences) {
                return Err(AuthError::WrongAudience);
            }
        }
        Ok((expires_at, subject))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;

    fn check(claims: serde_json::Value, audiences: &[&str]) -> Result<(u64, String), AuthError> {
        let audiences: Vec<String> = audiences.iter().map(|a| a.to_string()).collect();
        let rules = ClaimRules {
            now: NOW,
            leeway: 30,
            audiences: &audiences,
        };
        IdpClaims::parse(claims.to_string().as_bytes())?.check(&rules)
    }

    fn base(extra: serde_json::Value) -> serde_json::Value {
        let mut claims = json!({"iss": "https://idp", "sub": "alice", "exp": NOW + 60});
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        claims
    }

    #[test]
    fn time_claims_follow_the_clock_and_the_leeway() {
        assert_eq!(
            check(base(json!({})), &[]).unwrap(),
            (NOW + 60, "alice".into())
        );
        // A fractional NumericDate is a NumericDate.
        assert_eq!(
            check(base(json!({"exp": NOW as f64 + 60.5})), &[])
                .unwrap()
                .0,
            NOW + 60
        );
        // exp has no leeway: expiring now is expired.
        assert!(matches!(
            check(base(json!({"exp": NOW})), &[]),
            Err(AuthError::Expired)
        ));
        assert!(check(base(json!({"nbf": NOW + 30, "iat": NOW + 30})), &[]).is_ok());
        assert!(matches!(
            check(base(json!({"nbf": NOW + 31})), &[]),
            Err(AuthError::NotYetValid)
        ));
        assert!(matches!(
            check(base(json!({"iat": NOW + 31})), &[]),
            Err(AuthError::IssuedInFuture)
        ));
        for wrong in [
            json!({"exp": -1}),
            json!({"nbf": "soon"}),
            json!({"exp": 1e300}),
        ] {
            assert!(
                matches!(check(base(wrong.clone()), &[]), Err(AuthError::InvalidClaim(m)) if m.contains("wrong type")),
                "{wrong}"
            );
        }
        let mut no_exp = base(json!({}));
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(matches!(
            check(no_exp, &[]),
            Err(AuthError::InvalidClaim("exp is required"))
        ));
    }

    #[test]
    fn the_audience_must_name_a_configured_one_when_any_is_configured() {
        let ours = &["api", "other"];
        assert!(check(base(json!({"aud": "api"})), ours).is_ok());
        assert!(check(base(json!({"aud": ["x", "other"]})), ours).is_ok());
        for wrong in [
            json!({"aud": "x"}),
            json!({"aud": []}),
            json!({"aud": 7}),
            json!({"aud": ["API"]}),
        ] {
            assert!(
                matches!(
                    check(base(wrong.clone()), ours),
                    Err(AuthError::WrongAudience)
                ),
                "{wrong}"
            );
        }
        assert!(matches!(
            check(base(json!({})), ours),
            Err(AuthError::InvalidClaim(m)) if m.contains("aud is required")
        ));
        // None configured: `aud` is not read, whatever it holds.
        assert!(check(base(json!({"aud": 7})), &[]).is_ok());
    }

    #[test]
    fn the_subject_is_required_and_typed() {
        assert!(matches!(
            check(base(json!({"sub": ""})), &[]),
            Err(AuthError::InvalidClaim("sub is required"))
        ));
        assert!(matches!(
            check(base(json!({"sub": 42})), &[]),
            Err(AuthError::InvalidClaim(m)) if m.contains("wrong type")
        ));
    }
}
