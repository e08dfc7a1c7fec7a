//! How long each stage of a decision took: measured by the pipeline from the `Instant`s it
//! takes anyway, counted by the metrics and written by the decision log (so it sits below
//! both).

use std::time::Duration;

use serde::Serialize;

/// How long each stage of a decision took; a stage that did not run is absent.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct StageTimes {
    #[serde(rename = "extract_us", skip_serializing_if = "Option::is_none")]
    pub extract: Option<Micros>,
    #[serde(rename = "authenticate_us", skip_serializing_if = "Option::is_none")]
    pub authenticate: Option<Micros>,
    #[serde(rename = "grants_us", skip_serializing_if = "Option::is_none")]
    pub grants: Option<Micros>,
    #[serde(rename = "mint_us", skip_serializing_if = "Option::is_none")]
    pub mint: Option<Micros>,
}

/// A duration written as whole microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Micros(pub Duration);

impl Serialize for Micros {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(self.0.as_micros()).unwrap_or(u64::MAX))
    }
}
