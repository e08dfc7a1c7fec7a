//! The shared AWS SDK set-up: credentials, region and endpoint from the standard chain
//! (environment, profile, IRSA / Pod Identity, instance metadata), with config overrides, an
//! upper bound per call and bounded retries.

use std::time::Duration;

/// Loads an SDK config; `region` and `endpoint_url` override the chain when set.
pub(crate) async fn sdk_config(
    region: Option<&str>,
    endpoint_url: Option<&str>,
    call_timeout: Duration,
    max_attempts: u32,
) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_timeout(call_timeout)
                .build(),
        )
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(max_attempts));
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_owned()));
    }
    if let Some(endpoint) = endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}
