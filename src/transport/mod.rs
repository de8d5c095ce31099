//! Websocket transport to TradingView (or the simulator): TCP or rustls, the upgrade headers
//! real clients need, typed refusals, and a deadline on every blocking call.
//!
//! `blocking` serves the historical client: one connection per call, every read and write
//! bounded by the call's deadline. The live engine's non-blocking transport (mio) comes next.

mod blocking;
mod stream;
mod url;

pub(crate) use blocking::Connection;
pub(crate) use stream::MaybeTls;
pub use url::{Endpoint, EndpointError};

use crate::sync::Arc;

/// The browser User-Agent TradingView's WAF expects (protocol.md §1.2).
pub const USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// The `Origin` TradingView accepts.
pub const ORIGIN: &str = "https://www.tradingview.com";

/// How to reach the server: endpoint and TLS trust.
#[derive(Clone)]
#[non_exhaustive]
pub struct TransportConfig {
    /// Where to connect. Default [`Endpoint::data`].
    pub endpoint: Endpoint,
    /// Extra trusted root certificates (DER), e.g. the simulator's. Default none.
    pub extra_roots: Vec<Vec<u8>>,
    /// Trust the Mozilla roots of `webpki-roots`. Default `true`.
    pub webpki_roots: bool,
    /// Largest websocket message accepted. Default 8 MiB (a 20,000-bar load is about 2 MB).
    pub max_message_size: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            endpoint: Endpoint::data(),
            extra_roots: Vec::new(),
            webpki_roots: true,
            max_message_size: 8 << 20,
        }
    }
}

impl std::fmt::Debug for TransportConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportConfig")
            .field("endpoint", &self.endpoint)
            .field("extra_roots", &self.extra_roots.len())
            .field("webpki_roots", &self.webpki_roots)
            .field("max_message_size", &self.max_message_size)
            .finish()
    }
}

impl TransportConfig {
    /// Sets the endpoint.
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoint = endpoint;
        self
    }

    /// Trusts one more root certificate (DER).
    #[must_use]
    pub fn with_root_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.extra_roots.push(der.into());
        self
    }

    /// Sets the largest websocket message accepted.
    #[must_use]
    pub fn with_max_message_size(mut self, n: usize) -> Self {
        self.max_message_size = n;
        self
    }

    /// The rustls client configuration for these roots.
    pub(crate) fn rustls(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut roots = rustls::RootCertStore::empty();
        if self.webpki_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for der in &self.extra_roots {
            roots
                .add(rustls::pki_types::CertificateDer::from(der.clone()))
                .map_err(|e| format!("bad root certificate: {e}"))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}
