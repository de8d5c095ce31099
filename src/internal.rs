//! Internals reachable by the crate's own benches, fuzz targets and loom tests.
//!
//! Not public API: nothing here follows semver, and it may change in any release.

pub use crate::protocol::fuzzing;

/// User or server input cut to 80 characters for an error message, as the library's own
/// errors echo it (the command line's errors use it too).
pub use crate::error::echo;

/// Fuzz harness of the live engine's core (arbitrary server bytes, commands, time, drops).
/// Built only under `cargo fuzz` (`--cfg fuzzing`).
#[cfg(fuzzing)]
pub use crate::live::fuzz::engine_core;
pub use crate::registry::{ConsumerId, Entry, Registry, Removed, Snapshot};
pub use crate::timer::{TimerKey, TimerWheel};

/// The gate a consumer's callback passes (the last step of the consumer-removal contract),
/// for the loom model.
pub use crate::live::gate::Gate;

/// The dispatcher threads' hand-off (several rings, one sleeper) and loop, for the loom model.
pub mod dispatch {
    pub use crate::live::dispatch::{BUDGET, Dispatchable, Dispatcher, Home, Step};
}

/// The built-in statistics' per-event work, for the latency harness to time.
pub use crate::live::StatsProbe;

/// The live engine's non-blocking transport, for the integration tests that drive it through
/// a `mio::Poll` loop.
pub mod transport {
    pub use crate::transport::nonblocking::{NbSocket, Progress};
}

/// Fuzz harness for the HTTPS answer parsers: any body gives a typed result; a token found is
/// non-empty and bounded; search results are bounded.
pub fn http_bodies(data: &[u8]) {
    if let Ok(crate::http::SignIn::Token(t)) = crate::http::parse_sign_in(data) {
        assert!(!t.expose().is_empty() && t.expose().len() < 16_384);
    }
    if let Ok(results) = crate::http::parse_search(data) {
        assert!(results.len() <= 1_000);
    }
}
