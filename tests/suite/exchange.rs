//! `POST /exchange` over real HTTP on loopback: the reference client's `requests` call, the
//! RFC 8693 and RFC 7523 grants performed by a real OAuth client (Authlib), a client
//! certificate over the side port's TLS, every malformed request, and the minted token
//! passing a real Envoy unchanged.

use std::process::Command;
use std::time::Duration;

use crate::support::certs::TestCa;
use crate::support::python::python_with;
use crate::support::{Harness, Options, denied, get_json, now, segment};
use serde_json::{Value, json};

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const AUTHLIB: &str = "authlib==1.6.5";

/// A form, and the status, OAuth error and description words it must get.
type FormCase = (Vec<(&'static str, String)>, u16, &'static str, &'static str);

/// Python from the tests' venv, with `requests` (a moto dependency) and Authlib.
fn python() -> std::path::PathBuf {
    python_with("moto[server]==5.2.5", "moto");
    python_with(AUTHLIB, "authlib")
}

/// Runs a Python snippet; returns what it printed, parsed as JSON.
fn run_python(script: &str, args: &[&str]) -> Value {
    let output = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .env("AUTHLIB_INSECURE_TRANSPORT", "1")
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("python printed JSON")
}

async fn post(url: &str, content_type: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST /exchange")
}

async fn post_form(url: &str, form: &[(&str, &str)]) -> reqwest::Response {
    let body = form
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    post(url, "application/x-www-form-urlencoded", body).await
}

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Status and JSON body; every answer must carry RFC 6749 §5's no-store headers.
async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    assert_eq!(
        response
            .headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap()),
        Some("no-store"),
        "status {status}"
    );
    assert_eq!(
        response
            .headers()
            .get("pragma")
            .map(|v| v.to_str().unwrap()),
        Some("no-cache")
    );
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A harness whose IdP may also sign RFC 7523 assertions.
async fn harness() -> Harness {
    Harness::start_with(Options {
        trust_extra: "assertion: true".into(),
        ..Default::default()
    })
    .await
}

fn assertion(h: &Harness, aud: &str, extra: Value) -> String {
    let mut claims = json!({
        "iss": h.idp.issuer(), "sub": "user@example.com", "aud": aud,
        "exp": now() + 300, "iat": now(), "jti": format!("jti-{}", now_nanos()),
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    h.idp.sign(&claims)
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test]
async fn the_reference_clients_call_gets_a_token_that_passes_envoy_unchanged() {
    let stack = crate::support::envoy::Stack::start().await;
    let h = &stack.harness;
    let url = h.http_url("/exchange");
    let idp_token = h.user_token();
    let script = "import json, sys, requests\n\
                  r = requests.post(sys.argv[1], json={'token': sys.argv[2]})\n\
                  print(json.dumps({'status': r.status_code, 'body': r.json(), \
                  'cache': r.headers.get('Cache-Control')}))";
    let (url2, token2) = (url.clone(), idp_token.clone());
    let printed = tokio::task::spawn_blocking(move || run_python(script, &[&url2, &token2]))
        .await
        .unwrap();
    assert_eq!(printed["status"], 200, "{printed}");
    assert_eq!(printed["cache"], "no-store");
    let body = &printed["body"];
    assert_eq!(body["token_type"], "Bearer");
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!(expires_in > 0 && expires_in <= 3600, "{expires_in}");
    let minted = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(segment(&minted, 1)["sub"], "user@example.com");
    assert_eq!(
        segment(&minted, 1)["evs:grants"]["global"],
        json!(["database_creator"])
    );

    let reply = stack
        .call(&[&format!("Bearer {minted}")])
        .await
        .expect("the call goes through Envoy");
    assert!(reply.verified, "{}", reply.error);
    assert_eq!(
        reply.authorization,
        vec![format!("Bearer {minted}")],
        "passed unchanged"
    );
    assert!(!reply.claims_json.contains(&idp_token));
}

#[tokio::test]
async fn authlib_performs_the_token_exchange_and_jwt_bearer_grants() {
    let h = harness().await;
    let url = h.http_url("/exchange");
    // This IdP signs assertions, so its JWTs are assertions on every path: the subject token
    // names this endpoint and has a `jti` of its own (see tests/suite/front_doors/exchange.rs).
    let subject = assertion(&h, "https://token-vending.example.com/exchange", json!({}));
    let jwt = assertion(
        &h,
        &h.http_url("/exchange").replace(
            &format!("http://{}", h.sidecar().http_addr),
            "https://token-vending.example.com",
        ),
        json!({}),
    );
    let script = "import json, sys\n\
                  from authlib.integrations.requests_client import OAuth2Session\n\
                  s = OAuth2Session(client_id='evs-test', token_endpoint_auth_method='none')\n\
                  a = s.fetch_token(sys.argv[1], grant_type=sys.argv[2], subject_token=sys.argv[3],\n\
                      subject_token_type=sys.argv[4], audience='evidentsource')\n\
                  b = s.fetch_token(sys.argv[1], grant_type=sys.argv[5], assertion=sys.argv[6])\n\
                  print(json.dumps({'exchange': dict(a), 'bearer': dict(b)}))";
    let args = [
        url,
        TOKEN_EXCHANGE.to_owned(),
        subject,
        ID_TOKEN.to_owned(),
        JWT_BEARER.to_owned(),
        jwt,
    ];
    let printed = tokio::task::spawn_blocking(move || {
        run_python(script, &args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    let exchanged = &printed["exchange"];
    assert_eq!(
        exchanged["issued_token_type"],
        "urn:ietf:params:oauth:token-type:jwt"
    );
    assert_eq!(exchanged["token_type"], "Bearer");
    let token = exchanged["access_token"].as_str().unwrap();
    assert_eq!(segment(token, 1)["sub"], "user@example.com");
    let asserted = printed["bearer"]["access_token"].as_str().unwrap();
    assert_eq!(segment(asserted, 1)["sub"], "user@example.com");
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("evs_tv_exchanges_total{grant_type=\"token_exchange\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("evs_tv_exchanges_total{grant_type=\"jwt_bearer\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn every_malformed_request_gets_its_oauth_error_and_no_credential_is_echoed() {
    let h = Harness::start_with(Options {
        trust_extra: "assertion: true".into(),
        more_trust: "  - { issuer: 'http://127.0.0.1:9', jwks_uri: 'http://127.0.0.1:9/jwks' }"
            .into(),
        ..Default::default()
    })
    .await;
    let url = h.http_url("/exchange");
    let endpoint = "https://token-vending.example.com/exchange";
    let token = h.user_token();

    let get = reqwest::get(&url).await.unwrap();
    assert_eq!(get.status().as_u16(), 405);
    assert_eq!(get.headers()["allow"], "POST");

    let replayed = assertion(&h, endpoint, json!({}));
    let first = read(
        post_form(
            &url,
            &[("grant_type", JWT_BEARER), ("assertion", &replayed)],
        )
        .await,
    )
    .await;
    assert_eq!(first.0, 200, "{}", first.1);

    let te = |extra: &[(&'static str, String)]| {
        let mut form = vec![("grant_type", TOKEN_EXCHANGE.to_owned())];
        form.extend_from_slice(extra);
        form
    };
    let form_cases: Vec<FormCase> = vec![
        (vec![("grant_type", "password".into())], 400, "unsupported_grant_type", "not one"),
        (te(&[("subject_token", token.clone()), ("subject_token_type", "urn:x".into())]), 400, "invalid_request", "not supported"),
        (te(&[("subject_token", token.clone()), ("subject_token_type", ID_TOKEN.into()), ("audience", "elsewhere".into())]), 400, "invalid_target", "audience"),
        (te(&[("subject_token", "not.a.jwt".into()), ("subject_token_type", ID_TOKEN.into())]), 400, "invalid_grant", "malformed"),
        (vec![("grant_type", JWT_BEARER.into()), ("assertion", assertion(&h, "https://elsewhere.example.com", json!({})))], 400, "invalid_grant", "audience"),
        (vec![("grant_type", JWT_BEARER.into()), ("assertion", assertion(&h, endpoint, json!({"exp": null})))], 400, "invalid_grant", "exp"),
        (vec![("grant_type", JWT_BEARER.into()), ("assertion", assertion(&h, endpoint, json!({"jti": null})))], 400, "invalid_grant", "jti"),
        (vec![("grant_type", JWT_BEARER.into()), ("assertion", replayed.clone())], 400, "invalid_grant", "already used"),
        (vec![("grant_type", JWT_BEARER.into()), ("assertion", h.idp.sign(&json!({"iss": "http://127.0.0.1:9", "sub": "x", "aud": endpoint, "exp": now() + 60, "jti": "j"})))], 400, "invalid_grant", "not allowed"),
        (vec![("grant_type", "client_credentials".into())], 401, "invalid_client", "no TLS client certificate"),
    ];
    for (form, status, error, reason) in form_cases {
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (got, body) = read(post_form(&url, &pairs).await).await;
        assert_eq!(
            (got, body["error"].as_str().unwrap_or("")),
            (status, error),
            "{form:?}: {body}"
        );
        let description = body["error_description"].as_str().unwrap_or("");
        assert!(description.contains(reason), "{reason}: {description}");
        for (_, value) in &form {
            if value.len() > 20 {
                assert!(
                    !body.to_string().contains(value.as_str()),
                    "echoed a credential"
                );
            }
        }
    }

    let json_type = "application/json";
    let form_type = "application/x-www-form-urlencoded";
    let raw_cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (json_type, Vec::new(), 400, "empty"),
        (json_type, vec![b'a'; 1024 * 1024], 413, "64 KiB"),
        (json_type, b"[1, 2]".to_vec(), 400, "not an object"),
        (json_type, br#"{"token": 42}"#.to_vec(), 400, "not a string"),
        (
            json_type,
            format!(r#"{{"token": "{token}", "grant_type": "{TOKEN_EXCHANGE}"}}"#).into_bytes(),
            400,
            "takes only",
        ),
        (
            form_type,
            b"grant_type=a&grant_type=a".to_vec(),
            400,
            "twice",
        ),
        ("text/plain", b"token".to_vec(), 415, "Content-Type"),
    ];
    for (content_type, body, status, reason) in raw_cases {
        let (got, answer) = read(post(&url, content_type, body).await).await;
        assert_eq!(got, status, "{reason}: {answer}");
        assert!(
            answer["error_description"]
                .as_str()
                .unwrap()
                .contains(reason),
            "{answer}"
        );
    }
    // This IdP signs assertions: its JWT is an assertion on the JSON path too.
    let fresh = assertion(&h, endpoint, json!({}));
    let (status, body) =
        read(post(&url, json_type, json!({"token": fresh}).to_string()).await).await;
    assert_eq!(status, 200, "the endpoint still works: {body}");
}

#[tokio::test]
async fn discovery_names_the_token_endpoint_and_exchange_can_be_switched_off() {
    let h = Harness::start().await;
    let discovery = get_json(&h.http_url("/.well-known/openid-configuration")).await;
    assert_eq!(
        discovery["token_endpoint"],
        "https://token-vending.example.com/exchange"
    );
    assert!(
        discovery["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(JWT_BEARER))
    );
    let off = Harness::start_with(Options {
        extra_config: "exchange: { enabled: false }".into(),
        ..Default::default()
    })
    .await;
    let response = post(&off.http_url("/exchange"), "application/json", "{}").await;
    assert_eq!(response.status().as_u16(), 404);
    let discovery = get_json(&off.http_url("/.well-known/openid-configuration")).await;
    assert!(discovery.get("token_endpoint").is_none());
}

#[tokio::test]
async fn our_own_tokens_pass_a_check_only_when_valid() {
    let h = Harness::start().await;
    let (_, body) = read(
        post(
            &h.http_url("/exchange"),
            "application/json",
            json!({"token": h.user_token()}).to_string(),
        )
        .await,
    )
    .await;
    let ours = body["access_token"].as_str().unwrap().to_owned();
    let answer = h.check_bearer(&ours).await;
    let Some(envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse::OkResponse(
        ok,
    )) = &answer.http_response
    else {
        panic!(
            "our own token is OK: {}",
            evs_testkit::denial_summary(&answer)
        );
    };
    assert!(ok.headers.is_empty(), "the request is left as it is");

    let forger = evs_token_vending::SigningKey::generate_rsa(2048).unwrap();
    let mut claims = segment(&ours, 1);
    let forged = evs_testkit::sign_with(&forger, &claims);
    assert_eq!(denied(&h.check_bearer(&forged).await).http_status, 401);
    claims["exp"] = json!(now() - 10);
    let tampered_payload = {
        use base64::Engine;
        let parts: Vec<&str> = ours.split('.').collect();
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{}.{payload}.{}", parts[0], parts[2])
    };
    let refused = denied(&h.check_bearer(&tampered_payload).await);
    assert_eq!(refused.http_status, 401, "{}", refused.description());
}

#[tokio::test]
async fn a_client_certificate_over_tls_is_exchanged_and_a_foreign_one_is_refused() {
    let server_ca = TestCa::new("Side Port CA");
    let client_ca = TestCa::new("Client CA");
    let (server_cert, server_key) = server_ca.issue_with_key("localhost", &["localhost"]);
    let (client_cert, client_key) = client_ca.issue_with_key("orders-service", &[]);
    let stranger = TestCa::new("Stranger CA").issue_with_key("orders-service", &[]);
    let dir = crate::support::TempDir::new("exchange-tls");
    dir.write("server.pem", &server_cert);
    dir.write("server.key", &server_key);
    dir.write("clients.pem", &client_ca.pem);
    let h = Harness::start_with(Options {
        extra_config: "client_certs: { enabled: true }".into(),
        listen: format!(
            "{{ authz: 127.0.0.1:0, http: 127.0.0.1:0, http_tls: {{ cert_file: '{0}/server.pem', key_file: '{0}/server.key', client_ca_file: '{0}/clients.pem' }} }}",
            dir.path().display()
        ),
        ..Default::default()
    })
    .await;
    let url = format!(
        "https://localhost:{}/exchange",
        h.sidecar().http_addr.port()
    );
    let client = |identity: Option<(&str, &str)>| {
        let mut builder = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(server_ca.pem.as_bytes()).unwrap())
            .timeout(Duration::from_secs(5));
        if let Some((cert, key)) = identity {
            builder = builder
                .identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
        }
        builder.build().unwrap()
    };
    let form = "grant_type=client_credentials";
    let answer = client(Some((&client_cert, &client_key)))
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .expect("mTLS exchange");
    let (status, body) = read(answer).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(segment(token, 1)["sub"], "cert:orders-service");
    assert!(
        segment(token, 1)["cnf"]["x5t#S256"].is_string(),
        "bound to the certificate"
    );

    let foreign = client(Some((&stranger.0, &stranger.1)))
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await;
    assert!(
        foreign.is_err(),
        "a certificate of another CA fails the handshake"
    );

    let (status, body) = read(
        client(None)
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (401, "invalid_client")
    );
    let jwks = client(None)
        .get(format!(
            "https://localhost:{}/.well-known/jwks.json",
            h.sidecar().http_addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        jwks.status().as_u16(),
        200,
        "the JWKS stays public over TLS"
    );
}

#[tokio::test]
async fn the_side_ports_certificate_is_replaced_without_a_restart() {
    let first_ca = TestCa::new("First CA");
    let second_ca = TestCa::new("Second CA");
    let dir = crate::support::TempDir::new("exchange-tls-reload");
    let (cert, key) = first_ca.issue_with_key("localhost", &["localhost"]);
    dir.write("server.pem", &cert);
    dir.write("server.key", &key);
    let h = Harness::start_with(Options {
        listen: format!(
            "{{ authz: 127.0.0.1:0, http: 127.0.0.1:0, http_tls: {{ cert_file: '{0}/server.pem', key_file: '{0}/server.key' }} }}",
            dir.path().display()
        ),
        ..Default::default()
    })
    .await;
    let url = format!("https://localhost:{}/healthz", h.sidecar().http_addr.port());
    let trusting = |ca: &TestCa| {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    };
    assert!(trusting(&first_ca).get(&url).send().await.is_ok());
    assert!(trusting(&second_ca).get(&url).send().await.is_err());

    let (cert, key) = second_ca.issue_with_key("localhost", &["localhost"]);
    dir.write("server.key", &key);
    dir.write("server.pem", &cert);
    let client = trusting(&second_ca);
    crate::support::eventually(
        "the new certificate is served",
        Duration::from_secs(10),
        async || client.get(&url).send().await.is_ok(),
    )
    .await;

    // A broken edit keeps the last good certificate and says so in /readyz.
    dir.write("server.pem", "not a certificate");
    crate::support::eventually(
        "the broken edit is refused",
        Duration::from_secs(10),
        async || {
            let ready: Value = client
                .get(url.replace("/healthz", "/readyz"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            ready["warnings"]
                .to_string()
                .contains("side-port TLS change refused")
        },
    )
    .await;
    assert!(
        client.get(&url).send().await.is_ok(),
        "still serving the last good certificate"
    );
}
