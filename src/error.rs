//! The error of the client-facing calls: historical downloads, sign-in, search and the live
//! engine's commands.
//!
//! One enum for the public surface ([`Error`]), with the transport's failures nested in
//! [`TransportError`] and a series' refusal carried whole ([`SeriesFailure`], with the symbol
//! and interval asked for). Causes stay reachable through [`std::error::Error::source`]. No
//! variant ever holds a token or a password, and every message names what the call was about.

use std::time::Duration;

use crate::{Interval, Symbol, protocol::SeriesFailure, transport::TransportError};

#[cfg(test)]
use crate::vocab::MAX_ECHO;
pub use crate::vocab::{HumanDuration, Phase, echo};

/// Why a call to TradingView (or the simulator) failed.
///
/// Each variant says whether retrying can help ([`Error::is_retryable`] sums it up).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server refused a series: unknown symbol, permission denied, interval not entitled,
    /// invalid parameters, or its history did not load in time. See
    /// [`SeriesFailure::is_retryable`].
    #[error("{symbol} {interval}: {failure}")]
    Series {
        /// The symbol asked for.
        symbol: Symbol,
        /// The interval asked for.
        interval: Interval,
        /// What the server said.
        #[source]
        failure: SeriesFailure,
    },
    /// The server rejected the auth token (`protocol_error "bad auth token"`). Final: get a new
    /// token (sign in again).
    #[error("the server rejected the auth token (sign in again or pass another token)")]
    AuthRejected,
    /// The server rejected a request's arguments for no series in particular
    /// (`critical_error`, e.g. `invalid timezone`). Fix the call.
    #[error("the server rejected the request: {reason} ({detail})")]
    InvalidParameters {
        /// The server's reason.
        reason: String,
        /// The server's detail.
        detail: String,
    },
    /// The server broke the protocol or sent something we cannot read. Retrying may help.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The call did not complete within its deadline. Retrying may help.
    #[error("timed out after {} ({during})", HumanDuration(*after))]
    Timeout {
        /// The deadline the call had.
        after: Duration,
        /// What it was doing when the deadline passed.
        during: Phase,
    },
    /// The websocket transport failed (connect, TLS, upgrade, the connection itself). See
    /// [`TransportError::is_retryable`].
    #[error(transparent)]
    Transport(TransportError),
    /// The server asked us to slow down (HTTP 429 on the websocket upgrade or an HTTPS call,
    /// or a `rate_limit` sign-in answer). Retry after `retry_after` when given, else later.
    #[error("rate limited by {host}{}", retry_after.map(|d| format!(" (retry after {})", HumanDuration(d))).unwrap_or_default())]
    RateLimited {
        /// The host that said so.
        host: String,
        /// Its `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// An HTTPS call (sign-in, search) got an error status other than 429.
    #[error("{host} answered http status {status}")]
    HttpStatus {
        /// The host.
        host: String,
        /// The status code.
        status: u16,
    },
    /// An HTTPS answer we could not read. The server may have changed its format.
    #[error("unexpected answer: {0}")]
    Http(String),
    /// A network error outside the websocket transport (an HTTPS call). Retrying may help.
    #[error("i/o error talking to {host}: {source}")]
    Io {
        /// The host.
        host: String,
        /// The cause.
        #[source]
        source: crate::transport::IoSource,
    },
    /// The request itself is invalid (zero bars, a reversed range…). Fix the call.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Sign-in: wrong username or password. Final.
    #[error("sign-in failed: wrong username or password")]
    WrongCredentials,
    /// Sign-in needs a two-factor code: call again with one.
    #[error("sign-in needs a two-factor code")]
    TwoFactorRequired,
    /// Sign-in needs a captcha: sign in with a browser and pass its auth token instead.
    #[error("sign-in needs a captcha: sign in with a browser and use its auth token")]
    CaptchaRequired,
    /// The live engine was shut down; every later call returns this. Final.
    #[error("the live feed is shut down")]
    Shutdown,
    /// The live engine stopped reconnecting: the limit set with
    /// [`LiveFeedBuilder::max_reconnect_attempts`](crate::LiveFeedBuilder::max_reconnect_attempts)
    /// or [`LiveFeedBuilder::max_outage`](crate::LiveFeedBuilder::max_outage) was reached.
    /// Final for that feed: build a new one.
    #[error(
        "gave up reconnecting after {attempts} failed attempt{} over {}; the last: {last}",
        if *attempts == 1 { "" } else { "s" },
        HumanDuration(*down)
    )]
    GaveUp {
        /// Failed attempts in the outage.
        attempts: u64,
        /// How long the connection had been down.
        down: Duration,
        /// The last attempt's error.
        #[source]
        last: Box<Error>,
    },
    /// A live-engine call named a seis that is not subscribed in this feed: every hold on it
    /// was released (`del_seis` as often as `new_seis`), or it belongs to another feed. Call
    /// `new_seis` again.
    #[error("{symbol} {interval} is not subscribed in this feed{}", if *other_feed { " (it belongs to another feed)" } else { " (each of its holds was released)" })]
    NotSubscribed {
        /// The seis' symbol.
        symbol: Symbol,
        /// The seis' interval.
        interval: Interval,
        /// It belongs to another feed (else it was released).
        other_feed: bool,
    },
    /// The live engine's command queue stayed full until the call's deadline: `tv-io` is far
    /// behind (a flood of commands, or a machine out of CPU). Retrying later may help.
    #[error("the live engine's command queue is full (its i/o thread is far behind)")]
    Overloaded,
    /// A thread could not be started (the process or the machine is out of threads or
    /// memory).
    #[error("cannot start thread {thread}: {source}")]
    Spawn {
        /// The thread's name.
        thread: String,
        /// The system's error.
        #[source]
        source: crate::transport::IoSource,
    },
}

impl Error {
    /// Whether the same call may succeed if made again (later, or on a new connection):
    /// timeouts, rate limits, transport and protocol failures, a series' load timeout. Not:
    /// a refused symbol or interval, a rejected token or password, an invalid request, a
    /// shut-down feed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tvdatafeed::{Error, Phase};
    ///
    /// assert!(Error::Timeout { after: Duration::from_secs(1), during: Phase::Answer }.is_retryable());
    /// assert!(!Error::AuthRejected.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Series { failure, .. } => failure.is_retryable(),
            Self::Transport(t) => t.is_retryable(),
            Self::Protocol(_)
            | Self::Timeout { .. }
            | Self::RateLimited { .. }
            | Self::Io { .. }
            | Self::Overloaded
            | Self::Spawn { .. } => true,
            Self::HttpStatus { status, .. } => *status >= 500,
            Self::AuthRejected
            | Self::InvalidParameters { .. }
            | Self::Http(_)
            | Self::InvalidRequest(_)
            | Self::WrongCredentials
            | Self::TwoFactorRequired
            | Self::CaptchaRequired
            | Self::Shutdown
            | Self::GaveUp { .. }
            | Self::NotSubscribed { .. } => false,
        }
    }

    /// The series failure, when the server refused a series.
    pub fn series_failure(&self) -> Option<&SeriesFailure> {
        match self {
            Self::Series { failure, .. } => Some(failure),
            _ => None,
        }
    }
}

impl From<TransportError> for Error {
    /// A 429 on the upgrade becomes [`Error::RateLimited`], as a 429 from HTTPS does; the
    /// transport's timeout, configuration and internal errors become [`Error::Timeout`],
    /// [`Error::InvalidRequest`] and [`Error::Protocol`], as every layer reports them.
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Timeout { after, during, .. } => Self::Timeout { after, during },
            TransportError::InvalidConfig(s) => Self::InvalidRequest(s),
            TransportError::Internal { what, .. } => Self::Protocol(what),
            TransportError::UpgradeRefused {
                host,
                status: 429,
                retry_after,
                ..
            } => Self::RateLimited {
                host,
                retry_after: retry_after.map(Duration::from_secs),
            },
            e => Self::Transport(e),
        }
    }
}

impl From<crate::SymbolError> for Error {
    fn from(e: crate::SymbolError) -> Self {
        Self::InvalidRequest(e.to_string())
    }
}

impl From<crate::IntervalError> for Error {
    fn from(e: crate::IntervalError) -> Self {
        Self::InvalidRequest(e.to_string())
    }
}

impl From<crate::EndpointError> for Error {
    fn from(e: crate::EndpointError) -> Self {
        Self::InvalidRequest(e.to_string())
    }
}

impl From<std::convert::Infallible> for Error {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}

/// Results of this crate's client calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_cuts_long_input() {
        assert_eq!(echo("BINANCE:BTCUSDT"), "BINANCE:BTCUSDT");
        let long = "X".repeat(10_000);
        let cut = echo(&long);
        assert_eq!(cut.chars().count(), MAX_ECHO + 1);
        assert!(cut.ends_with('…'));
        // Never splits a character.
        let wide = "é".repeat(200);
        assert!(echo(&wide).starts_with("éé"));
    }

    #[test]
    fn durations_print_for_people() {
        let h = |d: Duration| HumanDuration(d).to_string();
        assert_eq!(h(Duration::ZERO), "0 s");
        assert_eq!(h(Duration::from_micros(333)), "333 µs");
        assert_eq!(h(Duration::from_micros(1_500)), "1.5 ms");
        assert_eq!(h(Duration::from_millis(250)), "250 ms");
        assert_eq!(h(Duration::from_nanos(1_000_843_207)), "1.0 s");
        assert_eq!(h(Duration::from_secs(10)), "10 s");
        assert_eq!(h(Duration::from_millis(42_400)), "42 s");
        assert_eq!(h(Duration::from_secs(150)), "2.5 min");
        assert_eq!(h(Duration::from_secs(365 * 24 * 3600)), "8760 h");
        assert!(h(Duration::MAX).ends_with(" h"));
        let e = Error::Timeout {
            after: Duration::from_secs(10),
            during: Phase::Connect,
        };
        assert_eq!(e.to_string(), "timed out after 10 s (connecting)");
        let e = Error::RateLimited {
            host: "h".into(),
            retry_after: Some(Duration::from_secs(30)),
        };
        assert_eq!(e.to_string(), "rate limited by h (retry after 30 s)");
    }

    #[test]
    fn series_errors_name_symbol_and_interval() {
        let e = Error::Series {
            symbol: "BINANCE:NOPE".parse().unwrap(),
            interval: "1H".parse().unwrap(),
            failure: SeriesFailure::UnknownSymbol {
                reason: "invalid symbol".into(),
            },
        };
        assert_eq!(
            e.to_string(),
            "BINANCE:NOPE 60: unknown symbol (invalid symbol)"
        );
        assert!(!e.is_retryable());
        assert!(std::error::Error::source(&e).is_some());
    }
}
