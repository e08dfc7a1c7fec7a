//! The stand-in backend of the README walk-through:
//! `cargo run --example echo-backend -- 127.0.0.1:9100 http://127.0.0.1:9002/.well-known/jwks.json`

use evs_testkit::EchoBackend;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:9100".into())
        .parse()?;
    let jwks = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:9002/.well-known/jwks.json".into());
    let listener = tokio::net::TcpListener::bind::<std::net::SocketAddr>(listen).await?;
    println!("echo backend on {listen}, trusting {jwks}");
    EchoBackend::new(jwks).serve(listener).await?;
    Ok(())
}
