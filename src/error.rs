//! The error of the client-facing calls (historical download, login, search).

use std::{io, time::Duration};

/// Why a call to TradingView (or the simulator) failed.
///
/// Each variant says whether retrying can help. No variant ever holds a token or a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server does not know the symbol (`symbol_error "invalid symbol"`). Do not retry.
    #[error("unknown symbol {symbol}: {reason}")]
    UnknownSymbol {
        /// The symbol asked for.
        symbol: String,
        /// The server's reason.
        reason: String,
    },
    /// The account may not see the symbol (`symbol_error "permission denied"`). Sign in with an
    /// account that has the data group.
    #[error("permission denied for {symbol} ({kind}: {detail})")]
    PermissionDenied {
        /// The symbol asked for.
        symbol: String,
        /// `group` or `symbol`.
        kind: String,
        /// The group (`economics_paid`) or symbol.
        detail: String,
    },
    /// The account may not use this resolution (`seconds_not_entitled`, `custom_resolution`…).
    #[error("interval {interval} is not available: {reason}")]
    IntervalNotEntitled {
        /// The resolution asked for.
        interval: String,
        /// The server's reason.
        reason: String,
    },
    /// The server rejected the request's arguments (`critical_error`).
    #[error("invalid parameters: {reason} ({detail})")]
    InvalidParameters {
        /// The server's reason.
        reason: String,
        /// The server's detail.
        detail: String,
    },
    /// The server rejected the auth token (`protocol_error "bad auth token"`). Get a new token.
    #[error("the server rejected the auth token")]
    AuthRejected,
    /// The server broke the protocol or sent something we cannot read. Retrying may help.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The call did not complete within its deadline. Retrying may help.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The server closed the connection before the answer was complete. Retrying may help.
    #[error("connection closed by the server")]
    Closed,
    /// A network error. Retrying may help.
    #[error("i/o error ({kind:?}): {message}")]
    Io {
        /// The I/O error kind.
        kind: io::ErrorKind,
        /// Its message.
        message: String,
    },
    /// TLS failed (certificate not trusted, handshake refused).
    #[error("tls error: {0}")]
    Tls(String),
    /// The server answered the websocket upgrade or an HTTPS call with an error status (403:
    /// headers refused; 429: rate limited, retry later).
    #[error("http status {status}")]
    HttpStatus {
        /// The status code.
        status: u16,
    },
    /// The request itself is invalid (bad endpoint, zero bars…). Fix the call.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Sign-in: wrong username or password.
    #[error("sign-in failed: wrong username or password")]
    WrongCredentials,
    /// Sign-in needs a two-factor code: call again with one.
    #[error("sign-in needs a two-factor code")]
    TwoFactorRequired,
    /// Sign-in needs a captcha: sign in with a browser and pass its auth token instead.
    #[error("sign-in needs a captcha: sign in with a browser and use its auth token")]
    CaptchaRequired,
    /// Sign-in or search was rate limited: wait and retry.
    #[error("rate limited by the server")]
    RateLimited,
    /// An HTTPS answer we could not read.
    #[error("unexpected http answer: {0}")]
    Http(String),
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        if let Some(tls) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Self::Tls(tls.to_string());
        }
        Self::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

/// Results of this crate's client calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;
