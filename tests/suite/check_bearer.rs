//! The ext_authz Check for bearer tokens, through the real gRPC interface, against a real
//! identity provider serving its JWKS over HTTP on loopback.

use std::time::Duration;

use crate::support::{Harness, Options, denied, join_all, minted, now, segment};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use evs_testkit::{check_request, sign_with};
use evs_token_vending::SigningKey;
use serde_json::json;

const UNAUTHENTICATED: i32 = 16;
const PERMISSION_DENIED: i32 = 7;
const UNAVAILABLE: i32 = 14;

#[tokio::test]
async fn valid_idp_token_is_swapped_for_a_minted_token_with_grants() {
    let h = Harness::start().await;
    let idp_token = h.user_token();
    let answer = h.check_bearer(&idp_token).await;

    let token = minted(&answer);
    assert_ne!(token, idp_token);
    let header = segment(&token, 0);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    let ring = h.sidecar().vending.authenticator().oidc().status();
    assert!(ring[0].keys_loaded);

    let claims = segment(&token, 1);
    let idp_claims = segment(&idp_token, 1);
    assert_eq!(claims["iss"], "https://token-vending.example.com");
    assert_eq!(claims["sub"], "user@example.com");
    assert_eq!(claims["aud"], "evidentsource");
    assert_eq!(claims["email"], "user@example.com");
    assert_eq!(claims["name"], "Demo User");
    assert_eq!(
        claims["evs:grants"],
        json!({"global": ["database_creator"], "databases": {"production": ["reader", "writer"], "staging": ["reader", "writer", "deployer"]}})
    );
    let iat = claims["iat"].as_u64().unwrap();
    assert!(iat.abs_diff(now()) <= 2);
    assert_eq!(claims["nbf"], claims["iat"]);
    // The IdP token lives 10 minutes, less than the 1 h lifetime: the minted one follows it.
    assert_eq!(claims["exp"], idp_claims["exp"]);
    assert_eq!(claims["jti"].as_str().unwrap().len(), 22);

    // Verifies against the sidecar's published JWKS.
    let jwks: serde_json::Value = reqwest::get(h.http_url("/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    evs_testkit::verify_against_jwks(&token, &jwks).expect("minted token verifies");
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
    assert_eq!(jwks["keys"][0]["use"], "sig");
    assert_eq!(jwks["keys"][0]["alg"], "RS256");

    // Another IdP token of the same user gets a token of its own.
    let other_idp_token = h
        .idp
        .token_for("user@example.com", None, Duration::from_secs(601));
    let again = minted(&h.check_bearer(&other_idp_token).await);
    assert_ne!(segment(&again, 1)["jti"], claims["jti"]);
}

#[tokio::test]
async fn ok_answer_overwrites_authorization_and_removes_configured_headers() {
    let h = Harness::start().await;
    let answer = h.check_bearer(&h.user_token()).await;
    assert_eq!(answer.status.as_ref().unwrap().code, 0);
    let Some(HttpResponse::OkResponse(ok)) = answer.http_response.as_ref() else {
        panic!("expected OK");
    };
    assert_eq!(ok.headers.len(), 1);
    let option = &ok.headers[0];
    let header = option.header.as_ref().unwrap();
    assert_eq!(header.key, "authorization");
    assert!(header.value.starts_with("Bearer ey"));
    // Both fields: Envoy 1.40 reads `append`, newer Envoy reads `append_action`.
    #[allow(deprecated)]
    let append = option.append.as_ref().map(|b| b.value);
    assert_eq!(append, Some(false));
    assert_eq!(
        option.append_action,
        HeaderAppendAction::OverwriteIfExistsOrAdd as i32
    );
    assert_eq!(ok.headers_to_remove, vec!["x-forwarded-client-cert"]);
    let metadata = answer.dynamic_metadata.as_ref().unwrap();
    let subject = metadata.fields["subject"].kind.as_ref().unwrap();
    assert_eq!(
        format!("{subject:?}"),
        format!(
            "{:?}",
            envoy_types::pb::google::protobuf::value::Kind::StringValue("user@example.com".into())
        )
    );
}

#[tokio::test]
async fn malformed_authorization_headers_get_401_saying_which() {
    let h = Harness::start().await;
    let token = h.user_token();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "not bearer",
            "Basic dXNlcjpwYXNz".into(),
            "unsupported authorization scheme",
        ),
        (
            "two values",
            format!("Bearer {token},Bearer {token}"),
            "more than one value",
        ),
        ("empty token", "Bearer ".into(), "empty bearer token"),
        (
            "two segments",
            "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0".into(),
            "exactly three segments",
        ),
        (
            "four segments",
            format!("Bearer {token}.AAAA"),
            "exactly three segments",
        ),
        (
            "bad base64",
            "Bearer e$J.eyJ.c2ln".into(),
            "header is not base64url",
        ),
        (
            "header not JSON",
            format!("Bearer {}.e30.c2ln", URL_SAFE_NO_PAD.encode("not json")),
            "header is not a JSON object",
        ),
        (
            "payload not JSON",
            format!(
                "Bearer {}.{}.c2ln",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
                URL_SAFE_NO_PAD.encode("[1,2")
            ),
            "payload is not a JSON object",
        ),
        (
            "64 KiB header",
            format!("Bearer {}", "a".repeat(64 * 1024)),
            "larger than 16 KiB",
        ),
    ];
    for (case, header, expected) in cases {
        let denial = denied(&h.check(&[("authorization", &header)]).await);
        assert_eq!(denial.http_status, 401, "{case}");
        assert_eq!(denial.grpc_code, UNAUTHENTICATED, "{case}");
        assert!(
            denial.description().contains(expected),
            "{case}: {:?}",
            denial.description()
        );
        let challenge = denial.www_authenticate.clone().unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer error="),
            "{case}: {challenge}"
        );
        if header.len() > 20 {
            denial.assert_does_not_echo(&header[7..27]);
        }
    }
}

#[tokio::test]
async fn missing_credential_is_401_with_a_bare_bearer_challenge() {
    let h = Harness::start().await;
    let denial = denied(&h.check(&[("x-request-id", "r1")]).await);
    assert_eq!(denial.http_status, 401);
    assert_eq!(denial.grpc_code, UNAUTHENTICATED);
    assert_eq!(denial.www_authenticate.as_deref(), Some("Bearer"));
    assert!(denial.description().contains("no credential"));
}

#[tokio::test]
async fn non_utf8_bytes_in_a_raw_header_get_401() {
    let h = Harness::start().await;
    let mut request = check_request(&[]);
    let http = request
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .unwrap();
    http.header_map = Some(HeaderMap {
        headers: vec![HeaderValue {
            key: "authorization".into(),
            raw_value: b"Bearer ey\xff\xfe.x.y".to_vec(),
            ..Default::default()
        }],
    });
    let denial = denied(&h.check_request(request).await);
    assert_eq!(denial.http_status, 401);
    assert!(
        denial.description().contains("not visible ASCII"),
        "{}",
        denial.description()
    );
}

#[tokio::test]
async fn forged_and_invalid_tokens_get_401_saying_which_check_failed() {
    let h = Harness::start().await;
    let idp_key = h.idp.key();
    let kid = idp_key.kid().to_owned();
    let claims = h.claims(json!({}));
    let unsigned = |alg: &str| {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(json!({"alg": alg, "typ": "JWT", "kid": kid}).to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    };
    let hs256_with_public_key = {
        use aws_lc_rs::hmac;
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "kid": kid}).to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let secret = idp_key.public_jwk().to_string();
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
            input.as_bytes(),
        );
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    };
    let bad_signature = {
        let good = h.user_token();
        let mut parts: Vec<&str> = good.split('.').collect();
        let other_claims = URL_SAFE_NO_PAD.encode(h.claims(json!({"sub": "admin"})).to_string());
        parts[1] = &other_claims;
        parts.join(".")
    };
    let t = now();
    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", unsigned("none"), "alg none is never accepted"),
        ("alg NONE", unsigned("NONE"), "alg none is never accepted"),
        ("alg nOnE", unsigned("nOnE"), "alg none is never accepted"),
        (
            "HS256 with the public key",
            hs256_with_public_key,
            "shared-secret",
        ),
        (
            "unknown issuer",
            h.idp
                .sign(&h.claims(json!({"iss": "https://evil.example.com"}))),
            "unknown issuer",
        ),
        (
            "expired",
            h.idp.sign(&h.claims(json!({"exp": t - 5}))),
            "token expired",
        ),
        (
            "expired beyond leeway",
            h.idp
                .sign(&h.claims(json!({"exp": t - 3600, "iat": t - 7200}))),
            "token expired",
        ),
        (
            "not yet valid",
            h.idp
                .sign(&h.claims(json!({"nbf": t + 600, "exp": t + 1200}))),
            "nbf is in the future",
        ),
        (
            "issued in the future",
            h.idp.sign(&h.claims(json!({"iat": t + 600}))),
            "iat is in the future",
        ),
        ("wrong signature", bad_signature, "bad signature"),
        (
            "no exp",
            h.idp.sign(&json!({"iss": h.idp.issuer(), "sub": "x"})),
            "exp is required",
        ),
        (
            "no sub",
            h.idp.sign(&json!({"iss": h.idp.issuer(), "exp": t + 60})),
            "sub is required",
        ),
        (
            "exp not a number",
            h.idp.sign(&h.claims(json!({"exp": "tomorrow"}))),
            "wrong type",
        ),
    ];
    for (case, token, expected) in cases {
        let denial = denied(&h.check_bearer(&token).await);
        assert_eq!(denial.http_status, 401, "{case}: {denial:?}");
        assert_eq!(denial.grpc_code, UNAUTHENTICATED, "{case}");
        assert_eq!(denial.body["error"], "invalid_token", "{case}");
        assert!(
            denial.description().contains(expected),
            "{case}: {:?}",
            denial.description()
        );
        assert!(
            denial
                .www_authenticate
                .as_deref()
                .unwrap_or("")
                .contains(r#"error="invalid_token""#),
            "{case}"
        );
        for part in token.split('.') {
            if part.len() > 8 {
                denial.assert_does_not_echo(part);
            }
        }
    }
}

#[tokio::test]
async fn wrong_audience_is_refused_when_audiences_are_configured() {
    let h = Harness::start_with(Options {
        trust_extra: "audiences: [demo-client, other-client]".into(),
        ..Options::default()
    })
    .await;
    assert_eq!(
        segment(&minted(&h.check_bearer(&h.user_token()).await), 1)["sub"],
        "user@example.com"
    );
    let token = h.idp.sign(&h.claims(json!({"aud": ["someone-else"]})));
    let denial = denied(&h.check_bearer(&token).await);
    assert_eq!(denial.http_status, 401);
    assert!(denial.description().contains("wrong audience"));
    let no_aud = h.idp.sign(&h.claims(json!({})));
    assert_eq!(denied(&h.check_bearer(&no_aud).await).http_status, 401);
}

#[tokio::test]
async fn unknown_kid_triggers_exactly_one_refetch_then_401() {
    let h = Harness::start().await;
    let fetches_at_start = h.idp.jwks_fetches();
    let stranger = SigningKey::generate_rsa(2048).unwrap();
    let forged = sign_with(&stranger, &h.claims(json!({})));

    let denial = denied(&h.check_bearer(&forged).await);
    assert_eq!(denial.http_status, 401);
    assert!(denial.description().contains("unknown kid"));
    assert_eq!(h.idp.jwks_fetches(), fetches_at_start + 1);

    // A concurrent burst of forged kids does not turn into a burst of fetches against the IdP.
    let burst: Vec<_> = (0..50)
        .map(|_| {
            let (h, forged) = (&h, &forged);
            async move { denied(&h.check_bearer(forged).await).http_status }
        })
        .collect();
    for status in join_all(burst).await {
        assert_eq!(status, 401);
    }
    assert_eq!(h.idp.jwks_fetches(), fetches_at_start + 1);
}

#[tokio::test]
async fn concurrent_misses_share_one_refetch() {
    let h = Harness::start().await;
    let fetches_at_start = h.idp.jwks_fetches();
    let next = SigningKey::generate_rsa(2048).unwrap();
    h.idp.publish(&[h.idp.key(), &next]);
    let token = sign_with(&next, &h.claims(json!({})));
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let (h, token) = (&h, &token);
            async move { minted(&h.check_bearer(token).await) }
        })
        .collect();
    assert_eq!(join_all(calls).await.len(), 50);
    assert_eq!(h.idp.jwks_fetches(), fetches_at_start + 1);
}

#[tokio::test]
async fn keys_older_than_max_stale_stop_serving_while_the_idp_is_down() {
    let h = Harness::start_with(Options {
        trust_extra: "max_stale: 1s\n    refresh_interval: 1s".into(),
        ..Options::default()
    })
    .await;
    minted(&h.check_bearer(&h.user_token()).await);
    h.idp.set_up(false);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let denial = denied(&h.check_bearer(&h.user_token()).await);
    assert_eq!(denial.http_status, 503);
    assert!(denial.description().contains("unavailable"));
    // Recovery needs no restart: the background refresh (retrying every refresh_interval)
    // picks the keys up again.
    h.idp.set_up(true);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while evs_testkit::minted_token(&h.check_bearer(&h.user_token()).await).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery after the IdP came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_key_the_idp_adds_later_is_picked_up_by_the_refetch() {
    let h = Harness::start().await;
    let next = SigningKey::generate_rsa(2048).unwrap();
    h.idp.publish(&[h.idp.key(), &next]);
    let token = sign_with(&next, &h.claims(json!({})));
    let minted_token = minted(&h.check_bearer(&token).await);
    assert_eq!(segment(&minted_token, 1)["sub"], "user@example.com");
}

#[tokio::test]
async fn cached_issuer_keys_keep_serving_while_the_idp_is_down() {
    let h = Harness::start().await;
    h.idp.set_up(false);
    minted(&h.check_bearer(&h.user_token()).await);
}

#[tokio::test]
async fn issuer_whose_keys_were_never_obtainable_gives_503() {
    let dead_port = crate::support::free_port();
    let h = Harness::start_with(Options {
        more_trust: format!("  - {{ issuer: 'http://127.0.0.1:{dead_port}' }}"),
        ..Options::default()
    })
    .await;
    let token = h
        .idp
        .sign(&h.claims(json!({"iss": format!("http://127.0.0.1:{dead_port}")})));
    let denial = denied(&h.check_bearer(&token).await);
    assert_eq!(denial.http_status, 503);
    assert_eq!(denial.grpc_code, UNAVAILABLE);
    assert!(denial.description().contains("unavailable"));
    assert!(denial.www_authenticate.is_none());
    // The healthy issuer is unaffected.
    minted(&h.check_bearer(&h.user_token()).await);
}

#[tokio::test]
async fn a_hanging_idp_is_answered_within_the_callers_deadline() {
    // Accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_issuer = format!("http://{}", silent.local_addr().unwrap());
    let h = Harness::start_with(Options {
        more_trust: format!("  - {{ issuer: '{silent_issuer}' }}"),
        ..Options::default()
    })
    .await;
    let token = h.idp.sign(&h.claims(json!({"iss": silent_issuer})));
    let mut request = tonic::Request::new(check_request(&[(
        "authorization",
        &format!("Bearer {token}"),
    )]));
    request.set_timeout(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let answer = h
        .client
        .clone()
        .check(request)
        .await
        .expect("answered before the deadline");
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(denied(&answer.into_inner()).http_status, 503);
}

#[tokio::test]
async fn minted_exp_never_outlives_the_idp_token_or_the_lifetime() {
    let h = Harness::start_with(Options {
        token_extra: "lifetime: 5m".into(),
        ..Options::default()
    })
    .await;
    let t = now();
    let short = h.idp.sign(&h.claims(json!({"exp": t + 90})));
    assert_eq!(
        segment(&minted(&h.check_bearer(&short).await), 1)["exp"],
        t + 90
    );
    let long = h.idp.sign(&h.claims(json!({"exp": t + 7200})));
    let claims = segment(&minted(&h.check_bearer(&long).await), 1);
    assert_eq!(
        claims["exp"].as_u64().unwrap(),
        claims["iat"].as_u64().unwrap() + 300
    );
}

#[tokio::test]
async fn grants_fall_back_to_email_then_to_the_unknown_subject_policy() {
    let h = Harness::start().await;
    let by_email = h
        .idp
        .sign(&h.claims(json!({"sub": "00u1abc", "email": "user@example.com"})));
    let claims = segment(&minted(&h.check_bearer(&by_email).await), 1);
    assert_eq!(claims["sub"], "00u1abc");
    assert_eq!(claims["evs:grants"]["global"], json!(["database_creator"]));

    let stranger = h.idp.sign(&h.claims(json!({"sub": "nobody"})));
    let claims = segment(&minted(&h.check_bearer(&stranger).await), 1);
    assert_eq!(claims["evs:grants"], json!({"global": [], "databases": {}}));

    let deny = Harness::start_with(Options {
        grants_extra: "unknown_subject: deny".into(),
        ..Options::default()
    })
    .await;
    let stranger = deny.idp.sign(&deny.claims(json!({"sub": "nobody"})));
    let denial = denied(&deny.check_bearer(&stranger).await);
    assert_eq!(denial.http_status, 403);
    assert_eq!(denial.grpc_code, PERMISSION_DENIED);
    assert!(denial.description().contains("not known"));
}

#[tokio::test]
async fn grants_file_edits_are_picked_up_and_broken_edits_keep_the_last_good_grants() {
    let h = Harness::start().await;
    let token = h.user_token();
    let grants_of = |answer| segment(&minted(&answer), 1)["evs:grants"].clone();
    assert_eq!(
        grants_of(h.check_bearer(&token).await)["global"],
        json!(["database_creator"])
    );

    h.dir.write(
        "grants.yaml",
        "subjects:\n  user@example.com:\n    global: [auditor, admin]\n",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let grants = grants_of(h.check_bearer(&token).await);
        if grants["global"] == json!(["auditor", "admin"]) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "edit not picked up: {grants}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    h.dir
        .write("grants.yaml", "subjects: [this is: not, grants\n");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        grants_of(h.check_bearer(&token).await)["global"],
        json!(["auditor", "admin"])
    );
}

#[tokio::test]
async fn grpc_health_reports_serving_for_the_authorization_service() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let h = Harness::start().await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", h.sidecar().authz_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "envoy.service.auth.v3.Authorization"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, 1, "{service:?} is SERVING");
    }
}

#[tokio::test]
async fn a_remembered_verification_dies_with_the_key_the_idp_withdrew() {
    let h = Harness::start_with(Options {
        trust_extra: "refresh_interval: 1s".into(),
        ..Options::default()
    })
    .await;
    let token = h.user_token();
    minted(&h.check_bearer(&token).await);
    minted(&h.check_bearer(&token).await);

    // The IdP withdraws the key (say, it leaked) and publishes another.
    let replacement = SigningKey::generate_rsa(2048).unwrap();
    h.idp.publish(&[&replacement]);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let denial = denied(&h.check_bearer(&token).await);
    assert_eq!(denial.http_status, 401);
    assert!(
        denial.description().contains("unknown kid"),
        "{}",
        denial.description()
    );
}
