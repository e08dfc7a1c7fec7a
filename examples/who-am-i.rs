//! The caller of the README walk-through: calls `evs.echo.v1.Echo/WhoAmI` through Envoy with
//! the IdP token in a file and prints what the backend received.
//!
//! `cargo run --example who-am-i -- http://127.0.0.1:10000 token.txt`
//!
//! It retries for up to a minute while the token file or the stack is not there yet, so it can
//! follow the other walk-through commands at once.

use std::time::{Duration, Instant};

use evs_testkit::echo_proto::WhoAmIRequest;
use evs_testkit::echo_proto::echo_client::EchoClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let envoy = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:10000".into());
    let token_file = args.next().unwrap_or_else(|| "token.txt".into());
    let started = Instant::now();
    let mut last_error = String::new();
    while started.elapsed() < Duration::from_secs(60) {
        match call(&envoy, &token_file).await {
            Ok(reply) => {
                println!("{reply}");
                return Ok(());
            }
            // A denial is an answer: show it and stop.
            Err(Failure::Denied(status)) => return Err(status.into()),
            Err(Failure::NotYet(why)) => last_error = why,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!("no answer within a minute: {last_error}").into())
}

enum Failure {
    NotYet(String),
    Denied(String),
}

async fn call(envoy: &str, token_file: &str) -> Result<String, Failure> {
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| Failure::NotYet(format!("{token_file}: {e}")))?;
    let mut client = EchoClient::connect(envoy.to_owned())
        .await
        .map_err(|e| Failure::NotYet(format!("{envoy}: {e}")))?;
    let mut request = tonic::Request::new(WhoAmIRequest {});
    let bearer = format!("Bearer {}", token.trim())
        .parse()
        .map_err(|_| Failure::Denied(format!("{token_file} does not hold a token")))?;
    request.metadata_mut().insert("authorization", bearer);
    match client.who_am_i(request).await {
        Ok(reply) => Ok(format!("{:#?}", reply.into_inner())),
        // Envoy answers 503 (UNAVAILABLE) until the sidecar and the backend listen.
        Err(status) if status.code() == tonic::Code::Unavailable => {
            Err(Failure::NotYet(status.to_string()))
        }
        Err(status) => Err(Failure::Denied(status.to_string())),
    }
}
