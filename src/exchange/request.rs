//! What a caller asks `/exchange` for, parsed from the body: the reference's JSON
//! `{"token": …}`, or an OAuth form (RFC 8693 token exchange, RFC 7523 JWT bearer,
//! client credentials with a TLS client certificate). Every malformation is an
//! [`OAuthError`] naming it; nothing here verifies a credential.

use std::collections::HashMap;

use super::OAuthError;

/// `grant_type` of RFC 8693.
pub(crate) const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// `grant_type` of RFC 7523.
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// `grant_type` of RFC 6749 §4.4, with the TLS client certificate as the client's credential.
pub(crate) const CLIENT_CREDENTIALS: &str = "client_credentials";
/// Token types of RFC 8693 §3 that carry an IdP JWT.
pub(crate) const JWT_TOKEN_TYPES: &[&str] = &[
    "urn:ietf:params:oauth:token-type:jwt",
    "urn:ietf:params:oauth:token-type:id_token",
    "urn:ietf:params:oauth:token-type:access_token",
];
/// Our token type URI for an AWS IAM token (`k8s-aws-v1.…`).
pub(crate) const AWS_IAM_TOKEN_TYPE: &str = "urn:evidentsource:params:oauth:token-type:aws-iam";
/// What we issue.
pub(crate) const ISSUED_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// One exchange, as asked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Grant {
    /// `{"token": …}`: any credential the Check path accepts as a bearer value.
    Reference { token: String },
    /// RFC 8693; without a subject token the TLS client certificate is the subject.
    TokenExchange {
        subject_token: Option<String>,
        audiences: Vec<String>,
        requested_token_type: Option<String>,
    },
    /// RFC 7523.
    JwtBearer { assertion: String },
    /// The TLS client certificate is the credential.
    ClientCredentials,
}

impl Grant {
    /// The `grant_type` label of metrics and logs.
    pub(crate) fn grant_type(&self) -> &'static str {
        match self {
            Grant::Reference { .. } => "json",
            Grant::TokenExchange { .. } => "token_exchange",
            Grant::JwtBearer { .. } => "jwt_bearer",
            Grant::ClientCredentials => "client_credentials",
        }
    }

    /// Parses a JSON body: an object with exactly a string `token`.
    pub(crate) fn from_json(body: &[u8]) -> Result<Self, OAuthError> {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|_| OAuthError::invalid_request("the body is not JSON"))?;
        let object = value.as_object().ok_or(OAuthError::invalid_request(
            "the JSON body is not an object",
        ))?;
        if object.keys().any(|key| key != "token") {
            return Err(OAuthError::invalid_request(
                "the JSON body takes only `token`; OAuth grants are form-encoded",
            ));
        }
        match object.get("token") {
            Some(serde_json::Value::String(token)) if !token.is_empty() => Ok(Grant::Reference {
                token: token.clone(),
            }),
            Some(serde_json::Value::String(_)) => {
                Err(OAuthError::invalid_request("`token` is empty"))
            }
            Some(_) => Err(OAuthError::invalid_request("`token` is not a string")),
            None => Err(OAuthError::invalid_request("`token` is missing")),
        }
    }

    /// Parses an `application/x-www-form-urlencoded` body (RFC 6749 §3.2: no parameter twice).
    pub(crate) fn from_form(body: &[u8]) -> Result<Self, OAuthError> {
        let mut form: HashMap<String, String> = HashMap::new();
        for (name, value) in form_urlencoded::parse(body) {
            if form.insert(name.into_owned(), value.into_owned()).is_some() {
                return Err(OAuthError::invalid_request(
                    "a form parameter appears twice",
                ));
            }
        }
        let take = |name: &str| form.get(name).filter(|v| !v.is_empty()).cloned();
        if form.contains_key("token") {
            return Err(OAuthError::invalid_request(
                "`token` belongs to the JSON form; a form body needs grant_type",
            ));
        }
        let grant_type =
            take("grant_type").ok_or(OAuthError::invalid_request("grant_type is missing"))?;
        match grant_type.as_str() {
            TOKEN_EXCHANGE => {
                let subject_token = take("subject_token");
                if let Some(token) = &subject_token {
                    let token_type = take("subject_token_type")
                        .ok_or(OAuthError::invalid_request("subject_token_type is missing"))?;
                    let is_iam = token.starts_with("k8s-aws-v1.");
                    match token_type.as_str() {
                        t if JWT_TOKEN_TYPES.contains(&t) && !is_iam => {}
                        AWS_IAM_TOKEN_TYPE if is_iam => {}
                        t if JWT_TOKEN_TYPES.contains(&t) || t == AWS_IAM_TOKEN_TYPE => {
                            return Err(OAuthError::invalid_request(
                                "subject_token_type does not match the subject token",
                            ));
                        }
                        _ => {
                            return Err(OAuthError::invalid_request(
                                "subject_token_type is not supported",
                            ));
                        }
                    }
                } else if form.contains_key("subject_token_type") {
                    return Err(OAuthError::invalid_request("subject_token is missing"));
                }
                if form.contains_key("actor_token") {
                    return Err(OAuthError::invalid_request(
                        "actor tokens are not supported",
                    ));
                }
                let requested_token_type = take("requested_token_type");
                if let Some(requested) = &requested_token_type
                    && requested != ISSUED_TOKEN_TYPE
                    && requested != "urn:ietf:params:oauth:token-type:access_token"
                {
                    return Err(OAuthError::invalid_request(
                        "requested_token_type is not one this endpoint issues",
                    ));
                }
                let audiences = ["audience", "resource"]
                    .iter()
                    .filter_map(|name| take(name))
                    .collect();
                Ok(Grant::TokenExchange {
                    subject_token,
                    audiences,
                    requested_token_type,
                })
            }
            JWT_BEARER => Ok(Grant::JwtBearer {
                assertion: take("assertion")
                    .ok_or(OAuthError::invalid_request("assertion is missing"))?,
            }),
            CLIENT_CREDENTIALS => Ok(Grant::ClientCredentials),
            _ => Err(OAuthError {
                status: 400,
                error: "unsupported_grant_type",
                description: "grant_type is not one this endpoint supports".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(result: Result<Grant, OAuthError>) -> (&'static str, String) {
        let error = result.unwrap_err();
        (error.error, error.description)
    }

    #[test]
    fn the_reference_json_is_an_object_with_a_string_token() {
        assert_eq!(
            Grant::from_json(br#"{"token": "a.b.c"}"#).unwrap(),
            Grant::Reference {
                token: "a.b.c".into()
            }
        );
        for (body, reason) in [
            (&b"[1]"[..], "not an object"),
            (br#"{"token": 5}"#, "not a string"),
            (br#"{"token": "a", "grant_type": "x"}"#, "takes only"),
            (b"{}", "missing"),
            (b"token=a", "not JSON"),
        ] {
            let (error, description) = refused(Grant::from_json(body));
            assert_eq!(error, "invalid_request");
            assert!(description.contains(reason), "{description}");
        }
    }

    #[test]
    fn forms_are_refused_for_each_malformation() {
        let te = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange";
        for (body, error, reason) in [
            (
                "grant_type=password".to_owned(),
                "unsupported_grant_type",
                "not one",
            ),
            (
                "grant_type=a&grant_type=b".to_owned(),
                "invalid_request",
                "twice",
            ),
            (
                format!("{te}&subject_token=a.b.c"),
                "invalid_request",
                "subject_token_type is missing",
            ),
            (
                format!("{te}&subject_token=a.b.c&subject_token_type=urn%3Ax"),
                "invalid_request",
                "not supported",
            ),
            (
                format!(
                    "{te}&subject_token=a.b.c&subject_token_type={}",
                    AWS_IAM_TOKEN_TYPE
                ),
                "invalid_request",
                "does not match",
            ),
            (
                format!(
                    "{te}&subject_token=a&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt&requested_token_type=urn%3Ax"
                ),
                "invalid_request",
                "requested_token_type",
            ),
            (
                "token=a&grant_type=client_credentials".to_owned(),
                "invalid_request",
                "JSON form",
            ),
            (
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer".to_owned(),
                "invalid_request",
                "assertion is missing",
            ),
            (String::new(), "invalid_request", "grant_type is missing"),
        ] {
            let (got, description) = refused(Grant::from_form(body.as_bytes()));
            assert_eq!(got, error, "{body}");
            assert!(description.contains(reason), "{body}: {description}");
        }
    }

    #[test]
    fn a_token_exchange_collects_its_audiences() {
        let body = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange\
                    &subject_token=a.b.c&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token\
                    &audience=evidentsource";
        assert_eq!(
            Grant::from_form(body.as_bytes()).unwrap(),
            Grant::TokenExchange {
                subject_token: Some("a.b.c".into()),
                audiences: vec!["evidentsource".into()],
                requested_token_type: None,
            }
        );
    }
}
