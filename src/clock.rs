//! Wall-clock time in the form tokens use: whole seconds since the Unix epoch.
//!
//! Every stage that compares against a token's `exp` or writes `iat` reads the clock here, so
//! a test or a benchmark sees one notion of "now".

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
