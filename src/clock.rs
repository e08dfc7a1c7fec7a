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

/// What carries the Unix time it stops being valid at (an `exp`, a window's end).
pub(crate) trait ExpiresAt {
    /// Unix seconds.
    fn expires_at(&self) -> u64;
}

impl ExpiresAt for u64 {
    fn expires_at(&self) -> u64 {
        *self
    }
}

impl<T: ExpiresAt> ExpiresAt for std::sync::Arc<T> {
    fn expires_at(&self) -> u64 {
        (**self).expires_at()
    }
}

/// A cache entry lives until the time its value carries (at least a second: moka treats zero
/// as "expire at once").
pub(crate) struct UntilItExpires;

impl<K, V: ExpiresAt> moka::Expiry<K, V> for UntilItExpires {
    fn expire_after_create(
        &self,
        _key: &K,
        value: &V,
        _created_at: std::time::Instant,
    ) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(
            value.expires_at().saturating_sub(unix_now()).max(1),
        ))
    }
}
