//! The root of the YAML config (docs/configuration.md) and its loader; the
//! problem list is `config_check`.
//!
//! Each stage owns its section: the types, the defaults and the checks live beside the code
//! that uses them (`mint::config`, `identity::oidc::config`, `grants::config` …). This module
//! reads the file, hands each section to its stage, and collects every problem with its key
//! path (`trust[0].jwks_uri: …`), so `check-config` prints all of them at once.

use std::path::Path;

use serde::Deserialize;

use crate::authz::ResponseConfig;
pub(crate) use crate::config_check::ConfigCheck;
pub use crate::config_check::{ConfigError, ConfigProblem};
use crate::credential::ClientCertsConfig;
use crate::decision_log::TelemetryConfig;
use crate::exchange::ExchangeConfig;
use crate::grants::{GrantsConfig, GrantsFile};
use crate::identity::AwsIamConfig;
use crate::identity::oidc::{TrustedIssuerConfig, TrustedIssuerFile};
use crate::listen::ListenConfig;
use crate::listen::ShutdownConfig;
use crate::mint::{SigningConfig, SigningFile, TokenConfig};

/// Everything the sidecar needs to run, validated and typed.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the listeners bind.
    pub listen: ListenConfig,
    /// What is minted.
    pub token: TokenConfig,
    /// Where the signing keys come from.
    pub signing: SigningConfig,
    /// Inbound identity providers; only these issuers are ever accepted.
    pub trust: Vec<TrustedIssuerConfig>,
    /// Client certificates as credentials.
    pub client_certs: ClientCertsConfig,
    /// AWS IAM identities as credentials.
    pub aws_iam: AwsIamConfig,
    /// Where grants come from.
    pub grants: GrantsConfig,
    /// How the OK answer shapes the request that goes on to the backend.
    pub response: ResponseConfig,
    /// `POST /exchange` on the side port.
    pub exchange: ExchangeConfig,
    /// How SIGTERM ends the process.
    pub shutdown: ShutdownConfig,
    /// The decision log.
    pub telemetry: TelemetryConfig,
    /// What is allowed but probably not meant (`check-config` prints these; `serve` logs them).
    pub warnings: Vec<ConfigProblem>,
}

/// The file as written; sections with one-of choices are typed in a second step so that
/// every problem of the file is found in one pass.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    listen: ListenConfig,
    token: TokenConfig,
    signing: SigningFile,
    #[serde(default)]
    trust: Vec<TrustedIssuerFile>,
    #[serde(default)]
    client_certs: ClientCertsConfig,
    #[serde(default)]
    aws_iam: AwsIamConfig,
    grants: GrantsFile,
    #[serde(default)]
    response: ResponseConfig,
    #[serde(default)]
    exchange: ExchangeConfig,
    #[serde(default)]
    shutdown: ShutdownConfig,
    #[serde(default)]
    telemetry: TelemetryConfig,
}

impl Config {
    /// Reads, parses and validates a config file. Relative paths inside it are resolved
    /// against the file's folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![ConfigProblem {
                path: String::new(),
                reason: format!(
                    "cannot read {}: {}",
                    path.display(),
                    crate::config_check::io_reason(&e)
                ),
            }],
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let mut config = Self::from_yaml(&text, base)?;
        let reread = {
            let path = path.to_owned();
            crate::grants::rules::ConfigRereader::new(move || {
                let config = Self::load(&path).map_err(|e| {
                    e.problems
                        .into_iter()
                        .map(|p| (format!("{}: {}", path.display(), p.path), p.reason))
                        .collect::<Vec<_>>()
                })?;
                Ok(config.grants.rules_inline())
            })
        };
        config.grants.watch_config_file(path, reread);
        Ok(config)
    }

    /// Parses and validates YAML text; relative paths are resolved against `base_dir`.
    pub fn from_yaml(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        match Self::inspect_yaml(text, base_dir) {
            (Some(config), problems) if problems.is_empty() => Ok(config),
            (_, problems) => Err(ConfigError { problems }),
        }
    }

    /// Everything `check-config` can find in one pass: the config as far as it could be typed
    /// (so its files can be checked too) and every problem — structural ones in every section,
    /// not just the first, then each section's own checks.
    pub fn inspect(path: &Path) -> (Option<Self>, Vec<ConfigProblem>) {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                let reason = format!(
                    "cannot read {}: {}",
                    path.display(),
                    crate::config_check::io_reason(&e)
                );
                return (
                    None,
                    vec![ConfigProblem {
                        path: String::new(),
                        reason,
                    }],
                );
            }
        };
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::inspect_yaml(&text, base)
    }

    fn inspect_yaml(text: &str, base_dir: &Path) -> (Option<Self>, Vec<ConfigProblem>) {
        let (file, mut problems) = parse_collecting(text);
        let Some(file) = file else {
            return (None, problems);
        };
        let mut check = ConfigCheck::new(base_dir);
        let config = file.into_config(&mut check);
        problems.extend(check.problems);
        let config = config.map(|mut config| {
            config.warnings = check.warnings;
            config
        });
        (config, problems)
    }
}

/// One structural problem, with serde's path (`serde_norway` prefixes its own shorter one).
fn structural_problem<E: std::fmt::Display>(
    e: serde_path_to_error::Error<E>,
) -> (ConfigProblem, Vec<String>) {
    let segments: Vec<String> = e.path().iter().map(|s| s.to_string()).collect();
    let path = e.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let mut reason = e.into_inner().to_string();
    if let Some((head, rest)) = reason.split_once(": ")
        && !head.contains(' ')
        && path.starts_with(head)
    {
        reason = rest.to_owned();
    }
    (ConfigProblem { path, reason }, segments)
}

/// Types the file, collecting a problem per broken key rather than stopping at the first: each
/// offending key is taken out (its section's default applies) and the rest is typed again. A
/// problem that taking a key out cannot cure (a required key missing) ends the search.
fn parse_collecting(text: &str) -> (Option<ConfigFile>, Vec<ConfigProblem>) {
    let first = serde_path_to_error::deserialize(serde_norway::Deserializer::from_str(text));
    let (problem, mut segments) = match first {
        Ok(file) => return (Some(file), Vec::new()),
        Err(e) => structural_problem(e),
    };
    let mut problems = vec![problem];
    let Ok(mut value) = serde_norway::from_str::<serde_norway::Value>(text) else {
        return (None, problems);
    };
    for _ in 0..64 {
        if !remove_at(&mut value, &segments) {
            return (None, problems);
        }
        match serde_path_to_error::deserialize::<_, ConfigFile>(value.clone()) {
            Ok(file) => return (Some(file), problems),
            Err(e) => {
                let (problem, next) = structural_problem(e);
                if problems.iter().any(|p| p.path == problem.path) {
                    return (None, problems);
                }
                problems.push(problem);
                segments = next;
            }
        }
    }
    (None, problems)
}

/// Takes the key or item at `segments` out of `value`; false when there is nothing to take.
fn remove_at(value: &mut serde_norway::Value, segments: &[String]) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut here = value;
    for segment in parents {
        let next = match here {
            serde_norway::Value::Mapping(map) => map.get_mut(segment.as_str()),
            serde_norway::Value::Sequence(items) => {
                segment.parse::<usize>().ok().and_then(|i| items.get_mut(i))
            }
            _ => None,
        };
        match next {
            Some(next) => here = next,
            None => return false,
        }
    }
    match here {
        serde_norway::Value::Mapping(map) => map.remove(last.as_str()).is_some(),
        serde_norway::Value::Sequence(items) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => {
                items.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

impl ConfigFile {
    /// Hands each section to its stage; `None` when a section could not be typed (its
    /// problems are in `check`).
    fn into_config(mut self, check: &mut ConfigCheck) -> Option<Config> {
        self.token.check("token", check);
        let signing = SigningConfig::from_file(self.signing, "signing", check);
        let trust: Vec<Option<TrustedIssuerConfig>> = self
            .trust
            .into_iter()
            .enumerate()
            .map(|(i, issuer)| TrustedIssuerConfig::from_file(issuer, i, check))
            .collect();
        for (i, issuer) in trust.iter().enumerate() {
            let Some(issuer) = issuer else { continue };
            if trust[..i]
                .iter()
                .flatten()
                .any(|other| other.issuer == issuer.issuer)
            {
                check.problem(format!("trust[{i}].issuer"), "listed twice");
            }
        }
        self.client_certs.check("client_certs", check);
        self.aws_iam.check("aws_iam", check);
        if trust.is_empty() && !self.client_certs.enabled && !self.aws_iam.enabled {
            check.problem(
                "trust",
                "no trusted issuer: every bearer token would be refused",
            );
        }
        let grants = GrantsConfig::from_file(self.grants, "grants", check);
        if let Some(grants) = &grants
            && self.aws_iam.enabled
            && !grants.sources.iter().any(|s| s.answers_for_iam())
        {
            check.warning(
                "grants.sources",
                "aws_iam is enabled but no source is keyed by role ARN (iam_role_tags, \
                 dynamodb): IAM callers get grants only where the grants file lists their ARN",
            );
        }
        self.response.check("response", check);
        self.exchange.check("exchange", check);
        self.listen.check("listen", &self.client_certs, check);
        self.telemetry
            .decision_log
            .check("telemetry.decision_log", check);
        self.telemetry.otlp.check("telemetry.otlp", check);
        Some(Config {
            listen: self.listen,
            token: self.token,
            signing: signing?,
            trust: trust.into_iter().collect::<Option<Vec<_>>>()?,
            client_certs: self.client_certs,
            aws_iam: self.aws_iam,
            grants: grants?,
            response: self.response,
            exchange: self.exchange,
            shutdown: self.shutdown,
            telemetry: self.telemetry,
            warnings: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::mint::SigningSource;

    const MINIMAL: &str = "
token: { issuer: https://tv.example.com }
signing: { dev_generate: true }
trust: [ { issuer: https://idp.example.com } ]
grants: { file: grants.yaml }
";

    fn paths(err: ConfigError) -> Vec<String> {
        err.problems.into_iter().map(|p| p.path).collect()
    }

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let config = Config::from_yaml(MINIMAL, Path::new("/etc/tv")).unwrap();
        assert_eq!(
            config.listen.authz.tcp(),
            Some("127.0.0.1:9001".parse().unwrap())
        );
        assert_eq!(config.token.lifetime, Duration::from_secs(3600));
        assert_eq!(config.token.grants_claim, "evs:grants");
        assert_eq!(config.trust[0].leeway, Duration::from_secs(60));
        assert!(matches!(config.signing.source, SigningSource::DevGenerate));
        assert_eq!(
            config.grants.sources,
            vec![crate::grants::GrantSourceConfig::File(PathBuf::from(
                "/etc/tv/grants.yaml"
            ))]
        );
        assert_eq!(
            config.response.remove_headers,
            vec!["x-forwarded-client-cert"]
        );
    }

    #[test]
    fn unknown_key_is_reported_with_its_path() {
        let text = MINIMAL.replace("issuer: https://tv", "isuer: x, issuer: https://tv");
        let err = Config::from_yaml(&text, Path::new(".")).unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert!(err.problems[0].reason.contains("isuer"), "{err}");
        assert_eq!(err.problems[0].path, "token.isuer");
    }

    #[test]
    fn bad_duration_names_the_key() {
        let text = MINIMAL.replace(
            "issuer: https://tv.example.com",
            "issuer: https://tv.example.com, lifetime: soon",
        );
        let err = Config::from_yaml(&text, Path::new(".")).unwrap_err();
        assert_eq!(paths(err), vec!["token.lifetime"]);
    }

    #[test]
    fn every_semantic_problem_is_listed() {
        let text = "
token: { issuer: not-a-url }
signing: { dev_generate: true, key_file: k.pem }
trust:
  - { issuer: http://idp.example.com, algorithms: [RS256, none] }
  - { issuer: https://idp2.example.com, jwks_uri: http://10.0.0.1/jwks, algorithms: [HS256] }
grants: { source: file }
response: { remove_headers: [Authorization] }
";
        let err = Config::from_yaml(text, Path::new(".")).unwrap_err();
        assert_eq!(
            paths(err),
            vec![
                "token.issuer",
                "signing",
                "trust[0].issuer",
                "trust[0].algorithms",
                "trust[1].jwks_uri",
                "trust[1].algorithms",
                "grants.file",
                "response.remove_headers[0]",
            ]
        );
    }

    #[test]
    fn an_issuer_listed_twice_is_named_at_its_second_place() {
        let text = MINIMAL.replace(
            "trust: [ { issuer: https://idp.example.com } ]",
            "trust: [ { issuer: https://idp.example.com }, { issuer: https://idp.example.com } ]",
        );
        let err = Config::from_yaml(&text, Path::new(".")).unwrap_err();
        assert_eq!(paths(err), vec!["trust[1].issuer"]);
    }

    #[test]
    fn a_certificate_only_deployment_needs_no_issuer_but_some_credential_source_is_required() {
        let no_trust = MINIMAL.replace("trust: [ { issuer: https://idp.example.com } ]\n", "");
        let err = Config::from_yaml(&no_trust, Path::new(".")).unwrap_err();
        assert_eq!(paths(err), vec!["trust"]);
        let certs_only = format!("{no_trust}client_certs: {{ enabled: true }}\n");
        assert!(Config::from_yaml(&certs_only, Path::new(".")).is_ok());
    }

    #[test]
    fn aws_iam_needs_a_server_id_and_warns_without_a_source_keyed_by_role_arn() {
        let iam = format!("{MINIMAL}aws_iam: {{ enabled: true }}\n");
        let err = Config::from_yaml(&iam, Path::new(".")).unwrap_err();
        assert_eq!(paths(err), vec!["aws_iam.server_id"]);
        let iam = format!("{MINIMAL}aws_iam: {{ enabled: true, server_id: evs-prod }}\n");
        let config = Config::from_yaml(&iam, Path::new(".")).unwrap();
        assert_eq!(config.warnings[0].path, "grants.sources");
        let with_tags = iam.replace(
            "grants: { file: grants.yaml }",
            "grants: { sources: [iam_role_tags, file], file: grants.yaml }",
        );
        assert!(
            Config::from_yaml(&with_tags, Path::new("."))
                .unwrap()
                .warnings
                .is_empty()
        );
        let far_sts = iam.replace(
            "server_id: evs-prod",
            "server_id: evs-prod, sts_endpoint: 'http://10.0.0.1:4566'",
        );
        assert_eq!(
            paths(Config::from_yaml(&far_sts, Path::new(".")).unwrap_err()),
            vec!["aws_iam.sts_endpoint"]
        );
    }

    #[test]
    fn source_and_sources_are_one_setting() {
        let both = MINIMAL.replace(
            "grants: { file: grants.yaml }",
            "grants: { source: file, sources: [file], file: grants.yaml }",
        );
        assert_eq!(
            paths(Config::from_yaml(&both, Path::new(".")).unwrap_err()),
            vec!["grants.sources"]
        );
        let twice = MINIMAL.replace(
            "grants: { file: grants.yaml }",
            "grants: { sources: [file, file], file: grants.yaml }",
        );
        assert_eq!(
            paths(Config::from_yaml(&twice, Path::new(".")).unwrap_err()),
            vec!["grants.sources[1]"]
        );
    }
}
