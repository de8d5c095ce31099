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

/// A seed for session-id generators that differs between calls and processes: the wall clock,
/// the process id and a process-wide counter.
pub(crate) fn id_seed() -> u64 {
    use crate::sync::plain::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // Relaxed: only uniqueness matters.
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    unix_ms() ^ n.rotate_left(32) ^ u64::from(std::process::id()).rotate_left(16)
}
