//! The decision log: one JSON line per decision, the line an operator greps for when a caller
//! asks why they got a 401.
//!
//! `telemetry.decision_log` turns it on. Every denial is written; successes are sampled at
//! `sample_ok` (0–1). Lines go to stdout or are appended to a file by one background task, so a
//! Check never waits for a disk: when the queue of unwritten lines is full, a line is dropped
//! and counted instead (`evs_tv_decision_log_dropped_total`). A line holds who (issuer,
//! subject), how (front door, credential kind), what (outcome, HTTP status, reason, `kid`, cache
//! hit) and how long each stage took — never a token, a key or a certificate: reasons are this
//! crate's fixed texts, and no field is copied from a credential but the verified subject and
//! issuer.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::config_check::ConfigCheck;
use crate::stage_times::StageTimes;
use crate::telemetry::Metrics;

/// Lines waiting for the writer before new ones are dropped.
const QUEUE_LINES: usize = 8192;

/// `telemetry:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `telemetry.decision_log`.
    pub decision_log: DecisionLogConfig,
    /// `telemetry.otlp`: where traces go.
    pub otlp: crate::telemetry::OtlpConfig,
    /// Put verified subjects on spans (off: a trace backend often has wider access than logs).
    pub trace_subjects: bool,
    /// The `evs_tv_stage_duration` histograms (on by default; four observations per Check).
    pub stage_metrics: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            decision_log: DecisionLogConfig::default(),
            otlp: crate::telemetry::OtlpConfig::default(),
            trace_subjects: false,
            stage_metrics: true,
        }
    }
}

/// `telemetry.decision_log:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecisionLogConfig {
    /// Off unless set.
    pub enabled: bool,
    /// The share of successful decisions written (denials always are).
    pub sample_ok: f64,
    /// `stdout`, or a file appended to (relative to the config file's folder).
    pub path: String,
}

impl Default for DecisionLogConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            sample_ok: 0.01,
            path: "stdout".to_owned(),
        }
    }
}

impl DecisionLogConfig {
    /// Checks the section and resolves a relative file path against the config's folder.
    pub(crate) fn check(&mut self, path: &str, check: &mut ConfigCheck) {
        if !(0.0..=1.0).contains(&self.sample_ok) {
            check.problem(format!("{path}.sample_ok"), "must be between 0 and 1");
        }
        if self.path.trim().is_empty() {
            check.problem(format!("{path}.path"), "must be `stdout` or a file path");
        } else if self.path != "stdout" {
            let mut file = PathBuf::from(&self.path);
            check.resolve(&mut file);
            self.path = file.to_string_lossy().into_owned();
        }
    }
}

/// Envoy's `x-request-id` for the logs: at most 128 visible ASCII characters, else `-` (a
/// header is caller-controlled text and must not forge log lines).
pub(crate) fn request_id<'a>(values: &[&'a [u8]]) -> &'a str {
    match values {
        [one] if one.len() <= 128 && one.iter().all(|b| b.is_ascii_graphic()) => {
            std::str::from_utf8(one).unwrap_or("-")
        }
        _ => "-",
    }
}

/// One decision; written with its `time` in front.
#[derive(Debug, Serialize)]
pub struct Decision<'a> {
    pub request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
    /// `ext_authz` or `exchange`.
    pub front_door: &'static str,
    /// `bearer`, `aws_iam`, `certificate` or `bearer+certificate`; absent when none was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<&'a str>,
    /// `ok`, `unauthenticated`, `forbidden` or `unavailable`.
    pub outcome: &'static str,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_hit: Option<bool>,
    pub stages: StageTimes,
}

/// The running decision log.
pub struct DecisionLog {
    lines: tokio::sync::mpsc::Sender<String>,
    sample_ok: f64,
    /// State of the sampling generator (SplitMix64).
    sampler: AtomicU64,
    metrics: Arc<Metrics>,
}

impl DecisionLog {
    /// Opens the destination and starts the writer; `None` when the log is off.
    /// The writer runs in `background` and is flushed when it stops.
    pub async fn start(
        config: &DecisionLogConfig,
        metrics: Arc<Metrics>,
        background: &crate::background::Background,
    ) -> Result<Option<Self>, std::io::Error> {
        if !config.enabled {
            return Ok(None);
        }
        let out: Box<dyn tokio::io::AsyncWrite + Send + Unpin> = if config.path == "stdout" {
            Box::new(tokio::io::stdout())
        } else {
            let path = PathBuf::from(&config.path);
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await?;
            Box::new(file)
        };
        let (lines, queued) = tokio::sync::mpsc::channel(QUEUE_LINES);
        background.spawn_to_the_end(write_lines(queued, out, background.stop_signal()));
        let seed = crate::clock::unix_now() ^ u64::from(std::process::id()).rotate_left(32);
        Ok(Some(Self {
            lines,
            sample_ok: config.sample_ok,
            sampler: AtomicU64::new(seed),
            metrics,
        }))
    }

    /// Writes `decision` if it is a denial or a sampled success; never waits.
    pub fn record(&self, decision: &Decision<'_>) {
        if decision.outcome == "ok" && !self.sampled() {
            return;
        }
        /// The line: the time it was written (RFC 3339, UTC, milliseconds), then the decision.
        #[derive(Serialize)]
        struct Stamped<'d, 'a> {
            time: String,
            #[serde(flatten)]
            decision: &'d Decision<'a>,
        }
        let stamped = Stamped {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            decision,
        };
        let Ok(mut line) = serde_json::to_string(&stamped) else {
            return;
        };
        line.push('\n');
        if self.lines.try_send(line).is_err() {
            self.metrics.decision_log_dropped();
        }
    }

    /// Whether this success is among the `sample_ok` share.
    fn sampled(&self) -> bool {
        if self.sample_ok >= 1.0 {
            return true;
        }
        // SplitMix64 over a shared counter: uniform enough for sampling, no lock, no syscall.
        let mut z = self
            .sampler
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64) < self.sample_ok
    }
}

/// Writes queued lines, a batch per wake-up, flushed after each batch. On the stop signal it
/// writes what is still queued, flushes and ends.
async fn write_lines(
    mut queued: tokio::sync::mpsc::Receiver<String>,
    mut out: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut batch = Vec::with_capacity(64 * 1024);
    loop {
        let line = tokio::select! {
            line = queued.recv() => line,
            () = stop.cancelled() => {
                // The listeners have stopped: nothing more will be queued.
                queued.close();
                queued.recv().await
            }
        };
        let Some(line) = line else {
            break;
        };
        batch.extend_from_slice(line.as_bytes());
        while batch.len() < 60 * 1024 {
            match queued.try_recv() {
                Ok(line) => batch.extend_from_slice(line.as_bytes()),
                Err(_) => break,
            }
        }
        if let Err(e) = async {
            out.write_all(&batch).await?;
            out.flush().await
        }
        .await
        {
            tracing::warn!(error = %e, "could not write the decision log");
        }
        batch.clear();
    }
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`) or a B3
/// `x-b3-traceid` value; `None` for anything else (a header is caller-controlled text).
pub fn trace_id<'a>(traceparent: Option<&'a [u8]>, b3: Option<&'a [u8]>) -> Option<&'a str> {
    let hex = |bytes: &[u8]| bytes.iter().all(u8::is_ascii_hexdigit);
    if let Some(value) = traceparent
        && value.len() == 55
        && value[2] == b'-'
        && value[35] == b'-'
        && value[52] == b'-'
        && hex(&value[3..35])
        && value[3..35].iter().any(|b| *b != b'0')
    {
        return std::str::from_utf8(&value[3..35]).ok();
    }
    b3.filter(|v| (v.len() == 16 || v.len() == 32) && hex(v))
        .and_then(|v| std::str::from_utf8(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_only_from_well_formed_headers() {
        let parent = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_id(Some(parent), None),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let zero = b"00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        assert_eq!(trace_id(Some(zero), None), None);
        assert_eq!(trace_id(Some(b"00-\"forged\"\n"), None), None);
        assert_eq!(
            trace_id(None, Some(b"463ac35c9f6413ad")),
            Some("463ac35c9f6413ad")
        );
        assert_eq!(trace_id(None, Some(b"not-hex-at-all!!")), None);
    }

    #[test]
    fn sampling_keeps_about_the_configured_share() {
        let log = DecisionLog {
            lines: tokio::sync::mpsc::channel(1).0,
            sample_ok: 0.1,
            sampler: AtomicU64::new(42),
            metrics: Arc::default(),
        };
        let kept = (0..100_000).filter(|_| log.sampled()).count();
        assert!((9_000..11_000).contains(&kept), "{kept} of 100,000 kept");
    }
}
