//! `check-config`'s second half: every start-up check `serve` makes on the files a config
//! names — signing keys (parsed, bit lengths, `active`), grants files, CA bundles, the side
//! port's certificate — each run on its own so one run reports all of them. Remote stores
//! (Secrets Manager keys, DynamoDB, LDAP, the issuers) are contacted only with `--probe`
//! ([`probe_remote_stores`]).
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

/// Contacts what the config names remotely (`check-config --probe`): each DynamoDB table must
/// exist and be keyed by `subject` (S), Secrets Manager keys must load, and every issuer's keys
/// must be fetchable. Returns one line per store that answered, or every problem.
pub async fn probe_remote_stores(config: &Config) -> Result<Vec<String>, Vec<String>> {
    let (mut reached, mut problems) = (Vec::new(), Vec::new());
    for source in &config.grants.sources {
        if let GrantSourceConfig::Dynamodb(table) = source {
            match crate::grants::dynamodb::DynamoGrants::connect(table)
                .await
                .probe()
                .await
            {
                Ok(()) => reached.push(format!(
                    "grants.dynamodb.table: {} is reachable and keyed by `subject`",
                    table.table
                )),
                Err(reason) => problems.push(format!("grants.dynamodb.table: {reason}")),
            }
        }
        if let GrantSourceConfig::Ldap(ldap) = source {
            let probed = match crate::grants::ldap::LdapDirectory::new(ldap, Default::default()) {
                Ok(directory) => directory.probe().await,
                Err(reason) => Err(reason),
            };
            match probed {
                Ok(line) => reached.push(format!("grants.ldap: {line}")),
                Err(reason) => problems.push(format!("grants.ldap: {reason}")),
            }
        }
    }
    if let crate::exchange::ReplayStoreConfig::Dynamodb(table) = &config.exchange.replay_store
        && config.exchange.enabled
    {
        match crate::exchange::probe_replay_store(table).await {
            Ok(line) => reached.push(format!("exchange.replay_store: {line}")),
            Err(reason) => problems.push(reason.to_string()),
        }
    }
    if let crate::mint::SigningSource::SecretsManager(secret) = &config.signing.source {
        match KeySource::from_config(&config.signing).await.load().await {
            Ok(ring) => reached.push(format!(
                "signing.secrets_manager: {} holds {} key(s)",
                secret.secret_id,
                ring.kids().len()
            )),
            Err(e) => problems.push(format!("signing: {e}")),
        }
    }
    match crate::start_error::issuer_client(&config.trust) {
        Ok(client) => {
            let oidc =
                crate::identity::oidc::OidcVerifier::new(&config.trust, client, Default::default());
            oidc.prefetch(crate::start_error::FETCH_TIMEOUT).await;
            for issuer in oidc.status() {
                match (&issuer.last_error, issuer.keys_loaded) {
                    (None, true) => reached.push(format!(
                        "trust: {} publishes {} usable key(s)",
                        issuer.issuer, issuer.usable_keys
                    )),
                    (Some(e), _) => problems.push(format!("trust: {}: {e}", issuer.issuer)),
                    (None, false) => problems.push(format!(
                        "trust: {}: no keys within {:?}",
                        issuer.issuer,
                        crate::start_error::FETCH_TIMEOUT
                    )),
                }
            }
        }
        Err(e) => problems.push(e.to_string()),
    }
    if problems.is_empty() {
        Ok(reached)
    } else {
        Err(problems)
    }
}
