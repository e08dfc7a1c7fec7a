//! `check-config`'s second half: every start-up check `serve` makes on the files a config
//! names — signing keys (parsed, bit lengths, `active`), grants files, CA bundles, the side
//! port's certificate — each run on its own so one run reports all of them. Remote stores
//! (Secrets Manager keys, DynamoDB) are contacted only with `--probe`.
//!
//! The checks call the very functions `serve` uses to load, so the two cannot disagree: a file
//! that `serve` refuses (missing, unreadable by this user, malformed, too weak) is refused here.

use crate::config::Config;
use crate::grants::GrantSourceConfig;
use crate::grants::file::FileGrants;
use crate::identity::x509::X509Verifier;
use crate::mint::SigningSource;
use crate::mint::keyring::KeySource;
use crate::server_tls::{ReloadingTls, TlsFiles};

/// One problem per failing check, each naming its config key and the file.
pub async fn check_files(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    if !matches!(
        config.signing.source,
        SigningSource::SecretsManager(_) | SigningSource::DevGenerate
    ) && let Err(e) = KeySource::from_config(&config.signing).await.load().await
    {
        problems.push(format!("signing: {e}"));
    }
    for source in &config.grants.sources {
        match source {
            GrantSourceConfig::File(path) => {
                if let Err(e) =
                    FileGrants::load(path, config.grants.allow_empty, Default::default())
                {
                    problems.push(format!("grants.file: {e}"));
                }
            }
            GrantSourceConfig::Ldap(ldap) => {
                if let Err(e) = crate::grants::ldap::check_files(ldap) {
                    problems.push(e.to_string());
                }
            }
            _ => {}
        }
    }
    if config.client_certs.enabled
        && let Err(e) = X509Verifier::from_config(&config.client_certs)
    {
        problems.push(e.to_string());
    }
    if let Some(tls) = &config.listen.http_tls
        && let Err(e) = ReloadingTls::load(TlsFiles::side_port(tls))
    {
        problems.push(e.to_string());
    }
    if let Some(tls) = &config.listen.authz_tls
        && let Err(e) = ReloadingTls::load(TlsFiles::authz(tls))
    {
        problems.push(e.to_string());
    }
    match crate::start_error::issuer_client(&config.trust) {
        Ok(client) => problems.extend(
            crate::identity::oidc::OidcVerifier::new(&config.trust, client, Default::default())
                .token_review_problems(),
        ),
        Err(e) => problems.push(e.to_string()),
    }
    if config.aws_iam.enabled
        && let Err(e) = crate::identity::aws_iam::AwsIamVerifier::new(
            &config.aws_iam,
            Default::default(),
            Default::default(),
        )
    {
        problems.push(e.to_string());
    }
    problems
}
