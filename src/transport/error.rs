//! The transport's failures, each naming the phase and the peer, with the cause kept as a
//! source.
#![forbid(unsafe_code)]

use std::{fmt, io};

use crate::sync::plain::Arc;

/// An I/O error kept as the source of a [`TransportError`] or an [`Error`](crate::Error):
/// cheap to clone, reachable through [`std::error::Error::source`].
#[derive(Clone)]
pub struct IoSource(Arc<io::Error>);

impl IoSource {
    /// The error's kind.
    pub fn kind(&self) -> io::ErrorKind {
        self.0.kind()
    }

    /// The error.
    pub fn get(&self) -> &io::Error {
        &self.0
    }
}

impl From<io::Error> for IoSource {
    fn from(e: io::Error) -> Self {
        Self(Arc::new(e))
    }
}

/// Equal when of the same kind with the same message: what a caller (or a test) can observe.
impl PartialEq for IoSource {
    fn eq(&self, other: &Self) -> bool {
        self.kind() == other.kind() && self.0.to_string() == other.0.to_string()
    }
}

impl fmt::Debug for IoSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for IoSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl std::error::Error for IoSource {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Any other cause (a TLS or websocket library error), kept as a source without naming its
/// type in our API.
#[derive(Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync>);

impl Cause {
    pub(crate) fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(e))
    }
}

/// Equal when the messages are: what a caller (or a test) can observe.
impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// How a connection ended without our asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Closed {
    /// The server sent a websocket close frame (with its code, when it gave one).
    CloseFrame(Option<u16>),
    /// The TCP connection ended (EOF) without a close frame.
    Eof,
    /// The TCP connection was reset.
    Reset,
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CloseFrame(Some(code)) => write!(f, "close frame {code}"),
            Self::CloseFrame(None) => f.write_str("close frame"),
            Self::Eof => f.write_str("end of stream without a close frame"),
            Self::Reset => f.write_str("connection reset"),
        }
    }
}

/// Why the websocket transport failed. Every message names the host (or address) and the
/// phase; none holds a credential.
///
/// All are worth a retry except [`TransportError::CertificateNotTrusted`],
/// [`TransportError::NotTls`], [`TransportError::TlsOnPlainUrl`],
/// [`TransportError::NotHttp`] and most
/// [`TransportError::UpgradeRefused`] statuses, which need a change of configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The host name could not be resolved.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host.
        host: String,
        /// The resolver's error.
        #[source]
        source: IoSource,
    },
    /// The host name resolved to no address.
    #[error("{host} resolves to no address")]
    NoAddress {
        /// The host.
        host: String,
    },
    /// Nobody listens at the address.
    #[error("connection refused by {addr}")]
    Refused {
        /// `ip:port`.
        addr: String,
    },
    /// The TCP connection could not be opened for another reason.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `ip:port`.
        addr: String,
        /// The cause.
        #[source]
        source: IoSource,
    },
    /// The server's certificate is not signed by a trusted root (or names another host).
    #[error(
        "certificate of {host} not trusted: {source} (pass --ca-cert FILE, or trust its root with with_root_certificate)"
    )]
    CertificateNotTrusted {
        /// The host.
        host: String,
        /// rustls' verdict.
        #[source]
        source: Cause,
    },
    /// A `wss://` URL, but the server does not speak TLS.
    #[error("wss:// URL but {host} is not a TLS server (use ws://)")]
    NotTls {
        /// The host.
        host: String,
    },
    /// A `ws://` URL, but the server speaks TLS.
    #[error("ws:// URL but {host} speaks TLS (use wss://)")]
    TlsOnPlainUrl {
        /// The host.
        host: String,
    },
    /// The server answered the websocket upgrade with something that is not HTTP: not a
    /// websocket server (a wrong port, another protocol).
    #[error("{host} is not an HTTP/websocket server (its answer to the upgrade is not HTTP)")]
    NotHttp {
        /// The host.
        host: String,
    },
    /// The TLS handshake or record layer failed for another reason.
    #[error("tls with {host} failed: {source}")]
    Tls {
        /// The host.
        host: String,
        /// rustls' error.
        #[source]
        source: Cause,
    },
    /// The server answered the websocket upgrade with an error status (403: headers or
    /// `Origin` refused; 404: wrong path). 429 becomes [`Error::RateLimited`](crate::Error).
    #[error("upgrade refused by {host}: {status} at {path}")]
    UpgradeRefused {
        /// The host.
        host: String,
        /// The HTTP status.
        status: u16,
        /// The path asked for (with its query).
        path: String,
        /// The `Retry-After` header, in seconds, when the server sent one.
        retry_after: Option<u64>,
    },
    /// The upgrade failed otherwise (not an HTTP answer, a bad handshake).
    #[error("websocket upgrade with {host} failed: {source}")]
    Upgrade {
        /// The host.
        host: String,
        /// The websocket library's error.
        #[source]
        source: Cause,
    },
    /// The connection ended without our asking.
    #[error("connection closed by {host} ({how})")]
    Closed {
        /// The host.
        host: String,
        /// How.
        how: Closed,
    },
    /// Reading or writing the socket failed.
    #[error("i/o error on the connection to {host}: {source}")]
    Io {
        /// The host.
        host: String,
        /// The cause.
        #[source]
        source: IoSource,
    },
    /// The server broke the websocket protocol (a bad frame, a message over the size limit).
    #[error("websocket protocol error from {host}: {source}")]
    Protocol {
        /// The host.
        host: String,
        /// The websocket library's error.
        #[source]
        source: Cause,
    },
    /// The call's deadline passed while it was `during` a step (connect, TLS, upgrade, an
    /// answer). Becomes [`Error::Timeout`](crate::Error::Timeout).
    #[error("timed out after {} ({during}) with {host}", crate::vocab::HumanDuration(*after))]
    Timeout {
        /// The host.
        host: String,
        /// The deadline the call had.
        after: std::time::Duration,
        /// The step.
        during: crate::vocab::Phase,
    },
    /// The configuration cannot be used (a root certificate, the server's name, the upgrade
    /// request built from the endpoint). Becomes
    /// [`Error::InvalidRequest`](crate::Error::InvalidRequest).
    #[error("{0}")]
    InvalidConfig(String),
    /// The transport's own invariant failed (a request that is not text, a lost handshake
    /// state): a bug here, not the server's. Becomes [`Error::Protocol`](crate::Error::Protocol).
    #[error("transport error with {host}: {what}")]
    Internal {
        /// The host.
        host: String,
        /// What went wrong.
        what: String,
    },
    /// The server does not read what we send: the write buffer reached its bound. The
    /// connection should be dropped.
    #[error("{host} is not reading: the write buffer is full ({limit} bytes)")]
    Backpressure {
        /// The host.
        host: String,
        /// The bound.
        limit: usize,
    },
}

impl TransportError {
    /// Whether retrying (reconnecting) may help without a change of configuration.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::CertificateNotTrusted { .. }
            | Self::NotTls { .. }
            | Self::TlsOnPlainUrl { .. }
            | Self::NotHttp { .. }
            | Self::InvalidConfig(_) => false,
            Self::UpgradeRefused { status, .. } => *status == 429 || *status >= 500,
            _ => true,
        }
    }
}
