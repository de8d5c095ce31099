//! What both transports share: the upgrade request (path, `Origin`, `User-Agent`), the
//! `WebSocketConfig`, the rustls client configuration (built once per set of roots and
//! cached, so a reconnect does not rebuild it), and the mapping of handshake failures to
//! [`TransportError`]s that name the phase and the host.

use std::io;

use tungstenite::{
    client::IntoClientRequest, handshake::client::Request, http::HeaderValue,
    protocol::WebSocketConfig,
};

use super::{Cause, Closed, IoSource, TransportConfig, TransportError};
use crate::{
    sync::plain::{Arc, Mutex},
    vocab::Phase,
};

/// The browser User-Agent TradingView's WAF expects (protocol.md §1.2).
pub const USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// The `Origin` TradingView accepts.
pub const ORIGIN: &str = "https://www.tradingview.com";

/// The upgrade request for `cfg`'s endpoint, with the headers real clients send.
pub(crate) fn request(cfg: &TransportConfig) -> Result<Request, TransportError> {
    let mut req = cfg
        .endpoint
        .to_string()
        .into_client_request()
        .map_err(|e| {
            TransportError::InvalidConfig(format!(
                "bad endpoint {}: {}",
                crate::vocab::echo(&cfg.endpoint.to_string()),
                crate::vocab::echo(&e.to_string())
            ))
        })?;
    let headers = req.headers_mut();
    for (k, v) in [
        ("Origin", ORIGIN),
        ("User-Agent", USER_AGENT),
        ("Accept-Language", "en-US,en;q=0.9"),
        ("Cache-Control", "no-cache"),
        ("Pragma", "no-cache"),
    ] {
        headers.insert(k, HeaderValue::from_static(v));
    }
    Ok(req)
}

/// The websocket limits of `cfg`: messages and frames up to `max_message_size`, and a write
/// buffer bounded by `max_write_buffer` (past it a write is [`TransportError::Backpressure`]).
pub(crate) fn ws_config(cfg: &TransportConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(cfg.max_message_size))
        .max_frame_size(Some(cfg.max_message_size))
        // Writes go out at once (no batching past 0 bytes); the bound is the backpressure.
        .write_buffer_size(0)
        .max_write_buffer_size(cfg.max_write_buffer)
}

/// One cached rustls configuration and the roots it was built from.
#[derive(Debug)]
struct Cached {
    extra_roots: Vec<Vec<u8>>,
    webpki_roots: bool,
    config: Arc<rustls::ClientConfig>,
}

/// The rustls client configuration, built on first use and reused while the roots stay the
/// same. Clones of a [`TransportConfig`] share it.
#[derive(Debug, Default, Clone)]
pub(crate) struct TlsCache {
    cached: Arc<Mutex<Option<Cached>>>,
}

impl TlsCache {
    /// The configuration for `cfg`'s roots: the cached one if they did not change, else a new
    /// one (which replaces it). The lock is held only to compare and swap an `Arc`; building
    /// happens outside it.
    pub(crate) fn get(
        &self,
        cfg: &TransportConfig,
    ) -> Result<Arc<rustls::ClientConfig>, TransportError> {
        {
            let cached = self
                .cached
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(c) = cached.as_ref()
                && c.webpki_roots == cfg.webpki_roots
                && c.extra_roots == cfg.extra_roots
            {
                return Ok(Arc::clone(&c.config));
            }
        }
        let config = build(cfg)?;
        *self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Cached {
            extra_roots: cfg.extra_roots.clone(),
            webpki_roots: cfg.webpki_roots,
            config: Arc::clone(&config),
        });
        Ok(config)
    }

    /// Whether `other` shares this cache (tests).
    #[cfg(test)]
    pub(crate) fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.cached, &other.cached)
    }
}

fn build(cfg: &TransportConfig) -> Result<Arc<rustls::ClientConfig>, TransportError> {
    let mut roots = rustls::RootCertStore::empty();
    if cfg.webpki_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for der in &cfg.extra_roots {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|e| TransportError::InvalidConfig(format!("bad root certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::InvalidConfig(format!("tls setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The rustls error inside an `io::Error` our TLS adapter returned, if any.
fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Maps an I/O error met while talking to `host` in `phase`. `tls` says whether the URL was
/// `wss://`. `budget` is the call's deadline, for timeouts.
pub(crate) fn io_error(
    e: io::Error,
    host: &str,
    tls: bool,
    phase: Phase,
    budget: std::time::Duration,
) -> TransportError {
    if let Some(t) = tls_error(&e) {
        return tls_failure(t, host);
    }
    if e.get_ref()
        .is_some_and(|i| i.downcast_ref::<super::stream::TlsReply>().is_some())
    {
        return TransportError::TlsOnPlainUrl {
            host: host.to_owned(),
        };
    }
    if tls
        && e.get_ref()
            .is_some_and(|i| i.downcast_ref::<super::stream::HandshakeEof>().is_some())
    {
        return TransportError::NotTls {
            host: host.to_owned(),
        };
    }
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => TransportError::Timeout {
            host: host.to_owned(),
            after: budget,
            during: phase,
        },
        io::ErrorKind::UnexpectedEof => TransportError::Closed {
            host: host.to_owned(),
            how: Closed::Eof,
        },
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
            TransportError::Closed {
                host: host.to_owned(),
                how: Closed::Reset,
            }
        }
        _ => TransportError::Io {
            host: host.to_owned(),
            source: IoSource::from(e),
        },
    }
}

/// A rustls failure, named for what the user can do about it.
pub(crate) fn tls_failure(e: &rustls::Error, host: &str) -> TransportError {
    let host = host.to_owned();
    match e {
        rustls::Error::InvalidCertificate(_) => TransportError::CertificateNotTrusted {
            host,
            source: Cause::new(e.clone()),
        },
        // Plain HTTP bytes where a TLS record was expected.
        rustls::Error::InvalidMessage(_) => TransportError::NotTls { host },
        _ => TransportError::Tls {
            host,
            source: Cause::new(e.clone()),
        },
    }
}

/// Maps a tungstenite error met while talking to `host` in `phase`.
pub(crate) fn ws_error(
    e: tungstenite::Error,
    cfg: &TransportConfig,
    phase: Phase,
    budget: std::time::Duration,
) -> TransportError {
    let host = cfg.endpoint.host();
    match e {
        tungstenite::Error::Io(io) => io_error(io, host, cfg.endpoint.is_tls(), phase, budget),
        tungstenite::Error::Http(resp) => {
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok());
            TransportError::UpgradeRefused {
                host: host.to_owned(),
                status: resp.status().as_u16(),
                path: crate::vocab::echo(cfg.endpoint.path()),
                retry_after,
            }
        }
        tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => TransportError::Closed {
            host: host.to_owned(),
            how: Closed::Eof,
        },
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            TransportError::Closed {
                host: host.to_owned(),
                how: Closed::CloseFrame(None),
            }
        }
        tungstenite::Error::Tls(t) => TransportError::Tls {
            host: host.to_owned(),
            source: Cause::new(t),
        },
        tungstenite::Error::WriteBufferFull(_) => TransportError::Backpressure {
            host: host.to_owned(),
            limit: cfg.max_write_buffer,
        },
        // An answer to the upgrade that is not HTTP at all. (A plain URL's server answering
        // with TLS records never gets here: the stream reports it first, see `TlsReply`.)
        tungstenite::Error::Protocol(tungstenite::error::ProtocolError::HttparseError(_))
            if phase == Phase::Upgrade =>
        {
            TransportError::NotHttp {
                host: host.to_owned(),
            }
        }
        other if phase == Phase::Upgrade => TransportError::Upgrade {
            host: host.to_owned(),
            source: Cause::new(other),
        },
        other => TransportError::Protocol {
            host: host.to_owned(),
            source: Cause::new(other),
        },
    }
}
