//! The crate's one reading of the clocks. Everything else takes time as a parameter, so tests
//! and the sans-I/O layers stay deterministic, and clippy (`clippy.toml`) forbids any other
//! `Instant::now`.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The monotonic clock.
pub(crate) fn monotonic() -> Instant {
    #[expect(
        clippy::disallowed_methods,
        reason = "the crate's one monotonic clock reading"
    )]
    Instant::now()
}

/// Wall-clock milliseconds since the Unix epoch (0 before 1970).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}
